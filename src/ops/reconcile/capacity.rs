//! Order capacity: each location's day counter against the orders assigned to it that day.
//!
//! A route takes its slot in a statement of its own, before its transaction, and gives it back
//! if the route does not commit (`holds::routing`). A route that stops in between (a crash, a
//! connection lost at the commit) leaves the slot counted with no order: that day's capacity is
//! under-used. A counter *below* its assignments would mean a day's capacity was exceeded,
//! which must never happen.
//!
//! Neither is repaired. Taking a leaked slot back cannot be told apart, in one look, from
//! taking the slot of a route about to commit, which would let the day overflow by one; and
//! the counter starts again at zero the next day.
//!
//! A route between its slot and its commit looks like a leak for a moment, so a day that
//! differs is looked at again, and the smallest difference over the looks is what is reported.
//! Under a steady stream of routes to one location that can still count a route in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;

use crate::db;
use crate::db::invariants::CapacityDifference;

/// Looks taken when the first finds a difference, `SETTLE` apart.
const LOOKS: usize = 3;

/// Differences between the order counters and the orders assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CapacityFindings {
    /// Slots counted without an order, over every day found: capacity lost for the day.
    pub leaked_slots: u64,
    pub leaked: Vec<CapacityDifference>,
    /// Days with more orders than slots counted: the day's capacity could be exceeded.
    pub exceeded_days: u64,
    pub exceeded: Vec<CapacityDifference>,
}

impl CapacityFindings {
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty() && self.exceeded.is_empty()
    }
}

/// Compares the counters of each location's today and yesterday with their assignments.
pub async fn check(
    pool: &PgPool,
    settle: Duration,
    examples: usize,
) -> Result<CapacityFindings, sqlx::Error> {
    let mut looks = vec![db::invariants::capacity_differences(pool).await?];
    while !looks[0].is_empty() && looks.len() < LOOKS {
        tokio::time::sleep(settle).await;
        looks.push(db::invariants::capacity_differences(pool).await?);
    }
    Ok(findings(&looks, examples))
}

/// What every look agrees on: a leak is the smallest surplus a day showed in any look (a day
/// missing from a look had none then), an excess a day short in every look.
fn findings(looks: &[Vec<CapacityDifference>], examples: usize) -> CapacityFindings {
    type Key = (String, NaiveDate);
    let mut surplus: BTreeMap<Key, CapacityDifference> = BTreeMap::new();
    let mut short: BTreeMap<Key, (usize, CapacityDifference)> = BTreeMap::new();
    for (i, look) in looks.iter().enumerate() {
        let mut seen_surplus = BTreeSet::new();
        for d in look {
            let key = (d.location_id.clone(), d.local_date);
            if d.counted > d.assigned {
                seen_surplus.insert(key.clone());
                if i == 0 {
                    surplus.insert(key, d.clone());
                } else if let Some(s) = surplus.get_mut(&key) {
                    if d.counted.saturating_sub(d.assigned) < s.counted.saturating_sub(s.assigned) {
                        *s = d.clone();
                    }
                }
            } else if short.get(&key).map_or(0, |(n, _)| *n) == i {
                short.insert(key, (i + 1, d.clone()));
            }
        }
        surplus.retain(|k, _| seen_surplus.contains(k));
    }
    let leaked: Vec<CapacityDifference> = surplus.into_values().collect();
    let leaked_slots = leaked
        .iter()
        .map(|d| d.counted.saturating_sub(d.assigned).unsigned_abs())
        .sum();
    let exceeded: Vec<CapacityDifference> = short
        .into_values()
        .filter(|(n, _)| *n == looks.len())
        .map(|(_, d)| d)
        .collect();
    CapacityFindings {
        leaked_slots,
        leaked: leaked.into_iter().take(examples).collect(),
        exceeded_days: exceeded.len() as u64,
        exceeded: exceeded.into_iter().take(examples).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(location: &str, counted: i64, assigned: i64) -> CapacityDifference {
        CapacityDifference {
            location_id: location.to_owned(),
            local_date: NaiveDate::from_ymd_opt(2026, 12, 2).expect("a date"),
            counted,
            assigned,
        }
    }

    #[test]
    fn a_route_in_flight_in_one_look_is_not_a_leak() {
        let f = findings(&[vec![d("A", 5, 4)], vec![], vec![d("A", 5, 4)]], 10);
        assert!(f.is_clean(), "{f:?}");
    }

    #[test]
    fn a_leak_is_the_smallest_surplus_seen() {
        let f = findings(
            &[
                vec![d("A", 7, 4), d("B", 2, 1)],
                vec![d("A", 8, 6), d("B", 3, 2)],
                vec![d("A", 9, 6), d("B", 2, 1)],
            ],
            10,
        );
        assert_eq!(f.leaked_slots, 3);
        assert_eq!(f.leaked, vec![d("A", 8, 6), d("B", 2, 1)]);
        assert!(f.exceeded.is_empty());
    }

    #[test]
    fn an_excess_must_show_in_every_look() {
        let f = findings(&[vec![d("A", 3, 4)], vec![d("A", 3, 5)]], 10);
        assert_eq!(f.exceeded, vec![d("A", 3, 5)]);
        assert_eq!(f.exceeded_days, 1);
        let many: Vec<_> = (0..12).map(|i| d(&format!("L{i:02}"), 0, 1)).collect();
        let f = findings(&[many.clone(), many], 10);
        assert_eq!(
            (f.exceeded_days, f.exceeded.len()),
            (12, 10),
            "counted, then cut"
        );
        let f = findings(&[vec![d("A", 3, 4)], vec![]], 10);
        assert!(f.is_clean(), "{f:?}");
    }
}
