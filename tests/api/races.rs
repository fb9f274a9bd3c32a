//! Races: many clients at once against one daemon (and its background jobs) never oversell,
//! never let a hold be both confirmed and expired, and never create or destroy stock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{movement, spawn_with, wait_until, Isolation, TestApp, RESERVE_KEY};

/// Requests in flight at once: enough to keep every pool connection of the daemon busy and
/// its level lock contended, few enough for a 2-core machine shared with other work.
const IN_FLIGHT: usize = 128;

/// A daemon whose per-key rate limit does not get in the way of a race.
async fn racing_app() -> TestApp {
    spawn_with(Isolation::new().await, |c| {
        c.rate_limit_per_second = 1_000_000;
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_holds_on_a_hundred_units_hold_exactly_a_hundred() {
    const HOLDS: usize = 10_000;
    let app = racing_app().await;
    app.store("RACE1", 25.05306, 121.52639).await;
    app.stock("RACE1", "HOT", 100).await;
    let http = client();
    let url = app.url("/v1/reservations");
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..HOLDS)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = json!({"reservation_id": format!("h{i}"), "location_id": "RACE1",
                                  "lines": [{"sku": "HOT", "quantity": 1}]});
                // 0 stands for a transport failure: it is counted, not hidden.
                match http
                    .post(url)
                    .bearer_auth(RESERVE_KEY)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in statuses {
        *by_status.entry(s).or_default() += 1;
    }
    println!(
        "{HOLDS} holds on 100 units, {IN_FLIGHT} in flight: {:.2} s, {:.0} holds/s, statuses {by_status:?}",
        elapsed.as_secs_f64(),
        HOLDS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        by_status,
        BTreeMap::from([(201, 100), (409, HOLDS - 100)]),
        "exactly 100 holds taken, every other one refused with 409"
    );
    assert_eq!(app.reserved("RACE1", "HOT").await, 100);
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'held'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(held, 100, "one reservation row per successful hold");
    let (status, a) = app.get("/v1/availability/HOT", RESERVE_KEY).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(
        (
            a["available"].clone(),
            a["locations"][0]["reserved"].clone()
        ),
        (json!(0), json!(100))
    );
    app.assert_ledger_consistent().await;
}

/// Confirms each of many short holds at (and around) its expiry instant, while the daemon's
/// expiry job and a second, much faster sweeper release whatever is due. Each hold must end in
/// exactly one of the two states, and the answer the client got must agree with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_racing_expiry_has_exactly_one_winner() {
    const HOLDS: usize = 50;
    let app = racing_app().await;
    app.store("RACE2", 25.05306, 121.52639).await;
    app.stock("RACE2", "A", 1_000).await;

    // A second expiry worker, as another daemon would run it, sweeping every few ms so that
    // expiry really happens at the instant the confirm arrives.
    let store = omnistock::cache::RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix)
        .expect("redis store");
    let cache = omnistock::cache::StockCache::new(store, app.pool.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (pool, stop) = (app.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sweeps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                omnistock::holds::reservations::expire_due(&pool, &cache, 500)
                    .await
                    .expect("expiry sweep");
                sweeps += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sweeps
        })
    };

    let version_before = level_version(&app, "RACE2", "A").await;
    let mut holds = Vec::new();
    for i in 0..HOLDS {
        let quantity = 1 + (i as i64 % 3);
        let (status, body) = app
            .send(
                Method::POST,
                "/v1/reservations",
                RESERVE_KEY,
                &json!({"reservation_id": format!("x{i}"), "location_id": "RACE2",
                        "lines": [{"sku": "A", "quantity": quantity}], "ttl_seconds": 1}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let expires_at: DateTime<Utc> = body["expires_at"]
            .as_str()
            .expect("expires_at")
            .parse()
            .expect("timestamp");
        holds.push((format!("x{i}"), quantity, expires_at));
    }

    // Confirm each hold from 100 ms before to 96 ms after its expiry, 4 ms apart.
    let http = client();
    let tasks: Vec<_> = holds
        .iter()
        .enumerate()
        .map(|(i, (id, _, expires_at))| {
            let offset = chrono::Duration::milliseconds(-100 + 4 * i as i64);
            let at = *expires_at + offset;
            let (http, url) = (
                http.clone(),
                app.url(&format!("/v1/reservations/{id}/confirm")),
            );
            tokio::spawn(async move {
                if let Ok(wait) = (at - Utc::now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                let r = http
                    .post(url)
                    .bearer_auth(RESERVE_KEY)
                    .send()
                    .await
                    .expect("confirm request");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("join"));
    }
    wait_until("every unconfirmed hold to expire", || async {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'held'")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        held == 0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let sweeps = sweeper.await.expect("sweeper");

    let mut confirmed_quantity = 0;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for ((id, quantity, _), (status, body)) in holds.iter().zip(&answers) {
        let (_, now) = app
            .get(&format!("/v1/reservations/{id}"), RESERVE_KEY)
            .await;
        let final_status = now["status"].as_str().unwrap_or("?").to_owned();
        match (status, final_status.as_str()) {
            (200, "confirmed") => {
                assert_eq!(body["status"], json!("confirmed"), "{id}: {body}");
                assert_eq!(now["lines"][0]["held"], json!(quantity), "{id}: {now}");
                confirmed_quantity += quantity;
                *outcomes.entry("confirmed").or_default() += 1;
            }
            (409, "expired") => {
                assert_eq!(body["error"], json!("reservation_not_held"), "{id}: {body}");
                assert_eq!(now["lines"][0]["held"], json!(0), "{id}: {now}");
                *outcomes.entry("expired").or_default() += 1;
            }
            (s, f) => panic!("{id}: confirm answered {s} {body} but the hold ended {f}: {now}"),
        }
    }
    println!("confirm vs expiry over {HOLDS} holds: {outcomes:?}, {sweeps} extra sweeps");
    assert_eq!(outcomes.values().sum::<usize>(), HOLDS);
    assert_eq!(
        app.reserved("RACE2", "A").await,
        confirmed_quantity,
        "only confirmed holds still reserve stock"
    );
    let expired = outcomes.get("expired").copied().unwrap_or(0) as i64;
    // A sweep releases every due hold of a level in one change, so expiries may share one.
    let changes = level_version(&app, "RACE2", "A").await - version_before;
    assert!(
        (HOLDS as i64 + expired.min(1)..=HOLDS as i64 + expired).contains(&changes),
        "{changes} level changes: one per hold taken, at most one per hold expired"
    );
    app.assert_ledger_consistent().await;
}

async fn level_version(app: &TestApp, location: &str, sku: &str) -> i64 {
    sqlx::query_scalar("SELECT version FROM stock_levels WHERE location_id = $1 AND sku = $2")
        .bind(location)
        .bind(sku)
        .fetch_one(&app.pool)
        .await
        .expect("version")
}

/// The network total of a SKU as one consistent snapshot: on hand plus in transit everywhere.
async fn network_total(pool: &sqlx::PgPool, sku: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(on_hand + in_transit), 0)::int8 FROM stock_levels WHERE sku = $1",
    )
    .bind(sku)
    .fetch_one(pool)
    .await
    .expect("network total")
}

/// The network total as a reader of the API sees it.
async fn network_total_over_http(app: &TestApp, sku: &str) -> i64 {
    let (status, a) = app
        .get(&format!("/v1/availability/{sku}"), RESERVE_KEY)
        .await;
    assert_eq!(status, 200, "{a}");
    let sum = |list: &Value, field: &str| -> i64 {
        list.as_array()
            .map(|l| l.iter().filter_map(|x| x[field].as_i64()).sum())
            .unwrap_or(0)
    };
    sum(&a["locations"], "on_hand") + sum(&a["in_transit"], "quantity")
}

fn transfer(
    event_id: &str,
    location: &str,
    kind: &str,
    quantity: i64,
    transfer_id: &str,
    to: &str,
) -> Value {
    let mut m = movement(event_id, location, "GOLD", kind, quantity);
    m["transfer_id"] = json!(transfer_id);
    if kind == "transfer_out" {
        m["to_location_id"] = json!(to);
    }
    m
}

/// Jepsen's bank test: transfers between stores, from many clients at once, both through NATS
/// (the daemon's ingest) and straight through `apply` (as a second daemon would), never change
/// the network total, seen in one snapshot at any moment. Goods leave before they arrive: each
/// client sends a transfer's `transfer_in` only after its `transfer_out` was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_between_stores_keep_the_network_total() {
    const STORES: usize = 4;
    const START: i64 = 1_000;
    const WORKERS: usize = 8;
    const TRANSFERS_PER_WORKER: usize = 30;
    let app = Arc::new(racing_app().await);
    // The cache writer of a second daemon, for the transfers applied straight through `apply`.
    let store = omnistock::cache::RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix)
        .expect("redis store");
    let cache = omnistock::cache::StockCache::new(store, app.pool.clone());
    let stores: Vec<String> = (0..STORES).map(|i| format!("BANK{i}")).collect();
    for (i, s) in stores.iter().enumerate() {
        app.store(s, 25.0 + i as f64 / 10.0, 121.5).await;
        app.stock(s, "GOLD", START).await;
    }
    let total = START * STORES as i64;
    assert_eq!(network_total(&app.pool, "GOLD").await, total);
    let movements_before = app.ledger_count().await;

    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut http_off = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(network_total(&app.pool, "GOLD").await);
                let h = network_total_over_http(&app, "GOLD").await;
                if h != total {
                    http_off.push(h);
                }
            }
            (seen, http_off)
        })
    };

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (app, stores, cache) = (app.clone(), stores.clone(), cache.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = 0i64;
            // A small deterministic generator: the test replays the same way every run.
            let mut seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(w as u64 + 1);
            let mut next = |n: u64| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (seed >> 33) % n
            };
            for t in 0..TRANSFERS_PER_WORKER {
                let from = next(STORES as u64) as usize;
                let to = (from + 1 + next(STORES as u64 - 1) as usize) % STORES;
                let quantity = 1 + next(25) as i64;
                let id = format!("T{w}-{t}");
                let out = transfer(
                    &format!("{id}-out"),
                    &stores[from],
                    "transfer_out",
                    quantity,
                    &id,
                    &stores[to],
                );
                // Received in one part or two.
                let split = if next(3) == 0 { quantity / 2 } else { 0 };
                let mut ins = vec![quantity - split];
                if split > 0 {
                    ins.push(split);
                }
                let ins: Vec<Value> = ins
                    .iter()
                    .enumerate()
                    .map(|(k, q)| {
                        transfer(
                            &format!("{id}-in{k}"),
                            &stores[to],
                            "transfer_in",
                            *q,
                            &id,
                            "",
                        )
                    })
                    .collect();
                let direct = w % 2 == 1;
                for m in std::iter::once(&out).chain(&ins) {
                    let loc = m["location_id"].as_str().expect("location").to_owned();
                    if direct {
                        let mv = omnistock::domain::movement::validate(&loc, m, Utc::now())
                            .expect("valid movement");
                        omnistock::ingest::apply::apply_batch(
                            &app.pool,
                            Some(&cache),
                            &[mv.into()],
                        )
                        .await
                        .expect("apply");
                    } else {
                        app.publish(&loc, m).await;
                    }
                    sent += 1;
                }
            }
            sent
        }));
    }
    let mut sent = 0;
    for w in workers {
        sent += w.await.expect("worker");
    }
    app.wait_for_ledger(movements_before + sent).await;
    done.store(true, Ordering::Relaxed);
    let (seen, http_off) = observer.await.expect("observer");
    let off: Vec<i64> = seen.iter().copied().filter(|t| *t != total).collect();
    println!(
        "bank test: {sent} transfer movements, {} snapshots all equal to {total} ({} off); {} HTTP reads off the total",
        seen.len(),
        off.len(),
        http_off.len()
    );
    assert!(
        off.is_empty(),
        "the network total changed in a snapshot: {off:?}"
    );
    assert!(seen.len() > 10, "the observer ran during the transfers");
    assert_eq!(network_total(&app.pool, "GOLD").await, total);
    let in_transit: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(in_transit), 0)::int8 FROM stock_levels WHERE sku = 'GOLD'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("in transit");
    assert_eq!(in_transit, 0, "every transfer arrived in full");
    wait_until("the cache to show the network total", || async {
        network_total_over_http(&app, "GOLD").await == total
    })
    .await;
    app.assert_ledger_consistent().await;
    let bad = omnistock::db::invariants::in_transit_mismatches(&app.pool, 10)
        .await
        .expect("in-transit invariant");
    assert!(
        bad.is_empty(),
        "in_transit disagrees with transfers: {bad:?}"
    );
}

