//! Holds on stock: create (all lines or none), confirm, release, expire, and read.
//!
//! Concurrency: a hold locks its level rows (`FOR UPDATE`, in SKU order) and checks
//! availability under the lock, so no interleaving of requests can make `reserved` exceed what
//! `available` allowed. Everything that locks both reservations and levels takes reservations
//! first, then levels in (location, SKU) order, which leaves no room for a deadlock cycle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::cache::StockCache;
use crate::channels::HoldPool;
use crate::commit;
use crate::db;
use crate::db::levels::LevelRow;
use crate::db::reservations::{Inserted, ReservationRow};
use crate::domain::availability::available;
use crate::domain::reservation::{self, Shortfall, Status};
use crate::domain::reservation_page::Cursor;
use crate::domain::routing::OrderLine;
use crate::events::{self, LevelChange};
use crate::ingest::apply::change;
use crate::metrics;

use super::group::HoldQueues;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineView {
    pub sku: String,
    pub quantity: i64,
    /// Still held (a sale carrying the reservation consumes it).
    pub held: i64,
    /// Of a preorder: what waits on supply that has not arrived yet (not in `held`).
    pub waiting: i64,
    /// Of a preorder: the supply lines it waits on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supply: Vec<db::supply::AllocationRow>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReservationView {
    pub reservation_id: String,
    pub status: Status,
    pub location_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Held against future supply (`"preorder": true`).
    pub preorder: bool,
    pub lines: Vec<LineView>,
}

pub async fn view(db: &PgPool, id: &str) -> Result<Option<ReservationView>, sqlx::Error> {
    let Some(r) = db::reservations::get(db, id).await? else {
        return Ok(None);
    };
    let lines = db::reservations::lines(db, &[id.to_owned()]).await?;
    let supply = if r.preorder {
        db::supply::allocations_of(db, &[id.to_owned()]).await?
    } else {
        Vec::new()
    };
    Ok(Some(assemble(r, lines, &supply)))
}

/// A reservation with its lines (those of other reservations are ignored), and the supply
/// its preorder lines wait on.
fn assemble(
    r: ReservationRow,
    lines: Vec<db::reservations::LineRow>,
    supply: &[db::supply::AllocationRow],
) -> ReservationView {
    ReservationView {
        preorder: r.preorder,
        status: Status::parse(&r.status).unwrap_or(Status::Released),
        lines: lines
            .into_iter()
            .filter(|l| l.reservation_id == r.reservation_id)
            .map(|l| LineView {
                supply: supply
                    .iter()
                    .filter(|a| a.reservation_id == r.reservation_id && a.sku == l.sku)
                    .cloned()
                    .collect(),
                sku: l.sku,
                quantity: l.quantity,
                held: l.held,
                waiting: l.waiting,
            })
            .collect(),
        reservation_id: r.reservation_id,
        location_id: r.location_id,
        expires_at: r.expires_at,
        order_id: r.order_id,
        created_at: r.created_at,
    }
}

/// Which reservations to list, and from where.
pub struct ListFilter<'a> {
    pub status: Option<Status>,
    pub location_id: Option<&'a str>,
    /// Only reservations with a line of this SKU.
    pub sku: Option<&'a str>,
    pub order_id: Option<&'a str>,
    pub after: Option<&'a Cursor>,
    pub limit: i64,
}

