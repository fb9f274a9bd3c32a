//! Order routing with holds: decide where an order ships from (or is picked up), and hold the
//! stock there in the same transaction, so the answer is a promise, not a guess.
//!
//! The decision itself is `domain::routing::route`, pure and benchmarked; this module feeds it
//! the current truth (levels from PostgreSQL, locations from the in-memory directory, today's
//! routed orders) and holds what it chose. If a concurrent order took the stock (or the last
//! capacity) between the decision and the hold, it decides again on fresh data.
//!
//! Routes are group-committed (`super::route_group`); this module has what a group shares with
//! a route taken alone (`route_single`, a group's fallback): the truth read, the candidates,
//! the decision and the answer.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::cache::StockCache;
use crate::channels::ChannelPool;
use crate::db;
use crate::db::levels::LevelRow;
use crate::directory::Directory;
use crate::domain::availability::available;
use crate::domain::location::Location;
use crate::domain::reservation;
use crate::domain::routing::group::Taken;
use crate::domain::routing::{self, Candidate, Fulfilment, OrderLine, RouteOutcome, RouteRequest};
use crate::holds::reservations::{hold_in, NewHold, NotHeld};
use crate::holds::route_group::RouteQueues;
use crate::metrics;

/// How often a route is decided again after losing a race for its stock.
pub(crate) const ATTEMPTS: usize = 10;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub lat: f64,
    pub lon: f64,
}

