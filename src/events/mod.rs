//! Change events and stock alerts, written to the outbox in the transaction of the change.
//!
//! Every writer of levels (movements, holds, releases, expiry) hands its changes here before it
//! commits, so an event exists if and only if its change committed. The relay ([`relay`])
//! publishes them afterwards; [`hub`] fans them out to this process's live streams.

pub mod channel_feed;
pub mod cursor;
pub mod hub;
pub mod relay;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::db;
use crate::domain::alerts::{classify, crossing, StockState};
use crate::domain::availability::available;

/// The default low-stock threshold of this process (`OMNISTOCK_LOW_STOCK_THRESHOLD`). A process
/// setting every writer needs; threading it through each transaction function would only add
/// noise.
static DEFAULT_LOW_STOCK: AtomicI64 = AtomicI64::new(2);

pub fn set_default_low_stock_threshold(t: i64) {
    DEFAULT_LOW_STOCK.store(t.max(0), Ordering::Relaxed);
}

/// One change of one level, as one event.
#[derive(Debug, Clone)]
pub struct LevelChange {
    pub location_id: String,
    pub sku: String,
    pub before_on_hand: i64,
    pub before_reserved: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub in_transit: i64,
    pub version: i64,
    /// What changed it: a movement kind, `reservation_hold`, `reservation_release`,
    /// `reservation_expiry`.
    pub cause: &'static str,
    /// The movement's `event_id` or the reservation's id.
    pub reference: Option<String>,
}

/// Writes the change events and any alerts they trigger to the outbox.
pub async fn record(conn: &mut PgConnection, changes: &[LevelChange]) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut locs: Vec<&str> = changes.iter().map(|c| c.location_id.as_str()).collect();
    locs.sort_unstable();
    locs.dedup();
    let mut skus: Vec<&str> = changes.iter().map(|c| c.sku.as_str()).collect();
    skus.sort_unstable();
    skus.dedup();
    let terms = db::events::terms(conn, &locs, &skus).await?;
    record_with_terms(conn, changes, &terms).await
}

/// `record`, for a caller that has read the terms of the changes' locations in its
/// transaction already (after its level locks, as `record` would).
pub async fn record_with_terms(
    conn: &mut PgConnection,
    changes: &[LevelChange],
    terms: &db::events::EventTerms,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let default = DEFAULT_LOW_STOCK.load(Ordering::Relaxed);
    let sku_thresholds = &terms.sku_thresholds;
    let now = Utc::now();
    let mut subjects = Vec::with_capacity(changes.len());
    let mut payloads = Vec::with_capacity(changes.len());
    // Net change of online-channel availability per SKU, for the network alerts.
    let mut network_delta: BTreeMap<&str, i64> = BTreeMap::new();

    for c in changes {
        let Some(t) = terms.locations.get(&c.location_id) else {
            continue;
        };
        let before = available(c.before_on_hand, c.before_reserved, t.safety_stock);
        let after = available(c.on_hand, c.reserved, t.safety_stock);
        subjects.push(format!("changes.{}", c.location_id));
        payloads.push(json!({
            "location_id": c.location_id,
            "sku": c.sku,
            "on_hand": c.on_hand,
            "reserved": c.reserved,
            "available": after,
            "in_transit": c.in_transit,
            "version": c.version,
            "changed_at": now,
            "cause": c.cause,
            "reference": c.reference,
        }));
        let threshold = sku_thresholds
            .get(&c.sku)
            .copied()
            .or(t.low_stock_threshold)
            .unwrap_or(default);
        if let Some(kind) = crossing(classify(before, threshold), classify(after, threshold)) {
            subjects.push(format!("alerts.{}", kind.as_str()));
            payloads.push(alert(
                kind.as_str(),
                "location",
                Some(&c.location_id),
                &c.sku,
                after,
                threshold,
                now,
            ));
        }
        if t.ships && after != before {
            *network_delta.entry(c.sku.as_str()).or_default() += after - before;
        }
    }
    network_alerts(
        conn,
        &network_delta,
        sku_thresholds,
        default,
        now,
        &mut subjects,
        &mut payloads,
    )
    .await?;
    db::events::insert_outbox(conn, &subjects, &payloads).await
}

fn alert(
    kind: &str,
    scope: &str,
    location_id: Option<&str>,
    sku: &str,
    available: i64,
    threshold: i64,
    at: chrono::DateTime<Utc>,
) -> Value {
    json!({
        "kind": kind,
        "scope": scope,
        "location_id": location_id,
        "sku": sku,
        "available": available,
        "threshold": threshold,
        "at": at,
    })
}

/// Alerts on the online-channel total of each SKU. The stored state is locked, so concurrent
/// transactions decide one after the other and each crossing alerts exactly once.
async fn network_alerts(
    conn: &mut PgConnection,
    delta: &BTreeMap<&str, i64>,
    sku_thresholds: &HashMap<String, i64>,
    default: i64,
    now: chrono::DateTime<Utc>,
    subjects: &mut Vec<String>,
    payloads: &mut Vec<Value>,
) -> Result<(), sqlx::Error> {
    if delta.is_empty() {
        return Ok(());
    }
    let skus: Vec<&str> = delta.keys().copied().collect();
    let threshold = |sku: &str| sku_thresholds.get(sku).copied().unwrap_or(default);
    let total = |totals: &HashMap<String, i64>, sku: &str| totals.get(sku).copied().unwrap_or(0);
    let mut stored = db::events::lock_network_states(conn, &skus).await?;
    if stored.len() < skus.len() {
        // A SKU seen for the first time starts from its state before this transaction.
        let missing: Vec<&str> = skus
            .iter()
            .copied()
            .filter(|s| !stored.contains_key(*s))
            .collect();
        let totals = db::events::network_available(conn, &missing).await?;
        let initial: Vec<&str> = missing
            .iter()
            .map(|s| classify(total(&totals, s).saturating_sub(delta[s]), threshold(s)).as_str())
            .collect();
        db::events::create_network_states(conn, &missing, &initial).await?;
        stored = db::events::lock_network_states(conn, &skus).await?;
    }
    // Read under the lock: every earlier decision on these SKUs has committed by now.
    let totals = db::events::network_available(conn, &skus).await?;
    let mut changed_skus = Vec::new();
    let mut changed_states = Vec::new();
    for sku in &skus {
        let now_total = total(&totals, sku);
        let thr = threshold(sku);
        let after = classify(now_total, thr);
        let before = stored
            .get(*sku)
            .and_then(|s| StockState::parse(s))
            .unwrap_or(after);
        if let Some(kind) = crossing(before, after) {
            subjects.push(format!("alerts.{}", kind.as_str()));
            payloads.push(alert(
                kind.as_str(),
                "network",
                None,
                sku,
                now_total,
                thr,
                now,
            ));
        }
        if before != after {
            changed_skus.push(*sku);
            changed_states.push(after.as_str());
        }
    }
    if !changed_skus.is_empty() {
        db::events::set_network_states(conn, &changed_skus, &changed_states).await?;
    }
    Ok(())
}
