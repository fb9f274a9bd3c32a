use std::collections::HashSet;

use sqlx::{FromRow, PgExecutor, PgPool};

use crate::domain::location::{Location, LocationKind};

#[derive(FromRow)]
struct LocationRow {
    location_id: String,
    name: String,
    kind: String,
    lat: f64,
    lon: f64,
    pickup: bool,
    ship_from: bool,
    safety_stock: i64,
    daily_order_capacity: Option<i64>,
    timezone: String,
    low_stock_threshold: Option<i64>,
}

impl From<LocationRow> for Location {
    fn from(r: LocationRow) -> Self {
        Location {
            location_id: r.location_id,
            name: r.name,
            // The CHECK constraint admits only the three kinds.
            kind: LocationKind::parse(&r.kind).unwrap_or(LocationKind::Store),
            lat: r.lat,
            lon: r.lon,
            pickup: r.pickup,
            ship_from: r.ship_from,
            safety_stock: r.safety_stock,
            daily_order_capacity: r.daily_order_capacity,
            timezone: r.timezone,
            low_stock_threshold: r.low_stock_threshold,
        }
    }
}

const COLUMNS: &str = "location_id, name, kind, lat, lon, pickup, ship_from, safety_stock, \
                       daily_order_capacity, timezone, low_stock_threshold";

/// Creates or replaces a location; returns true when it was created.
pub async fn upsert(db: impl PgExecutor<'_>, l: &Location) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO locations (location_id, name, kind, lat, lon, pickup, ship_from, \
                                safety_stock, daily_order_capacity, timezone,
                                low_stock_threshold)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (location_id) DO UPDATE SET
            name = EXCLUDED.name, kind = EXCLUDED.kind, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
            pickup = EXCLUDED.pickup, ship_from = EXCLUDED.ship_from,
            safety_stock = EXCLUDED.safety_stock,
            daily_order_capacity = EXCLUDED.daily_order_capacity,
            timezone = EXCLUDED.timezone, low_stock_threshold = EXCLUDED.low_stock_threshold,
            updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(&l.location_id)
    .bind(&l.name)
    .bind(l.kind.as_str())
    .bind(l.lat)
    .bind(l.lon)
    .bind(l.pickup)
    .bind(l.ship_from)
    .bind(l.safety_stock)
    .bind(l.daily_order_capacity)
    .bind(&l.timezone)
    .bind(l.low_stock_threshold)
    .fetch_one(db)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<Location>, sqlx::Error> {
    let row: Option<LocationRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM locations WHERE location_id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Location::from))
}

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Location>, sqlx::Error> {
    let rows: Vec<LocationRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM locations ORDER BY location_id"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Location::from).collect())
}

/// Which of `ids` are known locations.
pub async fn known_ids(
    db: impl PgExecutor<'_>,
    ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT location_id FROM locations WHERE location_id = ANY($1)")
            .bind(ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Whether PostgreSQL knows this IANA time zone (its table is the one "today" is computed with).
pub async fn timezone_exists(pool: &PgPool, tz: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
        .bind(tz)
        .fetch_one(pool)
        .await
}

pub async fn safety_stock(db: impl PgExecutor<'_>, id: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT safety_stock FROM locations WHERE location_id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}
