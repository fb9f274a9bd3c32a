//! Process metrics in the Prometheus text format. A handful of counters and gauges does not
//! justify a metrics framework; these are plain atomics, rendered by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (e.g. clients connected).
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with one label.
#[derive(Default)]
pub struct Labeled {
    values: Mutex<BTreeMap<String, u64>>,
}

impl Labeled {
    pub const fn new() -> Self {
        Labeled {
            values: Mutex::new(BTreeMap::new()),
        }
    }
    pub fn inc(&self, label: &str) {
        if let Ok(mut v) = self.values.lock() {
            *v.entry(label.to_owned()).or_default() += 1;
        }
    }
    pub fn get(&self, label: &str) -> u64 {
        self.values
            .lock()
            .map(|v| v.get(label).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        self.values
            .lock()
            .map(|v| v.iter().map(|(k, n)| (k.clone(), *n)).collect())
            .unwrap_or_default()
    }
}

pub struct Metrics {
    pub movements_recorded: Counter,
    pub movements_duplicate: Counter,
    pub movements_late: Counter,
    pub movements_deadlettered: Labeled,
    pub ingest_batches: Counter,
    pub ingest_batch_micros: Counter,
    pub ingest_failures: Counter,
    pub ingest_consumer_restarts: Counter,
    pub ingest_given_up: Labeled,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_fallbacks: Counter,
    pub cache_write_failures: Counter,
    pub cache_resyncs: Counter,
    pub http_requests: Labeled,
    pub events_published: Counter,
    pub events_publish_failures: Counter,
    pub change_events_received: Counter,
    pub sse_lagged_events: Counter,
    pub sse_clients: Gauge,
    pub sse_refused: Counter,
    pub readiness_probes: Counter,
}

pub static METRICS: Metrics = Metrics {
    movements_recorded: Counter::new(),
    movements_duplicate: Counter::new(),
    movements_late: Counter::new(),
    movements_deadlettered: Labeled::new(),
    ingest_batches: Counter::new(),
    ingest_batch_micros: Counter::new(),
    ingest_failures: Counter::new(),
    ingest_consumer_restarts: Counter::new(),
    ingest_given_up: Labeled::new(),
    cache_hits: Counter::new(),
    cache_misses: Counter::new(),
    cache_fallbacks: Counter::new(),
    cache_write_failures: Counter::new(),
    cache_resyncs: Counter::new(),
    http_requests: Labeled::new(),
    events_published: Counter::new(),
    events_publish_failures: Counter::new(),
    change_events_received: Counter::new(),
    sse_lagged_events: Counter::new(),
    sse_clients: Gauge::new(),
    sse_refused: Counter::new(),
    readiness_probes: Counter::new(),
};

/// What the last reconciliation run found (see `reconcile`): counts of levels and SKUs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReconcileGauges {
    pub ledger_mismatches: u64,
    pub reserved_mismatches: u64,
    pub redis_checked_skus: u64,
    pub redis_stale: u64,
    pub redis_mismatched: u64,
    pub redis_missing: u64,
    pub redis_repaired: u64,
    pub finished_unix_seconds: i64,
    pub duration_seconds: f64,
}

/// The daemon's periodic reconciliation. The gauges of one run are kept together (one lock)
/// so a scrape never mixes two runs; they are absent until the first run.
pub struct Reconciliation {
    pub runs: Counter,
    pub failures: Counter,
    pub repaired: Counter,
    last: Mutex<Option<ReconcileGauges>>,
}

impl Reconciliation {
    pub const fn new() -> Self {
        Reconciliation {
            runs: Counter::new(),
            failures: Counter::new(),
            repaired: Counter::new(),
            last: Mutex::new(None),
        }
    }
    pub fn set_last(&self, g: ReconcileGauges) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(g);
        }
    }
    pub fn last(&self) -> Option<ReconcileGauges> {
        self.last.lock().ok().and_then(|l| *l)
    }
}

impl Default for Reconciliation {
    fn default() -> Self {
        Self::new()
    }
}

pub static RECONCILIATION: Reconciliation = Reconciliation::new();

fn reconciliation(out: &mut String, r: &Reconciliation) {
    counter(
        out,
        "omnistock_reconcile_runs_total",
        "Reconciliation runs completed by this daemon.",
        r.runs.get(),
    );
    counter(
        out,
        "omnistock_reconcile_failures_total",
        "Reconciliation runs that failed (PostgreSQL or Redis unreachable).",
        r.failures.get(),
    );
    counter(
        out,
        "omnistock_reconcile_redis_repaired_total",
        "SKU entries rewritten in Redis by reconciliation because they differed from PostgreSQL.",
        r.repaired.get(),
    );
    let Some(g) = r.last() else { return };
    let gauges: [(&str, &str, String); 9] = [
        (
            "ledger_mismatches",
            "Levels whose on_hand differs from what the ledger implies (not repaired).",
            g.ledger_mismatches.to_string(),
        ),
        (
            "reserved_mismatches",
            "Levels whose reserved differs from their live holds (not repaired).",
            g.reserved_mismatches.to_string(),
        ),
        (
            "redis_checked_skus",
            "SKUs compared between Redis and PostgreSQL.",
            g.redis_checked_skus.to_string(),
        ),
        (
            "redis_stale",
            "SKU entries in Redis older than PostgreSQL.",
            g.redis_stale.to_string(),
        ),
        (
            "redis_mismatched",
            "SKU entries in Redis differing from PostgreSQL at the same version, newer, corrupt, or naming unknown locations.",
            g.redis_mismatched.to_string(),
        ),
        (
            "redis_missing",
            "SKUs without a complete Redis entry (reads fall back to PostgreSQL).",
            g.redis_missing.to_string(),
        ),
        (
            "redis_repaired",
            "SKU entries rewritten in Redis from PostgreSQL.",
            g.redis_repaired.to_string(),
        ),
        (
            "last_run_timestamp_seconds",
            "Unix time the last reconciliation run finished.",
            g.finished_unix_seconds.to_string(),
        ),
        (
            "duration_seconds",
            "How long the last reconciliation run took.",
            format!("{:.3}", g.duration_seconds),
        ),
    ];
    // Every gauge describes the last run only.
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP omnistock_reconcile_{name} {help}\n# TYPE omnistock_reconcile_{name} gauge\nomnistock_reconcile_{name} {value}"
        );
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn labeled(out: &mut String, name: &str, label: &str, help: &str, values: &Labeled) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, v) in values.snapshot() {
        let k = k.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
    }
}

