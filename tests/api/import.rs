use std::path::PathBuf;

use chrono::Utc;
use omnistock::ops::import;

use crate::helpers::{spawn_app, READ_KEY};

fn temp_csv(name: &str, text: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("omnistock-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write csv");
    path
}

const LOCATIONS: &str =
    "location_id,name,kind,lat,lon,pickup,ship_from,safety_stock,daily_order_capacity,timezone
TW001,Taipei Store,store,25.05306,121.52639,true,true,1,50,Asia/Taipei
WH-TPE,Taoyuan DC,warehouse,24.95,121.22,false,true,2,5000,Asia/Taipei
";

#[tokio::test]
async fn locations_and_opening_stock_import_once_and_agree_with_the_ledger() {
    let app = spawn_app().await;
    assert_eq!(
        import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
            .await
            .expect("import"),
        2
    );
    let stock = temp_csv(
        "s.csv",
        "location_id,sku,on_hand,counted_at\nTW001,TEE-1,5,2026-11-01T00:00:00Z\nWH-TPE,TEE-1,100,\nWH-TPE,GIFT CARD/500,7,2026-11-01T00:00:00Z\n",
    );
    let r = import::stock(&app.pool, None, &stock, Utc::now())
        .await
        .expect("import");
    assert_eq!((r.rows, r.recorded, r.already_imported), (3, 3, 0));
    let again = import::stock(&app.pool, None, &stock, Utc::now())
        .await
        .expect("re-import");
    assert_eq!(
        (again.recorded, again.already_imported),
        (1, 2),
        "dated rows are the same counts; the undated one is a new count"
    );
    assert_eq!(app.on_hand("WH-TPE", "GIFT CARD/500").await, Some(7));
    let (_, body) = app.get("/v1/availability/TEE-1", READ_KEY).await;
    // TW001: 5 - safety 1; WH-TPE: 100 - safety 2.
    assert_eq!(body["available"], serde_json::json!(4 + 98));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_bad_row_names_its_line_and_nothing_is_imported() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    let stock = temp_csv(
        "s.csv",
        "location_id,sku,on_hand\nTW001,A,1\nTW001,B,-4\nNOWHERE,C,1\nTW001,D,lots\nTW001,A,2\n",
    );
    let err = import::stock(&app.pool, None, &stock, Utc::now())
        .await
        .expect_err("must fail")
        .to_string();
    for needle in [
        "line 3: on_hand",
        "line 4: location \"NOWHERE\"",
        "line 5:",
        "line 6: TW001 / \"A\" already on line 2",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert_eq!(app.ledger_count().await, 0);
    let bad_locations = temp_csv("l.csv", "location_id,name,kind,lat,lon\nOK1,Fine,store,1,1\nBAD,Broken,castle,1,1\nOK2,Far,store,95,1\n");
    let err = import::locations(&app.pool, &bad_locations)
        .await
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("line 3:") && err.contains("line 4: lat"),
        "{err}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM locations")
        .fetch_one(&app.pool)
        .await
        .expect("n");
    assert_eq!(n, 2, "only the first file's locations");
}

