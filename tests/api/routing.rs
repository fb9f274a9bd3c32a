use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, READ_KEY, RESERVE_KEY};

const TAIPEI: (f64, f64) = (25.05306, 121.52639);

/// Ship-from stores at real Taiwan cities (distances from Taipei, hand-computed with the
/// haversine formula, R = 6371.0088 km): New Taipei 7.057, Banqiao 7.361, Keelung 23.274,
/// Taoyuan 24.041, Hsinchu 62.712, Taichung 131.938, Kaohsiung 297.723.
async fn cities(app: &TestApp, capacity: Option<i64>) {
    for (id, lat, lon) in [
        ("NEWTPE", 25.06199, 121.45703),
        ("BANQIAO", 25.01427, 121.46719),
        ("KEELUNG", 25.13089, 121.74094),
        ("TAOYUAN", 24.99368, 121.29696),
        ("HSINCHU", 24.80361, 120.96861),
        ("TAICHUNG", 24.1469, 120.6839),
        ("KAOHSIUNG", 22.61626, 120.31333),
    ] {
        app.put_location(
            id,
            json!({"name": id, "kind": "store", "lat": lat, "lon": lon, "pickup": true,
                                     "ship_from": true, "daily_order_capacity": capacity,
                                     "timezone": "Asia/Taipei"}),
        )
        .await;
    }
}

async fn route(app: &TestApp, body: Value) -> (u16, Value) {
    app.send(Method::POST, "/v1/orders/route", RESERVE_KEY, &body)
        .await
}

fn order(id: &str, lines: Value) -> Value {
    json!({"order_id": id, "lines": lines, "fulfilment": "delivery",
           "customer": {"lat": TAIPEI.0, "lon": TAIPEI.1}})
}

fn reason_of<'a>(body: &'a Value, location: &str) -> &'a Value {
    let explanation = body
        .get("explanation")
        .or_else(|| body["details"].get("explanation"))
        .expect("explanation");
    explanation
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["location_id"] == json!(location))
        .unwrap_or_else(|| panic!("{location} missing from the explanation: {body}"))
}

#[tokio::test]
async fn the_nearest_store_with_every_line_wins_over_a_nearer_one_missing_a_line() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.stock("NEWTPE", "A", 5).await; // nearest, but has no B
    app.stock("BANQIAO", "A", 5).await;
    app.stock("BANQIAO", "B", 5).await;
    app.stock("TAICHUNG", "A", 5).await;
    app.stock("TAICHUNG", "B", 5).await;
    let (status, body) = route(
        &app,
        order(
            "o-1",
            json!([{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}]),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let a = &body["assignments"];
    assert_eq!(a.as_array().map(Vec::len), Some(1));
    assert_eq!(a[0]["location_id"], json!("BANQIAO"));
    assert!((a[0]["distance_km"].as_f64().expect("km") - 7.361).abs() < 0.06);
    let reservation = a[0]["reservation_id"].as_str().expect("held").to_owned();
    let (_, r) = app
        .get(&format!("/v1/reservations/{reservation}"), RESERVE_KEY)
        .await;
    assert_eq!(r["status"], json!("held"));
    assert_eq!(app.reserved("BANQIAO", "B").await, 2);
    assert_eq!(reason_of(&body, "BANQIAO")["decision"], json!("chosen"));
    let skipped = reason_of(&body, "NEWTPE");
    assert_eq!(skipped["decision"], json!("skipped"));
    assert!(
        skipped["reason"].as_str().expect("reason").contains('B'),
        "names the missing line: {skipped}"
    );
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn splits_only_when_allowed_with_the_fewest_shipments() {
    let app = spawn_app().await;
    cities(&app, None).await;
    // Nearest three each have one line; two farther stores cover everything between them.
    app.stock("NEWTPE", "A", 5).await;
    app.stock("BANQIAO", "B", 5).await;
    app.stock("KEELUNG", "C", 5).await;
    app.stock("HSINCHU", "A", 5).await;
    app.stock("HSINCHU", "B", 5).await;
    app.stock("TAICHUNG", "C", 5).await;
    let lines = json!([{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 1}, {"sku": "C", "quantity": 1}]);
    let (status, body) = route(&app, order("o-nosplit", lines.clone())).await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("no_fulfilment_option")),
        "{body}"
    );
    let mut split = order("o-split", lines);
    split["allow_split"] = json!(true);
    let (status, body) = route(&app, split).await;
    assert_eq!(status, 200, "{body}");
    let mut chosen: Vec<&str> = body["assignments"]
        .as_array()
        .expect("a")
        .iter()
        .filter_map(|a| a["location_id"].as_str())
        .collect();
    chosen.sort();
    // Two shipments beat three nearer ones (NEWTPE + BANQIAO + KEELUNG); of the two-shipment
    // sets, HSINCHU + KEELUNG (62.7 + 23.3 km) beats HSINCHU + TAICHUNG (62.7 + 131.9 km).
    assert_eq!(chosen, ["HSINCHU", "KEELUNG"]);
    assert_eq!(
        app.reserved("HSINCHU", "A").await + app.reserved("HSINCHU", "B").await,
        2
    );
    assert_eq!(app.reserved("KEELUNG", "C").await, 1);
    assert_eq!(app.reserved("NEWTPE", "A").await, 0);
}

