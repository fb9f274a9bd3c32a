//! Hostile HTTP: oversized and deeply nested bodies, huge numbers, NUL bytes in every field,
//! path segment and query parameter get a clear 4xx in the API's error format (naming the field
//! where there is one); SKUs full of Unicode and SQL metacharacters are stored and returned
//! literally; arbitrary JSON never gets a 5xx; and the daemon keeps serving throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{movement, spawn_with, Isolation, TestApp, ADMIN_KEY, RESERVE_KEY};
use crate::model::percent_encode;

/// A daemon with a registered store `HX` holding 50 of `A` (for the hostile requests) and
/// 1,000 of `S` (for the normal ones after them), and no rate limit in the way.
async fn hostile_app() -> TestApp {
    let app = spawn_with(Isolation::new().await, |c| {
        c.rate_limit_per_second = 1_000_000;
    })
    .await;
    app.store("HX", 25.05306, 121.52639).await;
    app.stock("HX", "A", 50).await;
    app.stock("HX", "S", 1_000).await;
    app
}

/// Sends raw bytes; answers the status and the body as JSON (`Null` when it is not JSON).
async fn raw(app: &TestApp, method: Method, path: &str, body: Vec<u8>) -> (u16, Value) {
    let sent = app
        .http
        .request(method, app.url(path))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await;
    // 0 stands for no answer at all (connection closed, timeout): a fault, reported as such.
    let r = match sent {
        Ok(r) => r,
        Err(e) => return (0, json!(e.to_string())),
    };
    let status = r.status().as_u16();
    match r.bytes().await {
        Ok(bytes) => (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ),
        Err(e) => (0, json!(format!("{status}, then the body failed: {e}"))),
    }
}

/// What is wrong with an answer to a hostile request, if anything: it must be a 4xx in the
/// error format, and, when `field` is given, name that field (in `details.field`, in one of
/// `details.fields[].field`, or at least in the message).
fn fault(status: u16, body: &Value, field: Option<&str>) -> Option<String> {
    if !(400..500).contains(&status) {
        return Some(format!("status {status}: {body}"));
    }
    if !body["error"].is_string() || !body["message"].is_string() {
        return Some(format!("{status} without the error format: {body}"));
    }
    let field = field?;
    let named = body["details"]["field"]
        .as_str()
        .is_some_and(|f| f.contains(field))
        || body["details"]["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["field"].as_str().is_some_and(|f| f.contains(field)))
        || body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("`{field}`")) || m.contains(field));
    (!named).then(|| format!("{status} does not name `{field}`: {body}"))
}

/// Runs every request, collecting each answer that is not right, so one run lists them all.
struct Barrage<'a> {
    app: &'a TestApp,
    faults: Vec<String>,
    sent: usize,
}

impl<'a> Barrage<'a> {
    fn new(app: &'a TestApp) -> Self {
        Barrage {
            app,
            faults: Vec::new(),
            sent: 0,
        }
    }

