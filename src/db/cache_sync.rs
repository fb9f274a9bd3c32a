//! The cache sync's queries over the outbox (see `cache::sync`).

use sqlx::PgConnection;

use super::events::OutboxRow;

/// One cache sync runs at a time, so the watermark it raises covers every row before it.
pub async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7243, 2)")
        .fetch_one(conn)
        .await
}

/// Outbox rows not yet written to Redis, oldest first.
pub async fn uncached(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, subject, payload FROM outbox WHERE cached_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn mark_cached(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET cached_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
}
