//! Reconciliation: is the truth consistent with itself, and does the cache tell the truth?
//!
//! * PostgreSQL: every level's `on_hand` against what its ledger implies, and its `reserved`
//!   against its live holds ([`db::invariants`]). These are **never repaired** here: a difference
//!   means a bug or a hand edit, and a human must find out which before correcting the level
//!   (a `count` movement re-bases it).
//! * Redis: every SKU's hash against its PostgreSQL levels, SKU page by SKU page. An entry that
//!   differs is repaired: deleted, then rewritten complete from a fresh PostgreSQL read.
//! * Totals ([`totals`]): every per-SKU channel total against the sum of its levels (derived
//!   data, so repaired: recomputed from the levels), and Redis's totals against PostgreSQL's.
//! * Order capacity ([`capacity`]): each location's day counter against the orders assigned
//!   that day (not repaired).
//!
//! Concurrent commits keep moving while this runs, and Redis is written just *after* each
//! commit, so a single look can see Redis briefly behind (a write in flight) or ahead (a commit
//! between the PostgreSQL read and the Redis read) without anything being wrong. A SKU that looks
//! different is therefore looked at again after a short pause, Redis first and PostgreSQL second:
//! * a Redis version newer than PostgreSQL's read *after* it cannot come from any commit, so it is
//!   wrong (a bogus version, or a PostgreSQL restored from an older backup);
//! * a Redis version older than the one PostgreSQL showed before the first look is stale: the
//!   write of a commit at least that pause old never arrived;
//! * anything between the two is a write in flight, not a difference.

mod capacity;
mod display;
mod redis;
mod totals;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::{RedisStore, StockCache};
use crate::db;
use crate::db::invariants::{InTransitMismatch, LedgerMismatch, ReservedMismatch};
use crate::metrics::{ReconcileGauges, RECONCILIATION};

pub use self::capacity::CapacityFindings;
pub use self::redis::{PgLevel, RedisDifference, RedisFindings};
pub use self::totals::TotalsFindings;

/// Examples kept for each kind of difference.
const EXAMPLES: usize = 10;
/// PostgreSQL mismatches are counted up to this many (then `capped`): enough to size a
/// disaster without holding an unbounded list in memory.
const COUNT_CAP: i64 = 100_000;
/// SKUs per PostgreSQL page, and most suspect SKUs looked at again in one go.
const PAGE: i64 = 500;
/// How long a suspect SKU waits before its second look: far longer than a Redis write takes
/// after its commit (a failed write is resynced by the daemon within a second, and is stale
/// meanwhile, which is true).
const SETTLE: Duration = Duration::from_millis(250);

/// PostgreSQL differences of one kind: how many, and the first few.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Findings<T> {
    pub count: u64,
    /// `count` reached the cap: there are at least that many.
    pub capped: bool,
    pub examples: Vec<T>,
}

impl<T> Findings<T> {
    fn from_rows(rows: Vec<T>) -> Self {
        let count = rows.len();
        Findings {
            count: count as u64,
            capped: count as i64 >= COUNT_CAP,
            examples: rows.into_iter().take(EXAMPLES).collect(),
        }
    }
}

/// What one reconciliation run found (and repaired).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Levels whose `on_hand` differs from what the ledger implies (not repaired).
    pub ledger: Findings<LedgerMismatch>,
    /// Levels whose `reserved` differs from their live holds (not repaired).
    pub reserved: Findings<ReservedMismatch>,
    /// Levels whose `in_transit` differs from their open transfers (not repaired).
    pub in_transit: Findings<InTransitMismatch>,
    pub redis: RedisFindings,
    /// Totals against the sum of their levels, and Redis's totals against PostgreSQL's.
    pub totals: TotalsFindings,
    /// Order counters against the orders assigned (not repaired).
    pub capacity: CapacityFindings,
    /// Whether Redis differences were to be repaired.
    pub repair: bool,
    pub started_at: DateTime<Utc>,
    pub duration_seconds: f64,
}

impl Report {
    /// Every level agrees with its ledger and its holds, and no day took more orders than it
    /// counted. Leaked capacity slots (under-use) do not make it inconsistent.
    pub fn postgres_consistent(&self) -> bool {
        self.ledger.count == 0
            && self.reserved.count == 0
            && self.in_transit.count == 0
            && self.capacity.exceeded.is_empty()
    }

    /// Redis differences found and left as they were.
    pub fn redis_unrepaired(&self) -> u64 {
        (self.redis.stale + self.redis.mismatched).saturating_sub(self.redis.repaired)
    }

