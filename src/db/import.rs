//! The SQL of `omnistock import stock`: a staging table filled by `COPY`, then set-based merges
//! into the levels and the ledger, chunk by chunk in (location, SKU) order.
//!
//! Everything runs on one dedicated connection (the staging tables are `TEMP`: private to it,
//! never WAL-logged, gone when it closes). Only plain `INSERT`/`UPDATE` statements touch
//! `stock_levels` and `movements`, so their triggers see every row: the totals, and the checks
//! that every level's location and SKU and every ledger row's level exist (one anti-join per
//! statement, migration `20261203010000`; they were row-level foreign keys, three checks and row
//! locks per count, which cost more than the rows' own writes).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgCopyIn;
use sqlx::{FromRow, PgConnection};

/// Local buffers for the temp tables: the default 8 MB would send a 10M-row stage through
/// the file system page by page. Server memory, taken only by this session. No JIT: the
/// planner's estimates for a 200,000-row chunk (and for the totals trigger's transition
/// tables) cross `jit_above_cost`, and compiling took ~1.7 s a statement, longer than the
/// statements ran (measured, issue 13).
pub async fn prepare_session(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for sql in [
        "SET temp_buffers = '256MB'",
        "SET work_mem = '64MB'",
        "SET jit = off",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The stage (in file order, no key yet: a unique index built afterwards is both faster
/// than a keyed `COPY` and the check for repeated keys), and the per-chunk work tables.
pub async fn create_stage(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for sql in [
        "DROP TABLE IF EXISTS import_stage, import_locked, import_calc",
        "CREATE TEMP TABLE import_stage (
            line bigint NOT NULL, location_id text NOT NULL, sku text NOT NULL,
            quantity bigint NOT NULL, occurred_at timestamptz NOT NULL, event_id text NOT NULL)",
        "CREATE TEMP TABLE import_locked (location_id text NOT NULL, sku text NOT NULL)",
        "CREATE TEMP TABLE import_calc (
            event_id text NOT NULL, location_id text NOT NULL, sku text NOT NULL,
            quantity bigint NOT NULL, occurred_at timestamptz NOT NULL, line bigint NOT NULL,
            before bigint NOT NULL, after numeric NOT NULL, outcome text NOT NULL)",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Starts the `COPY` of staged rows, text format, columns in [`copy_row`]'s order.
pub async fn copy_in(conn: &mut PgConnection) -> Result<PgCopyIn<&mut PgConnection>, sqlx::Error> {
    conn.copy_in_raw(
        "COPY import_stage (line, location_id, sku, quantity, occurred_at, event_id) FROM STDIN",
    )
    .await
}

/// Appends one row in `COPY` text format to `buf`.
pub fn copy_row(
    buf: &mut Vec<u8>,
    line: u64,
    location_id: &str,
    sku: &str,
    quantity: i64,
    occurred_at: &str,
    event_id: &str,
) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{line}\t");
    escape(buf, location_id);
    buf.push(b'\t');
    escape(buf, sku);
    let _ = write!(buf, "\t{quantity}\t{occurred_at}\t");
    escape(buf, event_id);
    buf.push(b'\n');
}

/// `COPY` text format: backslash, tab, newline and carriage return are escaped (validated
/// ids carry no control characters, but a backslash is printable).
fn escape(buf: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

/// The unique key of the stage; fails with a unique violation (23505) if a key repeats.
pub async fn index_stage(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE UNIQUE INDEX import_stage_key ON import_stage (location_id, sku)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ANALYZE import_stage")
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// A row repeating the key of an earlier one.
#[derive(Debug, FromRow)]
pub struct Repeat {
    pub line: i64,
    pub location_id: String,
    pub sku: String,
    pub first: i64,
}

/// The first `limit` rows (by line) that repeat an earlier row's key, and how many there are.
pub async fn repeats(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<(Vec<Repeat>, i64), sqlx::Error> {
    sqlx::query(
        "CREATE TEMP TABLE import_repeats AS
         SELECT line, location_id, sku, first FROM (
            SELECT line, location_id, sku,
                   min(line) OVER (PARTITION BY location_id, sku) AS first
            FROM import_stage) t
         WHERE line <> first",
    )
    .execute(&mut *conn)
    .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM import_repeats")
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query_as("SELECT * FROM import_repeats ORDER BY line LIMIT $1")
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("DROP TABLE import_repeats")
        .execute(&mut *conn)
        .await?;
    Ok((rows, n))
}

/// Removes rows whose event id the ledger already holds (imported before); returns how many.
pub async fn drop_known(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM import_stage s USING movements m WHERE m.event_id = s.event_id")
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
}

/// Creates the SKUs of the stage, in SKU order like every other inserter.
pub async fn ensure_skus(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO skus (sku) SELECT DISTINCT sku FROM import_stage ORDER BY sku
         ON CONFLICT (sku) DO NOTHING",
    )
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Where the chunks start: every `size`-th key of the stage, in key order, with the number of
/// rows from there to the next start.
pub async fn chunk_starts(
    conn: &mut PgConnection,
    size: i64,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    // The total comes separately: a `count(*) OVER ()` beside the row numbers made the window
    // buffer the whole stage (a third of this query's time at 1M rows).
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM import_stage")
        .fetch_one(&mut *conn)
        .await?;
    let starts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT location_id, sku, rn FROM (
            SELECT location_id, sku, row_number() OVER (ORDER BY location_id, sku) AS rn
            FROM import_stage) t
         WHERE rn % $1 = 1 OR $1 = 1
         ORDER BY location_id, sku",
    )
    .bind(size)
    .fetch_all(&mut *conn)
    .await?;
    let next: Vec<i64> = starts
        .iter()
        .skip(1)
        .map(|(_, _, rn)| *rn)
        .chain([total + 1])
        .collect();
    Ok(starts
        .into_iter()
        .zip(next)
        .map(|((location, sku, rn), next)| (location, sku, next - rn))
        .collect())
}

/// A half-open key range `[from, to)`; `to` is `None` for the last chunk.
#[derive(Debug, Clone, Copy)]
pub struct Range<'a> {
    pub from: (&'a str, &'a str),
    pub to: Option<(&'a str, &'a str)>,
}

impl Range<'_> {
    /// The condition on `alias`'s key, parameters $1..$4.
    fn cond(&self, alias: &str) -> String {
        let lower = format!("({alias}.location_id, {alias}.sku) >= ($1, $2)");
        match self.to {
            Some(_) => format!("{lower} AND ({alias}.location_id, {alias}.sku) < ($3, $4)"),
            None => format!("{lower} AND $3::text IS NULL AND $4::text IS NULL"),
        }
    }

    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let (a, b) = self.from;
        let (c, d) = match self.to {
            Some((c, d)) => (Some(c.to_owned()), Some(d.to_owned())),
            None => (None, None),
        };
        q.bind(a.to_owned()).bind(b.to_owned()).bind(c).bind(d)
    }
}

/// Filter for the slow path: only rows the ledger does not hold yet.
fn pending(only: bool) -> &'static str {
    if only {
        "AND NOT EXISTS (SELECT 1 FROM movements m WHERE m.event_id = s.event_id)"
    } else {
        ""
    }
}

