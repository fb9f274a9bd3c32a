//! kill -9 the daemon, again and again, while movements pour in over NATS and checkout clients
//! hold, confirm, release and route over HTTP. Afterwards nothing may be lost or doubled, every
//! level must equal its ledger, `reserved` the sum of live holds, and no level may hold more
//! than it has.
//!
//! CI form: 5 kills during 50,000 movements. Long form (`make chaos`):
//! `OMNISTOCK_CHAOS_ROUNDS=20 OMNISTOCK_CHAOS_MOVEMENTS=100000 cargo nextest run --test faults
//! kill9 --no-capture`. `OMNISTOCK_CHAOS_SEED` replays a run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::daemon::{Daemon, RESERVE_KEY};
use crate::servers::Servers;
use crate::support::{drained, env_or, movement, tally, wait_for, Bus, Expected, Rng, Truth};

const STORES: [(&str, f64, f64); 4] = [
    ("NEWTPE", 25.06199, 121.45703),
    ("BANQIAO", 25.01427, 121.46719),
    ("TAOYUAN", 24.99368, 121.29696),
    ("HSINCHU", 24.80361, 120.96861),
];
const TAIPEI: (f64, f64) = (25.05306, 121.52639);
/// SKUs that only ever receive stock and that the checkout clients hold: their on-hand never
/// falls, so `reserved > on_hand` on them can only mean a promise of stock that is not there.
const HOT_SKUS: u64 = 8;
/// One movement in this many is a hot receipt: little enough stock that holds contend for it.
const HOT_ONE_IN: u64 = 50;
/// SKUs that receive and sell, never held.
const COLD_SKUS: u64 = 400;
const PER_MESSAGE: usize = 500;
/// Elements of each message repeated from the previous message of its location.
const REPEATED_PER_MESSAGE: usize = 5;
const HTTP_CLIENTS: usize = 3;

/// What the checkout clients saw.
#[derive(Default)]
struct Checkout {
    /// Reservation ids answered 200/201 (holds, and holds of routed orders).
    acked_holds: HashSet<String>,
    acked_orders: HashSet<String>,
    refused: u64,
    confirmed: u64,
    released: u64,
    /// Answers that were neither success, a business refusal nor 503 (e.g. 500).
    unexpected: Vec<String>,
    /// Requests retried because the daemon was down or answered 503.
    retried: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_ingest_holds_and_routes_loses_and_doubles_nothing() {
    let rounds = env_or("OMNISTOCK_CHAOS_ROUNDS", 5);
    let total = env_or("OMNISTOCK_CHAOS_MOVEMENTS", 50_000) as usize;
    let mut rng = Rng::seeded("kill9");
    let started = Instant::now();

    let servers = Servers::start("kill9").await;
    let mut daemon = Daemon::new(&servers, 5);
    daemon.start().await;
    for (id, lat, lon) in STORES {
        daemon.store(id, lat, lon).await;
    }
    let bus = Arc::new(Bus::connect(&servers).await);
    let truth = Arc::new(Truth::connect(&servers).await);

    // The movements, decided up front from the seed.
    let messages = build_messages(&mut rng, total);
    let mut expected = Expected::default();
    for (_, body) in &messages {
        body.iter().for_each(|m| expected.add(m));
    }
    let unique = expected.events.len();
    assert_eq!(unique, total, "the generator makes `total` unique events");

    let stop = Arc::new(AtomicBool::new(false));
    let checkout = Arc::new(Mutex::new(Checkout::default()));
    let url = daemon.url("");
    let mut clients = Vec::new();
    for w in 0..HTTP_CLIENTS {
        clients.push(tokio::spawn(checkout_client(
            w,
            url.clone(),
            rng.next(),
            Arc::clone(&stop),
            Arc::clone(&checkout),
        )));
    }
    let oversold_max = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_oversold(
        Arc::clone(&truth),
        Arc::clone(&stop),
        Arc::clone(&oversold_max),
    ));

