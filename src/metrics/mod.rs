//! Process metrics through the `metrics` facade, rendered in the Prometheus text format by
//! `GET /metrics` from one recorder per process (`metrics-exporter-prometheus`, without its
//! own listener: the API's route keeps serving them).
//!
//! Every metric name is declared here, with its help text, so that the README table, the
//! Grafana dashboard and the alert rules have one place to agree with. The recorder is global:
//! a process that builds several daemons (the tests do) shares it, so counters and histograms
//! add up across them.

pub mod poll;

use std::sync::OnceLock;
use std::time::Instant;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A counter without labels.
pub struct Counter(&'static str);

impl Counter {
    pub fn add(&self, n: u64) {
        counter!(self.0).increment(n);
    }
    pub fn inc(&self) {
        self.add(1);
    }
}

/// A value that goes up and down (e.g. clients connected).
pub struct Gauge(&'static str);

impl Gauge {
    pub fn inc(&self) {
        gauge!(self.0).increment(1.0);
    }
    pub fn dec(&self) {
        gauge!(self.0).decrement(1.0);
    }
    pub fn set(&self, v: f64) {
        gauge!(self.0).set(v);
    }
}

/// A counter with one label, whose values must come from a small fixed set (a reason, a
/// status code): every value is a time series of its own.
pub struct Labeled(&'static str, &'static str);

impl Labeled {
    pub fn inc(&self, value: &str) {
        counter!(self.0, self.1 => value.to_owned()).increment(1);
    }
}

pub struct Metrics {
    pub movements_recorded: Counter,
    pub movements_duplicate: Counter,
    pub movements_late: Counter,
    pub movements_deadlettered: Labeled,
    pub ingest_batches: Counter,
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
    movements_recorded: Counter("omnistock_movements_recorded_total"),
    movements_duplicate: Counter("omnistock_movements_duplicate_total"),
    movements_late: Counter("omnistock_movements_late_total"),
    movements_deadlettered: Labeled("omnistock_movements_deadlettered_total", "reason"),
    ingest_batches: Counter("omnistock_ingest_batches_total"),
    ingest_failures: Counter("omnistock_ingest_failures_total"),
    ingest_consumer_restarts: Counter("omnistock_ingest_consumer_restarts_total"),
    ingest_given_up: Labeled("omnistock_ingest_given_up_total", "reason"),
    cache_hits: Counter("omnistock_cache_hits_total"),
    cache_misses: Counter("omnistock_cache_misses_total"),
    cache_fallbacks: Counter("omnistock_cache_fallbacks_total"),
    cache_write_failures: Counter("omnistock_cache_write_failures_total"),
    cache_resyncs: Counter("omnistock_cache_resyncs_total"),
    http_requests: Labeled("omnistock_http_requests_total", "status"),
    events_published: Counter("omnistock_events_published_total"),
    events_publish_failures: Counter("omnistock_events_publish_failures_total"),
    change_events_received: Counter("omnistock_change_events_received_total"),
    sse_lagged_events: Counter("omnistock_sse_lagged_events_total"),
    sse_clients: Gauge("omnistock_sse_clients"),
    sse_refused: Counter("omnistock_sse_refused_total"),
    readiness_probes: Counter("omnistock_readiness_probes_total"),
};

// Histograms, all in seconds except the batch and group sizes.
pub const INGEST_BATCH_SECONDS: &str = "omnistock_ingest_batch_duration_seconds";
pub const INGEST_BATCH_SIZE: &str = "omnistock_ingest_batch_size";
pub const PUBLISH_TO_COMMIT: &str = "omnistock_ingest_publish_to_commit_seconds";
pub const COMMIT_TO_VISIBLE: &str = "omnistock_commit_to_visible_seconds";
pub const HTTP_REQUEST_SECONDS: &str = "omnistock_http_request_duration_seconds";
pub const HOLD_SECONDS: &str = "omnistock_hold_duration_seconds";
pub const HOLD_GROUP_SIZE: &str = "omnistock_hold_group_size";
pub const ROUTE_SECONDS: &str = "omnistock_route_duration_seconds";
pub const ROUTE_GROUP_SIZE: &str = "omnistock_route_group_size";
// Gauges and counters fed by the background jobs.
pub const CONSUMER_PENDING: &str = "omnistock_ingest_consumer_pending_messages";
pub const CONSUMER_ACK_PENDING: &str = "omnistock_ingest_consumer_ack_pending_messages";
pub const OUTBOX_BACKLOG: &str = "omnistock_outbox_backlog_events";
pub const OVERSELL_ATTEMPTS: &str = "omnistock_oversell_attempts_total";
pub const JOB_UP: &str = "omnistock_job_up";
pub const JOB_RESTARTS: &str = "omnistock_job_restarts_total";
pub const JOB_LAST_SUCCESS: &str = "omnistock_job_last_success_timestamp_seconds";
pub const CACHE_DIRTY_SKUS: &str = "omnistock_cache_dirty_skus";
pub const LOCATIONS: &str = "omnistock_locations";

/// Latencies of a request or a database round trip: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Delays across the pipeline, from a few milliseconds to the minutes of an outage.
const DELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];
/// Movements per batch, up to the largest batch the daemon accepts (10,000).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

const HISTOGRAMS: &[(&str, &[f64], &str)] = &[
    (
        INGEST_BATCH_SECONDS,
        LATENCY_BUCKETS,
        "Time to apply one batch of movement messages (decode, commit, cache write), in seconds.",
    ),
    (
        INGEST_BATCH_SIZE,
        SIZE_BUCKETS,
        "Movements per applied batch.",
    ),
    (
        PUBLISH_TO_COMMIT,
        DELAY_BUCKETS,
        "Seconds from a movement message's JetStream publish to the commit of its movements.",
    ),
    (
        COMMIT_TO_VISIBLE,
        LATENCY_BUCKETS,
        "Seconds from the commit of changed levels to their write to Redis (reads see them).",
    ),
    (
        HTTP_REQUEST_SECONDS,
        LATENCY_BUCKETS,
        "HTTP request latency by method, route template and status, in seconds.",
    ),
    (
        HOLD_SECONDS,
        LATENCY_BUCKETS,
        "Time to take a hold (reservation or preorder), by outcome, in seconds.",
    ),
    (
        HOLD_GROUP_SIZE,
        SIZE_BUCKETS,
        "Holds on one (location, SKU) taken in one transaction (group commit).",
    ),
    (
        ROUTE_GROUP_SIZE,
        SIZE_BUCKETS,
        "Routes decided and held in one transaction (group commit).",
    ),
    (
        ROUTE_SECONDS,
        LATENCY_BUCKETS,
        "Time to route an order and hold its stock, by outcome, in seconds.",
    ),
];

const COUNTER_HELP: &[(&str, &str)] = &[
    ("omnistock_movements_recorded_total", "Movements newly recorded in the ledger."),
    ("omnistock_movements_duplicate_total", "Movements skipped because their event_id was already recorded."),
    ("omnistock_movements_late_total", "Movements recorded but not applied because a later count had already seen them."),
    ("omnistock_movements_deadlettered_total", "Movements rejected and published to the dead-letter subject, by reason."),
    ("omnistock_ingest_batches_total", "Movement batches committed."),
    ("omnistock_ingest_failures_total", "Movement batches that failed and were redelivered."),
    ("omnistock_ingest_consumer_restarts_total", "Times the JetStream consumer was rebuilt after an error."),
    ("omnistock_ingest_given_up_total", "Movement messages terminated on their last delivery without being applied (see the error log and the delivery_limit dead letters)."),
    ("omnistock_cache_hits_total", "Availability reads answered from Redis."),
    ("omnistock_cache_misses_total", "Availability reads not in Redis, answered from PostgreSQL."),
    ("omnistock_cache_fallbacks_total", "Availability reads answered from PostgreSQL because Redis failed."),
    ("omnistock_cache_write_failures_total", "Level writes to Redis that failed (the SKUs are resynced later)."),
    ("omnistock_cache_resyncs_total", "SKUs rewritten to Redis from PostgreSQL after a failure or rebuild."),
    ("omnistock_http_requests_total", "HTTP requests answered, by status code."),
    ("omnistock_events_published_total", "Change events and alerts published from the outbox."),
    ("omnistock_events_publish_failures_total", "Outbox relay runs that failed (events stay queued)."),
    ("omnistock_change_events_received_total", "Level change events received from NATS for the live stream (GET /v1/stream)."),
    ("omnistock_sse_lagged_events_total", "Change events dropped for live-stream clients too slow to keep up."),
    ("omnistock_sse_refused_total", "Live-stream connections refused because the most allowed were open."),
    ("omnistock_readiness_probes_total", "Probes of PostgreSQL and Redis made for /readyz (one answers it for a second)."),
    ("omnistock_reconcile_runs_total", "Reconciliation runs completed by this daemon."),
    ("omnistock_reconcile_failures_total", "Reconciliation runs that failed (PostgreSQL or Redis unreachable)."),
    ("omnistock_reconcile_redis_repaired_total", "SKU entries rewritten in Redis by reconciliation because they differed from PostgreSQL."),
    (OVERSELL_ATTEMPTS, "Holds and routes refused because the stock was not there, by operation (hold, route) and channel (none without one)."),
    (JOB_RESTARTS, "Times a background job died (returned or panicked) and was restarted."),
];

const GAUGE_HELP: &[(&str, &str)] = &[
    ("omnistock_sse_clients", "Live-stream clients (GET /v1/stream) connected."),
    (CONSUMER_PENDING, "Movement messages not yet delivered to the ingest consumer (its num_pending), polled every few seconds."),
    (CONSUMER_ACK_PENDING, "Movement messages delivered to the ingest consumer and not yet acknowledged."),
    (OUTBOX_BACKLOG, "Change events committed but not yet published by the outbox relay (counted up to 100,000)."),
    (JOB_UP, "Whether a background job is running (1) or dead and waiting to be restarted (0)."),
    (JOB_LAST_SUCCESS, "Unix time a background job last completed a unit of work (a batch, a tick, a refresh)."),
    (CACHE_DIRTY_SKUS, "SKUs whose latest level has not reached Redis yet."),
    (LOCATIONS, "Locations known to this daemon."),
];

/// The recorder's handle, installing the recorder the first time. Never fails: should
/// another recorder already be installed (an embedding program's), this one renders only
/// what it was given, and that is logged.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets, _) in HISTOGRAMS {
            builder = match builder.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
            {
                Ok(b) => b,
                Err(e) => unreachable_buckets(e),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// The bucket lists above are constant and non-empty: the builder cannot refuse them.
fn unreachable_buckets(e: metrics_exporter_prometheus::BuildError) -> PrometheusBuilder {
    tracing::error!(error = %e, "histogram buckets refused");
    PrometheusBuilder::new()
}

/// Help texts, and a zero for every unlabelled counter, so that a scrape shows them (and a
/// dashboard or an alert finds them) before the first event.
fn describe() {
    for (name, _, help) in HISTOGRAMS {
        describe_histogram!(*name, *help);
    }
    for (name, help) in COUNTER_HELP {
        describe_counter!(*name, *help);
    }
    for (name, help) in GAUGE_HELP {
        describe_gauge!(*name, *help);
    }
    for (name, _) in COUNTER_HELP {
        if !LABELLED.contains(name) {
            counter!(*name).increment(0);
        }
    }
    gauge!("omnistock_sse_clients").increment(0.0);
}

/// Counters that only exist with their labels (a zero without them would be a series of its
/// own).
const LABELLED: &[&str] = &[
    "omnistock_movements_deadlettered_total",
    "omnistock_ingest_given_up_total",
    "omnistock_http_requests_total",
    OVERSELL_ATTEMPTS,
    JOB_RESTARTS,
];

/// Everything recorded so far, in the Prometheus text format. Also runs the recorder's upkeep
/// (it folds histogram samples into their buckets), so a daemon scraped often needs no other.
pub fn render() -> String {
    let h = handle();
    h.run_upkeep();
    h.render()
}

/// A hold or route refused because the stock was not there (`channel`: `None` without one).
pub fn oversell_attempt(operation: &'static str, channel: Option<&str>) {
    counter!(
        OVERSELL_ATTEMPTS,
        "operation" => operation,
        "channel" => channel.unwrap_or("none").to_owned()
    )
    .increment(1);
}

/// Times an operation whose outcome is recorded in `histogram` with an `outcome` label. One
/// dropped before [`Timed::finish`] (its request timed out, its client went away) is recorded
/// as `cancelled`.
pub struct Timed {
    histogram: &'static str,
    started: Instant,
    done: bool,
}

impl Timed {
    pub fn start(histogram: &'static str) -> Self {
        Timed {
            histogram,
            started: Instant::now(),
            done: false,
        }
    }

    pub fn finish(mut self, outcome: &'static str) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: &'static str) {
        self.done = true;
        histogram!(self.histogram, "outcome" => outcome).record(self.started.elapsed());
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if !self.done {
            self.record("cancelled");
        }
    }
}

/// Records a value (a `Duration` in seconds) in a histogram without labels.
pub fn observe(histogram: &'static str, value: impl metrics::IntoF64) {
    histogram!(histogram).record(value);
}

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
    pub capacity_leaked_slots: u64,
    pub capacity_exceeded_days: u64,
    pub finished_unix_seconds: i64,
    pub duration_seconds: f64,
}

/// The daemon's periodic reconciliation: counters of every run, and gauges describing the last
/// one (absent until the first run).
pub struct Reconciliation {
    pub runs: Counter,
    pub failures: Counter,
    pub repaired: Counter,
}

pub static RECONCILIATION: Reconciliation = Reconciliation {
    runs: Counter("omnistock_reconcile_runs_total"),
    failures: Counter("omnistock_reconcile_failures_total"),
    repaired: Counter("omnistock_reconcile_redis_repaired_total"),
};

impl Reconciliation {
    pub fn set_last(&self, g: ReconcileGauges) {
        let gauges: [(&'static str, &'static str, f64); 11] = [
            (
                "omnistock_reconcile_ledger_mismatches",
                "Levels whose on_hand differs from what the ledger implies (not repaired).",
                g.ledger_mismatches as f64,
            ),
            (
                "omnistock_reconcile_reserved_mismatches",
                "Levels whose reserved differs from their live holds (not repaired).",
                g.reserved_mismatches as f64,
            ),
            (
                "omnistock_reconcile_redis_checked_skus",
                "SKUs compared between Redis and PostgreSQL.",
                g.redis_checked_skus as f64,
            ),
            (
                "omnistock_reconcile_redis_stale",
                "SKU entries in Redis older than PostgreSQL.",
                g.redis_stale as f64,
            ),
            (
                "omnistock_reconcile_redis_mismatched",
                "SKU entries in Redis differing from PostgreSQL at the same version, newer, corrupt, or naming unknown locations.",
                g.redis_mismatched as f64,
            ),
            (
                "omnistock_reconcile_redis_missing",
                "SKUs without a complete Redis entry (reads fall back to PostgreSQL).",
                g.redis_missing as f64,
            ),
            (
                "omnistock_reconcile_redis_repaired",
                "SKU entries rewritten in Redis from PostgreSQL.",
                g.redis_repaired as f64,
            ),
            (
                "omnistock_reconcile_capacity_leaked_slots",
                "Order slots counted today or yesterday without an order (a route stopped between its slot and its commit): capacity under-used, not repaired.",
                g.capacity_leaked_slots as f64,
            ),
            (
                "omnistock_reconcile_capacity_exceeded_days",
                "Location days with more orders assigned than slots counted: daily capacity could be exceeded (not repaired).",
                g.capacity_exceeded_days as f64,
            ),
            (
                "omnistock_reconcile_last_run_timestamp_seconds",
                "Unix time the last reconciliation run finished.",
                g.finished_unix_seconds as f64,
            ),
            (
                "omnistock_reconcile_duration_seconds",
                "How long the last reconciliation run took.",
                g.duration_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            describe_gauge!(name, help);
            gauge!(name).set(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_has_sorted_buckets_and_a_help_text() {
        for (name, buckets, help) in HISTOGRAMS {
            assert!(!buckets.is_empty(), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
            assert!(!help.is_empty(), "{name}");
            assert!(name.starts_with("omnistock_"), "{name}");
        }
    }

    #[test]
    fn a_dropped_timer_counts_as_cancelled_and_a_finished_one_by_its_outcome() {
        let before = render();
        let series = |text: &str, outcome: &str| -> f64 {
            let prefix = format!("{HOLD_SECONDS}_count{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        drop(Timed::start(HOLD_SECONDS));
        Timed::start(HOLD_SECONDS).finish("unit_test_outcome");
        let after = render();
        assert_eq!(
            series(&after, "cancelled") - series(&before, "cancelled"),
            1.0,
            "{after}"
        );
        assert_eq!(series(&after, "unit_test_outcome"), 1.0, "{after}");
    }
}
