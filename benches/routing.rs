//! Benchmarks of the order-routing decision (pure, no IO): a 5-line order over 1,000 stores
//! spread across Taiwan. Run: `cargo bench --bench routing`.

use std::collections::HashMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use omnistock::domain::geo::haversine_km;
use omnistock::domain::location::LocationKind;
use omnistock::domain::routing::{
    merge_lines, route, Candidate, Fulfilment, OrderLine, RouteRequest,
};

const STORES: usize = 1_000;
const SKUS: [&str; 5] = [
    "TEE-RED-M",
    "TEE-BLU-L",
    "CAP-BLK",
    "SOCK-WHT-2P",
    "BAG-TOTE",
];
/// Taipei Main Station.
const CUSTOMER: (f64, f64) = (25.04776, 121.51706);

/// Deterministic xorshift64*, so every run routes the same network.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn network() -> Vec<Candidate> {
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    (0..STORES)
        .map(|i| {
            // Each SKU: 2-11 in stock (enough for any line) with probability 0.25, just 1 with
            // probability 0.1, so a store able to ship the whole order (two lines need 2) is
            // rare: 0.25^2 * 0.35^3, ~3 of 1,000.
            let available: HashMap<String, i64> = SKUS
                .iter()
                .filter_map(|sku| {
                    let roll = rng.unit();
                    let qty = if roll < 0.25 {
                        2 + (rng.next() % 10) as i64
                    } else if roll < 0.35 {
                        1
                    } else {
                        return None;
                    };
                    Some((sku.to_string(), qty))
                })
                .collect();
            let kind = match i % 50 {
                0 => LocationKind::Warehouse,
                _ => LocationKind::Store,
            };
            Candidate {
                location_id: format!("TW{i:04}"),
                kind,
                lat: 22.0 + 3.3 * rng.unit(),
                lon: 120.0 + 1.9 * rng.unit(),
                pickup: rng.unit() < 0.8,
                ship_from: rng.unit() < 0.7,
                available,
                capacity_left: match rng.next() % 10 {
                    0 => Some(0),
                    1..=3 => Some(1 + (rng.next() % 20) as i64),
                    _ => None,
                },
            }
        })
        .collect()
}

fn order() -> Vec<OrderLine> {
    // Written with a repeat, as a client might; merged before routing.
    let raw: Vec<OrderLine> = [("TEE-RED-M", 1), ("TEE-BLU-L", 1), ("CAP-BLK", 2)]
        .into_iter()
        .chain([("SOCK-WHT-2P", 1), ("BAG-TOTE", 1), ("TEE-RED-M", 1)])
        .map(|(sku, quantity)| OrderLine {
            sku: sku.into(),
            quantity,
        })
        .collect();
    merge_lines(&raw)
}

/// Two lines larger than any store holds (at most 11 of a SKU), so they must be split in
/// quantity; the other three ride along whole.
fn split_order() -> Vec<OrderLine> {
    [
        ("TEE-RED-M", 14),
        ("TEE-BLU-L", 12),
        ("CAP-BLK", 3),
        ("SOCK-WHT-2P", 2),
        ("BAG-TOTE", 1),
    ]
    .into_iter()
    .map(|(sku, quantity)| OrderLine {
        sku: sku.into(),
        quantity,
    })
    .collect()
}

fn routing(c: &mut Criterion) {
    let stores = network();
    let lines = order();
    assert_eq!(lines.len(), 5);
    let request = |allow_split: bool| RouteRequest {
        lines: &lines,
        fulfilment: Fulfilment::Delivery,
        customer_lat: CUSTOMER.0,
        customer_lon: CUSTOMER.1,
        pickup_location_id: None,
        max_distance_km: Some(120.0),
        allow_split,
    };

    // What is being measured, so a change of data is visible in the output.
    let in_range = stores
        .iter()
        .filter(|s| haversine_km(CUSTOMER.0, CUSTOMER.1, s.lat, s.lon) <= 120.0)
        .count();
    let single = route(&request(false), &stores);
    let split = route(&request(true), &stores);
    eprintln!(
        "routing bench: {STORES} stores, {in_range} within 120 km; single-location assignments: {}, split assignments: {} ({:?})",
        single.assignments.len(),
        split.assignments.len(),
        split
            .assignments
            .iter()
            .map(|a| (a.location_id.as_str(), a.distance_km, a.lines.len()))
            .collect::<Vec<_>>()
    );
    assert!(
        split.assignments.len() >= 2,
        "the split bench should exercise the split search"
    );

    let big = split_order();
    let split_req = RouteRequest {
        lines: &big,
        ..request(true)
    };
    let quantity_split = route(&split_req, &stores);
    eprintln!(
        "routing bench: lines split in quantity: {} assignments ({:?})",
        quantity_split.assignments.len(),
        quantity_split
            .assignments
            .iter()
            .map(|a| {
                let given: Vec<(&str, i64)> = a
                    .lines
                    .iter()
                    .map(|l| (l.sku.as_str(), l.quantity))
                    .collect();
                (a.location_id.as_str(), a.distance_km, given)
            })
            .collect::<Vec<_>>()
    );
    let parts_of = |sku: &str| {
        quantity_split
            .assignments
            .iter()
            .filter(|a| a.lines.iter().any(|l| l.sku == sku))
            .count()
    };
    assert!(
        parts_of("TEE-RED-M") >= 2 && parts_of("TEE-BLU-L") >= 2,
        "the quantity-split bench should split lines"
    );

    let mut g = c.benchmark_group("route_5_lines_1000_stores");
    g.throughput(Throughput::Elements(STORES as u64));
    for (name, allow_split) in [("single_location", false), ("allow_split", true)] {
        let req = request(allow_split);
        g.bench_function(name, |b| {
            b.iter(|| route(black_box(&req), black_box(&stores)))
        });
    }
    g.bench_function("split_lines_in_quantity", |b| {
        b.iter(|| route(black_box(&split_req), black_box(&stores)))
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
