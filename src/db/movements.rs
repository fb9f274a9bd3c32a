use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor};

/// A ledger row to insert.
#[derive(Debug, Clone)]
pub struct NewLedgerRow<'a> {
    pub event_id: &'a str,
    pub location_id: &'a str,
    pub sku: &'a str,
    pub kind: &'static str,
    pub quantity: i64,
    pub signed_quantity: Option<i64>,
    pub effect: i64,
    pub outcome: &'static str,
    pub on_hand_after: i64,
    pub occurred_at: DateTime<Utc>,
    /// When it was published (JetStream) or posted (HTTP); `None` for an import.
    pub published_at: Option<DateTime<Utc>>,
    pub source: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub reservation_id: Option<&'a str>,
    pub transfer_id: Option<&'a str>,
    pub to_location_id: Option<&'a str>,
    pub supply_id: Option<&'a str>,
    /// What became of the `supply_id` link (`filled`, `unknown_supply`, ...).
    pub supply_outcome: Option<&'static str>,
}

/// Which of `event_ids` are already in the ledger.
pub async fn existing_event_ids(
    conn: &mut PgConnection,
    event_ids: &[&str],
) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM movements WHERE event_id = ANY($1)")
            .persistent(false)
            .bind(event_ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

#[derive(Debug, FromRow)]
pub struct RecordedDeltaRow {
    pub location_id: String,
    pub sku: String,
    pub occurred_at: DateTime<Utc>,
    pub signed_quantity: i64,
}

/// Deltas recorded for each key after the given instant (what a count must add back).
pub async fn deltas_after(
    conn: &mut PgConnection,
    locations: &[&str],
    skus: &[&str],
    after: &[DateTime<Utc>],
) -> Result<Vec<RecordedDeltaRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.location_id, m.sku, m.occurred_at, m.signed_quantity
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS k(location_id, sku, after)
         JOIN movements m ON m.location_id = k.location_id AND m.sku = k.sku
                         AND m.occurred_at > k.after AND m.signed_quantity IS NOT NULL",
    )
    .bind(locations)
    .bind(skus)
    .bind(after)
    .fetch_all(conn)
    .await
}

/// Appends rows to the ledger in the given order (ids grow in that order: of two counts with
/// the same `occurred_at`, the later id is the later recount).
pub async fn insert(conn: &mut PgConnection, rows: &[NewLedgerRow<'_>]) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($f:ident) => {
            rows.iter().map(|r| r.$f).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                                effect, outcome, on_hand_after, occurred_at, source, reference,
                                reservation_id, transfer_id, to_location_id, supply_id,
                                supply_outcome, published_at)
         SELECT e, l, s, k, q, sq, ef, o, oh, t, src, rf, r, tr, tl, sid, so, p
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                     $7::int8[], $8::text[], $9::int8[], $10::timestamptz[], $11::text[],
                     $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
                     $18::timestamptz[])
              WITH ORDINALITY AS n(e, l, s, k, q, sq, ef, o, oh, t, src, rf, r, tr, tl, sid, so, p, i)
         ORDER BY i",
    )
    .bind(column!(event_id))
    .bind(column!(location_id))
    .bind(column!(sku))
    .bind(column!(kind))
    .bind(column!(quantity))
    .bind(column!(signed_quantity))
    .bind(column!(effect))
    .bind(column!(outcome))
    .bind(column!(on_hand_after))
    .bind(column!(occurred_at))
    .bind(column!(source))
    .bind(column!(reference))
    .bind(column!(reservation_id))
    .bind(column!(transfer_id))
    .bind(column!(to_location_id))
    .bind(column!(supply_id))
    .bind(column!(supply_outcome))
    .bind(column!(published_at))
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn count(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM movements")
        .fetch_one(db)
        .await
}

/// One ledger row as the history shows it.
#[derive(Debug, FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub event_id: String,
    pub location_id: String,
    pub sku: String,
    pub kind: String,
    pub quantity: i64,
    pub occurred_at: DateTime<Utc>,
    pub source: Option<String>,
    pub reference: Option<String>,
    pub reservation_id: Option<String>,
    pub transfer_id: Option<String>,
    pub to_location_id: Option<String>,
    pub supply_id: Option<String>,
    pub supply_outcome: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
    pub outcome: String,
    pub on_hand_after: i64,
}

/// Filters of the history; `None` is no filter.
#[derive(Debug, Default)]
pub struct HistoryFilter<'a> {
    pub sku: Option<&'a str>,
    pub location_id: Option<&'a str>,
    /// Lower bound (inclusive) on `occurred_at`.
    pub since: Option<DateTime<Utc>>,
    /// Only rows with a ledger id below this (the keyset cursor).
    pub before_id: Option<i64>,
}

/// Ledger rows newest first (by ledger id, which grows in insertion order), at most `limit`.
pub async fn history(
    db: impl PgExecutor<'_>,
    f: &HistoryFilter<'_>,
    limit: i64,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, location_id, sku, kind, quantity, occurred_at, source, reference,
                reservation_id, transfer_id, to_location_id, supply_id, supply_outcome,
                published_at, recorded_at, outcome, on_hand_after
         FROM movements
         WHERE ($1::text IS NULL OR sku = $1)
           AND ($2::text IS NULL OR location_id = $2)
           AND ($3::timestamptz IS NULL OR occurred_at >= $3)
           AND ($4::int8 IS NULL OR id < $4)
         ORDER BY id DESC
         LIMIT $5",
    )
    .bind(f.sku)
    .bind(f.location_id)
    .bind(f.since)
    .bind(f.before_id)
    .bind(limit)
    .fetch_all(db)
    .await
}
