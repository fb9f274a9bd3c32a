//! Lines split in quantity: examples, and properties against an independent greedy and a
//! brute-force optimum.

use super::*;
use crate::domain::geo::haversine_km;
use crate::domain::location::LocationKind;
use proptest::prelude::*;

const TAIPEI: (f64, f64) = (25.05306, 121.52639);

fn line(sku: &str, quantity: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
    }
}

fn at(id: &str, kind: LocationKind, km_north: f64, stock: &[(&str, i64)]) -> Candidate {
    Candidate {
        location_id: id.into(),
        kind,
        lat: TAIPEI.0 + km_north / crate::domain::geo::EARTH_RADIUS_KM.to_radians(),
        lon: TAIPEI.1,
        pickup: true,
        ship_from: true,
        available: stock.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
        capacity_left: None,
    }
}

fn split_req(lines: &[OrderLine]) -> RouteRequest<'_> {
    RouteRequest {
        lines,
        fulfilment: Fulfilment::Delivery,
        customer_lat: TAIPEI.0,
        customer_lon: TAIPEI.1,
        pickup_location_id: None,
        max_distance_km: None,
        allow_split: true,
    }
}

fn given(out: &RouteOutcome) -> Vec<(&str, Vec<(&str, i64)>)> {
    out.assignments
        .iter()
        .map(|a| {
            (
                a.location_id.as_str(),
                a.lines
                    .iter()
                    .map(|l| (l.sku.as_str(), l.quantity))
                    .collect(),
            )
        })
        .collect()
}

fn reason<'o>(out: &'o RouteOutcome, id: &str) -> &'o str {
    out.explanation
        .iter()
        .find(|c| c.location_id == id)
        .map_or("", |c| c.reason.as_str())
}

#[test]
fn nine_units_from_stores_of_four_and_five_and_a_warehouse_of_five() {
    let lines = [line("TEE-RED-M", 9)];
    let cands = [
        at("S4", LocationKind::Store, 3.0, &[("TEE-RED-M", 4)]),
        at("S5", LocationKind::Store, 8.0, &[("TEE-RED-M", 5)]),
        at("WH", LocationKind::Warehouse, 5.0, &[("TEE-RED-M", 5)]),
    ];
    let mut r = split_req(&lines);
    let out = route(&r, &cands);
    // Any two cover 9; S4 + WH (8 km) is the nearest pair. The nearest gives all it has.
    assert_eq!(
        given(&out),
        [
            ("S4", vec![("TEE-RED-M", 4)]),
            ("WH", vec![("TEE-RED-M", 5)])
        ]
    );
    assert_eq!(reason(&out, "S4"), "gives 4 of 9 TEE-RED-M");
    assert_eq!(reason(&out, "WH"), "gives 5 of 9 TEE-RED-M");
    assert_eq!(reason(&out, "S5"), "covered by fewer or nearer shipments");

    r.allow_split = false;
    let out = route(&r, &cands);
    assert!(out.assignments.is_empty());
    assert_eq!(
        reason(&out, "S4"),
        "no stock for line TEE-RED-M (needs 9, has 4)"
    );
}

#[test]
fn a_whole_line_rides_along_with_a_split_one() {
    let lines = [line("TEE-RED-M", 9), line("CAP-BLK", 2)];
    let cands = [
        at(
            "A",
            LocationKind::Store,
            2.0,
            &[("TEE-RED-M", 4), ("CAP-BLK", 2)],
        ),
        at("B", LocationKind::Store, 3.0, &[("TEE-RED-M", 5)]),
        at("C", LocationKind::Store, 1.0, &[("CAP-BLK", 9)]),
    ];
    let out = route(&split_req(&lines), &cands);
    // {A, B} covers both in 2; C is nearer but would make 3.
    assert_eq!(
        given(&out),
        [
            ("A", vec![("TEE-RED-M", 4), ("CAP-BLK", 2)]),
            ("B", vec![("TEE-RED-M", 5)])
        ]
    );
    assert_eq!(reason(&out, "A"), "gives 4 of 9 TEE-RED-M, 2 of 2 CAP-BLK");
    assert_eq!(reason(&out, "C"), "covered by fewer or nearer shipments");
}

