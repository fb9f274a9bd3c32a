//! One batch of messages: decode, dead-letter the bad, hand the good to the shards (which
//! apply them, one transaction per shard batch), ack once every part has committed.
//!
//! One bad element never takes good ones with it: validation catches what PostgreSQL would
//! refuse; a movement whose effect overflows is refused by `apply` alone; and whatever data
//! error the database still raises, the batch is bisected down to the movement it refuses
//! (see `isolate`), which alone is dead-lettered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};

use super::deadletter::{self, Origin};
use super::isolate::{is_poison, isolate};
use super::Ingest;
use crate::db;
use crate::domain::movement::{decode_message, Incoming, Movement, RejectReason, Rejection};
use crate::ingest::apply;
use crate::metrics::{self, METRICS};

pub(super) struct InFlight {
    pub(super) msg: jetstream::Message,
    location: Option<String>,
    sequence: u64,
    /// How many times JetStream has delivered this message (1 the first time).
    delivered: i64,
    /// JetStream's publish time of the message (the same on every redelivery): recorded with
    /// its movements, for the ops summary's publish-to-commit delay.
    pub(super) published_at: Option<DateTime<Utc>>,
    pub(super) movements: Vec<(Option<usize>, Movement)>,
    rejected: Vec<Rejection>,
}

impl InFlight {
    fn decode(ingest: &Ingest, msg: jetstream::Message) -> Self {
        let (sequence, delivered, published_at) = msg
            .info()
            .map(|i| (i.stream_sequence, i.delivered, to_chrono(i.published)))
            .unwrap_or((0, 1, None));
        let subject = msg.subject.to_string();
        let location = ingest.subjects.location_of(&subject).map(str::to_owned);
        let (movements, rejected) = match &location {
            Some(loc) => {
                let d = decode_message(loc, &msg.payload, Utc::now());
                (d.movements, d.rejections)
            }
            None => (
                Vec::new(),
                vec![Rejection {
                    reason: RejectReason::InvalidSubject,
                    message: format!("subject {subject:?} is not <prefix>.movements.<location_id>"),
                    index: None,
                    body: body_value(&msg.payload),
                }],
            ),
        };
        InFlight {
            msg,
            location,
            sequence,
            delivered,
            published_at,
            movements,
            rejected,
        }
    }

    /// The original body of the movement at `index` (the whole message for `None`).
    fn body_of(&self, index: Option<usize>) -> serde_json::Value {
        let payload = body_value(&self.msg.payload);
        match index {
            Some(i) => payload.get(i).cloned().unwrap_or(serde_json::Value::Null),
            None => payload,
        }
    }

    /// Moves every movement of this message to the rejected, with the same reason.
    fn reject_all(&mut self, reason: RejectReason, message: &str) {
        let positions: Vec<usize> = (0..self.movements.len()).collect();
        self.reject(&positions, reason, |_| message.to_owned());
    }

    /// Moves the movements at `positions` (in `self.movements`) to the rejected.
    fn reject(
        &mut self,
        positions: &[usize],
        reason: RejectReason,
        message: impl Fn(usize) -> String,
    ) {
        let mut kept = Vec::with_capacity(self.movements.len());
        for (pos, (index, m)) in std::mem::take(&mut self.movements).into_iter().enumerate() {
            if positions.contains(&pos) {
                let body = self.body_of(index);
                self.rejected.push(Rejection {
                    reason,
                    message: message(pos),
                    index,
                    body,
                });
            } else {
                kept.push((index, m));
            }
        }
        self.movements = kept;
    }

