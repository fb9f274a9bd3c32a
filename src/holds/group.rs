//! Group commit for holds: holds on the same levels that arrive together are applied many per
//! transaction, each still answered on its own.
//!
//! A flash sale sends many holds at one hot (location, SKU). Taken one per transaction they
//! queue on its row lock and pay a commit each. Here they queue in memory instead (one queue
//! per key: location, SKUs, channel), and one task per busy key drains its queue: it locks the
//! levels once, decides every queued hold in arrival order against the locked levels (as if
//! taken one after another), writes the accepted ones set-based and commits once. While a
//! group commits, the next one gathers, so the group grows with the load and a lone hold goes
//! through at once. In the spirit of AliSQL's Inventory Hint (a statement queue per hot row,
//! commit on success).
//!
//! If a group's transaction fails (a deadlock, an id taken meanwhile by another path, a broken
//! row), its holds are taken again one by one, so one bad request never fails the others
//! (unless PostgreSQL is unreachable or timed out: see `GroupError::one_by_one`).
//! The group runs in a task of its own: a caller that gives up (its client went away, its
//! deadline passed) leaves the group whole, committed or rolled back, never half done.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::cache::StockCache;
use crate::channels::HoldPool;
use crate::commit;
use crate::db;
use crate::domain::availability::available;
use crate::domain::reservation::{plan_group, Decision, Status};
use crate::domain::routing::OrderLine;
use crate::events;

use super::queue::{self, GroupError, Queues};
use super::reservations::{view, Created, LineView, NewHold, ReservationView};
use super::takes::{self, Take};

/// Most holds one transaction takes (the rest wait for the next).
const MAX_GROUP: usize = 512;

/// Holds on the same levels, through the same channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    location_id: String,
    /// Sorted: the lock order.
    skus: Vec<String>,
    channel: Option<String>,
}

/// A hold, owned, for the queue.
struct Hold {
    reservation_id: String,
    lines: Vec<OrderLine>,
    expires_at: DateTime<Utc>,
    order_id: Option<String>,
}

struct Pending {
    hold: Hold,
    answer: oneshot::Sender<Result<Created, sqlx::Error>>,
}

/// The hold queues of one daemon, one per busy key.
#[derive(Clone)]
pub struct HoldQueues {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    cache: Arc<StockCache>,
    queues: Arc<Queues<Key, Pending>>,
}

impl HoldQueues {
    pub fn new(pool: PgPool, cache: Arc<StockCache>) -> Self {
        HoldQueues {
            inner: Arc::new(Inner {
                pool,
                cache,
                queues: Arc::new(Queues::new()),
            }),
        }
    }

    /// Takes an ordinary hold (not a preorder) with the others queued on its levels.
    pub async fn hold(&self, h: &NewHold<'_>) -> Result<Created, sqlx::Error> {
        let mut skus: Vec<String> = h.lines.iter().map(|l| l.sku.clone()).collect();
        skus.sort_unstable();
        let key = Key {
            location_id: h.location_id.to_owned(),
            skus,
            channel: h.channel.map(str::to_owned),
        };
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            hold: Hold {
                reservation_id: h.reservation_id.to_owned(),
                lines: h.lines.to_vec(),
                expires_at: h.expires_at,
                order_id: h.order_id.map(str::to_owned),
            },
            answer: tx,
        };
        let inner = Arc::clone(&self.inner);
        self.inner
            .queues
            .push(key, pending, MAX_GROUP, move |key, batch| {
                let inner = Arc::clone(&inner);
                async move { run(&inner, &key, batch).await }
            });
        queue::answer(rx)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }
}

async fn run(inner: &Inner, key: &Key, batch: Vec<Pending>) {
    // A caller that gave up (its request timed out: a 503 while PostgreSQL was down) was told
    // the hold failed: taking it later would hold stock nobody knows about.
    let batch: Vec<Pending> = batch
        .into_iter()
        .filter(|p| !p.answer.is_closed())
        .collect();
    if batch.is_empty() {
        return;
    }
    let holds: Vec<&Hold> = batch.iter().map(|p| &p.hold).collect();
    crate::metrics::observe(crate::metrics::HOLD_GROUP_SIZE, holds.len() as f64);
    match apply(inner, key, &holds).await {
        Ok(answers) => {
            for (p, a) in batch.into_iter().zip(answers) {
                let _ = p.answer.send(Ok(a));
            }
        }
        Err(e) if !e.one_by_one() => {
            tracing::warn!(error = %e, holds = batch.len(), location_id = %key.location_id,
                "group of holds failed; answering each unavailable");
            for p in batch {
                let _ = p.answer.send(Err(sqlx::Error::PoolTimedOut));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, holds = batch.len(), location_id = %key.location_id,
                "group of holds failed; taking them one by one");
            for p in batch {
                if p.answer.is_closed() {
                    continue;
                }
                let h = &p.hold;
                let one = NewHold {
                    reservation_id: &h.reservation_id,
                    location_id: &key.location_id,
                    lines: &h.lines,
                    expires_at: h.expires_at,
                    order_id: h.order_id.as_deref(),
                    channel: key.channel.as_deref(),
                    preorder: false,
                };
                let a = super::reservations::create_single(&inner.pool, &inner.cache, &one).await;
                let _ = p.answer.send(a);
            }
        }
    }
}

