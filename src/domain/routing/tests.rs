//! Examples of the routing rules; the properties are in `props`.

use super::*;
use crate::domain::geo::haversine_km;
use crate::domain::location::LocationKind;
use proptest::prelude::*;

const TAIPEI: (f64, f64) = (25.05306, 121.52639);
const KAOHSIUNG: (f64, f64) = (22.61626, 120.31333);
const TAICHUNG: (f64, f64) = (24.13689, 120.68500);

fn line(sku: &str, quantity: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
    }
}

fn store(id: &str, at: (f64, f64), stock: &[(&str, i64)]) -> Candidate {
    Candidate {
        location_id: id.into(),
        kind: LocationKind::Store,
        lat: at.0,
        lon: at.1,
        pickup: true,
        ship_from: true,
        available: stock.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
        capacity_left: None,
    }
}

/// A point `km` north of Taipei.
fn north(km: f64) -> (f64, f64) {
    (
        TAIPEI.0 + km / (crate::domain::geo::EARTH_RADIUS_KM.to_radians()),
        TAIPEI.1,
    )
}

fn req(lines: &[OrderLine], fulfilment: Fulfilment) -> RouteRequest<'_> {
    RouteRequest {
        lines,
        fulfilment,
        customer_lat: TAIPEI.0,
        customer_lon: TAIPEI.1,
        pickup_location_id: None,
        max_distance_km: None,
        allow_split: false,
    }
}

fn chosen_ids(out: &RouteOutcome) -> Vec<&str> {
    out.assignments
        .iter()
        .map(|a| a.location_id.as_str())
        .collect()
}

fn entry<'o>(out: &'o RouteOutcome, id: &str) -> &'o Considered {
    out.explanation
        .iter()
        .find(|c| c.location_id == id)
        .expect("explained")
}

#[test]
fn haversine_between_taiwan_cities() {
    // Independently: vector form R * atan2(|a x b|, a . b) gives 297.723 and 132.721 km.
    let tk = haversine_km(TAIPEI.0, TAIPEI.1, KAOHSIUNG.0, KAOHSIUNG.1);
    assert!((tk - 297.723).abs() < 0.5, "{tk}");
    let tt = haversine_km(TAIPEI.0, TAIPEI.1, TAICHUNG.0, TAICHUNG.1);
    assert!((tt - 132.721).abs() < 0.5, "{tt}");
    assert!((haversine_km(north(10.0).0, north(10.0).1, TAIPEI.0, TAIPEI.1) - 10.0).abs() < 1e-6);
}

#[test]
fn merge_lines_sums_repeats_in_first_seen_order() {
    let merged = merge_lines(&[line("B", 1), line("A", 2), line("B", 3), line("C", 1)]);
    assert_eq!(merged, vec![line("B", 4), line("A", 2), line("C", 1)]);
    assert!(merge_lines(&[]).is_empty());
}

#[test]
fn nearest_store_with_everything_beats_nearer_store_missing_a_line() {
    let lines = [line("TEE-RED-M", 2), line("CAP", 1)];
    let cands = [
        store("NEAR", north(2.0), &[("TEE-RED-M", 1), ("CAP", 5)]),
        store("MID", north(10.0), &[("TEE-RED-M", 2), ("CAP", 1)]),
        store("FAR", north(30.0), &[("TEE-RED-M", 9), ("CAP", 9)]),
    ];
    for f in [Fulfilment::Pickup, Fulfilment::Delivery] {
        let out = route(&req(&lines, f), &cands);
        assert_eq!(chosen_ids(&out), ["MID"]);
        assert_eq!(out.assignments[0].lines, lines.to_vec());
        assert_eq!(out.assignments[0].distance_km, 10.0);
        let ids: Vec<&str> = out
            .explanation
            .iter()
            .map(|c| c.location_id.as_str())
            .collect();
        assert_eq!(ids, ["NEAR", "MID", "FAR"]);
        let near = entry(&out, "NEAR");
        assert_eq!(
            (near.decision, near.code),
            (Decision::Skipped, ReasonCode::NoStock)
        );
        assert_eq!(near.reason, "no stock for line TEE-RED-M (needs 2, has 1)");
        assert_eq!(
            entry(&out, "MID").reason,
            "nearest location with every line"
        );
        assert_eq!(entry(&out, "FAR").code, ReasonCode::NotNeeded);
        assert_eq!(
            entry(&out, "FAR").reason,
            "another location nearer with every line"
        );
        assert!(out.alternatives.is_empty());
    }
}

