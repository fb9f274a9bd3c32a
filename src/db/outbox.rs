//! The insert-only outbox's readers: their cursors, the read past a cursor, and the cleanup
//! (see `events::cursor`).

use sqlx::{FromRow, PgConnection};

use super::events::OutboxRow;
use crate::events::cursor::{Cursor, Horizon};

/// The relay's cursor (publishes to JetStream).
pub const RELAY: &str = "relay";
/// The cache sync's cursor (writes levels to Redis).
pub const CACHE_SYNC: &str = "cache_sync";

#[derive(FromRow)]
struct CursorRow {
    seen_to: i64,
    gap_lo: Vec<i64>,
    gap_hi: Vec<i64>,
    gap_xmax: Vec<i64>,
}

/// A reader's cursor (created at the start of the outbox when missing).
pub async fn cursor(conn: &mut PgConnection, name: &str) -> Result<Cursor, sqlx::Error> {
    let row: Option<CursorRow> = sqlx::query_as(
        "SELECT seen_to, gap_lo, gap_hi, gap_xmax FROM outbox_cursors WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or_else(
        || Cursor::at(0),
        |r| Cursor::from_arrays(r.seen_to, &r.gap_lo, &r.gap_hi, &r.gap_xmax),
    ))
}

pub async fn save_cursor(
    conn: &mut PgConnection,
    name: &str,
    c: &Cursor,
) -> Result<(), sqlx::Error> {
    let (lo, hi, xmax) = c.gap_arrays();
    sqlx::query(
        "INSERT INTO outbox_cursors (name, seen_to, gap_lo, gap_hi, gap_xmax, done_to)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET seen_to = EXCLUDED.seen_to, gap_lo = EXCLUDED.gap_lo,
             gap_hi = EXCLUDED.gap_hi, gap_xmax = EXCLUDED.gap_xmax, done_to = EXCLUDED.done_to,
             updated_at = now()",
    )
    .bind(name)
    .bind(c.seen_to)
    .bind(lo)
    .bind(hi)
    .bind(xmax)
    .bind(c.done_to())
    .execute(conn)
    .await
    .map(|_| ())
}

#[derive(FromRow)]
struct ReadRow {
    xmin: i64,
    /// `None` when the reader's transaction already had an id (see [`unseen`]).
    xmax: Option<i64>,
    id: Option<i64>,
    subject: Option<String>,
    payload: Option<serde_json::Value>,
}

/// The rows a cursor has not seen (inside its gaps, then past `seen_to`), oldest first, at
/// most `limit`, with the horizon of the snapshot that read them (one statement, so one
/// snapshot).
///
/// The horizon's `xmax` is NOT the snapshot's own `xmax`: PostgreSQL sets that to the latest
/// *completed* transaction id + 1, so a transaction that took its id before the snapshot but
/// after the last commit is at or above it. A gap of such a transaction was dropped as soon as
/// a later snapshot's `xmin` reached the gap's `xmax`, while that transaction was still open:
/// its rows, committed afterwards, were never relayed nor cached. So the bound is a
/// transaction id taken *during* the statement, after its snapshot: the reader's own, which is
/// above every id assigned before. The reader must not have written before this read (its id
/// would be older than the snapshot); the statement fails if it has.
pub async fn unseen(
    conn: &mut PgConnection,
    c: &Cursor,
    limit: i64,
) -> Result<(Horizon, Vec<OutboxRow>), sqlx::Error> {
    let (lo, hi, _) = c.gap_arrays();
    let rows: Vec<ReadRow> = sqlx::query_as(
        "SELECT s.xmin, s.xmax, o.id, o.subject, o.payload
         FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS xmin,
                      CASE WHEN pg_current_xact_id_if_assigned() IS NULL
                           THEN pg_current_xact_id()::text::int8
                      END AS xmax) s
         LEFT JOIN LATERAL (
             SELECT * FROM (
                 SELECT id, subject, payload FROM outbox WHERE id > $1
                 UNION ALL
                 SELECT o.id, o.subject, o.payload
                 FROM UNNEST($2::int8[], $3::int8[]) AS g(lo, hi)
                 JOIN outbox o ON o.id BETWEEN g.lo AND g.hi
             ) u ORDER BY id LIMIT $4
         ) o ON true",
    )
    .bind(c.seen_to)
    .bind(lo)
    .bind(hi)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let horizon = match rows.first() {
        // The LEFT JOIN answers one row at least; without one, nothing is proven.
        None => Horizon { xmin: 0, xmax: 0 },
        Some(ReadRow { xmax: None, .. }) => {
            return Err(sqlx::Error::Protocol(
                "outbox read in a transaction that has already written: its gaps could not be \
                 bounded"
                    .into(),
            ))
        }
        Some(&ReadRow {
            xmin,
            xmax: Some(xmax),
            ..
        }) => Horizon { xmin, xmax },
    };
    let out = rows
        .into_iter()
        .filter_map(|r| {
            Some(OutboxRow {
                id: r.id?,
                subject: r.subject?,
                payload: r.payload?,
            })
        })
        .collect();
    Ok((horizon, out))
}

/// Where both readers are: every id up to it is handled by the relay and the cache sync.
pub async fn both_done_to(conn: &mut PgConnection) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(done_to) FROM outbox_cursors WHERE name IN ('relay', 'cache_sync')
         HAVING count(*) = 2",
    )
    .fetch_optional(conn)
    .await
}

/// Deletes the rows up to `up_to` that every reader is past, at most `limit` of them (oldest
/// first), as one id range; returns how many.
pub async fn delete_done(
    conn: &mut PgConnection,
    up_to: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM outbox WHERE id <= (
             SELECT least($1, min(done_to), (SELECT min(id) FROM outbox) + $2 - 1)
             FROM outbox_cursors WHERE name IN ('relay', 'cache_sync')
             HAVING count(*) = 2)",
    )
    .bind(up_to)
    .bind(limit)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Events not yet published, counted up to `cap` (rows past the relay's highest; a gap row
/// committed late is not counted).
pub async fn unpublished_count(conn: &mut PgConnection, cap: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT 1 FROM outbox
             WHERE id > COALESCE((SELECT seen_to FROM outbox_cursors WHERE name = 'relay'), 0)
             LIMIT $1) AS unsent",
    )
    .bind(cap)
    .fetch_one(conn)
    .await
}
