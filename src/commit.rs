//! Commit, then make visible: the one step every writer of levels takes after its transaction.
//!
//! The change events are already in the outbox (written in the transaction), so what follows
//! the commit is only the fast path: waking this process's relay and writing the new levels to
//! Redis. A crash in between loses nothing: the relay publishes the events later, and the cache
//! sync (`cache::sync`) writes the levels, within the cache's staleness bound.

use std::time::Instant;

use sqlx::{Postgres, Transaction};

use crate::cache::{ChangedTotals, StockCache};
use crate::db;
use crate::db::levels::LevelRow;
use crate::failpoint;

/// Commits `tx`, then makes `changed` (the levels it wrote) visible, with the totals of their
/// SKUs.
pub async fn commit(
    mut tx: Transaction<'_, Postgres>,
    cache: Option<&StockCache>,
    changed: &[LevelRow],
) -> Result<(), sqlx::Error> {
    // The totals as this transaction leaves them (the triggers kept them), read before the
    // commit: one query, and no other writer's later total can be mistaken for ours (the cache
    // keeps the highest version).
    let totals = match cache {
        Some(_) if !changed.is_empty() => {
            let mut skus: Vec<String> = changed.iter().map(|l| l.sku.clone()).collect();
            skus.sort_unstable();
            skus.dedup();
            let rows = db::totals::for_skus(&mut *tx, &skus).await?;
            Some(ChangedTotals { skus, rows })
        }
        _ => None,
    };
    tx.commit().await?;
    let committed = Instant::now();
    failpoint::crash_if_armed(failpoint::AFTER_COMMIT_BEFORE_CACHE);
    crate::events::relay::wake();
    if let Some(cache) = cache {
        // Only a write Redis took: a level it did not take is visible after the resync, which
        // `omnistock_cache_dirty_skus` and the write failures show instead.
        if cache.publish(changed, totals.as_ref()).await {
            crate::metrics::observe(crate::metrics::COMMIT_TO_VISIBLE, committed.elapsed());
        }
    }
    Ok(())
}
