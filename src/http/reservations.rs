//! `/v1/reservations`: checkout holds. All lines or none; idempotent by `reservation_id`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, ReservationIdPath};
use super::{validate, AppState};
use crate::domain::reservation::{self, Shortfall, Status};
use crate::domain::reservation_page::{self as page, Cursor};
use crate::domain::routing::{merge_lines, OrderLine};
use crate::reservations::{
    self as holds, Confirmed, Created, Extended, ListFilter, NewHold, Released, ReservationView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reservations", post(create).get(list))
        .route(
            "/v1/reservations/{id}",
            get(show).patch(extend).delete(release),
        )
        .route("/v1/reservations/{id}/confirm", post(confirm))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    reservation_id: Option<String>,
    location_id: String,
    lines: Vec<OrderLine>,
    ttl_seconds: Option<i64>,
    /// Hold within this sales channel's pool.
    channel: Option<String>,
    /// Hold against open supply too (see `crate::supply`).
    #[serde(default)]
    preorder: bool,
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
    let channel = match req.channel.as_deref() {
        Some(c) => Some(super::channels::resolve(&state, Some(c)).await?.1.channel),
        None => None,
    };
    let hold = NewHold {
        reservation_id: &id,
        location_id: &req.location_id,
        lines: &lines,
        expires_at,
        order_id: None,
        channel: channel.as_deref(),
        preorder: req.preorder,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendRequest {
    ttl_seconds: Option<i64>,
}

/// A checkout that needs longer: the hold now expires `ttl_seconds` from now. Only a hold that
/// is still held and has not run out is extended; anything else is a 409 with its status.
async fn extend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ReservationIdPath(id): ReservationIdPath,
    ApiJson(req): ApiJson<ExtendRequest>,
) -> Result<Json<ReservationView>, ApiError> {
    caller.require(Scope::Reserve)?;
    let ttl = req
        .ttl_seconds
        .ok_or_else(|| "ttl_seconds is required".to_owned())
        .and_then(reservation::valid_ttl)
        .map_err(|m| ApiError::field("ttl_seconds", m))?;
    require_visible(&state, &caller, &id).await?;
    match holds::extend(&state.pool, &id, ttl).await? {
        Extended::Done(v) => Ok(Json(v)),
        Extended::NotFound => Err(not_found(&id)),
        Extended::NotHeld(v) => {
            // A lapsed hold the sweep has not reached yet is expired in all but name.
            let status = match v.status {
                Status::Held => Status::Expired,
                other => other,
            };
            Err(ApiError::Conflict {
                code: "reservation_not_held",
                message: format!("reservation is {}, nothing to extend", status.as_str()),
                details: json!({ "status": status }),
            })
        }
    }
}

/// Query of the listing. Everything arrives as text so that a bad value is a 422 naming its
/// field rather than a generic 400 from the decoder.
#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    location_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct ListResponse {
    reservations: Vec<ReservationView>,
    next_cursor: Option<String>,
}

/// Reservations for operations, newest first, one keyset page at a time. A key bound to a
/// location lists only that location's.
async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListResponse>, ApiError> {
    caller.require(Scope::Reserve)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::field(
                    "status",
                    "`status` must be held, confirmed, fulfilled, released or expired",
                )
            })
        })
        .transpose()?;
    if let Some(loc) = q.location_id.as_deref() {
        validate::location_id("location_id", loc)?;
        caller.require_location(loc)?;
    }
    let location_id = q.location_id.as_deref().or(caller.location_id());
    let limit = page::limit(q.limit.as_deref()).ok_or_else(|| {
        ApiError::field(
            "limit",
            format!("`limit` must be between 1 and {}", page::MAX_LIMIT),
        )
    })?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| {
                ApiError::field("cursor", "`cursor` must be a next_cursor from a listing")
            })
        })
        .transpose()?;
    let filter = ListFilter {
        status,
        location_id,
        sku: None,
        order_id: None,
        after: after.as_ref(),
        limit,
    };
    let (reservations, next) = holds::list(&state.pool, &filter).await?;
    Ok(Json(ListResponse {
        reservations,
        next_cursor: next.map(|c| c.encode()),
    }))
}