/// One page of reservations, newest first, each as `view` shows it, and the cursor of the next
/// page when there may be one.
pub async fn list(
    db: &PgPool,
    f: &ListFilter<'_>,
) -> Result<(Vec<ReservationView>, Option<Cursor>), sqlx::Error> {
    // One more than asked tells whether another page follows.
    let mut rows = db::reservations::page(
        db,
        f.status.map(Status::as_str),
        f.location_id,
        f.sku,
        f.order_id,
        f.after.map(|c| (c.created_at, c.reservation_id.as_str())),
        f.limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > f.limit;
    rows.truncate(usize::try_from(f.limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|r| Cursor {
            created_at: r.created_at,
            reservation_id: r.reservation_id.clone(),
        })
    } else {
        None
    };
    let ids: Vec<String> = rows.iter().map(|r| r.reservation_id.clone()).collect();
    let preorders: Vec<String> = rows
        .iter()
        .filter(|r| r.preorder)
        .map(|r| r.reservation_id.clone())
        .collect();
    let supply = if preorders.is_empty() {
        Vec::new()
    } else {
        db::supply::allocations_of(db, &preorders).await?
    };
    let mut lines: HashMap<String, Vec<db::reservations::LineRow>> = HashMap::new();
    for l in db::reservations::lines(db, &ids).await? {
        lines.entry(l.reservation_id.clone()).or_default().push(l);
    }
    let views = rows
        .into_iter()
        .map(|r| {
            let own = lines.remove(&r.reservation_id).unwrap_or_default();
            assemble(r, own, &supply)
        })
        .collect();
    Ok((views, next))
}

/// A hold to take.
pub struct NewHold<'a> {
    pub reservation_id: &'a str,
    pub location_id: &'a str,
    /// Merged: one line per SKU.
    pub lines: &'a [OrderLine],
    pub expires_at: DateTime<Utc>,
    pub order_id: Option<&'a str>,
    /// A hold for a sales channel takes no more than the channel's available at the location
    /// (0 where the channel does not sell from it).
    pub channel: Option<&'a str>,
    /// May hold against open supply too (see `crate::supply::hold_preorder_in`).
    pub preorder: bool,
}

/// Why a hold was not taken.
#[derive(Debug)]
pub enum NotHeld {
    /// The reservation id exists already (the caller answers with it: idempotency).
    Exists,
    UnknownLocation,
    Short(Vec<Shortfall>),
}

/// A hold taken: the levels as they are now, and the change events the caller must record
/// (once, with any other changes of its transaction: see `events::record`).
pub struct Held {
    pub changed: Vec<LevelRow>,
    pub events: Vec<LevelChange>,
}

/// What every kind of hold does first: records the reservation (or finds its id taken or its
/// location unknown), and reads the channel's terms for its SKUs, before any level lock.
/// Returns the SKUs in lock order.
pub(crate) async fn begin<'h>(
    conn: &mut PgConnection,
    h: &NewHold<'h>,
) -> Result<Result<(Vec<&'h str>, Option<HoldPool>), NotHeld>, sqlx::Error> {
    match db::reservations::insert(
        conn,
        h.reservation_id,
        h.location_id,
        h.expires_at,
        h.order_id,
    )
    .await?
    {
        Inserted::New => {}
        Inserted::Exists => return Ok(Err(NotHeld::Exists)),
        Inserted::UnknownLocation => return Ok(Err(NotHeld::UnknownLocation)),
    }
    let mut skus: Vec<&str> = h.lines.iter().map(|l| l.sku.as_str()).collect();
    skus.sort_unstable();
    let channel = match h.channel {
        Some(c) => Some(HoldPool::load(conn, c, h.location_id, &skus).await?),
        None => None,
    };
    Ok(Ok((skus, channel)))
}

/// Takes an ordinary hold inside the caller's transaction (`create` sends a preorder to
/// `supply::hold_preorder_in` instead). On `Err(NotHeld)` the caller must roll back.
pub async fn hold_in(
    conn: &mut PgConnection,
    h: &NewHold<'_>,
) -> Result<Result<Held, NotHeld>, sqlx::Error> {
    let (skus, channel) = match begin(conn, h).await? {
        Ok(started) => started,
        Err(not) => return Ok(Err(not)),
    };
    let levels = db::levels::lock_at(conn, h.location_id, &skus).await?;
    let quantities: Vec<i64> = h.lines.iter().map(|l| l.quantity).collect();
    let line_skus: Vec<&str> = h.lines.iter().map(|l| l.sku.as_str()).collect();
    // Reserved first, checked after (a short hold is rolled back by the caller): the update
    // reads the safety stock in its own snapshot, taken with the level locks held, so a
    // safety stock raised while this hold waited for them counts, at no extra round trip
    // inside the locks.
    let (changed, safety) =
        db::reservations::add_held_at(conn, h.location_id, &line_skus, &quantities).await?;
    let avail = |sku: &str| {
        levels.iter().find(|l| l.sku == sku).map_or(0, |l| {
            let a = available(l.on_hand, l.reserved, safety);
            channel.as_ref().map_or(a, |c| c.available(sku, a))
        })
    };
    if let Err(short) = reservation::check(h.lines, avail) {
        return Ok(Err(NotHeld::Short(short)));
    }
    db::reservations::insert_lines(conn, h.reservation_id, &line_skus, &quantities).await?;
    let held: HashMap<&str, i64> = h
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect();
    let events = reserved_changes(
        &changed,
        |l| held.get(l.sku.as_str()).copied().unwrap_or(0),
        "reservation_hold",
        Some(h.reservation_id),
    );
    Ok(Ok(Held { changed, events }))
}

