//! Failures of what the daemon depends on, and of its own parts: PostgreSQL aborting,
//! unreachable or slow; a stuck client at shutdown; a background job that dies; too many
//! streams; keys bound to a location; credentials in logs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use omnistock::http::error::ApiError;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{
    spawn_app, spawn_prepared, spawn_with, wait_until, Isolation, TestApp, ADMIN_KEY, READ_KEY,
    RESERVE_KEY,
};

/// The status, `Retry-After` and error code of the answer a database error gets.
async fn answer_to(e: sqlx::Error) -> (u16, Option<String>, Value) {
    let response = ApiError::from(e).into_response();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (
        status,
        retry_after,
        serde_json::from_slice(&body).expect("JSON body"),
    )
}

fn sqlstate(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connect")
}

#[tokio::test]
async fn serialization_failures_and_deadlocks_answer_503_with_retry_after() {
    let iso = Isolation::new().await;
    let url = &iso.database_url;
    let mut setup = connect(url).await;
    sqlx::query("CREATE TABLE duty (doctor int PRIMARY KEY, on_call bool NOT NULL)")
        .execute(&mut setup)
        .await
        .expect("table");
    sqlx::query("INSERT INTO duty VALUES (1, true), (2, true)")
        .execute(&mut setup)
        .await
        .expect("rows");

    // 40001: write skew between two SERIALIZABLE transactions (each reads what the other
    // writes).
    let (mut a, mut b) = (connect(url).await, connect(url).await);
    for c in [&mut a, &mut b] {
        sqlx::query("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .execute(&mut *c)
            .await
            .expect("begin");
        sqlx::query("SELECT count(*) FROM duty WHERE on_call")
            .execute(&mut *c)
            .await
            .expect("read");
    }
    sqlx::query("UPDATE duty SET on_call = false WHERE doctor = 1")
        .execute(&mut a)
        .await
        .expect("a writes");
    sqlx::query("UPDATE duty SET on_call = false WHERE doctor = 2")
        .execute(&mut b)
        .await
        .expect("b writes");
    sqlx::query("COMMIT").execute(&mut a).await.expect("a wins");
    let e = sqlx::query("COMMIT")
        .execute(&mut b)
        .await
        .expect_err("b must fail to serialize");
    assert_eq!(sqlstate(&e), "40001", "{e}");
    let (status, retry_after, body) = answer_to(e).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["details"]["retry_after_seconds"], 1);

    // 40P01: two transactions locking the same two rows in opposite orders.
    let (mut a, mut b) = (connect(url).await, connect(url).await);
    for (c, row) in [(&mut a, 1), (&mut b, 2)] {
        sqlx::query("BEGIN").execute(&mut *c).await.expect("begin");
        sqlx::query("SELECT 1 FROM duty WHERE doctor = $1 FOR UPDATE")
            .bind(row)
            .execute(&mut *c)
            .await
            .expect("first lock");
    }
    let crossing = tokio::spawn(async move {
        let r = sqlx::query("SELECT 1 FROM duty WHERE doctor = 2 FOR UPDATE")
            .execute(&mut a)
            .await;
        (r, a)
    });
    let b_result = sqlx::query("SELECT 1 FROM duty WHERE doctor = 1 FOR UPDATE")
        .execute(&mut b)
        .await;
    if b_result.is_ok() {
        sqlx::query("ROLLBACK")
            .execute(&mut b)
            .await
            .expect("end b");
    }
    let (a_result, _a) = crossing.await.expect("join");
    let e = match (a_result, b_result) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("exactly one side must be chosen as the deadlock victim: {other:?}"),
    };
    assert_eq!(sqlstate(&e), "40P01", "{e}");
    let (status, retry_after, body) = answer_to(e).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"], "unavailable");
}

/// A store with `quantity` of `sku`, and a transaction of the test's own holding the level
/// row locked (as a long ingest batch or import would).
async fn locked_level(app: &TestApp, location: &str, sku: &str, quantity: i64) -> PgConnection {
    app.store(location, 25.0, 121.5).await;
    app.stock(location, sku, quantity).await;
    let mut side = connect(&app.iso.database_url).await;
    sqlx::query("BEGIN")
        .execute(&mut side)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM stock_levels WHERE location_id = $1 AND sku = $2 FOR UPDATE")
        .bind(location)
        .bind(sku)
        .execute(&mut side)
        .await
        .expect("lock the level");
    side
}