    /// Moves each refused movement (position in `self.movements`, reason, why) to the
    /// rejected, in one pass: positions stay those of the movements as they were.
    pub(super) fn reject_each(&mut self, refused: Vec<(usize, RejectReason, String)>) {
        if refused.is_empty() {
            return;
        }
        let mut by_pos: std::collections::HashMap<usize, (RejectReason, String)> = refused
            .into_iter()
            .map(|(pos, reason, why)| (pos, (reason, why)))
            .collect();
        let mut kept = Vec::with_capacity(self.movements.len());
        for (pos, (index, m)) in std::mem::take(&mut self.movements).into_iter().enumerate() {
            match by_pos.remove(&pos) {
                Some((reason, message)) => {
                    let body = self.body_of(index);
                    self.rejected.push(Rejection {
                        reason,
                        message,
                        index,
                        body,
                    });
                }
                None => kept.push((index, m)),
            }
        }
        self.movements = kept;
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            location: self.location.as_deref(),
            subject: &self.msg.subject,
            stream_sequence: self.sequence,
            payload: &self.msg.payload,
        }
    }

    /// Whether this is the last delivery JetStream will make.
    fn last_delivery(&self, ingest: &Ingest) -> bool {
        ingest.max_deliver > 0 && self.delivered >= ingest.max_deliver
    }

    /// Dead-letters what was rejected, then acks (or terminates, when nothing of it was
    /// applied). Should a dead letter fail to publish, the message is redelivered instead:
    /// its applied movements are duplicates by then and change nothing. On the last delivery
    /// it is terminated instead, loudly (see `give_up`).
    pub(super) async fn settle(self, ingest: &Ingest) {
        for r in &self.rejected {
            if let Err(e) =
                deadletter::publish(&ingest.js, &ingest.subjects, &self.origin(), r).await
            {
                if self.last_delivery(ingest) {
                    return self
                        .give_up(ingest, "deadletter_failed", &e.to_string())
                        .await;
                }
                tracing::warn!(error = %e, delivered = self.delivered, "dead letter not published; message will be redelivered");
                let _ = self
                    .msg
                    .ack_with(AckKind::Nak(Some(nak_delay(self.delivered))))
                    .await;
                return;
            }
        }
        let kind = if self.movements.is_empty() && !self.rejected.is_empty() {
            AckKind::Term
        } else {
            AckKind::Ack
        };
        if let Err(e) = self.msg.ack_with(kind).await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
        }
    }

    /// Its movements were not all applied (PostgreSQL failed): redelivered after a pause, or
    /// given up on its last delivery.
    pub(super) async fn hand_back(self, ingest: &Ingest, error: &str) {
        if self.last_delivery(ingest) {
            return self.give_up(ingest, "not_applied", error).await;
        }
        let delay = nak_delay(self.delivered);
        let _ = self.msg.ack_with(AckKind::Nak(Some(delay))).await;
    }

    /// The final way out of a message JetStream will not deliver again: it is kept as a dead
    /// letter (reason `delivery_limit`, the whole message as body) when NATS takes it, and
    /// terminated either way, with an error log and `omnistock_ingest_given_up_total{reason}`.
    async fn give_up(self, ingest: &Ingest, why: &'static str, error: &str) {
        METRICS.ingest_given_up.inc(why);
        tracing::error!(
            subject = %self.msg.subject,
            stream_sequence = self.sequence,
            delivered = self.delivered,
            reason = why,
            error,
            "movement message reached its delivery limit and is terminated; replay it from the dead-letter or movements stream"
        );
        let letter = Rejection {
            reason: RejectReason::DeliveryLimit,
            message: format!(
                "not applied after {} deliveries ({why}): {error}",
                self.delivered
            ),
            index: None,
            body: body_value(&self.msg.payload),
        };
        if let Err(e) =
            deadletter::publish(&ingest.js, &ingest.subjects, &self.origin(), &letter).await
        {
            tracing::error!(error = %e, stream_sequence = self.sequence, "the message could not be dead-lettered either; it stays only in the movements stream");
        }
        if let Err(e) = self.msg.ack_with(AckKind::Term).await {
            tracing::warn!(error = %e, "terminating the message failed");
        }
    }
}

/// How long a message handed back waits before its next delivery: doubling from 1 s up to
/// 10 s. The cap bounds how long ingest lags once PostgreSQL is back; `max_deliver` (default
/// 200: about 33 minutes of deliveries) bounds how long an outage can be ridden out.
pub fn nak_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 5) - 1;
    Duration::from_secs((1u64 << exp).min(10))
}

/// The JetStream publish time as chrono's; `None` past chrono's range (not a time NATS gives).
fn to_chrono(t: time::OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
}

fn body_value(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
    })
}