#[test]
fn capacity_and_distance_still_gate_split_locations() {
    let lines = [line("A", 6)];
    let mut full = at("FULL", LocationKind::Store, 1.0, &[("A", 5)]);
    full.capacity_left = Some(0);
    let far = at("FAR", LocationKind::Store, 80.0, &[("A", 5)]);
    let mut one = at("ONE", LocationKind::Store, 2.0, &[("A", 3)]);
    one.capacity_left = Some(1);
    let near = at("NEAR", LocationKind::Store, 4.0, &[("A", 3)]);
    let mut r = split_req(&lines);
    r.max_distance_km = Some(50.0);
    let out = route(&r, &[full, far, one, near]);
    assert_eq!(
        given(&out),
        [("ONE", vec![("A", 3)]), ("NEAR", vec![("A", 3)])]
    );
    assert_eq!(reason(&out, "FULL"), "capacity full today");
    assert!(reason(&out, "FAR").starts_with("too far"));
}

#[test]
fn beyond_three_shipments_the_nearest_of_identical_stores_are_used() {
    let lines = [line("A", 20)];
    let cands: Vec<Candidate> = (0..12)
        .map(|i| {
            at(
                &format!("S{i:02}"),
                LocationKind::Store,
                30.0 - i as f64,
                &[("A", 3)],
            )
        })
        .collect();
    let out = route(&split_req(&lines), &cands);
    let ids: Vec<&str> = out
        .assignments
        .iter()
        .map(|a| a.location_id.as_str())
        .collect();
    assert_eq!(ids, ["S11", "S10", "S09", "S08", "S07", "S06", "S05"]);
    let units: Vec<i64> = out
        .assignments
        .iter()
        .map(|a| a.lines[0].quantity)
        .collect();
    assert_eq!(units, [3, 3, 3, 3, 3, 3, 2]);
}

// ---- Properties ----

const SKUS: [&str; 4] = ["A", "B", "C", "D"];

#[derive(Debug, Clone)]
struct Case {
    lines: Vec<OrderLine>,
    cands: Vec<Candidate>,
    customer: (f64, f64),
    max_km: Option<f64>,
}

fn arb_case(max_cands: usize, stock_max: i64) -> impl Strategy<Value = Case> {
    let cand = move |i: usize| {
        (
            prop::sample::select(vec![
                LocationKind::Store,
                LocationKind::Store,
                LocationKind::Warehouse,
            ]),
            (24.0f64..25.3, 120.5f64..121.9),
            prop::bool::weighted(0.8),
            prop::collection::vec(0i64..stock_max, SKUS.len()),
            prop::option::of(0i64..3),
        )
            .prop_map(move |(kind, (lat, lon), ship_from, stock, cap)| Candidate {
                location_id: format!("L{i:02}"),
                kind,
                lat,
                lon,
                pickup: true,
                ship_from,
                available: SKUS
                    .iter()
                    .zip(stock)
                    .filter(|(_, q)| *q > 0)
                    .map(|(s, q)| (s.to_string(), q))
                    .collect(),
                capacity_left: cap,
            })
    };
    let cands = (0..=max_cands).prop_flat_map(move |n| (0..n).map(cand).collect::<Vec<_>>());
    let lines =
        prop::sample::subsequence(SKUS.to_vec(), 1..=SKUS.len()).prop_flat_map(move |skus| {
            prop::collection::vec(1i64..2 * stock_max, skus.len()).prop_map(move |qs| {
                skus.iter()
                    .zip(qs)
                    .map(|(s, q)| line(s, q))
                    .collect::<Vec<_>>()
            })
        });
    (
        lines,
        cands,
        (24.0f64..25.3, 120.5f64..121.9),
        prop::option::of(30.0f64..200.0),
    )
        .prop_map(|(lines, cands, customer, max_km)| Case {
            lines,
            cands,
            customer,
            max_km,
        })
}

