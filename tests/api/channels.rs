//! Channel pools: definitions, overrides, reads, holds and routes within a channel, and the
//! `inventory.channels.<channel>` feed.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_until, TestApp, ADMIN_KEY, READ_KEY, RESERVE_KEY};

async fn put_channel(app: &TestApp, name: &str, body: Value) -> (u16, Value) {
    app.send(
        Method::PUT,
        &format!("/v1/channels/{name}"),
        ADMIN_KEY,
        &body,
    )
    .await
}

async fn shipping(app: &TestApp, id: &str, kind: &str, lat: f64, lon: f64) {
    app.put_location(
        id,
        json!({"name": id, "kind": kind, "lat": lat, "lon": lon, "pickup": true, "ship_from": true}),
    )
    .await;
}

fn field(resp: &Value) -> Value {
    resp["details"]["field"].clone()
}

#[tokio::test]
async fn channels_are_defined_listed_and_overridden_and_bad_input_names_the_field() {
    let app = spawn_app().await;
    app.store("S1", 25.0, 121.5).await;
    shipping(&app, "WH", "warehouse", 25.1, 121.6).await;

    let (status, list) = app.get("/v1/channels", READ_KEY).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["channel"].as_str())
        .collect();
    assert_eq!(names, ["all", "online"]);

    let mkt = json!({"locations": ["WH", "S1"], "buffer_units": 2, "max_percent": 50});
    let (status, body) = put_channel(&app, "mkt", mkt.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["locations"], json!(["S1", "WH"]));
    assert_eq!(put_channel(&app, "mkt", mkt.clone()).await.0, 200);
    let (status, got) = app.get("/v1/channels/mkt", READ_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            got["buffer_units"].clone(),
            got["max_percent"].clone(),
            got["built_in"].clone()
        ),
        (json!(2), json!(50), json!(false))
    );
    assert_eq!(app.get("/v1/channels/nope", READ_KEY).await.0, 404);
    assert_eq!(
        app.send(Method::PUT, "/v1/channels/mkt", READ_KEY, &mkt)
            .await
            .0,
        403
    );

    // Defaults: buffer 0, percent 100.
    let (_, web) = put_channel(&app, "web", json!({"locations": "ship_from"})).await;
    assert_eq!(
        (web["buffer_units"].clone(), web["max_percent"].clone()),
        (json!(0), json!(100))
    );

    let (status, resp) =
        put_channel(&app, "mkt", json!({"locations": ["S1", "GHOST", "NOPE"]})).await;
    assert_eq!((status, field(&resp)), (422, json!("locations")));
    assert_eq!(resp["details"]["unknown"], json!(["GHOST", "NOPE"]));
    for (body, name, expected) in [
        (
            json!({"locations": "all", "max_percent": 0}),
            "mkt",
            "max_percent",
        ),
        (
            json!({"locations": "all", "max_percent": 101}),
            "mkt",
            "max_percent",
        ),
        (
            json!({"locations": "all", "buffer_units": -1}),
            "mkt",
            "buffer_units",
        ),
        (json!({"locations": []}), "mkt", "locations"),
        (json!({"locations": "everywhere"}), "mkt", "locations"),
        (json!({"buffer_units": 1}), "mkt", "locations"),
        (json!({"locations": ["bad.id"]}), "mkt", "locations"),
        (json!({"locations": "all"}), "bad.name", "channel"),
        (json!({"locations": "all"}), "online", "locations"),
        (json!({"locations": ["S1"]}), "all", "locations"),
    ] {
        let (status, resp) = put_channel(&app, name, body.clone()).await;
        assert_eq!(
            (status, field(&resp)),
            (422, json!(expected)),
            "{name} {body}: {resp}"
        );
    }
    // Nothing half-written: the refused PUTs left mkt as it was.
    assert_eq!(app.get("/v1/channels/mkt", READ_KEY).await.1, got);

    // Built-ins take a buffer and a percent, with or without their own selector.
    let (status, online) = put_channel(&app, "online", json!({"buffer_units": 1})).await;
    assert_eq!(
        (status, online["locations"].clone()),
        (200, json!("ship_from"))
    );
    let (status, _) =
        put_channel(&app, "all", json!({"locations": "all", "max_percent": 90})).await;
    assert_eq!(status, 200);

    // Overrides.
    let path = "/v1/channels/mkt/skus/TEE%2FRED%20M";
    let (status, o) = app
        .send(Method::PUT, path, ADMIN_KEY, &json!({"max_percent": 80}))
        .await;
    assert_eq!(status, 201, "{o}");
    assert_eq!(o["sku"], json!("TEE/RED M"));
    assert_eq!(o["buffer_units"], Value::Null);
    assert_eq!(
        o["effective"],
        json!({"buffer_units": 2, "max_percent": 80, "enabled": true})
    );
    assert_eq!(app.get(path, READ_KEY).await.1["max_percent"], json!(80));
    for (body, expected) in [
        (json!({"max_percent": 0}), "max_percent"),
        (json!({"max_percent": 101}), "max_percent"),
        (json!({"buffer_units": -5}), "buffer_units"),
    ] {
        let (status, resp) = app.send(Method::PUT, path, ADMIN_KEY, &body).await;
        assert_eq!((status, field(&resp)), (422, json!(expected)), "{body}");
    }
    let (status, _) = app
        .send(Method::PUT, path, ADMIN_KEY, &json!({"colour": "red"}))
        .await;
    assert!((400..500).contains(&status), "unknown field: {status}");
    let (status, _) = app
        .send(
            Method::PUT,
            "/v1/channels/nope/skus/A",
            ADMIN_KEY,
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, resp) = app
        .send(
            Method::PUT,
            "/v1/channels/mkt/skus/A%0AB",
            ADMIN_KEY,
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!((status, field(&resp)), (422, json!("sku")));
    let (status, d) = app
        .send(Method::DELETE, path, ADMIN_KEY, &json!(null))
        .await;
    assert_eq!((status, d["deleted"].clone()), (200, json!(true)));
    assert_eq!(d["effective"]["max_percent"], json!(50));
    let (_, d) = app
        .send(Method::DELETE, path, ADMIN_KEY, &json!(null))
        .await;
    assert_eq!(d["deleted"], json!(false));
}

