//! `omnistock import locations|stock FILE.csv`: bulk loading, all or nothing.
//!
//! Every row is checked before anything is written; a bad row is reported with its line
//! number and nothing is imported. Opening stock is recorded as `count` movements in the
//! ledger, so the levels and the ledger agree from the first day.
//!
//! The stock import runs while the daemons ingest. Its one transaction applies every count in
//! a single `apply::apply_in`, so it takes its locks in the order every other writer takes
//! them (levels by location and SKU, then per-SKU alert states), and a deadlock or
//! serialization failure it still meets is retried with backoff: it is idempotent (stable
//! event ids), so a retry records exactly what the failed attempt would have.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sqlx::PgPool;

use crate::cache::StockCache;
use crate::db;
use crate::domain::ids::is_valid_sku;
use crate::domain::location::{LocationInput, LocationKind};
use crate::domain::movement::{max_clock_skew, Incoming, Movement, MovementKind, MAX_QUANTITY};
use crate::ingest::apply;

/// Most row errors listed before giving up.
const MAX_ERRORS: usize = 20;
/// Attempts of the import transaction when it meets a deadlock or serialization failure.
const ATTEMPTS: u32 = 8;
/// Years PostgreSQL's `timestamptz` can hold (4713 BC is year -4712).
const PG_YEARS: std::ops::RangeInclusive<i32> = -4712..=294_275;

/// Why a count time cannot be recorded: in the far future (the rule `occurred_at` follows, or
/// the count would freeze the level against every later movement), or out of PostgreSQL's range.
fn counted_at_problem(t: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    if !PG_YEARS.contains(&t.year()) {
        return Some(format!(
            "counted_at {t} is outside the range PostgreSQL can store"
        ));
    }
    if t > now + max_clock_skew() {
        return Some(format!(
            "counted_at {} lies more than 24 hours in the future",
            t.to_rfc3339()
        ));
    }
    None
}

struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, line: u64, msg: impl std::fmt::Display) {
        if self.0.len() < MAX_ERRORS {
            self.0.push(format!("line {line}: {msg}"));
        } else if self.0.len() == MAX_ERRORS {
            self.0.push("… more errors not shown".into());
        }
    }

    fn into_result(self, file: &Path) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        bail!(
            "{} has invalid rows; nothing was imported:\n  {}",
            file.display(),
            self.0.join("\n  ")
        )
    }
}

fn reader(file: &Path) -> anyhow::Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("opening {}", file.display()))
}

fn line_of(r: &csv::StringRecord) -> u64 {
    r.position().map_or(0, |p| p.line())
}

#[derive(Deserialize)]
struct LocationCsv {
    location_id: String,
    name: String,
    kind: LocationKind,
    lat: f64,
    lon: f64,
    #[serde(default)]
    pickup: Option<bool>,
    #[serde(default)]
    ship_from: Option<bool>,
    #[serde(default)]
    safety_stock: Option<i64>,
    #[serde(default)]
    daily_order_capacity: Option<i64>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    low_stock_threshold: Option<i64>,
}