    async fn expect(&mut self, method: Method, path: &str, body: Vec<u8>, field: Option<&str>) {
        let what = format!(
            "{method} {path} {}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
        let (status, answer) = raw(self.app, method, path, body).await;
        self.sent += 1;
        if let Some(f) = fault(status, &answer, field) {
            self.faults.push(format!("{what}\n    -> {f}"));
        }
    }

    fn assert_clean(self, what: &str) {
        assert!(
            self.faults.is_empty(),
            "{what}: {} of {} requests answered wrongly:\n{}",
            self.faults.len(),
            self.sent,
            self.faults.join("\n")
        );
    }
}

/// Reads `/healthz` and one availability over and over while a barrage runs; answers how many
/// reads it made and every one that failed.
fn keep_reading(
    app: &TestApp,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let (http, health, read) = (
        app.http.clone(),
        app.url("/healthz"),
        app.url("/v1/availability/A"),
    );
    tokio::spawn(async move {
        let (mut reads, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            for url in [&health, &read] {
                let r = http
                    .get(url.as_str())
                    .bearer_auth(RESERVE_KEY)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                reads += 1;
                match r {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failed.push(format!("{url}: {}", r.status())),
                    Err(e) => failed.push(format!("{url}: {e}")),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (reads, failed)
    })
}

/// The daemon still answers health checks, reads and holds correctly.
async fn still_serving(app: &TestApp) {
    let (status, _) = app.get("/healthz", RESERVE_KEY).await;
    assert_eq!(status, 200, "healthz after the barrage");
    let (status, a) = app.get("/v1/availability/A", RESERVE_KEY).await;
    assert_eq!(status, 200, "{a}");
    assert!(a["available"].as_i64().is_some(), "{a}");
    let (status, h) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"location_id": "HX", "lines": [{"sku": "S", "quantity": 1}]}),
        )
        .await;
    assert_eq!(status, 201, "a normal hold after the barrage: {h}");
    app.assert_ledger_consistent().await;
}

const NUL: &str = "x\u{0}y";

/// Every string field of every JSON body, with a NUL inside: (method, path, body, field).
fn nul_bodies() -> Vec<(Method, &'static str, Value, &'static str)> {
    let hold = json!({"reservation_id": "nul-hold", "location_id": "HX",
                      "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 60});
    let order = json!({"order_id": "nul-order", "lines": [{"sku": "A", "quantity": 1}],
                       "fulfilment": "delivery", "customer": {"lat": 25.0, "lon": 121.5}});
    let location = json!({"name": "Hostile", "kind": "store", "lat": 25.0, "lon": 121.5,
                          "timezone": "UTC"});
    let availability = json!({"skus": ["A"], "channel": "all"});
    let with = |base: &Value, pointer: &str| {
        let mut v = base.clone();
        *v.pointer_mut(pointer).expect("pointer") = json!(NUL);
        v
    };
    let route = "/v1/orders/route?dry_run=true";
    let mut pickup = order.clone();
    pickup["fulfilment"] = json!("pickup");
    pickup["pickup_location_id"] = json!(NUL);
    let mut placed = order.clone();
    placed["placed_at_location_id"] = json!(NUL);
    let mut key = hold.clone();
    key.as_object_mut()
        .expect("object")
        .insert("ttl\u{0}seconds".into(), json!(1));
    vec![
        (
            Method::POST,
            "/v1/reservations",
            with(&hold, "/reservation_id"),
            "reservation_id",
        ),
        (
            Method::POST,
            "/v1/reservations",
            with(&hold, "/location_id"),
            "location_id",
        ),
        (
            Method::POST,
            "/v1/reservations",
            with(&hold, "/lines/0/sku"),
            "sku",
        ),
        (
            Method::POST,
            "/v1/reservations",
            with(&hold, "/lines/0/quantity"),
            "quantity",
        ),
        (
            Method::POST,
            "/v1/reservations",
            with(&hold, "/ttl_seconds"),
            "ttl_seconds",
        ),
        (Method::POST, "/v1/reservations", key, "ttl"),
        (Method::POST, route, with(&order, "/order_id"), "order_id"),
        (Method::POST, route, with(&order, "/lines/0/sku"), "sku"),
        (
            Method::POST,
            route,
            with(&order, "/fulfilment"),
            "fulfilment",
        ),
        (Method::POST, route, with(&order, "/customer/lat"), "lat"),
        (Method::POST, route, pickup, "pickup_location_id"),
        (Method::POST, route, placed, "placed_at_location_id"),
        (
            Method::PUT,
            "/v1/locations/HNUL",
            with(&location, "/name"),
            "name",
        ),
        (
            Method::PUT,
            "/v1/locations/HNUL",
            with(&location, "/kind"),
            "kind",
        ),
        (
            Method::PUT,
            "/v1/locations/HNUL",
            with(&location, "/timezone"),
            "timezone",
        ),
        (
            Method::PUT,
            "/v1/locations/HNUL",
            with(&location, "/lat"),
            "lat",
        ),
        (
            Method::PUT,
            "/v1/skus/A",
            json!({"low_stock_threshold": NUL}),
            "low_stock_threshold",
        ),
        (
            Method::POST,
            "/v1/availability",
            with(&availability, "/skus/0"),
            "sku",
        ),
        (
            Method::POST,
            "/v1/availability",
            with(&availability, "/channel"),
            "channel",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_in_every_field_path_and_query_get_a_4xx_naming_the_field() {
    let app = hostile_app().await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = keep_reading(&app, stop.clone());
    let mut b = Barrage::new(&app);
    for (method, path, body, field) in nul_bodies() {
        b.expect(
            method,
            path,
            serde_json::to_vec(&body).expect("json"),
            Some(field),
        )
        .await;
    }
    // A NUL in a path segment: invalid, naming the path parameter, never a database error.
    let location =
        serde_json::to_vec(&json!({"name": "N", "kind": "store", "lat": 25.0, "lon": 121.5}))
            .expect("json");
    for (method, path, body, field) in [
        (Method::GET, "/v1/reservations/x%00y", vec![], "id"),
        (Method::DELETE, "/v1/reservations/x%00y", vec![], "id"),
        (Method::POST, "/v1/reservations/x%00y/confirm", vec![], "id"),
        (
            Method::PATCH,
            "/v1/reservations/x%00y",
            br#"{"ttl_seconds": 60}"#.to_vec(),
            "id",
        ),
        (Method::GET, "/v1/locations/x%00y", vec![], "location_id"),
        (Method::PUT, "/v1/locations/x%00y", location, "location_id"),
        (Method::GET, "/v1/availability/x%00y", vec![], "sku"),
        (
            Method::GET,
            "/v1/availability/x%00y/nearby?lat=25&lon=121",
            vec![],
            "sku",
        ),
        (Method::PUT, "/v1/skus/x%00y", b"{}".to_vec(), "sku"),
    ] {
        b.expect(method, path, body, Some(field)).await;
    }
    // A NUL in a query parameter: the parameter is named.
    let order = serde_json::to_vec(
        &json!({"order_id": "q", "lines": [{"sku": "A", "quantity": 1}],
        "fulfilment": "delivery", "customer": {"lat": 25.0, "lon": 121.5}}),
    )
    .expect("json");
    for (method, path, body, field) in [
        (
            Method::GET,
            "/v1/availability/A?channel=x%00y",
            vec![],
            "channel",
        ),
        (
            Method::GET,
            "/v1/availability/A/nearby?lat=x%00y&lon=121",
            vec![],
            "lat",
        ),
        (
            Method::GET,
            "/v1/availability/A/nearby?lat=25&lon=121&limit=x%00y",
            vec![],
            "limit",
        ),
        (
            Method::POST,
            "/v1/orders/route?dry_run=x%00y",
            order,
            "dry_run",
        ),
        (Method::GET, "/v1/stream?sku=x%00y", vec![], "sku"),
        (
            Method::GET,
            "/v1/stream?location_id=x%00y",
            vec![],
            "location_id",
        ),
        (
            Method::GET,
            "/v1/reservations?location_id=x%00y",
            vec![],
            "location_id",
        ),
        (
            Method::GET,
            "/v1/reservations?status=x%00y",
            vec![],
            "status",
        ),
        (
            Method::GET,
            "/v1/reservations?cursor=x%00y",
            vec![],
            "cursor",
        ),
    ] {
        b.expect(method, path, body, Some(field)).await;
    }
    b.assert_clean("NUL bytes");
    stop.store(true, Ordering::Relaxed);
    let (reads, failed) = reader.await.expect("reader");
    assert!(
        failed.is_empty(),
        "reads failed during the barrage: {failed:?}"
    );
    assert!(reads > 0);
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_get_a_4xx_naming_the_field() {
    let app = hostile_app().await;
    let huge = [
        "1e400",
        "-1e400",
        "18446744073709551615",
        "-9223372036854775808",
        "9223372036854775807",
        "123456789012345678901234567890",
        "1.5",
        "-0.0",
    ];
    // (method, path, body with `@` for the number, field). Quantities must be integers in
    // 1..=1e9; coordinates and distances finite and in range; ttl in 1..=86400.
    let templates: [(Method, &str, &str, &str); 9] = [
        (
            Method::POST,
            "/v1/reservations",
            r#"{"location_id":"HX","lines":[{"sku":"A","quantity":@}]}"#,
            "quantity",
        ),
        (
            Method::POST,
            "/v1/reservations",
            r#"{"location_id":"HX","lines":[{"sku":"A","quantity":1}],"ttl_seconds":@}"#,
            "ttl_seconds",
        ),
        (
            Method::POST,
            "/v1/orders/route?dry_run=true",
            r#"{"order_id":"o","lines":[{"sku":"A","quantity":@}],"fulfilment":"delivery","customer":{"lat":25,"lon":121}}"#,
            "quantity",
        ),
        (
            Method::POST,
            "/v1/orders/route?dry_run=true",
            r#"{"order_id":"o","lines":[{"sku":"A","quantity":1}],"fulfilment":"delivery","customer":{"lat":@,"lon":121}}"#,
            "lat",
        ),
        (
            Method::POST,
            "/v1/orders/route?dry_run=true",
            r#"{"order_id":"o","lines":[{"sku":"A","quantity":1}],"fulfilment":"delivery","customer":{"lat":25,"lon":121},"max_distance_km":@}"#,
            "max_distance_km",
        ),
        (
            Method::PUT,
            "/v1/locations/HBIG",
            r#"{"name":"n","kind":"store","lat":25,"lon":@}"#,
            "lon",
        ),
        (
            Method::PUT,
            "/v1/locations/HBIG",
            r#"{"name":"n","kind":"store","lat":25,"lon":121,"safety_stock":@}"#,
            "safety_stock",
        ),
        (
            Method::PUT,
            "/v1/locations/HBIG",
            r#"{"name":"n","kind":"store","lat":25,"lon":121,"daily_order_capacity":@}"#,
            "daily_order_capacity",
        ),
        (
            Method::PUT,
            "/v1/skus/A",
            r#"{"low_stock_threshold":@}"#,
            "low_stock_threshold",
        ),
    ];
    let mut b = Barrage::new(&app);
    for (method, path, template, field) in &templates {
        for n in huge {
            // Some of these are valid for some fields (a latitude of 1.5, any finite positive
            // distance), and those are left out there.
            let valid_here = matches!((n, *field), ("-0.0" | "1.5", "lat" | "lon"))
                || (*field == "max_distance_km"
                    && n.parse::<f64>().is_ok_and(|d| d > 0.0 && d.is_finite()));
            if valid_here {
                continue;
            }
            b.expect(
                method.clone(),
                path,
                template.replace('@', n).into_bytes(),
                Some(*field),
            )
            .await;
        }
    }
    b.assert_clean("huge numbers");
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_deeply_nested_bodies_get_a_4xx() {
    let app = hostile_app().await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = keep_reading(&app, stop.clone());
    let endpoints = [
        (Method::POST, "/v1/reservations"),
        (Method::PATCH, "/v1/reservations/x"),
        (Method::POST, "/v1/orders/route"),
        (Method::PUT, "/v1/locations/HBIG"),
        (Method::PUT, "/v1/skus/A"),
        (Method::POST, "/v1/availability"),
    ];
    // Over the 512 KiB limit: a valid JSON body with a long string, and 1 MiB of spaces.
    let long = serde_json::to_vec(
        &json!({"location_id": "HX", "reservation_id": "x".repeat(600 * 1024),
        "lines": [{"sku": "A", "quantity": 1}]}),
    )
    .expect("json");
    let mut spaces = vec![b' '; 1024 * 1024];
    spaces.extend_from_slice(b"{}");
    let deep_arrays = "[".repeat(100_000).into_bytes();
    let deep_objects = r#"{"a":"#.repeat(100_000).into_bytes();
    let mut deep_lines = br#"{"location_id":"HX","lines":"#.to_vec();
    deep_lines.extend("[".repeat(50_000).bytes());
    let deep_closed = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes();
    // A body refused unread leaves the connection unusable, and the answer says so: a client
    // that reused it would see its next request answered with nothing.
    let refused = app
        .http
        .post(app.url("/v1/reservations"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(long.clone())
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 413);
    assert_eq!(
        refused
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "a 413 must close the connection"
    );
    let mut b = Barrage::new(&app);
    for (method, path) in &endpoints {
        for body in [&long, &spaces] {
            let (status, answer) = raw(&app, method.clone(), path, body.clone()).await;
            b.sent += 1;
            if status != 413 || answer["error"] != json!("payload_too_large") {
                b.faults.push(format!(
                    "{method} {path} {} bytes -> {status} {answer}",
                    body.len()
                ));
            }
        }
        for body in [&deep_arrays, &deep_objects, &deep_lines, &deep_closed] {
            b.expect(method.clone(), path, body.clone(), None).await;
        }
    }
    b.assert_clean("oversized and nested bodies");
    stop.store(true, Ordering::Relaxed);
    let (_, failed) = reader.await.expect("reader");
    assert!(
        failed.is_empty(),
        "reads failed during the barrage: {failed:?}"
    );
    still_serving(&app).await;
}

/// SKUs that a careless layer would interpret: SQL, LIKE patterns, escapes, Redis and NATS
/// separators, Unicode of every width, direction overrides and zero-width characters.
const HOSTILE_SKUS: [&str; 15] = [
    "'; DROP TABLE stock_levels;--",
    "Robert'); DROP TABLE movements;--",
    "ÄÖ-紅-👕",
    "%_\\",
    "%",
    "_",
    "H\\x00",
    "\"quoted\" {json}",
    "a/b/../c",
    "inventory.movements.*>",
    "  spaced  ",
    "\u{202e}RTL\u{200d}zwj",
    "e\u{301}",
    "\u{e9}",
    "👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕👕",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_sql_metacharacters_in_skus_are_stored_literally() {
    let app = hostile_app().await;
    for sku in HOSTILE_SKUS {
        assert!(
            omnistock::domain::ids::is_valid_sku(sku),
            "{sku:?} is a valid SKU"
        );
    }
    // A distinct quantity per SKU: a SKU read as a pattern (`%`, `_`) would sum others.
    let before = app.ledger_count().await;
    for (i, sku) in HOSTILE_SKUS.iter().enumerate() {
        app.publish(
            "HX",
            &movement(
                &format!("hostile-{i}"),
                "HX",
                sku,
                "receipt",
                101 + i as i64,
            ),
        )
        .await;
    }
    app.wait_for_ledger(before + HOSTILE_SKUS.len() as i64)
        .await;
    assert!(app.deadletters().await.is_empty(), "no SKU was refused");
    for (i, sku) in HOSTILE_SKUS.iter().enumerate() {
        let want = 101 + i as i64;
        assert_eq!(
            app.on_hand("HX", sku).await,
            Some(want),
            "{sku:?} in PostgreSQL"
        );
        let (status, a) = app
            .get(
                &format!("/v1/availability/{}", percent_encode(sku)),
                RESERVE_KEY,
            )
            .await;
        assert_eq!(status, 200, "{sku:?}: {a}");
        assert_eq!(
            (a["sku"].clone(), a["available"].clone()),
            (json!(sku), json!(want)),
            "{sku:?} read back over HTTP"
        );
    }
    let (status, batch) = app
        .send(
            Method::POST,
            "/v1/availability",
            RESERVE_KEY,
            &json!({"skus": HOSTILE_SKUS}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    for (i, item) in batch["items"].as_array().expect("items").iter().enumerate() {
        assert_eq!(
            (item["sku"].clone(), item["available"].clone()),
            (json!(HOSTILE_SKUS[i]), json!(101 + i as i64))
        );
    }
    // Held and read back through a reservation, too.
    let (status, r) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"reservation_id": HOSTILE_SKUS[0], "location_id": "HX",
                    "lines": [{"sku": HOSTILE_SKUS[2], "quantity": 3}, {"sku": HOSTILE_SKUS[4], "quantity": 1}]}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = app
        .get(
            &format!("/v1/reservations/{}", percent_encode(HOSTILE_SKUS[0])),
            RESERVE_KEY,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["reservation_id"], json!(HOSTILE_SKUS[0]));
    let skus: Vec<&str> = r["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["sku"].as_str())
        .collect();
    let mut want = vec![HOSTILE_SKUS[2], HOSTILE_SKUS[4]];
    want.sort();
    assert_eq!(skus, want);
    assert_eq!(app.reserved("HX", HOSTILE_SKUS[2]).await, 3);
    assert_eq!(
        app.reserved("HX", HOSTILE_SKUS[5]).await,
        0,
        "`_` is not a pattern"
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('stock_levels', 'movements')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("tables");
    assert_eq!(tables, 2, "nothing was dropped");
    still_serving(&app).await;
}

/// Arbitrary JSON, from well-formed reservation bodies with wild values to any value at all.
fn arb_json() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            1_000_000_000,
            1_000_000_001,
            i64::MIN,
            i64::MAX
        ])
        .prop_map(Value::from),
    ];
    let string = prop_oneof![
        any::<String>(),
        prop::sample::select(vec![
            "HX", "A", "", "\u{0}", "HX\u{0}", "A\u{0}B", "'; --", "%"
        ])
        .prop_map(str::to_owned),
        "[A-Z]{1,3}",
    ]
    .boxed();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        string.clone().prop_map(Value::String),
    ]
    .boxed();
    let any_value = leaf
        .clone()
        .prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(string.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed();
    // Mostly a field holds what the endpoint expects, so that bodies also get past validation
    // to the database (holds taken, stock short), not only to the parser.
    let or_valid = |valid: Value, wild: BoxedStrategy<Value>| {
        prop_oneof![12 => Just(valid), 1 => wild].boxed()
    };
    let quantity = prop_oneof![
        12 => (1i64..=3).prop_map(Value::from),
        1 => any_value.clone(),
    ];
    let line = (
        or_valid(json!("A"), any_value.clone()),
        quantity,
        prop::bool::weighted(0.05),
    )
        .prop_map(|(sku, q, extra)| {
            let mut l = json!({"sku": sku, "quantity": q});
            if extra {
                l["extra"] = json!(1);
            }
            l
        });
    let id = prop_oneof![
        12 => "[a-z0-9]{1,12}".prop_map(Value::String),
        1 => any_value.clone(),
    ];
    let shaped = (
        prop::option::of(id),
        or_valid(json!("HX"), any_value.clone()),
        prop::collection::vec(line, 0..=3),
        prop::option::of(or_valid(json!(60), any_value.clone())),
    )
        .prop_map(|(id, location, lines, ttl)| {
            let mut v = json!({"location_id": location, "lines": lines});
            if let Some(id) = id {
                v["reservation_id"] = id;
            }
            if let Some(ttl) = ttl {
                v["ttl_seconds"] = ttl;
            }
            v
        });
    prop_oneof![3 => shaped, 1 => any_value]
}

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn arbitrary_json_or_bytes_to_the_reservation_endpoint_never_get_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(hostile_app());
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let check = |body: Vec<u8>| -> Result<(), TestCaseError> {
        let (status, answer) = rt.block_on(raw(&app, Method::POST, "/v1/reservations", body));
        *statuses
            .lock()
            .expect("statuses")
            .entry(status)
            .or_default() += 1;
        prop_assert!(
            (200..500).contains(&status),
            "status {} answer {}",
            status,
            answer
        );
        if status >= 400 {
            prop_assert!(
                answer["error"].is_string(),
                "{} without the error format: {}",
                status,
                answer
            );
        }
        Ok(())
    };
    runner(256)
        .run(&arb_json(), |v| {
            check(serde_json::to_vec(&v).expect("json"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    runner(128)
        .run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
            check(bytes)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "arbitrary bodies to POST /v1/reservations, by status: {:?}",
        statuses.lock().expect("statuses")
    );
    rt.block_on(still_serving(&app));
}