impl Case {
    fn req(&self) -> RouteRequest<'_> {
        RouteRequest {
            lines: &self.lines,
            fulfilment: Fulfilment::Delivery,
            customer_lat: self.customer.0,
            customer_lon: self.customer.1,
            pickup_location_id: None,
            max_distance_km: self.max_km,
            allow_split: true,
        }
    }

    fn dist(&self, c: &Candidate) -> f64 {
        haversine_km(self.customer.0, self.customer.1, c.lat, c.lon)
    }

    fn has(c: &Candidate, sku: &str) -> i64 {
        c.available.get(sku).copied().unwrap_or(0)
    }

    /// Independent restatement of the gates for a delivery; nearest first (ties: id).
    fn usable(&self) -> Vec<&Candidate> {
        let mut v: Vec<&Candidate> = self
            .cands
            .iter()
            .filter(|c| c.ship_from || c.kind != LocationKind::Store)
            .filter(|c| self.max_km.is_none_or(|m| self.dist(c) <= m))
            .filter(|c| c.capacity_left.is_none_or(|n| n > 0))
            .collect();
        v.sort_by(|a, b| {
            self.dist(a)
                .total_cmp(&self.dist(b))
                .then(a.location_id.cmp(&b.location_id))
        });
        v
    }

    /// Per line, whether some usable location holds all of it (then it is never split).
    fn whole(&self) -> Vec<bool> {
        let usable = self.usable();
        self.lines
            .iter()
            .map(|l| usable.iter().any(|c| Self::has(c, &l.sku) >= l.quantity))
            .collect()
    }

    /// What is still missing per line after `set` (1 unit for a whole line).
    fn missing(&self, set: &[&Candidate]) -> Vec<i64> {
        let whole = self.whole();
        self.lines
            .iter()
            .zip(whole)
            .map(|(l, w)| {
                if w {
                    i64::from(!set.iter().any(|c| Self::has(c, &l.sku) >= l.quantity))
                } else {
                    (l.quantity - set.iter().map(|c| Self::has(c, &l.sku)).sum::<i64>()).max(0)
                }
            })
            .collect()
    }

    fn covers(&self, set: &[&Candidate]) -> bool {
        self.missing(set).iter().all(|&m| m == 0)
    }

    fn total(&self, set: &[&Candidate]) -> f64 {
        set.iter().map(|c| self.dist(c)).sum()
    }

    /// Reference greedy: most missing units (a whole line weighs its quantity), then nearest.
    fn greedy(&self) -> Option<(usize, f64)> {
        let usable = self.usable();
        let whole = self.whole();
        let mut set: Vec<&Candidate> = Vec::new();
        while !self.covers(&set) {
            let left = self.missing(&set);
            let score = |c: &Candidate| -> i64 {
                self.lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        if whole[i] {
                            i64::from(Self::has(c, &l.sku) >= l.quantity) * left[i] * l.quantity
                        } else {
                            Self::has(c, &l.sku).clamp(0, left[i])
                        }
                    })
                    .sum()
            };
            // Usable is nearest first: the first of the highest score.
            let (best, s) = usable
                .iter()
                .filter(|c| !set.iter().any(|m| m.location_id == c.location_id))
                .map(|c| (*c, score(c)))
                .fold(None, |acc: Option<(&Candidate, i64)>, (c, s)| match acc {
                    Some((_, bs)) if bs >= s => acc,
                    _ => Some((c, s)),
                })?;
            if s == 0 {
                return None;
            }
            set.push(best);
        }
        Some((set.len(), self.total(&set)))
    }

    /// Brute force over every subset of usable locations: fewest, then least total.
    fn optimum(&self) -> Option<(usize, f64)> {
        let usable = self.usable();
        let mut best: Option<(usize, f64)> = None;
        for bits in 1u32..(1 << usable.len()) {
            let set: Vec<&Candidate> = (0..usable.len())
                .filter(|i| bits >> i & 1 == 1)
                .map(|i| usable[i])
                .collect();
            if self.covers(&set) {
                let t = (set.len(), self.total(&set));
                if best.is_none_or(|b| t.0 < b.0 || (t.0 == b.0 && t.1 < b.1)) {
                    best = Some(t);
                }
            }
        }
        best
    }
}