#[tokio::test]
async fn every_availability_read_applies_the_channel_formula_and_overrides() {
    let app = spawn_app().await;
    app.store("S1", 25.0, 121.5).await;
    app.store("S2", 25.001, 121.501).await;
    shipping(&app, "WH", "warehouse", 25.1, 121.6).await;
    app.stock("S1", "A", 10).await;
    app.stock("WH", "A", 20).await;
    app.stock("S2", "A", 7).await;
    let (status, _) = put_channel(
        &app,
        "mkt",
        json!({"locations": ["S1", "WH"], "buffer_units": 2, "max_percent": 50}),
    )
    .await;
    assert_eq!(status, 201);

    // S1: min(10 - 2, 10 * 50%) = 5; WH: min(20 - 2, 20 * 50%) = 10; S2 is not in the channel.
    let (status, one) = app.get("/v1/availability/A?channel=mkt", READ_KEY).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["channel"], json!("mkt"));
    assert_eq!(one["available"], json!(15));
    let per: Vec<(Value, Value)> = one["locations"]
        .as_array()
        .expect("locations")
        .iter()
        .map(|l| (l["location_id"].clone(), l["available"].clone()))
        .collect();
    assert_eq!(per, [(json!("S1"), json!(5)), (json!("WH"), json!(10))]);
    assert_eq!(
        app.get("/v1/availability/A", READ_KEY).await.1["available"],
        json!(37)
    );
    let batch = |channel: &str| json!({"skus": ["A", "NEVER"], "channel": channel});
    let (status, b) = app
        .send(Method::POST, "/v1/availability", READ_KEY, &batch("mkt"))
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        b["items"],
        json!([{"sku": "A", "available": 15}, {"sku": "NEVER", "available": 0}])
    );
    let nearby = |channel: &str| {
        format!("/v1/availability/A/nearby?lat=25.0&lon=121.5&radius_km=5&channel={channel}")
    };
    let (status, n) = app.get(&nearby("mkt"), READ_KEY).await;
    assert_eq!(status, 200, "{n}");
    let stores: Vec<(Value, Value)> = n["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|s| (s["location_id"].clone(), s["available"].clone()))
        .collect();
    assert_eq!(stores, [(json!("S1"), json!(5))]);

    // An override replaces what it sets: S1 min(10 - 8, 5) = 2, WH min(20 - 8, 10) = 10.
    let o = "/v1/channels/mkt/skus/A";
    app.send(Method::PUT, o, ADMIN_KEY, &json!({"buffer_units": 8}))
        .await;
    let read = || async { app.get("/v1/availability/A?channel=mkt", READ_KEY).await.1 };
    assert_eq!(read().await["available"], json!(12));
    app.send(Method::PUT, o, ADMIN_KEY, &json!({"enabled": false}))
        .await;
    assert_eq!(read().await["available"], json!(0));
    let (_, b) = app
        .send(Method::POST, "/v1/availability", READ_KEY, &batch("mkt"))
        .await;
    assert_eq!(b["items"][0]["available"], json!(0));
    assert_eq!(
        app.get(&nearby("mkt"), READ_KEY).await.1["stores"],
        json!([])
    );
    app.send(Method::DELETE, o, ADMIN_KEY, &json!(null)).await;
    assert_eq!(read().await["available"], json!(15));

    // A buffer on a built-in channel.
    put_channel(&app, "all", json!({"buffer_units": 5})).await;
    // S1 5, S2 2, WH 15.
    assert_eq!(
        app.get("/v1/availability/A", READ_KEY).await.1["available"],
        json!(22)
    );

    // Unknown channels: 404 on every read; a malformed name: 422 naming it.
    assert_eq!(
        app.get("/v1/availability/A?channel=teleport", READ_KEY)
            .await
            .0,
        404
    );
    assert_eq!(
        app.send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &batch("teleport")
        )
        .await
        .0,
        404
    );
    assert_eq!(app.get(&nearby("teleport"), READ_KEY).await.0, 404);
    let (status, resp) = app.get("/v1/availability/A?channel=a.b", READ_KEY).await;
    assert_eq!((status, field(&resp)), (422, json!("channel")));
}

