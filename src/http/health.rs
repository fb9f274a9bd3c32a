//! Liveness, readiness and metrics: unauthenticated, for orchestrators and scrapers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::db;
use crate::metrics;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when PostgreSQL and NATS answer. Redis down is reported as `degraded` but stays
/// ready: reads fall back to PostgreSQL, and pulling every instance out of the load balancer
/// because the cache is down would turn a slowdown into an outage.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (pg, redis) = tokio::join!(db::ping(&state.pool), state.cache.ping());
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let up = |ok: bool| if ok { "up" } else { "down" };
    let ready = pg.is_ok() && nats;
    let status = match (ready, redis) {
        (true, true) => "ready",
        (true, false) => "degraded",
        _ => "unavailable",
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": status,
            "checks": { "postgres": up(pg.is_ok()), "redis": up(redis), "nats": up(nats) }
        })),
    )
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let dirty = state.cache.dirty_count() as i64;
    let locations = state.directory.snapshot().len() as i64;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics::render(&[
            (
                "omnistock_cache_dirty_skus",
                "SKUs whose latest level has not reached Redis yet.",
                dirty,
            ),
            (
                "omnistock_locations",
                "Locations known to this daemon.",
                locations,
            ),
        ]),
    )
}
