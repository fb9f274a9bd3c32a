//! The real binary (`omnistock serve`) as a child process on the shared servers, for what only a
//! process shows: its log lines (JSON, as when not on a terminal), a panic turned into a 500,
//! the spans it exports over OTLP and its threads.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Isolation, ADMIN_KEY, READ_KEY};
use crate::serve::Serve;

pub struct Daemon {
    serve: Option<Serve>,
    pub port: u16,
    log: PathBuf,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

impl Daemon {
    /// Starts `omnistock serve` on `iso` with `extra` variables and waits until `/readyz` is 200.
    pub async fn start(iso: &Isolation, extra: &[(&str, String)]) -> Daemon {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "omnistock-process-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let base = [
            ("DATABASE_URL", iso.database_url.clone()),
            ("REDIS_URL", iso.redis_url.clone()),
            ("NATS_URL", env("NATS_URL")),
            ("OMNISTOCK_SUBJECT_PREFIX", iso.subject_prefix.clone()),
            ("OMNISTOCK_REDIS_PREFIX", iso.redis_prefix.clone()),
            ("OMNISTOCK_HTTP_ADDR", format!("127.0.0.1:{port}")),
            (
                "OMNISTOCK_API_KEYS",
                format!("{ADMIN_KEY}=*,{READ_KEY}=read"),
            ),
            ("OMNISTOCK_DB_MAX_CONNECTIONS", "5".to_owned()),
            ("OMNISTOCK_RECONCILE_INTERVAL_SECONDS", "0".to_owned()),
            ("OMNISTOCK_SHUTDOWN_GRACE_SECONDS", "5".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        let env = base.iter().chain(extra).map(|(k, v)| (*k, v.as_str()));
        let serve = Serve::start(env, port, &log).await;
        Daemon {
            serve: Some(serve),
            port,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines so far (a panic's own message, printed by Rust, is not JSON).
    pub fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The names of the process's threads (Linux truncates them to 15 bytes).
    pub fn thread_names(&self) -> Vec<String> {
        let pid = self.serve.as_ref().map_or(0, Serve::id);
        let tasks = format!("/proc/{pid}/task");
        std::fs::read_dir(tasks)
            .expect("the process's threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_owned())
            .collect()
    }

    /// SIGTERM, as an orchestrator stops it, its exit status and its whole log.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let serve = self.serve.take().expect("the daemon runs");
        let status = serve.terminate().await;
        (status, self.log_text())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.serve.take();
        let _ = std::fs::remove_file(&self.log);
    }
}