/// How many holds of one unit a channel takes from `available`, by the contract's formula
/// applied after each hold.
fn model_holds(mut available: i64, buffer: i64, percent: i64) -> i64 {
    let mut held = 0;
    while (available - buffer).min(available * percent / 100).max(0) >= 1 {
        available -= 1;
        held += 1;
    }
    held
}

async fn race(app: &TestApp, sku: &str, channel: &str, n: usize) -> usize {
    let tasks = (0..n).map(|i| {
        let body = json!({
            "reservation_id": format!("{channel}-{sku}-{i}"),
            "location_id": "S1",
            "lines": [{"sku": sku, "quantity": 1}],
            "channel": channel,
        });
        async move {
            app.send(Method::POST, "/v1/reservations", RESERVE_KEY, &body)
                .await
        }
    });
    let results = join_all(tasks).await;
    for (status, body) in &results {
        assert!(
            *status == 201 || (*status == 409 && body["error"] == json!("insufficient_stock")),
            "{status} {body}"
        );
    }
    results.iter().filter(|(s, _)| *s == 201).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_channel_holds_never_exceed_the_pool() {
    let app = spawn_app().await;
    app.store("S1", 25.0, 121.5).await;
    app.store("S2", 25.0, 121.6).await;
    app.stock("S1", "A", 100).await;
    app.stock("S1", "B", 100).await;
    app.stock("S2", "A", 10).await;
    // A pool of 30 of the 100: a buffer of 70.
    put_channel(
        &app,
        "mkt",
        json!({"locations": ["S1"], "buffer_units": 70}),
    )
    .await;
    assert_eq!(
        app.get("/v1/availability/A?channel=mkt", READ_KEY).await.1["available"],
        json!(30)
    );
    assert_eq!(race(&app, "A", "mkt", 200).await, 30);
    assert_eq!(app.reserved("S1", "A").await, 30);
    assert_eq!(
        app.get("/v1/availability/A?channel=mkt", READ_KEY).await.1["available"],
        json!(0)
    );
    // The rest of the stock is still there for holds outside the channel.
    let (status, _) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"location_id": "S1", "lines": [{"sku": "A", "quantity": 70}]}),
        )
        .await;
    assert_eq!(status, 201);

    // A percent is a cap on the current available, recomputed after every hold.
    put_channel(&app, "pct", json!({"locations": ["S1"], "max_percent": 30})).await;
    let expected = model_holds(100, 0, 30);
    assert_eq!(race(&app, "B", "pct", 200).await as i64, expected);
    assert_eq!(app.reserved("S1", "B").await, expected);

    // A location outside the channel: the channel has nothing there.
    let (status, resp) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"location_id": "S2", "lines": [{"sku": "A", "quantity": 1}], "channel": "mkt"}),
        )
        .await;
    assert_eq!(
        (status, resp["error"].clone()),
        (409, json!("insufficient_stock"))
    );
    assert_eq!(resp["details"]["lines"][0]["available"], json!(0));
    let (status, _) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"location_id": "S2", "lines": [{"sku": "A", "quantity": 1}], "channel": "teleport"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.reserved("S2", "A").await, 0);
}

