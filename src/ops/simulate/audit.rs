//! The oversell audit: did any hold promise stock that was not there? Judged against the
//! database after the run, from what the daemon answered and what the ledger recorded.
//!
//! Movements are facts and may take a level below its holds (a till sells the last unit while
//! it is held online; a count finds less). A level that saw such a decrease during the run is
//! therefore not judged by its totals; every other level that our holds touched must satisfy
//!
//! `granted ≤ max(0, on_hand at start + increases − safety stock − what older holds still hold)`
//!
//! where `granted` is what our holds answered 201 still hold or have sold (not released or
//! expired). A hold answered 201 must also exist in the database with the lines it was asked
//! for (a promise with no stock behind it is an oversell too), and no level may end with more
//! held than on-hand less safety stock unless facts explain it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::db::simulate::{HoldLine, LedgerEffect, LevelSnapshot};

type Level = (String, String);

/// A hold answered 201: where, and what it was asked to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub reservation_id: String,
    pub location_id: String,
    pub lines: Vec<(String, i64)>,
}

pub struct Inputs<'a> {
    pub start: &'a [LevelSnapshot],
    pub effects: &'a [LedgerEffect],
    pub granted: &'a [Granted],
    pub stored: &'a [HoldLine],
    /// What holds older than the run still hold, per level.
    pub older_held: &'a [(String, String, i64)],
    /// Levels with more held than on-hand less safety stock, now.
    pub over_reserved_now: &'a [LevelSnapshot],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Oversold {
    pub location_id: String,
    pub sku: String,
    pub granted: i64,
    pub allowed: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AuditReport {
    /// Every kind of oversell below, summed: must be 0.
    pub oversells: u64,
    /// Holds answered 201 that the database does not hold as answered.
    pub phantom_holds: Vec<String>,
    /// Levels whose holds took more than the stock there.
    pub oversold_levels: Vec<Oversold>,
    /// Levels held beyond on-hand less safety stock with no fact to explain it.
    pub over_reserved: Vec<Oversold>,
    /// Levels our holds touched, judged by their totals.
    pub levels_judged: u64,
    /// Levels a fact (sale without a hold, count, damage...) took down during the run: their
    /// holds may legitimately exceed the stock now.
    pub levels_with_fact_decreases: u64,
}

const SOLD_OR_HELD: [&str; 3] = ["held", "confirmed", "fulfilled"];

