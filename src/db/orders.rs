use std::collections::HashMap;

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

/// Records an assignment on the location's own calendar day, and counts it.
pub async fn insert_assignment(
    conn: &mut PgConnection,
    order_id: &str,
    location_id: &str,
    reservation_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH a AS (
             INSERT INTO order_assignments (order_id, location_id, reservation_id, local_date)
             SELECT $1, $2, $3, (now() AT TIME ZONE timezone)::date
             FROM locations WHERE location_id = $2
             RETURNING location_id, local_date
         )
         INSERT INTO daily_order_counts (location_id, local_date, orders)
         SELECT location_id, local_date, 1 FROM a
         ON CONFLICT (location_id, local_date)
         DO UPDATE SET orders = daily_order_counts.orders + 1",
    )
    .bind(order_id)
    .bind(location_id)
    .bind(reservation_id)
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

/// What is left of today's capacity at one location, `None` when it has no capacity (read
/// under the location's routing lock, so the capacity itself is current too).
pub async fn capacity_left_at(
    conn: &mut PgConnection,
    location_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let left: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT l.daily_order_capacity - coalesce(c.orders, 0)
         FROM locations l
         LEFT JOIN daily_order_counts c ON c.location_id = l.location_id
              AND c.local_date = (now() AT TIME ZONE l.timezone)::date
         WHERE l.location_id = $1",
    )
    .bind(location_id)
    .fetch_optional(conn)
    .await?;
    Ok(left.flatten())
}
