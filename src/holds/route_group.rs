//! Group commit for routes: the routes that arrive together are decided, held and committed
//! in one transaction, each still answered on its own.
//!
//! A route taken alone is about twenty statements (its candidates, its capacity slot, the
//! order-id lock, the reservation, the level lock and update, the events, the stored answer,
//! the commit), each a round trip that wakes a PostgreSQL backend: on two cores that, not the
//! work, bounds routes per second. Here the routes queued while a group commits (one queue per
//! channel) go through about fifteen statements *together*:
//!
//! 1. lock their order ids, and replay those routed before;
//! 2. read the candidates once, for every SKU of the group;
//! 3. decide each route in arrival order, as if the ones before it were already held
//!    (`domain::routing::group::Taken`);
//! 4. lock the levels the routes chose, in (location, SKU) order, and the chosen locations'
//!    day counters; admit each route, in arrival order, only while everything it takes is
//!    still there under those locks (`domain::routing::group::admit`);
//! 5. write the admitted routes set-based (reservations, lines, levels, events, answers,
//!    assignments, day counts), commit once, and make the levels visible.
//!
//! A route that lost a race in step 4 (another writer took the stock or the slot between the
//! read and the lock) is decided again in the next group, as a route alone would be; so is an
//! order no location could serve, decided after such a route, and the second copy of an order
//! id sent twice in one group (it then replays the first's answer). If a group's transaction
//! fails, its routes are taken again one by one, so one bad request never fails the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::cache::StockCache;
use crate::commit;
use crate::db;
use crate::directory::Directory;
use crate::domain::availability::available;
use crate::domain::routing::group::{admit, Taken};
use crate::domain::routing::{Assignment, RouteOutcome};
use crate::events;

use super::queue::{self, GroupError, Queues};
use super::routing::{self, Order, RouteError, Routed, ATTEMPTS};
use super::takes::{self, Take};

/// Most routes one transaction takes (the rest wait for the next).
const MAX_GROUP: usize = 128;

struct Pending {
    order: Order,
    expires_at: DateTime<Utc>,
    /// Groups that decided it and then lost a race for what they chose.
    attempts: usize,
    answer: oneshot::Sender<Result<Routed, RouteError>>,
}

/// The route queues of one daemon, one per channel (`None`: routes outside any channel).
#[derive(Clone)]
pub struct RouteQueues {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    cache: Arc<StockCache>,
    directory: Directory,
    queues: Arc<Queues<Option<String>, Pending>>,
}

