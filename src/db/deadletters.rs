//! Replays of dead letters (the letters themselves stay in their JetStream stream).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};

#[derive(Debug, Clone, FromRow)]
pub struct Replay {
    pub stream_sequence: i64,
    pub replayed_to: String,
    pub replayed_at: DateTime<Utc>,
    pub replays: i32,
}

/// The replays recorded for these letters of `stream`.
pub async fn replays(
    db: impl PgExecutor<'_>,
    stream: &str,
    sequences: &[i64],
) -> Result<Vec<Replay>, sqlx::Error> {
    sqlx::query_as(
        "SELECT stream_sequence, replayed_to, replayed_at, replays FROM dead_letter_replays
         WHERE stream = $1 AND stream_sequence = ANY($2)",
    )
    .bind(stream)
    .bind(sequences)
    .fetch_all(db)
    .await
}

/// Records a replay (again: counts up and moves the time).
pub async fn record_replay(
    db: impl PgExecutor<'_>,
    stream: &str,
    sequence: i64,
    reason: &str,
    replayed_to: &str,
) -> Result<Replay, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO dead_letter_replays (stream, stream_sequence, reason, replayed_to)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (stream, stream_sequence) DO UPDATE
           SET replayed_at = now(), replayed_to = EXCLUDED.replayed_to,
               replays = dead_letter_replays.replays + 1
         RETURNING stream_sequence, replayed_to, replayed_at, replays",
    )
    .bind(stream)
    .bind(sequence)
    .bind(reason)
    .bind(replayed_to)
    .fetch_one(db)
    .await
}
