//! The Redis hot cache of stock levels, and what keeps it honest.
//!
//! Writes go through after every commit; reads come from Redis and fall back to PostgreSQL on a
//! miss or a Redis failure (filling Redis on a miss). A failed write leaves the SKU "dirty":
//! the resync job rewrites dirty SKUs from PostgreSQL once Redis answers again. While Redis is
//! failing, reads skip it for a moment instead of waiting on every call.

mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use store::RedisStore;

use crate::db;
use crate::db::levels::LevelRow;
use crate::domain::availability::LevelQuantities;
use crate::metrics::METRICS;

/// Where a read was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Cache,
    Database,
}

/// More dirty SKUs than this and the resync job rebuilds everything instead.
const MAX_DIRTY: usize = 100_000;
/// How long reads skip Redis after it failed.
const BREAKER: Duration = Duration::from_secs(1);
/// SKUs per page when rebuilding.
const REBUILD_PAGE: i64 = 500;

pub struct StockCache {
    store: RedisStore,
    pool: PgPool,
    dirty: Mutex<HashSet<String>>,
    full_resync: AtomicBool,
    skip_until: Mutex<Option<Instant>>,
}

impl StockCache {
    pub fn new(store: RedisStore, pool: PgPool) -> Arc<Self> {
        Arc::new(StockCache {
            store,
            pool,
            dirty: Mutex::new(HashSet::new()),
            full_resync: AtomicBool::new(false),
            skip_until: Mutex::new(None),
        })
    }

