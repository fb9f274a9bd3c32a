//! The outbox relay: publishes committed change events and alerts to JetStream, in order, and
//! moves its cursor past them (one row of `outbox_cursors`, in the transaction that holds the
//! turn; no outbox row is ever updated, see `events::cursor`). A crash between publishing and
//! moving re-publishes on the next run with the same `Nats-Msg-Id` (JetStream drops the
//! duplicate within its window; consumers can also dedupe by (location, SKU, version)): events
//! can repeat, never get lost. Several daemons may run a relay; an advisory lock lets one
//! publish at a time, which keeps the order.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::stream::{FuturesUnordered, StreamExt};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Subjects;
use crate::db;
use crate::metrics::METRICS;

/// Rows published per transaction.
const BATCH: i64 = 1_000;
/// Outbox rows deleted per statement by the cleanup.
const CLEANUP_CHUNK: i64 = 50_000;
/// How often the cleanup runs.
const CLEANUP_EVERY: Duration = Duration::from_secs(5);
/// How long rows stay after both readers are past them (for inspection and the fault tests'
/// audits); the cleanup deletes up to where both readers were this long ago.
const RETAIN: Duration = Duration::from_secs(300);

fn wake_signal() -> &'static Notify {
    static WAKE: OnceLock<Notify> = OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

/// Tells this process's relay that new events were committed (others poll).
pub fn wake() {
    wake_signal().notify_one();
}

/// Creates, if missing, the streams of change events and alerts (one replica).
pub async fn ensure_streams(js: &jetstream::Context, subjects: &Subjects) -> anyhow::Result<()> {
    ensure_streams_replicated(js, subjects, 1).await
}