#[tokio::test]
async fn the_shipped_demo_data_imports_cleanly() {
    let app = spawn_app().await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/demo");
    let locations = import::locations(&app.pool, &root.join("locations.csv"))
        .await
        .expect("demo locations");
    assert!(locations >= 30, "a store per city at least");
    let r = import::stock(&app.pool, None, &root.join("stock.csv"), Utc::now())
        .await
        .expect("demo stock");
    let lines = std::fs::read_to_string(root.join("stock.csv"))
        .expect("read")
        .lines()
        .count()
        - 1;
    assert_eq!((r.rows, r.recorded), (lines, lines));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_count_in_the_far_future_or_out_of_range_names_its_line() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    let soon = (Utc::now() + chrono::Duration::hours(23)).to_rfc3339();
    let late = (Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let stock = temp_csv(
        "s.csv",
        &format!(
            "location_id,sku,on_hand,counted_at\nTW001,A,1,{soon}\nTW001,B,1,{late}\nTW001,C,1,9999-12-31T23:59:59Z\nTW001,D,1,\n"
        ),
    );
    // Rows without counted_at take the default: here one PostgreSQL cannot store.
    let ancient = chrono::NaiveDate::from_ymd_opt(-10_000, 1, 1)
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("time")
        .and_utc();
    let err = import::stock(&app.pool, None, &stock, ancient)
        .await
        .expect_err("must fail")
        .to_string();
    for needle in [
        "line 3: counted_at",
        "line 4: counted_at",
        "line 5: counted_at",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(
        !err.contains("line 2:"),
        "23 h ahead is within the skew: {err}"
    );
    assert_eq!(app.ledger_count().await, 0, "nothing applied");
}

/// An import racing live ingest over the same levels: the import crosses ingest's lock order
/// unless it takes its locks the same way (file rows in descending key order, and more rows
/// than one statement group used to hold), and must still apply exactly once.
#[tokio::test]
async fn an_import_racing_live_ingest_applies_everything_exactly_once() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    const SKUS: usize = 1_500;
    const ROUNDS: usize = 3;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let js = app.js.clone();
        let subjects = app.subjects.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Each pair locks a low key (TW001) before a high one (WH-TPE) of one SKU.
                let sku = format!("S{:04}", sent % SKUS);
                for loc in ["TW001", "WH-TPE"] {
                    let m = crate::helpers::movement(
                        &format!("live-{sent}-{loc}"),
                        loc,
                        &sku,
                        "receipt",
                        1,
                    );
                    js.publish(
                        subjects.movements(loc),
                        serde_json::to_vec(&m).expect("json").into(),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
                }
                sent += 1;
            }
            sent * 2
        })
    };
    for round in 0..ROUNDS {
        let at = (Utc::now() - chrono::Duration::minutes(60 - round as i64)).to_rfc3339();
        let mut csv = String::from("location_id,sku,on_hand,counted_at\n");
        for loc in ["WH-TPE", "TW001"] {
            for i in (0..SKUS).rev() {
                csv.push_str(&format!("{loc},S{i:04},{},{at}\n", 100 + round));
            }
        }
        let r = import::stock(&app.pool, None, &temp_csv("s.csv", &csv), Utc::now())
            .await
            .unwrap_or_else(|e| panic!("import round {round} failed: {e:#}"));
        assert_eq!((r.rows, r.recorded), (2 * SKUS, 2 * SKUS));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let live = publisher.await.expect("publisher");
    let want = (ROUNDS * 2 * SKUS + live) as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while app.ledger_count().await < want {
        assert!(
            std::time::Instant::now() < deadline,
            "ingest did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.ledger_count().await, want, "nothing doubled");
    assert!(app.deadletters().await.is_empty(), "nothing dead-lettered");
    app.assert_ledger_consistent().await;
}

/// A stock file of `skus` SKUs at both test locations, counted `at`, on-hand `qty(i)`.
fn bulk_csv(skus: usize, at: &str, qty: impl Fn(usize) -> i64) -> String {
    let mut csv = String::from("location_id,sku,on_hand,counted_at\n");
    for i in 0..skus {
        for loc in ["TW001", "WH-TPE"] {
            csv.push_str(&format!("{loc},B{i:05},{},{at}\n", qty(i)));
        }
    }
    csv
}

async fn level_count(app: &crate::helpers::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stock_levels")
        .fetch_one(&app.pool)
        .await
        .expect("levels")
}

/// A bulk file (more rows than the event limit, so the set-based merge without per-level
/// events) with one bad row in its middle and one repeated key near the end: nothing at all
/// is applied, and both lines are named.
#[tokio::test]
async fn a_bulk_file_with_a_bad_row_in_the_middle_applies_nothing_and_names_the_line() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    let skus = 6_000;
    let at = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let mut lines: Vec<String> = bulk_csv(skus, &at, |i| i as i64 % 50)
        .lines()
        .map(str::to_owned)
        .collect();
    // Line numbers count the header as line 1.
    lines[skus] = format!("TW001,B{:05},-3,{at}", skus / 2);
    let repeat = lines[10].clone();
    lines.push(repeat);
    let text = lines.join("\n") + "\n";
    let last_line = lines.len();
    assert!((lines.len() - 1) as u64 > import::EVENT_LIMIT);
    let err = import::stock(&app.pool, None, &temp_csv("s.csv", &text), Utc::now())
        .await
        .expect_err("must fail")
        .to_string();
    let bad_line = skus + 1;
    for needle in [
        format!("line {bad_line}: on_hand must be between 0"),
        format!("line {last_line}: "),
        "already on line 11".to_string(),
        "nothing was imported".to_string(),
    ] {
        assert!(err.contains(&needle), "{needle:?} missing in: {err}");
    }
    assert_eq!(app.ledger_count().await, 0, "no count recorded");
    assert_eq!(level_count(&app).await, 0, "no level created");
}

/// Many bad rows: the report lists the first 100 by line and counts the rest.
#[tokio::test]
async fn the_error_report_is_capped_and_counts_the_rest() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    let mut csv = String::from("location_id,sku,on_hand\n");
    for i in 0..500 {
        csv.push_str(&format!(
            "TW001,S{i},{}\n",
            if i % 2 == 0 { "x" } else { "1" }
        ));
    }
    let err = import::stock(&app.pool, None, &temp_csv("s.csv", &csv), Utc::now())
        .await
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("250 invalid rows"), "{err}");
    assert!(err.contains("line 2: on_hand \"x\""), "{err}");
    assert!(err.contains("… and 150 more invalid rows"), "{err}");
    assert_eq!(err.matches("\n  line ").count(), 100, "{err}");
    assert_eq!(app.ledger_count().await, 0);
}