#[test]
fn split_only_when_allowed() {
    let lines = [line("A", 1), line("B", 1)];
    let cands = [
        store("SA", north(5.0), &[("A", 1)]),
        store("SB", north(6.0), &[("B", 1)]),
    ];
    let mut r = req(&lines, Fulfilment::Delivery);
    let out = route(&r, &cands);
    assert!(out.assignments.is_empty());
    assert_eq!(
        entry(&out, "SA").reason,
        "no stock for line B (needs 1, has 0)"
    );
    r.allow_split = true;
    let out = route(&r, &cands);
    assert_eq!(chosen_ids(&out), ["SA", "SB"]);
    assert_eq!(entry(&out, "SA").reason, "gives 1 of 1 A");
    assert_eq!(entry(&out, "SB").code, ReasonCode::Chosen);
    // A pickup never splits.
    let mut p = req(&lines, Fulfilment::Pickup);
    p.allow_split = true;
    assert!(route(&p, &cands).assignments.is_empty());
}

#[test]
fn split_prefers_fewest_shipments_even_if_farther() {
    let lines = [line("A", 1), line("B", 1), line("C", 1)];
    let cands = [
        store("N1", north(1.0), &[("A", 1)]),
        store("N2", north(2.0), &[("B", 1)]),
        store("N3", north(3.0), &[("C", 1)]),
        store("F1", north(80.0), &[("A", 1), ("B", 1)]),
        store("F2", north(90.0), &[("C", 1)]),
    ];
    let mut r = req(&lines, Fulfilment::Delivery);
    r.allow_split = true;
    let out = route(&r, &cands);
    // N3 (C, 3 km) beats F2 (C, 90 km) as F1's partner.
    assert_eq!(chosen_ids(&out), ["N3", "F1"]);
    assert_eq!(out.assignments[0].lines, vec![line("C", 1)]);
    assert_eq!(out.assignments[1].lines, vec![line("A", 1), line("B", 1)]);
    assert_eq!(entry(&out, "F1").reason, "gives 1 of 1 A, 1 of 1 B");
    for id in ["N1", "N2", "F2"] {
        let e = entry(&out, id);
        assert_eq!(e.code, ReasonCode::NotNeeded, "{id}");
        assert_eq!(e.reason, "covered by fewer or nearer shipments");
    }
}

#[test]
fn split_picks_least_total_distance_and_nearest_chosen_per_line() {
    let lines = [line("A", 1), line("B", 1), line("C", 1)];
    let cands = [
        // {X, Y}: 10 + 50 = 60; {X, Z}: 10 + 40 = 50 (Z also has A, but X is nearer).
        store("X", north(10.0), &[("A", 1), ("B", 1)]),
        store("Y", north(50.0), &[("C", 1)]),
        store("Z", north(40.0), &[("A", 1), ("C", 1)]),
        store("W", north(45.0), &[("B", 1), ("C", 1)]),
    ];
    let mut r = req(&lines, Fulfilment::Delivery);
    r.allow_split = true;
    let out = route(&r, &cands);
    assert_eq!(chosen_ids(&out), ["X", "Z"]);
    assert_eq!(out.assignments[0].lines, vec![line("A", 1), line("B", 1)]);
    assert_eq!(out.assignments[1].lines, vec![line("C", 1)]);
}

#[test]
fn split_beyond_three_shipments_uses_greedy() {
    let skus = ["A", "B", "C", "D"];
    let lines: Vec<OrderLine> = skus.iter().map(|s| line(s, 1)).collect();
    let cands: Vec<Candidate> = skus
        .iter()
        .enumerate()
        .map(|(i, s)| store(&format!("S{i}"), north(1.0 + i as f64), &[(s, 1)]))
        .collect();
    let mut r = req(&lines, Fulfilment::Delivery);
    r.allow_split = true;
    let out = route(&r, &cands);
    assert_eq!(chosen_ids(&out), ["S0", "S1", "S2", "S3"]);
}

