//! One batch of messages: decode, dead-letter the bad, apply the good in one transaction, ack.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;

use super::deadletter;
use super::Ingest;
use crate::apply;
use crate::db;
use crate::domain::movement::{decode_message, Movement, RejectReason, Rejection};
use crate::metrics::METRICS;

struct InFlight {
    msg: jetstream::Message,
    location: Option<String>,
    sequence: u64,
    movements: Vec<(Option<usize>, Movement)>,
    rejected: Vec<Rejection>,
}

impl InFlight {
    fn decode(ingest: &Ingest, msg: jetstream::Message) -> Self {
        let sequence = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
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
            movements,
            rejected,
        }
    }

    /// Moves every movement of this message to the rejected, with the same reason.
    fn reject_all(&mut self, reason: RejectReason, message: &str) {
        let payload = body_value(&self.msg.payload);
        for (index, _) in self.movements.drain(..) {
            let body = match index {
                Some(i) => payload.get(i).cloned().unwrap_or(serde_json::Value::Null),
                None => payload.clone(),
            };
            self.rejected.push(Rejection {
                reason,
                message: message.to_owned(),
                index,
                body,
            });
        }
    }

    /// Dead-letters what was rejected, then acks (or terminates, when nothing of it was
    /// applied). Should a dead letter fail to publish, the message is redelivered instead:
    /// its applied movements are duplicates by then and change nothing.
    async fn settle(self, ingest: &Ingest) {
        let subject = self.msg.subject.to_string();
        for r in &self.rejected {
            if let Err(e) = deadletter::publish(
                &ingest.js,
                &ingest.subjects,
                self.location.as_deref(),
                &subject,
                self.sequence,
                r,
            )
            .await
            {
                tracing::warn!(error = %e, "dead letter not published; message will be redelivered");
                let _ = self
                    .msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
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
}

fn body_value(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
    })
}

/// Errors of data (class 22) or integrity (23) will fail again however often they are tried:
/// they mark a poison message, not an outage.
fn is_poison(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || (c.starts_with("23") && c != "23505")),
        _ => false,
    }
}

pub(super) async fn process(ingest: &Ingest, msgs: Vec<jetstream::Message>) {
    if msgs.is_empty() {
        return;
    }
    let started = Instant::now();
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
            Err(e) => return retry_later(batch, &e).await,
        }
    }

    let all: Vec<Movement> = batch
        .iter()
        .flat_map(|f| f.movements.iter().map(|(_, m)| m.clone()))
        .collect();
    if !all.is_empty() {
        match apply::apply_batch(&ingest.pool, &all).await {
            Ok(applied) => record(ingest, applied).await,
            Err(e) if is_poison(&e) => {
                tracing::warn!(error = %e, "batch rejected by PostgreSQL; applying message by message");
                for f in &mut batch {
                    if f.movements.is_empty() {
                        continue;
                    }
                    let own: Vec<Movement> = f.movements.iter().map(|(_, m)| m.clone()).collect();
                    match apply::apply_batch(&ingest.pool, &own).await {
                        Ok(applied) => record(ingest, applied).await,
                        Err(e) if is_poison(&e) => {
                            f.reject_all(RejectReason::RejectedByDatabase, &e.to_string())
                        }
                        Err(e) => return retry_later(batch, &e).await,
                    }
                }
            }
            Err(e) => return retry_later(batch, &e).await,
        }
    }
    METRICS.ingest_batches.inc();
    METRICS
        .ingest_batch_micros
        .add(started.elapsed().as_micros() as u64);
    for f in batch {
        f.settle(ingest).await;
    }
}

async fn record(ingest: &Ingest, applied: apply::Applied) {
    METRICS.movements_recorded.add(applied.recorded as u64);
    METRICS.movements_duplicate.add(applied.duplicates as u64);
    METRICS.movements_late.add(applied.late as u64);
    crate::commit::committed(Some(&ingest.cache), &applied.changed).await;
}

/// PostgreSQL is unreachable or overloaded: hand every message back for redelivery after a
/// pause, and pause this loop too so a down database is not hammered.
async fn retry_later(batch: Vec<InFlight>, e: &sqlx::Error) {
    METRICS.ingest_failures.inc();
    tracing::warn!(error = %e, messages = batch.len(), "movement batch not applied; will be redelivered");
    for f in batch {
        let _ = f
            .msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}
