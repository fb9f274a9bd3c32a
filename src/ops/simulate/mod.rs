//! `omnistock simulate`: a retail day on the demo network against a running daemon.
//!
//! The day is planned up front from the catalogue and the seed ([`plan`], on the curves of
//! [`curve`]), compressed into the real run time and sent through the real interfaces
//! ([`driver`]); afterwards the run is audited against the database for oversells ([`audit`])
//! and checked with the same code as `omnistock check` and `omnistock reconcile`.

pub mod api;
pub mod audit;
pub mod curve;
pub mod driver;
pub mod plan;
pub mod rng;
pub mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;

use crate::app;
use crate::cache::RedisStore;
use crate::config::{Connections, Subjects};
use crate::db;
use crate::domain::location::LocationKind;

use self::plan::{Catalog, PlanConfig, Site};
use self::summary::{Check, Collector, KindStats, Latency, Summary, Trace};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The daemon's HTTP address.
    #[arg(long, env = "OMNISTOCK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// API key with the read and reserve scopes (the demo's admin key by default).
    #[arg(long, default_value = "demo-admin-key", hide_default_value = true)]
    pub api_key: String,
    /// Planned requests per real second, on average over the run (the curve shapes it).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Real seconds the simulated window is compressed into.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// First simulated hour (network clock: the e-shop's time zone) and how many hours.
    #[arg(long, default_value_t = 0)]
    pub start_hour: u32,
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Zipf exponent of SKU popularity: 0 uniform, 1 a classic long tail, 1.5 very hot heads.
    #[arg(long, default_value_t = 1.0)]
    pub skew: f64,
    /// The same seed plans the same requests (on the same catalogue).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// At most this many planned requests, whatever rate × duration says.
    #[arg(long, default_value_t = 200_000)]
    pub max_requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Flash sale: at this hour, this many one-unit holds on the e-shop's hottest SKUs.
    #[arg(long, default_value_t = 20)]
    pub flash_hour: u32,
    #[arg(long, default_value_t = 200)]
    pub flash_holds: usize,
    #[arg(long, default_value_t = 3)]
    pub flash_skus: usize,
    /// Seconds an abandoned hold is taken for (it then expires).
    #[arg(long, default_value_t = 5)]
    pub abandon_ttl: i64,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 10)]
    pub request_timeout: u64,
    /// Seconds to wait after the run for every accepted movement to reach the ledger.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout: u64,
    /// Print the summary as JSON (the progress bar still goes to stderr on a terminal).
    #[arg(long)]
    pub json: bool,
}

impl SimulateArgs {
    pub fn plan_config(&self) -> PlanConfig {
        let hours = self.hours.clamp(1, 24);
        let by_rate = (self.rate.max(0.0) * self.duration as f64).round() as usize;
        PlanConfig {
            seed: self.seed,
            requests: by_rate.min(self.max_requests),
            run_ms: self.duration.max(1) * 1000,
            start_minute: (self.start_hour % 24) * 60,
            sim_minutes: hours * 60,
            skew: self.skew,
            flash_minute: Some((self.flash_hour % 24) * 60),
            flash_holds: self.flash_holds.min(self.max_requests),
            flash_skus: self.flash_skus.max(1),
        }
    }
}

/// Reads the network as the plan needs it: sites with their zone shift, and every level.
pub async fn catalog(pool: &PgPool) -> anyhow::Result<(Catalog, Vec<db::simulate::LevelSnapshot>)> {
    let locations = db::locations::list(pool).await?;
    let offsets: std::collections::HashMap<String, i32> =
        db::simulate::utc_offsets(pool).await?.into_iter().collect();
    // The network's clock is the e-shop's (else the first location's).
    let home = locations
        .iter()
        .find(|l| l.kind == LocationKind::Online)
        .or(locations.first())
        .and_then(|l| offsets.get(&l.location_id).copied())
        .unwrap_or(0);
    let sites = locations
        .into_iter()
        .map(|l| Site {
            shift_minutes: offsets.get(&l.location_id).copied().unwrap_or(home) - home,
            location_id: l.location_id,
            kind: l.kind,
            lat: l.lat,
            lon: l.lon,
            pickup: l.pickup,
        })
        .collect();
    let levels = db::simulate::levels(pool).await?;
    let c = Catalog {
        sites,
        levels: levels
            .iter()
            .map(|l| (l.location_id.clone(), l.sku.clone(), l.on_hand))
            .collect(),
    };
    Ok((c, levels))
}