#[test]
fn split_impossible_names_the_line_short_in_all() {
    let lines = [line("A", 1), line("B", 4)];
    let cands = [
        store("SA", north(5.0), &[("A", 1), ("B", 2)]),
        store("SB", north(6.0), &[("B", 1)]),
        store("SC", north(7.0), &[("A", 1)]),
    ];
    let mut r = req(&lines, Fulfilment::Delivery);
    r.allow_split = true;
    let out = route(&r, &cands);
    assert!(out.assignments.is_empty());
    assert_eq!(
        entry(&out, "SA").reason,
        "no stock for line B (needs 4, has 2); the eligible locations have 3 of it in all"
    );
    assert_eq!(entry(&out, "SB").code, ReasonCode::NoStock);
    assert_eq!(
        entry(&out, "SC").reason,
        "no stock for line B (needs 4, has 0); the eligible locations have 3 of it in all"
    );
}

#[test]
fn capacity_and_max_distance_are_respected_and_explained() {
    let lines = [line("A", 1)];
    let mut full = store("FULL", north(1.0), &[("A", 5)]);
    full.capacity_left = Some(0);
    let far = store("FAR", KAOHSIUNG, &[("A", 5)]);
    let mut ok = store("OK", north(20.0), &[("A", 5)]);
    ok.capacity_left = Some(1);
    let mut r = req(&lines, Fulfilment::Delivery);
    r.max_distance_km = Some(50.0);
    let out = route(&r, &[full, far, ok]);
    assert_eq!(chosen_ids(&out), ["OK"]);
    let e = entry(&out, "FULL");
    assert_eq!(
        (e.code, e.reason.as_str()),
        (ReasonCode::CapacityFull, "capacity full today")
    );
    let e = entry(&out, "FAR");
    assert_eq!(e.code, ReasonCode::TooFar);
    assert_eq!(e.reason, "too far (297.7 km > 50 km)");
    assert_eq!(e.distance_km, 297.7);
}

#[test]
fn pickup_at_a_store_lacking_stock_offers_alternatives_by_distance() {
    let lines = [line("A", 2)];
    let mut cands = vec![store("HERE", north(1.0), &[("A", 1)])];
    for (i, km) in [30.0, 7.0, 12.0, 3.0, 50.0, 20.0, 9.0].iter().enumerate() {
        cands.push(store(&format!("ALT{i}"), north(*km), &[("A", 2)]));
    }
    let mut disabled = store("NOPICK", north(2.0), &[("A", 9)]);
    disabled.pickup = false;
    cands.push(disabled);
    let mut r = req(&lines, Fulfilment::Pickup);
    r.pickup_location_id = Some("HERE");
    let out = route(&r, &cands);
    assert!(out.assignments.is_empty());
    assert_eq!(
        out.alternatives,
        vec![
            ("ALT3".to_owned(), 3.0),
            ("ALT1".to_owned(), 7.0),
            ("ALT6".to_owned(), 9.0),
            ("ALT2".to_owned(), 12.0),
            ("ALT5".to_owned(), 20.0),
        ]
    );
    assert_eq!(
        entry(&out, "HERE").reason,
        "no stock for line A (needs 2, has 1)"
    );
    assert_eq!(entry(&out, "NOPICK").code, ReasonCode::NotRequested);
    let alt = entry(&out, "ALT3");
    assert_eq!(alt.code, ReasonCode::NotRequested);
    assert!(alt.reason.contains("could serve"));
    assert_eq!(out.explanation.len(), cands.len());

    // With stock it is held there, however near the others are.
    r.pickup_location_id = Some("ALT4");
    let out = route(&r, &cands);
    assert_eq!(chosen_ids(&out), ["ALT4"]);
    assert!(out.alternatives.is_empty());
    assert_eq!(
        entry(&out, "ALT3").reason,
        "not the requested pickup location"
    );

    // An unknown location serves nothing but still gets alternatives.
    r.pickup_location_id = Some("GONE");
    let out = route(&r, &cands);
    assert!(out.assignments.is_empty());
    assert_eq!(out.alternatives.len(), 5);
}

#[test]
fn pickup_disabled_and_non_stores_are_skipped() {
    let lines = [line("A", 1)];
    let mut off = store("OFF", north(1.0), &[("A", 9)]);
    off.pickup = false;
    let mut wh = store("WH", north(2.0), &[("A", 9)]);
    wh.kind = LocationKind::Warehouse;
    let on = store("ON", north(5.0), &[("A", 9)]);
    let out = route(&req(&lines, Fulfilment::Pickup), &[off.clone(), wh, on]);
    assert_eq!(chosen_ids(&out), ["ON"]);
    assert_eq!(entry(&out, "OFF").code, ReasonCode::PickupDisabled);
    assert_eq!(entry(&out, "OFF").reason, "pickup disabled");
    assert_eq!(entry(&out, "WH").code, ReasonCode::PickupDisabled);

    // Requested but disabled: no assignment, the reason says why.
    let mut r = req(&lines, Fulfilment::Pickup);
    r.pickup_location_id = Some("OFF");
    let out = route(&r, &[off]);
    assert!(out.assignments.is_empty());
    assert_eq!(entry(&out, "OFF").code, ReasonCode::PickupDisabled);
}

