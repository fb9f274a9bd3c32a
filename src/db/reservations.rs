use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor};

use super::levels::{LevelRow, LevelWithSafety};

#[derive(Debug, Clone, FromRow)]
pub struct ReservationRow {
    pub reservation_id: String,
    pub location_id: String,
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub preorder: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct LineRow {
    pub reservation_id: String,
    pub sku: String,
    pub quantity: i64,
    pub held: i64,
    /// Of a preorder line: what waits on supply that has not arrived.
    pub waiting: i64,
}

const COLUMNS: &str =
    "reservation_id, location_id, status, expires_at, order_id, created_at, preorder";

/// What inserting a hold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The id is taken (the caller returns the existing one).
    Exists,
    UnknownLocation,
}

/// Inserts a new hold, telling an unknown location apart in the same round trip.
pub async fn insert(
    conn: &mut PgConnection,
    id: &str,
    location_id: &str,
    expires_at: DateTime<Utc>,
    order_id: Option<&str>,
) -> Result<Inserted, sqlx::Error> {
    let (known, inserted): (bool, bool) = sqlx::query_as(
        "WITH loc AS (SELECT location_id FROM locations WHERE location_id = $2),
         ins AS (
             INSERT INTO reservations (reservation_id, location_id, status, expires_at, order_id)
             SELECT $1, location_id, 'held', $3, $4 FROM loc
             ON CONFLICT (reservation_id) DO NOTHING
             RETURNING reservation_id
         )
         SELECT EXISTS (SELECT 1 FROM loc), EXISTS (SELECT 1 FROM ins)",
    )
    .bind(id)
    .bind(location_id)
    .bind(expires_at)
    .bind(order_id)
    .fetch_one(conn)
    .await?;
    Ok(match (known, inserted) {
        (_, true) => Inserted::New,
        (true, false) => Inserted::Exists,
        (false, false) => Inserted::UnknownLocation,
    })
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM reservations WHERE reservation_id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn lines(db: impl PgExecutor<'_>, ids: &[String]) -> Result<Vec<LineRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT reservation_id, sku, quantity, held, waiting FROM reservation_lines
         WHERE reservation_id = ANY($1) ORDER BY reservation_id, sku",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

pub async fn insert_lines(
    conn: &mut PgConnection,
    id: &str,
    skus: &[&str],
    quantities: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservation_lines (reservation_id, sku, quantity, held)
         SELECT $1, s, q, q FROM UNNEST($2::text[], $3::int8[]) AS t(s, q)",
    )
    .bind(id)
    .bind(skus)
    .bind(quantities)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Locks reservations, in id order (the order every writer uses), and returns them.
pub async fn lock(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM reservations WHERE reservation_id = ANY($1)
         ORDER BY reservation_id FOR UPDATE"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Locks up to `limit` holds whose time is up, skipping any another daemon is handling.
pub async fn lock_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT reservation_id FROM reservations
         WHERE status = 'held' AND expires_at <= now()
         ORDER BY expires_at LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    ids: &[String],
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservations SET status = $2, updated_at = now(),
                expires_at = CASE WHEN $2 = 'held' THEN expires_at ELSE NULL END
         WHERE reservation_id = ANY($1)",
    )
    .bind(ids)
    .bind(status)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Confirms a live hold that has not run out; returns whether it did.
pub async fn confirm(conn: &mut PgConnection, id: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE reservations SET status = 'confirmed', expires_at = NULL, updated_at = now()
         WHERE reservation_id = $1
           AND (status = 'confirmed' OR (status = 'held' AND expires_at > now()))",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves a hold's expiry to `ttl_seconds` from now; returns whether it did. Only a hold that is
/// still held and has not run out is extended, judged by the clock when the row is locked: the
/// sweep expires a hold only once its deadline is past, and a lapsed hold it has not reached
/// yet is as good as expired. The UPDATE's row lock orders it with the sweep and with confirm.
pub async fn extend(
    conn: &mut PgConnection,
    id: &str,
    ttl_seconds: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE reservations
         SET expires_at = clock_timestamp() + make_interval(secs => $2), updated_at = now()
         WHERE reservation_id = $1 AND status = 'held' AND expires_at > clock_timestamp()",
    )
    .bind(id)
    .bind(ttl_seconds as f64)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// One page of reservations, newest first, strictly after `after` (a keyset cursor).
pub async fn page(
    db: impl PgExecutor<'_>,
    status: Option<&str>,
    location_id: Option<&str>,
    sku: Option<&str>,
    order_id: Option<&str>,
    after: Option<(DateTime<Utc>, &str)>,
    limit: i64,
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM reservations r
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR location_id = $2)
           AND ($3::timestamptz IS NULL OR (created_at, reservation_id) < ($3, $4::text))
           AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM reservation_lines l
                WHERE l.reservation_id = r.reservation_id AND l.sku = $6))
           AND ($7::text IS NULL OR order_id = $7)
         ORDER BY created_at DESC, reservation_id DESC
         LIMIT $5"
    ))
    .bind(status)
    .bind(location_id)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .bind(sku)
    .bind(order_id)
    .fetch_all(db)
    .await
}

