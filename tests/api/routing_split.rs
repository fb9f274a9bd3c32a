//! `POST /v1/orders/route` with `allow_split` when a line must be split in quantity: no single
//! location holds all of it.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, RESERVE_KEY};

const TAIPEI: (f64, f64) = (25.05306, 121.52639);

/// Ship-from locations at real Taiwan cities (km from Taipei): New Taipei 7.057, Banqiao 7.361,
/// Keelung 23.274, Taoyuan 24.041, Hsinchu 62.712, Taichung 131.938.
const CITIES: [(&str, f64, f64); 6] = [
    ("NEWTPE", 25.06199, 121.45703),
    ("BANQIAO", 25.01427, 121.46719),
    ("KEELUNG", 25.13089, 121.74094),
    ("TAOYUAN", 24.99368, 121.29696),
    ("HSINCHU", 24.80361, 120.96861),
    ("TAICHUNG", 24.1469, 120.6839),
];

async fn location(app: &TestApp, id: &str, kind: &str, safety_stock: i64) {
    let (_, lat, lon) = CITIES
        .iter()
        .find(|c| c.0 == id)
        .copied()
        .expect("a known city");
    app.put_location(
        id,
        json!({"name": id, "kind": kind, "lat": lat, "lon": lon, "pickup": true,
               "ship_from": true, "safety_stock": safety_stock, "timezone": "Asia/Taipei"}),
    )
    .await;
}

fn order(id: &str, lines: Value, allow_split: bool) -> Value {
    json!({"order_id": id, "lines": lines, "fulfilment": "delivery", "allow_split": allow_split,
           "customer": {"lat": TAIPEI.0, "lon": TAIPEI.1}})
}

async fn route(app: &TestApp, body: &Value) -> (u16, Value) {
    app.send(Method::POST, "/v1/orders/route", RESERVE_KEY, body)
        .await
}

/// (location, sku) -> quantity over the answer's assignments.
fn given(body: &Value) -> HashMap<(String, String), i64> {
    let mut out = HashMap::new();
    for a in body["assignments"].as_array().into_iter().flatten() {
        for l in a["lines"].as_array().into_iter().flatten() {
            let key = (
                a["location_id"].as_str().unwrap_or_default().to_owned(),
                l["sku"].as_str().unwrap_or_default().to_owned(),
            );
            *out.entry(key).or_default() += l["quantity"].as_i64().unwrap_or(0);
        }
    }
    out
}

fn reason<'a>(body: &'a Value, location: &str) -> &'a str {
    body.get("explanation")
        .or_else(|| body["details"].get("explanation"))
        .and_then(Value::as_array)
        .and_then(|e| e.iter().find(|e| e["location_id"] == json!(location)))
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_else(|| panic!("{location} missing from the explanation: {body}"))
}

