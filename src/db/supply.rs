//! Supply lines and the preorder allocations on them. Callers hold the level lock of the
//! (location, SKU) before they lock or change any of its supply lines.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct SupplyRow {
    pub supply_id: String,
    pub location_id: String,
    pub sku: String,
    pub quantity: i64,
    pub received: i64,
    pub remaining: i64,
    /// What preorders hold on `remaining`.
    pub allocated: i64,
    pub expected_at: Option<DateTime<Utc>>,
    pub status: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "supply_id, location_id, sku, quantity, received, remaining, allocated,
                       expected_at, status, source, created_at, updated_at";

/// Earliest expected first; an unknown arrival last.
const ORDER: &str = "sku, expected_at NULLS LAST, supply_id";

pub async fn get(
    db: impl PgExecutor<'_>,
    supply_id: &str,
) -> Result<Option<SupplyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supply_lines WHERE supply_id = $1"
    ))
    .bind(supply_id)
    .fetch_optional(db)
    .await
}

pub async fn lock_one(
    conn: &mut PgConnection,
    supply_id: &str,
) -> Result<Option<SupplyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supply_lines WHERE supply_id = $1 FOR UPDATE"
    ))
    .bind(supply_id)
    .fetch_optional(conn)
    .await
}

/// Locks the open lines of some SKUs at one location, earliest expected first per SKU.
pub async fn lock_open_at(
    conn: &mut PgConnection,
    location_id: &str,
    skus: &[&str],
) -> Result<Vec<SupplyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supply_lines
         WHERE location_id = $1 AND sku = ANY($2) AND status = 'open'
         ORDER BY {ORDER} FOR UPDATE"
    ))
    .bind(location_id)
    .bind(skus)
    .fetch_all(conn)
    .await
}

/// Locks the named lines that are at the given (location, SKU) of each name.
pub async fn lock_named(
    conn: &mut PgConnection,
    supply_ids: &[&str],
    locations: &[&str],
    skus: &[&str],
) -> Result<Vec<SupplyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supply_lines
         WHERE (supply_id, location_id, sku) IN
               (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))
         ORDER BY supply_id FOR UPDATE"
    ))
    .bind(supply_ids)
    .bind(locations)
    .bind(skus)
    .fetch_all(conn)
    .await
}

/// Which of the given supply ids exist.
pub async fn existing(
    conn: &mut PgConnection,
    supply_ids: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT supply_id FROM supply_lines WHERE supply_id = ANY($1)")
        .bind(supply_ids)
        .fetch_all(conn)
        .await
}

/// Open lines, by SKU and location, earliest expected first.
pub async fn list_open(
    db: impl PgExecutor<'_>,
    sku: Option<&str>,
    location_id: Option<&str>,
) -> Result<Vec<SupplyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supply_lines
         WHERE status = 'open' AND ($1::text IS NULL OR sku = $1)
           AND ($2::text IS NULL OR location_id = $2)
         ORDER BY sku, location_id, expected_at NULLS LAST, supply_id
         LIMIT 1000"
    ))
    .bind(sku)
    .bind(location_id)
    .fetch_all(db)
    .await
}

/// A line to write, new or replacing (same id).
pub struct LineWrite<'a> {
    pub supply_id: &'a str,
    pub location_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub received: i64,
    pub remaining: i64,
    pub allocated: i64,
    pub expected_at: Option<DateTime<Utc>>,
    pub status: &'a str,
    pub source: &'a str,
}

pub async fn upsert(conn: &mut PgConnection, l: &LineWrite<'_>) -> Result<SupplyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO supply_lines (supply_id, location_id, sku, quantity, received, remaining,
                                   allocated, expected_at, status, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (supply_id) DO UPDATE SET
             location_id = EXCLUDED.location_id, sku = EXCLUDED.sku,
             quantity = EXCLUDED.quantity, received = EXCLUDED.received,
             remaining = EXCLUDED.remaining, allocated = EXCLUDED.allocated,
             expected_at = EXCLUDED.expected_at, status = EXCLUDED.status,
             source = EXCLUDED.source, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(l.supply_id)
    .bind(l.location_id)
    .bind(l.sku)
    .bind(l.quantity)
    .bind(l.received)
    .bind(l.remaining)
    .bind(l.allocated)
    .bind(l.expected_at)
    .bind(l.status)
    .bind(l.source)
    .fetch_one(conn)
    .await
}

