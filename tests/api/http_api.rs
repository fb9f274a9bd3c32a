use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{movement, spawn_app, spawn_with, Isolation, ADMIN_KEY, READ_KEY};

#[tokio::test]
async fn keys_and_scopes_are_enforced_with_machine_readable_errors() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/v1/locations"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], json!("unauthorized"));
    assert!(body["message"].is_string());
    assert_eq!(app.get("/v1/locations", "wrong-key-123").await.0, 401);
    let r = app
        .http
        .get(app.url("/v1/locations"))
        .header("x-api-key", READ_KEY)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = app
        .send(
            Method::PUT,
            "/v1/locations/TW001",
            READ_KEY,
            &json!({"name": "x", "kind": "store", "lat": 0, "lon": 0}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], json!("forbidden"));
    assert_eq!(body["details"]["required_scope"], json!("admin"));
}

#[tokio::test]
async fn locations_are_created_replaced_listed_and_validated() {
    let app = spawn_app().await;
    let body = json!({"name": "Taipei Store", "kind": "store", "lat": 25.05306, "lon": 121.52639,
                      "pickup": true, "ship_from": true, "safety_stock": 1, "daily_order_capacity": 50,
                      "timezone": "Asia/Taipei"});
    let (status, created) = app
        .send(Method::PUT, "/v1/locations/TW001", ADMIN_KEY, &body)
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["location_id"], json!("TW001"));
    let mut replaced = body.clone();
    replaced["safety_stock"] = json!(3);
    let (status, _) = app
        .send(Method::PUT, "/v1/locations/TW001", ADMIN_KEY, &replaced)
        .await;
    assert_eq!(status, 200);
    let (status, one) = app.get("/v1/locations/TW001", READ_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(one["safety_stock"], json!(3));
    assert_eq!(one["timezone"], json!("Asia/Taipei"));
    let (_, list) = app.get("/v1/locations", READ_KEY).await;
    assert_eq!(list["locations"].as_array().map(Vec::len), Some(1));

    let (status, missing) = app.get("/v1/locations/NOPE", READ_KEY).await;
    assert_eq!(
        (status, missing["error"].clone()),
        (404, json!("not_found"))
    );

    let mut bad = body.clone();
    bad["lat"] = json!(100.0);
    bad["safety_stock"] = json!(-1);
    let (status, err) = app
        .send(Method::PUT, "/v1/locations/TW001", ADMIN_KEY, &bad)
        .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"], json!("invalid_request"));
    let fields: Vec<&str> = err["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, ["lat", "safety_stock"]);

    let mut tz = body.clone();
    tz["timezone"] = json!("Mars/Olympus");
    assert_eq!(
        app.send(Method::PUT, "/v1/locations/TW002", ADMIN_KEY, &tz)
            .await
            .0,
        422
    );
    assert_eq!(
        app.send(Method::PUT, "/v1/locations/bad.id", ADMIN_KEY, &body)
            .await
            .0,
        422
    );
    let mut extra = body.clone();
    extra["colour"] = json!("red");
    assert_eq!(
        app.send(Method::PUT, "/v1/locations/TW002", ADMIN_KEY, &extra)
            .await
            .0,
        422
    );
    assert_eq!(
        app.send(
            Method::PUT,
            "/v1/locations/TW002",
            ADMIN_KEY,
            &json!({"name": "x"})
        )
        .await
        .0,
        422
    );

    let r = app
        .http
        .put(app.url("/v1/locations/TW002"))
        .bearer_auth(ADMIN_KEY)
        .body("{oops")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        json!("malformed_request")
    );
    let r = app
        .http
        .put(app.url("/v1/locations/TW002"))
        .bearer_auth(ADMIN_KEY)
        .body(vec![b' '; 600 * 1024])
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        json!("payload_too_large")
    );
}

async fn network(app: &crate::helpers::TestApp) {
    app.store("S1", 25.0, 121.5).await;
    app.put_location("S2", json!({"name": "Ship store", "kind": "store", "lat": 25.1, "lon": 121.5, "ship_from": true, "safety_stock": 2})).await;
    app.put_location(
        "WH",
        json!({"name": "DC", "kind": "warehouse", "lat": 24.9, "lon": 121.2}),
    )
    .await;
    app.put_location(
        "WEB",
        json!({"name": "E-shop", "kind": "online", "lat": 25.0, "lon": 121.5}),
    )
    .await;
}

