//! Process metrics in the Prometheus text format. A handful of counters and gauges does not
//! justify a metrics framework; these are plain atomics, rendered by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_fallbacks: Counter,
    pub cache_write_failures: Counter,
    pub cache_resyncs: Counter,
    pub http_requests: Labeled,
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
    cache_hits: Counter::new(),
    cache_misses: Counter::new(),
    cache_fallbacks: Counter::new(),
    cache_write_failures: Counter::new(),
    cache_resyncs: Counter::new(),
    http_requests: Labeled::new(),
};

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
    labeled(
        &mut out,
        "omnistock_http_requests_total",
        "status",
        "HTTP requests answered, by status code.",
        &m.http_requests,
    );
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
}