#[tokio::test]
async fn capacity_and_max_distance_are_respected_and_explained() {
    let app = spawn_app().await;
    cities(&app, Some(1)).await;
    for loc in ["BANQIAO", "HSINCHU", "KAOHSIUNG"] {
        app.stock(loc, "A", 5).await;
    }
    let (status, first) = route(&app, order("o-1", json!([{"sku": "A", "quantity": 1}]))).await;
    assert_eq!(
        (status, first["assignments"][0]["location_id"].clone()),
        (200, json!("BANQIAO"))
    );
    let (status, second) = route(&app, order("o-2", json!([{"sku": "A", "quantity": 1}]))).await;
    assert_eq!(
        (status, second["assignments"][0]["location_id"].clone()),
        (200, json!("HSINCHU")),
        "{second}"
    );
    assert!(reason_of(&second, "BANQIAO")["reason"]
        .as_str()
        .expect("r")
        .contains("capacity"));
    let mut near = order("o-3", json!([{"sku": "A", "quantity": 1}]));
    near["max_distance_km"] = json!(100.0);
    let (status, third) = route(&app, near).await;
    assert_eq!(
        (status, third["error"].clone()),
        (409, json!("no_fulfilment_option")),
        "{third}"
    );
    assert!(reason_of(&third, "KAOHSIUNG")["reason"]
        .as_str()
        .expect("r")
        .contains("too far"));
    assert!(reason_of(&third, "HSINCHU")["reason"]
        .as_str()
        .expect("r")
        .contains("capacity"));
}

#[tokio::test]
async fn dry_run_holds_nothing_and_the_same_order_id_answers_the_same() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.stock("TAOYUAN", "A", 5).await;
    let (status, dry) = app
        .send(
            Method::POST,
            "/v1/orders/route?dry_run=true",
            RESERVE_KEY,
            &order("o-1", json!([{"sku": "A", "quantity": 2}])),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], json!(true));
    assert_eq!(dry["assignments"][0]["location_id"], json!("TAOYUAN"));
    assert!(dry["assignments"][0].get("reservation_id").is_none());
    assert_eq!(app.reserved("TAOYUAN", "A").await, 0);
    let (s1, first) = route(&app, order("o-1", json!([{"sku": "A", "quantity": 2}]))).await;
    let (s2, again) = route(&app, order("o-1", json!([{"sku": "A", "quantity": 2}]))).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, again);
    assert_eq!(
        app.reserved("TAOYUAN", "A").await,
        2,
        "one hold for one order id"
    );
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn pickup_at_a_store_without_the_stock_names_the_nearest_that_could() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.put_location(
        "NOPICK",
        json!({"name": "No pickup", "kind": "store", "lat": 25.05, "lon": 121.52, "pickup": false}),
    )
    .await;
    app.stock("NOPICK", "A", 9).await;
    app.stock("KEELUNG", "A", 1).await;
    app.stock("TAICHUNG", "A", 1).await;
    let mut p = order("p-1", json!([{"sku": "A", "quantity": 1}]));
    p["fulfilment"] = json!("pickup");
    p["pickup_location_id"] = json!("NEWTPE");
    let (status, body) = route(&app, p.clone()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("no_fulfilment_option")),
        "{body}"
    );
    let alternatives: Vec<&str> = body["details"]["alternatives"]
        .as_array()
        .expect("alt")
        .iter()
        .filter_map(|a| a["location_id"].as_str())
        .collect();
    assert_eq!(alternatives, ["KEELUNG", "TAICHUNG"]);
    p.as_object_mut().expect("obj").remove("pickup_location_id");
    let (status, body) = route(&app, p).await;
    assert_eq!(
        (status, body["assignments"][0]["location_id"].clone()),
        (200, json!("KEELUNG")),
        "{body}"
    );
    assert_eq!(reason_of(&body, "NOPICK")["decision"], json!("skipped"));
}

