//! The cache sync's queries over the outbox (see `cache::sync`).

use sqlx::PgConnection;

/// One cache sync runs at a time, so the watermark it raises covers every row before it.
pub async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7243, 2)")
        .fetch_one(conn)
        .await
}
