//! What `omnistock simulate` reads to plan a day and to audit it afterwards.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};

/// Each location's UTC offset now, in minutes (PostgreSQL knows the zones).
pub async fn utc_offsets(db: impl PgExecutor<'_>) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT location_id,
                (extract(epoch FROM (now() AT TIME ZONE timezone) - (now() AT TIME ZONE 'UTC')) / 60)::int4
         FROM locations ORDER BY location_id",
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LevelSnapshot {
    pub location_id: String,
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub safety_stock: i64,
}

/// Every level with its location's safety stock.
pub async fn levels(db: impl PgExecutor<'_>) -> Result<Vec<LevelSnapshot>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.location_id, s.sku, s.on_hand, s.reserved, l.safety_stock
         FROM stock_levels s JOIN locations l USING (location_id)
         ORDER BY s.location_id, s.sku",
    )
    .fetch_all(db)
    .await
}

/// Levels whose holds exceed what on-hand less safety stock allows.
pub async fn over_reserved(db: impl PgExecutor<'_>) -> Result<Vec<LevelSnapshot>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.location_id, s.sku, s.on_hand, s.reserved, l.safety_stock
         FROM stock_levels s JOIN locations l USING (location_id)
         WHERE s.reserved > 0 AND s.reserved > s.on_hand - l.safety_stock
         ORDER BY s.location_id, s.sku",
    )
    .fetch_all(db)
    .await
}

/// The newest ledger id: everything after it happened during the run.
pub async fn last_movement_id(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM movements")
        .fetch_one(db)
        .await
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LedgerEffect {
    pub location_id: String,
    pub sku: String,
    pub kind: String,
    pub effect: i64,
    pub reservation_id: Option<String>,
}

/// What each movement recorded after `after_id` did to on-hand.
pub async fn effects_since(
    db: impl PgExecutor<'_>,
    after_id: i64,
) -> Result<Vec<LedgerEffect>, sqlx::Error> {
    sqlx::query_as(
        "SELECT location_id, sku, kind, effect, reservation_id FROM movements
         WHERE id > $1 ORDER BY id",
    )
    .bind(after_id)
    .fetch_all(db)
    .await
}

/// Ledger rows whose event id starts with `prefix` (a run's own movements).
pub async fn count_events_with_prefix(
    db: impl PgExecutor<'_>,
    prefix: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM movements WHERE starts_with(event_id, $1)")
        .bind(prefix)
        .fetch_one(db)
        .await
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct HoldLine {
    pub reservation_id: String,
    pub location_id: String,
    pub status: String,
    pub sku: String,
    pub quantity: i64,
}

/// The lines of the given reservations, as stored.
pub async fn hold_lines(
    db: impl PgExecutor<'_>,
    ids: &[String],
) -> Result<Vec<HoldLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.reservation_id, r.location_id, r.status, l.sku, l.quantity
         FROM reservations r JOIN reservation_lines l USING (reservation_id)
         WHERE r.reservation_id = ANY($1)
         ORDER BY 1, 4",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// What holds taken before `before` still hold, per level.
pub async fn held_by_holds_before(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.location_id, l.sku, sum(l.held)::int8
         FROM reservations r JOIN reservation_lines l USING (reservation_id)
         WHERE r.status IN ('held', 'confirmed') AND r.created_at < $1
         GROUP BY 1, 2",
    )
    .bind(before)
    .fetch_all(db)
    .await
}
