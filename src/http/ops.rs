//! `GET /v1/ops/summary`: sync health per location with traffic lights (see `crate::ops`).

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};

use utoipa::OpenApi;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::AppState;
use crate::ops::summary::{summary, OpsSummary, Sources};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/ops/summary", get(ops_summary))
}

#[derive(OpenApi)]
#[openapi(paths(ops_summary))]
pub struct Doc;

/// Sync health per location, with traffic lights
///
/// Scope: `read`. Per location: sync delay (seconds since its newest movement occurred),
/// publish-to-commit delay (median of `recorded_at - published_at` over its 100 newest
/// movements that have a `published_at`: the JetStream message's publish time, or when
/// their `POST /v1/movements` came in; not `occurred_at`, so a movement that happened hours
/// ago but was published now counts as the seconds it waited since its publish; imports
/// have no publish time and are not counted; null with no published movement yet, whose
/// light is then `green`: nothing waited), dead letters of the last hour (counted on the
/// dead-letter JetStream stream, up to 10,000), SKUs out of stock (available 0), holds held
/// and expiring within `OMNISTOCK_OPS_HOLDS_EXPIRING_SECONDS`; for the network, the ingest
/// consumer's backlog (`num_pending`). Each measure has a light (`green`, `amber`, `red`, or
/// `unknown` when it could not be taken) against the thresholds from the configuration
/// (`OMNISTOCK_OPS_*`), which are returned too. A NATS read that fails or takes over 2 s is
/// null/`unknown`; the summary is still answered.
#[utoipa::path(
    get,
    path = "/v1/ops/summary",
    tag = "ops",
    operation_id = "opsSummary",
    responses(
        (status = 200, description = "The summary.", body = OpsSummary),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn ops_summary(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<OpsSummary>, ApiError> {
    caller.require(Scope::Read)?;
    let s = summary(Sources {
        pool: &state.pool,
        directory: &state.directory,
        js: async_nats::jetstream::new(state.nats.clone()),
        subjects: &state.subjects,
        thresholds: state.ops,
    })
    .await?;
    Ok(Json(s))
}
