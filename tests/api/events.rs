use reqwest::Method;
use serde_json::{json, Value};

use omnistock::events::relay::{self, Finish};

use crate::helpers::{
    movement, movement_at, spawn_app, wait_until, Isolation, TestApp, READ_KEY, RESERVE_KEY,
};

async fn changes_of(app: &TestApp, location: &str, sku: &str) -> Vec<Value> {
    app.stream_messages(&app.subjects.changes_stream())
        .await
        .into_iter()
        .filter(|(_, v, _)| v["location_id"] == json!(location) && v["sku"] == json!(sku))
        .map(|(_, v, _)| v)
        .collect()
}

async fn wait_for_changes(app: &TestApp, location: &str, sku: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} change events"), || async {
        changes_of(app, location, sku).await.len() >= n
    })
    .await;
    let c = changes_of(app, location, sku).await;
    assert_eq!(c.len(), n, "exactly one event per change: {c:#?}");
    c
}

#[tokio::test]
async fn each_cause_of_change_produces_exactly_one_event_in_version_order() {
    let app = spawn_app().await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.publish(
        "TW001",
        &movement_at("r", "TW001", "A", "receipt", 10, "2026-11-23T01:00:00Z"),
    )
    .await;
    app.publish(
        "TW001",
        &movement_at("s", "TW001", "A", "sale", 2, "2026-11-23T01:10:00Z"),
    )
    .await;
    app.publish(
        "TW001",
        &movement_at("c", "TW001", "A", "count", 5, "2026-11-23T01:20:00Z"),
    )
    .await;
    // Late: recorded, changes nothing, so no event.
    app.publish(
        "TW001",
        &movement_at("late", "TW001", "A", "sale", 1, "2026-11-23T01:05:00Z"),
    )
    .await;
    app.wait_for_ledger(4).await;
    let hold = |id: &str, ttl: i64| json!({"reservation_id": id, "location_id": "TW001", "lines": [{"sku": "A", "quantity": 2}], "ttl_seconds": ttl});
    assert_eq!(
        app.send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("h1", 600)
        )
        .await
        .0,
        201
    );
    assert_eq!(
        app.send(
            Method::DELETE,
            "/v1/reservations/h1",
            RESERVE_KEY,
            &json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("h2", 1)
        )
        .await
        .0,
        201
    );
    wait_until("h2 expired", || async {
        app.get("/v1/reservations/h2", RESERVE_KEY).await.1["status"] == json!("expired")
    })
    .await;
    assert_eq!(
        app.send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("h3", 600)
        )
        .await
        .0,
        201
    );
    let mut sale = movement("s3", "TW001", "A", "sale", 2);
    sale["reservation_id"] = json!("h3");
    app.publish("TW001", &sale).await;
    app.wait_for_ledger(5).await;

    let events = wait_for_changes(&app, "TW001", "A", 9).await;
    let got: Vec<(i64, i64, i64, &str)> = events
        .iter()
        .map(|e| {
            (
                e["version"].as_i64().expect("v"),
                e["on_hand"].as_i64().expect("oh"),
                e["reserved"].as_i64().expect("r"),
                e["cause"].as_str().expect("cause"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 10, 0, "receipt"),
            (2, 8, 0, "sale"),
            (3, 5, 0, "count"),
            (4, 5, 2, "reservation_hold"),
            (5, 5, 0, "reservation_release"),
            (6, 5, 2, "reservation_hold"),
            (7, 5, 0, "reservation_expiry"),
            (8, 5, 2, "reservation_hold"),
            (9, 3, 0, "sale"),
        ]
    );
    assert_eq!(events[8]["available"], json!(3));
    assert_eq!(events[0]["reference"], json!("r"));
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 9, "each event has its own id");
}

/// A migrated database with store TW001, and the outbox streams, for tests that drive the
/// relay themselves.
async fn relay_without_daemon() -> (
    sqlx::PgPool,
    async_nats::jetstream::Context,
    omnistock::config::Subjects,
) {
    let iso = Isolation::new().await;
    let pool = omnistock::db::connect(&iso.database_url, 4)
        .await
        .expect("pool");
    omnistock::db::migrate(&pool).await.expect("migrate");
    let nats = async_nats::connect(std::env::var("NATS_URL").expect("NATS_URL"))
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(nats);
    let subjects = omnistock::config::Subjects::new(&iso.subject_prefix);
    relay::ensure_streams(&js, &subjects)
        .await
        .expect("streams");
    sqlx::query("INSERT INTO locations (location_id, name, kind, lat, lon) VALUES ('TW001', 'S', 'store', 25, 121)")
        .execute(&pool)
        .await
        .expect("location");
    (pool, js, subjects)
}