    pub async fn ping(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    /// The Redis side, for maintenance that compares it with PostgreSQL (reconciliation).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// SKUs waiting to be rewritten to Redis.
    pub fn dirty_count(&self) -> usize {
        self.dirty.lock().map(|d| d.len()).unwrap_or(0)
    }

    fn skipping(&self) -> bool {
        self.skip_until
            .lock()
            .map(|s| s.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    fn tripped(&self, e: &redis::RedisError, what: &str) {
        tracing::warn!(error = %e, "Redis failed during {what}; using PostgreSQL");
        if let Ok(mut s) = self.skip_until.lock() {
            *s = Some(Instant::now() + BREAKER);
        }
    }

    fn mark_dirty<'a>(&self, skus: impl Iterator<Item = &'a str>) {
        if let Ok(mut d) = self.dirty.lock() {
            d.extend(skus.map(str::to_owned));
            if d.len() > MAX_DIRTY {
                d.clear();
                self.full_resync.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Writes levels changed by a committed transaction. Never fails: a level Redis did not
    /// take is remembered and resynced later.
    pub async fn publish(&self, changed: &[LevelRow]) {
        if changed.is_empty() {
            return;
        }
        let result = if self.skipping() {
            Err(None)
        } else {
            self.store.write(changed, false).await.map_err(Some)
        };
        if let Err(e) = result {
            if let Some(e) = e {
                self.tripped(&e, "a write");
            }
            METRICS.cache_write_failures.inc();
            self.mark_dirty(changed.iter().map(|l| l.sku.as_str()));
        }
    }

    /// The levels of each SKU, in the order asked, and where they came from (`Database` if any
    /// SKU had to be read from PostgreSQL).
    pub async fn levels(
        &self,
        skus: &[&str],
    ) -> Result<(Vec<Vec<LevelQuantities>>, Source), sqlx::Error> {
        let cached = if self.skipping() {
            METRICS.cache_fallbacks.add(skus.len() as u64);
            vec![None; skus.len()]
        } else {
            match self.store.read(skus).await {
                Ok(c) => c,
                Err(e) => {
                    self.tripped(&e, "a read");
                    METRICS.cache_fallbacks.add(skus.len() as u64);
                    vec![None; skus.len()]
                }
            }
        };
        // A SKU whose last write did not reach Redis is stale there until resynced.
        let cached: Vec<_> = match self.dirty.lock() {
            Ok(d) if !d.is_empty() => skus
                .iter()
                .zip(cached)
                .map(|(s, c)| if d.contains(*s) { None } else { c })
                .collect(),
            _ => cached,
        };
        let missing: Vec<String> = skus
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(s, _)| s.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        METRICS.cache_hits.add((skus.len() - missing.len()) as u64);
        if missing.is_empty() {
            return Ok((cached.into_iter().flatten().collect(), Source::Cache));
        }
        let rows = db::levels::for_skus(&self.pool, &missing).await?;
        if !self.skipping() {
            METRICS.cache_misses.add(missing.len() as u64);
            // A PostgreSQL snapshot holds every level of these SKUs: fill them as complete.
            if let Err(e) = self.store.write(&rows, true).await {
                self.tripped(&e, "a fill");
            }
        }
        let mut from_db: HashMap<&str, Vec<LevelQuantities>> = HashMap::new();
        for r in &rows {
            from_db
                .entry(r.sku.as_str())
                .or_default()
                .push(quantities(r));
        }
        let levels = skus
            .iter()
            .zip(cached)
            .map(|(sku, c)| c.unwrap_or_else(|| from_db.get(sku).cloned().unwrap_or_default()))
            .collect();
        Ok((levels, Source::Database))
    }

    /// Rewrites dirty SKUs (or everything, after an overflow) once Redis answers.
    pub async fn resync(&self) -> anyhow::Result<usize> {
        let full = self.full_resync.load(Ordering::SeqCst);
        if !full && self.dirty_count() == 0 {
            return Ok(0);
        }
        self.store.ping().await?;
        if full {
            self.full_resync.store(false, Ordering::SeqCst);
            return self.rebuild().await.inspect_err(|_| {
                self.full_resync.store(true, Ordering::SeqCst);
            });
        }
        let skus: Vec<String> = self
            .dirty
            .lock()
            .map(|mut d| d.drain().collect())
            .unwrap_or_default();
        let result = self.fill(&skus).await;
        if result.is_err() {
            self.mark_dirty(skus.iter().map(String::as_str));
        }
        result
    }

    async fn fill(&self, skus: &[String]) -> anyhow::Result<usize> {
        for chunk in skus.chunks(REBUILD_PAGE as usize) {
            let rows = db::levels::for_skus(&self.pool, chunk).await?;
            self.store.write(&rows, true).await?;
            METRICS.cache_resyncs.add(chunk.len() as u64);
        }
        Ok(skus.len())
    }

    /// Rewrites every level from PostgreSQL, SKU page by SKU page; returns the SKUs written.
    /// Versioned writes make it safe while movements keep flowing.
    pub async fn rebuild(&self) -> anyhow::Result<usize> {
        let mut after: Option<String> = None;
        let mut total = 0;
        loop {
            let rows = db::levels::page_by_sku(&self.pool, after.as_deref(), REBUILD_PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.sku.clone());
            let skus = rows
                .iter()
                .map(|r| r.sku.as_str())
                .collect::<BTreeSet<_>>()
                .len();
            self.store.write(&rows, true).await?;
            METRICS.cache_resyncs.add(skus as u64);
            total += skus;
        }
        Ok(total)
    }
}

pub fn quantities(r: &LevelRow) -> LevelQuantities {
    LevelQuantities {
        location_id: r.location_id.clone(),
        on_hand: r.on_hand,
        reserved: r.reserved,
        in_transit: r.in_transit,
        version: r.version,
    }
}

/// Background job: rebuilds the cache at start (if asked), then resyncs dirty SKUs.
pub async fn run_resync_job(
    cache: Arc<StockCache>,
    rebuild_first: bool,
    shutdown: CancellationToken,
) {
    if rebuild_first {
        let started = Instant::now();
        match cache.rebuild().await {
            Ok(n) => tracing::info!(
                skus = n,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "cache rebuilt from PostgreSQL"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cache rebuild at start failed; reads fall back to PostgreSQL until Redis is back");
                cache.full_resync.store(true, Ordering::SeqCst);
            }
        }
    }
    crate::jobs::periodic(&shutdown, Duration::from_millis(500), || async {
        match cache.resync().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(skus = n, "cache caught up with PostgreSQL"),
            Err(e) => tracing::debug!(error = %e, "cache resync postponed"),
        }
    })
    .await
}
