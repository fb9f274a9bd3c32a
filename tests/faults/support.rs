//! What the fault tests share besides the servers: publishing movements, reading the truth
//! from PostgreSQL, checking the invariants, a seeded random source, polling with a deadline.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use omnistock::config::Subjects;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::daemon::PREFIX;
use crate::servers::Servers;

/// A movement body.
pub fn movement(event_id: &str, location: &str, sku: &str, kind: &str, quantity: i64) -> Value {
    json!({
        "event_id": event_id,
        "location_id": location,
        "sku": sku,
        "kind": kind,
        "quantity": quantity,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "source": "faults",
    })
}

/// The test's side of NATS: publishes movements, looks at streams and the ingest consumer.
pub struct Bus {
    pub js: jetstream::Context,
    pub subjects: Subjects,
}

impl Bus {
    pub async fn connect(servers: &Servers) -> Self {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(servers.nats_url())
            .await
            .expect("connect to the private NATS");
        Bus::on(client)
    }

    pub fn on(client: async_nats::Client) -> Self {
        Bus {
            js: jetstream::new(client),
            subjects: Subjects::new(PREFIX),
        }
    }

    /// Publishes one message (an array of movements of one location) and waits until
    /// JetStream stored it; returns its stream sequence. Retries while NATS is away.
    pub async fn publish(&self, location: &str, movements: &[Value]) -> u64 {
        let body: bytes::Bytes = serde_json::to_vec(movements).expect("json").into();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = async {
                self.js
                    .publish(self.subjects.movements(location), body.clone())
                    .await?
                    .await
                    .map_err(anyhow::Error::from)
            };
            match tokio::time::timeout(Duration::from_secs(5), sent).await {
                Ok(Ok(ack)) => return ack.sequence,
                Ok(Err(e)) => assert!(Instant::now() < deadline, "publish failed: {e}"),
                Err(_) => assert!(Instant::now() < deadline, "publish timed out"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ingest consumer's (ack floor stream sequence, ack pending, pending).
    pub async fn consumer_state(&self) -> Option<(u64, usize, u64)> {
        let stream = self
            .js
            .get_stream(self.subjects.movements_stream())
            .await
            .ok()?;
        let mut c: jetstream::consumer::PullConsumer = stream
            .get_consumer(omnistock::ingest::CONSUMER)
            .await
            .ok()?;
        let info = c.info().await.ok()?;
        Some((
            info.ack_floor.stream_sequence,
            info.num_ack_pending,
            info.num_pending,
        ))
    }

    /// Every message of a stream: (subject, body, Nats-Msg-Id).
    pub async fn stream_messages(&self, name: &str) -> Vec<(String, Value, Option<String>)> {
        let mut stream = self.js.get_stream(name).await.expect("stream exists");
        let info = stream.info().await.expect("stream info");
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        for seq in first.max(1)..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((
                    m.subject.to_string(),
                    serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
                    m.headers.get("Nats-Msg-Id").map(|v| v.to_string()),
                ));
            }
        }
        out
    }
}

/// The test's side of PostgreSQL.
pub struct Truth {
    pub pool: PgPool,
}

/// One level as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Truth {
    pub async fn connect(servers: &Servers) -> Self {
        Truth::at(&servers.database_url()).await
    }

    pub async fn at(database_url: &str) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect(database_url)
            .await
            .expect("connect to PostgreSQL");
        Truth { pool }
    }

    pub async fn ledger_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM movements")
            .fetch_one(&self.pool)
            .await
            .expect("count movements")
    }

    /// How many times each event id is in the ledger.
    pub async fn ledger_ids(&self) -> HashMap<String, i64> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT event_id, count(*) FROM movements GROUP BY event_id")
                .fetch_all(&self.pool)
                .await
                .expect("ledger ids");
        rows.into_iter().collect()
    }

    pub async fn levels(&self) -> HashMap<(String, String), Level> {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT location_id, sku, on_hand, reserved FROM stock_levels")
                .fetch_all(&self.pool)
                .await
                .expect("levels");
        rows.into_iter()
            .map(|(l, s, on_hand, reserved)| ((l, s), Level { on_hand, reserved }))
            .collect()
    }

    /// Levels holding more than they have: a promise of stock that is not there.
    pub async fn oversold(&self) -> i64 {
        self.try_oversold().await.expect("oversold")
    }

    pub async fn try_oversold(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM stock_levels s JOIN locations l USING (location_id)
             WHERE s.reserved > s.on_hand - l.safety_stock AND s.reserved > 0",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Levels that disagree with their ledger, and with their live holds.
    pub async fn invariant_violations(&self) -> (usize, usize) {
        let ledger = omnistock::db::invariants::ledger_mismatches(&self.pool, 100)
            .await
            .expect("ledger invariant");
        let reserved = omnistock::db::invariants::reserved_mismatches(&self.pool, 100)
            .await
            .expect("reserved invariant");
        if !ledger.is_empty() || !reserved.is_empty() {
            eprintln!("invariant violations: ledger {ledger:?} reserved {reserved:?}");
        }
        (ledger.len(), reserved.len())
    }
}

