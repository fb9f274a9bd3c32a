//! The daemon under test as a real child process (`omnistock serve`), so it can be killed with
//! SIGKILL mid-work and started again on the same port, as an orchestrator would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::{tail, Serve};
use crate::servers::{free_port, Servers};

pub const ADMIN_KEY: &str = "faults-admin-key";
pub const RESERVE_KEY: &str = "faults-reserve-key";
/// Subject prefix of the private NATS (its own server: the contract's default is fine).
pub const PREFIX: &str = "inventory";

/// An HTTP answer: status, JSON body (Null if none) and how long it took.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub took: Duration,
}

/// Where a daemon's servers are.
pub struct Urls {
    pub database: String,
    pub redis: String,
    pub redis_prefix: String,
    pub nats: String,
}

pub struct Daemon {
    pub port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Serve>,
    pub http: reqwest::Client,
    /// How many times it was started.
    pub starts: u32,
}

impl Daemon {
    /// Configures (not starts) a daemon on the given servers. `ack_wait` bounds how long a
    /// movement held by a killed daemon waits to be redelivered.
    pub fn new(servers: &Servers, ack_wait_seconds: u64) -> Self {
        Daemon::on(
            &Urls {
                database: servers.database_url(),
                redis: servers.redis_url(),
                redis_prefix: "faults".to_owned(),
                nats: servers.nats_url(),
            },
            servers.dir().join("omnistock.log"),
            ack_wait_seconds,
        )
    }

    /// Configures a daemon on any servers (e.g. the shared PostgreSQL and Redis and a
    /// private NATS cluster), logging to `log`.
    pub fn on(urls: &Urls, log: PathBuf, ack_wait_seconds: u64) -> Self {
        let port = free_port();
        let env = [
            ("DATABASE_URL", urls.database.clone()),
            ("REDIS_URL", urls.redis.clone()),
            ("NATS_URL", urls.nats.clone()),
            ("OMNISTOCK_SUBJECT_PREFIX", PREFIX.to_owned()),
            ("OMNISTOCK_REDIS_PREFIX", urls.redis_prefix.clone()),
            ("OMNISTOCK_DB_MAX_CONNECTIONS", "10".to_owned()),
            ("OMNISTOCK_HTTP_ADDR", format!("127.0.0.1:{port}")),
            (
                "OMNISTOCK_API_KEYS",
                format!("{ADMIN_KEY}=*,{RESERVE_KEY}=read|reserve"),
            ),
            ("OMNISTOCK_RATE_LIMIT_PER_SECOND", "100000".to_owned()),
            ("OMNISTOCK_INGEST_BATCH", "500".to_owned()),
            (
                "OMNISTOCK_INGEST_ACK_WAIT_SECONDS",
                ack_wait_seconds.to_string(),
            ),
            ("OMNISTOCK_RECONCILE_INTERVAL_SECONDS", "0".to_owned()),
            ("OMNISTOCK_SHUTDOWN_GRACE_SECONDS", "5".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Daemon {
            port,
            env,
            log,
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("http client"),
            starts: 0,
        }
    }

    /// Sets (or replaces) one environment variable of the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts it and waits until `/readyz` answers 200.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the daemon already runs");
        let env = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        self.child = Some(Serve::start(env, self.port, &self.log).await);
        self.starts += 1;
    }

    /// kill -9: no drain, no goodbye.
    pub fn kill9(&mut self) {
        self.child.take();
    }

    /// Whether the process is still the one we started (it did not exit or crash).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(Serve::running)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Serve::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// One request; `Err` when the daemon did not answer at all (down, reset, timeout).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Result<Answer, reqwest::Error> {
        let started = Instant::now();
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            took: started.elapsed(),
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, RESERVE_KEY, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_tail()))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(reqwest::Method::POST, path, RESERVE_KEY, Some(body))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log_tail()))
    }

    /// A ship-from store with pickup (safety stock 0), for holds and routes.
    pub async fn store(&self, id: &str, lat: f64, lon: f64) {
        let body = serde_json::json!({"name": format!("Store {id}"), "kind": "store",
            "lat": lat, "lon": lon, "pickup": true, "ship_from": true});
        let a = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/locations/{id}"),
                ADMIN_KEY,
                Some(&body),
            )
            .await
            .expect("PUT location");
        assert!(
            a.status == 200 || a.status == 201,
            "PUT location {id}: {} {}",
            a.status,
            a.body
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- omnistock log ---\n{}", self.log_tail());
        }
        self.kill9();
    }
}
