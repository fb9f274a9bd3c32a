//! The channel feed: `<prefix>.channels.<channel>` carries a channel's new total for a SKU
//! whenever it changes, so a marketplace feed can follow one subject.
//!
//! The outbox relay marks the SKUs of the change events it publishes (`channel_dirty`, in the
//! transaction that marks them sent); a channel or override change marks the SKUs it affects.
//! Each run then takes a page of marked SKUs, reads every channel's total from PostgreSQL,
//! publishes those that differ from the total last published for that (channel, SKU), and
//! records them and unmarks the page in one transaction. A channel's total is the one the level
//! triggers keep in `sku_totals` (the figure reads answer too), so a run reads one row per
//! (SKU, channel), not every level of its SKUs. So:
//! - at least once, after the commit: a total is computed from committed levels, and a run
//!   that fails after publishing is rolled back and publishes again;
//! - per SKU in order: runs hold the relay's turn (one at a time across daemons) and each run
//!   publishes at most one total per (channel, SKU);
//! - only on a change: a total equal to the last one published is not sent again. Totals of
//!   changes close together are coalesced: the feed carries the latest, not every step.
//!
//! Custom channels also alert when their total crosses 0 (`out_of_stock`, `back_in_stock` on
//! `<prefix>.alerts.<kind>`, with `"scope": "channel"` and `"channel"`); the built-in `all` and
//! `online` do not, as the network alerts already cover the shipping total.

use std::collections::HashMap;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Subjects;
use crate::db;
use crate::domain::channel::is_built_in;
use crate::metrics::METRICS;

/// SKUs per run.
pub const BATCH: i64 = 500;

/// The body of a `<prefix>.channels.<channel>` event.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelTotal<'a> {
    pub channel: &'a str,
    pub sku: &'a str,
    pub available: i64,
    pub changed_at: DateTime<Utc>,
    pub event_id: String,
}

#[derive(Debug, Clone, Serialize)]
struct ChannelAlert<'a> {
    kind: &'static str,
    scope: &'static str,
    channel: &'a str,
    location_id: Option<&'a str>,
    sku: &'a str,
    available: i64,
    threshold: i64,
    at: DateTime<Utc>,
    event_id: String,
}

/// FNV-1a: a stable short stand-in for a SKU in a message id (a SKU may hold characters a
/// header should not).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Pending {
    channel: String,
    sku: String,
    available: i64,
    seq: i64,
    previous: Option<i64>,
}

/// One run: publishes the changed channel totals of one page of marked SKUs; returns how many
/// SKUs it handled (0 when none are marked or another daemon has the turn).
pub async fn publish_once(
    pool: &PgPool,
    js: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    if !db::events::try_relay_lock(&mut tx).await? {
        return Ok(0);
    }
    let skus = db::channels::lock_dirty(&mut tx, BATCH).await?;
    if skus.is_empty() {
        return Ok(0);
    }
    let defs = db::channels::list(&mut *tx).await?;
    // The totals the level triggers keep (`sku_totals`): one row per (SKU, channel), whatever
    // the number of locations; a pair without a row is 0.
    let totals: HashMap<(String, String), i64> = db::totals::for_skus(&mut *tx, &skus)
        .await?
        .into_iter()
        .map(|t| ((t.channel, t.sku), t.available))
        .collect();
    let published = db::channels::published(&mut tx, &skus).await?;
    let mut pending = Vec::new();
    for sku in &skus {
        for def in &defs {
            let key = (def.channel.clone(), sku.clone());
            let now_total = totals.get(&key).copied().unwrap_or(0);
            let last = published.get(&key);
            if last.map(|l| l.0) == Some(now_total) {
                continue;
            }
            pending.push(Pending {
                channel: def.channel.clone(),
                sku: sku.clone(),
                available: now_total,
                seq: last.map_or(1, |l| l.1.saturating_add(1)),
                previous: last.map(|l| l.0),
            });
        }
    }
    let now = Utc::now();
    let mut acks = Vec::with_capacity(pending.len());
    for p in &pending {
        // The total is part of the id: a run that publishes again after a failure, with a
        // different total, must not be dropped as a duplicate of the first.
        let id = format!(
            "chn-{}-{:016x}-{}-{}",
            p.channel,
            fnv(&p.sku),
            p.seq,
            p.available
        );
        let body = ChannelTotal {
            channel: &p.channel,
            sku: &p.sku,
            available: p.available,
            changed_at: now,
            event_id: id.clone(),
        };
        acks.push(publish(js, subjects.channels(&p.channel), &id, &body).await?);
        let crossing = match p.previous {
            Some(prev) if prev > 0 && p.available == 0 => Some("out_of_stock"),
            Some(0) if p.available > 0 => Some("back_in_stock"),
            _ => None,
        };
        if let Some(kind) = crossing.filter(|_| !is_built_in(&p.channel)) {
            let id = format!("chalert-{id}");
            let alert = ChannelAlert {
                kind,
                scope: "channel",
                channel: &p.channel,
                location_id: None,
                sku: &p.sku,
                available: p.available,
                threshold: 0,
                at: now,
                event_id: id.clone(),
            };
            acks.push(publish(js, subjects.alerts(kind), &id, &alert).await?);
        }
    }
    for ack in acks {
        ack.await?;
    }
    if !pending.is_empty() {
        let channels: Vec<&str> = pending.iter().map(|p| p.channel.as_str()).collect();
        let p_skus: Vec<&str> = pending.iter().map(|p| p.sku.as_str()).collect();
        let totals: Vec<i64> = pending.iter().map(|p| p.available).collect();
        let seqs: Vec<i64> = pending.iter().map(|p| p.seq).collect();
        db::channels::set_published(&mut tx, &channels, &p_skus, &totals, &seqs).await?;
    }
    db::channels::clear_dirty(&mut tx, &skus).await?;
    tx.commit().await?;
    METRICS.events_published.add(pending.len() as u64);
    Ok(skus.len())
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    id: &str,
    body: &impl Serialize,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    Ok(js
        .publish_with_headers(subject, headers, serde_json::to_vec(body)?.into())
        .await?)
}

/// Runs until no marked SKU is left (or another daemon has the turn).
pub async fn catch_up(
    pool: &PgPool,
    js: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = publish_once(pool, js, subjects).await?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fnv;

    #[test]
    fn sku_hash_is_stable() {
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv("TEE-RED-M"), fnv("TEE-RED-L"));
    }
}
