use std::collections::BTreeSet;

use omnistock::cache::RedisStore;
use omnistock::ops::reconcile::{self, RedisFindings};
use redis::aio::MultiplexedConnection;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    movement, spawn_app, spawn_with, wait_until, Isolation, TestApp, READ_KEY, RESERVE_KEY,
};

fn store_of(app: &TestApp) -> RedisStore {
    RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix).expect("store")
}

async fn redis(app: &TestApp) -> MultiplexedConnection {
    redis::Client::open(app.iso.redis_url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

async fn field(app: &TestApp, sku: &str, location: &str) -> String {
    redis::cmd("HGET")
        .arg(store_of(app).level_key(sku))
        .arg(location)
        .query_async::<Option<String>>(&mut redis(app).await)
        .await
        .expect("HGET")
        .unwrap_or_else(|| panic!("no Redis field {location} for {sku}"))
}

async fn set_field(app: &TestApp, sku: &str, location: &str, value: &str) {
    redis::cmd("HSET")
        .arg(store_of(app).level_key(sku))
        .arg(location)
        .arg(value)
        .query_async::<i64>(&mut redis(app).await)
        .await
        .expect("HSET");
}

/// What an old write would have left: one version back, other quantities. (The value is
/// `"<version> <on_hand> ..."`; whatever follows is kept.)
async fn make_stale(app: &TestApp, sku: &str, location: &str) {
    let value = field(app, sku, location).await;
    let mut parts: Vec<String> = value.split(' ').map(str::to_owned).collect();
    let version: i64 = parts[0].parse().expect("version");
    let on_hand: i64 = parts[1].parse().expect("on_hand");
    parts[0] = (version - 1).to_string();
    parts[1] = (on_hand + 100).to_string();
    set_field(app, sku, location, &parts.join(" ")).await;
}

/// A version no commit has reached, with plausible quantities: no versioned write replaces it.
async fn make_bogus_version(app: &TestApp, sku: &str, location: &str) {
    let value = field(app, sku, location).await;
    let rest = value.split_once(' ').expect("value").1;
    set_field(app, sku, location, &format!("999999 {rest}")).await;
}

/// Reads every SKU until the daemon answers it from Redis (a miss fills a complete entry), and
/// waits for the cache sync to have written every change, so that it does not undo a tamper.
async fn warm(app: &TestApp, skus: &[&str]) {
    for sku in skus {
        let path = format!("/v1/availability/{sku}");
        wait_until(&format!("{sku} cached"), || async {
            app.get(&path, READ_KEY).await.1["source"] == json!("cache")
        })
        .await;
    }
    wait_until("the cache sync to catch up", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE id > (SELECT done_to FROM outbox_cursors WHERE name = 'cache_sync')")
            .fetch_one(&app.pool)
            .await
            .expect("uncached")
            == 0
    })
    .await;
}

async fn pg_on_hand(app: &TestApp, sku: &str) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT location_id, on_hand FROM stock_levels WHERE sku = $1 ORDER BY 1")
        .bind(sku)
        .fetch_all(&app.pool)
        .await
        .expect("levels")
}

const SKUS: [&str; 4] = ["REC-A", "REC-B", "REC-C", "REC-D"];

async fn stocked_app() -> TestApp {
    let app = spawn_app().await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.store("TW002", 25.06199, 121.45703).await;
    let mut batch = Vec::new();
    for sku in SKUS {
        batch.push(movement(&format!("{sku}-r1"), "TW001", sku, "receipt", 10));
        batch.push(movement(&format!("{sku}-s1"), "TW001", sku, "sale", 3));
    }
    app.publish("TW001", &Value::Array(batch)).await;
    let batch: Vec<_> = SKUS
        .iter()
        .map(|sku| movement(&format!("{sku}-r2"), "TW002", sku, "receipt", 4))
        .collect();
    app.publish("TW002", &Value::Array(batch)).await;
    app.wait_for_ledger(12).await;
    warm(&app, &SKUS).await;
    app
}

fn clean(checked_skus: u64) -> RedisFindings {
    RedisFindings {
        checked_skus,
        ..RedisFindings::default()
    }
}