#[tokio::test]
async fn availability_subtracts_safety_stock_and_filters_the_online_channel() {
    let app = spawn_app().await;
    network(&app).await;
    let sku = "GIFT CARD/500";
    for (i, loc) in ["S1", "S2", "WH", "WEB"].iter().enumerate() {
        app.publish(loc, &movement(&format!("r{i}"), loc, sku, "receipt", 10))
            .await;
    }
    app.publish("S1", &movement("other", "S1", "OTHER", "receipt", 4))
        .await;
    app.wait_for_ledger(5).await;
    let path = "/v1/availability/GIFT%20CARD%2F500";
    let (status, all) = app.get(path, READ_KEY).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["sku"], json!(sku));
    assert_eq!(all["available"], json!(10 + 8 + 10 + 10));
    let s2 = all["locations"]
        .as_array()
        .expect("locations")
        .iter()
        .find(|l| l["location_id"] == json!("S2"))
        .expect("S2")
        .clone();
    assert_eq!(
        s2,
        json!({"location_id": "S2", "kind": "store", "on_hand": 10, "reserved": 0, "available": 8, "in_transit": 0})
    );
    assert!(all["as_of"].is_string());
    let (_, online) = app.get(&format!("{path}?channel=online"), READ_KEY).await;
    assert_eq!(online["available"], json!(8 + 10 + 10));
    assert!(online["locations"]
        .as_array()
        .expect("l")
        .iter()
        .all(|l| l["location_id"] != json!("S1")));

    let (status, batch) = app
        .send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &json!({"skus": [sku, "OTHER", "NEVER-SEEN"], "channel": "online"}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        batch["items"],
        json!([{"sku": sku, "available": 28}, {"sku": "OTHER", "available": 0}, {"sku": "NEVER-SEEN", "available": 0}])
    );
    let (_, batch) = app
        .send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &json!({"skus": ["OTHER"]}),
        )
        .await;
    assert_eq!(batch["items"][0]["available"], json!(4));

    let too_many: Vec<String> = (0..501).map(|i| format!("S{i}")).collect();
    let (status, err) = app
        .send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &json!({"skus": too_many}),
        )
        .await;
    assert_eq!(
        (status, err["error"].clone()),
        (422, json!("invalid_request"))
    );
    let five_hundred: Vec<String> = (0..500).map(|i| format!("S{i}")).collect();
    assert_eq!(
        app.send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &json!({"skus": five_hundred})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.get(&format!("{path}?channel=teleport"), READ_KEY)
            .await
            .0,
        404
    );
    let (status, err) = app.get("/v1/availability/BAD%0ASKU", READ_KEY).await;
    assert_eq!(
        (status, err["details"]["field"].clone()),
        (422, json!("sku"))
    );
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz", "").await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    let (status, body) = app.get("/readyz", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["checks"],
        json!({"postgres": "up", "redis": "up", "nats": "up", "jobs": "up"})
    );
    assert_eq!(body["down_jobs"], json!([]));
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(text.contains("# TYPE omnistock_movements_recorded_total counter"));
    assert!(text.contains("omnistock_cache_dirty_skus 0"));
    let (status, body) = app.get("/v1/nothing-here", READ_KEY).await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));
    let (status, body) = app
        .send(Method::DELETE, "/v1/locations", ADMIN_KEY, &json!({}))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (405, json!("method_not_allowed"))
    );
    let r = app
        .http
        .get(app.url("/v1/locations"))
        .header("authorization", format!("bearer {READ_KEY}"))
        .send()
        .await
        .expect("req");
    assert_eq!(
        r.status().as_u16(),
        200,
        "the auth scheme is case-insensitive"
    );
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() {
    let app = spawn_with(Isolation::new().await, |c| c.rate_limit_per_second = 3).await;
    let mut limited = None;
    for _ in 0..10 {
        let r = app
            .http
            .get(app.url("/v1/locations"))
            .bearer_auth(READ_KEY)
            .send()
            .await
            .expect("req");
        if r.status().as_u16() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the 4th to 10th request in a burst are over a limit of 3/s");
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        json!("rate_limited")
    );
    // Another key has its own budget.
    assert_eq!(app.get("/v1/locations", ADMIN_KEY).await.0, 200);
}