/// (location, SKU, on-hand, version, last count).
type LevelSnapshot = (String, String, i64, i64, Option<chrono::DateTime<Utc>>);

/// The same bulk file twice: the second run records nothing and changes no level, no
/// version, and writes no event.
#[tokio::test]
async fn the_same_bulk_file_twice_changes_nothing() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    let at = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let file = temp_csv("s.csv", &bulk_csv(6_000, &at, |i| (i % 7) as i64));
    let first = import::stock(&app.pool, None, &file, Utc::now())
        .await
        .expect("first");
    assert_eq!(
        (first.rows, first.recorded, first.already_imported),
        (12_000, 12_000, 0)
    );
    app.assert_ledger_consistent().await;
    let snapshot = || async {
        let levels: Vec<LevelSnapshot> = sqlx::query_as(
            "SELECT location_id, sku, on_hand, version, last_count_at FROM stock_levels
             ORDER BY location_id, sku",
        )
        .fetch_all(&app.pool)
        .await
        .expect("levels");
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .expect("outbox");
        (levels, outbox, app.ledger_count().await)
    };
    let before = snapshot().await;
    assert_eq!(before.0.len(), 12_000);
    assert_eq!(before.0[1].2, 1, "B00001 at TW001 counted 1");
    let again = import::stock(&app.pool, None, &file, Utc::now())
        .await
        .expect("again");
    assert_eq!(
        (again.rows, again.recorded, again.already_imported),
        (12_000, 0, 12_000)
    );
    assert!(
        snapshot().await == before,
        "the second import changed something"
    );
}