#[tokio::test]
async fn a_thousand_concurrent_routes_never_promise_more_than_is_there() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.stock("TAOYUAN", "HOT", 60).await;
    app.stock("HSINCHU", "HOT", 40).await;
    let ok = race_routes(&app, "race", 1000, "HOT").await;
    assert_eq!(ok, 100);
    assert_eq!(app.reserved("TAOYUAN", "HOT").await, 60);
    assert_eq!(app.reserved("HSINCHU", "HOT").await, 40);
    app.assert_ledger_consistent().await;
    // A route that lost the race for the stock gave its capacity slot back.
    assert_eq!(slots_and_assignments(&app, "TAOYUAN").await, (60, 60));
    assert_eq!(slots_and_assignments(&app, "HSINCHU").await, (40, 40));
}

/// Sends `n` one-unit orders of `sku` at once; how many were routed (the rest must be 409).
async fn race_routes(app: &TestApp, prefix: &str, n: usize, sku: &str) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, url) = (app.http.clone(), app.url("/v1/orders/route"));
        let body = order(
            &format!("{prefix}-{i}"),
            json!([{"sku": sku, "quantity": 1}]),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(RESERVE_KEY)
                .json(&body)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            200 => ok += 1,
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    ok
}

/// The day's slots counted at a location, and its assignments.
async fn slots_and_assignments(app: &TestApp, location: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT coalesce(sum(orders), 0)::bigint FROM daily_order_counts WHERE location_id = $1),
                (SELECT count(*) FROM order_assignments WHERE location_id = $1)",
    )
    .bind(location)
    .fetch_one(&app.pool)
    .await
    .expect("counts")
}

/// A day's order capacity is a promise too: routes racing for the last slots of two stores
/// take exactly their capacities, and each slot taken is one assignment and one hold.
#[tokio::test]
async fn concurrent_routes_never_take_more_than_a_days_capacity() {
    let app = spawn_app().await;
    cities(&app, Some(7)).await;
    app.stock("NEWTPE", "CAP", 500).await;
    app.stock("BANQIAO", "CAP", 500).await;
    let ok = race_routes(&app, "cap", 200, "CAP").await;
    assert_eq!(ok, 14, "two stores of capacity 7");
    for store in ["NEWTPE", "BANQIAO"] {
        assert_eq!(slots_and_assignments(&app, store).await, (7, 7), "{store}");
        assert_eq!(app.reserved(store, "CAP").await, 7, "{store}");
    }
    app.assert_ledger_consistent().await;
}

/// A route that dies between taking its slot and committing leaves the slot counted without an
/// order. Reconcile reports it (under-use, consistent), and a counter below its orders as a day
/// whose capacity could be exceeded (inconsistent).
#[tokio::test]
async fn reconcile_reports_a_leaked_slot_and_a_day_over_capacity() {
    let app = spawn_app().await;
    cities(&app, Some(7)).await;
    app.stock("NEWTPE", "CAP", 500).await;
    app.stock("BANQIAO", "CAP", 500).await;
    assert_eq!(race_routes(&app, "leak", 3, "CAP").await, 3);
    let report = app.reconcile().await;
    assert!(report.capacity.is_clean(), "{report}");
    assert!(report.to_string().contains("capacity: ok"), "{report}");

    // What a route leaves when it stops after its slot: the slot, and nothing else.
    let mut conn = app.pool.acquire().await.expect("connection");
    omnistock::db::orders::take_slot(&mut conn, "NEWTPE")
        .await
        .expect("take a slot")
        .expect("a slot left");
    let report = app.reconcile().await;
    assert_eq!(report.capacity.leaked_slots, 1, "{report}");
    assert_eq!(report.capacity.leaked[0].location_id, "NEWTPE", "{report}");
    assert!(report.capacity.exceeded.is_empty(), "{report}");
    assert!(
        report.postgres_consistent(),
        "under-use is not an inconsistency"
    );
    assert!(
        report
            .to_string()
            .contains("1 slot(s) counted without an order"),
        "{report}"
    );

    sqlx::query("UPDATE daily_order_counts SET orders = 0")
        .execute(&app.pool)
        .await
        .expect("hand edit");
    let report = app.reconcile().await;
    assert!(!report.capacity.exceeded.is_empty(), "{report}");
    assert!(!report.postgres_consistent(), "{report}");
    assert!(
        report
            .to_string()
            .contains("assigned more orders than they counted"),
        "{report}"
    );
}

