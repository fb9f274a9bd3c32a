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