/// A bulk import while movements stream in over NATS, on levels that already have history:
/// no deadlock, nothing lost or doubled, every level equals its count plus the deltas that
/// occurred after the count (the as-of rule), a count older than the level's latest count is
/// stale, and `check` is clean. Redis is filled after the commit.
#[tokio::test]
async fn a_bulk_import_while_movements_stream_in_keeps_the_as_of_rule() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("import");
    const SKUS: usize = 6_000;
    // History before the import: a recount after the file's count time (the file's count is
    // stale there), and a receipt of 5 at B00002 after it (added back to the count).
    let counted = Utc::now() - chrono::Duration::minutes(30);
    let later = (counted + chrono::Duration::minutes(10)).to_rfc3339();
    app.publish(
        "TW001",
        &crate::helpers::movement_at("pre-count", "TW001", "B00001", "count", 999, &later),
    )
    .await;
    app.publish(
        "TW001",
        &crate::helpers::movement_at("pre-receipt", "TW001", "B00002", "receipt", 5, &later),
    )
    .await;
    app.wait_for_ledger(2).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let js = app.js.clone();
        let subjects = app.subjects.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            // Spread over the whole key range, both locations: high and low keys interleave
            // with the import's chunks. Some SKUs are new to the file's range end.
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || sent < 200 {
                let sku = format!("B{:05}", (sent * 7_919) % (SKUS + 50));
                for loc in ["WH-TPE", "TW001"] {
                    let m = crate::helpers::movement(
                        &format!("live-{sent}-{loc}"),
                        loc,
                        &sku,
                        "receipt",
                        1,
                    );
                    js.publish(
                        subjects.movements(loc),
                        serde_json::to_vec(&m).expect("json").into(),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
                }
                sent += 1;
            }
            sent * 2
        })
    };
    // Let the stream get going before the import starts.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let cache = omnistock::cache::StockCache::new(
        omnistock::cache::RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix)
            .expect("store"),
        app.pool.clone(),
    );
    let file = temp_csv("s.csv", &bulk_csv(SKUS, &counted.to_rfc3339(), |_| 100));
    let r = import::stock(&app.pool, Some(&cache), &file, Utc::now())
        .await
        .unwrap_or_else(|e| panic!("import failed: {e:#}"));
    assert_eq!((r.rows, r.recorded), (2 * SKUS, 2 * SKUS));
    assert_eq!(
        r.cached_skus,
        Some(SKUS),
        "every imported SKU written to Redis"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let live = publisher.await.expect("publisher");
    let want = (2 + 2 * SKUS + live) as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while app.ledger_count().await < want {
        assert!(
            std::time::Instant::now() < deadline,
            "ingest did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.ledger_count().await,
        want,
        "nothing lost, nothing doubled"
    );
    assert!(app.deadletters().await.is_empty(), "nothing dead-lettered");
    app.assert_ledger_consistent().await;

    // Every level of the file: its count (100) plus the live receipts, all after the count;
    // B00001 at TW001 keeps its later recount (999) plus its live receipts; B00002 at TW001
    // adds the earlier receipt of 5.
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT l.location_id, l.sku, l.on_hand,
                (SELECT count(*) FROM movements m WHERE m.location_id = l.location_id
                   AND m.sku = l.sku AND m.event_id LIKE 'live-%')
         FROM stock_levels l WHERE l.sku < $1",
    )
    .bind(format!("B{SKUS:05}"))
    .fetch_all(&app.pool)
    .await
    .expect("levels");
    assert_eq!(rows.len(), 2 * SKUS);
    for (loc, sku, on_hand, live) in rows {
        let base = match (loc.as_str(), sku.as_str()) {
            ("TW001", "B00001") => 999,
            ("TW001", "B00002") => 105,
            _ => 100,
        };
        assert_eq!(on_hand, base + live, "{loc} / {sku}");
    }
    let stale: String = sqlx::query_scalar(
        "SELECT outcome FROM movements WHERE location_id = 'TW001' AND sku = 'B00001'
         AND source = 'import'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("outcome");
    assert_eq!(stale, "stale_count");
    // Redis holds what PostgreSQL holds, for a SKU the live stream did not touch after.
    let store = omnistock::cache::RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix)
        .expect("store");
    let (_, body) = app.get("/v1/availability/B00003", READ_KEY).await;
    assert!(body["available"].as_i64().is_some(), "{body}");
    let raw = store.read_raw(&["B00003"]).await.expect("redis");
    assert!(raw[0].len() >= 2, "B00003 is cached: {raw:?}");
}
