//! The cache sync: what bounds how stale a level served from Redis can be.
//!
//! Every level change is in the outbox, committed in the transaction of the change. The write
//! just after the commit is only the fast path: a crash, or a Redis failure, can lose it. This
//! job, run by every daemon (one at a time), writes every outbox change to Redis with the
//! versioned write (never over a newer version), moves its cursor past them (its row of
//! `outbox_cursors`; outbox rows are never updated, see `events::cursor`), and then raises a
//! watermark in Redis to the Redis time it took *before* reading the outbox. Any change that
//! committed before that instant was visible to the read: it is past the cursor already, or
//! this read returned it (above the cursor or in one of its gaps), so it is in Redis now.
//!
//! Readers trust Redis only while the watermark is at most [`MAX_STALENESS`] old (by Redis's
//! clock, read in the same round trip), and read PostgreSQL otherwise. So a value served from
//! Redis reflects every change committed more than `MAX_STALENESS` before the read, whichever
//! daemon committed it and whatever happened to it after the commit.
//!
//! Rows already behind the cursor say nothing about a Redis that has restarted since (empty, or
//! loaded from a snapshot older than its last writes). The watermark names the Redis process
//! (`run_id`) it was proved on; on any other, the sync first rebuilds every level from
//! PostgreSQL, and only then vouches for it.

use std::time::Duration;

use serde::Deserialize;

use super::StockCache;
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

/// Rewrites every level and total from PostgreSQL, then vouches for this Redis (the watermark):
/// every commit before the rebuild began is in PostgreSQL's pages, read after it, and so in
/// Redis now. Returns the SKUs written. `omnistock cache rebuild` ends the same way, so that the
/// first daemon after it trusts Redis at once instead of rebuilding it all over again, with
/// every read going to PostgreSQL meanwhile.
pub async fn rebuild_and_vouch(cache: &StockCache) -> anyhow::Result<usize> {
    let (started, run_id) = cache.store.clock().await?;
    let skus = cache.rebuild().await?;
    let (_, still) = cache.store.clock().await?;
    anyhow::ensure!(still == run_id, "Redis restarted during the rebuild");
    cache.store.raise_watermark(started, &run_id).await?;
    Ok(skus)
}

/// One run: `None` when another daemon's run holds the turn, else the rows written.
pub async fn sync_once(cache: &StockCache) -> anyhow::Result<Option<usize>> {
    let (pool, store) = (&cache.pool, &cache.store);
    // Taken before the outbox is read, so every commit before it is visible to that read; and
    // before the turn is taken, so a daemon that cannot reach Redis never holds the turn.
    let (started, run_id) = store.clock().await?;
    let mut tx = pool.begin().await?;
    if !db::cache_sync::try_lock(&mut tx).await? {
        return Ok(None);
    }
    if store.watermark().await?.is_none_or(|(_, id)| id != run_id) {
        // A Redis this sync has never vouched for: what it lacks is unknown, so rewrite it all.
        let skus = rebuild_and_vouch(cache).await?;
        tx.commit().await?;
        tracing::info!(skus, "cache rebuilt for a Redis it had not synced");
        return Ok(Some(0));
    }
    let mut cursor = db::outbox::cursor(&mut tx, db::outbox::CACHE_SYNC).await?;
    let (horizon, rows) = db::outbox::unseen(&mut tx, &cursor, BATCH).await?;
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
    // A full batch may have left older rows behind: only a run that saw them all may vouch.
    let complete = (rows.len() as i64) < BATCH;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let before = cursor.clone();
    cursor.advance(horizon, &ids, complete);
    if cursor != before {
        db::outbox::save_cursor(&mut tx, db::outbox::CACHE_SYNC, &cursor).await?;
    }
    if complete {
        store.raise_watermark(started, &run_id).await?;
    }
    tx.commit().await?;
    Ok(Some(rows.len()))
}

/// Runs until the outbox holds no unwritten change (or another daemon has the turn).
pub async fn catch_up(cache: &StockCache) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        match sync_once(cache).await? {
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
