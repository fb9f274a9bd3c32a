//! `omnistock serve` as a child process: the one way the `api` and `faults` test binaries run the
//! real daemon (each includes this file with `#[path]`), for what only a process shows: its log,
//! its threads, SIGTERM and SIGKILL.

// Each binary uses part of it (faults never sends SIGTERM through it, api never asks `running`).
#![allow(dead_code)]

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `omnistock serve`. Dropping it kills it, so a failing test leaves no daemon behind.
pub struct Serve {
    child: Child,
}

/// The last 40 lines of a log, for a failure message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Serve {
    /// Starts `omnistock serve` with exactly `env` (plus PATH), its output appended to `log`, and
    /// waits until `/readyz` on `port` answers 200. A daemon that exits, or is not ready within
    /// 60 s, fails the test with the log's tail.
    pub async fn start<'a>(
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        port: u16,
        log: &Path,
    ) -> Serve {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_omnistock"))
            .arg("serve")
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("daemon log"))
            .stderr(out)
            .spawn()
            .expect("start omnistock serve");
        let mut serve = Serve { child };
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = http
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return serve;
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("omnistock exited at start ({status}):\n{}", tail(log));
            }
            assert!(
                Instant::now() < deadline,
                "omnistock not ready within 60 s:\n{}",
                tail(log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still the one started (it did not exit or crash).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// SIGTERM, as an orchestrator stops it, and its exit status within 30 s.
    pub async fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "omnistock did not stop within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    /// kill -9: no drain, no goodbye.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
