//! `omnistock export stock`: a CSV snapshot of every level, for spreadsheets, audits and other
//! systems' bulk loads.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use sqlx::PgPool;

use crate::db;
use crate::domain::availability::available;

pub const STOCK_HEADER: [&str; 9] = [
    "location_id",
    "sku",
    "on_hand",
    "reserved",
    "available",
    "in_transit",
    "version",
    "last_movement_at",
    "last_count_at",
];

/// Writes every level as CSV (header [`STOCK_HEADER`]), ordered by location and SKU, streamed
/// from PostgreSQL row by row; returns the number of levels written. `available` uses the
/// location's current safety stock; times are RFC 3339 UTC, empty when never.
pub async fn stock(pool: &PgPool, writer: impl Write) -> anyhow::Result<u64> {
    let mut out = csv::Writer::from_writer(writer);
    out.write_record(STOCK_HEADER)?;
    let mut rows = db::levels::all_with_safety_stock(pool);
    let mut n = 0;
    while let Some(row) = rows.try_next().await.context("reading levels")? {
        let r = row.level;
        let available = available(r.on_hand, r.reserved, row.safety_stock);
        out.write_record([
            r.location_id,
            r.sku,
            r.on_hand.to_string(),
            r.reserved.to_string(),
            available.to_string(),
            r.in_transit.to_string(),
            r.version.to_string(),
            time(r.last_movement_at),
            time(r.last_count_at),
        ])
        .context("writing the CSV")?;
        n += 1;
    }
    out.flush().context("writing the CSV")?;
    Ok(n)
}

/// Exports to a file, atomically: written beside it and renamed once complete, so a failed
/// export never leaves a truncated file that looks like a snapshot.
pub async fn stock_to_file(pool: &PgPool, path: &Path) -> anyhow::Result<u64> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = async {
        let mut w = std::io::BufWriter::new(file);
        let n = stock(pool, &mut w).await?;
        w.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .context("flushing the file")?;
        anyhow::Ok(n)
    }
    .await;
    match written {
        Ok(n) => {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default()
}
