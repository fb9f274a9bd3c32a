//! Fills: the supply lines a movement batch fills, inside the batch's transaction.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::PgConnection;

use crate::db;
use crate::db::supply::{AllocationRow, SupplyRow};
use crate::domain::movement::{Movement, MovementKind};
use crate::domain::supply as rules;

use super::lines::state;

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
