//! The Redis hot cache of stock levels, and what keeps it honest.
//!
//! Writes go through after every commit; reads come from Redis and fall back to PostgreSQL on a
//! miss or a Redis failure (filling Redis on a miss). While Redis is failing, reads skip it for
//! a moment instead of waiting on every call.
//!
//! How stale Redis can be is bounded by the cache sync ([`sync`]): Redis is trusted only while
//! its watermark shows every change committed more than [`sync::MAX_STALENESS`] ago written.
//! Within that bound this daemon does better for its own failures: a write it failed leaves the
//! SKU "dirty" (read from PostgreSQL until the resync job rewrote it), and when too many are
//! dirty it stops trusting Redis at all until a full rebuild has finished.

mod store;
pub mod sync;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use store::{Read, RedisStore, TotalsRead};

use crate::db;
use crate::db::health::DbHealth;
use crate::db::levels::LevelRow;
use crate::db::totals::TotalRow;
use crate::domain::availability::LevelQuantities;
use crate::metrics::METRICS;

/// Where a read was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Cache,
    Database,
}

/// More dirty SKUs than this and the resync job rebuilds everything instead.
pub const MAX_DIRTY: usize = 100_000;
/// How long reads skip Redis after it failed.
const BREAKER: Duration = Duration::from_secs(1);
/// The longest a read waits for Redis before asking PostgreSQL: a hung Redis (SIGSTOP, a
/// stalled network) must not hold reads past the half second they are promised in.
const READ_BUDGET: Duration = Duration::from_millis(250);
/// SKUs per page when rebuilding.
const REBUILD_PAGE: i64 = 500;
/// Totals per page when rewriting totals.
const TOTALS_PAGE: i64 = 2_000;

pub struct StockCache {
    store: RedisStore,
    pool: PgPool,
    dirty: Mutex<HashSet<String>>,
    max_dirty: AtomicUsize,
    /// Set when the dirty set overflowed: Redis is not trusted until a rebuild has finished.
    full_resync: AtomicBool,
    /// Counts overflows, so a rebuild that raced a new one does not clear `full_resync`.
    overflows: AtomicU64,
    skip_until: Mutex<Option<Instant>>,
    /// Set when PostgreSQL failed a read: for a moment, reads Redis can answer completely are
    /// served from it without waiting for the pool.
    database_breaker: Mutex<Option<Instant>>,
    db: DbHealth,
    /// Totals rewrites in progress after a change of terms (a location, channel or override)
    /// that changed totals without a level write: totals are read from PostgreSQL meanwhile.
    totals_refreshing: AtomicUsize,
}

/// A read of totals: one per SKU asked, where they came from, and how old they may be.
#[derive(Debug)]
pub struct TotalsAnswer {
    pub totals: Vec<i64>,
    pub source: Source,
    pub age: Option<Duration>,
}

/// The totals of these SKUs, read in the transaction that changed them (so they are exactly
/// its result), for the write after the commit.
pub struct ChangedTotals {
    pub skus: Vec<String>,
    pub rows: Vec<TotalRow>,
}

/// A read's answer: levels per SKU asked, where they came from, and how old they may be.
#[derive(Debug)]
pub struct Answer {
    pub levels: Vec<Vec<LevelQuantities>>,
    pub source: Source,
    /// Every change committed longer ago than this is in the answer: zero when PostgreSQL
    /// answered; the age of the cache-sync watermark for Redis; `None` when Redis holds no
    /// watermark (only served so while PostgreSQL is down).
    pub age: Option<Duration>,
}

impl Answer {
    fn from_redis(cached: Vec<Option<Vec<LevelQuantities>>>, age: Option<Duration>) -> Self {
        Answer {
            levels: cached.into_iter().flatten().collect(),
            source: Source::Cache,
            age,
        }
    }
}

impl StockCache {
    pub fn new(store: RedisStore, pool: PgPool) -> Arc<Self> {
        Self::with_db_health(store, pool, DbHealth::default())
    }