/// Decodes a batch of messages, dead-letters what cannot be applied (bad elements, unknown
/// locations), and hands the rest to the shards (see `shards`). Returns once every movement
/// is queued, not applied: the shards commit, and each message is settled once all its parts
/// have committed.
pub(super) async fn dispatch(
    ingest: &Ingest,
    shards: &super::shards::Shards,
    msgs: Vec<jetstream::Message>,
) {
    if msgs.is_empty() {
        return;
    }
    let mut batch: Vec<InFlight> = msgs
        .into_iter()
        .map(|m| InFlight::decode(ingest, m))
        .collect();

    // Unknown locations are rejected up front: movements need a location to belong to.
    let locations: Vec<String> = batch
        .iter()
        .flat_map(|f| f.movements.iter().map(|(_, m)| m.location_id.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !locations.is_empty() {
        match db::locations::known_ids(&ingest.pool, &locations).await {
            Ok(known) => {
                for f in &mut batch {
                    if f.location.as_ref().is_some_and(|l| !known.contains(l))
                        && !f.movements.is_empty()
                    {
                        let msg = format!(
                            "location {:?} is not registered",
                            f.location.as_deref().unwrap_or_default()
                        );
                        f.reject_all(RejectReason::UnknownLocation, &msg);
                    }
                }
            }
            Err(e) => return retry_later(ingest, batch, &e).await,
        }
    }
    for f in batch {
        shards.submit(f).await;
    }
}

fn record(applied: &apply::Applied) {
    METRICS.movements_recorded.add(applied.recorded as u64);
    METRICS.movements_duplicate.add(applied.duplicates as u64);
    METRICS.movements_late.add(applied.late as u64);
}

/// Applies the movements of one shard's parts in one transaction (bisected on poison, see
/// `isolate`): per movement, `Ok(None)` when applied or a duplicate, `Ok(Some(refusal))` when
/// refused alone, and `Err` for an outage (the whole set is handed back).
pub(super) async fn apply_movements(
    ingest: &Ingest,
    all: &[Incoming],
) -> Result<Vec<Option<(RejectReason, String)>>, sqlx::Error> {
    let started = Instant::now();
    let mut out: Vec<Option<(RejectReason, String)>> = vec![None; all.len()];
    let pool = &ingest.pool;
    let isolated = isolate(
        all,
        |part| apply::apply_batch(pool, Some(&ingest.cache), part),
        is_poison,
    )
    .await?;
    for (offset, e) in isolated.poisoned {
        tracing::warn!(error = %e, "movement refused by PostgreSQL; dead-lettering it alone");
        out[offset] = Some((RejectReason::RejectedByDatabase, e.to_string()));
    }
    for (offset, applied) in isolated.applied {
        record(&applied);
        for (i, why) in applied.rejected {
            out[offset + i] = Some((RejectReason::QuantityOverflow, why));
        }
    }
    METRICS.ingest_batches.inc();
    metrics::observe(metrics::INGEST_BATCH_SECONDS, started.elapsed());
    metrics::observe(metrics::INGEST_BATCH_SIZE, all.len() as f64);
    crate::jobs::succeeded();
    Ok(out)
}

/// PostgreSQL is unreachable or overloaded: hand every message back for redelivery after a
/// pause, and pause this loop too so a down database is not hammered. A message on its last
/// delivery is given up instead (dead-lettered whole and terminated, loudly).
async fn retry_later(ingest: &Ingest, batch: Vec<InFlight>, e: &sqlx::Error) {
    METRICS.ingest_failures.inc();
    tracing::warn!(error = %e, messages = batch.len(), "movement batch not applied; will be redelivered");
    for f in batch {
        f.hand_back(ingest, &e.to_string()).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_time_converts_to_the_same_instant() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_764_590_400_123_456_789)
            .expect("in range");
        let c = to_chrono(t).expect("in range");
        assert_eq!(c.timestamp(), 1_764_590_400);
        assert_eq!(c.timestamp_subsec_nanos(), 123_456_789);
        let offset = t.to_offset(time::UtcOffset::from_hms(8, 0, 0).expect("offset"));
        assert_eq!(
            to_chrono(offset),
            Some(c),
            "the offset does not move the instant"
        );
    }

    #[test]
    fn redelivery_backs_off_to_ten_seconds() {
        assert_eq!(nak_delay(1), Duration::from_secs(1));
        assert_eq!(nak_delay(2), Duration::from_secs(2));
        assert_eq!(nak_delay(4), Duration::from_secs(8));
        assert_eq!(nak_delay(5), Duration::from_secs(10));
        assert_eq!(nak_delay(i64::MAX), Duration::from_secs(10));
        assert_eq!(nak_delay(i64::MIN), Duration::from_secs(1));
        // The default delivery limit rides out about half an hour of outage.
        let window: u64 = (1..200).map(|d| nak_delay(d).as_secs()).sum();
        assert!((1_800..2_400).contains(&window), "{window} s");
    }
}
