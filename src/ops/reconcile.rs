//! Reconciliation: is the truth consistent with itself, and does the cache tell the truth?
//!
//! * PostgreSQL: every level's `on_hand` against what its ledger implies, and its `reserved`
//!   against its live holds ([`db::invariants`]). These are **never repaired** here: a difference
//!   means a bug or a hand edit, and a human must find out which before correcting the level
//!   (a `count` movement re-bases it).
//! * Redis: every SKU's hash against its PostgreSQL levels, SKU page by SKU page. An entry that
//!   differs is repaired: deleted, then rewritten complete from a fresh PostgreSQL read.
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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, RedisStore, StockCache};
use crate::db;
use crate::db::invariants::{InTransitMismatch, LedgerMismatch, ReservedMismatch};
use crate::db::levels::LevelRow;
use crate::metrics::{ReconcileGauges, RECONCILIATION};

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

/// A level as PostgreSQL holds it (what the cache keeps of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PgLevel {
    pub version: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub in_transit: i64,
}

impl From<&LevelRow> for PgLevel {
    fn from(r: &LevelRow) -> Self {
        PgLevel {
            version: r.version,
            on_hand: r.on_hand,
            reserved: r.reserved,
            in_transit: r.in_transit,
        }
    }
}

/// One field of a SKU's Redis entry that disagrees with PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisDifference {
    pub location_id: String,
    pub sku: String,
    /// PostgreSQL's level; `None` when PostgreSQL has no level at this location.
    pub postgres: Option<PgLevel>,
    /// The Redis field as stored (`"<version> <on_hand> ..."`); `None` when absent.
    pub redis: Option<String>,
}

/// Redis against PostgreSQL. Counts are of SKUs (one Redis entry per SKU).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedisFindings {
    pub checked_skus: u64,
    /// Entries older than PostgreSQL (a version, or a level, that never arrived).
    pub stale: u64,
    /// Entries that differ at the same version, are newer than PostgreSQL, hold a corrupt
    /// value or a location PostgreSQL does not have.
    pub mismatched: u64,
    /// SKUs without a complete entry: not an error, reads fall back to PostgreSQL and fill it.
    pub missing: u64,
    /// Stale and mismatched entries rewritten from PostgreSQL.
    pub repaired: u64,
    pub stale_examples: Vec<RedisDifference>,
    pub mismatched_examples: Vec<RedisDifference>,
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
    /// Whether Redis differences were to be repaired.
    pub repair: bool,
    pub started_at: DateTime<Utc>,
    pub duration_seconds: f64,
}

impl Report {
    /// Every level agrees with its ledger and its holds.
    pub fn postgres_consistent(&self) -> bool {
        self.ledger.count == 0 && self.reserved.count == 0 && self.in_transit.count == 0
    }