    // Publishing is paced to last about as long as the kills, so every kill lands mid-ingest.
    let publish_for = Duration::from_millis(5_000 * rounds.max(1));
    let publisher = {
        let bus = Arc::clone(&bus);
        let gap = publish_for / messages.len().max(1) as u32;
        tokio::spawn(async move {
            for (location, body) in &messages {
                bus.publish(location, body).await;
                tokio::time::sleep(gap).await;
            }
        })
    };

    let mut kills_mid_ingest = 0;
    let mut midrun_violations = 0;
    let mut restart_secs: Vec<f64> = Vec::new();
    let mut resume_secs: Vec<f64> = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(1_500 + rng.below(2_500))).await;
        let before = truth.ledger_count().await;
        daemon.kill9();
        if (before as usize) < unique {
            kills_mid_ingest += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        let t = Instant::now();
        daemon.start().await;
        restart_secs.push(t.elapsed().as_secs_f64());
        // Time from the restart until the ledger grows again (when work was waiting).
        let at_restart = truth.ledger_count().await;
        if (at_restart as usize) < unique {
            if let Some(d) = wait_for(Duration::from_secs(30), || async {
                truth.ledger_count().await > at_restart
            })
            .await
            {
                let _ = d;
                resume_secs.push(t.elapsed().as_secs_f64());
            }
        }
        // The invariants hold at every moment, not only at the end (each query is one snapshot).
        let (ledger_bad, reserved_bad) = truth.invariant_violations().await;
        let oversold = truth.oversold().await;
        midrun_violations += ledger_bad + reserved_bad + oversold as usize;
        eprintln!(
            "kill9: round {}/{rounds}: killed at {before} movements in the ledger, ready again in {:.2} s; \
             levels vs ledger {ledger_bad}, reserved vs holds {reserved_bad}, oversold {oversold}",
            round + 1,
            restart_secs.last().copied().unwrap_or_default()
        );
    }
    publisher.await.expect("publisher");

    // Let the last daemon finish: every event in the ledger and nothing waiting on the consumer.
    let drained = drained(&truth, &bus, unique, Duration::from_secs(240)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("checkout client");
    }
    sampler.await.expect("sampler");
    assert!(
        daemon.running(),
        "the daemon died by itself:\n{}",
        daemon.log_tail()
    );

    let t = tally(&truth, &expected).await;
    let (ledger_bad, reserved_bad) = truth.invariant_violations().await;
    let oversold_end = truth.oversold().await;
    let checkout = std::mem::take(&mut *checkout.lock().expect("checkout"));
    let holds_lost = missing(
        &truth,
        "reservations",
        "reservation_id",
        &checkout.acked_holds,
    )
    .await;
    let orders_lost = missing(&truth, "orders", "order_id", &checkout.acked_orders).await;
    let live_holds: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reservations WHERE status IN ('held','confirmed')",
    )
    .fetch_one(&truth.pool)
    .await
    .expect("live holds");

    eprintln!(
        "kill9: {rounds} kills ({kills_mid_ingest} mid-ingest), {unique} unique movements in {} messages \
         (+{} duplicate messages, {} repeated elements); drained: {}; total {:.1} s",
        total / PER_MESSAGE,
        total / PER_MESSAGE / 10,
        total / PER_MESSAGE * REPEATED_PER_MESSAGE,
        drained.map_or("NO".into(), |d| format!("{:.1} s after the last publish", d.as_secs_f64())),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "kill9: lost {} doubled {} unexpected {} level mismatches {} | ledger violations {ledger_bad} \
         reserved violations {reserved_bad} | oversold: end {oversold_end}, max sampled {}",
        t.lost,
        t.doubled,
        t.unexpected,
        t.level_mismatches,
        oversold_max.load(Ordering::SeqCst)
    );
    eprintln!(
        "kill9: restart to ready max {:.2} s; restart to ingest resumed max {:.2} s",
        restart_secs.iter().copied().fold(0.0, f64::max),
        resume_secs.iter().copied().fold(0.0, f64::max)
    );
    eprintln!(
        "kill9: checkout: {} holds acked ({live_holds} live at the end), {} orders routed, {} refused, \
         {} confirmed, {} released, {} retried; acked but missing: {holds_lost} holds, {orders_lost} orders",
        checkout.acked_holds.len(),
        checkout.acked_orders.len(),
        checkout.refused,
        checkout.confirmed,
        checkout.released,
        checkout.retried
    );

    assert!(
        drained.is_some(),
        "ingest did not finish within 240 s after the last kill"
    );
    assert_eq!(
        (t.lost, t.doubled, t.unexpected, t.level_mismatches),
        (0, 0, 0, 0),
        "lost, doubled, unexpected, level mismatches"
    );
    assert_eq!(
        (ledger_bad, reserved_bad),
        (0, 0),
        "levels vs ledger, reserved vs live holds"
    );
    assert_eq!(
        midrun_violations, 0,
        "invariants broken right after a restart"
    );
    assert_eq!(
        (oversold_end, oversold_max.load(Ordering::SeqCst)),
        (0, 0),
        "oversold levels (end, max sampled)"
    );
    assert_eq!(
        (holds_lost, orders_lost),
        (0, 0),
        "acknowledged holds / orders missing"
    );
    assert!(
        checkout.unexpected.is_empty(),
        "unexpected answers: {:?}",
        &checkout.unexpected[..checkout.unexpected.len().min(10)]
    );
    assert!(
        checkout.acked_holds.len() >= 10,
        "the checkout clients got too few holds through for the test to mean anything"
    );
    assert_eq!(
        kills_mid_ingest, rounds,
        "every kill should land while movements are still being ingested"
    );
}

