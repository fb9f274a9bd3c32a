//! Properties of routing over random networks and orders.

use super::*;

const SKUS: [&str; 16] = [
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P",
];

fn arb_candidate(i: usize, pool: usize, stock_max: i64) -> impl Strategy<Value = Candidate> {
    (
        prop::sample::select(vec![
            LocationKind::Store,
            LocationKind::Store,
            LocationKind::Warehouse,
            LocationKind::Online,
        ]),
        (22.0f64..25.3, 120.0f64..121.9),
        any::<bool>(),
        prop::bool::weighted(0.7),
        prop::collection::vec(0i64..stock_max, pool),
        prop::option::of(0i64..3),
    )
        .prop_map(
            move |(kind, (lat, lon), pickup, ship_from, stock, cap)| Candidate {
                location_id: format!("L{i:02}"),
                kind,
                lat,
                lon,
                pickup,
                ship_from,
                available: SKUS
                    .iter()
                    .zip(stock)
                    .filter(|(_, q)| *q > 0)
                    .map(|(s, q)| (s.to_string(), q))
                    .collect(),
                capacity_left: cap,
            },
        )
}

fn arb_candidates(pool: usize, stock_max: i64) -> impl Strategy<Value = Vec<Candidate>> {
    (0usize..12).prop_flat_map(move |n| {
        (0..n)
            .map(|i| arb_candidate(i, pool, stock_max))
            .collect::<Vec<_>>()
    })
}

fn arb_lines(pool: usize, min_lines: usize) -> impl Strategy<Value = Vec<OrderLine>> {
    prop::sample::subsequence(SKUS[..pool].to_vec(), min_lines..=pool).prop_flat_map(|skus| {
        prop::collection::vec(1i64..3, skus.len()).prop_map(move |qs| {
            skus.iter()
                .zip(qs)
                .map(|(s, q)| line(s, q))
                .collect::<Vec<_>>()
        })
    })
}

#[derive(Debug, Clone)]
struct Case {
    lines: Vec<OrderLine>,
    cands: Vec<Candidate>,
    fulfilment: Fulfilment,
    customer: (f64, f64),
    pickup_at: Option<String>,
    max_km: Option<f64>,
    allow_split: bool,
}

/// Small orders (1-5 lines of 5 SKUs): the table path of the split search.
fn arb_case() -> impl Strategy<Value = Case> {
    arb_case_with(5, 1, 4)
}

/// Large orders (13-16 lines): the scan path of the split search.
fn arb_big_case() -> impl Strategy<Value = Case> {
    arb_case_with(16, TABLE_MAX_LINES + 1, 7)
}

fn arb_case_with(pool: usize, min_lines: usize, stock_max: i64) -> impl Strategy<Value = Case> {
    (
        arb_lines(pool, min_lines),
        arb_candidates(pool, stock_max),
        prop::sample::select(vec![Fulfilment::Pickup, Fulfilment::Delivery]),
        (22.0f64..25.3, 120.0f64..121.9),
        prop::option::weighted(0.3, 0usize..13),
        prop::option::of(50.0f64..400.0),
        any::<bool>(),
    )
        .prop_map(
            |(lines, cands, fulfilment, customer, pick, max_km, allow_split)| {
                let pickup_at = pick.map(|i| {
                    cands
                        .get(i)
                        .map_or("NOPE".to_owned(), |c| c.location_id.clone())
                });
                Case {
                    lines,
                    cands,
                    fulfilment,
                    customer,
                    pickup_at,
                    max_km,
                    allow_split,
                }
            },
        )
}

