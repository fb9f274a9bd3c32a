//! `omnistock import stock FILE.csv`: opening counts at `COPY` speed, in flat memory.
//!
//! 1. The file streams through a checking thread (one row in memory at a time) into
//!    `COPY import_stage FROM STDIN` on a dedicated connection; refused rows are noted with
//!    their line (the first [`MAX_ERRORS`] by line, and how many in all).
//! 2. A unique index on the stage finds repeated (location, SKU) keys. Any refused or repeated
//!    row fails the import here: nothing has touched levels or ledger.
//! 3. One transaction merges the stage into levels and ledger, set-based, in chunks of keys in
//!    (location, SKU) order: the order every writer locks levels in (`ingest::apply`), so live
//!    ingest goes on meanwhile without deadlocking on the levels. Per chunk: lock the levels
//!    that exist, read what the ledger recorded after each count under those locks (the as-of
//!    rule: a count is the counted quantity plus the deltas that occurred after it; a count
//!    older than the level's latest is stale), write levels and ledger; then create the levels
//!    that did not exist, already counted. Counts whose event id the ledger holds (the same file
//!    imported before) are dropped first: importing a file again changes nothing. A deadlock
//!    or serialization failure it still meets (a live movement creating a level the import
//!    also creates) rolls the transaction back and the merge is retried from the stage.
//! 4. After the commit, Redis is filled: from the change list for a small import, else (the
//!    SKUs' cached entries dropped first, so reads go to PostgreSQL meanwhile) SKU page by SKU
//!    page from PostgreSQL.
//!
//! Change events: an import recording at most [`EVENT_LIMIT`] counts writes one change event
//! per changed level (and the alerts they cross), as every writer does. A larger one is a bulk
//! load: it writes none (millions of events would hold the relay and the cache sync for many
//! minutes); it marks its SKUs for the channel feed instead, so channel totals are republished
//! once per SKU, and fills Redis itself after the commit.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};

use super::progress::Progress;
use super::rows::{Checker, Columns, Counting};
use super::{backoff, Errors, ATTEMPTS};
use crate::cache::{PageSender, StockCache};
use crate::db;
use crate::db::import::Range;
use crate::db::levels::LevelRow;
use crate::events::LevelChange;

/// Most counts an import may record and still emit one change event per changed level.
pub const EVENT_LIMIT: u64 = 10_000;
/// Keys per merge chunk: big enough for set-based statements to pay off, small enough that
/// one chunk's sorts and work tables stay in memory.
const CHUNK_ROWS: i64 = 200_000;
/// Bytes of `COPY` text handed to PostgreSQL at a time (and at most 4 in flight).
const COPY_BUFFER: usize = 1 << 20;
/// SKUs per Redis fill page (a page is one Redis script call per SKU group: 50 SKUs of 200
/// locations is 10,000 levels, well inside the Redis response timeout).
const FILL_PAGE: i64 = 50;
/// SKUs per page when dropping their cached entries before the fill.
const INVALIDATE_PAGE: i64 = 5_000;

/// What a stock import did.
#[derive(Debug)]
pub struct StockImport {
    pub rows: usize,
    pub recorded: usize,
    pub already_imported: usize,
    /// SKUs written to Redis after the commit by the bulk fill (`None`: no bulk fill ran,
    /// or Redis failed and `omnistock cache rebuild` should be run).
    pub cached_skus: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// No progress bar.
    pub quiet: bool,
}

pub async fn stock(
    pool: &PgPool,
    cache: Option<&StockCache>,
    file: &Path,
    default_counted_at: DateTime<Utc>,
) -> anyhow::Result<StockImport> {
    stock_with(pool, cache, file, default_counted_at, Options::default()).await
}

