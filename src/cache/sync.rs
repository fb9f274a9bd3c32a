//! The cache sync: what bounds how stale a level served from Redis can be.
//!
//! Every level change is in the outbox, committed in the transaction of the change. The write
//! just after the commit is only the fast path: a crash, or a Redis failure, can lose it. This
//! job, run by every daemon (one at a time), writes every outbox change to Redis with the
//! versioned write (never over a newer version), marks the rows written, and then raises a
//! watermark in Redis to the Redis time it took *before* reading the outbox. Any change that
//! committed before that instant was visible to the read, so it is in Redis now.
//!
//! Readers trust Redis only while the watermark is at most [`MAX_STALENESS`] old (by Redis's
//! clock, read in the same round trip), and read PostgreSQL otherwise. So a value served from
//! Redis reflects every change committed more than `MAX_STALENESS` before the read, whichever
//! daemon committed it and whatever happened to it after the commit.

use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;

use super::RedisStore;
use crate::db;
use crate::db::levels::LevelRow;

/// The promise: a level served from Redis misses no change committed longer ago than this.
pub const MAX_STALENESS: Duration = Duration::from_secs(2);
/// How often each daemon tries to sync: a fraction of the bound, so one slow or lost run does
/// not send reads to PostgreSQL.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Outbox rows per run.
const BATCH: i64 = 5_000;

/// The part of a change event's payload the cache holds.
#[derive(Deserialize)]
struct Change {
    location_id: String,
    sku: String,
    on_hand: i64,
    reserved: i64,
    in_transit: i64,
    version: i64,
}

impl From<Change> for LevelRow {
    fn from(c: Change) -> Self {
        LevelRow {
            location_id: c.location_id,
            sku: c.sku,
            on_hand: c.on_hand,
            reserved: c.reserved,
            in_transit: c.in_transit,
            version: c.version,
            last_count_at: None,
            last_movement_at: None,
        }
    }
}

/// One run: `None` when another daemon's run holds the turn, else the rows written.
pub async fn sync_once(pool: &PgPool, store: &RedisStore) -> anyhow::Result<Option<usize>> {
    // Taken before the outbox is read, so every commit before it is visible to that read; and
    // before the turn is taken, so a daemon that cannot reach Redis never holds the turn.
    let started = store.now_ms().await?;
    let mut tx = pool.begin().await?;
    if !db::cache_sync::try_lock(&mut tx).await? {
        return Ok(None);
    }
    let rows = db::cache_sync::uncached(&mut tx, BATCH).await?;
    let mut levels: Vec<LevelRow> = Vec::with_capacity(rows.len());
    for r in rows.iter().filter(|r| r.subject.starts_with("changes.")) {
        match serde_json::from_value::<Change>(r.payload.clone()) {
            Ok(c) => levels.push(c.into()),
            Err(e) => {
                tracing::warn!(id = r.id, error = %e, "outbox change without a level; not cached")
            }
        }
    }
    // The store writes one key per run of equal SKUs.
    levels.sort_by(|a, b| {
        (&a.sku, &a.location_id, a.version).cmp(&(&b.sku, &b.location_id, b.version))
    });
    store.write(&levels, false).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    if !ids.is_empty() {
        db::cache_sync::mark_cached(&mut tx, &ids).await?;
    }
    // A full batch may have left older rows behind: only a run that saw them all may vouch.
    if (rows.len() as i64) < BATCH {
        store.raise_watermark(started).await?;
    }
    tx.commit().await?;
    Ok(Some(rows.len()))
}

/// Runs until the outbox holds no unwritten change (or another daemon has the turn).
pub async fn catch_up(pool: &PgPool, store: &RedisStore) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        match sync_once(pool, store).await? {
            Some(n) => {
                total += n;
                if (n as i64) < BATCH {
                    return Ok(total);
                }
            }
            None => return Ok(total),
        }
    }
}
