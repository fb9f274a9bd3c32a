//! Every SQL statement of omnistock, one small function per query. Nothing else talks SQL.

pub mod cache_sync;
pub mod events;
pub mod invariants;
pub mod levels;
pub mod locations;
pub mod movements;
pub mod orders;
pub mod reservations;
pub mod transfers;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// Migrations are embedded in the binary so `omnistock migrate` needs no files beside it.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Errors worth retrying the whole transaction for: deadlock, serialization failure, and a
/// unique violation on `event_id` raced by another daemon (the retry sees it as a duplicate).
pub fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("40P01") | Some("40001") | Some("23505")
        ),
        _ => false,
    }
}
