//! Future supply and preorders: supply lines (create/replace, list, cancel), preorder holds
//! against them, and their fill when a receipt or transfer_in names them.
//!
//! Concurrency: every change to the supply lines of a (location, SKU), and to the preorders on
//! them, is made with that level row locked first. Lock order, shared with the rest:
//! reservations (id order), levels ((location, SKU) order), supply lines. So a preorder, an
//! ordinary hold, a fill and a cancellation of one (location, SKU) run one after another, and
//! a preorder checks `available + free supply` under the same lock that guards both.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::cache::StockCache;
use crate::commit;
use crate::db;
use crate::db::levels::LevelRow;
use crate::db::supply::{AllocationRow, SupplyRow};
use crate::domain::availability::available;
use crate::domain::movement::{Movement, MovementKind};
use crate::domain::reservation::{Shortfall, Status};
use crate::domain::supply::{self as rules, LineState};
use crate::events;
use crate::holds::reservations::{self, Held, NewHold, NotHeld};
use crate::ingest::apply::change;

/// A supply line as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SupplyView {
    pub supply_id: String,
    pub location_id: String,
    pub sku: String,
    pub quantity: i64,
    pub received: i64,
    pub remaining: i64,
    /// Of `remaining`, what preorders hold.
    pub preordered: i64,
    pub expected_at: Option<DateTime<Utc>>,
    pub status: String,
    pub source: String,
    pub updated_at: DateTime<Utc>,
}

impl From<SupplyRow> for SupplyView {
    fn from(r: SupplyRow) -> Self {
        SupplyView {
            supply_id: r.supply_id,
            location_id: r.location_id,
            sku: r.sku,
            quantity: r.quantity,
            received: r.received,
            remaining: r.remaining,
            preordered: r.allocated,
            expected_at: r.expected_at,
            status: r.status,
            source: r.source,
            updated_at: r.updated_at,
        }
    }
}

fn state(r: &SupplyRow) -> LineState {
    LineState {
        quantity: r.quantity,
        received: r.received,
        remaining: r.remaining,
        allocated: r.allocated,
    }
}

/// A line to create or replace (already validated).
pub struct NewSupply<'a> {
    pub supply_id: &'a str,
    pub location_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub expected_at: DateTime<Utc>,
}

pub enum Upserted {
    Created(SupplyView),
    Replaced(SupplyView),
    UnknownLocation,
    /// The new quantity leaves less than preorders hold on the line.
    BelowPreorders {
        remaining: i64,
        allocated: i64,
    },
    /// Preorders hold on the line: it cannot move to another location or SKU.
    Moved {
        allocated: i64,
    },
    /// A transfer's line is kept by its movements.
    Transfer,
}

/// Attempts for writers that lock what they read before the lock (a key or a set of
/// reservations) and retry when it changed in between.
const ATTEMPTS: usize = 5;