fn check(case: &Case, exact: bool) -> Result<(), TestCaseError> {
    let out = route(&case.req(), &case.cands);
    let by_id = |id: &str| {
        case.cands
            .iter()
            .find(|c| c.location_id == id)
            .expect("known")
    };
    let usable = case.usable();
    let whole = case.whole();

    // Exactly what was asked, per line; never more than a location has; gates respected.
    let mut sums: HashMap<&str, i64> = HashMap::new();
    let mut parts: HashMap<&str, usize> = HashMap::new();
    let mut ids: Vec<&str> = Vec::new();
    for a in &out.assignments {
        let c = by_id(&a.location_id);
        prop_assert!(
            usable.iter().any(|u| u.location_id == c.location_id),
            "{} is not usable (too far, full or not shipping)",
            c.location_id
        );
        ids.push(&a.location_id);
        let mut skus: Vec<&str> = a.lines.iter().map(|l| l.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        prop_assert_eq!(skus.len(), a.lines.len(), "a SKU twice in one assignment");
        prop_assert!(!a.lines.is_empty());
        for l in &a.lines {
            prop_assert!(l.quantity > 0);
            prop_assert!(
                l.quantity <= Case::has(c, &l.sku),
                "{} over-gives {}",
                c.location_id,
                l.sku
            );
            *sums.entry(&l.sku).or_default() += l.quantity;
            *parts.entry(&l.sku).or_default() += 1;
        }
        let explained = out
            .explanation
            .iter()
            .find(|e| e.location_id == a.location_id)
            .expect("explained");
        prop_assert_eq!(explained.decision, Decision::Chosen);
        for l in &a.lines {
            let asked = case
                .lines
                .iter()
                .find(|x| x.sku == l.sku)
                .map_or(0, |x| x.quantity);
            let part = format!("{} of {} {}", l.quantity, asked, l.sku);
            prop_assert!(
                explained.reason.contains(&part) || out.assignments.len() == 1,
                "{:?} lacks {}",
                explained.reason,
                part
            );
        }
    }
    ids.sort_unstable();
    ids.dedup();
    prop_assert_eq!(ids.len(), out.assignments.len(), "a location twice");
    if !out.assignments.is_empty() {
        for (l, w) in case.lines.iter().zip(&whole) {
            prop_assert_eq!(sums.get(l.sku.as_str()).copied(), Some(l.quantity));
            if *w {
                prop_assert_eq!(
                    parts.get(l.sku.as_str()).copied(),
                    Some(1),
                    "{} split",
                    &l.sku
                );
            }
        }
    }

    // Never worse than greedy (shipments, then distance); it finds a cover iff one exists.
    let set: Vec<&Candidate> = out
        .assignments
        .iter()
        .map(|a| by_id(&a.location_id))
        .collect();
    let ours = (set.len(), case.total(&set));
    let greedy = case.greedy();
    prop_assert_eq!(out.assignments.is_empty(), greedy.is_none());
    if let Some(g) = greedy {
        prop_assert!(
            ours.0 < g.0 || (ours.0 == g.0 && ours.1 <= g.1 + 1e-9),
            "ours {:?} worse than greedy {:?}",
            ours,
            g
        );
    }
    if exact {
        let opt = case.optimum();
        prop_assert_eq!(opt.is_some(), greedy.is_some());
        if let Some(opt) = opt {
            // Never better than the optimum; equal to it up to 3 shipments.
            prop_assert!(ours.0 > opt.0 || (ours.0 == opt.0 && ours.1 >= opt.1 - 1e-9));
            if opt.0 <= quantity::EXACT_MAX_SHIPMENTS {
                prop_assert_eq!(ours.0, opt.0);
                prop_assert!(
                    ours.1 <= opt.1 + 1e-9,
                    "ours {:?} > optimum {:?}",
                    ours,
                    opt
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    #[test]
    fn split_quantities_are_exact_sound_and_optimal_on_small_instances(case in arb_case(10, 6)) {
        check(&case, true)?;
    }

    #[test]
    fn split_quantities_on_larger_networks_are_never_worse_than_greedy(case in arb_case(40, 4)) {
        check(&case, false)?;
    }
}
