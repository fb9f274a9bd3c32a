//! Supply lines: create or replace, list, read, cancel (their preorders move to the next line
//! or are released), and the free supply that `at=` reads add.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::cache::StockCache;
use crate::commit;
use crate::db;
use crate::db::levels::LevelRow;
use crate::db::supply::{AllocationRow, SupplyRow};
use crate::domain::availability::available;
use crate::domain::reservation::Status;
use crate::domain::supply::{self as rules, LineState};
use crate::events;
use crate::holds::reservations;
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

pub(super) fn state(r: &SupplyRow) -> LineState {
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
