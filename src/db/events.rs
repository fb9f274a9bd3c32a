use std::collections::HashMap;

use serde_json::Value;
use sqlx::{FromRow, PgConnection};

/// What change events and alerts need to know of a location (keyed by its id in
/// `EventTerms::locations`).
#[derive(Debug, Clone)]
pub struct LocationTerms {
    pub safety_stock: i64,
    pub low_stock_threshold: Option<i64>,
    /// Counts in the online channel (ships to customers).
    pub ships: bool,
}

/// What change events and alerts need to know of the locations and SKUs they are about.
#[derive(Debug, Clone, Default)]
pub struct EventTerms {
    pub locations: HashMap<String, LocationTerms>,
    /// The SKUs' own low-stock thresholds, where set.
    pub sku_thresholds: HashMap<String, i64>,
}

/// The terms of `locations` and the thresholds of `skus`, in one statement: every writer reads
/// them in its transaction, and on two busy cores each round trip costs more than the read.
pub async fn terms(
    conn: &mut PgConnection,
    locations: &[&str],
    skus: &[&str],
) -> Result<EventTerms, sqlx::Error> {
    let rows: Vec<(bool, String, i64, Option<i64>, bool)> = sqlx::query_as(
        "SELECT true, location_id, safety_stock, low_stock_threshold,
                (ship_from OR kind IN ('warehouse', 'online'))
         FROM locations WHERE location_id = ANY($1)
         UNION ALL
         SELECT false, sku, 0, low_stock_threshold, false
         FROM skus WHERE sku = ANY($2) AND low_stock_threshold IS NOT NULL",
    )
    .bind(locations)
    .bind(skus)
    .fetch_all(conn)
    .await?;
    let mut out = EventTerms::default();
    for (is_location, id, safety_stock, low_stock_threshold, ships) in rows {
        if is_location {
            let t = LocationTerms {
                safety_stock,
                low_stock_threshold,
                ships,
            };
            out.locations.insert(id, t);
        } else if let Some(t) = low_stock_threshold {
            out.sku_thresholds.insert(id, t);
        }
    }
    Ok(out)
}

/// Available-to-promise of each SKU over the online channel (locations that ship), before the
/// channel's share: read from the totals kept at write time (`db::totals`), which include this
/// transaction's own changes. Saturated at the bigint limit.
pub async fn network_available(
    conn: &mut PgConnection,
    skus: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    Ok(crate::db::totals::online_gross(conn, skus)
        .await?
        .into_iter()
        .collect())
}

/// Locks the network states of those of `skus` that have one, in SKU order, and returns
/// them. The lock serialises alert decisions per SKU.
pub async fn lock_network_states(
    conn: &mut PgConnection,
    skus: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT sku, state FROM network_alert_state WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Creates the network states of SKUs that have none (as they were before this transaction),
/// in SKU order; one created meanwhile by another transaction is kept.
pub async fn create_network_states(
    conn: &mut PgConnection,
    skus: &[&str],
    initial: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO network_alert_state (sku, state)
         SELECT s, st FROM UNNEST($1::text[], $2::text[]) AS n(s, st) ORDER BY s
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(skus)
    .bind(initial)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn set_network_states(
    conn: &mut PgConnection,
    skus: &[&str],
    states: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE network_alert_state AS a SET state = n.st
         FROM UNNEST($1::text[], $2::text[]) AS n(s, st) WHERE a.sku = n.s",
    )
    .bind(skus)
    .bind(states)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Appends events to the outbox, in order. The transaction takes its id before the rows
/// take theirs (`pg_current_xact_id()` in the scan, below the ids' defaults): the outbox
/// readers rely on every allocated id belonging to a transaction with an id (see
/// `events::cursor`).
pub async fn insert_outbox(
    conn: &mut PgConnection,
    subjects: &[String],
    payloads: &[Value],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (subject, payload)
         SELECT s, p FROM UNNEST($1::text[], $2::jsonb[]) WITH ORDINALITY AS n(s, p, i)
         WHERE pg_current_xact_id() IS NOT NULL
         ORDER BY i",
    )
    .bind(subjects)
    .bind(payloads)
    .execute(conn)
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub subject: String,
    pub payload: Value,
}

/// Events not yet published, counted up to `cap`.
pub async fn unsent_count(conn: &mut PgConnection, cap: i64) -> Result<i64, sqlx::Error> {
    super::outbox::unpublished_count(conn, cap).await
}

/// Only one relay publishes at a time (so events leave in order); the others wait their turn.
pub async fn try_relay_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7243, 1)")
        .fetch_one(conn)
        .await
}
