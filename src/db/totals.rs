//! Network and channel totals per SKU (table `sku_totals`), kept at write time by triggers on
//! the levels, locations, channels and overrides (migration `20261202000002_sku_totals.sql`).
//! A (SKU, channel) without a row has a total of 0.

use sqlx::{FromRow, PgConnection, PgExecutor};

/// One (SKU, channel) total.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TotalRow {
    pub sku: String,
    pub channel: String,
    /// What the channel may promise: its share summed over its locations (saturated).
    pub available: i64,
    pub version: i64,
}

/// Every channel's total of these SKUs, in (SKU, channel) order.
pub async fn for_skus(
    db: impl PgExecutor<'_>,
    skus: &[String],
) -> Result<Vec<TotalRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sku, channel, available, version FROM sku_totals
         WHERE sku = ANY($1) ORDER BY sku, channel",
    )
    .bind(skus)
    .fetch_all(db)
    .await
}

/// One page of every total, in (SKU, channel) order after `after`, for rebuilding the cache.
pub async fn page(
    db: impl PgExecutor<'_>,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<TotalRow>, sqlx::Error> {
    let (sku, channel) = after.unzip();
    sqlx::query_as(
        "SELECT sku, channel, available, version FROM sku_totals
         WHERE $1::text IS NULL OR (sku, channel) > ($1, $2)
         ORDER BY sku, channel LIMIT $3",
    )
    .bind(sku)
    .bind(channel)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The online channel's available before its share, per SKU (what the network alerts watch):
/// the sum over shipping locations of `max(0, on_hand - reserved - safety_stock)`, saturated.
pub async fn online_gross(
    conn: &mut PgConnection,
    skus: &[&str],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT sku, gross FROM sku_totals WHERE channel = 'online' AND sku = ANY($1)")
        .bind(skus)
        .fetch_all(conn)
        .await
}

/// A stored total that differs from the sum of its levels.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct TotalMismatch {
    pub sku: String,
    pub channel: String,
    /// As stored (0 where there is no row).
    pub stored: i64,
    /// Summed over the levels now.
    pub summed: i64,
}

/// Totals that differ from the sum over their levels (or from 0 where no level feeds them).
/// Run in a REPEATABLE READ transaction (reconciliation does), so the two sides are one
/// snapshot.
pub async fn mismatches(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<TotalMismatch>, sqlx::Error> {
    sqlx::query_as(
        "WITH fresh AS (
             SELECT s.sku, c.channel,
                    sum(omni_pool(x.a, coalesce(o.buffer_units, c.buffer_units),
                                  coalesce(o.max_percent, c.max_percent),
                                  coalesce(o.enabled, true))) AS exact,
                    sum(x.a) AS gross_exact
             FROM stock_levels s
             JOIN locations l ON l.location_id = s.location_id
             CROSS JOIN LATERAL (SELECT omni_available(s.on_hand, s.reserved, l.safety_stock) AS a) x
             JOIN channels c
               ON omni_includes(c.selector, c.location_ids, s.location_id, l.kind, l.ship_from)
             LEFT JOIN channel_skus o ON o.channel = c.channel AND o.sku = s.sku
             GROUP BY s.sku, c.channel
         )
         SELECT COALESCE(t.sku, f.sku) AS sku, COALESCE(t.channel, f.channel) AS channel,
                least(COALESCE(t.exact, 0), 9223372036854775807)::int8 AS stored,
                least(COALESCE(f.exact, 0), 9223372036854775807)::int8 AS summed
         FROM sku_totals t
         FULL JOIN fresh f ON f.sku = t.sku AND f.channel = t.channel
         WHERE COALESCE(t.exact, 0) <> COALESCE(f.exact, 0)
            OR COALESCE(t.gross_exact, 0) <> COALESCE(f.gross_exact, 0)
         ORDER BY 1, 2
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Recomputes every channel's totals of these SKUs from their levels (holding level writers
/// off meanwhile); returns the totals it changed.
pub async fn recompute(conn: &mut PgConnection, skus: &[String]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT sku_totals_recompute(ARRAY(SELECT channel FROM channels), $1::text[])",
    )
    .bind(skus)
    .fetch_one(conn)
    .await
}
