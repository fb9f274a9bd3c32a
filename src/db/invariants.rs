//! Checks that the levels agree with the ledger (see `domain::level` for the rule).

use sqlx::{FromRow, PgExecutor};

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct LedgerMismatch {
    pub location_id: String,
    pub sku: String,
    pub on_hand: i64,
    pub implied: i64,
}

/// Levels whose on-hand differs from what the ledger implies: the latest count (by
/// `occurred_at`, then id) plus every delta that occurred after it, else the sum of all deltas.
pub async fn ledger_mismatches(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<LedgerMismatch>, sqlx::Error> {
    sqlx::query_as(
        "WITH last_count AS (
             SELECT DISTINCT ON (location_id, sku) location_id, sku, occurred_at, quantity
             FROM movements WHERE kind = 'count'
             ORDER BY location_id, sku, occurred_at DESC, id DESC
         ), implied AS (
             SELECT l.location_id, l.sku, l.on_hand,
                    COALESCE(c.quantity, 0) + COALESCE((
                        SELECT sum(m.signed_quantity) FROM movements m
                        WHERE m.location_id = l.location_id AND m.sku = l.sku
                          AND m.signed_quantity IS NOT NULL
                          AND (c.occurred_at IS NULL OR m.occurred_at > c.occurred_at)
                    ), 0)::int8 AS implied
             FROM stock_levels l
             LEFT JOIN last_count c ON c.location_id = l.location_id AND c.sku = l.sku
         )
         SELECT location_id, sku, on_hand, implied FROM implied
         WHERE on_hand <> implied
         ORDER BY location_id, sku
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct ReservedMismatch {
    pub location_id: String,
    pub sku: String,
    pub reserved: i64,
    pub held: i64,
}

/// Levels whose `reserved` differs from what their live holds (held or confirmed) still hold.
pub async fn reserved_mismatches(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<ReservedMismatch>, sqlx::Error> {
    sqlx::query_as(
        "WITH held AS (
             SELECT r.location_id, l.sku, sum(l.held)::int8 AS held
             FROM reservation_lines l JOIN reservations r USING (reservation_id)
             WHERE r.status IN ('held', 'confirmed')
             GROUP BY 1, 2
         )
         SELECT COALESCE(s.location_id, h.location_id) AS location_id,
                COALESCE(s.sku, h.sku) AS sku,
                COALESCE(s.reserved, 0)::int8 AS reserved, COALESCE(h.held, 0)::int8 AS held
         FROM stock_levels s
         FULL JOIN held h ON h.location_id = s.location_id AND h.sku = s.sku
         WHERE COALESCE(s.reserved, 0) <> COALESCE(h.held, 0)
         ORDER BY 1, 2
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct InTransitMismatch {
    pub location_id: String,
    pub sku: String,
    pub in_transit: i64,
    pub accounted: i64,
}

/// Levels whose `in_transit` differs from the open transfers accounted to them.
pub async fn in_transit_mismatches(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<InTransitMismatch>, sqlx::Error> {
    sqlx::query_as(
        "WITH t AS (
             SELECT accounted_to AS location_id, sku, sum(accounted)::int8 AS accounted
             FROM transfers WHERE accounted_to IS NOT NULL GROUP BY 1, 2
         )
         SELECT COALESCE(s.location_id, t.location_id) AS location_id,
                COALESCE(s.sku, t.sku) AS sku,
                COALESCE(s.in_transit, 0)::int8 AS in_transit,
                COALESCE(t.accounted, 0)::int8 AS accounted
         FROM stock_levels s
         FULL JOIN t ON t.location_id = s.location_id AND t.sku = s.sku
         WHERE COALESCE(s.in_transit, 0) <> COALESCE(t.accounted, 0)
         ORDER BY 1, 2
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A location's day whose order counter differs from the orders assigned to it that day.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct CapacityDifference {
    pub location_id: String,
    pub local_date: chrono::NaiveDate,
    /// Slots taken (`daily_order_counts`).
    pub counted: i64,
    /// Orders assigned (`order_assignments`).
    pub assigned: i64,
}

/// Order counters of each location's today and yesterday (its own calendar) that differ from
/// the day's assignments. Older days no longer limit any route.
pub async fn capacity_differences(
    db: impl PgExecutor<'_>,
) -> Result<Vec<CapacityDifference>, sqlx::Error> {
    sqlx::query_as(
        "WITH days AS (
             SELECT location_id, (now() AT TIME ZONE timezone)::date - 1 AS since FROM locations
         ), counted AS (
             SELECT c.location_id, c.local_date, c.orders AS counted
             FROM daily_order_counts c JOIN days d USING (location_id)
             WHERE c.local_date >= d.since
         ), assigned AS (
             SELECT a.location_id, a.local_date, count(*)::int8 AS assigned
             FROM order_assignments a JOIN days d USING (location_id)
             WHERE a.local_date >= d.since
             GROUP BY 1, 2
         )
         SELECT COALESCE(c.location_id, a.location_id) AS location_id,
                COALESCE(c.local_date, a.local_date) AS local_date,
                COALESCE(c.counted, 0)::int8 AS counted, COALESCE(a.assigned, 0)::int8 AS assigned
         FROM counted c
         FULL JOIN assigned a ON a.location_id = c.location_id AND a.local_date = c.local_date
         WHERE COALESCE(c.counted, 0) <> COALESCE(a.assigned, 0)
         ORDER BY 1, 2",
    )
    .fetch_all(db)
    .await
}
