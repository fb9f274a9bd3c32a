use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor};

/// A stock level row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LevelRow {
    pub location_id: String,
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// Incoming from transfers shipped here and not yet received.
    pub in_transit: i64,
    pub version: i64,
    pub last_count_at: Option<DateTime<Utc>>,
    pub last_movement_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "location_id, sku, on_hand, reserved, in_transit, version, last_count_at, last_movement_at";

pub async fn for_sku(db: impl PgExecutor<'_>, sku: &str) -> Result<Vec<LevelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM stock_levels WHERE sku = $1 ORDER BY location_id"
    ))
    .bind(sku)
    .fetch_all(db)
    .await
}

pub async fn for_skus(
    db: impl PgExecutor<'_>,
    skus: &[String],
) -> Result<Vec<LevelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM stock_levels WHERE sku = ANY($1) ORDER BY sku, location_id"
    ))
    .bind(skus)
    .fetch_all(db)
    .await
}

/// One page of every level, in SKU order, for rebuilding the cache SKU by SKU.
/// Pages end on a SKU boundary so no SKU is split across two pages.
pub async fn page_by_sku(
    db: impl PgExecutor<'_>,
    after_sku: Option<&str>,
    skus_per_page: i64,
) -> Result<Vec<LevelRow>, sqlx::Error> {
    // Each SKU's levels through the SKU index, in a subquery that cannot be flattened
    // (`OFFSET 0`). As `sku IN (page)` the planner hashed the page and scanned the whole table
    // for it: every page read all 10M levels at 10M (2.5 s a page, 100 pages), where this
    // reads the page's own 100,000 (0.19–0.23 s, custom or generic plan). `sku > ''` rather
    // than `$1 IS NULL OR sku > $1`, which a generic plan can only filter, not seek: an id is
    // never empty.
    sqlx::query_as(&format!(
        "SELECT l.* FROM (SELECT sku FROM skus WHERE sku > COALESCE($1, '') ORDER BY sku LIMIT $2) s
         CROSS JOIN LATERAL (
             SELECT {COLUMNS} FROM stock_levels WHERE sku = s.sku ORDER BY location_id OFFSET 0
         ) l
         ORDER BY s.sku, l.location_id"
    ))
    .bind(after_sku)
    .bind(skus_per_page)
    .fetch_all(db)
    .await
}

/// Makes sure the SKUs exist (the catalogue need not be preloaded). Sorted input keeps
/// concurrent inserters from deadlocking.
pub async fn ensure_skus(conn: &mut PgConnection, skus: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO skus (sku) SELECT s FROM UNNEST($1::text[]) AS t(s) ORDER BY s
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(skus)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Makes sure a level row exists for every (location, SKU) key, so it can be locked.
pub async fn ensure(
    conn: &mut PgConnection,
    locations: &[String],
    skus: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stock_levels (location_id, sku)
         SELECT l, s FROM UNNEST($1::text[], $2::text[]) AS t(l, s) ORDER BY l, s
         ON CONFLICT (location_id, sku) DO NOTHING",
    )
    .bind(locations)
    .bind(skus)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Locks the levels of the given keys, always in (location, SKU) order so that concurrent
/// transactions cannot deadlock on each other.
pub async fn lock(
    conn: &mut PgConnection,
    locations: &[String],
    skus: &[String],
) -> Result<Vec<LevelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM stock_levels
         WHERE (location_id, sku) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
         ORDER BY location_id, sku
         FOR UPDATE"
    ))
    .bind(locations)
    .bind(skus)
    .fetch_all(conn)
    .await
}

/// Writes new values of locked levels.
pub async fn update(conn: &mut PgConnection, rows: &[LevelRow]) -> Result<(), sqlx::Error> {
    let mut loc = Vec::with_capacity(rows.len());
    let mut sku = Vec::with_capacity(rows.len());
    let mut on_hand = Vec::with_capacity(rows.len());
    let mut reserved = Vec::with_capacity(rows.len());
    let mut in_transit = Vec::with_capacity(rows.len());
    let mut version = Vec::with_capacity(rows.len());
    let mut count_at = Vec::with_capacity(rows.len());
    let mut movement_at = Vec::with_capacity(rows.len());
    for r in rows {
        loc.push(r.location_id.as_str());
        sku.push(r.sku.as_str());
        on_hand.push(r.on_hand);
        reserved.push(r.reserved);
        in_transit.push(r.in_transit);
        version.push(r.version);
        count_at.push(r.last_count_at);
        movement_at.push(r.last_movement_at);
    }
    sqlx::query(
        "UPDATE stock_levels AS l SET
            on_hand = n.on_hand, reserved = n.reserved, in_transit = n.in_transit,
            version = n.version, last_count_at = n.count_at, last_movement_at = n.movement_at,
            updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
                     $7::timestamptz[], $8::timestamptz[])
              AS n(location_id, sku, on_hand, reserved, in_transit, version, count_at, movement_at)
         WHERE l.location_id = n.location_id AND l.sku = n.sku",
    )
    .bind(loc)
    .bind(sku)
    .bind(on_hand)
    .bind(reserved)
    .bind(in_transit)
    .bind(version)
    .bind(count_at)
    .bind(movement_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Locks the levels of some SKUs at one location, in SKU order, with the location's safety
/// stock (read in the same transaction, so a hold is checked against the current terms).
pub async fn lock_at(
    conn: &mut PgConnection,
    location_id: &str,
    skus: &[&str],
) -> Result<Vec<LevelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM stock_levels WHERE location_id = $1 AND sku = ANY($2)
         ORDER BY sku FOR UPDATE"
    ))
    .bind(location_id)
    .bind(skus)
    .fetch_all(conn)
    .await
}

/// Sets (or clears) a SKU's own low-stock threshold, creating the SKU if needed.
pub async fn set_sku_threshold(
    db: impl PgExecutor<'_>,
    sku: &str,
    threshold: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO skus (sku, low_stock_threshold) VALUES ($1, $2)
         ON CONFLICT (sku) DO UPDATE SET low_stock_threshold = EXCLUDED.low_stock_threshold",
    )
    .bind(sku)
    .bind(threshold)
    .execute(db)
    .await
    .map(|_| ())
}

/// A level with its location's safety stock, for snapshots.
#[derive(Debug, Clone, FromRow)]
pub struct LevelWithSafety {
    #[sqlx(flatten)]
    pub level: LevelRow,
    pub safety_stock: i64,
}

/// Every level, by location and SKU, streamed. One statement, so one consistent snapshot
/// however long the caller takes to consume it.
pub fn all_with_safety_stock(
    pool: &sqlx::PgPool,
) -> futures::stream::BoxStream<'_, Result<LevelWithSafety, sqlx::Error>> {
    sqlx::query_as(
        "SELECT l.location_id, l.sku, l.on_hand, l.reserved, l.in_transit, l.version,
                l.last_count_at, l.last_movement_at, loc.safety_stock
         FROM stock_levels l JOIN locations loc USING (location_id)
         ORDER BY l.location_id, l.sku",
    )
    .fetch(pool)
}