pub async fn upsert(pool: &PgPool, s: &NewSupply<'_>) -> Result<Upserted, sqlx::Error> {
    for _ in 0..ATTEMPTS {
        // Which level(s) to lock: the line's new key, and its old one when it moves.
        let before = db::supply::get(pool, s.supply_id).await?;
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        keys.insert((s.location_id.to_owned(), s.sku.to_owned()));
        if let Some(b) = &before {
            keys.insert((b.location_id.clone(), b.sku.clone()));
        }
        let mut tx = pool.begin().await?;
        let loc = [s.location_id.to_owned()];
        if db::locations::known_ids(&mut *tx, &loc).await?.is_empty() {
            return Ok(Upserted::UnknownLocation);
        }
        let (locs, skus): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
        db::levels::ensure_skus(&mut tx, &[s.sku.to_owned()]).await?;
        db::levels::ensure(&mut tx, &locs, &skus).await?;
        db::levels::lock(&mut tx, &locs, &skus).await?;
        let current = db::supply::lock_one(&mut tx, s.supply_id).await?;
        let same_key = |c: &SupplyRow| keys.contains(&(c.location_id.clone(), c.sku.clone()));
        if current.as_ref().is_some_and(|c| !same_key(c)) {
            continue; // moved between the read and the lock: lock its new key
        }
        let (line, created) = match &current {
            None => (
                LineState {
                    quantity: s.quantity,
                    received: 0,
                    remaining: s.quantity,
                    allocated: 0,
                },
                true,
            ),
            Some(c) if c.source == "transfer" => return Ok(Upserted::Transfer),
            Some(c) => {
                if (c.location_id.as_str(), c.sku.as_str()) != (s.location_id, s.sku)
                    && c.allocated > 0
                {
                    return Ok(Upserted::Moved {
                        allocated: c.allocated,
                    });
                }
                match rules::replace(state(c), s.quantity) {
                    Ok(l) => (l, false),
                    Err(e) => {
                        return Ok(Upserted::BelowPreorders {
                            remaining: e.remaining,
                            allocated: e.allocated,
                        })
                    }
                }
            }
        };
        let row = db::supply::upsert(
            &mut tx,
            &db::supply::LineWrite {
                supply_id: s.supply_id,
                location_id: s.location_id,
                sku: s.sku,
                quantity: line.quantity,
                received: line.received,
                remaining: line.remaining,
                allocated: line.allocated,
                expected_at: Some(s.expected_at),
                status: if line.remaining > 0 { "open" } else { "filled" },
                source: "purchase",
            },
        )
        .await?;
        // Only supply changed, no level quantity: nothing for the cache or change events.
        tx.commit().await?;
        let v = SupplyView::from(row);
        return Ok(if created {
            Upserted::Created(v)
        } else {
            Upserted::Replaced(v)
        });
    }
    Err(sqlx::Error::PoolTimedOut)
}

pub async fn list(
    pool: &PgPool,
    sku: Option<&str>,
    location_id: Option<&str>,
) -> Result<Vec<SupplyView>, sqlx::Error> {
    Ok(db::supply::list_open(pool, sku, location_id)
        .await?
        .into_iter()
        .map(SupplyView::from)
        .collect())
}

pub async fn get(pool: &PgPool, supply_id: &str) -> Result<Option<SupplyView>, sqlx::Error> {
    Ok(db::supply::get(pool, supply_id)
        .await?
        .map(SupplyView::from))
}

/// What cancelling a line did with the preorders on it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub supply: SupplyView,
    /// Preorders moved to other open lines or to stock available now.
    pub moved: Vec<String>,
    /// Preorders that found nothing else to hold on: released whole.
    pub released: Vec<String>,
}

pub enum Cancel {
    Done(Box<Cancelled>),
    NotFound,
    Transfer,
}