#[test]
fn delivery_ships_from_ship_from_stores_warehouses_and_online() {
    let lines = [line("A", 1)];
    let mut shop = store("SHOP", north(1.0), &[("A", 9)]);
    shop.ship_from = false;
    let mut web = store("WEB", north(3.0), &[("A", 9)]);
    web.kind = LocationKind::Online;
    web.ship_from = false;
    let mut wh = store("WH", north(2.0), &[("A", 9)]);
    wh.kind = LocationKind::Warehouse;
    wh.ship_from = false;
    let out = route(
        &req(&lines, Fulfilment::Delivery),
        &[shop.clone(), web.clone(), wh],
    );
    assert_eq!(chosen_ids(&out), ["WH"]);
    assert_eq!(entry(&out, "SHOP").code, ReasonCode::DoesNotShip);
    assert_eq!(entry(&out, "SHOP").reason, "does not ship");
    let out = route(&req(&lines, Fulfilment::Delivery), &[shop, web]);
    assert_eq!(chosen_ids(&out), ["WEB"]);
}

#[test]
fn output_is_deterministic_and_sorted() {
    let lines = [line("A", 1), line("B", 1)];
    let mut cands = vec![
        store("B2", north(5.0), &[("A", 1)]),
        store("B1", north(5.0), &[("A", 1)]),
        store("C", north(7.0), &[("B", 1)]),
        store("D", north(7.0), &[("A", 1), ("B", 1)]),
        store("E", north(7.0), &[("A", 1), ("B", 1)]),
    ];
    let mut r = req(&lines, Fulfilment::Delivery);
    r.allow_split = true;
    let out = route(&r, &cands);
    let ids: Vec<&str> = out
        .explanation
        .iter()
        .map(|c| c.location_id.as_str())
        .collect();
    assert_eq!(ids, ["B1", "B2", "C", "D", "E"]);
    assert_eq!(chosen_ids(&out), ["D"]);
    cands.reverse();
    assert_eq!(route(&r, &cands), out);
    let json = serde_json::to_value(&out).expect("json");
    assert_eq!(json["explanation"][3]["decision"], "chosen");
    assert_eq!(json["explanation"][4]["code"], "not_needed");
    let f: Fulfilment = serde_json::from_str("\"delivery\"").expect("fulfilment");
    assert_eq!(f, Fulfilment::Delivery);
}

#[test]
fn orders_of_more_than_64_lines_split_exactly() {
    // 70 lines; three far stores together hold everything, many near ones a line each.
    let skus: Vec<String> = (0..70).map(|i| format!("SKU-{i:02}")).collect();
    let lines: Vec<OrderLine> = skus.iter().map(|s| line(s, 1)).collect();
    let part = |range: std::ops::Range<usize>| -> Vec<(&str, i64)> {
        skus[range].iter().map(|s| (s.as_str(), 1)).collect()
    };
    let mut cands: Vec<Candidate> = (0..70)
        .map(|i| {
            store(
                &format!("N{i:02}"),
                north(1.0 + i as f64 / 10.0),
                &part(i..i + 1),
            )
        })
        .collect();
    cands.push(store("F1", north(100.0), &part(0..30)));
    cands.push(store("F2", north(101.0), &part(30..60)));
    cands.push(store("F3", north(102.0), &part(60..70)));
    cands.push(store("F4", north(150.0), &part(25..70)));
    let mut r = req(&lines, Fulfilment::Delivery);
    r.allow_split = true;
    let out = route(&r, &cands);
    // {F1, F4} covers everything in 2 shipments: fewer beats nearer.
    assert_eq!(chosen_ids(&out), ["F1", "F4"]);
    assert_eq!(out.assignments[0].lines.len(), 30);
    assert_eq!(out.assignments[1].lines.len(), 40);
    cands.pop();
    let out = route(&r, &cands);
    assert_eq!(chosen_ids(&out), ["F1", "F2", "F3"]);
}

mod props;