impl RouteQueues {
    pub fn new(pool: PgPool, cache: Arc<StockCache>, directory: Directory) -> Self {
        RouteQueues {
            inner: Arc::new(Inner {
                pool,
                cache,
                directory,
                queues: Arc::new(Queues::new()),
            }),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// Routes an order and holds its stock, with the other routes queued on its channel.
    pub(crate) async fn route(
        &self,
        order: Order,
        expires_at: DateTime<Utc>,
    ) -> Result<Routed, RouteError> {
        let (tx, rx) = oneshot::channel();
        let key = order.channel.clone();
        let pending = Pending {
            order,
            expires_at,
            attempts: 0,
            answer: tx,
        };
        let inner = Arc::clone(&self.inner);
        self.inner
            .queues
            .push(key, pending, MAX_GROUP, move |key, group| {
                let inner = Arc::clone(&inner);
                async move { run(&inner, key, group).await }
            });
        queue::answer(rx)
            .await
            .unwrap_or(Err(RouteError::Db(sqlx::Error::PoolTimedOut)))
    }
}

/// What a group answers one route.
enum Answer {
    Done(Routed),
    /// Decide it again, in the next group.
    Again,
}

async fn run(inner: &Inner, key: Option<String>, group: Vec<Pending>) {
    // A caller that gave up was told the route failed: taking it later would hold stock
    // nobody knows about.
    let group: Vec<Pending> = group
        .into_iter()
        .filter(|p| !p.answer.is_closed())
        .collect();
    if group.is_empty() {
        return;
    }
    crate::metrics::observe(crate::metrics::ROUTE_GROUP_SIZE, group.len() as f64);
    match apply(inner, key.as_deref(), &group).await {
        Ok(answers) => {
            let mut again = Vec::new();
            for (mut p, a) in group.into_iter().zip(answers) {
                match a {
                    Answer::Done(routed) => {
                        let _ = p.answer.send(Ok(routed));
                    }
                    Answer::Again => {
                        p.attempts += 1;
                        if p.attempts >= ATTEMPTS {
                            let _ = p.answer.send(Err(RouteError::Contended));
                        } else {
                            again.push(p);
                        }
                    }
                }
            }
            if !again.is_empty() {
                inner.queues.requeue(&key, again);
            }
        }
        Err(e) if !e.one_by_one() => {
            tracing::warn!(error = %e, routes = group.len(), "group of routes failed; answering each unavailable");
            for p in group {
                let _ = p
                    .answer
                    .send(Err(RouteError::Db(sqlx::Error::PoolTimedOut)));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, routes = group.len(), "group of routes failed; taking them one by one");
            for p in group {
                if p.answer.is_closed() {
                    continue;
                }
                let routed = routing::route_single(
                    &inner.pool,
                    &inner.cache,
                    &inner.directory,
                    &p.order,
                    p.expires_at,
                )
                .await;
                let _ = p.answer.send(routed);
            }
        }
    }
}

/// What step 3 decided for one route of the group.
enum Decided {
    Replay(Value),
    NoOption(RouteOutcome),
    Chosen(RouteOutcome),
    Again,
}

/// One transaction for the whole group: the answers in arrival order.
async fn apply(
    inner: &Inner,
    channel: Option<&str>,
    group: &[Pending],
) -> Result<Vec<Answer>, GroupError> {
    let mut ids: Vec<&str> = group.iter().map(|p| p.order.order_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut skus: Vec<String> = group
        .iter()
        .flat_map(|p| p.order.lines.iter().map(|l| l.sku.clone()))
        .collect();
    skus.sort_unstable();
    skus.dedup();
    let mut tx = inner.pool.begin().await?;
    db::orders::lock_order_ids(&mut tx, &ids).await?;
    let previous = db::orders::responses(&mut tx, &ids).await?;
    let truth = routing::read_truth(&mut tx, &skus, channel).await?;
    let locations = inner.directory.snapshot();

    let mut taken = Taken::default();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut decided: Vec<Decided> = group
        .iter()
        .map(|p| {
            let id = p.order.order_id.as_str();
            if !seen.insert(id) {
                return Decided::Again;
            }
            if let Some(answer) = previous.get(id) {
                return Decided::Replay(answer.clone());
            }
            let candidates = routing::candidates(&truth, &locations, &p.order.lines, &taken);
            let outcome = routing::decide(&p.order, &candidates);
            if outcome.assignments.is_empty() {
                Decided::NoOption(outcome)
            } else {
                taken.add(&outcome.assignments);
                Decided::Chosen(outcome)
            }
        })
        .collect();

    let mut pairs: Vec<(&str, &str)> = decided
        .iter()
        .filter_map(|d| match d {
            Decided::Chosen(o) => Some(o),
            _ => None,
        })
        .flat_map(|o| {
            o.assignments.iter().flat_map(|a| {
                a.lines
                    .iter()
                    .map(|l| (a.location_id.as_str(), l.sku.as_str()))
            })
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let (mut days, mut terms) = (HashMap::new(), db::events::EventTerms::default());
    if !pairs.is_empty() {
        let (locs, lock_skus): (Vec<String>, Vec<String>) = pairs
            .iter()
            .map(|&(l, s)| (l.to_owned(), s.to_owned()))
            .unzip();
        let locked = db::levels::lock(&mut tx, &locs, &lock_skus).await?;
        let mut loc_ids: Vec<&str> = pairs.iter().map(|p| p.0).collect();
        loc_ids.dedup();
        // After the level locks, in a snapshot of their own: a safety stock raised while the
        // group waited for them counts, as it does for a hold.
        let mut sku_ids: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        sku_ids.sort_unstable();
        sku_ids.dedup();
        terms = db::events::terms(&mut tx, &loc_ids, &sku_ids).await?;
        days = db::orders::lock_days(&mut tx, &loc_ids).await?;
        let locked: HashMap<(&str, &str), &db::levels::LevelRow> = locked
            .iter()
            .map(|l| ((l.location_id.as_str(), l.sku.as_str()), l))
            .collect();
        let level = |loc: &str, sku: &str| locked.get(&(loc, sku)).copied();
        let chosen: Vec<&[Assignment]> = decided
            .iter()
            .filter_map(|d| match d {
                Decided::Chosen(o) => Some(o.assignments.as_slice()),
                _ => None,
            })
            .collect();
        let admitted = admit(
            &chosen,
            |loc, sku, more| match (level(loc, sku), terms.locations.get(loc)) {
                (Some(l), Some(t)) => {
                    let a = available(l.on_hand, l.reserved.saturating_add(more), t.safety_stock);
                    truth.channel_available(sku, a)
                }
                _ => 0,
            },
            // An unregistered location has no slot.
            |loc| days.get(loc).map_or(Some(0), |d| d.1),
        );
        let mut admitted = admitted.into_iter();
        let mut lost = false;
        for d in &mut decided {
            match d {
                Decided::Chosen(_) if !admitted.next().unwrap_or(false) => {
                    lost = true;
                    *d = Decided::Again;
                }
                // It may have been refused stock a route that then lost its race held in
                // the decisions.
                Decided::NoOption(_) if lost => *d = Decided::Again,
                _ => {}
            }
        }
    }

    let written = write(&mut tx, group, &decided, &days, &terms).await?;
    if written.changed.is_empty() {
        tx.rollback().await?;
    } else {
        commit::commit(tx, Some(&inner.cache), &written.changed).await?;
    }
    let mut bodies = written.bodies.into_iter();
    Ok(decided
        .into_iter()
        .map(|d| match d {
            Decided::Replay(v) => Answer::Done(Routed::Replay(v)),
            Decided::NoOption(o) => Answer::Done(Routed::NoOption(o)),
            Decided::Chosen(_) => match bodies.next() {
                Some(body) => Answer::Done(Routed::Done(body)),
                None => Answer::Again,
            },
            Decided::Again => Answer::Again,
        })
        .collect())
}

/// What the group wrote: the levels after, and the answers of its routes, in arrival order.
struct Written {
    changed: Vec<db::levels::LevelRow>,
    bodies: Vec<Value>,
}

/// Writes the admitted routes (`Decided::Chosen`) set-based, in the caller's transaction.
async fn write(
    tx: &mut sqlx::PgConnection,
    group: &[Pending],
    decided: &[Decided],
    days: &HashMap<String, (NaiveDate, Option<i64>)>,
    terms: &db::events::EventTerms,
) -> Result<Written, GroupError> {
    let routes: Vec<(&Pending, &RouteOutcome)> = group
        .iter()
        .zip(decided)
        .filter_map(|(p, d)| match d {
            Decided::Chosen(o) => Some((p, o)),
            _ => None,
        })
        .collect();
    if routes.is_empty() {
        return Ok(Written {
            changed: Vec::new(),
            bodies: Vec::new(),
        });
    }
    // One hold per assignment.
    let holds: Vec<Vec<(String, DateTime<Utc>)>> = routes
        .iter()
        .map(|(p, o)| {
            o.assignments
                .iter()
                .map(|_| {
                    (
                        format!("ord-{}", uuid::Uuid::new_v4().simple()),
                        p.expires_at,
                    )
                })
                .collect()
        })
        .collect();
    let (mut r_locs, mut r_ids, mut r_expires, mut a_orders, mut r_days) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut takes = Vec::new();
    for ((p, o), hs) in routes.iter().zip(&holds) {
        for (a, (id, until)) in o.assignments.iter().zip(hs) {
            r_locs.push(a.location_id.as_str());
            r_ids.push(id.as_str());
            r_expires.push(*until);
            a_orders.push(p.order.order_id.as_str());
            r_days.push(
                days.get(&a.location_id)
                    .map(|d| d.0)
                    .ok_or(GroupError::Raced)?,
            );
            takes.extend(a.lines.iter().map(|l| Take {
                reservation_id: id,
                location_id: &a.location_id,
                sku: &l.sku,
                quantity: l.quantity,
            }));
        }
    }
    let r_orders: Vec<Option<&str>> = a_orders.iter().copied().map(Some).collect();
    let inserted =
        db::reservations::insert_many(tx, &r_locs, &r_ids, &r_expires, &r_orders).await?;
    if inserted.len() != r_ids.len() {
        return Err(GroupError::Raced);
    }
    let (changed, changes) = takes::write(tx, &takes).await?;
    // After every level lock of the transaction: recording takes per-SKU alert locks.
    events::record_with_terms(tx, &changes, terms).await?;
    let bodies: Vec<Value> = routes
        .iter()
        .zip(&holds)
        .map(|((p, o), hs)| routing::response(&p.order, o, hs, false))
        .collect();
    let order_ids: Vec<&str> = routes
        .iter()
        .map(|(p, _)| p.order.order_id.as_str())
        .collect();
    let stored = db::orders::insert_routed(
        tx,
        &db::orders::RoutedRows {
            order_ids: &order_ids,
            responses: &bodies,
            assignment_orders: &a_orders,
            assignment_locations: &r_locs,
            assignment_reservations: &r_ids,
            assignment_days: &r_days,
        },
    )
    .await?;
    if stored.len() != order_ids.len() {
        return Err(GroupError::Raced);
    }
    Ok(Written { changed, bodies })
}