#[tokio::test]
async fn nine_units_split_over_the_fewest_nearest_locations_and_held_there() {
    let app = spawn_app().await;
    // Stores with 4 and 5, a warehouse with 5 (6 on hand, safety stock 1 per SKU): 14 in all.
    location(&app, "NEWTPE", "store", 0).await;
    location(&app, "TAICHUNG", "store", 0).await;
    location(&app, "TAOYUAN", "warehouse", 1).await;
    app.stock("NEWTPE", "TEE-RED-M", 4).await;
    app.stock("TAICHUNG", "TEE-RED-M", 5).await;
    app.stock("TAOYUAN", "TEE-RED-M", 6).await;
    app.stock("TAOYUAN", "CAP-BLK", 3).await;
    let lines = json!([{"sku": "TEE-RED-M", "quantity": 9}, {"sku": "CAP-BLK", "quantity": 2}]);

    // Without allow_split: 409, as before, and nothing held.
    let (status, body) = route(&app, &order("o-9-whole", lines.clone(), false)).await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("no_fulfilment_option")),
        "{body}"
    );
    assert_eq!(
        reason(&body, "NEWTPE"),
        "no stock for line TEE-RED-M (needs 9, has 4)"
    );
    assert_eq!(app.reserved("TAOYUAN", "TEE-RED-M").await, 0);

    // With it: two shipments, the nearest pair (New Taipei 7.1 + Taoyuan 24.0 km; Taichung
    // is 131.9 km), each holding what it gives.
    let split = order("o-9", lines, true);
    let (status, body) = route(&app, &split).await;
    assert_eq!(status, 200, "{body}");
    let assignments = body["assignments"].as_array().expect("assignments");
    assert_eq!(assignments.len(), 2, "{body}");
    let want: HashMap<(String, String), i64> = [
        (("NEWTPE", "TEE-RED-M"), 4),
        (("TAOYUAN", "TEE-RED-M"), 5),
        (("TAOYUAN", "CAP-BLK"), 2),
    ]
    .into_iter()
    .map(|((l, s), q)| ((l.to_owned(), s.to_owned()), q))
    .collect();
    assert_eq!(given(&body), want);
    assert_eq!(reason(&body, "NEWTPE"), "gives 4 of 9 TEE-RED-M");
    assert_eq!(
        reason(&body, "TAOYUAN"),
        "gives 5 of 9 TEE-RED-M, 2 of 2 CAP-BLK"
    );
    assert_eq!(
        reason(&body, "TAICHUNG"),
        "covered by fewer or nearer shipments"
    );
    for ((loc, sku), q) in &want {
        assert_eq!(app.reserved(loc, sku).await, *q, "{loc} {sku}");
    }
    assert_eq!(app.reserved("TAICHUNG", "TEE-RED-M").await, 0);
    // Each assignment's hold carries the quantity held there.
    for a in assignments {
        let id = a["reservation_id"].as_str().expect("held");
        let (status, r) = app
            .get(&format!("/v1/reservations/{id}"), RESERVE_KEY)
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["status"], json!("held"));
        assert_eq!(r["location_id"], a["location_id"]);
        let as_map = |lines: &Value, field: &str| -> HashMap<String, i64> {
            lines
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    (
                        l["sku"].as_str().unwrap_or_default().to_owned(),
                        l[field].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        };
        assert_eq!(
            as_map(&r["lines"], "held"),
            as_map(&a["lines"], "quantity"),
            "{r}"
        );
    }

    // The same order id answers the same, holding nothing more.
    let (status, again) = route(&app, &split).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, body);
    assert_eq!(app.reserved("NEWTPE", "TEE-RED-M").await, 4);
    assert_eq!(app.reserved("TAOYUAN", "TEE-RED-M").await, 5);

    // What is left (5 at Taichung) cannot serve another 9, split or not.
    let (status, body) = route(
        &app,
        &order(
            "o-9-more",
            json!([{"sku": "TEE-RED-M", "quantity": 9}]),
            true,
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        reason(&body, "TAICHUNG"),
        "no stock for line TEE-RED-M (needs 9, has 5); the eligible locations have 5 of it in all"
    );
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn concurrent_split_orders_never_oversell_any_location() {
    let app = spawn_app().await;
    // 6 locations with 6 on hand each, safety stock 1 at three of them: 33 available, at most
    // 6 at one location, so every order of 8 needs 2 or 3 locations.
    let mut on_hand = HashMap::new();
    for (i, (id, _, _)) in CITIES.iter().enumerate() {
        let safety = i64::from(i % 2 == 0);
        location(&app, id, "store", safety).await;
        app.stock(id, "HOT", 6).await;
        on_hand.insert(id.to_string(), (6i64, safety));
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, url) = (app.http.clone(), app.url("/v1/orders/route"));
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(RESERVE_KEY)
                .json(&order(
                    &format!("race-{i}"),
                    json!([{"sku": "HOT", "quantity": 8}]),
                    true,
                ))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }));
    }
    let mut held: HashMap<String, i64> = HashMap::new();
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.expect("join");
        match status {
            200 => {
                ok += 1;
                let mut order_total = 0;
                let mut locations = 0;
                for ((loc, _), q) in given(&body) {
                    *held.entry(loc).or_default() += q;
                    order_total += q;
                    locations += 1;
                }
                assert_eq!(order_total, 8, "exactly what was asked: {body}");
                assert!((2..=3).contains(&locations), "{body}");
            }
            409 => {}
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    // 33 available, 8 per order: at most 4 orders.
    assert!((1..=4).contains(&ok), "{ok} orders routed");
    let mut reserved_total = 0;
    for (id, (on_hand, safety)) in &on_hand {
        let reserved = app.reserved(id, "HOT").await;
        assert!(
            reserved <= on_hand - safety,
            "{id} oversold: reserved {reserved} of {on_hand} with safety {safety}"
        );
        assert_eq!(
            reserved,
            held.get(id).copied().unwrap_or(0),
            "{id}: the answers and the levels disagree"
        );
        reserved_total += reserved;
    }
    assert_eq!(reserved_total, 8 * ok);
    app.assert_ledger_consistent().await;
}