/// Plans and runs the day, then audits and checks it. The summary says whether it passed.
pub async fn run(connections: &Connections, args: &SimulateArgs) -> anyhow::Result<Summary> {
    let pool = app::connect_db(connections).await?;
    let store =
        RedisStore::new(&connections.redis_url, &connections.redis_prefix).context("REDIS_URL")?;
    let js = async_nats::jetstream::new(app::connect_nats(connections).await?);

    let (catalog, start) = catalog(&pool).await?;
    let cfg = args.plan_config();
    let plan = plan::generate(&catalog, &cfg).map_err(anyhow::Error::msg)?;
    let start_movement_id = db::simulate::last_movement_id(&pool).await?;
    let started_at = Utc::now();
    let tag = format!("sim-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let base_url = if args.http_addr.starts_with("http") {
        args.http_addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", args.http_addr)
    };
    let target = Arc::new(driver::Target {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(args.concurrency.max(1))
            .build()?,
        base_url,
        api_key: args.api_key.clone(),
        js,
        subjects: Subjects::new(&connections.subject_prefix),
        tag: tag.clone(),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        abandon_ttl_seconds: args.abandon_ttl.clamp(1, 3600),
    });

    let bar = ProgressBar::with_draw_target(
        Some(plan.steps.len() as u64),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let stats = Arc::new(Collector::default());
    let limits = driver::Limits {
        concurrency: args.concurrency,
        // A run that falls behind is cut, not stretched without end.
        dispatch_deadline: Duration::from_secs(args.duration.max(1) * 2 + 10),
        drain: Duration::from_secs(args.request_timeout.max(1) * 3 + 5),
    };
    let began = Instant::now();
    let not_started = driver::run(target, &plan.steps, &limits, stats.clone(), &bar).await;
    let run_seconds = began.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let collected = stats.take();
    let in_ledger = settle(
        &pool,
        &format!("{tag}-"),
        collected.movements.accepted,
        Duration::from_secs(args.settle_timeout),
    )
    .await?;

    let trace = Trace {
        start,
        start_movement_id,
        started_at,
        granted: collected.granted,
        event_prefix: format!("{tag}-"),
    };
    let (audit, check) = verify(&pool, &store, &trace).await?;

    let mut kinds: std::collections::BTreeMap<&'static str, KindStats> = plan
        .counts()
        .into_iter()
        .map(|(k, n)| {
            (
                k,
                KindStats {
                    planned: n as u64,
                    ..KindStats::default()
                },
            )
        })
        .collect();
    for (k, s) in collected.kinds {
        let e = kinds.entry(k).or_default();
        e.sent = s.sent;
        e.ok = s.ok;
        e.rejected = s.rejected;
        e.errors = s.errors;
    }
    let mut sent = 0;
    for k in kinds.values_mut() {
        k.per_second = (k.sent as f64 / run_seconds.max(1e-9) * 10.0).round() / 10.0;
        sent += k.sent;
    }
    let mut movements = collected.movements;
    movements.in_ledger = in_ledger;
    let mut summary = Summary {
        run: tag,
        seed: args.seed,
        simulated: format!(
            "{:02}:00-{:02}:00",
            cfg.start_minute / 60,
            (cfg.start_minute + cfg.sim_minutes) / 60
        ),
        planned_steps: plan.steps.len() as u64,
        not_started,
        run_seconds: (run_seconds * 10.0).round() / 10.0,
        requests_per_second: (sent as f64 / run_seconds.max(1e-9)).round(),
        flash_skus: plan.flash_skus,
        kinds,
        latency: collected
            .latencies
            .into_iter()
            .map(|(k, v)| (k, Latency::of(v)))
            .collect(),
        errors: collected.errors,
        holds: collected.holds,
        movements,
        oversells: audit.oversells,
        audit,
        check,
        passed: false,
        trace,
    };
    summary.passed = summary.verdict();
    Ok(summary)
}

/// Waits (bounded) until the ledger holds every movement of this run JetStream accepted;
/// returns how many it holds.
async fn settle(
    pool: &PgPool,
    prefix: &str,
    accepted: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = db::simulate::count_events_with_prefix(pool, prefix).await? as u64;
        if n >= accepted || Instant::now() >= deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The oversell audit and the check, from the database now and the run's trace.
pub async fn verify(
    pool: &PgPool,
    store: &RedisStore,
    trace: &Trace,
) -> anyhow::Result<(audit::AuditReport, Check)> {
    let effects = db::simulate::effects_since(pool, trace.start_movement_id).await?;
    let ids: Vec<String> = trace
        .granted
        .iter()
        .map(|g| g.reservation_id.clone())
        .collect();
    let stored = db::simulate::hold_lines(pool, &ids).await?;
    let older = db::simulate::held_by_holds_before(pool, trace.started_at).await?;
    let over = db::simulate::over_reserved(pool).await?;
    let report = audit::audit(&audit::Inputs {
        start: &trace.start,
        effects: &effects,
        granted: &trace.granted,
        stored: &stored,
        older_held: &older,
        over_reserved_now: &over,
    });

    // `omnistock check` first (the same query), then reconcile without repairing anything.
    let ledger = db::invariants::ledger_mismatches(pool, 20).await?;
    let rec = crate::ops::reconcile::run(pool, store, false).await?;
    let mut examples: Vec<String> = ledger
        .iter()
        .take(5)
        .map(|m| {
            format!(
                "{} {:?}: on_hand {} but the ledger implies {}",
                m.location_id, m.sku, m.on_hand, m.implied
            )
        })
        .collect();
    examples.extend(rec.reserved.examples.iter().take(5).map(|m| {
        format!(
            "{} {:?}: reserved {} but live holds hold {}",
            m.location_id, m.sku, m.reserved, m.held
        )
    }));
    let check = Check {
        // Redis is reported, not judged: the truth is PostgreSQL, and reconcile repairs Redis.
        clean: ledger.is_empty() && rec.postgres_consistent(),
        ledger_mismatches: (ledger.len() as u64).max(rec.ledger.count),
        reserved_mismatches: rec.reserved.count,
        in_transit_mismatches: rec.in_transit.count,
        redis_unrepaired: rec.redis_unrepaired(),
        examples,
    };
    Ok((report, check))
}