    /// Totals found wrong (in PostgreSQL or in Redis) and left as they were.
    pub fn totals_unrepaired(&self) -> u64 {
        self.totals.unrepaired()
    }

    pub fn gauges(&self) -> ReconcileGauges {
        ReconcileGauges {
            ledger_mismatches: self.ledger.count,
            reserved_mismatches: self.reserved.count,
            redis_checked_skus: self.redis.checked_skus,
            redis_stale: self.redis.stale,
            redis_mismatched: self.redis.mismatched,
            redis_missing: self.redis.missing,
            redis_repaired: self.redis.repaired,
            capacity_leaked_slots: self.capacity.leaked_slots,
            capacity_exceeded_days: self.capacity.exceeded_days,
            finished_unix_seconds: Utc::now().timestamp(),
            duration_seconds: self.duration_seconds,
        }
    }
}

/// Runs every check; with `repair`, rewrites the Redis entries that differ.
pub async fn run(pool: &PgPool, store: &RedisStore, repair: bool) -> anyhow::Result<Report> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let ledger = db::invariants::ledger_mismatches(pool, COUNT_CAP)
        .await
        .context("checking levels against the ledger")?;
    let reserved = db::invariants::reserved_mismatches(pool, COUNT_CAP)
        .await
        .context("checking reserved against the live holds")?;
    let in_transit = db::invariants::in_transit_mismatches(pool, COUNT_CAP)
        .await
        .context("checking in_transit against the open transfers")?;
    let redis = redis::compare(pool, store, repair).await?;
    let totals = totals::check(pool, store, repair).await?;
    let capacity = capacity::check(pool, SETTLE, EXAMPLES)
        .await
        .context("checking the order counters against the orders assigned")?;
    Ok(Report {
        ledger: Findings::from_rows(ledger),
        reserved: Findings::from_rows(reserved),
        in_transit: Findings::from_rows(in_transit),
        redis,
        totals,
        capacity,
        repair,
        started_at,
        duration_seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The daemon's periodic run: every `interval` (the first after one interval; zero turns it
/// off), repairing Redis and publishing the outcome in the metrics.
pub async fn run_job(
    pool: PgPool,
    cache: Arc<StockCache>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    if interval.is_zero() {
        tracing::debug!("periodic reconciliation is off");
        // Not an end: the supervisor would take a returning job for a dead one.
        return shutdown.cancelled().await;
    }
    crate::jobs::periodic(&shutdown, interval, || async {
        // Stopping mid-run at shutdown is safe: at worst an entry was deleted and not yet
        // rewritten, which readers treat as a miss and fill from PostgreSQL.
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = run(&pool, cache.store(), true) => r,
        };
        match outcome {
            Ok(report) => {
                crate::jobs::succeeded();
                record(&report);
            }
            Err(e) => {
                RECONCILIATION.failures.inc();
                tracing::warn!(error = %format!("{e:#}"), "reconciliation failed; retrying at the next interval");
            }
        }
    })
    .await
}

fn record(report: &Report) {
    RECONCILIATION.runs.inc();
    RECONCILIATION.repaired.add(report.redis.repaired);
    RECONCILIATION.set_last(report.gauges());
    let r = &report.redis;
    if report.postgres_consistent()
        && r.stale == 0
        && r.mismatched == 0
        && report.totals.is_clean()
        && report.capacity.is_clean()
    {
        tracing::debug!(
            checked_skus = r.checked_skus,
            missing = r.missing,
            "reconciliation: PostgreSQL consistent, Redis matches"
        );
        return;
    }
    tracing::warn!(
        ledger_mismatches = report.ledger.count,
        reserved_mismatches = report.reserved.count,
        redis_stale = r.stale,
        redis_mismatched = r.mismatched,
        redis_repaired = r.repaired,
        totals_mismatched = report.totals.mismatched,
        totals_redis_differ = report.totals.redis_stale + report.totals.redis_mismatched,
        totals_repaired = report.totals.repaired + report.totals.redis_repaired,
        capacity_leaked_slots = report.capacity.leaked_slots,
        capacity_exceeded_days = report.capacity.exceeded_days,
        checked_skus = r.checked_skus,
        "reconciliation found differences (run `omnistock reconcile` for examples; PostgreSQL is never repaired automatically)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_keep_a_few_examples_and_the_count() {
        let f = Findings::from_rows((0..25).collect::<Vec<i32>>());
        assert_eq!((f.count, f.capped, f.examples.len()), (25, false, EXAMPLES));
    }
}