/// Sets the running state of locked lines.
pub async fn set_state(
    conn: &mut PgConnection,
    supply_ids: &[&str],
    received: &[i64],
    remaining: &[i64],
    allocated: &[i64],
    status: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE supply_lines AS s SET received = n.rc, remaining = n.rm, allocated = n.al,
                status = n.st, updated_at = now()
         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[])
              AS n(id, rc, rm, al, st)
         WHERE s.supply_id = n.id",
    )
    .bind(supply_ids)
    .bind(received)
    .bind(remaining)
    .bind(allocated)
    .bind(status)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Adds preorder holds on locked lines (and to their `allocated`).
pub async fn allocate(
    conn: &mut PgConnection,
    reservation_id: &str,
    skus: &[&str],
    supply_ids: &[&str],
    quantities: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH n AS (SELECT * FROM UNNEST($2::text[], $3::text[], $4::int8[]) AS n(sku, sid, q)),
         ins AS (
             INSERT INTO preorder_allocations (reservation_id, sku, supply_id, quantity)
             SELECT $1, sku, sid, q FROM n ORDER BY sid
             ON CONFLICT (reservation_id, sku, supply_id)
             DO UPDATE SET quantity = preorder_allocations.quantity + EXCLUDED.quantity
         )
         UPDATE supply_lines s SET allocated = s.allocated + t.q, updated_at = now()
         FROM (SELECT sid, sum(q)::int8 AS q FROM n GROUP BY sid) t
         WHERE s.supply_id = t.sid",
    )
    .bind(reservation_id)
    .bind(skus)
    .bind(supply_ids)
    .bind(quantities)
    .execute(conn)
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = PreorderAllocation)]
pub struct AllocationRow {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub reservation_id: String,
    #[serde(skip)]
    pub sku: String,
    pub supply_id: String,
    pub quantity: i64,
    pub expected_at: Option<DateTime<Utc>>,
}

const ALLOCATION: &str = "a.id, a.reservation_id, a.sku, a.supply_id, a.quantity, s.expected_at
    FROM preorder_allocations a JOIN supply_lines s USING (supply_id)";

/// Preorder holds on one line, oldest first.
pub async fn allocations_on(
    db: impl PgExecutor<'_>,
    supply_id: &str,
) -> Result<Vec<AllocationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ALLOCATION} WHERE a.supply_id = $1 ORDER BY a.id"
    ))
    .bind(supply_id)
    .fetch_all(db)
    .await
}

/// Preorder holds on several lines, oldest first.
pub async fn allocations_on_lines(
    db: impl PgExecutor<'_>,
    supply_ids: &[&str],
) -> Result<Vec<AllocationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ALLOCATION} WHERE a.supply_id = ANY($1) ORDER BY a.id"
    ))
    .bind(supply_ids)
    .fetch_all(db)
    .await
}

/// Preorder holds of some reservations.
pub async fn allocations_of(
    db: impl PgExecutor<'_>,
    reservation_ids: &[String],
) -> Result<Vec<AllocationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ALLOCATION} WHERE a.reservation_id = ANY($1)
         ORDER BY a.reservation_id, a.sku, s.expected_at NULLS LAST, a.supply_id"
    ))
    .bind(reservation_ids)
    .fetch_all(db)
    .await
}

/// Sets allocations to new quantities; those at 0 are deleted. `allocated` of their lines is
/// the caller's to set.
pub async fn set_allocations(
    conn: &mut PgConnection,
    ids: &[i64],
    quantities: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH n AS (SELECT * FROM UNNEST($1::int8[], $2::int8[]) AS n(id, q)),
         del AS (DELETE FROM preorder_allocations a USING n WHERE a.id = n.id AND n.q = 0)
         UPDATE preorder_allocations a SET quantity = n.q FROM n WHERE a.id = n.id AND n.q > 0",
    )
    .bind(ids)
    .bind(quantities)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Frees every preorder hold of the given (locked) reservations: the allocations go, their
/// lines' `allocated` drops, and their lines wait for nothing.
pub async fn free_reservations(
    conn: &mut PgConnection,
    reservation_ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH gone AS (
             DELETE FROM preorder_allocations WHERE reservation_id = ANY($1)
             RETURNING supply_id, quantity
         )
         UPDATE supply_lines s SET allocated = s.allocated - t.q, updated_at = now()
         FROM (SELECT supply_id, sum(quantity)::int8 AS q FROM gone GROUP BY supply_id) t
         WHERE s.supply_id = t.supply_id",
    )
    .bind(reservation_ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE reservation_lines SET waiting = 0 WHERE reservation_id = ANY($1) AND waiting > 0",
    )
    .bind(reservation_ids)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Moves quantities of reservation lines between waiting (on supply) and held (in `reserved`).