pub fn audit(i: &Inputs<'_>) -> AuditReport {
    let mut r = AuditReport::default();

    // A 201 must be in the database, at its location, with its lines.
    let mut stored: HashMap<&str, (&str, &str, BTreeMap<&str, i64>)> = HashMap::new();
    for l in i.stored {
        let e = stored.entry(l.reservation_id.as_str()).or_insert((
            l.location_id.as_str(),
            l.status.as_str(),
            BTreeMap::new(),
        ));
        e.2.insert(l.sku.as_str(), l.quantity);
    }
    for g in i.granted {
        let asked: BTreeMap<&str, i64> = g.lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        match stored.get(g.reservation_id.as_str()) {
            Some((loc, _, lines)) if *loc == g.location_id && *lines == asked => {}
            _ => r.phantom_holds.push(g.reservation_id.clone()),
        }
    }

    // Facts: any decrease not made by one of our holds being sold, and every count.
    let fulfilled: BTreeSet<&str> = stored
        .iter()
        .filter(|(_, (_, status, _))| *status == "fulfilled")
        .map(|(id, _)| *id)
        .collect();
    let mut increases: HashMap<Level, i64> = HashMap::new();
    let mut facts: BTreeSet<Level> = BTreeSet::new();
    for e in i.effects {
        let level = (e.location_id.clone(), e.sku.clone());
        let sold_from_our_hold = e
            .reservation_id
            .as_deref()
            .is_some_and(|id| fulfilled.contains(id));
        if e.kind == "count" || (e.effect < 0 && !sold_from_our_hold) {
            facts.insert(level);
        } else if e.effect > 0 {
            *increases.entry(level).or_default() += e.effect;
        }
    }
    r.levels_with_fact_decreases = facts.len() as u64;

    let start: HashMap<Level, &LevelSnapshot> = i
        .start
        .iter()
        .map(|l| ((l.location_id.clone(), l.sku.clone()), l))
        .collect();
    let older: HashMap<Level, i64> = i
        .older_held
        .iter()
        .map(|(l, s, q)| ((l.clone(), s.clone()), *q))
        .collect();
    let mut granted: BTreeMap<Level, i64> = BTreeMap::new();
    for (id, (loc, status, lines)) in &stored {
        if !SOLD_OR_HELD.contains(status) {
            continue;
        }
        if !i.granted.iter().any(|g| g.reservation_id == *id) {
            continue;
        }
        for (sku, q) in lines {
            *granted
                .entry(((*loc).to_owned(), (*sku).to_owned()))
                .or_default() += q;
        }
    }
    for (level, g) in granted {
        if facts.contains(&level) {
            continue;
        }
        r.levels_judged += 1;
        let (on_hand, safety) = start
            .get(&level)
            .map(|l| (l.on_hand, l.safety_stock))
            .unwrap_or((0, 0));
        let allowed = (on_hand + increases.get(&level).copied().unwrap_or(0)
            - safety
            - older.get(&level).copied().unwrap_or(0))
        .max(0);
        if g > allowed {
            r.oversold_levels.push(Oversold {
                location_id: level.0,
                sku: level.1,
                granted: g,
                allowed,
            });
        }
    }

    for now in i.over_reserved_now {
        let level = (now.location_id.clone(), now.sku.clone());
        if facts.contains(&level) {
            continue;
        }
        // Already so before the run: not ours to explain.
        let before = start
            .get(&level)
            .is_some_and(|s| s.reserved > 0 && s.reserved > s.on_hand - s.safety_stock);
        if before {
            continue;
        }
        r.over_reserved.push(Oversold {
            location_id: level.0,
            sku: level.1,
            granted: now.reserved,
            allowed: (now.on_hand - now.safety_stock).max(0),
        });
    }
    r.oversells = (r.phantom_holds.len() + r.oversold_levels.len() + r.over_reserved.len()) as u64;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(loc: &str, sku: &str, on_hand: i64, reserved: i64, safety: i64) -> LevelSnapshot {
        LevelSnapshot {
            location_id: loc.into(),
            sku: sku.into(),
            on_hand,
            reserved,
            safety_stock: safety,
        }
    }

    fn effect(loc: &str, sku: &str, kind: &str, effect: i64, res: Option<&str>) -> LedgerEffect {
        LedgerEffect {
            location_id: loc.into(),
            sku: sku.into(),
            kind: kind.into(),
            effect,
            reservation_id: res.map(Into::into),
        }
    }

    fn hold(id: &str, loc: &str, sku: &str, q: i64) -> Granted {
        Granted {
            reservation_id: id.into(),
            location_id: loc.into(),
            lines: vec![(sku.into(), q)],
        }
    }

    fn stored(id: &str, loc: &str, status: &str, sku: &str, q: i64) -> HoldLine {
        HoldLine {
            reservation_id: id.into(),
            location_id: loc.into(),
            status: status.into(),
            sku: sku.into(),
            quantity: q,
        }
    }

    fn run(
        start: &[LevelSnapshot],
        effects: &[LedgerEffect],
        granted: &[Granted],
        st: &[HoldLine],
        now: &[LevelSnapshot],
    ) -> AuditReport {
        audit(&Inputs {
            start,
            effects,
            granted,
            stored: st,
            older_held: &[],
            over_reserved_now: now,
        })
    }

    #[test]
    fn holds_within_the_stock_are_clean() {
        let start = [level("E", "A", 3, 0, 1)];
        let granted = [
            hold("r1", "E", "A", 1),
            hold("r2", "E", "A", 1),
            hold("r3", "E", "A", 1),
        ];
        let st = [
            stored("r1", "E", "fulfilled", "A", 1),
            stored("r2", "E", "held", "A", 1),
            // Released: its unit went back and was held again by r3.
            stored("r3", "E", "released", "A", 1),
        ];
        let effects = [effect("E", "A", "sale", -1, Some("r1"))];
        let r = run(&start, &effects, &granted, &st, &[]);
        assert_eq!(r.oversells, 0, "{r:?}");
        assert_eq!(r.levels_judged, 1);
    }

    #[test]
    fn more_granted_than_the_stock_is_an_oversell() {
        // 3 on hand, 1 safety: 2 may be held; 3 were.
        let start = [level("E", "A", 3, 0, 1)];
        let granted = [hold("r1", "E", "A", 2), hold("r2", "E", "A", 1)];
        let st = [
            stored("r1", "E", "held", "A", 2),
            stored("r2", "E", "confirmed", "A", 1),
        ];
        let r = run(&start, &[], &granted, &st, &[]);
        assert_eq!(r.oversells, 1, "{r:?}");
        assert_eq!(
            r.oversold_levels,
            vec![Oversold {
                location_id: "E".into(),
                sku: "A".into(),
                granted: 3,
                allowed: 2
            }]
        );
        // A receipt during the run makes room for it.
        let effects = [effect("E", "A", "receipt", 5, None)];
        assert_eq!(run(&start, &effects, &granted, &st, &[]).oversells, 0);
    }

    #[test]
    fn a_fact_decrease_excuses_the_level_but_not_a_phantom_hold() {
        let start = [level("S", "A", 1, 0, 0)];
        let granted = [hold("r1", "S", "A", 1), hold("r2", "S", "A", 1)];
        let st = [stored("r1", "S", "held", "A", 1)];
        let effects = [effect("S", "A", "sale", -1, None)];
        let now = [level("S", "A", 0, 1, 0)];
        let r = run(&start, &effects, &granted, &st, &now);
        assert_eq!(r.levels_with_fact_decreases, 1);
        assert!(r.oversold_levels.is_empty() && r.over_reserved.is_empty());
        assert_eq!(r.phantom_holds, vec!["r2".to_owned()]);
        assert_eq!(r.oversells, 1);
    }

    #[test]
    fn a_level_held_beyond_its_stock_without_facts_is_reported() {
        // What a corrupted level looks like: nothing in the ledger explains it.
        let start = [level("S", "B", 4, 0, 0)];
        let now = [level("S", "B", 4, 9, 0)];
        let r = run(&start, &[], &[], &[], &now);
        assert_eq!(r.over_reserved.len(), 1, "{r:?}");
        assert_eq!(r.oversells, 1);
        // Already so before the run: not this run's doing.
        let r = run(&now, &[], &[], &[], &now);
        assert_eq!(r.oversells, 0);
    }
}
