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

async fn patch(app: &TestApp, id: &str, key: &str, body: Value) -> (u16, Value) {
    app.send(Method::PATCH, &format!("/v1/reservations/{id}"), key, &body)
        .await
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

#[tokio::test]
async fn an_extended_hold_outlives_its_old_expiry_while_the_expiry_job_runs() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "A", 5).await;
    let (status, hold) = reserve(
        &app,
        json!({"reservation_id": "x1", "location_id": "TW1",
        "lines": [{"sku": "A", "quantity": 2}], "ttl_seconds": 2}),
    )
    .await;
    assert_eq!(status, 201, "{hold}");
    let old = time(&hold["expires_at"]);

    let (status, body) = patch(&app, "x1", RESERVE_KEY, json!({"ttl_seconds": 60})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("held"));
    assert!(time(&body["expires_at"]) > old + chrono::Duration::seconds(50));
    let (_, shown) = app.get("/v1/reservations/x1", RESERVE_KEY).await;
    assert_eq!(body, shown, "PATCH answers the reservation as GET shows it");

    // Past the old expiry, with the sweep running every half second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, shown) = app.get("/v1/reservations/x1", RESERVE_KEY).await;
    assert_eq!(shown["status"], json!("held"), "{shown}");
    assert_eq!(app.reserved("TW1", "A").await, 2);

    // The same request again: held, expiring ttl_seconds from now; nothing else changes.
    let (status, again) = patch(&app, "x1", RESERVE_KEY, json!({"ttl_seconds": 60})).await;
    assert_eq!((status, again["status"].clone()), (200, json!("held")));
    assert_eq!(app.reserved("TW1", "A").await, 2);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn only_a_held_hold_can_be_extended() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "A", 5).await;
    for (id, ttl) in [("conf", 60), ("rel", 60), ("exp", 1)] {
        let (status, body) = reserve(
            &app,
            json!({"reservation_id": id, "location_id": "TW1",
            "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": ttl}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let confirm = app
        .send(
            Method::POST,
            "/v1/reservations/conf/confirm",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(confirm.0, 200);
    let release = app
        .send(
            Method::DELETE,
            "/v1/reservations/rel",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(release.0, 200);
    wait_until("the short hold expired", || async {
        app.get("/v1/reservations/exp", RESERVE_KEY).await.1["status"] == json!("expired")
    })
    .await;
    for (id, was) in [
        ("conf", "confirmed"),
        ("rel", "released"),
        ("exp", "expired"),
    ] {
        let (status, body) = patch(&app, id, RESERVE_KEY, json!({"ttl_seconds": 60})).await;
        assert_eq!(status, 409, "{id}: {body}");
        assert_eq!(body["error"], json!("reservation_not_held"));
        assert_eq!(body["details"]["status"], json!(was));
    }
    assert_eq!(
        app.reserved("TW1", "A").await,
        1,
        "only the confirmed hold holds"
    );
    let (_, conf) = app.get("/v1/reservations/conf", RESERVE_KEY).await;
    assert_eq!(
        conf["expires_at"],
        Value::Null,
        "a confirmed hold got no deadline"
    );

    let (status, body) = patch(&app, "nope", RESERVE_KEY, json!({"ttl_seconds": 60})).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_lapsed_hold_the_sweep_has_not_reached_is_not_extended() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "A", 5).await;
    reserve(
        &app,
        json!({"reservation_id": "lapsed", "location_id": "TW1",
        "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 600}),
    )
    .await;
    // Lapsed inside an open transaction: the sweep cannot see it, so only the rule can refuse.
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query(
        "UPDATE reservations SET expires_at = clock_timestamp() - interval '1 second'
         WHERE reservation_id = 'lapsed'",
    )
    .execute(&mut *tx)
    .await
    .expect("lapse");
    let extended = omnistock::db::reservations::extend(&mut tx, "lapsed", 60)
        .await
        .expect("extend");
    assert!(!extended, "a hold past its expiry must not be extended");
    tx.rollback().await.expect("rollback");
    let extended = {
        let mut conn = app.pool.acquire().await.expect("conn");
        omnistock::db::reservations::extend(&mut conn, "lapsed", 60)
            .await
            .expect("extend")
    };
    assert!(extended, "the same hold before its expiry is extended");
}

#[tokio::test]
async fn a_ttl_out_of_bounds_is_a_422_naming_it() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "A", 5).await;
    reserve(
        &app,
        json!({"reservation_id": "h", "location_id": "TW1",
        "lines": [{"sku": "A", "quantity": 1}]}),
    )
    .await;
    for body in [
        json!({"ttl_seconds": 0}),
        json!({"ttl_seconds": -5}),
        json!({"ttl_seconds": 86_401}),
        json!({}),
    ] {
        let (status, answer) = patch(&app, "h", RESERVE_KEY, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["details"]["field"], json!("ttl_seconds"), "{answer}");
    }
}

/// Each hold is extended close to its expiry (some just before, some just after) while the
/// sweep runs: every 200 must leave a hold that is still held, every 409 one that expired.
#[tokio::test]
async fn extension_racing_expiry_never_answers_extended_for_an_expired_hold() {
    const N: usize = 60;
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "A", N as i64).await;
    let mut deadlines = Vec::new();
    for i in 0..N {
        let (status, body) = reserve(
            &app,
            json!({"reservation_id": format!("r{i}"),
            "location_id": "TW1", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 2}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        deadlines.push(time(&body["expires_at"]));
    }
    let mut tasks = Vec::new();
    for (i, deadline) in deadlines.into_iter().enumerate() {
        let (http, url) = (app.http.clone(), app.url(&format!("/v1/reservations/r{i}")));
        // From 600 ms before to 600 ms after the deadline, the sweep's half-second period.
        let offset = chrono::Duration::milliseconds((i as i64 % 13) * 100 - 600);
        tasks.push(tokio::spawn(async move {
            let wait = (deadline + offset - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let r = http
                .patch(url)
                .bearer_auth(RESERVE_KEY)
                .json(&json!({"ttl_seconds": 120}))
                .send()
                .await
                .expect("request");
            (i, r.status().as_u16())
        }));
    }
    let mut extended = Vec::new();
    for t in tasks {
        let (i, status) = t.await.expect("join");
        match status {
            200 => extended.push(i),
            409 => {}
            other => panic!("r{i}: unexpected status {other}"),
        }
    }
    // Long enough for the sweep to have taken every hold it may take.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..N {
        let (_, r) = app
            .get(&format!("/v1/reservations/r{i}"), RESERVE_KEY)
            .await;
        let want = if extended.contains(&i) {
            "held"
        } else {
            "expired"
        };
        assert_eq!(r["status"], json!(want), "r{i}: {r}");
    }
    assert_eq!(app.reserved("TW1", "A").await, extended.len() as i64);
    assert!(
        !extended.is_empty() && extended.len() < N,
        "the race should land on both sides ({} of {N} extended)",
        extended.len()
    );
    app.assert_ledger_consistent().await;
}

const STORE_KEY: &str = "store-tw1-tablet";

async fn spawn_with_store_key() -> TestApp {
    spawn_with(Isolation::new().await, |c| {
        c.api_keys = format!(
            "{}=*,{RESERVE_KEY}=read|reserve,{STORE_KEY}=read|reserve@TW1",
            crate::helpers::ADMIN_KEY
        )
        .parse()
        .expect("keys");
    })
    .await
}

#[tokio::test]
async fn a_key_bound_to_a_location_extends_and_lists_only_its_holds() {
    let app = spawn_with_store_key().await;
    app.store("TW1", 25.0, 121.5).await;
    app.store("TW2", 25.1, 121.6).await;
    app.stock("TW1", "A", 5).await;
    app.stock("TW2", "A", 5).await;
    for (id, loc) in [("mine", "TW1"), ("elsewhere", "TW2")] {
        let (status, body) = reserve(
            &app,
            json!({"reservation_id": id, "location_id": loc,
            "lines": [{"sku": "A", "quantity": 1}]}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = patch(&app, "elsewhere", STORE_KEY, json!({"ttl_seconds": 60})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = patch(&app, "mine", STORE_KEY, json!({"ttl_seconds": 60})).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = app.get("/v1/reservations", STORE_KEY).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["reservations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["reservation_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["mine"]);
    let (status, body) = app.get("/v1/reservations?location_id=TW1", STORE_KEY).await;
    assert_eq!(
        (status, body["reservations"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, body) = app.get("/v1/reservations?location_id=TW2", STORE_KEY).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["details"]["location_id"], json!("TW1"));
    let (_, all) = app.get("/v1/reservations", RESERVE_KEY).await;
    assert_eq!(all["reservations"].as_array().map(Vec::len), Some(2));
}

/// Pages through every reservation matching `query` and returns their ids in order.
async fn all_pages(app: &TestApp, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            None => format!("/v1/reservations?limit={limit}{query}"),
            Some(c) => format!("/v1/reservations?limit={limit}{query}&cursor={c}"),
        };
        let (status, body) = app.get(&path, RESERVE_KEY).await;
        assert_eq!(status, 200, "{path}: {body}");
        let page = body["reservations"].as_array().expect("reservations");
        assert!(page.len() <= limit);
        items.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
    panic!("paging never ended");
}

#[tokio::test]
async fn listing_pages_newest_first_with_filters_and_no_gaps_or_duplicates() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.store("TW2", 25.1, 121.6).await;
    app.stock("TW1", "A", 1000).await;
    app.stock("TW2", "A", 1000).await;
    let mut tasks = Vec::new();
    for i in 0..130 {
        let (http, url) = (app.http.clone(), app.url("/v1/reservations"));
        let loc = if i % 3 == 0 { "TW2" } else { "TW1" };
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(RESERVE_KEY)
                .json(
                    &json!({"reservation_id": format!("l{i:03}"), "location_id": loc,
                              "lines": [{"sku": "A", "quantity": 1}]}),
                )
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 201);
    }
    for i in (0..130).step_by(5) {
        let path = format!("/v1/reservations/l{i:03}/confirm");
        assert_eq!(
            app.send(Method::POST, &path, RESERVE_KEY, &json!({}))
                .await
                .0,
            200
        );
    }
    // Ties on created_at across page boundaries: the cursor must break them by id.
    sqlx::query(
        "UPDATE reservations SET created_at = '2026-11-30T10:00:00Z'
         WHERE reservation_id BETWEEN 'l040' AND 'l079'",
    )
    .execute(&app.pool)
    .await
    .expect("ties");

    let items = all_pages(&app, "", 7).await;
    let ids: Vec<String> = items
        .iter()
        .map(|r| r["reservation_id"].as_str().expect("id").to_owned())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (ids.len(), unique.len()),
        (130, 130),
        "no gaps, no duplicates"
    );
    let created: Vec<_> = items.iter().map(|r| time(&r["created_at"])).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let (_, one) = app.get("/v1/reservations/l007", RESERVE_KEY).await;
    assert!(
        items.contains(&one),
        "an item is the reservation as GET shows it"
    );

    let confirmed_at_tw2 = all_pages(&app, "&status=confirmed&location_id=TW2", 3).await;
    let want: Vec<String> = (0..130)
        .filter(|i| i % 5 == 0 && i % 3 == 0)
        .map(|i| format!("l{i:03}"))
        .collect();
    let mut got: Vec<String> = confirmed_at_tw2
        .iter()
        .map(|r| r["reservation_id"].as_str().expect("id").to_owned())
        .collect();
    got.sort();
    assert_eq!(got, want);
    let held = all_pages(&app, "&status=held", 500).await;
    assert_eq!(held.len(), 130 - 26);
    assert!(held.iter().all(|r| r["status"] == json!("held")));

    let (_, first) = app.get("/v1/reservations", RESERVE_KEY).await;
    assert_eq!(
        first["reservations"].as_array().map(Vec::len),
        Some(50),
        "default limit"
    );
}

#[tokio::test]
async fn listing_filters_by_sku_and_by_routed_order() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "A", 10).await;
    app.stock("TW1", "B", 10).await;
    for (id, sku) in [("fa", "A"), ("fb", "B"), ("fab", "A")] {
        let mut lines = vec![json!({"sku": sku, "quantity": 1})];
        if id == "fab" {
            lines.push(json!({"sku": "B", "quantity": 1}));
        }
        let body = json!({"reservation_id": id, "location_id": "TW1", "lines": lines});
        let (status, answer) = app
            .send(Method::POST, "/v1/reservations", RESERVE_KEY, &body)
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let order = json!({"order_id": "web-9", "fulfilment": "pickup",
        "customer": {"lat": 25.0, "lon": 121.5}, "lines": [{"sku": "B", "quantity": 2}]});
    let (status, routed) = app
        .send(Method::POST, "/v1/orders/route", RESERVE_KEY, &order)
        .await;
    assert_eq!(status, 200, "{routed}");
    let routed_hold = routed["assignments"][0]["reservation_id"]
        .as_str()
        .expect("the route held")
        .to_owned();

    let ids = |items: Vec<Value>| {
        let mut ids: Vec<String> = items
            .iter()
            .map(|r| r["reservation_id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut with_b = vec!["fab".to_owned(), "fb".to_owned(), routed_hold.clone()];
    with_b.sort();
    assert_eq!(ids(all_pages(&app, "&sku=B", 2).await), with_b);
    assert_eq!(ids(all_pages(&app, "&sku=A", 50).await), ["fa", "fab"]);
    assert_eq!(
        ids(all_pages(&app, "&order_id=web-9", 50).await),
        [routed_hold]
    );
    assert_eq!(
        ids(all_pages(&app, "&order_id=web-9&sku=A", 50).await),
        Vec::<String>::new()
    );
    assert!(all_pages(&app, "&order_id=web-10", 50).await.is_empty());
}

#[tokio::test]
async fn bad_listing_parameters_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=00ff", "cursor"),
        ("location_id=no%20spaces", "location_id"),
        ("sku=", "sku"),
        ("order_id=", "order_id"),
    ] {
        let (status, body) = app
            .get(&format!("/v1/reservations?{query}"), RESERVE_KEY)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["details"]["field"], json!(field), "{query}: {body}");
    }
    let (status, body) = app.get("/v1/reservations?limit=500", RESERVE_KEY).await;
    assert_eq!((status, body["next_cursor"].clone()), (200, Value::Null));
}

fn spawn_hold(app: &TestApp, body: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    app.spawn_send(Method::POST, "/v1/reservations", RESERVE_KEY, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_repeats_in_one_group_answer_the_same_reservation() {
    let app = spawn_app().await;
    app.store("GRP1", 25.05306, 121.52639).await;
    app.stock("GRP1", "HOT", 100).await;
    let lock = app.block_level("GRP1", "HOT").await;
    let front = spawn_hold(
        &app,
        json!({"reservation_id": "front", "location_id": "GRP1",
                                        "lines": [{"sku": "HOT", "quantity": 1}]}),
    );
    app.wait_for_a_lock_wait("a hold waiting for the level lock")
        .await;
    // Queued behind the group in front: they go together once the lock is released.
    let mut queued = Vec::new();
    for copy in 0..8 {
        for id in 0..3 {
            let body = json!({"reservation_id": format!("dup-{id}"), "location_id": "GRP1",
                              "lines": [{"sku": "HOT", "quantity": id + 1}]});
            queued.push((id, copy, spawn_hold(&app, body)));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.commit().await.expect("release the level");
    assert_eq!(front.await.expect("front").0, 201);
    let mut first: Vec<Option<Value>> = vec![None; 3];
    let mut created = [0; 3];
    for (id, _, t) in queued {
        let (status, mut body) = t.await.expect("hold");
        assert!(status == 201 || status == 200, "{status} {body}");
        if status == 201 {
            created[id as usize] += 1;
        }
        assert_eq!(body["reservation_id"], format!("dup-{id}"), "{body}");
        assert_eq!(body["lines"][0]["quantity"], id + 1, "{body}");
        body.as_object_mut().expect("object").remove("status");
        match &first[id as usize] {
            None => first[id as usize] = Some(body),
            Some(f) => assert_eq!(f, &body, "every copy answers the same reservation"),
        }
    }
    assert_eq!(created, [1, 1, 1], "each id held once");
    assert_eq!(app.reserved("GRP1", "HOT").await, 1 + 1 + 2 + 3);
    app.assert_ledger_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_fails_in_a_group_does_not_fail_the_others() {
    let app = spawn_app().await;
    app.store("GRP2", 25.05306, 121.52639).await;
    app.stock("GRP2", "HOT", 100).await;
    // A row the database refuses, as a broken hold would be: it fails its group's
    // transaction, and the group is taken again one by one.
    app.refuse_on_insert("reservation_lines", "reservation_id", "poison")
        .await;
    let lock = app.block_level("GRP2", "HOT").await;
    let front = spawn_hold(
        &app,
        json!({"reservation_id": "front", "location_id": "GRP2",
                                        "lines": [{"sku": "HOT", "quantity": 1}]}),
    );
    app.wait_for_a_lock_wait("a hold waiting for the level lock")
        .await;
    let mut queued = Vec::new();
    for i in 0..6 {
        let id = if i == 3 {
            "poison".to_owned()
        } else {
            format!("ok-{i}")
        };
        let body = json!({"reservation_id": id, "location_id": "GRP2",
                          "lines": [{"sku": "HOT", "quantity": 2}]});
        queued.push((id, spawn_hold(&app, body)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Queued last, and too much for what the others leave: refused on its own, with its own
    // numbers.
    let greedy = spawn_hold(
        &app,
        json!({"reservation_id": "greedy", "location_id": "GRP2",
                                         "lines": [{"sku": "HOT", "quantity": 95}]}),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.expect("release the level");
    assert_eq!(front.await.expect("front").0, 201);
    for (id, t) in queued {
        let (status, body) = t.await.expect("hold");
        if id == "poison" {
            assert_eq!(status, 500, "{body}");
        } else {
            assert_eq!(status, 201, "{id}: {body}");
        }
    }
    let (status, body) = greedy.await.expect("greedy");
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["details"]["lines"],
        json!([{"sku": "HOT", "requested": 95, "available": 89}])
    );
    assert_eq!(app.reserved("GRP2", "HOT").await, 1 + 5 * 2);
    let (status, _) = app.get("/v1/reservations/poison", RESERVE_KEY).await;
    assert_eq!(status, 404, "nothing of the failed hold is left");
    app.assert_ledger_consistent().await;
}