/// `n` receipts of one unit at TW001, event ids `<id_prefix><i>`, spread over SKUs
/// `<sku_prefix>0..2` in turn, applied in one transaction.
async fn receipts_in_one_batch(pool: &sqlx::PgPool, id_prefix: &str, sku_prefix: &str, n: usize) {
    let movements: Vec<_> = (0..n)
        .map(|i| {
            let v = movement(
                &format!("{id_prefix}{i}"),
                "TW001",
                &format!("{sku_prefix}{}", i % 3),
                "receipt",
                1,
            );
            omnistock::domain::movement::validate("TW001", &v, chrono::Utc::now())
                .expect("valid")
                .into()
        })
        .collect::<Vec<omnistock::domain::movement::Incoming>>();
    omnistock::ingest::apply::apply_batch(pool, None, &movements)
        .await
        .expect("apply");
}

#[tokio::test]
async fn a_relay_crash_between_publish_and_mark_loses_nothing_and_repeats_only_the_same_ids() {
    // No daemon: the test drives the relay itself.
    let (pool, js, subjects) = relay_without_daemon().await;
    receipts_in_one_batch(&pool, "e", "S", 30).await;

    // 30 changes, and each of the 3 SKUs came back in stock once (no network alerts: the store
    // does not ship).
    let crashed = relay::relay_once(&pool, &js, &subjects, Finish::CrashBeforeMark)
        .await
        .expect("relay");
    assert_eq!(crashed, 33);
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE id > (SELECT done_to FROM outbox_cursors WHERE name = 'relay')")
        .fetch_one(&pool)
        .await
        .expect("n");
    assert_eq!(unsent, 33, "nothing marked: the crash came first");
    let again = relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
        .await
        .expect("relay");
    assert_eq!(again, 33, "the same events are published again");
    assert_eq!(
        relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
            .await
            .expect("relay"),
        0
    );

    let mut stream = js
        .get_stream(subjects.changes_stream())
        .await
        .expect("stream");
    let info = stream.info().await.expect("info").clone();
    assert_eq!(
        info.state.messages, 30,
        "JetStream dropped the re-published duplicates by their id"
    );
    let mut ids = std::collections::HashSet::new();
    for seq in 1..=info.state.last_sequence {
        let m = stream.get_raw_message(seq).await.expect("message");
        let body: Value = serde_json::from_slice(&m.payload).expect("json");
        let header = m
            .headers
            .get("Nats-Msg-Id")
            .map(|h| h.to_string())
            .expect("msg id");
        assert_eq!(body["event_id"], json!(header));
        assert!(ids.insert(header));
    }
    let expected: std::collections::HashSet<String> =
        sqlx::query_scalar::<_, i64>("SELECT id FROM outbox WHERE subject LIKE 'changes.%'")
            .fetch_all(&pool)
            .await
            .expect("ids")
            .into_iter()
            .map(|id| relay::event_id("changes.TW001", id))
            .collect();
    assert_eq!(ids, expected, "every committed change was published");
    let mut alerts = js
        .get_stream(subjects.alerts_stream())
        .await
        .expect("alerts stream");
    assert_eq!(alerts.info().await.expect("info").state.messages, 3);
}

