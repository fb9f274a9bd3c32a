//! `omnistock import locations|stock FILE.csv`: bulk loading, all or nothing.
//!
//! Every row is checked before anything is written; a bad row is reported with its line
//! number and nothing is imported. Opening stock is recorded as `count` movements in the
//! ledger, so the levels and the ledger agree from the first day. The stock import streams
//! its file through `COPY` and merges it set-based ([`stock`]); a locations file is small
//! (one row per store) and is read whole.

mod progress;
mod rows;
mod stock;

pub use rows::opening_event_id;
pub use stock::{stock, stock_with, Options, StockImport, EVENT_LIMIT};

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::db;
use crate::domain::location::{LocationInput, LocationKind};
use crate::domain::movement::max_clock_skew;

/// Most row errors listed (the first by line), with the count of the rest.
const MAX_ERRORS: usize = 100;
/// Years PostgreSQL's `timestamptz` can hold (4713 BC is year -4712).
const PG_YEARS: std::ops::RangeInclusive<i32> = -4712..=294_275;

/// Why a count time cannot be recorded: in the far future (the rule `occurred_at` follows, or
/// the count would freeze the level against every later movement), or out of PostgreSQL's range.
pub(crate) fn counted_at_problem(t: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
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

/// Refused rows: the first [`MAX_ERRORS`] by line, and how many in all.
#[derive(Default)]
struct Errors {
    shown: std::collections::BTreeMap<(u64, u64), String>,
    total: u64,
}

impl Errors {
    fn push(&mut self, line: u64, msg: impl std::fmt::Display) {
        self.total += 1;
        self.shown
            .insert((line, self.total), format!("line {line}: {msg}"));
        if self.shown.len() > MAX_ERRORS {
            self.shown.pop_last();
        }
    }

    /// Refused rows counted but not listed.
    fn uncounted(&mut self, n: u64) {
        self.total += n;
    }

    fn into_result(self, file: &Path) -> anyhow::Result<()> {
        if self.total == 0 {
            return Ok(());
        }
        let mut lines: Vec<String> = self.shown.into_values().collect();
        let more = self.total - lines.len() as u64;
        if more > 0 {
            lines.push(format!("… and {more} more invalid rows"));
        }
        bail!(
            "{} has {} invalid rows; nothing was imported:\n  {}",
            file.display(),
            self.total,
            lines.join("\n  ")
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
    let mut errors = Errors::default();
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

/// Attempts of the stock merge when it meets a deadlock or serialization failure.
const ATTEMPTS: u32 = 8;

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