#[tokio::test]
async fn a_route_for_a_channel_uses_only_its_locations_and_their_channel_available() {
    let app = spawn_app().await;
    shipping(&app, "NEAR", "store", 25.0, 121.5).await;
    shipping(&app, "FAR", "store", 25.5, 121.9).await;
    app.stock("NEAR", "A", 10).await;
    app.stock("FAR", "A", 10).await;
    put_channel(
        &app,
        "far",
        json!({"locations": ["FAR"], "buffer_units": 8}),
    )
    .await;
    let order = |id: &str, qty: i64, channel: Option<&str>| {
        let mut o = json!({
            "order_id": id,
            "lines": [{"sku": "A", "quantity": qty}],
            "fulfilment": "delivery",
            "customer": {"lat": 25.0, "lon": 121.5},
        });
        if let Some(c) = channel {
            o["channel"] = json!(c);
        }
        o
    };
    let app = &app;
    let route = |body: Value| async move {
        app.send(Method::POST, "/v1/orders/route", RESERVE_KEY, &body)
            .await
    };
    let (status, plain) = route(order("o1", 1, None)).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["assignments"][0]["location_id"], json!("NEAR"));
    // FAR's channel available is min(10 - 8, 10) = 2.
    let (status, resp) = route(order("o2", 3, Some("far"))).await;
    assert_eq!(
        (status, resp["error"].clone()),
        (409, json!("no_fulfilment_option")),
        "{resp}"
    );
    let (status, routed) = route(order("o3", 2, Some("far"))).await;
    assert_eq!(status, 200, "{routed}");
    let assigned: Vec<&Value> = routed["assignments"]
        .as_array()
        .expect("assignments")
        .iter()
        .map(|a| &a["location_id"])
        .collect();
    assert_eq!(assigned, [&json!("FAR")]);
    assert_eq!(app.reserved("FAR", "A").await, 2);
    let (status, resp) = route(order("o4", 1, Some("far"))).await;
    assert_eq!(status, 409, "the pool is used up: {resp}");
    assert_eq!(route(order("o5", 1, Some("teleport"))).await.0, 404);
}