#[tokio::test]
async fn alerts_fire_once_per_crossing_per_location_and_for_the_network() {
    let app = spawn_app().await;
    app.put_location(
        "SHIP",
        json!({"name": "Ships", "kind": "store", "lat": 25.0, "lon": 121.5, "ship_from": true}),
    )
    .await;
    app.put_location("LOCAL", json!({"name": "Local", "kind": "store", "lat": 25.1, "lon": 121.5, "low_stock_threshold": 0})).await;
    let steps: [(&str, &str, i64); 8] = [
        ("SHIP", "receipt", 5),  // out -> ok: back in stock (location and network)
        ("SHIP", "sale", 2),     // 3: ok, nothing
        ("SHIP", "sale", 1),     // 2: low (default threshold 2)
        ("SHIP", "sale", 1),     // 1: still low, nothing
        ("SHIP", "sale", 1),     // 0: out of stock
        ("LOCAL", "receipt", 1), // LOCAL: back in stock (location only: it does not ship)
        ("LOCAL", "sale", 1),    // LOCAL: out of stock (threshold 0: never low)
        ("SHIP", "receipt", 4),  // back in stock
    ];
    for (i, (loc, kind, q)) in steps.iter().enumerate() {
        app.publish(loc, &movement(&format!("a{i}"), loc, "A", kind, *q))
            .await;
        app.wait_for_ledger(i as i64 + 1).await;
    }
    let expected = vec![
        ("back_in_stock", "location", Some("SHIP")),
        ("back_in_stock", "network", None),
        ("low_stock", "location", Some("SHIP")),
        ("low_stock", "network", None),
        ("out_of_stock", "location", Some("SHIP")),
        ("out_of_stock", "network", None),
        ("back_in_stock", "location", Some("LOCAL")),
        ("out_of_stock", "location", Some("LOCAL")),
        ("back_in_stock", "location", Some("SHIP")),
        ("back_in_stock", "network", None),
    ];
    let name = app.subjects.alerts_stream();
    wait_until("alerts", || async {
        app.stream_messages(&name).await.len() >= expected.len()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let alerts = app.stream_messages(&name).await;
    let got: Vec<(&str, &str, Option<&str>)> = alerts
        .iter()
        .map(|(_, v, _)| {
            (
                v["kind"].as_str().expect("kind"),
                v["scope"].as_str().expect("scope"),
                v["location_id"].as_str(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    for (subject, v, _) in &alerts {
        assert_eq!(
            subject,
            &app.subjects.alerts(v["kind"].as_str().expect("kind"))
        );
    }
}

#[tokio::test]
async fn a_transfer_is_in_transit_until_it_arrives_in_either_order() {
    let app = spawn_app().await;
    app.put_location(
        "WH",
        json!({"name": "DC", "kind": "warehouse", "lat": 24.95, "lon": 121.22}),
    )
    .await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.stock("WH", "A", 20).await;
    let transfer = |id: &str, loc: &str, kind: &str, q: i64, t: &str| {
        let mut m = movement(id, loc, "A", kind, q);
        m["transfer_id"] = json!(t);
        if kind == "transfer_out" {
            m["to_location_id"] = json!("TW001");
        }
        m
    };
    let in_transit = || async {
        let (_, a) = app.get("/v1/availability/A", READ_KEY).await;
        a["in_transit"].clone()
    };
    // Out first, then in.
    app.publish("WH", &transfer("o1", "WH", "transfer_out", 5, "T1"))
        .await;
    app.wait_for_ledger(2).await;
    assert_eq!(
        in_transit().await,
        json!([{"to_location_id": "TW001", "quantity": 5}])
    );
    app.publish("TW001", &transfer("i1", "TW001", "transfer_in", 3, "T1"))
        .await;
    app.wait_for_ledger(3).await;
    assert_eq!(
        in_transit().await,
        json!([{"to_location_id": "TW001", "quantity": 2}]),
        "partly received"
    );
    app.publish("TW001", &transfer("i1b", "TW001", "transfer_in", 2, "T1"))
        .await;
    app.wait_for_ledger(4).await;
    assert_eq!(in_transit().await, json!([]));
    // In first (the store scanned it before the warehouse's message arrived), then out.
    app.publish("TW001", &transfer("i2", "TW001", "transfer_in", 4, "T2"))
        .await;
    app.wait_for_ledger(5).await;
    assert_eq!(in_transit().await, json!([]));
    app.publish("WH", &transfer("o2", "WH", "transfer_out", 4, "T2"))
        .await;
    app.wait_for_ledger(6).await;
    assert_eq!(in_transit().await, json!([]));
    assert_eq!(app.on_hand("WH", "A").await, Some(11));
    assert_eq!(app.on_hand("TW001", "A").await, Some(9));
    let (_, a) = app.get("/v1/availability/A", READ_KEY).await;
    assert_eq!(a["available"], json!(20));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_failed_publish_never_lets_a_later_event_of_its_sku_overtake_it() {
    // No daemon: the test drives the relay itself.
    let (pool, js, subjects) = relay_without_daemon().await;
    // The change event names its movement: a long event id makes event 2 the biggest.
    let long_id = format!("e2-{}", "x".repeat(120));
    let ids = ["e1".to_owned(), long_id, "e3".to_owned()];
    let movements: Vec<_> = ids
        .iter()
        .map(|id| {
            let v = movement(id, "TW001", "S", "receipt", 1);
            omnistock::domain::movement::validate("TW001", &v, chrono::Utc::now())
                .expect("valid")
                .into()
        })
        .collect::<Vec<omnistock::domain::movement::Incoming>>();
    for m in &movements {
        omnistock::ingest::apply::apply_batch(&pool, None, std::slice::from_ref(m))
            .await
            .expect("apply");
    }
    let sizes: Vec<usize> = sqlx::query_scalar::<_, Value>(
        "SELECT payload FROM outbox WHERE subject LIKE 'changes.%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("payloads")
    .into_iter()
    .map(|mut p| {
        p["event_id"] = json!("chg-0000");
        serde_json::to_vec(&p).expect("json").len()
    })
    .collect();
    assert_eq!(sizes.len(), 3);
    assert!(
        sizes[1] > sizes[0] + 60 && sizes[1] > sizes[2] + 60,
        "{sizes:?}"
    );
    // The changes stream refuses event 2 only (as a full disk or a limit would, for a time).
    let mut stream = js
        .get_stream(subjects.changes_stream())
        .await
        .expect("stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.max_message_size = ((sizes[0].max(sizes[2]) + sizes[1]) / 2) as i32;
    js.update_stream(config.clone()).await.expect("limit");

    let failed = relay::relay_once(&pool, &js, &subjects, Finish::MarkSent).await;
    assert!(failed.is_err(), "event 2 was refused");
    config.max_message_size = -1;
    js.update_stream(config).await.expect("no limit");
    while relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
        .await
        .expect("relay")
        > 0
    {}

    let last = stream.info().await.expect("info").state.last_sequence;
    let mut versions = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        let body: Value = serde_json::from_slice(&m.payload).expect("json");
        versions.push(body["version"].as_i64().expect("version"));
    }
    assert_eq!(
        versions,
        vec![1, 2, 3],
        "changes of one SKU leave in order, once each"
    );
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE id > (SELECT done_to FROM outbox_cursors WHERE name = 'relay')")
        .fetch_one(&pool)
        .await
        .expect("n");
    assert_eq!(unsent, 0);
}

#[tokio::test]
async fn one_relay_batch_with_many_changes_per_sku_publishes_each_skus_in_version_order() {
    // No daemon: the test drives the relay itself.
    let (pool, js, subjects) = relay_without_daemon().await;
    // 60 changes of 3 SKUs interleaved in one transaction: the relay's batch holds each SKU's
    // 20 events, which it publishes one SKU-queue at a time.
    receipts_in_one_batch(&pool, "q", "Q", 60).await;
    let sent = relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
        .await
        .expect("relay");
    assert_eq!(sent, 63, "60 changes and 3 back-in-stock alerts");

    let mut stream = js
        .get_stream(subjects.changes_stream())
        .await
        .expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut per_sku: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        let body: Value = serde_json::from_slice(&m.payload).expect("json");
        per_sku
            .entry(body["sku"].as_str().expect("sku").to_owned())
            .or_default()
            .push(body["version"].as_i64().expect("version"));
    }
    assert_eq!(per_sku.len(), 3);
    for (sku, versions) in per_sku {
        assert_eq!(
            versions,
            (1..=20).collect::<Vec<i64>>(),
            "{sku}: stored in version order, once each"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_holds_is_one_change_of_its_level() {
    let app = spawn_app().await;
    app.store("GRPE", 25.05306, 121.52639).await;
    app.stock("GRPE", "HOT", 100).await;
    let lock = app.block_level("GRPE", "HOT").await;
    let front = app.spawn_send(
        Method::POST,
        "/v1/reservations",
        RESERVE_KEY,
        json!({"reservation_id": "front", "location_id": "GRPE",
               "lines": [{"sku": "HOT", "quantity": 1}]}),
    );
    app.wait_for_a_lock_wait("a hold waiting for the level lock")
        .await;
    // Queued behind the hold in front: they are decided and committed together.
    let queued: Vec<_> = (1..=5)
        .map(|q| {
            app.spawn_send(
                Method::POST,
                "/v1/reservations",
                RESERVE_KEY,
                json!({"reservation_id": format!("g{q}"), "location_id": "GRPE",
                       "lines": [{"sku": "HOT", "quantity": q}]}),
            )
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    lock.commit().await.expect("release the level");
    assert_eq!(front.await.expect("front").0, 201);
    for t in queued {
        let (status, body) = t.await.expect("hold");
        assert_eq!(status, 201, "{body}");
    }

    let events = wait_for_changes(&app, "GRPE", "HOT", 3).await;
    let got: Vec<(i64, i64, &str, &Value)> = events
        .iter()
        .map(|e| {
            (
                e["version"].as_i64().expect("v"),
                e["reserved"].as_i64().expect("r"),
                e["cause"].as_str().expect("cause"),
                &e["reference"],
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 0, "receipt", &events[0]["reference"]),
            (2, 1, "reservation_hold", &json!("front")),
            // Five holds, one commit: one event, the version up by one, no single reference.
            (3, 16, "reservation_hold", &Value::Null),
        ]
    );
    assert_eq!(events[2]["available"], json!(84));
    let (version, reserved): (i64, i64) = sqlx::query_as(
        "SELECT version, reserved FROM stock_levels WHERE location_id = 'GRPE' AND sku = 'HOT'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("level");
    assert_eq!((version, reserved), (3, 16));
    app.assert_ledger_consistent().await;
}