/// Renders every metric; `gauges` are values owned elsewhere (e.g. cache dirty SKUs).
pub fn render(gauges: &[(&str, &str, i64)]) -> String {
    let m = &METRICS;
    let mut out = String::new();
    counter(
        &mut out,
        "omnistock_movements_recorded_total",
        "Movements newly recorded in the ledger.",
        m.movements_recorded.get(),
    );
    counter(
        &mut out,
        "omnistock_movements_duplicate_total",
        "Movements skipped because their event_id was already recorded.",
        m.movements_duplicate.get(),
    );
    counter(
        &mut out,
        "omnistock_movements_late_total",
        "Movements recorded but not applied because a later count had already seen them.",
        m.movements_late.get(),
    );
    labeled(
        &mut out,
        "omnistock_movements_deadlettered_total",
        "reason",
        "Movements rejected and published to the dead-letter subject.",
        &m.movements_deadlettered,
    );
    counter(
        &mut out,
        "omnistock_ingest_batches_total",
        "Movement batches committed.",
        m.ingest_batches.get(),
    );
    counter(
        &mut out,
        "omnistock_ingest_batch_seconds_total",
        "Time spent applying movement batches, in seconds (with _batches_total: mean batch time).",
        m.ingest_batch_micros.get() / 1_000_000,
    );
    counter(
        &mut out,
        "omnistock_ingest_failures_total",
        "Movement batches that failed and were redelivered.",
        m.ingest_failures.get(),
    );
    counter(
        &mut out,
        "omnistock_ingest_consumer_restarts_total",
        "Times the JetStream consumer was rebuilt after an error.",
        m.ingest_consumer_restarts.get(),
    );
    labeled(
        &mut out,
        "omnistock_ingest_given_up_total",
        "reason",
        "Movement messages terminated on their last delivery without being applied (see the error log and the delivery_limit dead letters).",
        &m.ingest_given_up,
    );
    counter(
        &mut out,
        "omnistock_cache_hits_total",
        "Availability reads answered from Redis.",
        m.cache_hits.get(),
    );
    counter(
        &mut out,
        "omnistock_cache_misses_total",
        "Availability reads not in Redis, answered from PostgreSQL.",
        m.cache_misses.get(),
    );
    counter(
        &mut out,
        "omnistock_cache_fallbacks_total",
        "Availability reads answered from PostgreSQL because Redis failed.",
        m.cache_fallbacks.get(),
    );
    counter(
        &mut out,
        "omnistock_cache_write_failures_total",
        "Level writes to Redis that failed (the SKUs are resynced later).",
        m.cache_write_failures.get(),
    );
    counter(
        &mut out,
        "omnistock_cache_resyncs_total",
        "SKUs rewritten to Redis from PostgreSQL after a failure or rebuild.",
        m.cache_resyncs.get(),
    );
    counter(
        &mut out,
        "omnistock_events_published_total",
        "Change events and alerts published from the outbox.",
        m.events_published.get(),
    );
    counter(
        &mut out,
        "omnistock_events_publish_failures_total",
        "Outbox relay runs that failed (events stay queued).",
        m.events_publish_failures.get(),
    );
    labeled(
        &mut out,
        "omnistock_http_requests_total",
        "status",
        "HTTP requests answered, by status code.",
        &m.http_requests,
    );
    counter(
        &mut out,
        "omnistock_change_events_received_total",
        "Level change events received from NATS for the live stream (GET /v1/stream).",
        m.change_events_received.get(),
    );
    counter(
        &mut out,
        "omnistock_sse_lagged_events_total",
        "Change events dropped for live-stream clients too slow to keep up.",
        m.sse_lagged_events.get(),
    );
    let _ = writeln!(
        out,
        "# HELP omnistock_sse_clients Live-stream clients (GET /v1/stream) connected.\n# TYPE omnistock_sse_clients gauge\nomnistock_sse_clients {}",
        m.sse_clients.get()
    );
    counter(
        &mut out,
        "omnistock_sse_refused_total",
        "Live-stream connections refused because the most allowed were open.",
        m.sse_refused.get(),
    );
    counter(
        &mut out,
        "omnistock_readiness_probes_total",
        "Probes of PostgreSQL and Redis made for /readyz (one answers it for a second).",
        m.readiness_probes.get(),
    );
    reconciliation(&mut out, &RECONCILIATION);
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
}
