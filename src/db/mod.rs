//! Every SQL statement of omnistock, one small function per query. Nothing else talks SQL.
//!
//! Prepared plans: sqlx prepares a statement once per connection, and PostgreSQL soon keeps a
//! generic plan for it until the table's next `ANALYZE`. The id lookups that dedupe the hot
//! paths (`reservations::existing`, `movements::existing_event_ids`, `orders::responses`) read
//! tables those paths fill from empty, and a plan made while such a table held a few pages is a
//! sequential scan that stays one as the table grows: on the hot-SKU hold bench, 7-13 ms of
//! CPU per group scanning some 12,000 reservations, the largest cost of the run, until
//! autovacuum's next `ANALYZE` (a minute or more). Those lookups are not kept prepared
//! (`persistent(false)`): each is planned for the table as it is, a fraction of a millisecond.

pub mod cache_sync;
pub mod channels;
pub mod deadletters;
pub mod events;
pub mod health;
pub mod import;
pub mod invariants;
pub mod levels;
pub mod locations;
pub mod movements;
pub mod ops;
pub mod orders;
pub mod outbox;
pub mod reservations;
pub mod simulate;
pub mod supply;
pub mod totals;
pub mod transfers;

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Migrations are embedded in the binary so `omnistock migrate` needs no files beside it.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How a pool connects, and the bounds every one of its sessions runs under.
#[derive(Debug, Clone)]
pub struct PoolSettings<'a> {
    pub url: &'a str,
    pub max_connections: u32,
    /// Longest wait for a connection, pooled or new: with the server down, how long a call
    /// takes to fail.
    pub acquire_timeout: Duration,
    /// `statement_timeout` of every session; zero leaves PostgreSQL's (none).
    pub statement_timeout: Duration,
    /// `lock_timeout` of every session; zero leaves PostgreSQL's (none).
    pub lock_timeout: Duration,
}

impl<'a> PoolSettings<'a> {
    /// No statement or lock bound: for one-off commands (import, export) whose single
    /// statements may rightly run long.
    pub fn new(url: &'a str, max_connections: u32) -> Self {
        PoolSettings {
            url,
            max_connections,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
        }
    }
}

/// A server still starting (or restarting) gets this long before the first connection fails.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(&PoolSettings::new(url, max_connections)).await
}

/// The options every connection of the pool is opened with.
pub fn connect_options(s: &PoolSettings<'_>) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = s.url.parse()?;
    // Sent in the startup packet: no extra round trip per connection, and no session can
    // run without them.
    Ok(options.options([
        ("statement_timeout", s.statement_timeout.as_millis()),
        ("lock_timeout", s.lock_timeout.as_millis()),
    ]))
}

pub async fn connect_with(s: &PoolSettings<'_>) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(s)?;
    let pool = PgPoolOptions::new()
        .max_connections(s.max_connections)
        .acquire_timeout(s.acquire_timeout)
        .connect_lazy_with(options);
    // One connection now, so a wrong URL or password is reported at start.
    let started = Instant::now();
    loop {
        match ping(&pool).await {
            Ok(()) => return Ok(pool),
            Err(e) if unavailable(&e).is_some() && started.elapsed() < STARTUP_WAIT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Why a call failed for a reason that passes: the same call may succeed when retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The server cannot be reached, or no connection was free in time.
    Unreachable,
    /// PostgreSQL aborted the transaction to break a deadlock (40P01) or a serialization
    /// conflict (40001).
    Aborted,
    /// A statement ran out of time: `statement_timeout` (57014) or `lock_timeout` (55P03).
    TimedOut,
}

/// Classifies a failure the caller may retry; `None` for a bug or a broken invariant.
pub fn unavailable(e: &sqlx::Error) -> Option<Unavailable> {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Some(Unavailable::Unreachable)
        }
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            match code.as_ref() {
                "40P01" | "40001" => Some(Unavailable::Aborted),
                "57014" | "55P03" => Some(Unavailable::TimedOut),
                // Class 08: connection exceptions; 57P01-57P03: the server is shutting down
                // or starting.
                c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03") => {
                    Some(Unavailable::Unreachable)
                }
                _ => None,
            }
        }
        _ => None,
    }
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