/// An order to route (lines already validated and merged).
#[derive(Debug, Clone)]
pub struct Order {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub fulfilment: Fulfilment,
    pub customer: Customer,
    pub pickup_location_id: Option<String>,
    pub max_distance_km: Option<f64>,
    pub allow_split: bool,
    pub ttl_seconds: Option<i64>,
    /// The store whose staff placed it, for an endless-aisle order.
    pub placed_at_location_id: Option<String>,
    /// Route within this sales channel: only its locations, each with the channel's available.
    pub channel: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssignmentView {
    pub location_id: String,
    pub distance_km: f64,
    pub lines: Vec<OrderLine>,
    /// The hold taken for this shipment (absent in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

pub enum Routed {
    /// Routed and held (or, in a dry run, what would be): the response body.
    Done(Value),
    /// The same order id was routed before: its answer, unchanged.
    Replay(Value),
    /// No location (or set of locations) can serve it now.
    NoOption(RouteOutcome),
}

/// What routes are decided on, as it is now: the channel's terms, the levels of the orders'
/// SKUs, and what is left of today's capacity at every location that has one.
pub(crate) struct Truth {
    channel: Option<ChannelPool>,
    levels: HashMap<String, Vec<LevelRow>>,
    capacity: HashMap<String, i64>,
}

impl Truth {
    /// The channel's share of `available` of `sku` (all of it outside a channel).
    pub(crate) fn channel_available(&self, sku: &str, available: i64) -> i64 {
        self.channel
            .as_ref()
            .map_or(available, |c| c.available(sku, available))
    }
}

/// Reads the truth for orders of these SKUs on the caller's connection: a route holds one
/// connection for its whole transaction, and asking the pool for a second one could starve it
/// under load.
pub(crate) async fn read_truth(
    conn: &mut PgConnection,
    skus: &[String],
    channel: Option<&str>,
) -> Result<Truth, sqlx::Error> {
    let channel = match channel {
        Some(c) => {
            let refs: Vec<&str> = skus.iter().map(String::as_str).collect();
            Some(ChannelPool::load(&mut *conn, c, &refs).await?)
        }
        None => None,
    };
    let mut levels: HashMap<String, Vec<LevelRow>> = HashMap::new();
    for lv in db::levels::for_skus(&mut *conn, skus).await? {
        levels.entry(lv.sku.clone()).or_default().push(lv);
    }
    // From PostgreSQL, not the directory: another daemon may have changed a capacity since
    // this one last refreshed its locations.
    let capacity = db::orders::capacity_left(&mut *conn).await?;
    Ok(Truth {
        channel,
        levels,
        capacity,
    })
}

/// The candidates for an order: every location (of its channel), its available-to-promise for
/// the order's SKUs and its remaining daily capacity, with what `taken` takes (the routes
/// decided before it in its group) taken out.
pub(crate) fn candidates(
    truth: &Truth,
    locations: &HashMap<String, Location>,
    lines: &[OrderLine],
    taken: &Taken,
) -> Vec<Candidate> {
    let in_channel = |l: &Location| {
        truth
            .channel
            .as_ref()
            .is_none_or(|c| c.includes(&l.location_id, l.kind, l.ship_from))
    };
    let mut out: HashMap<&str, Candidate> = locations
        .values()
        .filter(|l| in_channel(l))
        .map(|l| {
            let capacity_left = truth
                .capacity
                .get(&l.location_id)
                .map(|c| c.saturating_sub(taken.orders(&l.location_id)));
            (
                l.location_id.as_str(),
                Candidate {
                    location_id: l.location_id.clone(),
                    kind: l.kind,
                    lat: l.lat,
                    lon: l.lon,
                    pickup: l.pickup,
                    ship_from: l.ship_from,
                    available: HashMap::new(),
                    capacity_left,
                },
            )
        })
        .collect();
    for line in lines {
        for lv in truth.levels.get(&line.sku).into_iter().flatten() {
            if let (Some(c), Some(loc)) = (
                out.get_mut(lv.location_id.as_str()),
                locations.get(&lv.location_id),
            ) {
                let reserved = lv
                    .reserved
                    .saturating_add(taken.stock(&lv.location_id, &lv.sku));
                let a = available(lv.on_hand, reserved, loc.safety_stock);
                c.available
                    .insert(lv.sku.clone(), truth.channel_available(&lv.sku, a));
            }
        }
    }
    let mut v: Vec<Candidate> = out.into_values().collect();
    v.sort_by(|a, b| a.location_id.cmp(&b.location_id));
    v
}

/// `read_truth` then `candidates`, for one order decided on its own.
async fn candidates_now(
    conn: &mut PgConnection,
    locations: &HashMap<String, Location>,
    order: &Order,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let skus: Vec<String> = order.lines.iter().map(|l| l.sku.clone()).collect();
    let truth = read_truth(conn, &skus, order.channel.as_deref()).await?;
    Ok(candidates(
        &truth,
        locations,
        &order.lines,
        &Taken::default(),
    ))
}

pub(crate) fn decide(order: &Order, candidates: &[Candidate]) -> RouteOutcome {
    routing::route(
        &RouteRequest {
            lines: &order.lines,
            fulfilment: order.fulfilment,
            customer_lat: order.customer.lat,
            customer_lon: order.customer.lon,
            pickup_location_id: order.pickup_location_id.as_deref(),
            max_distance_km: order.max_distance_km,
            allow_split: order.allow_split,
        },
        candidates,
    )
}

pub(crate) fn response(
    order: &Order,
    outcome: &RouteOutcome,
    holds: &[(String, DateTime<Utc>)],
    dry_run: bool,
) -> Value {
    let assignments: Vec<AssignmentView> = outcome
        .assignments
        .iter()
        .enumerate()
        .map(|(i, a)| AssignmentView {
            location_id: a.location_id.clone(),
            distance_km: a.distance_km,
            lines: a.lines.clone(),
            reservation_id: holds.get(i).map(|h| h.0.clone()),
            expires_at: holds.get(i).map(|h| h.1),
        })
        .collect();
    let answer = RouteAnswer {
        order_id: order.order_id.clone(),
        fulfilment: order.fulfilment,
        dry_run,
        placed_at_location_id: order.placed_at_location_id.clone(),
        assignments,
        explanation: outcome.explanation.clone(),
    };
    // The answer is stored as JSON (and replayed as stored), so it is kept as a value.
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

/// Where an order ships from (or is picked up), with the holds taken.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RouteResponse)]
pub struct RouteAnswer {
    pub order_id: String,
    pub fulfilment: Fulfilment,
    /// True when nothing was held (`?dry_run=true`); a replay says false.
    pub dry_run: bool,
    pub placed_at_location_id: Option<String>,
    /// One shipment (or pickup) per location chosen.
    pub assignments: Vec<AssignmentView>,
    /// Why each location considered was or was not chosen.
    pub explanation: Vec<routing::Considered>,
}

/// Routes an order and holds its stock (unless `dry_run`), idempotently by `order_id`.
/// Timed in `omnistock_route_duration_seconds` by outcome; an order no location could serve
/// also counts in `omnistock_oversell_attempts_total` (unless a dry run).
pub async fn route_order(
    queues: RouteQueues,
    order: Order,
    dry_run: bool,
) -> Result<Routed, RouteError> {
    // In a task of its own: a caller that gives up (its client went away, its deadline
    // passed) leaves the route whole, committed, or rolled back with its slots given back.
    let task = tokio::spawn(async move {
        let timer = metrics::Timed::start(metrics::ROUTE_SECONDS);
        let channel = order.channel.clone();
        let routed = route_timed(&queues, order, dry_run).await;
        timer.finish(match &routed {
            Ok(Routed::Done(_)) if dry_run => "dry_run",
            Ok(Routed::Done(_)) => "routed",
            Ok(Routed::Replay(_)) => "replay",
            Ok(Routed::NoOption(_)) if dry_run => "dry_run_no_option",
            Ok(Routed::NoOption(_)) => {
                metrics::oversell_attempt("route", channel.as_deref());
                "no_option"
            }
            Err(RouteError::Invalid(_)) => "invalid",
            Err(RouteError::Contended) => "contended",
            Err(RouteError::Db(_)) => "error",
        });
        routed
    });
    task.await
        .unwrap_or(Err(RouteError::Db(sqlx::Error::WorkerCrashed)))
}

async fn route_timed(
    queues: &RouteQueues,
    order: Order,
    dry_run: bool,
) -> Result<Routed, RouteError> {
    let expires_at =
        reservation::expires_at(Utc::now(), order.ttl_seconds).map_err(RouteError::Invalid)?;
    if !dry_run {
        return queues.route(order, expires_at).await;
    }
    let (pool, directory) = (queues.pool(), queues.directory());
    if let Some(previous) = db::orders::response(pool, &order.order_id).await? {
        return Ok(Routed::Replay(previous));
    }
    let locations = directory.snapshot();
    let mut conn = pool.acquire().await?;
    let outcome = decide(
        &order,
        &candidates_now(&mut conn, &locations, &order).await?,
    );
    Ok(if outcome.assignments.is_empty() {
        Routed::NoOption(outcome)
    } else {
        Routed::Done(response(&order, &outcome, &[], true))
    })
}

/// Routes one order in transactions of its own, deciding again after each lost race: what a
/// route group falls back to when its transaction fails.
pub(crate) async fn route_single(
    pool: &PgPool,
    cache: &StockCache,
    directory: &Directory,
    order: &Order,
    expires_at: DateTime<Utc>,
) -> Result<Routed, RouteError> {
    for attempt in 1..=ATTEMPTS {
        match try_route(pool, cache, directory, order, expires_at).await {
            Ok(Some(routed)) => return Ok(routed),
            Ok(None) => {
                tracing::debug!(order_id = %order.order_id, attempt, "route lost a race; deciding again");
            }
            // A deadlock with a concurrent writer: PostgreSQL chose this transaction to abort.
            Err(e) if db::is_retryable(&e) && attempt < ATTEMPTS => {
                tracing::debug!(order_id = %order.order_id, attempt, error = %e, "route retried");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(RouteError::Contended)
}

/// One attempt: decide on current data, take the capacity slots, and hold it all in one
/// transaction. `None` when a concurrent order took the stock or the last slot between the
/// decision and the hold.
///
/// A location's day counter is one row that every route to it updates, the hot row of a busy
/// warehouse. Inside the route's transaction its lock would be held through every statement
/// and the commit, and routes to the warehouse would go one at a time. So a slot is taken in a
/// statement of its own, before the transaction, and given back if the route does not commit.
/// A route that stops between the two (a crash) leaves its slot taken: the day's capacity can
/// end up under-used, never exceeded.
async fn try_route(
    pool: &PgPool,
    cache: &StockCache,
    directory: &Directory,
    order: &Order,
    expires_at: DateTime<Utc>,
) -> Result<Option<Routed>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    if let Some(previous) = db::orders::response(&mut *conn, &order.order_id).await? {
        return Ok(Some(Routed::Replay(previous)));
    }
    let locations = directory.snapshot();
    let outcome = decide(order, &candidates_now(&mut conn, &locations, order).await?);
    if outcome.assignments.is_empty() {
        return Ok(Some(Routed::NoOption(outcome)));
    }
    // Location order: the (location, SKU) lock order every writer follows.
    let mut order_of: Vec<usize> = (0..outcome.assignments.len()).collect();
    order_of.sort_by(|&a, &b| {
        outcome.assignments[a]
            .location_id
            .cmp(&outcome.assignments[b].location_id)
    });
    // The slots taken so far, in `order_of` order.
    let mut taken: Vec<(&str, NaiveDate)> = Vec::with_capacity(order_of.len());
    for &i in &order_of {
        let location_id = outcome.assignments[i].location_id.as_str();
        match db::orders::take_slot(&mut conn, location_id).await {
            Ok(Some(day)) => taken.push((location_id, day)),
            Ok(None) => {
                give_back(&mut conn, &taken).await;
                return Ok(None);
            }
            Err(e) => {
                give_back(&mut conn, &taken).await;
                return Err(e);
            }
        }
    }
    let held = hold_all(
        &mut conn, cache, order, &outcome, &order_of, &taken, expires_at,
    )
    .await;
    match held {
        Held::Committed(body) => Ok(Some(Routed::Done(body))),
        Held::RolledBack(answer) => {
            give_back(&mut conn, &taken).await;
            answer
        }
        // The commit was sent and its answer lost: the route may have committed, so its
        // slots stay taken.
        Held::Unknown(e) => Err(e),
    }
}

/// How the route's transaction ended.
enum Held {
    Committed(Value),
    /// Nothing was written: the slots go back. `Ok(None)`: decide again.
    RolledBack(Result<Option<Routed>, sqlx::Error>),
    Unknown(sqlx::Error),
}

/// Holds every assignment, records the order and its assignments, and commits.
async fn hold_all(
    conn: &mut PgConnection,
    cache: &StockCache,
    order: &Order,
    outcome: &RouteOutcome,
    order_of: &[usize],
    slots: &[(&str, NaiveDate)],
    expires_at: DateTime<Utc>,
) -> Held {
    let mut tx = match sqlx::Connection::begin(&mut *conn).await {
        Ok(tx) => tx,
        Err(e) => return Held::RolledBack(Err(e)),
    };
    let body = match hold_in_tx(&mut tx, order, outcome, order_of, slots, expires_at).await {
        Ok(Ok(body)) => body,
        // Dropping the transaction rolls it back.
        Ok(Err(answer)) => return Held::RolledBack(Ok(answer)),
        Err(e) => return Held::RolledBack(Err(e)),
    };
    match crate::commit::commit(tx, Some(cache), &body.1).await {
        Ok(()) => Held::Committed(body.0),
        Err(e) => Held::Unknown(e),
    }
}

/// The route's writes, in its transaction: `Err(answer)` when it must roll back instead.
async fn hold_in_tx(
    tx: &mut PgConnection,
    order: &Order,
    outcome: &RouteOutcome,
    order_of: &[usize],
    slots: &[(&str, NaiveDate)],
    expires_at: DateTime<Utc>,
) -> Result<Result<(Value, Vec<LevelRow>), Option<Routed>>, sqlx::Error> {
    db::orders::lock_order_id(&mut *tx, &order.order_id).await?;
    if let Some(previous) = db::orders::response(&mut *tx, &order.order_id).await? {
        return Ok(Err(Some(Routed::Replay(previous))));
    }
    let mut holds = vec![(String::new(), expires_at); outcome.assignments.len()];
    let mut changed = Vec::new();
    let mut changes = Vec::new();
    for &i in order_of {
        let a = &outcome.assignments[i];
        let id = format!("ord-{}", uuid::Uuid::new_v4().simple());
        let hold = NewHold {
            reservation_id: &id,
            location_id: &a.location_id,
            lines: &a.lines,
            expires_at,
            order_id: Some(&order.order_id),
            channel: order.channel.as_deref(),
            preorder: false,
        };
        match hold_in(&mut *tx, &hold).await? {
            Ok(held) => {
                changed.extend(held.changed);
                changes.extend(held.events);
            }
            Err(NotHeld::Short(_)) | Err(NotHeld::Exists) | Err(NotHeld::UnknownLocation) => {
                return Ok(Err(None));
            }
        }
        holds[i].0 = id;
    }
    // Events of every hold at once: recording takes per-SKU alert locks, which must come
    // after all level locks of the transaction (the order every writer follows).
    crate::events::record(&mut *tx, &changes).await?;
    let body = response(order, outcome, &holds, false);
    db::orders::insert(&mut *tx, &order.order_id, &body).await?;
    for (&i, &(location_id, day)) in order_of.iter().zip(slots) {
        db::orders::insert_assignment(&mut *tx, &order.order_id, location_id, &holds[i].0, day)
            .await?;
    }
    Ok(Ok((body, changed)))
}

/// Gives back the slots taken for a route that did not commit. A failure here leaves them
/// taken (capacity under-used, never exceeded), so it is only logged.
async fn give_back(conn: &mut PgConnection, taken: &[(&str, NaiveDate)]) {
    for &(location_id, day) in taken {
        if let Err(e) = db::orders::give_back_slot(&mut *conn, location_id, day).await {
            tracing::warn!(%location_id, error = %e, "a route's capacity slot was not given back");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Invalid(String),
    #[error("the stock kept being taken by concurrent orders; try again")]
    Contended,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}
