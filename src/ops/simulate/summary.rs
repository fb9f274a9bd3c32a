//! What a run did: counts per kind of request, latencies, errors, and the verdicts.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use serde::Serialize;

use super::audit::{AuditReport, Granted};
use crate::db::simulate::LevelSnapshot;

/// Outcome of one planned step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    Ok,
    /// Answered "no stock" (409): a sold-out flash sale or a route nobody can serve.
    Rejected,
    Error,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStats {
    pub planned: u64,
    pub sent: u64,
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            // Nearest rank.
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Latency {
            count: samples.len() as u64,
            p50_ms: round2(at(0.50)),
            p99_ms: round2(at(0.99)),
            max_ms: round2(at(1.0)),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Holds {
    pub answered_201: u64,
    pub answered_409: u64,
    pub confirmed: u64,
    pub released: u64,
    pub left_to_expire: u64,
    pub sold_with_reservation: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Movements {
    /// Movements in messages JetStream acknowledged.
    pub accepted: u64,
    /// Movements whose message JetStream did not acknowledge in time.
    pub not_accepted: u64,
    /// This run's movements found in the ledger after settling.
    pub in_ledger: u64,
}

/// The check after the run: `omnistock check`'s ledger query, then reconcile (no repair).
/// `clean` is about PostgreSQL (ledger, holds, transfers in transit); Redis differences are
/// counted beside it (reconcile repairs them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Check {
    pub clean: bool,
    pub ledger_mismatches: u64,
    pub reserved_mismatches: u64,
    pub in_transit_mismatches: u64,
    pub redis_unrepaired: u64,
    pub examples: Vec<String>,
}

/// Collected while the run goes on (short critical sections only).
#[derive(Default)]
pub struct Collector {
    inner: Mutex<Collected>,
}

#[derive(Default)]
pub struct Collected {
    pub kinds: BTreeMap<&'static str, KindStats>,
    pub latencies: BTreeMap<&'static str, Vec<f64>>,
    pub errors: BTreeMap<String, u64>,
    pub holds: Holds,
    pub movements: Movements,
    pub granted: Vec<Granted>,
}

impl Collector {
    pub fn with<R>(&self, f: impl FnOnce(&mut Collected) -> R) -> R {
        // A panic elsewhere cannot leave these counters half-written in a way that matters.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn latency(&self, op: &'static str, ms: f64) {
        self.with(|c| c.latencies.entry(op).or_default().push(ms));
    }

    pub fn error(&self, what: String) {
        self.with(|c| *c.errors.entry(what).or_default() += 1);
    }

    pub fn finish(&self, label: &'static str, r: StepResult) {
        self.with(|c| {
            let k = c.kinds.entry(label).or_default();
            k.sent += 1;
            match r {
                StepResult::Ok => k.ok += 1,
                StepResult::Rejected => k.rejected += 1,
                StepResult::Error => k.errors += 1,
            }
        });
    }

    pub fn take(&self) -> Collected {
        self.with(std::mem::take)
    }
}

/// What the audit needs besides the database: the state at the start and our 201s.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub start: Vec<LevelSnapshot>,
    pub start_movement_id: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub granted: Vec<Granted>,
    pub event_prefix: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub run: String,
    pub seed: u64,
    pub simulated: String,
    pub planned_steps: u64,
    pub not_started: u64,
    pub run_seconds: f64,
    pub requests_per_second: f64,
    pub flash_skus: Vec<String>,
    pub kinds: BTreeMap<&'static str, KindStats>,
    pub latency: BTreeMap<&'static str, Latency>,
    pub errors: BTreeMap<String, u64>,
    pub holds: Holds,
    pub movements: Movements,
    pub oversells: u64,
    pub audit: AuditReport,
    pub check: Check,
    pub passed: bool,
    #[serde(skip)]
    pub trace: Trace,
}

impl Summary {
    /// 0 oversells, check clean, and every accepted movement in the ledger exactly once.
    pub fn verdict(&self) -> bool {
        self.oversells == 0
            && self.check.clean
            && self.movements.in_ledger == self.movements.accepted
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "omnistock simulate: run {}, seed {}, simulated {} in {:.1} s ({:.0} requests/s; {} steps planned, {} not started)",
            self.run,
            self.seed,
            self.simulated,
            self.run_seconds,
            self.requests_per_second,
            self.planned_steps,
            self.not_started
        )?;
        writeln!(
            f,
            "{:<14} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
            "kind", "planned", "sent", "ok", "409", "errors", "per s"
        )?;
        for (k, s) in &self.kinds {
            writeln!(
                f,
                "{:<14} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8.1}",
                k, s.planned, s.sent, s.ok, s.rejected, s.errors, s.per_second
            )?;
        }
        writeln!(
            f,
            "{:<14} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms)", "count", "p50", "p99", "max"
        )?;
        for (k, l) in &self.latency {
            writeln!(
                f,
                "{:<14} {:>8} {:>8.1} {:>8.1} {:>8.1}",
                k, l.count, l.p50_ms, l.p99_ms, l.max_ms
            )?;
        }
        let h = &self.holds;
        writeln!(
            f,
            "holds:      {} answered 201, {} answered 409; {} confirmed, {} sold with their reservation, {} released, {} left to expire",
            h.answered_201, h.answered_409, h.confirmed, h.sold_with_reservation, h.released, h.left_to_expire
        )?;
        writeln!(
            f,
            "movements:  {} accepted by JetStream ({} not), {} of them in the ledger",
            self.movements.accepted, self.movements.not_accepted, self.movements.in_ledger
        )?;
        if self.errors.is_empty() {
            writeln!(f, "errors:     none")?;
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            writeln!(f, "errors:     {}", list.join(", "))?;
        }
        let a = &self.audit;
        writeln!(
            f,
            "oversells:  {} ({} levels judged by their holds, {} excused by fact decreases; {} phantom holds, {} oversold levels, {} over-reserved levels)",
            self.oversells,
            a.levels_judged,
            a.levels_with_fact_decreases,
            a.phantom_holds.len(),
            a.oversold_levels.len(),
            a.over_reserved.len()
        )?;
        for o in a.oversold_levels.iter().chain(&a.over_reserved).take(10) {
            writeln!(
                f,
                "            {} {:?}: {} held or sold, {} allowed",
                o.location_id, o.sku, o.granted, o.allowed
            )?;
        }
        let c = &self.check;
        writeln!(
            f,
            "check:      {} (levels against ledger {}, against holds {}, in transit {}; Redis entries differing {})",
            if c.clean { "clean" } else { "NOT CLEAN" },
            c.ledger_mismatches,
            c.reserved_mismatches,
            c.in_transit_mismatches,
            c.redis_unrepaired
        )?;
        for e in &c.examples {
            writeln!(f, "            {e}")?;
        }
        write!(
            f,
            "result:     {}",
            if self.passed { "PASS" } else { "FAIL" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(vec![]), Latency::default());
        assert_eq!(Latency::of(vec![3.0]).p99_ms, 3.0);
    }

    #[test]
    fn the_verdict_needs_no_oversell_a_clean_check_and_every_movement_once() {
        let mut s = Summary {
            check: Check {
                clean: true,
                ..Check::default()
            },
            ..Summary::default()
        };
        assert!(s.verdict());
        s.oversells = 1;
        assert!(!s.verdict());
        s.oversells = 0;
        s.movements.accepted = 2;
        s.movements.in_ledger = 1;
        assert!(!s.verdict());
        s.movements.in_ledger = 2;
        s.check.clean = false;
        assert!(!s.verdict());
    }
}