fn hold(location: &str, sku: &str, quantity: i64) -> Value {
    json!({"location_id": location, "lines": [{"sku": sku, "quantity": quantity}]})
}

#[tokio::test]
async fn a_hold_stuck_behind_a_lock_answers_503_after_the_lock_timeout() {
    let app = spawn_with(Isolation::new().await, |c| {
        c.limits.db_lock_timeout_ms = 300;
    })
    .await;
    let _side = locked_level(&app, "LT1", "SKU-L", 5).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        app.send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("LT1", "SKU-L", 1),
        ),
    )
    .await
    .expect("the hold must not wait for the lock forever");
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert_eq!(answer.1["error"], "unavailable");
    assert_eq!(app.reserved("LT1", "SKU-L").await, 0);
}

#[tokio::test]
async fn a_request_past_the_http_timeout_answers_503() {
    let app = spawn_with(Isolation::new().await, |c| {
        c.limits.db_lock_timeout_ms = 0;
        c.limits.http_request_timeout_seconds = 1;
    })
    .await;
    let _side = locked_level(&app, "RT1", "SKU-R", 5).await;
    let started = Instant::now();
    let r = app
        .http
        .post(app.url("/v1/reservations"))
        .bearer_auth(RESERVE_KEY)
        .json(&hold("RT1", "SKU-R", 1))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer before the client gives up");
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A TCP relay to PostgreSQL that can be cut: then new connections are refused and open ones
/// are closed, as when the server is stopped.
struct Relay {
    port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn to(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = Arc::clone(&tasks);
        let target = target.to_owned();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().expect("lock").push(relay);
            }
        });
        tasks.lock().expect("lock").push(accept);
        Relay { port, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

#[tokio::test]
async fn a_hold_answers_503_within_a_second_when_postgres_is_unreachable() {
    let iso = Isolation::new().await;
    let options: sqlx::postgres::PgConnectOptions = iso.database_url.parse().expect("url");
    let relay = Relay::to(&format!("{}:{}", options.get_host(), options.get_port())).await;
    let via_relay = options.port(relay.port).to_url_lossy().to_string();
    let app = spawn_with(iso, |c| c.connections.database_url = via_relay).await;
    app.store("PG1", 25.0, 121.5).await;
    app.stock("PG1", "SKU-P", 5).await;
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("PG1", "SKU-P", 1),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    relay.cut();
    for attempt in 0..3 {
        let started = Instant::now();
        let (status, body) = app
            .send(
                Method::POST,
                "/v1/reservations",
                RESERVE_KEY,
                &hold("PG1", "SKU-P", 1),
            )
            .await;
        let elapsed = started.elapsed();
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert_eq!(body["error"], "unavailable");
        assert!(
            elapsed <= Duration::from_secs(1),
            "attempt {attempt}: a hold with PostgreSQL unreachable took {elapsed:?}"
        );
    }
    // Readiness says so with its own body (for load balancers), not an error body.
    let (status, body) = app.get("/readyz", "").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["postgres"], "down", "{body}");
}

#[tokio::test]
async fn stopping_is_bounded_even_with_a_client_that_never_finishes_its_request() {
    let mut app = spawn_with(Isolation::new().await, |c| {
        c.shutdown_grace_seconds = 1;
        c.limits.http_request_timeout_seconds = 600;
    })
    .await;
    // A request whose body never comes: its handler waits on it.
    let mut stuck = TcpStream::connect(app.addr).await.expect("connect");
    stuck
        .write_all(
            format!(
                "POST /v1/reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RESERVE_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"location_id\""
            )
            .as_bytes(),
        )
        .await
        .expect("send the head");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("the daemon must stop within its grace, stuck client or not");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "stopping took {elapsed:?}"
    );
    drop(stuck);
}

