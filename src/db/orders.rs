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

/// Records an assignment on the location's own calendar day.
pub async fn insert_assignment(
    conn: &mut PgConnection,
    order_id: &str,
    location_id: &str,
    reservation_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_assignments (order_id, location_id, reservation_id, local_date)
         SELECT $1, $2, $3, (now() AT TIME ZONE timezone)::date
         FROM locations WHERE location_id = $2",
    )
    .bind(order_id)
    .bind(location_id)
    .bind(reservation_id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Orders routed today (each location's today) per location.
pub async fn routed_today(db: impl PgExecutor<'_>) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.location_id, count(*)::int8 FROM order_assignments a
         JOIN locations l USING (location_id)
         WHERE a.local_date = (now() AT TIME ZONE l.timezone)::date
         GROUP BY 1",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Orders routed today at one location (read under the location's lock).
pub async fn routed_today_at(
    conn: &mut PgConnection,
    location_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*)::int8 FROM order_assignments a JOIN locations l USING (location_id)
         WHERE a.location_id = $1 AND a.local_date = (now() AT TIME ZONE l.timezone)::date",
    )
    .bind(location_id)
    .fetch_one(conn)
    .await
}