pub async fn stock_with(
    pool: &PgPool,
    cache: Option<&StockCache>,
    file: &Path,
    default_counted_at: DateTime<Utc>,
    options: Options,
) -> anyhow::Result<StockImport> {
    let started = Instant::now();
    let size = std::fs::metadata(file)
        .with_context(|| format!("opening {}", file.display()))?
        .len();
    let known: HashSet<String> = db::locations::list(pool)
        .await?
        .into_iter()
        .map(|l| l.location_id)
        .collect();
    // Its own session: the stage is TEMP, and goes when the connection closes.
    let mut conn = pool.acquire().await?.detach();
    let progress = Progress::new(options.quiet, size);
    let result = run(&mut conn, cache, file, known, default_counted_at, &progress).await;
    progress.finish();
    let _ = conn.close().await;
    let r = result?;
    tracing::info!(
        rows = r.rows,
        recorded = r.recorded,
        already_imported = r.already_imported,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stock imported"
    );
    Ok(r)
}

async fn run(
    conn: &mut PgConnection,
    cache: Option<&StockCache>,
    file: &Path,
    known: HashSet<String>,
    default_at: DateTime<Utc>,
    progress: &Progress,
) -> anyhow::Result<StockImport> {
    let mut clock = Instant::now();
    db::import::prepare_session(conn).await?;
    db::import::create_stage(conn).await?;
    let pass = stage(conn, file, known, default_at, progress).await?;
    phase("read, check and COPY into the stage", &mut clock);
    let mut errors = pass.errors;
    let indexed = db::import::index_stage(conn).await;
    phase("unique index on the stage, ANALYZE", &mut clock);
    match indexed {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            let (repeats, n) = db::import::repeats(conn, super::MAX_ERRORS as i64).await?;
            for r in &repeats {
                errors.push(
                    r.line as u64,
                    format!(
                        "{} / {:?} already on line {}",
                        r.location_id, r.sku, r.first
                    ),
                );
            }
            errors.uncounted(n.saturating_sub(repeats.len() as i64) as u64);
        }
        Err(e) => return Err(e.into()),
    }
    errors.into_result(file)?;

    let reference = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 0;
    let merged = loop {
        attempt += 1;
        let mut tx = conn.begin().await?;
        clock = Instant::now();
        match merge(&mut tx, &reference, progress).await {
            Ok(m) => {
                phase("merge, all chunks", &mut clock);
                crate::commit::commit(tx, cache, &m.changed).await?;
                phase("commit", &mut clock);
                break m;
            }
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                drop(tx);
                let pause = backoff(attempt);
                tracing::warn!(error = %e, attempt, retry_in_ms = pause.as_millis() as u64, "import met a concurrent writer; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e.context(format!("importing {}", file.display()))),
        }
    };
    let cached_skus = match (cache, merged.bulk) {
        (Some(cache), true) => fill_cache(conn, cache, progress).await,
        _ => None,
    };
    phase("Redis fill", &mut clock);
    Ok(StockImport {
        rows: pass.staged as usize,
        recorded: merged.recorded as usize,
        already_imported: merged.already as usize,
        cached_skus,
    })
}

/// Logs how long the phase that just ended took (`RUST_LOG=omnistock=debug`: the import's
/// profile), and restarts the clock.
fn phase(what: &str, clock: &mut Instant) {
    tracing::debug!(
        phase = what,
        ms = clock.elapsed().as_millis() as u64,
        "import phase done"
    );
    *clock = Instant::now();
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

fn retryable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .is_some_and(db::is_retryable)
}

struct Pass {
    staged: u64,
    errors: Errors,
}