/// Locks the existing levels of the range's rows in (location, SKU) order, the order every
/// writer locks levels in, and notes them in `import_locked`; returns how many.
pub async fn lock_existing(
    conn: &mut PgConnection,
    range: Range<'_>,
    pending_only: bool,
) -> Result<u64, sqlx::Error> {
    sqlx::query("TRUNCATE import_locked, import_calc")
        .execute(&mut *conn)
        .await?;
    let sql = format!(
        "INSERT INTO import_locked (location_id, sku)
         SELECT l.location_id, l.sku FROM stock_levels l
         JOIN import_stage s ON s.location_id = l.location_id AND s.sku = l.sku
         WHERE {} AND {} {}
         ORDER BY l.location_id, l.sku
         FOR UPDATE OF l",
        range.cond("s"),
        range.cond("l"),
        pending(pending_only)
    );
    range
        .bind(sqlx::query(&sql))
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
}

/// For the locked levels: what each count does under the as-of rule, read after the locks
/// (so every movement committed on these levels is seen). A count older than the level's
/// latest count is stale; otherwise on-hand becomes the count plus every delta recorded
/// after it (in `numeric`, checked against the bigint range before anything is written).
pub async fn plan_existing(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO import_calc
            (event_id, location_id, sku, quantity, occurred_at, line, before, after, outcome)
         SELECT s.event_id, s.location_id, s.sku, s.quantity, s.occurred_at, s.line, l.on_hand,
                CASE WHEN l.last_count_at IS NOT NULL AND s.occurred_at < l.last_count_at
                     THEN l.on_hand::numeric
                     ELSE s.quantity + COALESCE((
                        SELECT sum(m.signed_quantity) FROM movements m
                        WHERE m.location_id = s.location_id AND m.sku = s.sku
                          AND m.occurred_at > s.occurred_at), 0)
                END,
                CASE WHEN l.last_count_at IS NOT NULL AND s.occurred_at < l.last_count_at
                     THEN 'stale_count' ELSE 'applied' END
         FROM import_locked k
         JOIN import_stage s ON s.location_id = k.location_id AND s.sku = k.sku
         JOIN stock_levels l ON l.location_id = k.location_id AND l.sku = k.sku",
    )
    .execute(&mut *conn)
    .await
    .map(|r| r.rows_affected())
}