    /// Redis differences found and left as they were.
    pub fn redis_unrepaired(&self) -> u64 {
        (self.redis.stale + self.redis.mismatched).saturating_sub(self.redis.repaired)
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
    let redis = compare_redis(pool, store, repair).await?;
    Ok(Report {
        ledger: Findings::from_rows(ledger),
        reserved: Findings::from_rows(reserved),
        in_transit: Findings::from_rows(in_transit),
        redis,
        repair,
        started_at,
        duration_seconds: clock.elapsed().as_secs_f64(),
    })
}

/// SKUs that looked different at the first look, with PostgreSQL's levels from before it.
struct Suspects {
    since: Option<Instant>,
    skus: Vec<(String, Vec<LevelRow>)>,
}

async fn compare_redis(
    pool: &PgPool,
    store: &RedisStore,
    repair: bool,
) -> anyhow::Result<RedisFindings> {
    let mut found = RedisFindings::default();
    let mut suspects = Suspects {
        since: None,
        skus: Vec::new(),
    };
    let mut after: Option<String> = None;
    loop {
        let read_at = Instant::now();
        let rows = db::levels::page_by_sku(pool, after.as_deref(), PAGE)
            .await
            .context("reading levels from PostgreSQL")?;
        let Some(last) = rows.last() else { break };
        after = Some(last.sku.clone());
        let groups = by_sku(rows);
        let skus: Vec<&str> = groups.iter().map(|(s, _)| s.as_str()).collect();
        let hashes = store
            .read_raw(&skus)
            .await
            .context("reading levels from Redis")?;
        found.checked_skus += groups.len() as u64;
        for ((sku, levels), hash) in groups.into_iter().zip(hashes) {
            match judge(&sku, &levels, &levels, &hash) {
                Verdict::Clean => {}
                Verdict::Missing => found.missing += 1,
                Verdict::Stale(_) | Verdict::Mismatched(_) => {
                    suspects.since.get_or_insert(read_at);
                    suspects.skus.push((sku, levels));
                }
            }
        }
        if suspects.skus.len() >= PAGE as usize {
            confirm(pool, store, repair, &mut suspects, &mut found).await?;
        }
    }
    confirm(pool, store, repair, &mut suspects, &mut found).await?;
    Ok(found)
}

/// Groups rows (ordered by SKU) into one group per SKU.
fn by_sku(rows: Vec<LevelRow>) -> Vec<(String, Vec<LevelRow>)> {
    let mut groups: Vec<(String, Vec<LevelRow>)> = Vec::new();
    for r in rows {
        match groups.last_mut() {
            Some((sku, g)) if *sku == r.sku => g.push(r),
            _ => groups.push((r.sku.clone(), vec![r])),
        }
    }
    groups
}

/// The second look at the suspects (see the module comment): after the pause, Redis first, then
/// PostgreSQL. What still differs is counted and, with `repair`, rewritten.
async fn confirm(
    pool: &PgPool,
    store: &RedisStore,
    repair: bool,
    suspects: &mut Suspects,
    found: &mut RedisFindings,
) -> anyhow::Result<()> {
    let Some(since) = suspects.since.take() else {
        return Ok(());
    };
    let batch = std::mem::take(&mut suspects.skus);
    tokio::time::sleep(SETTLE.saturating_sub(since.elapsed())).await;
    let skus: Vec<&str> = batch.iter().map(|(s, _)| s.as_str()).collect();
    let hashes = store
        .read_raw(&skus)
        .await
        .context("reading levels from Redis")?;
    let owned: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let fresh = db::levels::for_skus(pool, &owned)
        .await
        .context("reading levels from PostgreSQL")?;
    let mut fresh: HashMap<String, Vec<LevelRow>> = by_sku(fresh).into_iter().collect();
    let mut differ: Vec<&str> = Vec::new();
    for ((sku, before), hash) in batch.iter().zip(hashes) {
        let now = fresh.remove(sku).unwrap_or_default();
        match judge(sku, before, &now, &hash) {
            Verdict::Clean => continue,
            Verdict::Missing => found.missing += 1,
            Verdict::Stale(d) => {
                found.stale += 1;
                keep_example(&mut found.stale_examples, d);
                differ.push(sku);
            }
            Verdict::Mismatched(d) => {
                found.mismatched += 1;
                keep_example(&mut found.mismatched_examples, d);
                differ.push(sku);
            }
        }
    }
    if repair && !differ.is_empty() {
        found.repaired += rewrite(pool, store, &differ).await? as u64;
    }
    Ok(())
}

fn keep_example(examples: &mut Vec<RedisDifference>, d: RedisDifference) {
    if examples.len() < EXAMPLES {
        examples.push(d);
    }
}

/// Deletes the entries and rewrites them complete from PostgreSQL. Deleting first, then
/// reading PostgreSQL, means the read is at least as new as anything Redis held; writes of
/// later commits landing in between are newer still, and the versioned write keeps them.
async fn rewrite(pool: &PgPool, store: &RedisStore, skus: &[&str]) -> anyhow::Result<usize> {
    store
        .delete(skus)
        .await
        .context("deleting Redis entries to repair")?;
    let owned: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let rows = db::levels::for_skus(pool, &owned)
        .await
        .context("reading levels from PostgreSQL")?;
    store
        .write(&rows, true)
        .await
        .context("rewriting Redis entries")?;
    Ok(skus.len())
}

/// One SKU's Redis entry, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Clean,
    Missing,
    Stale(RedisDifference),
    Mismatched(RedisDifference),
}

/// What one Redis field says, compared with PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Equal to PostgreSQL, or a write in flight.
    Current,
    Behind,
    Wrong,
}