/// Streams the file through the checks into the stage.
async fn stage(
    conn: &mut PgConnection,
    file: &Path,
    known: HashSet<String>,
    default_at: DateTime<Utc>,
    progress: &Progress,
) -> anyhow::Result<Pass> {
    let read = Arc::new(AtomicU64::new(0));
    let rows = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let reader = {
        let file = file.to_path_buf();
        let (read, rows) = (read.clone(), rows.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Pass> {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let mut rdr = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .flexible(true)
                .from_reader(Counting {
                    inner: std::io::BufReader::with_capacity(1 << 20, f),
                    read,
                });
            let headers = rdr.headers()?.clone();
            let mut checker = Checker::new(Columns::of(&headers)?, known, default_at, Utc::now());
            let mut errors = Errors::default();
            let mut record = csv::StringRecord::new();
            let mut buf = Vec::with_capacity(COPY_BUFFER + 4096);
            let mut staged = 0u64;
            while rdr
                .read_record(&mut record)
                .with_context(|| format!("reading {}", file.display()))?
            {
                rows.fetch_add(1, Ordering::Relaxed);
                let line = record.position().map_or(0, |p| p.line());
                if record.len() != headers.len() {
                    errors.push(
                        line,
                        format!("{} fields, the header has {}", record.len(), headers.len()),
                    );
                    continue;
                }
                match checker.row(&record, line, &mut buf) {
                    Ok(()) => staged += 1,
                    Err(why) => errors.push(line, why),
                }
                if buf.len() >= COPY_BUFFER {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(COPY_BUFFER + 4096));
                    if tx.blocking_send(full).is_err() {
                        bail!("the COPY into PostgreSQL stopped");
                    }
                }
            }
            if !buf.is_empty() && tx.blocking_send(buf).is_err() {
                bail!("the COPY into PostgreSQL stopped");
            }
            Ok(Pass { staged, errors })
        })
    };
    let mut copy = db::import::copy_in(conn).await?;
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = copy.send(chunk).await {
            sent = Err(e);
            break;
        }
        progress.read(read.load(Ordering::Relaxed), rows.load(Ordering::Relaxed));
    }
    drop(rx);
    let pass = reader.await.context("the file reader stopped")?;
    match (pass, sent) {
        (Ok(pass), Ok(())) => {
            copy.finish().await?;
            progress.read(read.load(Ordering::Relaxed), rows.load(Ordering::Relaxed));
            Ok(pass)
        }
        (Err(e), Ok(())) => {
            let _ = copy.abort("the import file could not be read").await;
            Err(e)
        }
        (_, Err(e)) => Err(e.into()),
    }
}

struct Merged {
    recorded: u64,
    already: u64,
    bulk: bool,
    changed: Vec<LevelRow>,
}

/// The merge of the stage into levels and ledger, inside `conn`'s transaction.
async fn merge(
    conn: &mut PgConnection,
    reference: &str,
    progress: &Progress,
) -> anyhow::Result<Merged> {
    let mut clock = Instant::now();
    let already = db::import::drop_known(conn).await?;
    phase("drop counts the ledger holds", &mut clock);
    db::import::ensure_skus(conn).await?;
    phase("create SKUs", &mut clock);
    let starts = db::import::chunk_starts(conn, CHUNK_ROWS).await?;
    phase("chunk bounds", &mut clock);
    let total: u64 = starts.iter().map(|(_, _, n)| *n as u64).sum();
    progress.merging(total);
    for (i, (location, sku, n)) in starts.iter().enumerate() {
        let range = Range {
            from: (location, sku),
            to: starts.get(i + 1).map(|(l, s, _)| (l.as_str(), s.as_str())),
        };
        let n = *n as u64;
        let mut done = apply_existing(conn, range, false, reference).await?;
        phase("chunk: lock and count existing levels", &mut clock);
        done += insert_new(conn, range, reference).await?;
        phase("chunk: create new levels and their ledger", &mut clock);
        if done < n {
            // Levels a live movement created after the locks above: they exist now.
            done += apply_existing(conn, range, true, reference).await?;
            phase("chunk: levels created meanwhile", &mut clock);
        }
        anyhow::ensure!(
            done == n,
            "merged {done} of the {n} counts from {location} / {sku:?} on"
        );
        progress.merged(n);
    }
    let bulk = total > EVENT_LIMIT;
    let mut changed = Vec::new();
    if bulk {
        db::import::mark_channels_dirty(conn).await?;
        phase("mark channels dirty", &mut clock);
    } else {
        let rows = db::import::changed(conn).await?;
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            changes.push(LevelChange {
                location_id: r.location_id.clone(),
                sku: r.sku.clone(),
                before_on_hand: r.before_on_hand,
                before_reserved: r.reserved,
                on_hand: r.on_hand,
                reserved: r.reserved,
                in_transit: r.in_transit,
                version: r.version,
                cause: "count",
                reference: Some(r.event_id),
            });
            changed.push(LevelRow {
                location_id: r.location_id,
                sku: r.sku,
                on_hand: r.on_hand,
                reserved: r.reserved,
                in_transit: r.in_transit,
                version: r.version,
                last_count_at: r.last_count_at,
                last_movement_at: r.last_movement_at,
            });
        }
        crate::events::record(conn, &changes).await?;
    }
    Ok(Merged {
        recorded: total,
        already,
        bulk,
        changed,
    })
}

