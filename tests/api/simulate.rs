//! `omnistock simulate` against a real daemon: a short compressed day on a small demo-like
//! network sends every kind of traffic, oversells nothing, leaves the check clean and the
//! ledger holding exactly the movements it says were accepted; and its oversell audit and
//! check do fail on a corrupted level.

use omnistock::cache::RedisStore;
use omnistock::ops::simulate::{self, SimulateArgs};
use serde_json::json;

use crate::helpers::{spawn_app, TestApp, ADMIN_KEY};

/// An e-shop, a warehouse and four stores (one with safety stock), 24 SKUs each.
async fn demo_like_network(app: &TestApp) {
    app.put_location(
        "ESHOP",
        json!({"name": "Online", "kind": "online", "lat": 25.05, "lon": 121.52, "ship_from": true, "timezone": "Asia/Taipei"}),
    )
    .await;
    app.put_location(
        "WH",
        json!({"name": "DC", "kind": "warehouse", "lat": 24.95, "lon": 121.23, "ship_from": true, "timezone": "Asia/Taipei"}),
    )
    .await;
    for (i, (lat, lon)) in [
        (25.05, 121.53),
        (25.00, 121.45),
        (24.15, 120.67),
        (22.63, 120.30),
    ]
    .into_iter()
    .enumerate()
    {
        app.put_location(
            &format!("S{i}"),
            json!({"name": format!("Store {i}"), "kind": "store", "lat": lat, "lon": lon,
                   "pickup": true, "ship_from": i % 2 == 0, "safety_stock": i64::from(i == 1),
                   "timezone": "Asia/Taipei"}),
        )
        .await;
    }
    let mut batch = Vec::new();
    for loc in ["ESHOP", "WH", "S0", "S1", "S2", "S3"] {
        for k in 0..24 {
            batch.push(json!({
                "event_id": format!("open-{loc}-{k}"), "location_id": loc,
                "sku": format!("TEE-{k:02}"), "kind": "receipt", "quantity": 2 + (k * 7) % 11,
                "occurred_at": chrono::Utc::now().to_rfc3339(), "source": "test",
            }));
        }
    }
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/v1/movements",
            ADMIN_KEY,
            &json!(batch),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_ledger(batch.len() as i64).await;
}

fn args(app: &TestApp) -> SimulateArgs {
    SimulateArgs {
        http_addr: app.addr.to_string(),
        api_key: ADMIN_KEY.into(),
        rate: 60.0,
        duration: 4,
        start_hour: 0,
        hours: 24,
        skew: 1.0,
        seed: 7,
        max_requests: 1_000,
        concurrency: 8,
        flash_hour: 20,
        flash_holds: 60,
        flash_skus: 2,
        abandon_ttl: 1,
        request_timeout: 10,
        settle_timeout: 30,
        json: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_day_sends_every_kind_oversells_nothing_and_leaves_the_ledger_exact() {
    let app = spawn_app().await;
    demo_like_network(&app).await;
    let before = app.ledger_count().await;
    let a = args(&app);

    // The same seed plans the same day on the same catalogue.
    let (catalog, _) = simulate::catalog(&app.pool).await.expect("catalog");

    let s = simulate::run(&app.iso.connections(), &a)
        .await
        .expect("simulate runs");
    println!("{s}");

    for kind in [
        "pos_sale",
        "return",
        "receipt",
        "transfer_out",
        "transfer_in",
        "count",
        "read",
        "checkout",
        "bopis",
        "delivery",
        "flash_hold",
    ] {
        let k = s
            .kinds
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} in {s}"));
        assert!(k.sent > 0 && k.sent == k.planned, "{kind}: {k:?}\n{s}");
    }
    assert_eq!(s.kinds["flash_hold"].sent, 60);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.not_started, 0);
    for op in ["hold", "route", "read", "publish"] {
        assert!(s.latency.get(op).is_some_and(|l| l.count > 0), "{op}\n{s}");
    }
    // The flash sale sells out: 60 one-unit holds on two SKUs with at most 12 units each.
    assert!(s.holds.answered_201 > 0 && s.holds.answered_409 > 0, "{s}");
    assert!(
        s.holds.sold_with_reservation > 0 && s.holds.released > 0 && s.holds.left_to_expire > 0
    );
    assert_eq!(s.oversells, 0, "{s}");
    assert!(s.audit.levels_judged > 0, "the audit judged nothing: {s}");
    assert!(s.check.clean, "{s}");
    assert!(s.passed);

    // Every accepted movement is in the ledger once, and nothing else arrived.
    assert!(s.movements.accepted > 0);
    assert_eq!(s.movements.in_ledger, s.movements.accepted);
    let ours: i64 =
        sqlx::query_scalar("SELECT count(*) FROM movements WHERE starts_with(event_id, $1)")
            .bind(format!("{}-", s.run))
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(ours as u64, s.movements.accepted);
    assert_eq!(app.ledger_count().await - before, ours);
    assert!(app.deadletters().await.is_empty(), "nothing dead-lettered");

    let js = serde_json::to_value(&s).expect("json");
    assert_eq!(js["oversells"], 0);
    assert_eq!(js["check"]["clean"], true);
    assert!(js["latency"]["hold"]["p99_ms"].as_f64().is_some());

    // The plan depends on the seed and the catalogue only.
    let mut cfg = a.clone();
    let p1 = simulate::plan::generate(&catalog, &cfg.plan_config()).expect("plan");
    let p2 = simulate::plan::generate(&catalog, &cfg.plan_config()).expect("plan");
    cfg.seed = 8;
    let p3 = simulate::plan::generate(&catalog, &cfg.plan_config()).expect("plan");
    assert_eq!(p1, p2);
    assert_ne!(p1.steps, p3.steps);
    assert_eq!(p1.steps.len() as u64, s.planned_steps);

    // Now corrupt a level the run did not touch: more held than on hand, nothing explaining it.
    let (loc, sku): (String, String) = sqlx::query_as(
        "SELECT location_id, sku FROM stock_levels s WHERE on_hand > 0 AND NOT EXISTS
           (SELECT 1 FROM movements m WHERE m.id > $1 AND m.location_id = s.location_id AND m.sku = s.sku)
         ORDER BY 1, 2 LIMIT 1",
    )
    .bind(s.trace.start_movement_id)
    .fetch_one(&app.pool)
    .await
    .expect("an untouched level");
    sqlx::query(
        "UPDATE stock_levels SET reserved = on_hand + 3 WHERE location_id = $1 AND sku = $2",
    )
    .bind(&loc)
    .bind(&sku)
    .execute(&app.pool)
    .await
    .expect("corrupt");
    let store = RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix).expect("redis");
    let (audit, check) = simulate::verify(&app.pool, &store, &s.trace)
        .await
        .expect("verify");
    assert_eq!(audit.oversells, 1, "{audit:?}");
    assert_eq!(
        (
            audit.over_reserved[0].location_id.as_str(),
            audit.over_reserved[0].sku.as_str()
        ),
        (loc.as_str(), sku.as_str())
    );
    assert!(!check.clean);
    assert_eq!(check.reserved_mismatches, 1, "{check:?}");
}