pub async fn locations(pool: &PgPool, file: &Path) -> anyhow::Result<usize> {
    let mut rdr = reader(file)?;
    let headers = rdr.headers()?.clone();
    let mut errors = Errors(Vec::new());
    let mut rows = Vec::new();
    let mut seen = HashMap::new();
    for record in rdr.records() {
        let record = record.with_context(|| format!("reading {}", file.display()))?;
        let line = line_of(&record);
        let row: LocationCsv = match record.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(line, e);
                continue;
            }
        };
        let id = row.location_id.clone();
        let input = LocationInput {
            name: row.name,
            kind: row.kind,
            lat: row.lat,
            lon: row.lon,
            pickup: row.pickup.unwrap_or(false),
            ship_from: row.ship_from.unwrap_or(false),
            safety_stock: row.safety_stock.unwrap_or(0),
            daily_order_capacity: row.daily_order_capacity,
            timezone: row.timezone.filter(|t| !t.is_empty()),
            low_stock_threshold: row.low_stock_threshold,
        };
        match input.validate(&id) {
            Ok(l) => {
                if let Some(first) = seen.insert(id.clone(), line) {
                    errors.push(line, format!("location {id:?} already on line {first}"));
                }
                rows.push((line, l));
            }
            Err(fields) => {
                for f in fields {
                    errors.push(line, format!("{}: {}", f.field, f.problem));
                }
            }
        }
    }
    let zones: BTreeSet<&str> = rows.iter().map(|(_, l)| l.timezone.as_str()).collect();
    for zone in zones {
        if !db::locations::timezone_exists(pool, zone).await? {
            for (line, _) in rows.iter().filter(|(_, l)| l.timezone == zone) {
                errors.push(*line, format!("timezone: unknown time zone {zone:?}"));
            }
        }
    }
    errors.into_result(file)?;
    let mut tx = pool.begin().await?;
    for (_, l) in &rows {
        db::locations::upsert(&mut *tx, l).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

#[derive(Deserialize)]
struct StockCsv {
    location_id: String,
    sku: String,
    on_hand: i64,
    #[serde(default)]
    counted_at: Option<String>,
}

/// What a stock import did.
#[derive(Debug)]
pub struct StockImport {
    pub rows: usize,
    pub recorded: usize,
    pub already_imported: usize,
}

/// Applies the counts in one transaction, retried on deadlock or serialization failure.
async fn apply_with_retry(
    pool: &PgPool,
    cache: Option<&StockCache>,
    movements: &[Movement],
) -> anyhow::Result<apply::Applied> {
    // Opening counts were never published: they count in no publish-to-commit delay.
    let incoming: Vec<Incoming> = movements.iter().cloned().map(Incoming::from).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = pool.begin().await?;
        let result = apply::apply_in(&mut tx, &incoming).await;
        match result {
            Ok(applied) => {
                // All or nothing: a count whose effect overflows fails the import (rolled back).
                if let Some((i, why)) = applied.rejected.first() {
                    let m = &movements[*i];
                    anyhow::bail!("{} / {:?}: {why}", m.location_id, m.sku);
                }
                crate::commit::commit(tx, cache, &applied.changed).await?;
                return Ok(applied);
            }
            Err(e) if attempt < ATTEMPTS && db::is_retryable(&e) => {
                drop(tx);
                let pause = backoff(attempt);
                tracing::warn!(error = %e, attempt, retry_in_ms = pause.as_millis() as u64, "import met a concurrent writer; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// 100 ms doubling per attempt up to 3.2 s, with jitter so two retrying importers part ways.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.clamp(1, 6).saturating_sub(1);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    ) % base;
    Duration::from_millis(base + jitter / 2)
}

/// A stable id for an opening count, so importing the same file again changes nothing, while a
/// corrected quantity for the same instant is a new recount.
fn opening_event_id(m: &Movement) -> String {
    fn fnv1a(seed: u64, parts: &[&str]) -> u64 {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
    let at = m.occurred_at.to_rfc3339();
    let qty = m.quantity.to_string();
    let parts = [
        m.location_id.as_str(),
        m.sku.as_str(),
        at.as_str(),
        qty.as_str(),
    ];
    format!(
        "import-{:016x}{:016x}",
        fnv1a(0xcbf2_9ce4_8422_2325, &parts),
        fnv1a(0x6c62_272e_07bb_0142, &parts)
    )
}

pub async fn stock(
    pool: &PgPool,
    cache: Option<&StockCache>,
    file: &Path,
    default_counted_at: DateTime<Utc>,
) -> anyhow::Result<StockImport> {
    let started = Instant::now();
    let mut rdr = reader(file)?;
    let headers = rdr.headers()?.clone();
    let mut errors = Errors(Vec::new());
    let mut movements = Vec::new();
    let mut lines = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    for record in rdr.records() {
        let record = record.with_context(|| format!("reading {}", file.display()))?;
        let line = line_of(&record);
        let row: StockCsv = match record.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(line, e);
                continue;
            }
        };
        if !is_valid_sku(&row.sku) {
            errors.push(line, "sku must be 1-128 printable characters");
            continue;
        }
        if !(0..=MAX_QUANTITY).contains(&row.on_hand) {
            errors.push(
                line,
                format!(
                    "on_hand must be between 0 and {MAX_QUANTITY}, got {}",
                    row.on_hand
                ),
            );
            continue;
        }
        let counted_at = match row.counted_at.as_deref().filter(|s| !s.is_empty()) {
            None => default_counted_at,
            Some(s) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => t.with_timezone(&Utc),
                Err(e) => {
                    errors.push(
                        line,
                        format!("counted_at {s:?} is not an RFC 3339 timestamp: {e}"),
                    );
                    continue;
                }
            },
        };
        if let Some(problem) = counted_at_problem(counted_at, Utc::now()) {
            errors.push(line, problem);
            continue;
        }
        if let Some(first) = seen.insert((row.location_id.clone(), row.sku.clone()), line) {
            errors.push(
                line,
                format!(
                    "{} / {:?} already on line {first}",
                    row.location_id, row.sku
                ),
            );
            continue;
        }
        let mut m = Movement {
            event_id: String::new(),
            location_id: row.location_id,
            sku: row.sku,
            kind: MovementKind::Count,
            quantity: row.on_hand,
            occurred_at: counted_at,
            source: Some("import".into()),
            reference: file.file_name().map(|f| f.to_string_lossy().into_owned()),
            reservation_id: None,
            transfer_id: None,
            to_location_id: None,
            supply_id: None,
            expected_at: None,
        };
        m.event_id = opening_event_id(&m);
        movements.push(m);
        lines.push(line);
    }
    let locations: Vec<String> = movements
        .iter()
        .map(|m| m.location_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let known = db::locations::known_ids(pool, &locations).await?;
    for (m, line) in movements.iter().zip(&lines) {
        if !known.contains(&m.location_id) {
            errors.push(
                *line,
                format!(
                    "location {:?} is not registered (import locations first)",
                    m.location_id
                ),
            );
        }
    }
    errors.into_result(file)?;

    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!(
        "importing {} rows of {}",
        movements.len(),
        file.display()
    ));
    bar.enable_steady_tick(Duration::from_millis(200));
    let total = apply_with_retry(pool, cache, &movements).await;
    bar.finish_and_clear();
    let total = total.with_context(|| format!("importing {}", file.display()))?;
    tracing::info!(
        rows = movements.len(),
        recorded = total.recorded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stock imported"
    );
    Ok(StockImport {
        rows: movements.len(),
        recorded: total.recorded,
        already_imported: total.duplicates,
    })
}