/// The first planned count whose result does not fit a bigint: (line, location, SKU).
pub async fn first_overflow(
    conn: &mut PgConnection,
) -> Result<Option<(i64, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT line, location_id, sku FROM import_calc
         WHERE after NOT BETWEEN -9223372036854775808 AND 9223372036854775807
         ORDER BY line LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Applies the planned counts to their (locked) levels and records them in the ledger.
pub async fn apply_existing(conn: &mut PgConnection, reference: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE stock_levels l SET
            on_hand = c.after::bigint,
            version = l.version + (c.after::bigint <> l.on_hand)::int,
            last_count_at = CASE WHEN c.outcome = 'applied' THEN c.occurred_at
                                 ELSE l.last_count_at END,
            last_movement_at = GREATEST(l.last_movement_at, c.occurred_at),
            updated_at = now()
         FROM import_calc c
         WHERE l.location_id = c.location_id AND l.sku = c.sku",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                               effect, outcome, on_hand_after, occurred_at, source, reference)
         SELECT event_id, location_id, sku, 'count', quantity, NULL,
                after::bigint - before, outcome, after::bigint, occurred_at, 'import', $1
         FROM import_calc ORDER BY location_id, sku",
    )
    .bind(reference)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Creates the levels of the range that do not exist, already counted (a new level has no
/// ledger, so the count is its on-hand), and records their counts; returns how many. A level
/// that exists (locked and applied above, or created meanwhile by a live movement) is left
/// alone by `ON CONFLICT DO NOTHING`, and its row is not recorded here.
pub async fn insert_new(
    conn: &mut PgConnection,
    range: Range<'_>,
    reference: &str,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "WITH created AS (
            INSERT INTO stock_levels (location_id, sku, on_hand, version, last_count_at,
                                      last_movement_at)
            SELECT s.location_id, s.sku, s.quantity, (s.quantity <> 0)::int, s.occurred_at,
                   s.occurred_at
            FROM import_stage s
            WHERE {}
            ORDER BY s.location_id, s.sku
            ON CONFLICT (location_id, sku) DO NOTHING
            RETURNING location_id, sku)
         INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                                effect, outcome, on_hand_after, occurred_at, source, reference)
         SELECT s.event_id, s.location_id, s.sku, 'count', s.quantity, NULL, s.quantity,
                'applied', s.quantity, s.occurred_at, 'import', $5
         FROM created c JOIN import_stage s ON s.location_id = c.location_id AND s.sku = c.sku
         ORDER BY s.location_id, s.sku",
        range.cond("s")
    );
    range
        .bind(sqlx::query(&sql))
        .bind(reference)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
}