#[tokio::test]
async fn nearby_stores_are_sorted_by_distance_within_the_radius() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.put_location(
        "WH",
        json!({"name": "DC", "kind": "warehouse", "lat": 25.05, "lon": 121.52}),
    )
    .await;
    for loc in ["TAOYUAN", "NEWTPE", "KAOHSIUNG", "HSINCHU", "BANQIAO", "WH"] {
        app.stock(loc, "A", 2).await;
    }
    app.stock("KEELUNG", "A", 1).await;
    app.send(
        Method::POST,
        "/v1/reservations",
        RESERVE_KEY,
        &json!({"location_id": "KEELUNG", "lines": [{"sku": "A", "quantity": 1}]}),
    )
    .await;
    let (status, body) = app
        .get(
            &format!(
                "/v1/availability/A/nearby?lat={}&lon={}&radius_km=100",
                TAIPEI.0, TAIPEI.1
            ),
            READ_KEY,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stores = body["stores"].as_array().expect("stores");
    let got: Vec<(&str, f64)> = stores
        .iter()
        .map(|s| {
            (
                s["location_id"].as_str().expect("id"),
                s["distance_km"].as_f64().expect("km"),
            )
        })
        .collect();
    let expected = [
        ("NEWTPE", 7.057),
        ("BANQIAO", 7.361),
        ("TAOYUAN", 24.041),
        ("HSINCHU", 62.712),
    ];
    assert_eq!(
        got.len(),
        expected.len(),
        "Keelung is fully held, Kaohsiung too far, the warehouse no store: {got:?}"
    );
    for ((id, km), (want_id, want_km)) in got.iter().zip(expected) {
        assert_eq!(*id, want_id);
        assert!(
            (km - want_km).abs() < 0.01,
            "{id}: {km} km, expected {want_km}"
        );
    }
    assert!(stores[0]["last_movement_age_seconds"].as_i64().is_some());
    assert!(stores[0]["last_count_at"].is_null(), "never counted");
    let (_, limited) = app
        .get(
            &format!(
                "/v1/availability/A/nearby?lat={}&lon={}&radius_km=30&limit=2",
                TAIPEI.0, TAIPEI.1
            ),
            READ_KEY,
        )
        .await;
    let ids: Vec<&str> = limited["stores"]
        .as_array()
        .expect("s")
        .iter()
        .filter_map(|s| s["location_id"].as_str())
        .collect();
    assert_eq!(ids, ["NEWTPE", "BANQIAO"]);
    assert_eq!(
        app.get("/v1/availability/A/nearby?lat=95&lon=121", READ_KEY)
            .await
            .0,
        422
    );
    assert_eq!(app.get("/v1/availability/A/nearby", READ_KEY).await.0, 422);
}

#[tokio::test]
async fn endless_aisle_staff_route_a_delivery_from_their_store() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.put_location("SMALL", json!({"name": "Small store", "kind": "store", "lat": 25.05, "lon": 121.52, "pickup": true})).await;
    app.stock("TAOYUAN", "DRESS-M", 3).await;
    // The customer stands in SMALL, which has no size M: staff order it to her home.
    let mut o = order("aisle-1", json!([{"sku": "DRESS-M", "quantity": 1}]));
    o["customer"] = json!({"lat": 24.80361, "lon": 120.96861});
    o["placed_at_location_id"] = json!("SMALL");
    let (status, body) = route(&app, o).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["placed_at_location_id"], json!("SMALL"));
    assert_eq!(body["assignments"][0]["location_id"], json!("TAOYUAN"));
    assert_eq!(reason_of(&body, "SMALL")["decision"], json!("skipped"));
}

