//! The results JSON that scripts/bench.sh writes: every figure with the exact command that
//! measured it, and the machine it ran on.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub started_at: String,
    #[serde(default)]
    pub duration_s: f64,
    /// BENCH_QUICK=1: small data and short runs, to prove the harness, not to quote.
    #[serde(default)]
    pub quick: bool,
    /// A sentence printed at the top of the page (e.g. which code the run measured).
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub git: String,
    pub machine: Machine,
    pub figures: Vec<Figure>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    #[serde(default)]
    pub cpu: String,
    #[serde(default)]
    pub cores: u32,
    #[serde(default)]
    pub memory: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub postgres: String,
    #[serde(default)]
    pub redis: String,
    #[serde(default)]
    pub nats: String,
    /// How the services were configured (fsync, sync_interval, …).
    #[serde(default)]
    pub services: String,
    /// Other work on the machine during the run (load average at the start).
    #[serde(default)]
    pub load: String,
}

/// One measured figure. `value` is in `unit`; latencies, when the tool gives them, in ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured, e.g. `reads.single`, `ceiling.axum`.
    pub id: String,
    /// Data set: `demo`, `1m`, `10m`, `quick`, or `-` for the ceilings that need none.
    pub scale: String,
    pub value: f64,
    pub unit: String,
    #[serde(default)]
    pub p50_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Connections or clients of the load tool.
    #[serde(default)]
    pub connections: Option<u32>,
    /// Answers that were not 2xx, or other failures the tool counted.
    #[serde(default)]
    pub errors: Option<u64>,
    #[serde(default)]
    pub note: String,
    pub command: String,
}

impl Results {
    pub fn get(&self, id: &str, scale: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.id == id && f.scale == scale)
    }

    /// Scales in the order they were measured, without `-`.
    pub fn scales(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.figures {
            if f.scale != "-" && !out.contains(&f.scale) {
                out.push(f.scale.clone());
            }
        }
        out
    }

    /// The points of a curve (`id`, e.g. `curve.reads`, measured at several connection counts),
    /// by connections.
    pub fn curve(&self, id: &str, scale: &str) -> Vec<&Figure> {
        let mut v: Vec<&Figure> = self
            .figures
            .iter()
            .filter(|f| f.id == id && f.scale == scale && f.connections.is_some())
            .collect();
        v.sort_by_key(|f| f.connections);
        v
    }
}
