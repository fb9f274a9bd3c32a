use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    movement, spawn_app, spawn_with, wait_until, Isolation, TestApp, RESERVE_KEY,
};

async fn reserve(app: &TestApp, body: Value) -> (u16, Value) {
    app.send(Method::POST, "/v1/reservations", RESERVE_KEY, &body)
        .await
}

#[tokio::test]
async fn a_thousand_concurrent_holds_never_take_more_than_is_available() {
    let app = spawn_app().await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.stock("TW001", "HOT-SKU", 100).await;
    let url = app.url("/v1/reservations");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (http, url) = (app.http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(RESERVE_KEY)
                .json(
                    &json!({"reservation_id": format!("race-{i}"), "location_id": "TW001",
                              "lines": [{"sku": "HOT-SKU", "quantity": 1}]}),
                )
                .send()
                .await
                .expect("request");
            r.status().as_u16()
        }));
    }
    let mut held = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("join") {
            201 => held += 1,
            409 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((held, refused), (100, 900));
    assert_eq!(app.reserved("TW001", "HOT-SKU").await, 100);
    let (_, a) = app.get("/v1/availability/HOT-SKU", RESERVE_KEY).await;
    assert_eq!(a["available"], json!(0));
    assert_eq!(a["locations"][0]["reserved"], json!(100));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn all_lines_or_none_with_repeated_skus_summed() {
    let app = spawn_app().await;
    app.put_location(
        "TW002",
        json!({"name": "S", "kind": "store", "lat": 25.0, "lon": 121.4, "safety_stock": 1}),
    )
    .await;
    app.stock("TW002", "A", 4).await;
    app.stock("TW002", "B", 10).await;
    // A: 4 on hand - 1 safety = 3 available; the order asks 2 + 2.
    let (status, body) = reserve(
        &app,
        json!({"location_id": "TW002", "lines": [
        {"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}, {"sku": "A", "quantity": 2}]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], json!("insufficient_stock"));
    assert_eq!(
        body["details"]["lines"],
        json!([{"sku": "A", "requested": 4, "available": 3}])
    );
    assert_eq!(
        app.reserved("TW002", "B").await,
        0,
        "nothing held when one line fails"
    );
    let (status, body) = reserve(
        &app,
        json!({"location_id": "TW002", "lines": [
        {"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 1}, {"sku": "A", "quantity": 2}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], json!("held"));
    assert_eq!(app.reserved("TW002", "A").await, 3);
    let (status, body) = reserve(
        &app,
        json!({"location_id": "TW002", "lines": [{"sku": "NEVER", "quantity": 1}]}),
    )
    .await;
    assert_eq!(
        (status, body["details"]["lines"][0]["available"].clone()),
        (409, json!(0))
    );
    let (status, _) = reserve(
        &app,
        json!({"location_id": "NOWHERE", "lines": [{"sku": "A", "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = reserve(
        &app,
        json!({"location_id": "TW002", "lines": [{"sku": "A", "quantity": 0}]}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = reserve(
        &app,
        json!({"location_id": "TW002", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 0}),
    )
    .await;
    assert_eq!(status, 422);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn the_same_reservation_id_returns_the_same_reservation() {
    let app = spawn_app().await;
    app.store("TW003", 24.1469, 120.6839).await;
    app.stock("TW003", "A", 5).await;
    let body = json!({"reservation_id": "cart-42", "location_id": "TW003", "lines": [{"sku": "A", "quantity": 2}]});
    let (s1, first) = reserve(&app, body.clone()).await;
    let (s2, again) = reserve(&app, body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first, again);
    assert_eq!(app.reserved("TW003", "A").await, 2);
    let (status, got) = app.get("/v1/reservations/cart-42", RESERVE_KEY).await;
    assert_eq!((status, got["status"].clone()), (200, json!("held")));
    assert_eq!(app.get("/v1/reservations/nope", RESERVE_KEY).await.0, 404);
}

#[tokio::test]
async fn confirm_stops_expiry_and_delete_releases() {
    let app = spawn_app().await;
    app.store("TW004", 22.61626, 120.31333).await;
    app.stock("TW004", "A", 5).await;
    reserve(&app, json!({"reservation_id": "c1", "location_id": "TW004", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 1})).await;
    let (status, c) = app
        .send(
            Method::POST,
            "/v1/reservations/c1/confirm",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, c["status"].clone(), c["expires_at"].clone()),
        (200, json!("confirmed"), Value::Null)
    );
    reserve(&app, json!({"reservation_id": "d1", "location_id": "TW004", "lines": [{"sku": "A", "quantity": 2}]})).await;
    assert_eq!(app.reserved("TW004", "A").await, 3);
    let (status, d) = app
        .send(
            Method::DELETE,
            "/v1/reservations/d1",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!((status, d["status"].clone()), (200, json!("released")));
    let (status, _) = app
        .send(
            Method::DELETE,
            "/v1/reservations/d1",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "releasing twice is harmless");
    assert_eq!(app.reserved("TW004", "A").await, 1);
    let (status, e) = app
        .send(
            Method::POST,
            "/v1/reservations/d1/confirm",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, e["error"].clone()),
        (409, json!("reservation_not_held"))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, c) = app.get("/v1/reservations/c1", RESERVE_KEY).await;
    assert_eq!(
        c["status"],
        json!("confirmed"),
        "a confirmed hold never expires"
    );
    assert_eq!(app.reserved("TW004", "A").await, 1);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn expired_holds_are_released_once_by_one_of_several_daemons() {
    let iso = Isolation::new().await;
    let a = spawn_with(iso.clone(), |_| {}).await;
    let _b = spawn_with(iso.clone(), |_| {}).await;
    a.store("TW005", 22.99083, 120.21333).await;
    a.stock("TW005", "A", 100).await;
    let created = Instant::now();
    for i in 0..40 {
        let (status, _) = reserve(
            &a,
            json!({"reservation_id": format!("x{i}"), "location_id": "TW005",
            "lines": [{"sku": "A", "quantity": 2}], "ttl_seconds": 2}),
        )
        .await;
        assert_eq!(status, 201);
    }
    assert_eq!(a.reserved("TW005", "A").await, 80);
    wait_until("every hold expired", || async {
        a.reserved("TW005", "A").await == 0
    })
    .await;
    assert!(
        created.elapsed() < Duration::from_secs(2 + 5),
        "released within 5 s of expiry"
    );
    let expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'expired'")
            .fetch_one(&a.pool)
            .await
            .expect("count");
    assert_eq!(expired, 40);
    let versions: i64 = sqlx::query_scalar("SELECT version FROM stock_levels WHERE sku = 'A'")
        .fetch_one(&a.pool)
        .await
        .expect("version");
    assert!(
        versions <= 1 + 40 + 40,
        "each hold taken once and released once"
    );
    a.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_hold_outlives_a_restart_and_still_expires() {
    let iso = Isolation::new().await;
    let mut first = spawn_with(iso.clone(), |_| {}).await;
    first.store("TW006", 25.01427, 121.46719).await;
    first.stock("TW006", "A", 3).await;
    reserve(&first, json!({"reservation_id": "r", "location_id": "TW006", "lines": [{"sku": "A", "quantity": 3}], "ttl_seconds": 3})).await;
    first.stop().await;
    let second = spawn_with(iso, |_| {}).await;
    assert_eq!(
        second.reserved("TW006", "A").await,
        3,
        "the hold survived the restart"
    );
    wait_until("hold expired after restart", || async {
        second.get("/v1/reservations/r", RESERVE_KEY).await.1["status"] == json!("expired")
    })
    .await;
    assert_eq!(second.reserved("TW006", "A").await, 0);
}

#[tokio::test]
async fn a_sale_carrying_a_reservation_id_consumes_exactly_its_hold() {
    let app = spawn_app().await;
    app.store("TW007", 24.99368, 121.29696).await;
    app.stock("TW007", "A", 10).await;
    reserve(&app, json!({"reservation_id": "r1", "location_id": "TW007", "lines": [{"sku": "A", "quantity": 2}]})).await;
    reserve(&app, json!({"reservation_id": "r2", "location_id": "TW007", "lines": [{"sku": "A", "quantity": 3}]})).await;
    assert_eq!(app.reserved("TW007", "A").await, 5);
    let mut sale = movement("sale-r1", "TW007", "A", "sale", 2);
    sale["reservation_id"] = json!("r1");
    app.publish("TW007", &sale).await;
    app.wait_for_ledger(2).await;
    assert_eq!(app.on_hand("TW007", "A").await, Some(8));
    assert_eq!(
        app.reserved("TW007", "A").await,
        3,
        "only r1's hold is released"
    );
    let (_, r1) = app.get("/v1/reservations/r1", RESERVE_KEY).await;
    let (_, r2) = app.get("/v1/reservations/r2", RESERVE_KEY).await;
    assert_eq!(
        (r1["status"].clone(), r2["status"].clone()),
        (json!("fulfilled"), json!("held"))
    );
    // A partial pick: 1 of r2's 3 leaves; the rest stays held.
    let mut part = movement("sale-r2", "TW007", "A", "transfer_out", 1);
    part["reservation_id"] = json!("r2");
    app.publish("TW007", &part).await;
    app.wait_for_ledger(3).await;
    assert_eq!(app.reserved("TW007", "A").await, 2);
    let (_, r2) = app.get("/v1/reservations/r2", RESERVE_KEY).await;
    assert_eq!(
        (r2["status"].clone(), r2["lines"][0]["held"].clone()),
        (json!("held"), json!(2))
    );
    app.assert_ledger_consistent().await;
}