/// The messages to publish, in order: (location, movements). Every 10th message is published
/// a second time later, and each message repeats a few elements of its location's previous one.
fn build_messages(rng: &mut Rng, total: usize) -> Vec<(String, Vec<Value>)> {
    let count = total.div_ceil(PER_MESSAGE);
    let mut out: Vec<(String, Vec<Value>)> = Vec::with_capacity(count + count / 10);
    let mut previous: Vec<Option<Vec<Value>>> = vec![None; STORES.len()];
    let mut n = 0;
    for i in 0..count {
        let loc_idx = i % STORES.len();
        let location = STORES[loc_idx].0;
        let mut body: Vec<Value> = Vec::with_capacity(PER_MESSAGE + REPEATED_PER_MESSAGE);
        for _ in 0..PER_MESSAGE.min(total - n) {
            let id = format!("ev-{n:07}");
            n += 1;
            let m = if rng.below(HOT_ONE_IN) == 0 {
                let sku = format!("HOT-{}", rng.below(HOT_SKUS));
                movement(&id, location, &sku, "receipt", 1 + rng.below(3) as i64)
            } else {
                let sku = format!("C{:04}", rng.below(COLD_SKUS));
                let kind = if rng.below(3) == 0 { "sale" } else { "receipt" };
                movement(&id, location, &sku, kind, 1 + rng.below(5) as i64)
            };
            body.push(m);
        }
        if let Some(prev) = &previous[loc_idx] {
            body.extend(prev.iter().take(REPEATED_PER_MESSAGE).cloned());
        }
        previous[loc_idx] = Some(body.clone());
        out.push((location.to_owned(), body));
        // A publisher that timed out and sent the same message again, a little later.
        if i % 10 == 9 {
            let again = out[out.len() - 2].clone();
            out.push(again);
        }
    }
    out
}

