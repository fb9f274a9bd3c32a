//! `/v1/reservations`: checkout holds. All lines or none; idempotent by `reservation_id`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ReservationIdPath};
use super::{validate, AppState};
use crate::domain::reservation::{self, Shortfall};
use crate::domain::routing::{merge_lines, OrderLine};
use crate::reservations::{self as holds, Confirmed, Created, NewHold, Released, ReservationView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reservations", post(create))
        .route("/v1/reservations/{id}", get(show).delete(release))
        .route("/v1/reservations/{id}/confirm", post(confirm))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    reservation_id: Option<String>,
    location_id: String,
    lines: Vec<OrderLine>,
    ttl_seconds: Option<i64>,
}

/// Checks order lines (shared with order routing) and merges repeated SKUs.
pub fn valid_lines(lines: &[OrderLine]) -> Result<Vec<OrderLine>, ApiError> {
    if lines.is_empty() || lines.len() > reservation::MAX_LINES {
        return Err(ApiError::Invalid {
            message: format!("`lines` must hold 1 to {} lines", reservation::MAX_LINES),
            details: json!({ "field": "lines" }),
        });
    }
    for (i, l) in lines.iter().enumerate() {
        validate::sku(&format!("lines[{i}].sku"), &l.sku)?;
        if !(1..=crate::domain::movement::MAX_QUANTITY).contains(&l.quantity) {
            return Err(ApiError::Invalid {
                message: "a line's quantity must be between 1 and 1000000000".into(),
                details: json!({ "field": format!("lines[{i}].quantity") }),
            });
        }
    }
    Ok(merge_lines(lines))
}

pub fn insufficient(short: Vec<Shortfall>) -> ApiError {
    ApiError::Conflict {
        code: "insufficient_stock",
        message: "not enough stock to hold every line; nothing was held".into(),
        details: json!({ "lines": short }),
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<ReservationView>), ApiError> {
    caller.require(Scope::Reserve)?;
    let id = req
        .reservation_id
        .unwrap_or_else(|| format!("res-{}", uuid::Uuid::new_v4().simple()));
    validate::client_id("reservation_id", &id)?;
    validate::location_id("location_id", &req.location_id)?;
    caller.require_location(&req.location_id)?;
    let lines = valid_lines(&req.lines)?;
    let expires_at =
        reservation::expires_at(Utc::now(), req.ttl_seconds).map_err(|m| ApiError::Invalid {
            message: m,
            details: json!({ "field": "ttl_seconds" }),
        })?;
    let hold = NewHold {
        reservation_id: &id,
        location_id: &req.location_id,
        lines: &lines,
        expires_at,
        order_id: None,
    };
    match holds::create(&state.pool, &state.cache, &hold).await? {
        Created::New(v) => Ok((StatusCode::CREATED, Json(v))),
        Created::Replay(v) => Ok((StatusCode::OK, Json(v))),
        Created::UnknownLocation => Err(ApiError::Invalid {
            message: format!("location {:?} is not registered", req.location_id),
            details: json!({ "field": "location_id" }),
        }),
        Created::Short(short) => Err(insufficient(short)),
    }
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ReservationIdPath(id): ReservationIdPath,
) -> Result<Json<ReservationView>, ApiError> {
    caller.require(Scope::Reserve)?;
    holds::view(&state.pool, &id)
        .await?
        .filter(|v| caller.covers(&v.location_id))
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("reservation {id:?}"))
}

/// A key bound to a location gets a 404 for a hold elsewhere, as for one that does not exist:
/// whether it exists is none of its business.
async fn require_visible(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    if caller.location_id().is_none() {
        return Ok(());
    }
    match crate::db::reservations::get(&state.pool, id).await? {
        Some(r) if caller.covers(&r.location_id) => Ok(()),
        _ => Err(not_found(id)),
    }
}

async fn confirm(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ReservationIdPath(id): ReservationIdPath,
) -> Result<Json<ReservationView>, ApiError> {
    caller.require(Scope::Reserve)?;
    require_visible(&state, &caller, &id).await?;
    match holds::confirm(&state.pool, &id).await? {
        Confirmed::Done(v) => Ok(Json(v)),
        Confirmed::NotFound => Err(not_found(&id)),
        Confirmed::NotLive(v) => Err(ApiError::Conflict {
            code: "reservation_not_held",
            message: format!("reservation is {}, nothing to confirm", v.status.as_str()),
            details: json!({ "status": v.status }),
        }),
    }
}

async fn release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ReservationIdPath(id): ReservationIdPath,
) -> Result<Json<ReservationView>, ApiError> {
    caller.require(Scope::Reserve)?;
    require_visible(&state, &caller, &id).await?;
    match holds::release(&state.pool, &state.cache, &id).await? {
        Released::Done(v) => Ok(Json(v)),
        Released::NotFound => Err(not_found(&id)),
    }
}