/// Cancels what remains of a line. Preorders on it move to other open lines of its (location,
/// SKU) or to stock available now when they fit whole, oldest first; the others are released,
/// so no preorder is left waiting on nothing. Cancelling a line that is not open changes nothing.
pub async fn cancel(
    pool: &PgPool,
    cache: &StockCache,
    supply_id: &str,
) -> Result<Cancel, sqlx::Error> {
    for _ in 0..ATTEMPTS {
        let Some(before) = db::supply::get(pool, supply_id).await? else {
            return Ok(Cancel::NotFound);
        };
        if before.source == "transfer" {
            return Ok(Cancel::Transfer);
        }
        // Reservations lock before levels: learn which first, and check after the locks.
        let mut ids: Vec<String> = db::supply::allocations_on(pool, supply_id)
            .await?
            .into_iter()
            .map(|a| a.reservation_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        ids.sort();
        let mut tx = pool.begin().await?;
        db::reservations::lock(&mut tx, &ids).await?;
        let (mut locs, mut skus) = db::supply::reservation_levels(&mut tx, &ids).await?;
        locs.push(before.location_id.clone());
        skus.push(before.sku.clone());
        db::levels::lock(&mut tx, &locs, &skus).await?;
        let Some(line) = db::supply::lock_one(&mut tx, supply_id).await? else {
            return Ok(Cancel::NotFound);
        };
        if (line.location_id.as_str(), line.sku.as_str())
            != (before.location_id.as_str(), before.sku.as_str())
        {
            continue;
        }
        if line.status != "open" {
            return Ok(Cancel::Done(Box::new(Cancelled {
                supply: line.into(),
                moved: vec![],
                released: vec![],
            })));
        }
        let allocs = db::supply::allocations_on(&mut *tx, supply_id).await?;
        if allocs
            .iter()
            .any(|a| ids.binary_search(&a.reservation_id).is_err())
        {
            continue; // a preorder came in before the lock: lock it too
        }
        let out = relocate(&mut tx, &line, &allocs).await?;
        commit::commit(tx, Some(cache), &out.changed).await?;
        let supply = db::supply::get(pool, supply_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        return Ok(Cancel::Done(Box::new(Cancelled {
            supply: supply.into(),
            moved: out.moved,
            released: out.released,
        })));
    }
    Err(sqlx::Error::PoolTimedOut)
}

struct Relocated {
    changed: Vec<LevelRow>,
    moved: Vec<String>,
    released: Vec<String>,
}

/// Moves the preorders of a line being cancelled (everything locked by the caller).
async fn relocate(
    conn: &mut PgConnection,
    line: &SupplyRow,
    allocs: &[AllocationRow],
) -> Result<Relocated, sqlx::Error> {
    let sku = [line.sku.as_str()];
    let level = db::levels::lock_at(conn, &line.location_id, &sku).await?;
    let safety = db::supply::safety_stock(conn, &line.location_id).await?;
    let avail = level
        .first()
        .map_or(0, |l| available(l.on_hand, l.reserved, safety));
    let others: Vec<SupplyRow> = db::supply::lock_open_at(conn, &line.location_id, &sku)
        .await?
        .into_iter()
        .filter(|o| o.supply_id != line.supply_id)
        .collect();
    let free: Vec<i64> = others.iter().map(|o| state(o).free()).collect();
    let amounts: Vec<i64> = allocs.iter().map(|a| a.quantity).collect();
    let plan = rules::relocate(&amounts, avail, &free);

    // One allocation per reservation on a line (unique (reservation, SKU, supply)).
    let mut released: Vec<String> = allocs
        .iter()
        .zip(&plan)
        .filter(|(_, p)| p.is_none())
        .map(|(a, _)| a.reservation_id.clone())
        .collect();
    released.sort();
    let mut changed: HashMap<(String, String), LevelRow> = HashMap::new();
    if !released.is_empty() {
        for l in reservations::release_in(conn, &released, Status::Released).await? {
            changed.insert((l.location_id.clone(), l.sku.clone()), l);
        }
    }
    let mut moved = Vec::new();
    let mut from_stock = 0i64;
    for (a, p) in allocs.iter().zip(&plan) {
        let Some(s) = p else { continue };
        moved.push(a.reservation_id.clone());
        db::supply::set_allocations(conn, &[a.id], &[0]).await?;
        let targets: Vec<(&str, i64)> = others
            .iter()
            .zip(&s.on_supply)
            .filter(|(_, n)| **n > 0)
            .map(|(o, n)| (o.supply_id.as_str(), *n))
            .collect();
        if !targets.is_empty() {
            let skus = vec![a.sku.as_str(); targets.len()];
            let (ids, q): (Vec<&str>, Vec<i64>) = targets.into_iter().unzip();
            db::supply::allocate(conn, &a.reservation_id, &skus, &ids, &q).await?;
        }
        if s.from_stock > 0 {
            db::supply::move_waiting_to_held(
                conn,
                &[a.reservation_id.as_str()],
                &[a.sku.as_str()],
                &[s.from_stock],
            )
            .await?;
            from_stock += s.from_stock;
        }
    }
    moved.sort();
    if from_stock > 0 {
        let after = db::reservations::add_reserved(
            conn,
            &[line.location_id.as_str()],
            &[line.sku.as_str()],
            &[from_stock],
        )
        .await?;
        let mut evs = Vec::new();
        for a in after {
            let mut b = a.clone();
            b.reserved -= from_stock;
            evs.push(change(
                &b,
                &a,
                "supply_cancelled",
                Some(line.supply_id.clone()),
            ));
            changed.insert((a.location_id.clone(), a.sku.clone()), a);
        }
        events::record(conn, &evs).await?;
    }
    let gone = state(line);
    db::supply::set_state(
        conn,
        &[line.supply_id.as_str()],
        &[gone.received],
        &[0],
        &[0],
        &["cancelled"],
    )
    .await?;
    Ok(Relocated {
        changed: changed.into_values().collect(),
        moved,
        released,
    })
}

/// Takes a preorder hold inside the caller's transaction: each line holds on the free
/// remaining of open supply at the location (earliest expected first), then on stock
/// available now, never more than both together. On `Err(NotHeld)` the caller rolls back.
pub async fn hold_preorder_in(
    conn: &mut PgConnection,
    h: &NewHold<'_>,
) -> Result<Result<Held, NotHeld>, sqlx::Error> {
    let (skus, channel) = match reservations::begin(conn, h).await? {
        Ok(started) => started,
        Err(not) => return Ok(Err(not)),
    };
    db::supply::mark_preorder(conn, h.reservation_id).await?;
    let levels = db::levels::lock_at(conn, h.location_id, &skus).await?;
    let safety = db::supply::safety_stock(conn, h.location_id).await?;
    let open = db::supply::lock_open_at(conn, h.location_id, &skus).await?;

    let mut short = Vec::new();
    let (mut line_skus, mut held, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_skus, mut a_ids, mut a_q) = (Vec::new(), Vec::new(), Vec::new());
    for l in h.lines {
        let avail = levels
            .iter()
            .find(|v| v.sku == l.sku)
            .map_or(0, |v| available(v.on_hand, v.reserved, safety));
        let lines: Vec<&SupplyRow> = open.iter().filter(|o| o.sku == l.sku).collect();
        let free: Vec<i64> = lines.iter().map(|o| state(o).free()).collect();
        // A channel shares out what will be there (stock now and free supply) as it shares
        // stock: a preorder for it takes no more than its share of both.
        let pooled = channel.as_ref().map(|c| {
            let all = free.iter().fold(avail.max(0), |t, f| t.saturating_add(*f));
            c.available(&l.sku, all)
        });
        if let Some(cap) = pooled.filter(|cap| l.quantity > *cap) {
            short.push(Shortfall {
                sku: l.sku.clone(),
                requested: l.quantity,
                available: cap,
            });
            continue;
        }
        match rules::spread(l.quantity, avail, &free) {
            Err(capacity) => short.push(Shortfall {
                sku: l.sku.clone(),
                requested: l.quantity,
                available: capacity,
            }),
            Ok(s) => {
                for (o, n) in lines.iter().zip(&s.on_supply).filter(|(_, n)| **n > 0) {
                    a_skus.push(l.sku.as_str());
                    a_ids.push(o.supply_id.as_str());
                    a_q.push(*n);
                }
                line_skus.push(l.sku.as_str());
                held.push(s.from_stock);
                waiting.push(l.quantity - s.from_stock);
            }
        }
    }
    if !short.is_empty() {
        return Ok(Err(NotHeld::Short(short)));
    }
    db::supply::insert_preorder_lines(conn, h.reservation_id, &line_skus, &held, &waiting).await?;
    if !a_ids.is_empty() {
        db::supply::allocate(conn, h.reservation_id, &a_skus, &a_ids, &a_q).await?;
    }
    let (mut r_skus, mut r_q) = (Vec::new(), Vec::new());
    for (s, q) in line_skus.iter().zip(&held).filter(|(_, q)| **q > 0) {
        r_skus.push(*s);
        r_q.push(*q);
    }
    let mut changed = Vec::new();
    let mut evs = Vec::new();
    if !r_skus.is_empty() {
        let locs = vec![h.location_id; r_skus.len()];
        changed = db::reservations::add_reserved(conn, &locs, &r_skus, &r_q).await?;
        for a in &changed {
            let d = r_skus
                .iter()
                .zip(&r_q)
                .find(|(s, _)| **s == a.sku)
                .map_or(0, |(_, q)| *q);
            let mut b = a.clone();
            b.reserved -= d;
            evs.push(change(
                &b,
                a,
                "reservation_hold",
                Some(h.reservation_id.to_owned()),
            ));
        }
    }
    Ok(Ok(Held {
        changed,
        events: evs,
    }))
}

/// What became of a movement's link to a supply line (recorded in the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Filled,
    UnknownSupply,
    OtherLevel,
    NotOpen,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Filled => "filled",
            Link::UnknownSupply => "unknown_supply",
            Link::OtherLevel => "other_level",
            Link::NotOpen => "not_open",
        }
    }
}