async fn sample_oversold(truth: Arc<Truth>, stop: Arc<AtomicBool>, max: Arc<AtomicU64>) {
    while !stop.load(Ordering::SeqCst) {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), truth.try_oversold()).await
        {
            max.fetch_max(n as u64, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many of `ids` are not in `table`.
async fn missing(truth: &Truth, table: &str, column: &str, ids: &HashSet<String>) -> usize {
    let stored: HashSet<String> = sqlx::query_scalar(&format!("SELECT {column} FROM {table}"))
        .fetch_all(&truth.pool)
        .await
        .expect("stored ids")
        .into_iter()
        .collect();
    ids.iter().filter(|id| !stored.contains(*id)).count()
}

/// Sends one idempotent request until the daemon answers something other than 503 (it is being
/// killed and restarted under us); `None` if it never does within 60 s.
async fn until_answered(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: &Value,
    retried: &mut u64,
) -> Option<(u16, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let sent = http
            .request(method.clone(), url)
            .bearer_auth(RESERVE_KEY)
            .json(body)
            .send()
            .await;
        if let Ok(r) = sent {
            let status = r.status().as_u16();
            if status != 503 {
                return Some((status, r.json().await.unwrap_or(Value::Null)));
            }
        }
        *retried += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A checkout front end: holds, confirms, releases and routes orders for the hot SKUs.
async fn checkout_client(
    worker: usize,
    base: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Checkout>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut rng = Rng::from_seed(seed);
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let mut retried = 0;
        let dice = rng.below(100);
        let outcome: Outcome = if dice < 45 || mine.is_empty() {
            let id = format!("h-{worker}-{n}");
            let ttl = [3, 30, 600][rng.below(3) as usize];
            let body = json!({"reservation_id": id,
                "location_id": STORES[rng.below(STORES.len() as u64) as usize].0,
                "lines": hot_lines(&mut rng), "ttl_seconds": ttl});
            let a = until_answered(
                &http,
                Method::POST,
                &format!("{base}/v1/reservations"),
                &body,
                &mut retried,
            )
            .await;
            match a {
                Some((200 | 201, _)) => {
                    mine.push(id.clone());
                    Ok(("hold", Some(id)))
                }
                Some((409, _)) => Ok(("refused", None)),
                other => Err(format!("hold {id}: {other:?}")),
            }
        } else if dice < 65 {
            let id = mine[rng.below(mine.len() as u64) as usize].clone();
            match until_answered(
                &http,
                Method::POST,
                &format!("{base}/v1/reservations/{id}/confirm"),
                &json!({}),
                &mut retried,
            )
            .await
            {
                Some((200, _)) => Ok(("confirmed", None)),
                // expired or released in the meantime
                Some((409, b)) if b["error"] == json!("reservation_not_held") => Ok(("late", None)),
                other => Err(format!("confirm {id}: {other:?}")),
            }
        } else if dice < 75 {
            let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            match until_answered(
                &http,
                Method::DELETE,
                &format!("{base}/v1/reservations/{id}"),
                &json!({}),
                &mut retried,
            )
            .await
            {
                Some((200, _)) => Ok(("released", None)),
                Some((409, _)) => Ok(("late", None)),
                other => Err(format!("release {id}: {other:?}")),
            }
        } else {
            let id = format!("o-{worker}-{n}");
            let body = json!({"order_id": id, "lines": hot_lines(&mut rng), "fulfilment": "delivery",
                "customer": {"lat": TAIPEI.0, "lon": TAIPEI.1}, "allow_split": true});
            match until_answered(
                &http,
                Method::POST,
                &format!("{base}/v1/orders/route"),
                &body,
                &mut retried,
            )
            .await
            {
                Some((200 | 201, b)) => {
                    let mut s = seen.lock().expect("seen");
                    for a in b["assignments"].as_array().into_iter().flatten() {
                        if let Some(r) = a["reservation_id"].as_str() {
                            s.acked_holds.insert(r.to_owned());
                        }
                    }
                    Ok(("routed", Some(id)))
                }
                Some((409, _)) => Ok(("refused", None)),
                other => Err(format!("route {id}: {other:?}")),
            }
        };
        record(&seen, retried, outcome);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Outcome = Result<(&'static str, Option<String>), String>;

fn record(seen: &Mutex<Checkout>, retried: u64, outcome: Outcome) {
    let mut s = seen.lock().expect("seen");
    s.retried += retried;
    match outcome {
        Ok(("hold", Some(id))) => {
            s.acked_holds.insert(id);
        }
        Ok(("routed", Some(id))) => {
            s.acked_orders.insert(id);
        }
        Ok(("refused", _)) => s.refused += 1,
        Ok(("confirmed", _)) => s.confirmed += 1,
        Ok(("released", _)) => s.released += 1,
        Ok(_) => {}
        Err(e) => s.unexpected.push(e),
    }
}

fn hot_lines(rng: &mut Rng) -> Value {
    let lines: Vec<Value> = (0..1 + rng.below(2))
        .map(|_| json!({"sku": format!("HOT-{}", rng.below(HOT_SKUS)), "quantity": 1 + rng.below(4)}))
        .collect();
    json!(lines)
}