pub async fn set_held(
    conn: &mut PgConnection,
    ids: &[&str],
    skus: &[&str],
    held: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservation_lines AS l SET held = n.held
         FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS n(reservation_id, sku, held)
         WHERE l.reservation_id = n.reservation_id AND l.sku = n.sku",
    )
    .bind(ids)
    .bind(skus)
    .bind(held)
    .execute(conn)
    .await
    .map(|_| ())
}

/// What the given reservations still hold, per level.
pub async fn held_by_level(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.location_id, l.sku, sum(l.held)::int8
         FROM reservation_lines l JOIN reservations r USING (reservation_id)
         WHERE l.reservation_id = ANY($1) AND l.held > 0
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Adds `delta` (positive: hold, negative: release) to `reserved` of locked levels, bumping
/// their versions; the `reserved >= 0` CHECK guards against releasing twice.
pub async fn add_reserved(
    conn: &mut PgConnection,
    locations: &[&str],
    skus: &[&str],
    deltas: &[i64],
) -> Result<Vec<LevelRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE stock_levels AS s SET reserved = s.reserved + n.d, version = s.version + 1,
                updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS n(location_id, sku, d)
         WHERE s.location_id = n.location_id AND s.sku = n.sku
         RETURNING s.location_id, s.sku, s.on_hand, s.reserved, s.in_transit, s.version,
                   s.last_count_at, s.last_movement_at",
    )
    .bind(locations)
    .bind(skus)
    .bind(deltas)
    .fetch_all(conn)
    .await
}

/// Adds new holds to `reserved` of locked levels at one location, bumping their versions;
/// returns the levels after, and the location's safety stock as this statement sees it (its
/// snapshot is taken after the caller locked the levels).
pub async fn add_held_at(
    conn: &mut PgConnection,
    location_id: &str,
    skus: &[&str],
    quantities: &[i64],
) -> Result<(Vec<LevelRow>, i64), sqlx::Error> {
    let rows: Vec<LevelWithSafety> = sqlx::query_as(
        "UPDATE stock_levels AS s SET reserved = s.reserved + n.q, version = s.version + 1,
                updated_at = now()
         FROM UNNEST($2::text[], $3::int8[]) AS n(sku, q)
         WHERE s.location_id = $1 AND s.sku = n.sku
         RETURNING s.location_id, s.sku, s.on_hand, s.reserved, s.in_transit, s.version,
                   s.last_count_at, s.last_movement_at,
                   (SELECT safety_stock FROM locations l WHERE l.location_id = s.location_id)
                   AS safety_stock",
    )
    .bind(location_id)
    .bind(skus)
    .bind(quantities)
    .fetch_all(conn)
    .await?;
    let safety = rows.first().map_or(0, |r| r.safety_stock);
    Ok((rows.into_iter().map(|r| r.level).collect(), safety))
}

pub async fn clear_held(conn: &mut PgConnection, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservation_lines SET held = 0 WHERE reservation_id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Of the given reservations, those with nothing left to hold.
pub async fn fully_consumed(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT reservation_id FROM reservation_lines WHERE reservation_id = ANY($1)
         GROUP BY reservation_id HAVING max(held) = 0 AND max(waiting) = 0",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Of the given reservation ids, those already taken.
pub async fn existing(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT reservation_id FROM reservations WHERE reservation_id = ANY($1)")
        .persistent(false)
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// Inserts new holds, set-based (`locations[i]` is the location of `ids[i]`); returns the ids
/// it inserted, with their creation and expiry times as stored (an id another transaction took
/// meanwhile is left out).
pub async fn insert_many(
    conn: &mut PgConnection,
    locations: &[&str],
    ids: &[&str],
    expires_at: &[DateTime<Utc>],
    order_ids: &[Option<&str>],
) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO reservations (reservation_id, location_id, status, expires_at, order_id)
         SELECT i, l, 'held', e, o
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS t(l, i, e, o)
         ON CONFLICT (reservation_id) DO NOTHING
         RETURNING reservation_id, created_at, expires_at",
    )
    .bind(locations)
    .bind(ids)
    .bind(expires_at)
    .bind(order_ids)
    .fetch_all(conn)
    .await
}

/// The lines of several new holds at once, each held in full.
pub async fn insert_lines_many(
    conn: &mut PgConnection,
    ids: &[&str],
    skus: &[&str],
    quantities: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservation_lines (reservation_id, sku, quantity, held)
         SELECT i, s, q, q FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS t(i, s, q)",
    )
    .bind(ids)
    .bind(skus)
    .bind(quantities)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Adds the holds of a group to `reserved` of locked levels (`totals[i]` held at
/// (`locations[i]`, `skus[i]`)), bumping each level's version once: the group commits as one
/// change of each level (one change event); returns the levels after.
pub async fn add_held_group(
    conn: &mut PgConnection,
    locations: &[&str],
    skus: &[&str],
    totals: &[i64],
) -> Result<Vec<LevelRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE stock_levels AS s SET reserved = s.reserved + n.q, version = s.version + 1,
                updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS n(location_id, sku, q)
         WHERE s.location_id = n.location_id AND s.sku = n.sku
         RETURNING s.location_id, s.sku, s.on_hand, s.reserved, s.in_transit, s.version,
                   s.last_count_at, s.last_movement_at",
    )
    .bind(locations)
    .bind(skus)
    .bind(totals)
    .fetch_all(conn)
    .await
}
