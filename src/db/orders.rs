use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};

/// Serialises work on one order id across daemons until the transaction ends.
pub async fn lock_order_id(conn: &mut PgConnection, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(order_id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn response(
    db: impl PgExecutor<'_>,
    order_id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT response FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(db)
        .await
}

pub async fn insert(
    conn: &mut PgConnection,
    order_id: &str,
    response: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO orders (order_id, response) VALUES ($1, $2)")
        .bind(order_id)
        .bind(response)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Takes one of today's order slots at the location (its own calendar day), in a statement
/// of its own; the day taken, or `None` when its daily capacity is used up. Every location's
/// orders are counted, with a capacity or not.
pub async fn take_slot(
    conn: &mut PgConnection,
    location_id: &str,
) -> Result<Option<NaiveDate>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO daily_order_counts (location_id, local_date, orders)
         SELECT location_id, (now() AT TIME ZONE timezone)::date, 1 FROM locations
         WHERE location_id = $1 AND coalesce(daily_order_capacity > 0, true)
         ON CONFLICT (location_id, local_date) DO UPDATE
         SET orders = daily_order_counts.orders + 1
         WHERE coalesce(daily_order_counts.orders < (
             SELECT daily_order_capacity FROM locations WHERE location_id = EXCLUDED.location_id
         ), true)
         RETURNING local_date",
    )
    .bind(location_id)
    .fetch_optional(conn)
    .await
}

/// Gives back a slot taken by `take_slot` for a route that did not commit.
pub async fn give_back_slot(
    conn: &mut PgConnection,
    location_id: &str,
    day: NaiveDate,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE daily_order_counts SET orders = orders - 1
         WHERE location_id = $1 AND local_date = $2 AND orders > 0",
    )
    .bind(location_id)
    .bind(day)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records a routed order's assignment on the day its slot was taken.
pub async fn insert_assignment(
    conn: &mut PgConnection,
    order_id: &str,
    location_id: &str,
    reservation_id: &str,
    day: NaiveDate,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_assignments (order_id, location_id, reservation_id, local_date)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id)
    .bind(location_id)
    .bind(reservation_id)
    .bind(day)
    .execute(conn)
    .await
    .map(|_| ())
}

/// What is left of today's order capacity (each location's today) at every location that has
/// a capacity; a location absent from the map has none.
pub async fn capacity_left(db: impl PgExecutor<'_>) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.location_id, l.daily_order_capacity - coalesce(c.orders, 0)
         FROM locations l
         LEFT JOIN daily_order_counts c ON c.location_id = l.location_id
              AND c.local_date = (now() AT TIME ZONE l.timezone)::date
         WHERE l.daily_order_capacity IS NOT NULL",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// `lock_order_id` for several ids at once, in the order given (sorted by the caller, so two
/// groups cannot deadlock on each other).
pub async fn lock_order_ids(
    conn: &mut PgConnection,
    order_ids: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(id, 7)) FROM UNNEST($1::text[]) AS id",
    )
    .bind(order_ids)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The stored answers of those of `order_ids` that were routed before.
pub async fn responses(
    conn: &mut PgConnection,
    order_ids: &[&str],
) -> Result<HashMap<String, Value>, sqlx::Error> {
    let rows: Vec<(String, Value)> =
        sqlx::query_as("SELECT order_id, response FROM orders WHERE order_id = ANY($1)")
            .persistent(false)
            .bind(order_ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Today's order count of each location (its own calendar day), locked until the transaction
/// ends (created at 0 if missing), in location order: the day, and the slots left (`None`:
/// no capacity set). A location not registered is absent.
pub async fn lock_days(
    conn: &mut PgConnection,
    location_ids: &[&str],
) -> Result<HashMap<String, (NaiveDate, Option<i64>)>, sqlx::Error> {
    // `DO UPDATE` to itself: the only upsert that locks an existing row and returns it.
    let rows: Vec<(String, NaiveDate, Option<i64>)> = sqlx::query_as(
        "WITH c AS (
             INSERT INTO daily_order_counts (location_id, local_date, orders)
             SELECT location_id, (now() AT TIME ZONE timezone)::date, 0 FROM locations
             WHERE location_id = ANY($1) ORDER BY location_id
             ON CONFLICT (location_id, local_date) DO UPDATE SET orders = daily_order_counts.orders
             RETURNING location_id, local_date, orders
         )
         SELECT c.location_id, c.local_date, l.daily_order_capacity - c.orders
         FROM c JOIN locations l USING (location_id)",
    )
    .bind(location_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(l, d, left)| (l, (d, left)))
        .collect())
}

/// What a group of routes writes besides its holds: each order's answer, and each assignment
/// (order, location, hold, the location's day).
pub struct RoutedRows<'a> {
    pub order_ids: &'a [&'a str],
    pub responses: &'a [Value],
    pub assignment_orders: &'a [&'a str],
    pub assignment_locations: &'a [&'a str],
    pub assignment_reservations: &'a [&'a str],
    pub assignment_days: &'a [NaiveDate],
}

/// Stores a group's routed orders in one statement: their answers, their assignments, and
/// each assignment counted on its location's day (locked by `lock_days`). Returns the ids
/// stored (an id stored meanwhile by another transaction is left out, and the caller rolls
/// back).
pub async fn insert_routed(
    conn: &mut PgConnection,
    rows: &RoutedRows<'_>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH o AS (
             INSERT INTO orders (order_id, response)
             SELECT * FROM UNNEST($1::text[], $2::jsonb[])
             ON CONFLICT (order_id) DO NOTHING
             RETURNING order_id
         ), a AS (
             INSERT INTO order_assignments (order_id, location_id, reservation_id, local_date)
             SELECT * FROM UNNEST($3::text[], $4::text[], $5::text[], $6::date[])
         ), d AS (
             UPDATE daily_order_counts AS c SET orders = c.orders + t.n
             FROM (SELECT l, d, count(*) AS n FROM UNNEST($4::text[], $6::date[]) AS u(l, d)
                   GROUP BY l, d) AS t
             WHERE c.location_id = t.l AND c.local_date = t.d
         )
         SELECT order_id FROM o",
    )
    .bind(rows.order_ids)
    .bind(rows.responses)
    .bind(rows.assignment_orders)
    .bind(rows.assignment_locations)
    .bind(rows.assignment_reservations)
    .bind(rows.assignment_days)
    .fetch_all(conn)
    .await
}