impl Case {
    fn req(&self) -> RouteRequest<'_> {
        RouteRequest {
            lines: &self.lines,
            fulfilment: self.fulfilment,
            customer_lat: self.customer.0,
            customer_lon: self.customer.1,
            pickup_location_id: self.pickup_at.as_deref(),
            max_distance_km: self.max_km,
            allow_split: self.allow_split,
        }
    }

    fn dist(&self, c: &Candidate) -> f64 {
        haversine_km(self.customer.0, self.customer.1, c.lat, c.lon)
    }

    /// Independent restatement of eligibility, distance and capacity.
    fn usable(&self, c: &Candidate) -> bool {
        let eligible = match self.fulfilment {
            Fulfilment::Pickup => {
                c.kind == LocationKind::Store
                    && c.pickup
                    && self
                        .pickup_at
                        .as_deref()
                        .is_none_or(|id| id == c.location_id)
            }
            Fulfilment::Delivery => c.ship_from || c.kind != LocationKind::Store,
        };
        eligible
            && self.max_km.is_none_or(|m| self.dist(c) <= m)
            && c.capacity_left.is_none_or(|n| n > 0)
    }

    fn serves(&self, c: &Candidate, l: &OrderLine) -> bool {
        c.available.get(&l.sku).copied().unwrap_or(0) >= l.quantity
    }

    /// Reference greedy over raw candidates: shipments it needs, if it finds a cover.
    fn greedy_count(&self) -> Option<usize> {
        let usable: Vec<&Candidate> = self.cands.iter().filter(|c| self.usable(c)).collect();
        let mut left: Vec<&OrderLine> = self.lines.iter().collect();
        let mut count = 0;
        while !left.is_empty() {
            // Most uncovered lines, then nearest, then id.
            let gain = |c: &Candidate| left.iter().filter(|l| self.serves(c, l)).count();
            let c = *usable.iter().min_by(|a, b| {
                gain(b)
                    .cmp(&gain(a))
                    .then(self.dist(a).total_cmp(&self.dist(b)))
                    .then(a.location_id.cmp(&b.location_id))
            })?;
            if gain(c) == 0 {
                return None;
            }
            left.retain(|l| !self.serves(c, l));
            count += 1;
        }
        Some(count)
    }

    /// Brute force: the fewest shipments (<= 3) and the least total distance for it.
    fn best_small_cover(&self) -> Option<(usize, f64)> {
        let usable: Vec<&Candidate> = self.cands.iter().filter(|c| self.usable(c)).collect();
        let covers = |set: &[&Candidate]| {
            self.lines
                .iter()
                .all(|l| set.iter().any(|c| self.serves(c, l)))
        };
        let total = |set: &[&Candidate]| set.iter().map(|c| self.dist(c)).sum::<f64>();
        let mut best: Option<(usize, f64)> = None;
        let mut offer = |set: &[&Candidate]| {
            if covers(set) {
                let t = (set.len(), total(set));
                if best.is_none_or(|b| t.0 < b.0 || (t.0 == b.0 && t.1 < b.1)) {
                    best = Some(t);
                }
            }
        };
        for i in 0..usable.len() {
            offer(&[usable[i]]);
            for j in i + 1..usable.len() {
                offer(&[usable[i], usable[j]]);
                for k in j + 1..usable.len() {
                    offer(&[usable[i], usable[j], usable[k]]);
                }
            }
        }
        best
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn assignments_are_sound(case in arb_case()) {
        let out = route(&case.req(), &case.cands);
        let by_id = |id: &str| case.cands.iter().find(|c| c.location_id == id).expect("known");

        // One explanation entry per candidate, nearest first.
        prop_assert_eq!(out.explanation.len(), case.cands.len());
        let mut ids: Vec<&str> = out.explanation.iter().map(|c| c.location_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), case.cands.len());
        let ds: Vec<f64> = out.explanation.iter().map(|e| case.dist(by_id(&e.location_id))).collect();
        prop_assert!(ds.windows(2).all(|w| w[0] <= w[1]));

        if !out.assignments.is_empty() {
            // Every line held exactly as asked, each part at a usable location that has it.
            let mut assigned: HashMap<&str, i64> = HashMap::new();
            for a in &out.assignments {
                let c = by_id(&a.location_id);
                prop_assert!(case.usable(c), "{} not usable", a.location_id);
                prop_assert!(!a.lines.is_empty());
                for l in &a.lines {
                    prop_assert!(l.quantity > 0);
                    prop_assert!(case.serves(c, l), "{} lacks {}", a.location_id, l.sku);
                    *assigned.entry(&l.sku).or_default() += l.quantity;
                }
            }
            let want: HashMap<&str, i64> =
                case.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect();
            prop_assert_eq!(assigned, want);
            let split_ok = case.fulfilment == Fulfilment::Delivery && case.allow_split;
            prop_assert!(out.assignments.len() == 1 || split_ok);
            prop_assert!(out.alternatives.is_empty());
        }

        // Chosen entries are exactly the assigned locations.
        let mut chosen: Vec<&str> = out.explanation.iter()
            .filter(|e| e.decision == Decision::Chosen)
            .map(|e| e.location_id.as_str())
            .collect();
        chosen.sort_unstable();
        let mut assigned: Vec<&str> = chosen_ids(&out);
        assigned.sort_unstable();
        prop_assert_eq!(chosen, assigned);
        for e in &out.explanation {
            prop_assert_eq!(e.decision == Decision::Chosen, e.code == ReasonCode::Chosen);
            prop_assert!(!e.reason.is_empty());
        }

        // Alternatives: nearest first, at most 5, each could serve the pickup.
        prop_assert!(out.alternatives.len() <= MAX_ALTERNATIVES);
        for (id, _) in &out.alternatives {
            let c = by_id(id);
            prop_assert!(c.kind == LocationKind::Store && c.pickup);
            prop_assert!(case.lines.iter().all(|l| case.serves(c, l)));
        }
    }

    #[test]
    fn split_is_optimal_up_to_three_and_never_worse_than_greedy(case in arb_case()) {
        check_split(case)?;
    }

    #[test]
    fn split_of_large_orders_is_optimal_up_to_three(case in arb_big_case()) {
        check_split(case)?;
    }
}

fn check_split(mut case: Case) -> Result<(), TestCaseError> {
    case.fulfilment = Fulfilment::Delivery;
    case.allow_split = true;
    let out = route(&case.req(), &case.cands);
    // Lines no usable location holds whole are split in quantity: see `quantity_tests`.
    let whole = case.lines.iter().all(|l| {
        case.cands
            .iter()
            .any(|c| case.usable(c) && case.serves(c, l))
    });
    if !whole {
        return Ok(());
    }
    let greedy = case.greedy_count();
    prop_assert_eq!(out.assignments.is_empty(), greedy.is_none());
    if let Some(g) = greedy {
        prop_assert!(out.assignments.len() <= g);
    }
    if let Some((count, total)) = case.best_small_cover() {
        prop_assert_eq!(out.assignments.len(), count);
        let ours: f64 = out
            .assignments
            .iter()
            .map(|a| {
                case.dist(
                    case.cands
                        .iter()
                        .find(|c| c.location_id == a.location_id)
                        .expect("known"),
                )
            })
            .sum();
        prop_assert!(ours <= total + 1e-9, "ours {} > best {}", ours, total);
    }
    // Without split the outcome is a single location or nothing.
    case.allow_split = false;
    prop_assert!(route(&case.req(), &case.cands).assignments.len() <= 1);
    Ok(())
}