async fn channel_events(app: &TestApp, channel: &str, sku: &str) -> Vec<Value> {
    app.stream_messages(&app.subjects.channels_stream())
        .await
        .into_iter()
        .filter(|(s, v, _)| *s == app.subjects.channels(channel) && v["sku"] == json!(sku))
        .map(|(_, v, _)| v)
        .collect()
}

async fn wait_for_total(app: &TestApp, channel: &str, sku: &str, total: i64) -> Vec<Value> {
    wait_until(&format!("{channel} total {total}"), || async {
        channel_events(app, channel, sku)
            .await
            .last()
            .is_some_and(|e| e["available"] == json!(total))
    })
    .await;
    channel_events(app, channel, sku).await
}

#[tokio::test]
async fn channel_totals_are_published_when_they_change_and_only_then() {
    let app = spawn_app().await;
    app.store("S1", 25.0, 121.5).await;
    put_channel(&app, "mkt", json!({"locations": ["S1"], "max_percent": 50})).await;
    app.stock("S1", "A", 10).await;
    let mkt = wait_for_total(&app, "mkt", "A", 5).await;
    assert_eq!(mkt.len(), 1, "{mkt:?}");
    let e = &mkt[0];
    assert_eq!(
        (e["channel"].clone(), e["sku"].clone()),
        (json!("mkt"), json!("A"))
    );
    assert!(e["changed_at"].is_string());

    // 11 available: `all` changes, mkt stays at floor(5.5) = 5 and publishes nothing.
    app.stock("S1", "A", 1).await;
    wait_for_total(&app, "all", "A", 11).await;
    assert_eq!(channel_events(&app, "mkt", "A").await.len(), 1);

    // 12: mkt moves to 6.
    app.stock("S1", "A", 1).await;
    let mkt = wait_for_total(&app, "mkt", "A", 6).await;
    assert_eq!(mkt.len(), 2);

    // A channel change republishes what it changed; an override too, with an alert at 0.
    put_channel(&app, "mkt", json!({"locations": ["S1"]})).await;
    assert_eq!(wait_for_total(&app, "mkt", "A", 12).await.len(), 3);
    app.send(
        Method::PUT,
        "/v1/channels/mkt/skus/A",
        ADMIN_KEY,
        &json!({"enabled": false}),
    )
    .await;
    assert_eq!(wait_for_total(&app, "mkt", "A", 0).await.len(), 4);
    wait_until("a channel out_of_stock alert", || async {
        app.stream_messages(&app.subjects.alerts_stream())
            .await
            .iter()
            .any(|(_, v, _)| {
                v["kind"] == json!("out_of_stock")
                    && v["channel"] == json!("mkt")
                    && v["sku"] == json!("A")
            })
    })
    .await;
    // Nothing published twice for the same total.
    let all = channel_events(&app, "all", "A").await;
    let totals: Vec<&Value> = all.iter().map(|e| &e["available"]).collect();
    let mut deduped = totals.clone();
    deduped.dedup();
    assert_eq!(totals, deduped);
}

/// The channel feed reads its last published totals by SKU once per relay batch
/// (`db::channels::published`): an index must lead with the SKU, or the read scans every SKU of
/// every channel (150,000 rows at 50,000 SKUs). A btree led by the channel still "serves" the
/// read in a plan, as a scan of the whole index, so the schema is what is checked.
#[tokio::test]
async fn the_feeds_read_of_published_totals_by_sku_has_an_index_led_by_the_sku() {
    let app = spawn_app().await;
    let led_by_sku: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = 'channel_published'::regclass AND a.attname = 'sku'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("catalogue");
    assert_eq!(led_by_sku, 1);
}
