//! The test harness: every test gets its own daemon on a random port, its own database, its own
//! NATS subject prefix (so its own streams) and its own Redis key prefix, on the real servers
//! started by `scripts/services.sh` (their URLs come from the environment).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use omnistock::app::Application;
use omnistock::config::{Connections, ServeConfig, Subjects};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "test-admin-key";
pub const READ_KEY: &str = "test-read-key";
pub const RESERVE_KEY: &str = "test-reserve-key";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test` (scripts/test.sh), which starts the servers")
    })
}

/// Names that isolate one test from every other.
#[derive(Clone)]
pub struct Isolation {
    pub database_url: String,
    pub redis_url: String,
    pub subject_prefix: String,
    pub redis_prefix: String,
}

impl Isolation {
    /// A fresh database (migrated by the daemon on start) and fresh prefixes.
    pub async fn new() -> Self {
        let base = env("DATABASE_URL");
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let options: PgConnectOptions = base.parse().expect("DATABASE_URL");
        let mut admin = options.connect().await.expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let database_url = options.database(&name).to_url_lossy().to_string();
        let tag = &name[2..14];
        Isolation {
            database_url,
            redis_url: env("REDIS_URL"),
            subject_prefix: format!("t{tag}.inventory"),
            redis_prefix: format!("t{tag}"),
        }
    }

    pub fn connections(&self) -> Connections {
        Connections {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            nats_url: env("NATS_URL"),
            subject_prefix: self.subject_prefix.clone(),
            redis_prefix: self.redis_prefix.clone(),
            db_max_connections: 10,
            db_acquire_timeout_ms: omnistock::config::DEFAULT_DB_ACQUIRE_TIMEOUT_MS,
            nats_auth: Default::default(),
        }
    }

    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            connections: self.connections(),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            api_keys: format!("{ADMIN_KEY}=*,{READ_KEY}=read,{RESERVE_KEY}=read|reserve")
                .parse()
                .expect("keys"),
            rate_limit_per_second: 10_000,
            stream_replicas: 1,
            migrate_on_start: true,
            ingest_batch: 500,
            ingest_ack_wait_seconds: 10,
            ingest_max_deliver: 200,
            ingest_shards: 4,
            cache_rebuild_on_start: true,
            shutdown_grace_seconds: 10,
            reconcile_interval_seconds: 0,
            low_stock_threshold: 2,
            limits: Default::default(),
            stream_secret: None,
            ops: Default::default(),
            cors_allow_origins: Default::default(),
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub iso: Isolation,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Isolation::new().await, |_| {}).await
}

/// Spawns a daemon with the given isolation (several daemons may share one) and config tweaks.
pub async fn spawn_with(iso: Isolation, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_prepared(iso, tweak, |_| {}).await
}

/// [`spawn_with`], with a last touch to the built daemon before it runs (e.g. an extra job).
pub async fn spawn_prepared(
    iso: Isolation,
    tweak: impl FnOnce(&mut ServeConfig),
    prepare: impl FnOnce(&mut Application),
) -> TestApp {
    omnistock::telemetry::init();
    let mut config = iso.config();
    tweak(&mut config);
    let mut app = Application::build(config).await.expect("build app");
    prepare(&mut app);
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let pool = PgPool::connect(&iso.database_url).await.expect("test pool");
    let nats = async_nats::connect(env("NATS_URL")).await.expect("nats");
    TestApp {
        addr,
        pool,
        js: jetstream::new(nats),
        subjects: Subjects::new(&iso.subject_prefix),
        iso,
        http: reqwest::Client::new(),
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the daemon the way SIGTERM would and waits for it to drain.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("daemon ended cleanly");
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: &Value,
    ) -> (u16, Value) {
        send(&self.http, method, self.url(path), key, body).await
    }

    /// `send` in a task of its own, to answer while the test goes on.
    pub fn spawn_send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &'static str,
        body: Value,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let (http, url) = (self.http.clone(), self.url(path));
        tokio::spawn(async move { send(&http, method, url, key, &body).await })
    }

    /// Makes the database refuse a row inserted into `table` whose `column` is `value`, as
    /// a broken request would be: it fails its group's transaction.
    pub async fn refuse_on_insert(&self, table: &str, column: &str, value: &str) {
        let name = format!("refuse_{table}");
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.{column} = '{value}' THEN RAISE EXCEPTION 'refused {value}'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER {name} BEFORE INSERT ON {table}
                 FOR EACH ROW EXECUTE FUNCTION {name}();"
        ))
        .execute(&self.pool)
        .await
        .expect("trigger");
    }

    /// Holds a level's row lock from outside the daemon until the transaction ends, so that
    /// what the daemon is sent meanwhile queues behind it.
    pub async fn block_level(
        &self,
        location: &str,
        sku: &str,
    ) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut tx = self.pool.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM stock_levels WHERE location_id = $1 AND sku = $2 FOR UPDATE")
            .bind(location)
            .bind(sku)
            .execute(&mut *tx)
            .await
            .expect("lock level");
        tx
    }

    /// The daemon's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one unlabelled metric, if the daemon reports it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub async fn put_location(&self, id: &str, body: Value) {
        let (status, resp) = self
            .send(
                reqwest::Method::PUT,
                &format!("/v1/locations/{id}"),
                ADMIN_KEY,
                &body,
            )
            .await;
        assert!(
            status == 201 || status == 200,
            "PUT location {id}: {status} {resp}"
        );
    }

    /// A store at the given coordinates (safety stock 0, pickup, no shipping).
    pub async fn store(&self, id: &str, lat: f64, lon: f64) {
        self.put_location(
            id,
            json!({"name": format!("Store {id}"), "kind": "store", "lat": lat, "lon": lon, "pickup": true}),
        )
        .await;
    }

    /// Publishes raw bytes on a subject and waits for JetStream to store them.
    pub async fn publish_raw(&self, subject: &str, body: impl Into<bytes::Bytes>) {
        self.js
            .publish(subject.to_owned(), body.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// Publishes a movement body (object or array) for a location.
    pub async fn publish(&self, location: &str, body: &Value) {
        self.publish_raw(
            &self.subjects.movements(location),
            serde_json::to_vec(body).expect("json"),
        )
        .await;
    }

    /// Publishes with an explicit `Nats-Msg-Id` (JetStream's own dedupe key).
    pub async fn publish_with_msg_id(&self, location: &str, body: &Value, msg_id: &str) {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", msg_id);
        self.js
            .publish_with_headers(
                self.subjects.movements(location),
                h,
                serde_json::to_vec(body).expect("json").into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    pub async fn ledger_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM movements")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    pub async fn on_hand(&self, location: &str, sku: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT on_hand FROM stock_levels WHERE location_id = $1 AND sku = $2")
            .bind(location)
            .bind(sku)
            .fetch_optional(&self.pool)
            .await
            .expect("on_hand")
    }

    /// Waits until the ledger holds `n` movements (or fails after 15 s).
    pub async fn wait_for_ledger(&self, n: i64) {
        wait_until(&format!("ledger to hold {n} movements"), || async {
            self.ledger_count().await >= n
        })
        .await;
        assert_eq!(self.ledger_count().await, n, "ledger overshot");
    }

    /// Every message of a stream so far, in order: (subject, JSON body, Nats-Msg-Id).
    pub async fn stream_messages(&self, name: &str) -> Vec<(String, Value, Option<String>)> {
        let mut stream = self.js.get_stream(name).await.expect("stream exists");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let id = m.headers.get("Nats-Msg-Id").map(|v| v.to_string());
                out.push((
                    m.subject.to_string(),
                    serde_json::from_slice(&m.payload).expect("JSON body"),
                    id,
                ));
            }
        }
        out
    }

    /// Every dead letter so far, in order.
    pub async fn deadletters(&self) -> Vec<(String, Value)> {
        self.stream_messages(&self.subjects.deadletter_stream())
            .await
            .into_iter()
            .map(|(s, v, _)| (s, v))
            .collect()
    }

    pub async fn wait_for_deadletters(&self, n: usize) -> Vec<(String, Value)> {
        wait_until(&format!("{n} dead letters"), || async {
            self.deadletters().await.len() >= n
        })
        .await;
        let d = self.deadletters().await;
        assert_eq!(d.len(), n, "more dead letters than expected: {d:?}");
        d
    }

    /// Waits until some session of this database waits for a lock: the transaction under test
    /// has reached the row another one holds.
    pub async fn wait_for_a_lock_wait(&self, what: &str) {
        wait_until(what, || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&self.pool)
            .await
            .expect("activity")
                > 0
        })
        .await;
    }

    /// The invariant: every level's on-hand equals what its ledger implies.
    pub async fn assert_ledger_consistent(&self) {
        let bad = omnistock::db::invariants::ledger_mismatches(&self.pool, 10)
            .await
            .expect("invariant query");
        assert!(bad.is_empty(), "levels disagree with the ledger: {bad:?}");
        let bad = omnistock::db::invariants::reserved_mismatches(&self.pool, 10)
            .await
            .expect("reserved invariant query");
        assert!(
            bad.is_empty(),
            "reserved disagrees with the live holds: {bad:?}"
        );
        // A slot may be left counted by a route that died (under-use), never the reverse.
        let exceeded: Vec<_> = omnistock::db::invariants::capacity_differences(&self.pool)
            .await
            .expect("capacity invariant query")
            .into_iter()
            .filter(|d| d.counted < d.assigned)
            .collect();
        assert!(
            exceeded.is_empty(),
            "more orders assigned than slots counted: {exceeded:?}"
        );
    }

    /// One reconciliation run, repairing Redis, as the daemon's periodic job does.
    pub async fn reconcile(&self) -> omnistock::ops::reconcile::Report {
        let store = omnistock::cache::RedisStore::new(&self.iso.redis_url, &self.iso.redis_prefix)
            .expect("store");
        omnistock::ops::reconcile::run(&self.pool, &store, true)
            .await
            .expect("reconcile")
    }

    pub async fn reserved(&self, location: &str, sku: &str) -> i64 {
        sqlx::query_scalar("SELECT reserved FROM stock_levels WHERE location_id = $1 AND sku = $2")
            .bind(location)
            .bind(sku)
            .fetch_optional(&self.pool)
            .await
            .expect("reserved")
            .unwrap_or(0)
    }

    /// Receipts `quantity` of `sku` at `location` and waits until it is applied.
    pub async fn stock(&self, location: &str, sku: &str, quantity: i64) {
        let before = self.ledger_count().await;
        let id = format!("stock-{}", uuid::Uuid::new_v4().simple());
        self.publish(location, &movement(&id, location, sku, "receipt", quantity))
            .await;
        self.wait_for_ledger(before + 1).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Polls `cond` until it holds; fails the test after 15 seconds. (A correctness deadline, not
/// a speed assertion: speed is measured by benches and the load tool.)
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A movement body with sensible defaults.
pub fn movement(event_id: &str, location: &str, sku: &str, kind: &str, quantity: i64) -> Value {
    json!({
        "event_id": event_id,
        "location_id": location,
        "sku": sku,
        "kind": kind,
        "quantity": quantity,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "source": "test",
    })
}

pub fn movement_at(
    event_id: &str,
    location: &str,
    sku: &str,
    kind: &str,
    quantity: i64,
    at: &str,
) -> Value {
    let mut m = movement(event_id, location, sku, kind, quantity);
    m["occurred_at"] = json!(at);
    m
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let r = http
        .request(method, url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
