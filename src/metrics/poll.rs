//! The gauges no event updates, read every few seconds by the `metrics-poll` job: the ingest
//! consumer's backlog (from JetStream) and the outbox's (from PostgreSQL). Each read has a
//! timeout; one that fails leaves its gauge at the last value read, and is logged.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;

use super::{handle, CONSUMER_ACK_PENDING, CONSUMER_PENDING, OUTBOX_BACKLOG};
use crate::config::Subjects;
use crate::db;

/// How often the gauges are read: a scrape interval's worth (Prometheus's default is 15 s).
pub const PERIOD: Duration = Duration::from_secs(5);
/// Longest wait for each read.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Unsent outbox events counted at most: past it the backlog is a lower bound, and counting
/// on would cost the database more than the figure is worth.
pub const OUTBOX_CAP: i64 = 100_000;

/// One reading of every polled gauge.
pub async fn tick(pool: &PgPool, js: &jetstream::Context, subjects: &Subjects) {
    let lag = tokio::time::timeout(TIMEOUT, crate::ops::summary::consumer_lag(js, subjects));
    let backlog = async {
        let mut conn = pool.acquire().await?;
        db::events::unsent_count(&mut conn, OUTBOX_CAP).await
    };
    let backlog = tokio::time::timeout(TIMEOUT, backlog);
    let (lag, backlog) = tokio::join!(lag, backlog);
    let mut ok = true;
    match lag {
        Ok(Ok((pending, ack_pending))) => {
            metrics::gauge!(CONSUMER_PENDING).set(pending as f64);
            metrics::gauge!(CONSUMER_ACK_PENDING).set(ack_pending as f64);
        }
        Ok(Err(e)) => {
            ok = false;
            tracing::debug!(error = %e, "metrics: reading the consumer lag failed");
        }
        Err(_) => {
            ok = false;
            tracing::debug!("metrics: reading the consumer lag timed out");
        }
    }
    match backlog {
        Ok(Ok(n)) => metrics::gauge!(OUTBOX_BACKLOG).set(n as f64),
        Ok(Err(e)) => {
            ok = false;
            tracing::debug!(error = %e, "metrics: counting the outbox backlog failed");
        }
        Err(_) => {
            ok = false;
            tracing::debug!("metrics: counting the outbox backlog timed out");
        }
    }
    // Folds histogram samples into their buckets even when nobody scrapes.
    handle().run_upkeep();
    if ok {
        crate::jobs::succeeded();
    }
}
