//! The writes of a group of holds already decided (by the hold group or the route group):
//! their lines, their levels' `reserved`, and one change event per level.
//!
//! A group commits once, so it is one change of each level it touches: consumers see the
//! level's state after the commit (the only state any reader could see), with `version` up by
//! one, as for a hold taken alone. One event per hold instead cost a flash sale an outbox row,
//! a publish and a JetStream fsync for every hold of a group, and told consumers nothing a
//! reader could act on: the intermediate states were never committed.

use std::collections::BTreeMap;

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
/// change events to record, one per level in the order of its first take.
pub(crate) async fn write(
    conn: &mut PgConnection,
    takes: &[Take<'_>],
) -> Result<(Vec<LevelRow>, Vec<LevelChange>), sqlx::Error> {
    let ids: Vec<&str> = takes.iter().map(|t| t.reservation_id).collect();
    let skus: Vec<&str> = takes.iter().map(|t| t.sku).collect();
    let quantities: Vec<i64> = takes.iter().map(|t| t.quantity).collect();
    db::reservations::insert_lines_many(conn, &ids, &skus, &quantities).await?;
    let per_level = per_level(takes);
    let (mut l_locs, mut l_skus, mut l_q) = (vec![], vec![], vec![]);
    for (&(loc, sku), l) in &per_level {
        l_locs.push(loc);
        l_skus.push(sku);
        l_q.push(l.quantity);
    }
    let after = db::reservations::add_held_group(conn, &l_locs, &l_skus, &l_q).await?;
    let changes = changes(&after, &per_level);
    Ok((after, changes))
}

/// What a group's takes add to one level.
struct PerLevel<'a> {
    quantity: i64,
    /// Position of the level's first take: its event's place among the group's.
    first: usize,
    /// The reservation whose change this is, when the level's takes are all of one.
    reference: Option<&'a str>,
}

fn per_level<'a>(takes: &[Take<'a>]) -> BTreeMap<(&'a str, &'a str), PerLevel<'a>> {
    let mut out: BTreeMap<(&str, &str), PerLevel<'a>> = BTreeMap::new();
    for (i, t) in takes.iter().enumerate() {
        let e = out.entry((t.location_id, t.sku)).or_insert(PerLevel {
            quantity: 0,
            first: i,
            reference: Some(t.reservation_id),
        });
        // Saturating: the sum was checked against the level's available when the group was
        // decided, so it cannot reach the bound; if it did, the update's bigint addition would
        // fail the group rather than wrap.
        e.quantity = e.quantity.saturating_add(t.quantity);
        if e.reference != Some(t.reservation_id) {
            e.reference = None;
        }
    }
    out
}

/// One change event per level, from the level after the group back to the level before it.
fn changes(
    after: &[LevelRow],
    per_level: &BTreeMap<(&str, &str), PerLevel<'_>>,
) -> Vec<LevelChange> {
    let mut out: Vec<(usize, LevelChange)> = after
        .iter()
        .filter_map(|a| {
            let l = per_level.get(&(a.location_id.as_str(), a.sku.as_str()))?;
            let mut before = a.clone();
            before.reserved = a.reserved.saturating_sub(l.quantity);
            Some((
                l.first,
                change(
                    &before,
                    a,
                    "reservation_hold",
                    l.reference.map(str::to_owned),
                ),
            ))
        })
        .collect();
    out.sort_by_key(|(first, _)| *first);
    out.into_iter().map(|(_, c)| c).collect()
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

    fn take<'a>(id: &'a str, loc: &'a str, sku: &'a str, quantity: i64) -> Take<'a> {
        Take {
            reservation_id: id,
            location_id: loc,
            sku,
            quantity,
        }
    }

    #[test]
    fn a_group_is_one_change_of_each_level_it_touches() {
        let after = [level("B", "X", 3, 2), level("A", "X", 10, 7)];
        let takes = [
            take("r1", "A", "X", 2),
            take("r2", "B", "X", 3),
            take("r3", "A", "X", 5),
        ];
        let c = changes(&after, &per_level(&takes));
        let got: Vec<(&str, i64, i64, i64, Option<&str>)> = c
            .iter()
            .map(|c| {
                (
                    c.location_id.as_str(),
                    c.before_reserved,
                    c.reserved,
                    c.version,
                    c.reference.as_deref(),
                )
            })
            .collect();
        // A first (its first take came first), from before both of its holds to after them;
        // only B's change is one reservation's.
        assert_eq!(got, vec![("A", 3, 10, 7, None), ("B", 0, 3, 2, Some("r2"))]);
    }

    #[test]
    fn a_level_taken_by_several_lines_of_one_hold_names_that_hold() {
        let after = [level("A", "X", 4, 1)];
        let takes = [take("r1", "A", "X", 1), take("r1", "A", "X", 3)];
        let c = changes(&after, &per_level(&takes));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].before_reserved, c[0].reserved), (0, 4));
        assert_eq!(c[0].reference.as_deref(), Some("r1"));
    }
}