/// Change events of levels whose `reserved` moved by `delta(level)` to reach `after`.
fn reserved_changes(
    after: &[LevelRow],
    delta: impl Fn(&LevelRow) -> i64,
    cause: &'static str,
    reference: Option<&str>,
) -> Vec<LevelChange> {
    after
        .iter()
        .map(|a| {
            let mut before = a.clone();
            before.reserved -= delta(a);
            change(&before, a, cause, reference.map(str::to_owned))
        })
        .collect()
}

pub enum Created {
    New(ReservationView),
    /// The same reservation id was used before: its reservation, as it is now.
    Replay(ReservationView),
    UnknownLocation,
    Short(Vec<Shortfall>),
}

/// Takes a hold (or a preorder), idempotently by its id, timed in
/// `omnistock_hold_duration_seconds` by outcome; one refused for want of stock also counts in
/// `omnistock_oversell_attempts_total`.
///
/// An ordinary hold goes through its levels' queue (`super::group`); a preorder is taken on its
/// own.
pub async fn create(
    pool: &PgPool,
    cache: &StockCache,
    queues: &HoldQueues,
    h: &NewHold<'_>,
) -> Result<Created, sqlx::Error> {
    let timer = metrics::Timed::start(metrics::HOLD_SECONDS);
    let created = if h.preorder {
        create_single(pool, cache, h).await
    } else {
        queues.hold(h).await
    };
    timer.finish(match &created {
        Ok(Created::New(_)) => "created",
        Ok(Created::Replay(_)) => "replay",
        Ok(Created::UnknownLocation) => "unknown_location",
        Ok(Created::Short(_)) => {
            metrics::oversell_attempt("hold", h.channel);
            "insufficient"
        }
        Err(_) => "error",
    });
    created
}

/// Takes one hold in a transaction of its own.
pub(crate) async fn create_single(
    pool: &PgPool,
    cache: &StockCache,
    h: &NewHold<'_>,
) -> Result<Created, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let taken = if h.preorder {
        crate::supply::hold_preorder_in(&mut tx, h).await?
    } else {
        hold_in(&mut tx, h).await?
    };
    match taken {
        Ok(held) => {
            events::record(&mut tx, &held.events).await?;
            commit::commit(tx, Some(cache), &held.changed).await?;
            let v = view(pool, h.reservation_id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            Ok(Created::New(v))
        }
        Err(not) => {
            tx.rollback().await?;
            Ok(match not {
                NotHeld::Exists => Created::Replay(
                    view(pool, h.reservation_id)
                        .await?
                        .ok_or(sqlx::Error::RowNotFound)?,
                ),
                NotHeld::UnknownLocation => Created::UnknownLocation,
                NotHeld::Short(s) => Created::Short(s),
            })
        }
    }
}