/// The supply line a movement fills: its `supply_id` on a receipt or transfer_in, or the
/// transfer line a transfer_in with `transfer_id` receives.
pub fn named_line(m: &Movement) -> Option<String> {
    match m.kind {
        MovementKind::Receipt | MovementKind::TransferIn => m.supply_id.clone().or_else(|| {
            (m.kind == MovementKind::TransferIn)
                .then_some(m.transfer_id.as_deref())
                .flatten()
                .map(|t| rules::transfer_supply_id(t, &m.sku))
        }),
        _ => None,
    }
}

/// The supply lines a movement batch fills, locked, with the preorders on them: computed on
/// copies per movement, written once at the end (inside the batch's transaction, after the
/// event_id dedupe, so a redelivered movement never fills twice).
#[derive(Default)]
pub struct Fills {
    lines: HashMap<String, SupplyRow>,
    /// Per line, its preorders oldest first: (allocation id, reservation, SKU, quantity).
    allocations: HashMap<String, Vec<AllocationRow>>,
    /// Names that exist but are at another (location, SKU).
    elsewhere: HashSet<String>,
    touched: BTreeSet<String>,
    /// (reservation, SKU, quantity) turned into ordinary holds.
    converted: Vec<(String, String, i64)>,
}

/// A line after a fill, what is left of its preorders, and (reservation, SKU, quantity) of
/// those that became ordinary holds.
type FilledLine = (SupplyRow, Vec<AllocationRow>, Vec<(String, String, i64)>);