pub async fn move_waiting_to_held(
    conn: &mut PgConnection,
    reservation_ids: &[&str],
    skus: &[&str],
    quantities: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservation_lines l SET held = l.held + t.q, waiting = l.waiting - t.q
         FROM (SELECT r, s, sum(q)::int8 AS q
               FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS n(r, s, q) GROUP BY r, s) t
         WHERE l.reservation_id = t.r AND l.sku = t.s",
    )
    .bind(reservation_ids)
    .bind(skus)
    .bind(quantities)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Inserts the lines of a preorder: part held from stock, part waiting on supply.
pub async fn insert_preorder_lines(
    conn: &mut PgConnection,
    reservation_id: &str,
    skus: &[&str],
    held: &[i64],
    waiting: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservation_lines (reservation_id, sku, quantity, held, waiting)
         SELECT $1, s, h + w, h, w FROM UNNEST($2::text[], $3::int8[], $4::int8[]) AS t(s, h, w)",
    )
    .bind(reservation_id)
    .bind(skus)
    .bind(held)
    .bind(waiting)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn mark_preorder(
    conn: &mut PgConnection,
    reservation_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET preorder = true WHERE reservation_id = $1")
        .bind(reservation_id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn safety_stock(conn: &mut PgConnection, location_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT safety_stock FROM locations WHERE location_id = $1")
        .bind(location_id)
        .fetch_optional(conn)
        .await
        .map(|s| s.unwrap_or(0))
}

/// Free remaining (not held by preorders) of the open lines of a SKU, per line, for
/// available-to-promise by date.
#[derive(Debug, Clone, FromRow)]
pub struct FreeRow {
    pub location_id: String,
    pub sku: String,
    pub expected_at: Option<DateTime<Utc>>,
    pub free: i64,
}

pub async fn free_for_skus(
    db: impl PgExecutor<'_>,
    skus: &[String],
) -> Result<Vec<FreeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT location_id, sku, expected_at, remaining - allocated AS free
         FROM supply_lines WHERE status = 'open' AND sku = ANY($1) AND remaining > allocated",
    )
    .bind(skus)
    .fetch_all(db)
    .await
}

/// (location, SKU) of every line of some reservations: the levels their release may touch.
pub async fn reservation_levels(
    conn: &mut PgConnection,
    reservation_ids: &[String],
) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT r.location_id, l.sku
         FROM reservation_lines l JOIN reservations r USING (reservation_id)
         WHERE l.reservation_id = ANY($1) ORDER BY 1, 2",
    )
    .bind(reservation_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().unzip())
}

/// A transfer line in transit as supply at its destination.
pub struct TransferSupply<'a> {
    pub supply_id: String,
    pub location_id: &'a str,
    pub sku: &'a str,
    pub shipped: i64,
    pub received: i64,
    /// Still in transit to the destination.
    pub remaining: i64,
    pub expected_at: Option<DateTime<Utc>>,
}

/// Mirrors transfer lines in transit as supply at their destinations (one statement per
/// batch). A remaining below what preorders hold is raised to it (see README: left out).
pub async fn mirror_transfers(
    conn: &mut PgConnection,
    rows: &[TransferSupply<'_>],
) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($f:ident) => {
            rows.iter().map(|r| r.$f.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO supply_lines AS s (supply_id, location_id, sku, quantity, received,
                                        remaining, allocated, expected_at, status, source)
         SELECT id, l, k, GREATEST(q, 1), rc, rm, 0, e,
                CASE WHEN rm > 0 THEN 'open' ELSE 'filled' END, 'transfer'
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[],
                     $7::timestamptz[])
              AS n(id, l, k, q, rc, rm, e)
         ORDER BY id
         ON CONFLICT (supply_id) DO UPDATE SET
             quantity = EXCLUDED.quantity, received = EXCLUDED.received,
             expected_at = COALESCE(EXCLUDED.expected_at, s.expected_at),
             remaining = GREATEST(EXCLUDED.remaining, s.allocated),
             status = CASE WHEN GREATEST(EXCLUDED.remaining, s.allocated) > 0
                           THEN 'open' ELSE 'filled' END,
             updated_at = now()",
    )
    .bind(column!(supply_id))
    .bind(column!(location_id))
    .bind(column!(sku))
    .bind(column!(shipped))
    .bind(column!(received))
    .bind(column!(remaining))
    .bind(column!(expected_at))
    .execute(conn)
    .await
    .map(|_| ())
}