/// Judges one SKU's Redis hash. `before`: PostgreSQL's levels read before the hash (Redis must
/// have reached their versions); `after`: read after it (Redis cannot be ahead of them).
/// At the first look both are the same read, taken before Redis: there a Redis version ahead
/// is only a suspicion, which the second look settles.
fn judge(sku: &str, before: &[LevelRow], after: &[LevelRow], hash: &[(String, String)]) -> Verdict {
    let complete = hash.iter().any(|(k, _)| RedisStore::is_complete_marker(k));
    let fields: BTreeMap<&str, &str> = hash
        .iter()
        .filter(|(k, _)| !RedisStore::is_complete_marker(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let before: HashMap<&str, &LevelRow> =
        before.iter().map(|r| (r.location_id.as_str(), r)).collect();
    let after: HashMap<&str, &LevelRow> =
        after.iter().map(|r| (r.location_id.as_str(), r)).collect();
    let diff = |location: &str, pg: Option<&&LevelRow>, redis: Option<&str>| RedisDifference {
        location_id: location.to_owned(),
        sku: sku.to_owned(),
        postgres: pg.map(|r| PgLevel::from(*r)),
        redis: redis.map(str::to_owned),
    };
    let mut wrong = None;
    let mut behind = None;
    for (&location, &value) in &fields {
        let now = after.get(location);
        match field(location, before.get(location).copied(), now.copied(), value) {
            Field::Current => {}
            Field::Behind => {
                behind.get_or_insert_with(|| diff(location, now, Some(value)));
            }
            Field::Wrong => {
                wrong.get_or_insert_with(|| diff(location, now, Some(value)));
            }
        }
    }
    // A complete entry must hold every level; one PostgreSQL already had before is behind.
    let mut levels: Vec<&&LevelRow> = before.values().collect();
    levels.sort_by(|a, b| a.location_id.cmp(&b.location_id));
    if let Some(absent) = levels
        .into_iter()
        .find(|r| !fields.contains_key(r.location_id.as_str()))
    {
        if complete {
            behind.get_or_insert_with(|| diff(&absent.location_id, Some(absent), None));
        }
    }
    match (wrong, behind) {
        (Some(d), _) => Verdict::Mismatched(d),
        // An incomplete entry is a miss for readers, and a fill overwrites older fields: only
        // a wrong field (which a fill would keep) makes it a difference.
        (None, _) if !complete => Verdict::Missing,
        (None, Some(d)) => Verdict::Stale(d),
        (None, None) => Verdict::Clean,
    }
}

fn field(
    location: &str,
    before: Option<&LevelRow>,
    after: Option<&LevelRow>,
    value: &str,
) -> Field {
    // Levels are never deleted: a location PostgreSQL does not have is a wrong field.
    let Some(after) = after else {
        return Field::Wrong;
    };
    // Parsed exactly as readers parse it: what they cannot use is corrupt.
    let Some(redis) = RedisStore::parse_value(location, value) else {
        return Field::Wrong;
    };
    if redis.version > after.version {
        return Field::Wrong;
    }
    if redis.version == after.version {
        // The same version with other quantities: one side was changed behind the other's back.
        return if redis == cache::quantities(after) {
            Field::Current
        } else {
            Field::Wrong
        };
    }
    match before {
        Some(b) if redis.version < b.version => Field::Behind,
        _ => Field::Current,
    }
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
    if report.postgres_consistent() && r.stale == 0 && r.mismatched == 0 {
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
        checked_skus = r.checked_skus,
        "reconciliation found differences (run `omnistock reconcile` for examples; PostgreSQL is never repaired automatically)"
    );
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_least = |capped: bool| if capped { "at least " } else { "" };
        if self.ledger.count == 0 {
            writeln!(
                f,
                "ledger:   ok, every level's on_hand equals what its ledger implies"
            )?;
        } else {
            writeln!(
                f,
                "ledger:   {}{} level(s) differ from what their ledger implies. PostgreSQL is not \
                 repaired: find the cause (a hand edit? a bug?) before correcting a level, e.g. \
                 with a count movement.",
                at_least(self.ledger.capped),
                self.ledger.count
            )?;
            for m in &self.ledger.examples {
                writeln!(
                    f,
                    "  {} {:?}: on_hand {}, the ledger implies {}",
                    m.location_id, m.sku, m.on_hand, m.implied
                )?;
            }
        }
        if self.in_transit.count != 0 {
            writeln!(
                f,
                "in_transit: {}{} level(s) differ from their open transfers. PostgreSQL is not repaired.",
                at_least(self.in_transit.capped),
                self.in_transit.count
            )?;
            for m in &self.in_transit.examples {
                writeln!(
                    f,
                    "  {} {:?}: in_transit {}, open transfers {}",
                    m.location_id, m.sku, m.in_transit, m.accounted
                )?;
            }
        }
        if self.reserved.count == 0 {
            writeln!(
                f,
                "reserved: ok, every level's reserved equals its live holds"
            )?;
        } else {
            writeln!(
                f,
                "reserved: {}{} level(s) differ from their live holds. PostgreSQL is not repaired.",
                at_least(self.reserved.capped),
                self.reserved.count
            )?;
            for m in &self.reserved.examples {
                writeln!(
                    f,
                    "  {} {:?}: reserved {}, live holds {}",
                    m.location_id, m.sku, m.reserved, m.held
                )?;
            }
        }
        fmt_redis(f, &self.redis, self.repair)?;
        writeln!(f, "took {:.2} s", self.duration_seconds)
    }
}

fn fmt_redis(f: &mut fmt::Formatter<'_>, r: &RedisFindings, repair: bool) -> fmt::Result {
    write!(
        f,
        "redis:    {} SKUs checked: {} stale, {} mismatched, {} without a complete entry \
         (reads fall back to PostgreSQL)",
        r.checked_skus, r.stale, r.mismatched, r.missing
    )?;
    match (r.stale + r.mismatched, repair) {
        (0, _) => writeln!(f, "; ok")?,
        (_, true) => writeln!(f, "; {} repaired from PostgreSQL", r.repaired)?,
        (_, false) => writeln!(f, "; not repaired (--no-repair)")?,
    }
    let examples = [
        ("stale", &r.stale_examples),
        ("mismatched", &r.mismatched_examples),
    ];
    for (kind, list) in examples {
        for d in list.iter() {
            let pg = match d.postgres {
                Some(p) => format!(
                    "v{} on_hand {} reserved {} in_transit {}",
                    p.version, p.on_hand, p.reserved, p.in_transit
                ),
                None => "no level".to_owned(),
            };
            let redis = d
                .redis
                .as_deref()
                .map_or("absent".to_owned(), |v| format!("{v:?}"));
            writeln!(
                f,
                "  {kind:<10} {} {:?}: PostgreSQL {pg}, Redis {redis}",
                d.location_id, d.sku
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(location: &str, version: i64, on_hand: i64) -> LevelRow {
        LevelRow {
            location_id: location.into(),
            sku: "S".into(),
            on_hand,
            reserved: 0,
            in_transit: 0,
            version,
            last_count_at: None,
            last_movement_at: None,
        }
    }

    fn hash(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const DONE: (&str, &str) = ("~complete", "1");

    #[test]
    fn an_equal_complete_entry_is_clean_and_an_incomplete_one_missing() {
        let pg = [row("A", 3, 10), row("B", 1, 5)];
        let h = hash(&[("A", "3 10 0 0"), ("B", "1 5 0 0"), DONE]);
        assert_eq!(judge("S", &pg, &pg, &h), Verdict::Clean);
        let h = hash(&[("A", "3 10 0 0"), ("B", "1 5 0 0")]);
        assert_eq!(judge("S", &pg, &pg, &h), Verdict::Missing);
        assert_eq!(judge("S", &pg, &pg, &[]), Verdict::Missing);
        // Old fields in an incomplete entry are harmless: a fill replaces them.
        let h = hash(&[("A", "1 2 0 0")]);
        assert_eq!(judge("S", &pg, &pg, &h), Verdict::Missing);
    }

    #[test]
    fn an_older_version_or_an_absent_level_is_stale() {
        let pg = [row("A", 3, 10), row("B", 1, 5)];
        let h = hash(&[("A", "2 12 0 0"), ("B", "1 5 0 0"), DONE]);
        let Verdict::Stale(d) = judge("S", &pg, &pg, &h) else {
            panic!("stale expected")
        };
        assert_eq!(d.location_id, "A");
        assert_eq!(d.redis.as_deref(), Some("2 12 0 0"));
        assert_eq!(d.postgres.map(|p| p.version), Some(3));
        let h = hash(&[("A", "3 10 0 0"), DONE]);
        assert!(
            matches!(judge("S", &pg, &pg, &h), Verdict::Stale(d) if d.location_id == "B" && d.redis.is_none())
        );
    }

    #[test]
    fn same_version_other_values_corrupt_or_unknown_locations_are_mismatched() {
        let pg = [row("A", 3, 10)];
        for bad in [
            hash(&[("A", "3 11 0 0"), DONE]),
            hash(&[("A", "999999 garbage"), DONE]),
            hash(&[("A", "3 10 0 0 extra"), DONE]),
            hash(&[("A", "3 10 0 0"), ("GONE", "1 1 0 0"), DONE]),
            // Wrong fields make even an incomplete entry a difference: a fill would keep them.
            hash(&[("A", "3 11 0 0")]),
        ] {
            assert!(
                matches!(judge("S", &pg, &pg, &bad), Verdict::Mismatched(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn races_with_concurrent_commits_are_not_differences() {
        let before = [row("A", 3, 10)];
        let after = [row("A", 5, 8), row("B", 1, 1)];
        // Between the two reads: a write in flight, and a level created meanwhile.
        let h = hash(&[("A", "4 9 0 0"), DONE]);
        assert_eq!(judge("S", &before, &after, &h), Verdict::Clean);
        // Ahead of PostgreSQL read after it: impossible for a real commit.
        let h = hash(&[("A", "6 8 0 0"), DONE]);
        assert!(matches!(
            judge("S", &before, &after, &h),
            Verdict::Mismatched(_)
        ));
        // Behind what PostgreSQL had before the first look: stale.
        let h = hash(&[("A", "2 8 0 0"), DONE]);
        assert!(matches!(judge("S", &before, &after, &h), Verdict::Stale(_)));
    }

    #[test]
    fn findings_keep_a_few_examples_and_the_count() {
        let f = Findings::from_rows((0..25).collect::<Vec<i32>>());
        assert_eq!((f.count, f.capped, f.examples.len()), (25, false, EXAMPLES));
    }
}