#[tokio::test]
async fn routes_holds_and_movements_racing_on_the_same_stock_stay_consistent() {
    let app = spawn_app().await;
    cities(&app, None).await;
    for loc in ["TAOYUAN", "HSINCHU"] {
        app.stock(loc, "A", 50).await;
        app.stock(loc, "B", 50).await;
    }
    let before = app.ledger_count().await;
    let mut tasks = Vec::new();
    for i in 0..150 {
        let (http, base) = (app.http.clone(), app.url(""));
        tasks.push(tokio::spawn(async move {
            let (path, body) = match i % 3 {
                // Two-line orders that may split across both stores.
                0 => (
                    "/v1/orders/route",
                    json!({"order_id": format!("mix-{i}"), "fulfilment": "delivery",
                    "allow_split": true, "customer": {"lat": TAIPEI.0, "lon": TAIPEI.1},
                    "lines": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 1}]}),
                ),
                1 => (
                    "/v1/reservations",
                    json!({"location_id": if i % 2 == 0 { "TAOYUAN" } else { "HSINCHU" },
                    "lines": [{"sku": "B", "quantity": 1}, {"sku": "A", "quantity": 1}]}),
                ),
                _ => (
                    "/v1/reservations",
                    json!({"location_id": "HSINCHU", "lines": [{"sku": "A", "quantity": 2}],
                    "ttl_seconds": 1}),
                ),
            };
            http.post(format!("{base}{path}"))
                .bearer_auth(RESERVE_KEY)
                .json(&body)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    // Meanwhile, sales at both stores on the same SKUs.
    for i in 0..60 {
        let loc = if i % 2 == 0 { "TAOYUAN" } else { "HSINCHU" };
        let sku = if i % 3 == 0 { "A" } else { "B" };
        app.publish(
            loc,
            &crate::helpers::movement(&format!("mix-sale-{i}"), loc, sku, "sale", 1),
        )
        .await;
    }
    for t in tasks {
        let status = t.await.expect("join");
        assert!(
            status == 200 || status == 201 || status == 409,
            "unexpected status {status}"
        );
    }
    app.wait_for_ledger(before + 60).await;
    app.assert_ledger_consistent().await;
    for loc in ["TAOYUAN", "HSINCHU"] {
        for sku in ["A", "B"] {
            let (on_hand, reserved): (i64, i64) = sqlx::query_as(
                "SELECT on_hand, reserved FROM stock_levels WHERE location_id = $1 AND sku = $2",
            )
            .bind(loc)
            .bind(sku)
            .fetch_one(&app.pool)
            .await
            .expect("level");
            assert!(
                reserved <= 50,
                "{loc} {sku}: never held more than was there ({reserved})"
            );
            assert!(on_hand >= 50 - 60, "{loc} {sku}: {on_hand}");
        }
    }
}

fn spawn_route(app: &TestApp, body: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    app.spawn_send(Method::POST, "/v1/orders/route", RESERVE_KEY, body)
}

/// Routes queued while a group commits go together in the next one: one transaction, each
/// answered on its own (routed, refused, or the same answer again for a repeated order id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_queued_together_are_held_in_one_group_each_with_its_own_answer() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.stock("TAOYUAN", "GRP", 30).await;
    let groups_before = app
        .metric("omnistock_route_group_size_count")
        .await
        .unwrap_or(0.0);
    let routes_before = app
        .metric("omnistock_route_group_size_sum")
        .await
        .unwrap_or(0.0);
    let lock = app.block_level("TAOYUAN", "GRP").await;
    let front = spawn_route(
        &app,
        order("grp-front", json!([{"sku": "GRP", "quantity": 1}])),
    );
    app.wait_for_a_lock_wait("a route waiting for the level lock")
        .await;
    let mut queued = Vec::new();
    for i in 0..12 {
        let body = order(&format!("grp-{i}"), json!([{"sku": "GRP", "quantity": 2}]));
        queued.push(spawn_route(&app, body));
    }
    // The same order twice, and one no location can serve.
    let twice = [
        spawn_route(
            &app,
            order("grp-twice", json!([{"sku": "GRP", "quantity": 1}])),
        ),
        spawn_route(
            &app,
            order("grp-twice", json!([{"sku": "GRP", "quantity": 1}])),
        ),
    ];
    let greedy = spawn_route(
        &app,
        order("grp-greedy", json!([{"sku": "GRP", "quantity": 31}])),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.commit().await.expect("release the level");

    assert_eq!(front.await.expect("front").0, 200);
    let mut reservations = std::collections::HashSet::new();
    for t in queued {
        let (status, body) = t.await.expect("route");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["assignments"][0]["location_id"], "TAOYUAN", "{body}");
        let id = body["assignments"][0]["reservation_id"]
            .as_str()
            .expect("a hold");
        assert!(
            reservations.insert(id.to_owned()),
            "one hold per route: {body}"
        );
    }
    let [a, b] = twice;
    let (a, b) = (a.await.expect("twice"), b.await.expect("twice"));
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.1, b.1, "the repeated order id answers the same route");
    // More than there is, whatever the order the group decided them in.
    let (status, body) = greedy.await.expect("greedy");
    assert_eq!(status, 409, "{body}");
    assert_eq!(reason_of(&body, "TAOYUAN")["code"], "no_stock", "{body}");
    assert_eq!(app.reserved("TAOYUAN", "GRP").await, 26);
    assert_eq!(slots_and_assignments(&app, "TAOYUAN").await, (14, 14));
    app.assert_ledger_consistent().await;

    let groups = app
        .metric("omnistock_route_group_size_count")
        .await
        .unwrap_or(0.0)
        - groups_before;
    let routes = app
        .metric("omnistock_route_group_size_sum")
        .await
        .unwrap_or(0.0)
        - routes_before;
    assert!(routes >= 16.0, "every route went through a group: {routes}");
    // The front route's group, the queued ones' group, and the repeated id decided again.
    assert!(groups <= 4.0, "{groups} groups for {routes} routes");
}