/// The fast path of [`insert_new`]: the range's rows whose level was not locked above are
/// created with plain `INSERT`s (no speculative insertion, which `ON CONFLICT` pays per row)
/// and recorded; returns how many. A level that a live movement created meanwhile makes it
/// fail with a unique violation (23505): the caller rolls back to its savepoint and takes
/// [`insert_new`] for the range.
pub async fn insert_new_plain(
    conn: &mut PgConnection,
    range: Range<'_>,
    reference: &str,
) -> Result<u64, sqlx::Error> {
    let fresh = format!(
        "FROM import_stage s
         WHERE {} AND NOT EXISTS (SELECT 1 FROM import_locked k
                                  WHERE k.location_id = s.location_id AND k.sku = s.sku)
         ORDER BY s.location_id, s.sku",
        range.cond("s")
    );
    let levels = format!(
        "INSERT INTO stock_levels (location_id, sku, on_hand, version, last_count_at,
                                   last_movement_at)
         SELECT s.location_id, s.sku, s.quantity, (s.quantity <> 0)::int, s.occurred_at,
                s.occurred_at
         {fresh}"
    );
    let created = range
        .bind(sqlx::query(&levels))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let ledger = format!(
        "INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                                effect, outcome, on_hand_after, occurred_at, source, reference)
         SELECT s.event_id, s.location_id, s.sku, 'count', s.quantity, NULL, s.quantity,
                'applied', s.quantity, s.occurred_at, 'import', $5
         {fresh}"
    );
    let recorded = range
        .bind(sqlx::query(&ledger))
        .bind(reference)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    debug_assert_eq!(created, recorded);
    Ok(recorded)
}

/// A level this import changed, for its change event: before and after.
#[derive(Debug, FromRow)]
pub struct Changed {
    pub location_id: String,
    pub sku: String,
    pub before_on_hand: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub in_transit: i64,
    pub version: i64,
    pub event_id: String,
    pub last_count_at: Option<DateTime<Utc>>,
    pub last_movement_at: Option<DateTime<Utc>>,
}

/// Every level the staged counts changed (the ledger row of each count holds its effect), in
/// (SKU, location) order. Only for imports small enough to emit one event per level.
pub async fn changed(conn: &mut PgConnection) -> Result<Vec<Changed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT l.location_id, l.sku, m.on_hand_after - m.effect AS before_on_hand, l.on_hand,
                l.reserved, l.in_transit, l.version, m.event_id, l.last_count_at,
                l.last_movement_at
         FROM import_stage s
         JOIN movements m ON m.event_id = s.event_id
         JOIN stock_levels l ON l.location_id = s.location_id AND l.sku = s.sku
         WHERE m.effect <> 0
         ORDER BY l.sku, l.location_id",
    )
    .fetch_all(&mut *conn)
    .await
}

/// Marks the stage's SKUs for the channel feed, which republishes their channel totals (what
/// the relay does for the SKUs of the change events a bulk import does not emit).
pub async fn mark_channels_dirty(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channel_dirty (sku) SELECT DISTINCT sku FROM import_stage ORDER BY sku
         ON CONFLICT (sku) DO NOTHING",
    )
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The distinct SKUs of the stage after `after`, in order, `limit` at a time (for the fill of
/// Redis after the commit).
pub async fn skus_page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT sku FROM import_skus WHERE $1::text IS NULL OR sku > $1
         ORDER BY sku LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// The distinct SKUs of the stage, indexed, for [`skus_page`].
pub async fn collect_skus(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    sqlx::query("DROP TABLE IF EXISTS import_skus")
        .execute(&mut *conn)
        .await?;
    let n = sqlx::query("CREATE TEMP TABLE import_skus AS SELECT DISTINCT sku FROM import_stage")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("CREATE UNIQUE INDEX ON import_skus (sku)")
        .execute(&mut *conn)
        .await?;
    Ok(n)
}
