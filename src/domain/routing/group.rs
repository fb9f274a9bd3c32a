//! Routes decided together, in one transaction (group commit): each is decided as if the ones
//! before it in the group had already been held, and admitted only while everything it takes
//! is still there under the level locks.

use std::collections::HashMap;

use super::Assignment;

/// What the routes of a group decided so far take: stock per (location, SKU), and orders per
/// location (one of its daily slots per route assigned to it).
#[derive(Debug, Default, Clone)]
pub struct Taken {
    stock: HashMap<(String, String), i64>,
    orders: HashMap<String, i64>,
}

impl Taken {
    pub fn stock(&self, location_id: &str, sku: &str) -> i64 {
        self.stock
            .get(&(location_id.to_owned(), sku.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn orders(&self, location_id: &str) -> i64 {
        self.orders.get(location_id).copied().unwrap_or(0)
    }

    pub fn add(&mut self, assignments: &[Assignment]) {
        for a in assignments {
            *self.orders.entry(a.location_id.clone()).or_default() += 1;
            for l in &a.lines {
                let q = self
                    .stock
                    .entry((a.location_id.clone(), l.sku.clone()))
                    .or_default();
                *q = q.saturating_add(l.quantity);
            }
        }
    }
}

/// Which routes of a group keep their assignments, in arrival order: a route is admitted when
/// every line fits what its location has available with the routes admitted before it taken
/// out, and each of its locations has a slot left for it. A route not admitted took nothing.
///
/// `available(location, sku, taken)` is the available-to-promise at the location once `taken`
/// more is reserved there (0 for a level that does not exist); `slots_left(location)` is what
/// is left of its day's capacity before the group (`None`: unlimited).
pub fn admit(
    routes: &[&[Assignment]],
    available: impl Fn(&str, &str, i64) -> i64,
    slots_left: impl Fn(&str) -> Option<i64>,
) -> Vec<bool> {
    let mut taken = Taken::default();
    routes
        .iter()
        .map(|assignments| {
            let fits = assignments.iter().all(|a| {
                let slot = slots_left(&a.location_id)
                    .is_none_or(|left| left - taken.orders(&a.location_id) >= 1);
                slot && a.lines.iter().all(|l| {
                    available(&a.location_id, &l.sku, taken.stock(&a.location_id, &l.sku))
                        >= l.quantity
                })
            });
            if fits {
                taken.add(assignments);
            }
            fits
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::OrderLine;
    use proptest::prelude::*;

    fn at(loc: &str, lines: &[(&str, i64)]) -> Assignment {
        Assignment {
            location_id: loc.into(),
            distance_km: 0.0,
            lines: lines
                .iter()
                .map(|&(sku, quantity)| OrderLine {
                    sku: sku.into(),
                    quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn a_route_is_admitted_whole_or_not_at_all_and_a_refused_one_takes_nothing() {
        let r1 = [at("A", &[("X", 3)])];
        // Needs 3 at A (only 2 left after r1) and 1 at B: refused whole.
        let r2 = [at("A", &[("X", 3)]), at("B", &[("Y", 1)])];
        let r3 = [at("A", &[("X", 2)]), at("B", &[("Y", 1)])];
        let stock = |loc: &str, _: &str, taken: i64| if loc == "A" { 5 - taken } else { 1 - taken };
        let got = admit(&[&r1, &r2, &r3], stock, |_| None);
        assert_eq!(got, vec![true, false, true]);
    }

    #[test]
    fn a_location_takes_no_more_routes_than_its_slots() {
        let r = [at("A", &[("X", 1)])];
        let got = admit(&[&r, &r, &r], |_, _, t| 100 - t, |_| Some(2));
        assert_eq!(got, vec![true, true, false]);
        let got = admit(&[&r], |_, _, t| 100 - t, |_| Some(0));
        assert_eq!(got, vec![false]);
    }

    proptest! {
        /// Whatever the group asks, what it admits never takes more than a level has, or more
        /// orders than a location's slots.
        #[test]
        fn admitted_routes_never_take_more_than_is_there(
            routes in proptest::collection::vec(
                proptest::collection::vec((0usize..3, 0usize..3, 1i64..6), 1..4), 0..30),
            stock in proptest::collection::vec(0i64..12, 9),
            slots in proptest::collection::vec(proptest::option::of(0i64..8), 3),
        ) {
            let locs = ["A", "B", "C"];
            let skus = ["X", "Y", "Z"];
            let routes: Vec<Vec<Assignment>> = routes
                .iter()
                .map(|r| {
                    // One assignment per location, as routing makes them.
                    let mut by_loc: Vec<Assignment> = Vec::new();
                    for &(l, s, q) in r {
                        match by_loc.iter_mut().find(|a| a.location_id == locs[l]) {
                            Some(a) if a.lines.iter().all(|x| x.sku != skus[s]) => {
                                a.lines.push(OrderLine { sku: skus[s].into(), quantity: q })
                            }
                            Some(_) => {}
                            None => by_loc.push(at(locs[l], &[(skus[s], q)])),
                        }
                    }
                    by_loc
                })
                .collect();
            let base = |loc: &str, sku: &str| {
                let l = locs.iter().position(|x| *x == loc).unwrap_or(0);
                let s = skus.iter().position(|x| *x == sku).unwrap_or(0);
                stock[l * 3 + s]
            };
            let slot = |loc: &str| slots[locs.iter().position(|x| *x == loc).unwrap_or(0)];
            let refs: Vec<&[Assignment]> = routes.iter().map(Vec::as_slice).collect();
            let admitted = admit(&refs, |l, s, t| base(l, s) - t, slot);
            let mut took = Taken::default();
            for (r, ok) in routes.iter().zip(&admitted) {
                if *ok {
                    took.add(r);
                }
            }
            for l in locs {
                if let Some(n) = slot(l) {
                    prop_assert!(took.orders(l) <= n);
                }
                for s in skus {
                    prop_assert!(took.stock(l, s) <= base(l, s));
                }
            }
            // Greedy in arrival order: a refused route did not fit at its turn.
            let mut before = Taken::default();
            for (r, ok) in routes.iter().zip(&admitted) {
                let fits = r.iter().all(|a| {
                    slot(&a.location_id).is_none_or(|n| n - before.orders(&a.location_id) >= 1)
                        && a.lines.iter().all(|x| {
                            base(&a.location_id, &x.sku) - before.stock(&a.location_id, &x.sku)
                                >= x.quantity
                        })
                });
                prop_assert_eq!(fits, *ok);
                if *ok {
                    before.add(r);
                }
            }
        }
    }
}