/// A route decides on levels read without a lock. If another writer takes the stock before
/// the route's group locks the level, the route is decided again on what is left, as a route
/// alone would be: never held where the stock went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_stock_goes_before_its_lock_is_decided_again() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.stock("TAOYUAN", "GONE", 5).await;
    app.stock("HSINCHU", "GONE", 5).await;
    let mut lock = app.block_level("TAOYUAN", "GONE").await;
    let route = spawn_route(
        &app,
        order("gone-1", json!([{"sku": "GONE", "quantity": 2}])),
    );
    app.wait_for_a_lock_wait("a route waiting for the level lock")
        .await;
    // What a sale of all five would leave, written straight under the lock (put back below).
    sqlx::query(
        "UPDATE stock_levels SET on_hand = 0 WHERE location_id = 'TAOYUAN' AND sku = 'GONE'",
    )
    .execute(&mut *lock)
    .await
    .expect("empty the level");
    lock.commit().await.expect("release the level");
    let (status, body) = route.await.expect("route");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["assignments"][0]["location_id"], "HSINCHU", "{body}");
    assert_eq!(app.reserved("TAOYUAN", "GONE").await, 0);
    assert_eq!(app.reserved("HSINCHU", "GONE").await, 2);
    assert_eq!(slots_and_assignments(&app, "TAOYUAN").await, (0, 0));
    sqlx::query(
        "UPDATE stock_levels SET on_hand = 5 WHERE location_id = 'TAOYUAN' AND sku = 'GONE'",
    )
    .execute(&app.pool)
    .await
    .expect("put the stock back");
    app.assert_ledger_consistent().await;
}

/// A route the database refuses fails its group's transaction; the group is then taken one
/// route at a time, so only that route fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_fails_in_a_group_does_not_fail_the_others() {
    let app = spawn_app().await;
    cities(&app, None).await;
    app.stock("TAOYUAN", "PSN", 50).await;
    app.refuse_on_insert("orders", "order_id", "poison").await;
    let lock = app.block_level("TAOYUAN", "PSN").await;
    let front = spawn_route(
        &app,
        order("psn-front", json!([{"sku": "PSN", "quantity": 1}])),
    );
    app.wait_for_a_lock_wait("a route waiting for the level lock")
        .await;
    let mut queued = Vec::new();
    for i in 0..6 {
        let id = if i == 3 {
            "poison".to_owned()
        } else {
            format!("psn-{i}")
        };
        queued.push((
            id.clone(),
            spawn_route(&app, order(&id, json!([{"sku": "PSN", "quantity": 2}]))),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.expect("release the level");
    assert_eq!(front.await.expect("front").0, 200);
    for (id, t) in queued {
        let (status, body) = t.await.expect("route");
        if id == "poison" {
            assert_eq!(status, 500, "{body}");
        } else {
            assert_eq!(status, 200, "{id}: {body}");
        }
    }
    assert_eq!(app.reserved("TAOYUAN", "PSN").await, 1 + 5 * 2);
    assert_eq!(slots_and_assignments(&app, "TAOYUAN").await, (6, 6));
    app.assert_ledger_consistent().await;
}