/// [`ensure_streams`] with `replicas` copies of each new stream (`OMNISTOCK_STREAM_REPLICAS`).
pub async fn ensure_streams_replicated(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> anyhow::Result<()> {
    let replicas = replicas.max(1);
    const DAY: u64 = 24 * 3600;
    for (name, subject, days) in [
        (subjects.changes_stream(), subjects.changes_wildcard(), 7),
        (subjects.alerts_stream(), subjects.alerts_wildcard(), 30),
        (subjects.channels_stream(), subjects.channels_wildcard(), 7),
    ] {
        js.get_or_create_stream(stream::Config {
            name,
            subjects: vec![subject],
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(days * DAY),
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

/// The id an event is published with: in its body as `event_id` and as `Nats-Msg-Id`.
pub fn event_id(subject: &str, id: i64) -> String {
    if subject.starts_with("alerts.") {
        format!("alert-{id}")
    } else {
        format!("chg-{id}")
    }
}

/// Where a relay run may be interrupted, to test that a crash loses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Publish, then move the cursor (normal operation).
    MarkSent,
    /// Publish, then give up before moving the cursor, as a crash would.
    CrashBeforeMark,
}

/// Publishes one batch of events past the relay's cursor; returns how many (0 when none, or
/// when another daemon's relay holds the turn).
pub async fn relay_once(
    pool: &PgPool,
    js: &jetstream::Context,
    subjects: &Subjects,
    finish: Finish,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    if !db::events::try_relay_lock(&mut tx).await? {
        return Ok(0);
    }
    let mut cursor = db::outbox::cursor(&mut tx, db::outbox::RELAY).await?;
    let (horizon, rows) = db::outbox::unseen(&mut tx, &cursor, BATCH).await?;
    if rows.is_empty() {
        // Gaps may have been proven empty: the cleanup may go further.
        if !cursor.gaps.is_empty() {
            cursor.advance(horizon, &[], true);
            db::outbox::save_cursor(&mut tx, db::outbox::RELAY, &cursor).await?;
            tx.commit().await?;
        }
        return Ok(0);
    }
    let (stored, failure) = publish_in_order(js, subjects, &rows).await;
    // The cursor moves over the stored prefix only: after a failure, what follows it is
    // published again (JetStream drops what it already holds by Nats-Msg-Id), in order.
    let prefix = stored.iter().take_while(|s| **s).count();
    let published: Vec<i64> = rows[..prefix].iter().map(|r| r.id).collect();
    if finish == Finish::CrashBeforeMark {
        return match failure {
            Some(e) => Err(e),
            None => Ok(published.len()),
        };
    }
    let complete = prefix == rows.len() && (rows.len() as i64) < BATCH;
    cursor.advance(horizon, &published, complete);
    db::outbox::save_cursor(&mut tx, db::outbox::RELAY, &cursor).await?;
    // Their SKUs' channel totals may have changed: the channel feed looks next.
    db::channels::mark_dirty(&mut *tx, &changed_skus(&rows[..prefix])).await?;
    tx.commit().await?;
    METRICS.events_published.add(published.len() as u64);
    match failure {
        Some(e) => Err(e),
        None => Ok(rows.len()),
    }
}

/// Samples where both readers are, and deletes up to where they were [`RETAIN`] ago.
async fn cleanup_step(
    pool: &PgPool,
    passed: &mut VecDeque<(Instant, i64)>,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    if let Some(done) = db::outbox::both_done_to(&mut conn).await? {
        passed.push_back((Instant::now(), done));
    }
    drop(conn);
    let mut up_to = None;
    while let Some(&(at, id)) = passed.front() {
        if at.elapsed() < RETAIN {
            break;
        }
        up_to = Some(id);
        passed.pop_front();
    }
    if let Some(up_to) = up_to {
        let n = clean_outbox(pool, up_to).await?;
        tracing::debug!(deleted = n, up_to, "outbox cleaned");
    }
    Ok(())
}

/// Deletes the outbox rows up to `up_to` that both the relay and the cache sync are past, in
/// bounded chunks.
pub async fn clean_outbox(pool: &PgPool, up_to: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let mut conn = pool.acquire().await?;
        let n = db::outbox::delete_done(&mut conn, up_to, CLEANUP_CHUNK).await?;
        total += n;
        if n < CLEANUP_CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Publishes the rows, each SKU's in order: a SKU's next event is published only once JetStream
/// has stored the one before (publishing all and awaiting the acks afterwards broke order when
/// one failed and later ones were stored: the retry then published it after them). Different
/// SKUs go out together, and a SKU waiting for its ack holds up no other: each SKU has its own
/// queue, and an ack publishes the next event of its SKU. After a failure nothing new is
/// published and what is in flight is awaited, so a SKU never has an event stored after one of
/// its own that failed. Returns which rows JetStream stored, and the first failure.
async fn publish_in_order(
    js: &jetstream::Context,
    subjects: &Subjects,
    rows: &[db::events::OutboxRow],
) -> (Vec<bool>, Option<anyhow::Error>) {
    let keys: Vec<String> = rows.iter().map(order_key).collect();
    // Each SKU's rows in order; the SKUs in the order they first appear.
    let mut first_seen: Vec<&str> = Vec::new();
    let mut queues: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        queues
            .entry(key.as_str())
            .or_insert_with(|| {
                first_seen.push(key.as_str());
                VecDeque::new()
            })
            .push_back(i);
    }
    let mut stored = vec![false; rows.len()];
    let mut failure: Option<anyhow::Error> = None;
    let mut in_flight = FuturesUnordered::new();
    for key in first_seen {
        let Some(i) = queues.get_mut(key).and_then(VecDeque::pop_front) else {
            continue;
        };
        match publish_row(js, subjects, &rows[i]).await {
            Ok(ack) => in_flight.push(tagged(i, ack)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    while let Some((i, acked)) = in_flight.next().await {
        if let Err(e) = acked {
            failure.get_or_insert(e.into());
            continue;
        }
        stored[i] = true;
        if failure.is_some() {
            continue;
        }
        let next = queues
            .get_mut(keys[i].as_str())
            .and_then(VecDeque::pop_front);
        if let Some(j) = next {
            match publish_row(js, subjects, &rows[j]).await {
                Ok(ack) => in_flight.push(tagged(j, ack)),
                Err(e) => failure = Some(e),
            }
        }
    }
    (stored, failure)
}

/// A row's ack, with the row's index (one future type for every row).
async fn tagged(
    i: usize,
    ack: jetstream::context::PublishAckFuture,
) -> (
    usize,
    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) {
    (i, ack.await)
}

/// Sends one outbox row to JetStream with its event id in the body and as `Nats-Msg-Id`;
/// returns the future of its ack.
async fn publish_row(
    js: &jetstream::Context,
    subjects: &Subjects,
    r: &db::events::OutboxRow,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let id = event_id(&r.subject, r.id);
    let mut payload = r.payload.clone();
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("event_id".into(), serde_json::Value::String(id.clone()));
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    Ok(js
        .publish_with_headers(
            format!("{}.{}", subjects.prefix, r.subject),
            headers,
            serde_json::to_vec(&payload)?.into(),
        )
        .await?)
}

/// The SKUs of the level changes among `rows`, sorted and once each. Taken from the rows in
/// hand: reading them back from the outbox by id cost the relay 20 ms a batch under load.
fn changed_skus(rows: &[db::events::OutboxRow]) -> Vec<&str> {
    let mut skus: Vec<&str> = rows
        .iter()
        .filter(|r| r.subject.starts_with("changes."))
        .filter_map(|r| r.payload.get("sku").and_then(serde_json::Value::as_str))
        .collect();
    skus.sort_unstable();
    skus.dedup();
    skus
}

/// Events of one SKU must leave in order; the SKU of an event is in its payload (an event
/// without one is ordered with its subject).
fn order_key(r: &db::events::OutboxRow) -> String {
    match r.payload.get("sku").and_then(|s| s.as_str()) {
        Some(sku) => format!("sku:{sku}"),
        None => format!("subject:{}", r.subject),
    }
}

/// Background job: publishes events as they are committed (woken by this process's writers,
/// polling for the others'), and deletes the rows both it and the cache sync are past.
pub async fn run_relay(
    pool: PgPool,
    js: jetstream::Context,
    subjects: Subjects,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut last_cleanup = Instant::now();
    // Where both readers were, sampled at each cleanup: (when, outbox id).
    let mut passed: VecDeque<(Instant, i64)> = VecDeque::new();
    loop {
        match relay_once(&pool, &js, &subjects, Finish::MarkSent).await {
            Ok(n) if n as i64 == BATCH => {
                crate::jobs::succeeded();
                continue;
            }
            Ok(_) => {
                crate::jobs::succeeded();
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                METRICS.events_publish_failures.inc();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; events stay queued");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if let Err(e) = crate::events::channel_feed::catch_up(&pool, &js, &subjects).await {
            METRICS.events_publish_failures.inc();
            tracing::warn!(error = %e, "channel feed failed; its SKUs stay marked");
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if last_cleanup.elapsed() > CLEANUP_EVERY {
            last_cleanup = Instant::now();
            if let Err(e) = cleanup_step(&pool, &mut passed).await {
                tracing::warn!(error = %e, "outbox cleanup failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake_signal().notified() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
    }
    // Publish what the last transactions committed before stopping.
    if let Err(e) = relay_once(&pool, &js, &subjects, Finish::MarkSent).await {
        tracing::warn!(error = %e, "final outbox relay failed; the next daemon publishes the rest");
    }
    if let Err(e) = crate::events::channel_feed::catch_up(&pool, &js, &subjects).await {
        tracing::warn!(error = %e, "final channel feed run failed; the next daemon publishes the rest");
    }
}

#[cfg(test)]
mod tests {
    use super::changed_skus;
    use crate::db::events::OutboxRow;
    use serde_json::json;

    fn row(id: i64, subject: &str, payload: serde_json::Value) -> OutboxRow {
        OutboxRow {
            id,
            subject: subject.into(),
            payload,
        }
    }

    #[test]
    fn the_feed_is_told_the_skus_of_level_changes_only_once_each() {
        let rows = [
            row(1, "changes.S1", json!({"sku": "B"})),
            row(2, "alerts.low_stock", json!({"sku": "Z"})),
            row(3, "changes.S2", json!({"sku": "A"})),
            row(4, "changes.S1", json!({"sku": "B"})),
            row(5, "changes.S1", json!({"sku": 7})),
            row(6, "changes.S1", json!({})),
        ];
        assert_eq!(changed_skus(&rows), ["A", "B"]);
        assert!(changed_skus(&[]).is_empty());
    }
}