#[tokio::test]
async fn reconciliation_finds_a_tampered_level_and_stale_redis_and_repairs_redis() {
    let app = stocked_app().await;
    let store = store_of(&app);
    let report = reconcile::run(&app.pool, &store, true)
        .await
        .expect("reconcile");
    assert!(report.postgres_consistent(), "{report}");
    assert_eq!(report.redis, clean(4), "{report}");

    // A level edited by hand in PostgreSQL (its version untouched, so Redis now differs at the
    // same version), an old write in Redis, a corrupt value, and a bogus high version.
    sqlx::query(
        "UPDATE stock_levels SET on_hand = on_hand + 5 WHERE location_id = 'TW001' AND sku = 'REC-A'",
    )
    .execute(&app.pool)
    .await
    .expect("tamper");
    make_stale(&app, "REC-B", "TW001").await;
    set_field(&app, "REC-C", "TW002", "999999 garbage").await;
    make_bogus_version(&app, "REC-D", "TW001").await;

    // Without repair: reported, left as they are.
    let report = reconcile::run(&app.pool, &store, false)
        .await
        .expect("reconcile");
    assert_eq!(
        (
            report.redis.stale,
            report.redis.mismatched,
            report.redis.repaired
        ),
        (1, 3, 0),
        "{report}"
    );
    assert_eq!(report.redis_unrepaired(), 4);
    assert!(field(&app, "REC-C", "TW002").await.contains("garbage"));

    let report = reconcile::run(&app.pool, &store, true)
        .await
        .expect("reconcile");
    println!("{report}");
    assert_eq!(report.ledger.count, 1, "{report}");
    let m = &report.ledger.examples[0];
    assert_eq!(
        (m.location_id.as_str(), m.sku.as_str(), m.on_hand, m.implied),
        ("TW001", "REC-A", 12, 7)
    );
    assert_eq!(report.reserved.count, 0);
    assert!(!report.postgres_consistent());
    let r = &report.redis;
    assert_eq!(
        (r.checked_skus, r.stale, r.mismatched, r.missing, r.repaired),
        (4, 1, 3, 0, 4),
        "{report}"
    );
    let stale = &r.stale_examples[0];
    assert_eq!(
        (stale.sku.as_str(), stale.location_id.as_str()),
        ("REC-B", "TW001")
    );
    assert_eq!(stale.postgres.map(|p| p.on_hand), Some(7));
    let mismatched: BTreeSet<(&str, &str)> = r
        .mismatched_examples
        .iter()
        .map(|d| (d.sku.as_str(), d.location_id.as_str()))
        .collect();
    assert_eq!(
        mismatched,
        BTreeSet::from([("REC-A", "TW001"), ("REC-C", "TW002"), ("REC-D", "TW001")])
    );
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["ledger"]["examples"][0]["sku"], json!("REC-A"));
    assert_eq!(json["redis"]["repaired"], json!(4));

    // Redis repaired; the PostgreSQL tamper is still there for a human to look at.
    let again = reconcile::run(&app.pool, &store, true)
        .await
        .expect("reconcile");
    assert_eq!(again.redis, clean(4), "{again}");
    assert_eq!(again.ledger.count, 1);

    // The daemon answers from Redis, with PostgreSQL's values.
    for sku in SKUS {
        let (status, body) = app.get(&format!("/v1/availability/{sku}"), READ_KEY).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["source"], json!("cache"), "{sku}: {body}");
        let served: Vec<(String, i64)> = body["locations"]
            .as_array()
            .expect("locations")
            .iter()
            .map(|l| {
                (
                    l["location_id"].as_str().expect("id").to_owned(),
                    l["on_hand"].as_i64().expect("on_hand"),
                )
            })
            .collect();
        assert_eq!(served, pg_on_hand(&app, sku).await, "{sku}");
    }
}