    /// A cache that knows, from the daemon's PostgreSQL watch, when PostgreSQL is down: reads
    /// are then served from Redis at once instead of waiting for the pool.
    pub fn with_db_health(mut store: RedisStore, pool: PgPool, db: DbHealth) -> Arc<Self> {
        store.read_totals_from(pool.clone());
        Arc::new(StockCache {
            totals_refreshing: AtomicUsize::new(0),
            db,
            store,
            pool,
            dirty: Mutex::new(HashSet::new()),
            max_dirty: AtomicUsize::new(MAX_DIRTY),
            full_resync: AtomicBool::new(false),
            overflows: AtomicU64::new(0),
            skip_until: Mutex::new(None),
            database_breaker: Mutex::new(None),
        })
    }

    pub async fn ping(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    /// The Redis side, for maintenance that compares it with PostgreSQL (reconciliation).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Test hook: a smaller dirty limit than [`MAX_DIRTY`], so a test can overflow it.
    pub fn set_max_dirty(&self, n: usize) {
        self.max_dirty.store(n, Ordering::SeqCst);
    }

    /// Whether reads bypass Redis until a full rebuild has finished.
    pub fn rebuild_pending(&self) -> bool {
        self.full_resync.load(Ordering::SeqCst)
    }

    fn overflowed(&self) {
        self.overflows.fetch_add(1, Ordering::SeqCst);
        self.full_resync.store(true, Ordering::SeqCst);
    }

    /// SKUs waiting to be rewritten to Redis.
    pub fn dirty_count(&self) -> usize {
        self.dirty.lock().map(|d| d.len()).unwrap_or(0)
    }

    fn open(breaker: &Mutex<Option<Instant>>) -> bool {
        breaker
            .lock()
            .map(|s| s.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    fn trip(&self, breaker: &Mutex<Option<Instant>>) {
        if let Ok(mut s) = breaker.lock() {
            *s = Some(Instant::now() + BREAKER);
        }
    }

    fn skipping(&self) -> bool {
        Self::open(&self.skip_until)
    }

    fn database_down(&self) -> bool {
        !self.db.is_up() || Self::open(&self.database_breaker)
    }

    fn tripped(&self, e: &dyn std::fmt::Display, what: &str) {
        tracing::warn!(error = %e, "Redis failed during {what}; using PostgreSQL");
        self.trip(&self.skip_until);
    }

    /// What Redis gave that may be served (nothing when it is not trusted; a SKU whose last
    /// write did not reach Redis is stale there until resynced), and the SKUs left to read
    /// from PostgreSQL, sorted and without repeats.
    fn usable<T: Clone>(
        &self,
        skus: &[&str],
        cached: &[Option<T>],
        trusted: bool,
    ) -> (Vec<Option<T>>, Vec<String>) {
        let usable: Vec<Option<T>> = match self.dirty.lock() {
            _ if !trusted => vec![None; skus.len()],
            Ok(d) if !d.is_empty() => skus
                .iter()
                .zip(cached)
                .map(|(s, c)| if d.contains(*s) { None } else { c.clone() })
                .collect(),
            _ => cached.to_vec(),
        };
        let missing = skus
            .iter()
            .zip(&usable)
            .filter(|(_, c)| c.is_none())
            .map(|(s, _)| s.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (usable, missing)
    }

    fn mark_dirty<'a>(&self, skus: impl Iterator<Item = &'a str>) {
        if let Ok(mut d) = self.dirty.lock() {
            d.extend(skus.map(str::to_owned));
            if d.len() > self.max_dirty.load(Ordering::SeqCst) {
                d.clear();
                self.overflowed();
            }
        }
    }

    /// Writes levels changed by a committed transaction, with the totals of their SKUs (read
    /// in that transaction; else from PostgreSQL now). Never fails: a level Redis did not take
    /// is remembered and resynced later. Returns whether Redis took them now.
    pub async fn publish(&self, changed: &[LevelRow], totals: Option<&ChangedTotals>) -> bool {
        if changed.is_empty() {
            return false;
        }
        let result = if self.skipping() {
            Err(None)
        } else {
            match totals {
                Some(t) => self
                    .store
                    .write_with_totals(changed, false, &t.skus, &t.rows, &[])
                    .await
                    .map_err(Some),
                None => self.store.write(changed, false).await.map_err(Some),
            }
        };
        if let Err(e) = result {
            if let Some(e) = e {
                self.tripped(&e, "a write");
            }
            METRICS.cache_write_failures.inc();
            self.mark_dirty(changed.iter().map(|l| l.sku.as_str()));
            return false;
        }
        true
    }

    /// A Redis read, or `None` (the breaker tripped) when it failed or a hung Redis did not
    /// answer within the read budget: PostgreSQL answers instead.
    async fn within_budget<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Option<T> {
        match tokio::time::timeout(READ_BUDGET, read).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                self.tripped(&e, "a read");
                None
            }
            Err(_) => {
                self.tripped(&"no answer within the read budget", "a read");
                None
            }
        }
    }

    /// The levels of each SKU, in the order asked, where they came from (`Database` if any SKU
    /// had to be read from PostgreSQL), and how old the answer may be.
    pub async fn levels(&self, skus: &[&str]) -> Result<Answer, sqlx::Error> {
        let n = skus.len();
        // What Redis holds, and whether it may be served: the sync watermark must vouch for it,
        // and this daemon must not be waiting for a rebuild after losing track of its writes.
        // A hung Redis must not hold a read up: past the budget PostgreSQL answers instead.
        let (cached, watermark_age) = if self.skipping() {
            (vec![None; n], None)
        } else {
            self.within_budget(self.store.read_with_watermark(skus))
                .await
                .map_or((vec![None; n], None), |r| (r.levels, r.watermark_age))
        };
        let trusted =
            watermark_age.is_some_and(|age| age <= sync::MAX_STALENESS) && !self.rebuild_pending();
        if !trusted {
            METRICS.cache_fallbacks.add(n as u64);
        }
        // PostgreSQL failed a moment ago: what Redis holds is the best answer this daemon has
        // (the staleness bound is a promise while PostgreSQL answers), served with its age
        // instead of waiting for the pool again on every read.
        let complete = cached.iter().all(Option::is_some);
        if !trusted && complete && self.database_down() {
            return Ok(Answer::from_redis(cached, watermark_age));
        }
        let (usable, missing) = self.usable(skus, &cached, trusted);
        METRICS.cache_hits.add((skus.len() - missing.len()) as u64);
        if missing.is_empty() {
            return Ok(Answer {
                levels: usable.into_iter().flatten().collect(),
                source: Source::Cache,
                age: watermark_age,
            });
        }
        let rows = match db::levels::for_skus(&self.pool, &missing).await {
            Ok(rows) => rows,
            Err(e) if complete => {
                tracing::warn!(error = %e, "PostgreSQL failed; serving levels from Redis");
                self.trip(&self.database_breaker);
                return Ok(Answer::from_redis(cached, watermark_age));
            }
            Err(e) => return Err(e),
        };
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
        let some_cached = missing.len() < n;
        let levels = skus
            .iter()
            .zip(usable)
            .map(|(sku, c)| c.unwrap_or_else(|| from_db.get(sku).cloned().unwrap_or_default()))
            .collect();
        Ok(Answer {
            levels,
            source: Source::Database,
            age: if some_cached {
                watermark_age
            } else {
                Some(Duration::ZERO)
            },
        })
    }

    /// One channel's total of each SKU, in the order asked: from Redis under the same rules as
    /// levels (watermark, dirty SKUs, breakers), else from PostgreSQL's totals (filling Redis).
    pub async fn totals(&self, skus: &[&str], channel: &str) -> Result<TotalsAnswer, sqlx::Error> {
        let n = skus.len();
        let (cached, watermark_age) = if self.skipping() {
            (vec![None; n], None)
        } else {
            self.within_budget(self.store.read_totals(skus, channel))
                .await
                .map_or((vec![None; n], None), |r| (r.totals, r.watermark_age))
        };
        let trusted = watermark_age.is_some_and(|age| age <= sync::MAX_STALENESS)
            && !self.rebuild_pending()
            && self.totals_refreshing.load(Ordering::SeqCst) == 0;
        if !trusted {
            METRICS.cache_fallbacks.add(n as u64);
        }
        let complete = cached.iter().all(Option::is_some);
        let from_redis = |cached: Vec<Option<i64>>| TotalsAnswer {
            totals: cached.into_iter().map(Option::unwrap_or_default).collect(),
            source: Source::Cache,
            age: watermark_age,
        };
        if !trusted && complete && self.database_down() {
            return Ok(from_redis(cached));
        }
        let (usable, missing) = self.usable(skus, &cached, trusted);
        METRICS.cache_hits.add((n - missing.len()) as u64);
        if missing.is_empty() {
            return Ok(TotalsAnswer {
                totals: usable.into_iter().map(Option::unwrap_or_default).collect(),
                source: Source::Cache,
                age: watermark_age,
            });
        }
        let rows = match db::totals::for_skus(&self.pool, &missing).await {
            Ok(rows) => rows,
            Err(e) if complete => {
                tracing::warn!(error = %e, "PostgreSQL failed; serving totals from Redis");
                self.trip(&self.database_breaker);
                return Ok(from_redis(cached));
            }
            Err(e) => return Err(e),
        };
        if !self.skipping() && trusted {
            METRICS.cache_misses.add(missing.len() as u64);
            if let Err(e) = self
                .store
                .write_with_totals(&[], false, &missing, &rows, &[channel])
                .await
            {
                self.tripped(&e, "a fill");
            }
        }
        let from_db: HashMap<&str, i64> = rows
            .iter()
            .filter(|r| r.channel == channel)
            .map(|r| (r.sku.as_str(), r.available))
            .collect();
        let some_cached = missing.len() < n;
        Ok(TotalsAnswer {
            totals: skus
                .iter()
                .zip(usable)
                .map(|(sku, c)| c.unwrap_or_else(|| from_db.get(sku).copied().unwrap_or(0)))
                .collect(),
            source: Source::Database,
            age: if some_cached {
                watermark_age
            } else {
                Some(Duration::ZERO)
            },
        })
    }

    /// Terms changed totals without a level write (a location's safety stock or ship flag, a
    /// channel, an override): rewrites every total to Redis in the background, and reads this
    /// daemon's totals from PostgreSQL until it is done. A failed rewrite leaves Redis
    /// untrusted until the full rebuild.
    pub fn totals_changed(self: &Arc<Self>) {
        self.totals_refreshing.fetch_add(1, Ordering::SeqCst);
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = cache.rebuild_totals().await {
                tracing::warn!(error = %e, "rewriting totals to Redis failed; rebuilding it all");
                cache.overflowed();
            }
            cache.totals_refreshing.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Rewrites every total from PostgreSQL, page by page; returns the totals written.
    pub async fn rebuild_totals(&self) -> anyhow::Result<usize> {
        let mut after: Option<(String, String)> = None;
        let mut n = 0;
        loop {
            let rows = db::totals::page(
                &self.pool,
                after.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
                TOTALS_PAGE,
            )
            .await?;
            let Some(last) = rows.last() else { break };
            after = Some((last.sku.clone(), last.channel.clone()));
            let mut skus: Vec<String> = rows.iter().map(|r| r.sku.clone()).collect();
            skus.dedup();
            self.store
                .write_with_totals(&[], false, &skus, &rows, &[])
                .await?;
            n += rows.len();
        }
        Ok(n)
    }

    /// Rewrites dirty SKUs (or everything, after an overflow) once Redis answers.
    pub async fn resync(&self) -> anyhow::Result<usize> {
        let full = self.full_resync.load(Ordering::SeqCst);
        if !full && self.dirty_count() == 0 {
            return Ok(0);
        }
        self.store.ping().await?;
        if full {
            // Redis stays untrusted until the rebuild is done, and longer if it overflowed again
            // meanwhile (that overflow's SKUs may have been rebuilt before their commit).
            let before = self.overflows.load(Ordering::SeqCst);
            let n = self.rebuild().await?;
            if self.overflows.load(Ordering::SeqCst) == before {
                self.full_resync.store(false, Ordering::SeqCst);
            }
            return Ok(n);
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
            let page = self.fill_page_of(rows).await?;
            self.write_fill_page(&page).await?;
        }
        Ok(skus.len())
    }

    /// Rewrites every level from PostgreSQL, SKU page by SKU page; returns the SKUs written.
    /// Versioned writes make it safe while movements keep flowing.
    pub async fn rebuild(&self) -> anyhow::Result<usize> {
        let read = |pages: PageSender| async move {
            let mut after: Option<String> = None;
            loop {
                let rows =
                    db::levels::page_by_sku(&self.pool, after.as_deref(), REBUILD_PAGE).await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.sku.clone());
                if !pages.send(self.fill_page_of(rows).await?).await {
                    break;
                }
            }
            anyhow::Ok(())
        };
        self.fill_overlapped(read, |_| ()).await
    }

    /// The levels and totals of these SKUs as PostgreSQL holds them, for a fill.
    pub async fn read_fill_page(&self, skus: Vec<String>) -> Result<FillPage, sqlx::Error> {
        let levels = db::levels::for_skus(&self.pool, &skus).await?;
        self.with_totals(skus, levels).await
    }

    /// A fill page of these levels: their SKUs, with the SKUs' totals.
    async fn fill_page_of(&self, levels: Vec<LevelRow>) -> Result<FillPage, sqlx::Error> {
        let skus: Vec<String> = levels
            .iter()
            .map(|r| r.sku.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.with_totals(skus, levels).await
    }

    async fn with_totals(
        &self,
        skus: Vec<String>,
        levels: Vec<LevelRow>,
    ) -> Result<FillPage, sqlx::Error> {
        let totals = db::totals::for_skus(&self.pool, &skus).await?;
        Ok(FillPage {
            skus,
            levels,
            totals,
        })
    }

    /// Writes the pages `read` sends (until it returns) to Redis as complete entries; returns
    /// the SKUs written. A channel of one lets PostgreSQL read the next page while Redis writes
    /// this one, so a fill takes about the slower of the two, not their sum. A failed write
    /// stops the reads: `send` answers false.
    pub async fn fill_overlapped<F, Fut>(
        &self,
        read: F,
        on_page: impl Fn(usize),
    ) -> anyhow::Result<usize>
    where
        F: FnOnce(PageSender) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let (pages, mut filled) = tokio::sync::mpsc::channel::<FillPage>(1);
        // `move`: a writer that fails must drop the receiver, or the reader waits forever.
        let write = async move {
            let mut total = 0;
            while let Some(page) = filled.recv().await {
                self.write_fill_page(&page).await?;
                total += page.skus.len();
                on_page(page.skus.len());
            }
            anyhow::Ok(total)
        };
        let (read, written) = tokio::join!(read(PageSender(pages)), write);
        let written = written?;
        read.map(|()| written)
    }

    async fn write_fill_page(&self, page: &FillPage) -> Result<(), redis::RedisError> {
        self.store
            .write_with_totals(&page.levels, true, &page.skus, &page.totals, &[])
            .await?;
        METRICS.cache_resyncs.add(page.skus.len() as u64);
        Ok(())
    }
}

/// Where a fill's reader hands its pages to the Redis writer.
pub struct PageSender(tokio::sync::mpsc::Sender<FillPage>);

impl PageSender {
    /// Queues a page behind the one being written; false once the writer has stopped.
    pub async fn send(&self, page: FillPage) -> bool {
        self.0.send(page).await.is_ok()
    }
}

/// One page of a cache fill: some SKUs with every level and total PostgreSQL holds for them.
pub struct FillPage {
    skus: Vec<String>,
    levels: Vec<LevelRow>,
    totals: Vec<TotalRow>,
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

/// Background job: rebuilds the cache at start (if asked), then keeps the sync watermark fresh
/// and resyncs dirty SKUs.
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
                cache.overflowed();
            }
        }
    }
    crate::jobs::periodic(&shutdown, sync::INTERVAL, || async {
        if let Err(e) = sync::catch_up(&cache).await {
            tracing::debug!(error = %e, "cache sync postponed; reads use PostgreSQL meanwhile");
        }
        match cache.resync().await {
            Ok(0) => crate::jobs::succeeded(),
            Ok(n) => {
                crate::jobs::succeeded();
                tracing::info!(skus = n, "cache caught up with PostgreSQL");
            }
            Err(e) => tracing::debug!(error = %e, "cache resync postponed"),
        }
    })
    .await
}
