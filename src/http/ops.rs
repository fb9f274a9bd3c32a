//! `GET /v1/ops/summary`: sync health per location with traffic lights (see `crate::ops`).

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::AppState;
use crate::ops::{summary, OpsSummary, Sources};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/ops/summary", get(ops_summary))
}

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