/// A flash sale on one hot SKU: 10,000 holds at once on 2,500 units, of assorted sizes, group
/// committed. Exactly the stock is held, every refusal names its own request and what was
/// left, and `reserved` equals the sum of what the held lines hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_holds_on_2500_units_hold_exactly_2500() {
    const HOLDS: usize = 10_000;
    const STOCK: i64 = 2_500;
    let app = racing_app().await;
    app.store("FLASH", 25.05306, 121.52639).await;
    app.stock("FLASH", "HOT", STOCK).await;
    let http = client();
    let url = app.url("/v1/reservations");
    let answers: Vec<(usize, u16, Value)> = futures::stream::iter(0..HOLDS)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = json!({"reservation_id": format!("f{i}"), "location_id": "FLASH",
                                  "lines": [{"sku": "HOT", "quantity": 1}]});
                match http
                    .post(url)
                    .bearer_auth(RESERVE_KEY)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (i, status, r.json().await.unwrap_or(Value::Null))
                    }
                    Err(_) => (i, 0, Value::Null),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, status, body) in &answers {
        *by_status.entry(*status).or_default() += 1;
        match status {
            201 => {
                assert_eq!(body["reservation_id"], format!("f{i}"), "{body}");
                assert_eq!(body["lines"][0]["held"], 1, "{body}");
            }
            409 => {
                assert_eq!(body["error"], "insufficient_stock", "{body}");
                let line = &body["details"]["lines"][0];
                assert_eq!(
                    (line["requested"].clone(), line["available"].clone()),
                    (json!(1), json!(0)),
                    "{body}"
                );
            }
            _ => {}
        }
    }
    let held = STOCK as usize;
    assert_eq!(
        by_status,
        BTreeMap::from([(201, held), (409, HOLDS - held)]),
        "exactly the stock held, every other hold refused with 409"
    );
    assert_eq!(app.reserved("FLASH", "HOT").await, STOCK);
    let (rows, lines): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM reservations WHERE status = 'held'),
                (SELECT coalesce(sum(held), 0)::int8 FROM reservation_lines)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(
        (rows, lines),
        (STOCK, STOCK),
        "one row per hold; reserved = sum of held lines"
    );
    let (status, a) = app.get("/v1/availability/HOT", RESERVE_KEY).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["available"], 0, "{a}");
    app.assert_ledger_consistent().await;
}