#[tokio::test]
async fn a_job_that_panics_is_restarted_and_readyz_names_it_while_it_is_down() {
    let trigger = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let (t, r) = (Arc::clone(&trigger), Arc::clone(&runs));
    let app = spawn_prepared(
        Isolation::new().await,
        |_| {},
        move |app| {
            let jobs = app.jobs();
            // Long enough for the test to see the job down between death and restart.
            jobs.set_first_backoff(Duration::from_secs(2));
            jobs.spawn("test-crasher", move |shutdown| {
                let run = r.fetch_add(1, Ordering::SeqCst);
                let trigger = Arc::clone(&t);
                async move {
                    if run == 0 {
                        trigger.notified().await;
                        panic!("the test job dies");
                    }
                    shutdown.cancelled().await;
                }
            });
        },
    )
    .await;
    let readyz = || async {
        let r = app
            .http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("JSON"))
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["jobs"], "up");

    trigger.notify_one();
    wait_until("readyz to report the dead job", || async {
        readyz().await.0 == 503
    })
    .await;
    let (_, body) = readyz().await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["jobs"], "down");
    assert_eq!(body["down_jobs"], json!(["test-crasher"]));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("omnistock_job_up{job=\"test-crasher\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("omnistock_job_up{job=\"ingest\"} 1"));

    wait_until("the job to be restarted", || async {
        readyz().await.0 == 200
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let metrics = app.metrics().await;
    assert!(metrics.contains("omnistock_job_up{job=\"test-crasher\"} 1"));
    assert!(
        metrics.contains("omnistock_job_restarts_total{job=\"test-crasher\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_probes_the_dependencies_at_most_about_once_a_second() {
    let app = spawn_app().await;
    let probes = || async {
        app.metric("omnistock_readiness_probes_total")
            .await
            .expect("the probe counter")
    };
    let before = probes().await;
    let started = Instant::now();
    let calls = (0..40).map(|_| async {
        let r = app
            .http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 200);
    });
    futures::future::join_all(calls).await;
    let burst = started.elapsed();
    let made = probes().await - before;
    // One probe per started second of the burst at most (it may straddle a boundary).
    let allowed = burst.as_secs_f64().ceil() + 1.0;
    assert!(
        made >= 1.0 && made <= allowed,
        "{made} probes for 40 calls in {burst:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = probes().await;
    assert_eq!(app.get("/readyz", "").await.0, 200);
    assert_eq!(probes().await - before, 1.0, "a stale probe is renewed");
}

#[tokio::test]
async fn a_hold_reads_the_safety_stock_under_the_level_lock() {
    let app = spawn_app().await;
    let mut side = locked_level(&app, "SS1", "SKU-S", 10).await;
    let hold_request = {
        let (http, url) = (app.http.clone(), app.url("/v1/reservations"));
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(RESERVE_KEY)
                .json(&hold("SS1", "SKU-S", 8))
                .send()
                .await
                .expect("hold");
            (r.status().as_u16(), r.json::<Value>().await.expect("JSON"))
        })
    };
    app.wait_for_a_lock_wait("the hold to wait for the level lock")
        .await;
    // While the hold waits, the store raises its safety stock: 10 - 5 leaves 5 to promise.
    app.put_location(
        "SS1",
        json!({"name": "Store SS1", "kind": "store", "lat": 25.0, "lon": 121.5,
               "pickup": true, "safety_stock": 5}),
    )
    .await;
    sqlx::query("COMMIT")
        .execute(&mut side)
        .await
        .expect("unlock");
    let (status, body) = hold_request.await.expect("join");
    assert_eq!(status, 409, "8 of 5 promisable units were held: {body}");
    assert_eq!(body["error"], "insufficient_stock");
    assert_eq!(app.reserved("SS1", "SKU-S").await, 0);
}

#[tokio::test]
async fn route_capacity_comes_from_postgres_not_from_a_stale_directory() {
    let app = spawn_app().await;
    app.put_location(
        "WH1",
        json!({"name": "WH1", "kind": "warehouse", "lat": 25.0, "lon": 121.5,
               "ship_from": true, "daily_order_capacity": 5}),
    )
    .await;
    app.stock("WH1", "SKU-C", 10).await;
    // Another daemon (or an import) closed the warehouse for today; this daemon has not
    // heard of it.
    sqlx::query("UPDATE locations SET daily_order_capacity = 0 WHERE location_id = 'WH1'")
        .execute(&app.pool)
        .await
        .expect("capacity 0");
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/orders/route",
            RESERVE_KEY,
            &json!({"order_id": "cap-1", "lines": [{"sku": "SKU-C", "quantity": 1}],
                    "fulfilment": "delivery", "customer": {"lat": 25.0, "lon": 121.5}}),
        )
        .await;
    assert_eq!(status, 409, "routed past a capacity of 0: {body}");
    assert_eq!(body["error"], "no_fulfilment_option");
    assert_eq!(app.reserved("WH1", "SKU-C").await, 0);
}