/// One transaction for the whole group: the answers in arrival order.
async fn apply(inner: &Inner, key: &Key, holds: &[&Hold]) -> Result<Vec<Created>, GroupError> {
    let loc = key.location_id.as_str();
    let skus: Vec<&str> = key.skus.iter().map(String::as_str).collect();
    let ids: Vec<&str> = holds.iter().map(|h| h.reservation_id.as_str()).collect();
    let mut tx = inner.pool.begin().await?;
    let existing = db::reservations::existing(&mut tx, &ids).await?;
    let channel = match key.channel.as_deref() {
        Some(c) => Some(HoldPool::load(&mut tx, c, loc, &skus).await?),
        None => None,
    };
    let levels = db::levels::lock_at(&mut tx, loc, &skus).await?;
    // After the locks, in a snapshot of its own: a safety stock raised while the group
    // waited for them counts. The same read serves the change events.
    let terms = db::events::terms(&mut tx, &[loc], &skus).await?;
    let Some(safety) = terms.locations.get(loc).map(|t| t.safety_stock) else {
        tx.rollback().await?;
        return Ok(holds.iter().map(|_| Created::UnknownLocation).collect());
    };
    let plan_input: Vec<(&str, &[OrderLine])> = holds
        .iter()
        .map(|h| (h.reservation_id.as_str(), h.lines.as_slice()))
        .collect();
    let decisions = plan_group(
        &plan_input,
        |id| existing.iter().any(|e| e == id),
        |sku, taken| {
            levels.iter().find(|l| l.sku == sku).map_or(0, |l| {
                let a = available(l.on_hand, l.reserved.saturating_add(taken), safety);
                channel.as_ref().map_or(a, |c| c.available(sku, a))
            })
        },
    );
    let taken: Vec<&Hold> = holds
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| **d == Decision::Take)
        .map(|(h, _)| *h)
        .collect();
    let mut created: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    if taken.is_empty() {
        tx.rollback().await?;
    } else {
        let t_ids: Vec<&str> = taken.iter().map(|h| h.reservation_id.as_str()).collect();
        let expires: Vec<DateTime<Utc>> = taken.iter().map(|h| h.expires_at).collect();
        let orders: Vec<Option<&str>> = taken.iter().map(|h| h.order_id.as_deref()).collect();
        let inserted = db::reservations::insert_many(
            &mut tx,
            &vec![loc; t_ids.len()],
            &t_ids,
            &expires,
            &orders,
        )
        .await?;
        if inserted.len() != taken.len() {
            return Err(GroupError::Raced);
        }
        created.extend(
            inserted
                .into_iter()
                .map(|(id, at, until)| (id, (at, until))),
        );
        let takes: Vec<Take<'_>> = taken
            .iter()
            .flat_map(|h| {
                h.lines.iter().map(|l| Take {
                    reservation_id: &h.reservation_id,
                    location_id: loc,
                    sku: &l.sku,
                    quantity: l.quantity,
                })
            })
            .collect();
        let (changed, changes) = takes::write(&mut tx, &takes).await?;
        events::record_with_terms(&mut tx, &changes, &terms).await?;
        commit::commit(tx, Some(&inner.cache), &changed).await?;
    }
    let mut answers = Vec::with_capacity(holds.len());
    for (h, d) in holds.iter().zip(decisions) {
        answers.push(match d {
            Decision::Take => match created.get(&h.reservation_id) {
                Some(&(at, until)) => Created::New(held_view(key, h, at, until)),
                None => return Err(GroupError::Raced),
            },
            Decision::Short(s) => Created::Short(s),
            Decision::Replay => Created::Replay(
                view(&inner.pool, &h.reservation_id)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?,
            ),
        });
    }
    Ok(answers)
}

/// A hold just taken, as `view` reads it back (lines in SKU order, each held in full; the
/// times as stored).
fn held_view(
    key: &Key,
    h: &Hold,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> ReservationView {
    let mut lines: Vec<LineView> = h
        .lines
        .iter()
        .map(|l| LineView {
            sku: l.sku.clone(),
            quantity: l.quantity,
            held: l.quantity,
            waiting: 0,
            supply: Vec::new(),
        })
        .collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    ReservationView {
        reservation_id: h.reservation_id.clone(),
        status: Status::Held,
        location_id: key.location_id.clone(),
        expires_at: Some(expires_at),
        order_id: h.order_id.clone(),
        created_at,
        preorder: false,
        lines,
    }
}