/// Locks the range's existing levels (with `pending_only`: only those whose count the ledger
/// does not hold yet), applies their counts; returns how many.
async fn apply_existing(
    conn: &mut PgConnection,
    range: Range<'_>,
    pending_only: bool,
    reference: &str,
) -> anyhow::Result<u64> {
    if db::import::lock_existing(conn, range, pending_only).await? == 0 {
        return Ok(0);
    }
    let planned = db::import::plan_existing(conn).await?;
    if let Some((line, location, sku)) = db::import::first_overflow(conn).await? {
        bail!(
            "line {line}: {location} / {sku:?}: {}; nothing was imported",
            crate::domain::level::Overflow
        );
    }
    db::import::apply_existing(conn, reference).await?;
    Ok(planned)
}

/// Creates the range's levels that did not exist when [`apply_existing`] locked, already
/// counted, and records their counts; returns how many. Plain inserts in a savepoint first; if
/// a live movement created one of these levels meanwhile (a unique violation), the savepoint is
/// rolled back and the range goes through `ON CONFLICT DO NOTHING`, which leaves such levels to
/// the slow path of the caller.
async fn insert_new(
    conn: &mut PgConnection,
    range: Range<'_>,
    reference: &str,
) -> anyhow::Result<u64> {
    let mut savepoint = conn.begin().await?;
    match db::import::insert_new_plain(&mut savepoint, range, reference).await {
        Ok(n) => {
            savepoint.commit().await?;
            Ok(n)
        }
        Err(e) if is_unique_violation(&e) => {
            savepoint.rollback().await?;
            tracing::debug!("a live movement created a level of this import; merging the range with ON CONFLICT");
            Ok(db::import::insert_new(conn, range, reference).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// After the commit: every imported SKU's levels into Redis, page by page. A failure is logged
/// and reported (`None`): the levels are committed, and `omnistock cache rebuild` (or the
/// daemon's reconcile) repairs Redis.
async fn fill_cache(
    conn: &mut PgConnection,
    cache: &StockCache,
    progress: &Progress,
) -> Option<usize> {
    let result: anyhow::Result<usize> = async {
        let n = db::import::collect_skus(conn).await?;
        progress.filling(n);
        // A bulk import writes no change events, so the cache sync never learns of its levels
        // and keeps vouching for Redis: drop the SKUs' cached levels and totals first (a quick
        // pipelined DEL), so reads miss and go to PostgreSQL until the slower fill below has
        // written each SKU, instead of serving the levels from before the import meanwhile.
        let mut after: Option<String> = None;
        loop {
            let page = db::import::skus_page(conn, after.as_deref(), INVALIDATE_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            let page: Vec<&str> = page.iter().map(String::as_str).collect();
            cache.store().delete(&page).await?;
            cache.store().delete_totals(&page).await?;
        }
        let read = |pages: PageSender| async move {
            let mut after: Option<String> = None;
            loop {
                let skus = db::import::skus_page(conn, after.as_deref(), FILL_PAGE).await?;
                let Some(last) = skus.last() else { break };
                after = Some(last.clone());
                if !pages.send(cache.read_fill_page(skus).await?).await {
                    break;
                }
            }
            anyhow::Ok(())
        };
        cache
            .fill_overlapped(read, |n| progress.filled(n as u64))
            .await
    }
    .await;
    match result {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "the import is committed but Redis was not filled; run `omnistock cache rebuild`");
            None
        }
    }
}