#[tokio::test]
async fn live_streams_are_capped_with_503_and_retry_after() {
    let app = spawn_with(Isolation::new().await, |c| c.limits.sse_max_connections = 1).await;
    let open = || {
        app.http
            .get(app.url("/v1/stream"))
            .bearer_auth(READ_KEY)
            .send()
    };
    let first = open().await.expect("first stream");
    assert_eq!(first.status(), 200);
    let second = open().await.expect("second stream");
    assert_eq!(second.status(), 503);
    assert_eq!(
        second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = second.json().await.expect("JSON");
    assert_eq!(body["error"], "unavailable");
    app.store("SSE1", 25.0, 121.5).await;
    drop(first);
    // The slot comes back once the server notices the client left (at its next write: a
    // keep-alive or a change), so poll.
    let mut again = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while again.is_none() {
        assert!(Instant::now() < deadline, "the slot never came back");
        app.stock("SSE1", "SKU-E", 1).await;
        let r = open().await.expect("stream");
        if r.status() == 200 {
            again = Some(r);
        }
    }
}

#[tokio::test]
async fn a_key_bound_to_a_location_sees_and_changes_only_its_holds() {
    const STORE_KEY: &str = "store-tw1-tablet";
    let app = spawn_with(Isolation::new().await, |c| {
        c.api_keys =
            format!("{ADMIN_KEY}=*,{RESERVE_KEY}=read|reserve,{STORE_KEY}=read|reserve@TW1")
                .parse()
                .expect("keys");
    })
    .await;
    app.store("TW1", 25.0, 121.5).await;
    app.store("TW2", 25.1, 121.6).await;
    app.stock("TW1", "SKU-A", 5).await;
    app.stock("TW2", "SKU-A", 5).await;
    let app_ref = &app;
    let create = |key: &'static str, id: &str, location: &str| {
        let body = json!({"reservation_id": id, "location_id": location,
                          "lines": [{"sku": "SKU-A", "quantity": 1}]});
        async move {
            app_ref
                .send(Method::POST, "/v1/reservations", key, &body)
                .await
        }
    };
    assert_eq!(create(RESERVE_KEY, "elsewhere", "TW2").await.0, 201);
    assert_eq!(create(STORE_KEY, "mine", "TW1").await.0, 201);

    let (status, body) = create(STORE_KEY, "not-mine", "TW2").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["details"]["location_id"], "TW1");

    assert_eq!(app.get("/v1/reservations/mine", STORE_KEY).await.0, 200);
    let (status, body) = app.get("/v1/reservations/elsewhere", STORE_KEY).await;
    assert_eq!(status, 404, "{body}");
    let unknown = app.get("/v1/reservations/no-such-hold", STORE_KEY).await;
    assert_eq!(unknown.0, 404);
    assert_eq!(
        body.to_string().replace("elsewhere", "no-such-hold"),
        unknown.1.to_string(),
        "another store's hold looks exactly like a missing one"
    );
    for (method, path) in [
        (Method::POST, "/v1/reservations/elsewhere/confirm"),
        (Method::DELETE, "/v1/reservations/elsewhere"),
    ] {
        let (status, body) = app.send(method, path, STORE_KEY, &json!({})).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (_, other) = app.get("/v1/reservations/elsewhere", RESERVE_KEY).await;
    assert_eq!(other["status"], "held", "untouched: {other}");
    assert_eq!(app.reserved("TW2", "SKU-A").await, 1);
    let (status, _) = app
        .send(
            Method::DELETE,
            "/v1/reservations/mine",
            STORE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn nats_credentials_never_appear_in_errors() {
    let mut c = Isolation::new().await.connections();
    // Nothing listens on port 1: the connection fails and the error is reported.
    c.nats_url = "nats://omni:n4ts-s3cret@127.0.0.1:1".into();
    let e = omnistock::app::connect_nats(&c)
        .await
        .expect_err("nothing listens there");
    let shown = format!("{e:#} {e:?}");
    assert!(!shown.contains("n4ts-s3cret"), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
}