/// What filling a line with one movement will do.
pub struct Fill {
    pub link: Link,
    /// Preorder quantity that becomes `reserved` on the movement's level.
    pub converted: i64,
    line: Option<FilledLine>,
}

impl Fills {
    /// Locks the lines the movements name (their levels are locked already).
    pub async fn lock(
        conn: &mut PgConnection,
        movements: &[&Movement],
    ) -> Result<Self, sqlx::Error> {
        let mut f = Fills::default();
        let named: BTreeSet<(String, &str, &str)> = movements
            .iter()
            .filter_map(|m| named_line(m).map(|n| (n, m.location_id.as_str(), m.sku.as_str())))
            .collect();
        if named.is_empty() {
            return Ok(f);
        }
        let ids: Vec<&str> = named.iter().map(|n| n.0.as_str()).collect();
        let locs: Vec<&str> = named.iter().map(|n| n.1).collect();
        let skus: Vec<&str> = named.iter().map(|n| n.2).collect();
        for r in db::supply::lock_named(conn, &ids, &locs, &skus).await? {
            f.lines.insert(r.supply_id.clone(), r);
        }
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|i| !f.lines.contains_key(*i))
            .collect();
        if !missing.is_empty() {
            f.elsewhere = db::supply::existing(conn, &missing)
                .await?
                .into_iter()
                .collect();
        }
        let open: Vec<&str> = f
            .lines
            .values()
            .filter(|l| l.status == "open" && l.allocated > 0)
            .map(|l| l.supply_id.as_str())
            .collect();
        if !open.is_empty() {
            for a in db::supply::allocations_on_lines(&mut *conn, &open).await? {
                f.allocations
                    .entry(a.supply_id.clone())
                    .or_default()
                    .push(a);
            }
        }
        Ok(f)
    }

    /// What `m` would do to the line it names; `None` when it names none. Nothing changes
    /// until [`Self::commit`].
    pub fn plan(&self, m: &Movement) -> Option<Fill> {
        let name = named_line(m)?;
        let Some(line) = self.lines.get(&name) else {
            // A transfer_in of a transfer nobody preordered against has no line: no link to record.
            m.supply_id.as_ref()?;
            let link = if self.elsewhere.contains(&name) {
                Link::OtherLevel
            } else {
                Link::UnknownSupply
            };
            return Some(Fill {
                link,
                converted: 0,
                line: None,
            });
        };
        if line.status != "open" {
            return Some(Fill {
                link: Link::NotOpen,
                converted: 0,
                line: None,
            });
        }
        let (next, converted) = rules::fill(state(line), m.quantity);
        let allocs = self.allocations.get(&name).cloned().unwrap_or_default();
        let amounts: Vec<i64> = allocs.iter().map(|a| a.quantity).collect();
        let per = rules::take_in_order(converted, &amounts);
        let mut after = Vec::new();
        let mut conv = Vec::new();
        for (a, n) in allocs.into_iter().zip(per) {
            if n > 0 {
                conv.push((a.reservation_id.clone(), a.sku.clone(), n));
            }
            let left = a.quantity - n;
            after.push(AllocationRow {
                quantity: left,
                ..a
            });
        }
        let mut row = line.clone();
        row.received = next.received;
        row.remaining = next.remaining;
        row.allocated = next.allocated;
        if next.remaining == 0 {
            row.status = "filled".into();
        }
        Some(Fill {
            link: Link::Filled,
            converted,
            line: Some((row, after, conv)),
        })
    }

    pub fn commit(&mut self, fill: Option<Fill>) {
        let Some((row, allocs, conv)) = fill.and_then(|f| f.line) else {
            return;
        };
        let id = row.supply_id.clone();
        self.lines.insert(id.clone(), row);
        self.allocations.insert(
            id.clone(),
            allocs.into_iter().filter(|a| a.quantity > 0).collect(),
        );
        // Allocations at 0 must still be deleted: keep them in the write below.
        self.touched.insert(id);
        self.converted.extend(conv);
    }

    /// Writes the filled lines, what is left of their preorders, and the preorder lines that
    /// now hold (the levels' `reserved` was raised by the caller).
    pub async fn save(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.touched.is_empty() {
            return Ok(());
        }
        let lines: Vec<&SupplyRow> = self
            .touched
            .iter()
            .filter_map(|id| self.lines.get(id))
            .collect();
        let ids: Vec<&str> = lines.iter().map(|l| l.supply_id.as_str()).collect();
        let received: Vec<i64> = lines.iter().map(|l| l.received).collect();
        let remaining: Vec<i64> = lines.iter().map(|l| l.remaining).collect();
        let allocated: Vec<i64> = lines.iter().map(|l| l.allocated).collect();
        let status: Vec<&str> = lines.iter().map(|l| l.status.as_str()).collect();
        // Allocations first: a filled line must carry none (schema CHECK is per row, but the
        // sum is what `allocated` says).
        let db_allocs = db::supply::allocations_on_lines(&mut *conn, &ids).await?;
        let kept: HashMap<i64, i64> = self
            .touched
            .iter()
            .flat_map(|id| self.allocations.get(id).into_iter().flatten())
            .map(|a| (a.id, a.quantity))
            .collect();
        let (a_ids, a_q): (Vec<i64>, Vec<i64>) = db_allocs
            .iter()
            .map(|a| (a.id, kept.get(&a.id).copied().unwrap_or(0)))
            .unzip();
        db::supply::set_allocations(conn, &a_ids, &a_q).await?;
        db::supply::set_state(conn, &ids, &received, &remaining, &allocated, &status).await?;
        if !self.converted.is_empty() {
            let r: Vec<&str> = self.converted.iter().map(|c| c.0.as_str()).collect();
            let s: Vec<&str> = self.converted.iter().map(|c| c.1.as_str()).collect();
            let q: Vec<i64> = self.converted.iter().map(|c| c.2).collect();
            db::supply::move_waiting_to_held(conn, &r, &s, &q).await?;
        }
        Ok(())
    }
}

/// The free remaining of open supply of some SKUs, per (location, SKU), with expected dates:
/// what `at=` reads add to stock available now.
pub async fn expected_for(
    pool: &PgPool,
    skus: &[String],
) -> Result<HashMap<(String, String), Vec<rules::Expected>>, sqlx::Error> {
    let mut out: HashMap<(String, String), Vec<rules::Expected>> = HashMap::new();
    for r in db::supply::free_for_skus(pool, skus).await? {
        out.entry((r.location_id, r.sku))
            .or_default()
            .push(rules::Expected {
                expected_at: r.expected_at,
                free: r.free,
            });
    }
    Ok(out)
}