/// Gives back what the given (locked) reservations still hold and sets their status.
pub async fn release_in(
    conn: &mut PgConnection,
    ids: &[String],
    status: Status,
) -> Result<Vec<LevelRow>, sqlx::Error> {
    // Every level of their lines is locked before what they hold is read: a supply arrival
    // (which locks the level, not the reservation) may turn a preorder's waiting into held.
    let (locs, skus) = db::supply::reservation_levels(conn, ids).await?;
    db::levels::lock(conn, &locs, &skus).await?;
    db::supply::free_reservations(conn, ids).await?;
    let held = db::reservations::held_by_level(conn, ids).await?;
    let mut changed = Vec::new();
    if !held.is_empty() {
        let locs: Vec<&str> = held.iter().map(|(l, _, _)| l.as_str()).collect();
        let skus: Vec<&str> = held.iter().map(|(_, s, _)| s.as_str()).collect();
        let deltas: Vec<i64> = held.iter().map(|(_, _, n)| -n).collect();
        changed = db::reservations::add_reserved(conn, &locs, &skus, &deltas).await?;
        db::reservations::clear_held(conn, ids).await?;
        let cause = if status == Status::Expired {
            "reservation_expiry"
        } else {
            "reservation_release"
        };
        let reference = (ids.len() == 1).then(|| ids[0].as_str());
        let released: HashMap<(&str, &str), i64> = held
            .iter()
            .map(|(l, s, n)| ((l.as_str(), s.as_str()), -n))
            .collect();
        let events = reserved_changes(
            &changed,
            |l| {
                released
                    .get(&(l.location_id.as_str(), l.sku.as_str()))
                    .copied()
                    .unwrap_or(0)
            },
            cause,
            reference,
        );
        events::record(conn, &events).await?;
    }
    db::reservations::set_status(conn, ids, status.as_str()).await?;
    Ok(changed)
}

pub enum Released {
    Done(ReservationView),
    NotFound,
}

/// Releases what is still held; releasing a reservation that is no longer live changes nothing
/// and answers with its status (DELETE is idempotent).
pub async fn release(pool: &PgPool, cache: &StockCache, id: &str) -> Result<Released, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked = db::reservations::lock(&mut tx, &[id.to_owned()]).await?;
    let Some(r) = locked.first() else {
        return Ok(Released::NotFound);
    };
    let mut changed = Vec::new();
    if Status::parse(&r.status).is_some_and(Status::is_live) {
        changed = release_in(&mut tx, &[id.to_owned()], Status::Released).await?;
    }
    commit::commit(tx, Some(cache), &changed).await?;
    Ok(match view(pool, id).await? {
        Some(v) => Released::Done(v),
        None => Released::NotFound,
    })
}

pub enum Confirmed {
    Done(ReservationView),
    NotFound,
    /// Not live (expired, released, fulfilled): nothing to confirm.
    NotLive(ReservationView),
}

pub async fn confirm(pool: &PgPool, id: &str) -> Result<Confirmed, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let done = db::reservations::confirm(&mut conn, id).await?;
    drop(conn);
    Ok(match (done, view(pool, id).await?) {
        (_, None) => Confirmed::NotFound,
        (true, Some(v)) => Confirmed::Done(v),
        (false, Some(v)) => Confirmed::NotLive(v),
    })
}

pub enum Extended {
    Done(ReservationView),
    NotFound,
    /// Not held (confirmed, released, fulfilled, expired) or past its expiry: never extended.
    NotHeld(ReservationView),
}

/// Extends a held hold to expire `ttl_seconds` (already within bounds) from now. Quantities do
/// not change, so no change event is recorded.
pub async fn extend(pool: &PgPool, id: &str, ttl_seconds: i64) -> Result<Extended, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let done = db::reservations::extend(&mut conn, id, ttl_seconds).await?;
    drop(conn);
    Ok(match (done, view(pool, id).await?) {
        (_, None) => Extended::NotFound,
        (true, Some(v)) => Extended::Done(v),
        (false, Some(v)) => Extended::NotHeld(v),
    })
}

/// Expires up to `limit` holds whose time is up. Safe with several daemons: each due hold is
/// locked by exactly one of them (`SKIP LOCKED`), and only a still-held one is released.
pub async fn expire_due(
    pool: &PgPool,
    cache: &StockCache,
    limit: i64,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due = db::reservations::lock_due(&mut tx, limit).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let changed = release_in(&mut tx, &due, Status::Expired).await?;
    commit::commit(tx, Some(cache), &changed).await?;
    Ok(due.len())
}

/// Background job: releases expired holds within a second of their expiry.
pub async fn run_expiry_job(pool: PgPool, cache: Arc<StockCache>, shutdown: CancellationToken) {
    crate::jobs::periodic(&shutdown, Duration::from_millis(500), || async {
        loop {
            match expire_due(&pool, &cache, 500).await {
                Ok(0) => {
                    crate::jobs::succeeded();
                    break;
                }
                Ok(n) => tracing::info!(reservations = n, "expired holds released"),
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed; retrying");
                    break;
                }
            }
        }
    })
    .await
}
