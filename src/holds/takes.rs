//! The writes of a group of holds already decided (by the hold group or the route group):
//! their lines, their levels' `reserved`, and one change event per hold and level.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;

use crate::db;
use crate::db::levels::LevelRow;
use crate::events::LevelChange;
use crate::ingest::apply::change;

/// One line of a hold decided in a group, held in full.
pub(crate) struct Take<'a> {
    pub reservation_id: &'a str,
    pub location_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
}

/// Writes the takes' lines and adds them to their (locked) levels: the levels after, and the
/// change events to record, one per take in the order given.
pub(crate) async fn write(
    conn: &mut PgConnection,
    takes: &[Take<'_>],
) -> Result<(Vec<LevelRow>, Vec<LevelChange>), sqlx::Error> {
    let ids: Vec<&str> = takes.iter().map(|t| t.reservation_id).collect();
    let skus: Vec<&str> = takes.iter().map(|t| t.sku).collect();
    let quantities: Vec<i64> = takes.iter().map(|t| t.quantity).collect();
    db::reservations::insert_lines_many(conn, &ids, &skus, &quantities).await?;
    // Per level: the quantity and the number of holds (each bumps the version once).
    let mut per_level: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    for t in takes {
        let e = per_level.entry((t.location_id, t.sku)).or_default();
        e.0 = e.0.saturating_add(t.quantity);
        e.1 += 1;
    }
    let (mut l_locs, mut l_skus, mut l_q, mut l_n) = (vec![], vec![], vec![], vec![]);
    for (&(loc, sku), &(q, n)) in &per_level {
        l_locs.push(loc);
        l_skus.push(sku);
        l_q.push(q);
        l_n.push(n);
    }
    let after = db::reservations::add_held_group(conn, &l_locs, &l_skus, &l_q, &l_n).await?;
    let changes = changes(&after, takes);
    Ok((after, changes))
}

/// One change event per take, in the order given: each take moves its level's `reserved` and
/// version on from where the one before it left them. `after` has every take applied.
fn changes(after: &[LevelRow], takes: &[Take<'_>]) -> Vec<LevelChange> {
    let mut levels: HashMap<(&str, &str), LevelRow> = after
        .iter()
        .map(|a| ((a.location_id.as_str(), a.sku.as_str()), a.clone()))
        .collect();
    for t in takes {
        if let Some(l) = levels.get_mut(&(t.location_id, t.sku)) {
            l.reserved -= t.quantity;
            l.version -= 1;
        }
    }
    let mut out = Vec::with_capacity(takes.len());
    for t in takes {
        let Some(level) = levels.get_mut(&(t.location_id, t.sku)) else {
            continue;
        };
        let before = level.clone();
        level.reserved += t.quantity;
        level.version += 1;
        out.push(change(
            &before,
            level,
            "reservation_hold",
            Some(t.reservation_id.to_owned()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(loc: &str, sku: &str, reserved: i64, version: i64) -> LevelRow {
        LevelRow {
            location_id: loc.into(),
            sku: sku.into(),
            on_hand: 100,
            reserved,
            in_transit: 0,
            version,
            last_count_at: None,
            last_movement_at: None,
        }
    }

    #[test]
    fn each_take_moves_its_level_on_from_the_one_before() {
        let after = [level("A", "X", 10, 7), level("B", "X", 3, 2)];
        let takes = [
            Take {
                reservation_id: "r1",
                location_id: "A",
                sku: "X",
                quantity: 2,
            },
            Take {
                reservation_id: "r2",
                location_id: "B",
                sku: "X",
                quantity: 3,
            },
            Take {
                reservation_id: "r3",
                location_id: "A",
                sku: "X",
                quantity: 5,
            },
        ];
        let c = changes(&after, &takes);
        let got: Vec<(&str, i64, i64, i64)> = c
            .iter()
            .map(|c| {
                (
                    c.location_id.as_str(),
                    c.before_reserved,
                    c.reserved,
                    c.version,
                )
            })
            .collect();
        assert_eq!(got, vec![("A", 3, 5, 6), ("B", 0, 3, 2), ("A", 5, 10, 7)]);
        assert_eq!(c[2].reference.as_deref(), Some("r3"));
    }
}
