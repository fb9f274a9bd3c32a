//! The ops view's reads (`GET /v1/ops/summary`): per location, recent movements, stockouts and
//! holds. Each is one grouped read; none locks anything.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};

/// How many of a location's newest published movements the commit delay is taken over.
pub const RECENT_MOVEMENTS: i64 = 100;

#[derive(Debug, Clone, FromRow)]
pub struct RecentMovements {
    pub location_id: String,
    /// The newest `occurred_at` among its recent movements.
    pub last_movement_at: Option<DateTime<Utc>>,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Median of `recorded_at - published_at` over its newest published movements (null: none
    /// has a publish time).
    pub commit_delay_seconds: Option<f64>,
}

/// Per location, its newest movements (by ledger id, so the index on (location_id, id) serves
/// it), and the median delay from publish to commit over its [`RECENT_MOVEMENTS`] newest
/// movements with a `published_at`. Not `occurred_at`: a movement published late or replayed
/// hours after it happened waited only from its publish, and the delay is the sync's, not the
/// point of sale's. Imports and rows older than the column have no publish time and are not
/// counted (the partial index on published rows skips them).
pub async fn recent_movements(
    db: impl PgExecutor<'_>,
) -> Result<Vec<RecentMovements>, sqlx::Error> {
    sqlx::query_as(
        "SELECT l.location_id, r.last_movement_at, r.last_recorded_at, p.commit_delay_seconds
         FROM locations l
         LEFT JOIN LATERAL (
             SELECT max(m.occurred_at) AS last_movement_at,
                    max(m.recorded_at) AS last_recorded_at
             FROM (SELECT occurred_at, recorded_at FROM movements
                   WHERE location_id = l.location_id ORDER BY id DESC LIMIT $1) m
         ) r ON true
         LEFT JOIN LATERAL (
             SELECT percentile_cont(0.5) WITHIN GROUP (
                        ORDER BY extract(epoch FROM m.recorded_at - m.published_at)::float8
                    ) AS commit_delay_seconds
             FROM (SELECT published_at, recorded_at FROM movements
                   WHERE location_id = l.location_id AND published_at IS NOT NULL
                   ORDER BY id DESC LIMIT $1) m
         ) p ON true
         ORDER BY l.location_id",
    )
    .bind(RECENT_MOVEMENTS)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct Stockouts {
    pub location_id: String,
    /// SKUs with a level here whose available is 0.
    pub stockouts: i64,
}

pub async fn stockouts(db: impl PgExecutor<'_>) -> Result<Vec<Stockouts>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.location_id, count(*) AS stockouts
         FROM stock_levels s JOIN locations l USING (location_id)
         WHERE s.on_hand - s.reserved - l.safety_stock <= 0
         GROUP BY s.location_id",
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct Holds {
    pub location_id: String,
    pub held: i64,
    /// Held and expiring within the window.
    pub expiring: i64,
}

pub async fn holds(
    db: impl PgExecutor<'_>,
    expiring_within_seconds: i64,
) -> Result<Vec<Holds>, sqlx::Error> {
    sqlx::query_as(
        "SELECT location_id, count(*) AS held,
                count(*) FILTER (WHERE expires_at <= now() + make_interval(secs => $1)) AS expiring
         FROM reservations WHERE status = 'held'
         GROUP BY location_id",
    )
    .bind(expiring_within_seconds as f64)
    .fetch_all(db)
    .await
}
