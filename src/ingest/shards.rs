//! Several transactions in flight: movements are applied by `OMNISTOCK_INGEST_SHARDS` workers,
//! each owning the SKUs that hash to it.
//!
//! Why by SKU: every row a movement's transaction locks for its level (the level, the other
//! levels of the SKU a transfer moves stock between, the SKU's network alert state and
//! totals) belongs to its SKU, so shards never wait on each other for them, and the movements
//! of one level are applied by one worker in the order they arrived. Rows shared across SKUs
//! (a reservation with lines of several SKUs, a supply order) are locked in the one order
//! every writer uses (see `apply`), so shards can wait on each other there but never deadlock.
//!
//! A message holds movements of many SKUs: it is split into one part per shard, and settled
//! (dead letters published, then acked) only when the last of its parts has committed. Should
//! any part fail, the message is handed back whole; the parts that did commit are duplicates
//! on redelivery (`event_id` is unique in the ledger), so every movement counts once.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::batch::{apply_movements, InFlight};
use super::Ingest;
use crate::domain::movement::{Incoming, RejectReason};
use crate::metrics::{self, METRICS};

/// Most movements one shard applies in one transaction.
const MAX_PER_TRANSACTION: usize = 2_000;
/// Messages being settled (dead letters and acks) at once.
const SETTLING: usize = 256;

