//! Channel definitions, per-SKU overrides, and the channel feed's bookkeeping.

use std::collections::HashMap;

use sqlx::{FromRow, PgConnection, PgExecutor};

use crate::domain::channel::{ChannelDef, Selector, SkuOverride};

#[derive(FromRow)]
struct ChannelRow {
    channel: String,
    selector: String,
    location_ids: Vec<String>,
    buffer_units: i64,
    max_percent: i64,
}

impl From<ChannelRow> for ChannelDef {
    fn from(r: ChannelRow) -> Self {
        let selector = match r.selector.as_str() {
            "all" => Selector::All,
            "ship_from" => Selector::ShipFrom,
            _ => {
                let mut ids = r.location_ids;
                ids.sort_unstable();
                ids.dedup();
                Selector::Locations(ids)
            }
        };
        ChannelDef {
            channel: r.channel,
            selector,
            buffer_units: r.buffer_units,
            max_percent: r.max_percent,
        }
    }
}

const COLUMNS: &str = "channel, selector, location_ids, buffer_units, max_percent";

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<ChannelDef>, sqlx::Error> {
    let rows: Vec<ChannelRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM channels ORDER BY channel"))
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(ChannelDef::from).collect())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    channel: &str,
) -> Result<Option<ChannelDef>, sqlx::Error> {
    let row: Option<ChannelRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM channels WHERE channel = $1"
    ))
    .bind(channel)
    .fetch_optional(db)
    .await?;
    Ok(row.map(ChannelDef::from))
}

/// Creates or replaces a channel; returns true when it was created.
pub async fn upsert(db: impl PgExecutor<'_>, d: &ChannelDef) -> Result<bool, sqlx::Error> {
    let ids: &[String] = match &d.selector {
        Selector::Locations(ids) => ids,
        _ => &[],
    };
    sqlx::query_scalar(
        "INSERT INTO channels (channel, selector, location_ids, buffer_units, max_percent)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (channel) DO UPDATE SET
            selector = EXCLUDED.selector, location_ids = EXCLUDED.location_ids,
            buffer_units = EXCLUDED.buffer_units, max_percent = EXCLUDED.max_percent,
            updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(&d.channel)
    .bind(d.selector.as_str())
    .bind(ids)
    .bind(d.buffer_units)
    .bind(d.max_percent)
    .fetch_one(db)
    .await
}

#[derive(FromRow)]
pub struct OverrideRow {
    pub channel: String,
    pub sku: String,
    pub buffer_units: Option<i64>,
    pub max_percent: Option<i64>,
    pub enabled: Option<bool>,
}

impl OverrideRow {
    pub fn terms(&self) -> SkuOverride {
        SkuOverride {
            buffer_units: self.buffer_units,
            max_percent: self.max_percent,
            enabled: self.enabled,
        }
    }
}

const OVERRIDE_COLUMNS: &str = "channel, sku, buffer_units, max_percent, enabled";

/// Every override (kept in memory by every daemon).
pub async fn all_overrides(db: impl PgExecutor<'_>) -> Result<Vec<OverrideRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {OVERRIDE_COLUMNS} FROM channel_skus"))
        .fetch_all(db)
        .await
}

/// The overrides of one channel, for some SKUs.
pub async fn overrides_for(
    db: impl PgExecutor<'_>,
    channel: &str,
    skus: &[&str],
) -> Result<HashMap<String, SkuOverride>, sqlx::Error> {
    let rows: Vec<OverrideRow> = sqlx::query_as(&format!(
        "SELECT {OVERRIDE_COLUMNS} FROM channel_skus WHERE channel = $1 AND sku = ANY($2)"
    ))
    .bind(channel)
    .bind(skus)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.sku.clone(), r.terms()))
        .collect())
}

pub async fn get_override(
    db: impl PgExecutor<'_>,
    channel: &str,
    sku: &str,
) -> Result<Option<SkuOverride>, sqlx::Error> {
    let row: Option<OverrideRow> = sqlx::query_as(&format!(
        "SELECT {OVERRIDE_COLUMNS} FROM channel_skus WHERE channel = $1 AND sku = $2"
    ))
    .bind(channel)
    .bind(sku)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.terms()))
}

/// Creates or replaces an override; returns true when it was created.
pub async fn put_override(
    db: impl PgExecutor<'_>,
    channel: &str,
    sku: &str,
    o: &SkuOverride,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO channel_skus (channel, sku, buffer_units, max_percent, enabled)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (channel, sku) DO UPDATE SET
            buffer_units = EXCLUDED.buffer_units, max_percent = EXCLUDED.max_percent,
            enabled = EXCLUDED.enabled, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(channel)
    .bind(sku)
    .bind(o.buffer_units)
    .bind(o.max_percent)
    .bind(o.enabled)
    .fetch_one(db)
    .await
}

/// Returns true when there was one.
pub async fn delete_override(
    db: impl PgExecutor<'_>,
    channel: &str,
    sku: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM channel_skus WHERE channel = $1 AND sku = $2")
        .bind(channel)
        .bind(sku)
        .execute(db)
        .await
        .map(|r| r.rows_affected() > 0)
}

// The feed's queue. Marking uses DO UPDATE, not DO NOTHING: it waits for a feed run that has
// the row locked and is about to delete it, and then inserts it again, so a change that run
// did not see is never dropped.

/// Marks SKUs whose channel totals may have changed.
pub async fn mark_dirty(db: impl PgExecutor<'_>, skus: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channel_dirty (sku) SELECT s FROM UNNEST($1::text[]) AS u(s) ORDER BY s
         ON CONFLICT (sku) DO UPDATE SET marked_at = now()",
    )
    .bind(skus)
    .execute(db)
    .await
    .map(|_| ())
}

/// Marks every SKU that has a level (a channel's definition changed).
pub async fn mark_all_dirty(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channel_dirty (sku) SELECT DISTINCT sku FROM stock_levels ORDER BY sku
         ON CONFLICT (sku) DO UPDATE SET marked_at = now()",
    )
    .execute(db)
    .await
    .map(|_| ())
}

/// Locks up to `limit` marked SKUs, in SKU order.
pub async fn lock_dirty(conn: &mut PgConnection, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT sku FROM channel_dirty ORDER BY sku LIMIT $1 FOR UPDATE")
        .bind(limit)
        .fetch_all(conn)
        .await
}

pub async fn clear_dirty(conn: &mut PgConnection, skus: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM channel_dirty WHERE sku = ANY($1)")
        .bind(skus)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The last published total and its sequence number, per (channel, SKU).
pub async fn published(
    conn: &mut PgConnection,
    skus: &[String],
) -> Result<HashMap<(String, String), (i64, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT channel, sku, available, seq FROM channel_published WHERE sku = ANY($1)",
    )
    .bind(skus)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(c, s, a, q)| ((c, s), (a, q)))
        .collect())
}

pub async fn set_published(
    conn: &mut PgConnection,
    channels: &[&str],
    skus: &[&str],
    available: &[i64],
    seqs: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channel_published (channel, sku, available, seq)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])
         ON CONFLICT (channel, sku) DO UPDATE SET
            available = EXCLUDED.available, seq = EXCLUDED.seq, published_at = now()",
    )
    .bind(channels)
    .bind(skus)
    .bind(available)
    .bind(seqs)
    .execute(conn)
    .await
    .map(|_| ())
}
