//! Liveness, readiness and metrics: unauthenticated, for orchestrators and scrapers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::Mutex;

use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::db;
use crate::metrics;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz, metrics_text))]
pub struct Doc;

/// Liveness
///
/// No key. 200 while the process serves HTTP; for the orchestrator's liveness probe.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses(
        (status = 200, description = "Alive.", body = Alive),
    ),
    security(()),
)]
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// How long one probe of PostgreSQL and Redis answers `/readyz`: a load balancer polling
/// every instance often must not cost a pool connection per call.
pub const PROBE_TTL: Duration = Duration::from_secs(1);
/// A dependency slower than this to answer a probe counts as down; short enough for the
/// answer to come before any request deadline, so `/readyz` always answers with its own body.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, Copy)]
struct Probe {
    at: Instant,
    postgres: bool,
    redis: bool,
}

/// The last probe of the dependencies, shared by concurrent `/readyz` calls (one probes, the
/// others wait for its answer).
#[derive(Clone, Default)]
pub struct Readiness {
    last: Arc<Mutex<Option<Probe>>>,
}

impl Readiness {
    async fn probe(&self, state: &AppState) -> Probe {
        let mut last = self.last.lock().await;
        if let Some(p) = *last {
            if p.at.elapsed() < PROBE_TTL {
                return p;
            }
        }
        // Known down: no need to wait for a connection that cannot come.
        let db_up = state.deadlines.db.is_up();
        let pg = async {
            db_up
                && matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, db::ping(&state.pool)).await,
                    Ok(Ok(()))
                )
        };
        let redis = async {
            tokio::time::timeout(PROBE_TIMEOUT, state.cache.ping())
                .await
                .unwrap_or(false)
        };
        let (postgres, redis) = tokio::join!(pg, redis);
        metrics::METRICS.readiness_probes.inc();
        let p = Probe {
            at: Instant::now(),
            postgres,
            redis,
        };
        *last = Some(p);
        p
    }
}

#[derive(Serialize, ToSchema)]
struct Checks {
    postgres: &'static str,
    redis: &'static str,
    nats: &'static str,
    jobs: &'static str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Readiness)]
struct ReadinessBody {
    status: &'static str,
    checks: Checks,
    /// Background jobs that died and wait to be restarted.
    down_jobs: Vec<&'static str>,
}

/// Readiness
///
/// No key. Ready (200) when PostgreSQL and NATS answer and every background job runs. Redis
/// down is `degraded` but still 200 (reads fall back to PostgreSQL); PostgreSQL or NATS
/// down, or a background job dead (waiting to be restarted; `down_jobs` names it), is
/// `unavailable` with 503. PostgreSQL and Redis are probed at most about once a second; the
/// probe is shared by the calls within that second. For load balancers. The 503 body is
/// this object, not the error body.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready (`ready`) or ready without Redis (`degraded`).", body = ReadinessBody),
        (status = 503, description = "Not ready (`unavailable`).", body = ReadinessBody),
    ),
    security(()),
)]
// Ready when PostgreSQL and NATS answer and every background job runs. Redis down is
// reported as `degraded` but stays ready: reads fall back to PostgreSQL, and pulling every
// instance out of the load balancer because the cache is down would turn a slowdown into an
// outage.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut probe = state.readiness.probe(&state).await;
    // The watch knows of a lost server at once; the cached probe may be a second old.
    probe.postgres &= state.deadlines.db.is_up();
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let down_jobs = state.jobs.down();
    let up = |ok: bool| if ok { "up" } else { "down" };
    let ready = probe.postgres && nats && down_jobs.is_empty();
    let status = match (ready, probe.redis) {
        (true, true) => "ready",
        (true, false) => "degraded",
        _ => "unavailable",
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadinessBody {
        status,
        checks: Checks {
            postgres: up(probe.postgres),
            redis: up(probe.redis),
            nats: up(nats),
            jobs: up(down_jobs.is_empty()),
        },
        down_jobs,
    };
    (code, Json(body))
}

/// Prometheus metrics
///
/// No key. Counters and gauges in the Prometheus text format (version 0.0.4), for scrapers.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition.", body = String, content_type = "text/plain; version=0.0.4"),
    ),
    security(()),
)]
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    // Values this daemon holds rather than counts: set from it at each scrape.
    ::metrics::gauge!(metrics::CACHE_DIRTY_SKUS).set(state.cache.dirty_count() as f64);
    ::metrics::gauge!(metrics::LOCATIONS).set(state.directory.snapshot().len() as f64);
    state.jobs.publish();
    let text = metrics::render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}