#[tokio::test]
async fn export_writes_every_level_as_csv() {
    let app = spawn_app().await;
    app.put_location(
        "WH-1",
        json!({"name": "Warehouse", "kind": "warehouse", "lat": 25.0, "lon": 121.3,
               "ship_from": true, "safety_stock": 2}),
    )
    .await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.publish(
        "WH-1",
        &json!([
            movement("w1", "WH-1", "EXP-X", "receipt", 10),
            movement("w2", "WH-1", "EXP,\"QUOTED\" SKU", "receipt", 1),
        ]),
    )
    .await;
    app.publish(
        "TW001",
        &json!([
            movement("t1", "TW001", "EXP-X", "count", 5),
            movement("t2", "TW001", "EXP-X", "sale", 2),
        ]),
    )
    .await;
    app.wait_for_ledger(4).await;
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"location_id": "WH-1", "lines": [{"sku": "EXP-X", "quantity": 3}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let mut out = Vec::new();
    let n = omnistock::ops::export::stock(&app.pool, &mut out)
        .await
        .expect("export");
    assert_eq!(n, 3);

    let mut csv = csv::Reader::from_reader(out.as_slice());
    let header: Vec<String> = csv
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, omnistock::ops::export::STOCK_HEADER);
    let rows: Vec<csv::StringRecord> = csv.records().map(|r| r.expect("record")).collect();
    type Level = (
        String,
        String,
        i64,
        i64,
        i64,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        i64,
    );
    let levels: Vec<Level> = sqlx::query_as(
        "SELECT l.location_id, l.sku, l.on_hand, l.reserved, l.version, l.last_movement_at,
                l.last_count_at, loc.safety_stock
         FROM stock_levels l JOIN locations loc USING (location_id) ORDER BY 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .expect("levels");
    assert_eq!(rows.len(), levels.len());
    let time = |s: &str| {
        (!s.is_empty()).then(|| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("RFC 3339")
                .to_utc()
        })
    };
    for (row, l) in rows.iter().zip(&levels) {
        let int = |i: usize| row[i].parse::<i64>().expect("integer");
        assert_eq!((&row[0], &row[1]), (l.0.as_str(), l.1.as_str()));
        assert_eq!((int(2), int(3), int(6)), (l.2, l.3, l.4), "{row:?}");
        assert_eq!(int(4), (l.2 - l.3 - l.7).max(0), "available: {row:?}");
        assert_eq!(int(5), 0, "nothing in transit: {row:?}");
        assert_eq!((time(&row[7]), time(&row[8])), (l.5, l.6), "{row:?}");
    }
    // The hold and the safety stock count: 10 on hand - 3 reserved - 2 safety stock.
    let x = rows
        .iter()
        .find(|r| (&r[0], &r[1]) == ("WH-1", "EXP-X"))
        .expect("WH-1 EXP-X");
    assert_eq!((&x[3], &x[4]), ("3", "5"));
    let counted = rows
        .iter()
        .find(|r| (&r[0], &r[1]) == ("TW001", "EXP-X"))
        .expect("TW001 EXP-X");
    assert!(!counted[8].is_empty(), "last_count_at of a counted level");

    // To a file: the same bytes, and nothing left beside it.
    let dir = std::env::temp_dir().join(format!("omnistock-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).expect("dir");
    let path = dir.join("stock.csv");
    omnistock::ops::export::stock_to_file(&app.pool, &path)
        .await
        .expect("export to file");
    assert_eq!(std::fs::read(&path).expect("read"), out);
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_daemon_reconciles_periodically_and_repairs_redis() {
    let app = spawn_with(Isolation::new().await, |c| c.reconcile_interval_seconds = 1).await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.stock("TW001", "REC-P", 5).await;
    warm(&app, &["REC-P"]).await;
    make_stale(&app, "REC-P", "TW001").await;

    let store = store_of(&app);
    wait_until("the periodic run to repair Redis", || async {
        let repaired = app
            .metric("omnistock_reconcile_redis_repaired")
            .await
            .unwrap_or(0.0);
        let cached = store.read(&["REC-P"]).await.expect("read");
        let fixed = cached[0]
            .as_ref()
            .is_some_and(|l| l.len() == 1 && l[0].on_hand == 5);
        repaired >= 1.0 && fixed
    })
    .await;
    assert!(app
        .metric("omnistock_reconcile_runs_total")
        .await
        .is_some_and(|n| n >= 1.0));
    assert!(app
        .metric("omnistock_reconcile_redis_repaired_total")
        .await
        .is_some_and(|n| n >= 1.0));
    assert!(app
        .metric("omnistock_reconcile_last_run_timestamp_seconds")
        .await
        .is_some_and(|t| t > 0.0));
    assert_eq!(
        app.metric("omnistock_reconcile_ledger_mismatches").await,
        Some(0.0)
    );
}