/// What the test published and expects: every unique event once, and per level the sum.
#[derive(Default)]
pub struct Expected {
    pub events: HashSet<String>,
    pub on_hand: HashMap<(String, String), i64>,
}

impl Expected {
    /// Records a receipt (+) or sale (-) movement the first time its event id is seen.
    pub fn add(&mut self, m: &Value) {
        let id = m["event_id"].as_str().expect("event_id").to_owned();
        if !self.events.insert(id) {
            return;
        }
        let q = m["quantity"].as_i64().expect("quantity");
        let signed = match m["kind"].as_str() {
            Some("receipt") => q,
            Some("sale") => -q,
            other => panic!("the model knows receipts and sales, not {other:?}"),
        };
        let key = (
            m["location_id"].as_str().expect("location").to_owned(),
            m["sku"].as_str().expect("sku").to_owned(),
        );
        *self.on_hand.entry(key).or_default() += signed;
    }
}

/// The ledger held against what was published.
#[derive(Debug, Default)]
pub struct Tally {
    pub lost: usize,
    pub doubled: usize,
    pub unexpected: usize,
    pub level_mismatches: usize,
}

pub async fn tally(truth: &Truth, expected: &Expected) -> Tally {
    let ids = truth.ledger_ids().await;
    let levels = truth.levels().await;
    Tally {
        lost: expected
            .events
            .iter()
            .filter(|e| !ids.contains_key(*e))
            .count(),
        doubled: ids.values().map(|n| (n - 1).max(0) as usize).sum(),
        unexpected: ids.keys().filter(|e| !expected.events.contains(*e)).count(),
        level_mismatches: expected
            .on_hand
            .iter()
            .filter(|(k, want)| levels.get(*k).map(|l| l.on_hand) != Some(**want))
            .count(),
    }
}

/// Polls `cond` every 50 ms until it holds; `None` after `timeout`, else how long it took.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if cond().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small seeded generator (xorshift64*): a failing chaos run can be replayed with its seed.
pub struct Rng(u64);

impl Rng {
    /// From `OMNISTOCK_CHAOS_SEED` if set, else from the clock; prints the seed.
    pub fn seeded(test: &str) -> Self {
        let seed = std::env::var("OMNISTOCK_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (replay with OMNISTOCK_CHAOS_SEED={seed})");
        Rng(seed.max(1))
    }

    pub fn from_seed(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An environment number, or the default.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Collects every failed promise of a test, so one run reports them all (and the figures
/// printed before), then fails with the list.
#[derive(Default)]
pub struct Checks(Vec<String>);

impl Checks {
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    pub fn is_ok(&self) -> bool {
        self.0.is_empty()
    }

    pub fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} promise(s) broken:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// A top-level number whose name says it is an age (`age`, `age_seconds`, `cache_age_ms`...),
/// if the answer has one.
pub fn age_field(body: &Value) -> Option<(String, f64)> {
    let is_age = |k: &str| k == "age" || k.starts_with("age_") || k.contains("_age");
    body.as_object()?
        .iter()
        .find(|(k, v)| is_age(k) && v.is_number())
        .and_then(|(k, v)| Some((k.clone(), v.as_f64()?)))
}

/// Waits until the ledger holds `want` movements and the ingest consumer has nothing pending
/// or unacked; how long that took. `None` after `timeout`, or sooner once the consumer has
/// nothing left while the ledger stays short for 10 s (what is missing will never come).
pub async fn drained(truth: &Truth, bus: &Bus, want: usize, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while started.elapsed() < timeout {
        let idle = bus
            .consumer_state()
            .await
            .is_some_and(|(_, ack_pending, pending)| ack_pending == 0 && pending == 0);
        let count = truth.ledger_count().await as usize;
        if idle && count >= want {
            return Some(started.elapsed());
        }
        if idle {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                eprintln!("drained: the consumer is idle with {count} of {want} movements applied");
                return None;
            }
        } else {
            idle_since = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