/// The shard of a SKU. Stable for the life of the process, which is all ordering needs: a
/// redelivery to another daemon is ordered by the ledger, not by the shard.
pub fn shard_of(sku: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sku.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// What a message's parts report back, until the last one settles it.
struct Pending {
    flight: Option<InFlight>,
    parts_left: usize,
    /// Movements refused alone: (position in the message's movements, reason, why).
    refused: Vec<(usize, RejectReason, String)>,
    /// Set when a part was not applied (PostgreSQL failed).
    failed: Option<String>,
}

/// One message's movements of one shard.
struct Part {
    message: Arc<Mutex<Pending>>,
    /// (position in the message's movements, movement).
    movements: Vec<(usize, Incoming)>,
}

/// A message ready to be settled: applied (refusals already moved to its rejected), or to be
/// handed back.
enum Settle {
    Applied(InFlight),
    HandBack(InFlight, String),
}

/// The shard workers and the task settling messages.
pub struct Shards {
    senders: Vec<mpsc::Sender<Part>>,
    settle: mpsc::Sender<Settle>,
    workers: Vec<JoinHandle<()>>,
    settler: JoinHandle<()>,
}

impl Shards {
    pub fn start(ingest: &Ingest, count: usize) -> Self {
        let count = count.max(1);
        let (settle, settle_rx) = mpsc::channel::<Settle>(SETTLING * 4);
        // Their units of work count for the ingest job (`omnistock_job_last_success_*`), and
        // they log under its span.
        let settler = tokio::spawn(
            crate::jobs::within_current_job(settle_all(ingest.clone(), settle_rx))
                .in_current_span(),
        );
        let mut senders = Vec::with_capacity(count);
        let mut workers = Vec::with_capacity(count);
        for shard in 0..count {
            // Bounded: a slow database holds the consumer back instead of letting messages
            // pile up past their ack wait.
            let (tx, rx) = mpsc::channel::<Part>(ingest.batch.max(1));
            senders.push(tx);
            workers.push(tokio::spawn(
                crate::jobs::within_current_job(work(ingest.clone(), shard, rx, settle.clone()))
                    .in_current_span(),
            ));
        }
        Shards {
            senders,
            settle,
            workers,
            settler,
        }
    }

    /// Splits a decoded message by shard and queues its parts (a message with nothing to
    /// apply is settled at once).
    ///
    /// Every movement goes to its shard, repeats included: a message is acked only once each
    /// of its own movements is committed or found committed. (Skipping a repeat of an event
    /// id queued earlier from another message acked this one before that other message's
    /// part had committed, and a part that then failed for good lost the movement.) Repeats
    /// of one SKU meet in one shard, where `apply` keeps the first; an event id reused with
    /// another SKU is settled by the ledger's unique `event_id` (the loser retries and finds
    /// it recorded).
    pub(super) async fn submit(&self, flight: InFlight) {
        let n = self.senders.len();
        let mut parts: Vec<Vec<(usize, Incoming)>> = (0..n).map(|_| Vec::new()).collect();
        for (pos, (_, m)) in flight.movements.iter().enumerate() {
            parts[shard_of(&m.sku, n)].push((
                pos,
                Incoming {
                    movement: m.clone(),
                    published_at: flight.published_at,
                },
            ));
        }
        let parts_left = parts.iter().filter(|p| !p.is_empty()).count();
        if parts_left == 0 {
            let _ = self.settle.send(Settle::Applied(flight)).await;
            return;
        }
        // Positions stay valid until the message settles: nothing else touches its movements.
        let message = Arc::new(Mutex::new(Pending {
            flight: Some(flight),
            parts_left,
            refused: Vec::new(),
            failed: None,
        }));
        for (shard, movements) in parts.into_iter().enumerate() {
            if movements.is_empty() {
                continue;
            }
            let part = Part {
                message: message.clone(),
                movements,
            };
            if let Err(mpsc::error::SendError(part)) = self.senders[shard].send(part).await {
                // The worker is gone (only at shutdown): the message is redelivered.
                finish(part, Err("ingest is stopping".into()), &self.settle).await;
            }
        }
    }

    /// Applies and settles everything queued, then stops.
    pub async fn stop(self) {
        drop(self.senders);
        for w in self.workers {
            let _ = w.await;
        }
        drop(self.settle);
        let _ = self.settler.await;
    }
}

/// One shard: takes the parts queued (up to [`MAX_PER_TRANSACTION`] movements), applies them
/// in one transaction, reports to their messages.
async fn work(
    ingest: Ingest,
    shard: usize,
    mut rx: mpsc::Receiver<Part>,
    settle: mpsc::Sender<Settle>,
) {
    while let Some(first) = rx.recv().await {
        let mut size = first.movements.len();
        let mut parts = vec![first];
        while size < MAX_PER_TRANSACTION {
            match rx.try_recv() {
                Ok(p) => {
                    size += p.movements.len();
                    parts.push(p);
                }
                Err(_) => break,
            }
        }
        let all: Vec<Incoming> = parts
            .iter()
            .flat_map(|p| p.movements.iter().map(|(_, i)| i.clone()))
            .collect();
        match apply_movements(&ingest, &all).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for part in parts {
                    let refused: Vec<(usize, RejectReason, String)> = part
                        .movements
                        .iter()
                        .zip(outcomes.by_ref())
                        .filter_map(|((pos, _), o)| o.map(|(r, why)| (*pos, r, why)))
                        .collect();
                    finish(part, Ok(refused), &settle).await;
                }
            }
            Err(e) => {
                METRICS.ingest_failures.inc();
                tracing::warn!(error = %e, shard, movements = all.len(), "movement batch not applied; its messages will be redelivered");
                for part in parts {
                    finish(part, Err(e.to_string()), &settle).await;
                }
                // A down database is not hammered.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Reports a part's outcome to its message; the last part queues the message for settling.
async fn finish(
    part: Part,
    outcome: Result<Vec<(usize, RejectReason, String)>, String>,
    settle: &mpsc::Sender<Settle>,
) {
    let ready = {
        let Ok(mut p) = part.message.lock() else {
            return;
        };
        match outcome {
            Ok(refused) => p.refused.extend(refused),
            Err(e) => {
                p.failed.get_or_insert(e);
            }
        }
        p.parts_left -= 1;
        if p.parts_left > 0 {
            None
        } else {
            p.flight.take().map(|mut flight| match p.failed.take() {
                Some(e) => Settle::HandBack(flight, e),
                None => {
                    flight.reject_each(std::mem::take(&mut p.refused));
                    Settle::Applied(flight)
                }
            })
        }
    };
    if let Some(s) = ready {
        let _ = settle.send(s).await;
    }
}

/// Settles messages as they become ready, many at once: acks are pipelined, not awaited one
/// by one.
async fn settle_all(ingest: Ingest, rx: mpsc::Receiver<Settle>) {
    tokio_stream_of(rx)
        .for_each_concurrent(SETTLING, |s| {
            let ingest = ingest.clone();
            async move {
                match s {
                    Settle::Applied(flight) => {
                        if !flight.movements.is_empty() {
                            if let Some(published) = flight.published_at {
                                // Committed by now: how long the message waited since
                                // JetStream took it (a redelivery after an outage shows it).
                                let waited = (Utc::now() - published).to_std().unwrap_or_default();
                                metrics::observe(metrics::PUBLISH_TO_COMMIT, waited);
                            }
                        }
                        flight.settle(&ingest).await;
                    }
                    Settle::HandBack(flight, e) => flight.hand_back(&ingest, &e).await,
                }
            }
        })
        .await;
}

fn tokio_stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_sku_always_lands_on_one_shard_and_all_shards_get_work() {
        let n = 4;
        let mut used = HashSet::new();
        for i in 0..1_000 {
            let sku = format!("SKU-{i}");
            let s = shard_of(&sku, n);
            assert_eq!(s, shard_of(&sku, n));
            assert!(s < n);
            used.insert(s);
        }
        assert_eq!(used.len(), n);
        assert_eq!(shard_of("anything", 0), 0);
        assert_eq!(shard_of("anything", 1), 0);
    }
}
