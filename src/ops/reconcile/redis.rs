//! Redis's level hashes against PostgreSQL's levels (see the module comment of `reconcile` for
//! the two looks that tell a write in flight from a difference).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;

use super::{EXAMPLES, PAGE, SETTLE};
use crate::cache::{self, RedisStore};
use crate::db;
use crate::db::levels::LevelRow;

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

/// SKUs that looked different at the first look, with PostgreSQL's levels from before it.
struct Suspects {
    since: Option<Instant>,
    skus: Vec<(String, Vec<LevelRow>)>,
}

pub(super) async fn compare(
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
}
