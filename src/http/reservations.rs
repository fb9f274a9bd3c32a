//! `/v1/reservations`: checkout holds. All lines or none; idempotent by `reservation_id`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::{ApiError, Details};
use super::extract::{ApiJson, ApiQuery, ReservationIdPath};
use super::openapi as doc;
use super::{validate, AppState};
use crate::domain::reservation::{self, Shortfall, Status};
use crate::domain::reservation_page::{self as page, Cursor};
use crate::domain::routing::{merge_lines, OrderLine};
use crate::holds::reservations::{
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

#[derive(OpenApi)]
#[openapi(paths(create, list, show, extend, release, confirm))]
pub struct Doc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// The idempotency key (e.g. the cart id); generated (`res-…`) when absent or null.
    reservation_id: Option<String>,
    /// Where to hold; must be a registered location (else 422).
    location_id: String,
    lines: Vec<OrderLine>,
    /// Seconds until the hold expires unless confirmed (default 900).
    ttl_seconds: Option<i64>,
    /// Hold within this channel's pool: each line takes no more than the channel's available
    /// at the location, checked under the level lock. A location the channel does not sell
    /// from has 0 for it (409 `insufficient_stock` with `available` 0). Unknown: 404.
    channel: Option<String>,
    /// Hold against open supply at the location too: each line takes the unpromised remaining
    /// of open supply lines (earliest expected first), then stock available now (an ordinary
    /// hold), never more than both together, under any concurrency; beyond, 409
    /// `insufficient_stock` whose `available` is what a preorder could get. With `channel`, no
    /// more than the channel's share of stock now plus free supply.
    #[serde(default)]
    preorder: bool,
}

/// Checks order lines (shared with order routing) and merges repeated SKUs.
pub fn valid_lines(lines: &[OrderLine]) -> Result<Vec<OrderLine>, ApiError> {
    if lines.is_empty() || lines.len() > reservation::MAX_LINES {
        return Err(ApiError::Invalid {
            message: format!("`lines` must hold 1 to {} lines", reservation::MAX_LINES),
            details: Details::field("lines"),
        });
    }
    for (i, l) in lines.iter().enumerate() {
        validate::sku(&format!("lines[{i}].sku"), &l.sku)?;
        if !(1..=crate::domain::movement::MAX_QUANTITY).contains(&l.quantity) {
            return Err(ApiError::Invalid {
                message: "a line's quantity must be between 1 and 1000000000".into(),
                details: Details::field(format!("lines[{i}].quantity")),
            });
        }
    }
    Ok(merge_lines(lines))
}

pub fn insufficient(short: Vec<Shortfall>) -> ApiError {
    ApiError::Conflict {
        code: "insufficient_stock",
        message: "not enough stock to hold every line; nothing was held".into(),
        details: Details::Shortfall { lines: short },
    }
}

/// Hold stock at one location (all lines or none)
///
/// Scope: `reserve`. What a checkout calls when the customer starts paying: every line is
/// held at `location_id`, or nothing is (409 `insufficient_stock` listing each short line).
/// Lines repeating a SKU are summed first. The hold expires after `ttl_seconds`
/// (default 900) unless confirmed. Idempotent by `reservation_id`: the same id again
/// answers 200 with that reservation as it is now, whatever the new body says (the body
/// is still validated first). Without `reservation_id` one is generated (`res-…`).
/// A location that is not registered is a 422 (field `location_id`).
#[utoipa::path(
    post,
    path = "/v1/reservations",
    tag = "reservations",
    operation_id = "createReservation",
    request_body(content = CreateRequest, example = json!({"reservation_id": "cart-8812", "location_id": "ESHOP", "ttl_seconds": 600, "lines": [{"sku": "TEE-112-BLK-L", "quantity": 1}]})),
    responses(
        (status = 200, description = "Replay: a reservation with this `reservation_id` exists; it is returned unchanged.", body = ReservationView),
        (status = 201, description = "Held.", body = ReservationView),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 409, description = "`insufficient_stock`: some line cannot be held; nothing was held.", body = super::error::ErrorBody),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
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
            details: Details::field("ttl_seconds"),
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
    match holds::create(&state.pool, &state.cache, &state.holds, &hold).await? {
        Created::New(v) => Ok((StatusCode::CREATED, Json(v))),
        Created::Replay(v) => Ok((StatusCode::OK, Json(v))),
        Created::UnknownLocation => Err(ApiError::Invalid {
            message: format!("location {:?} is not registered", req.location_id),
            details: Details::field("location_id"),
        }),
        Created::Short(short) => Err(insufficient(short)),
    }
}

/// A reservation and what it still holds
///
/// Scope: `reserve`. A checkout or fulfilment system checks whether a hold is still
/// `held` (or `confirmed`, `fulfilled`, `released`, `expired`) and how much of each line
/// is still held.
#[utoipa::path(
    get,
    path = "/v1/reservations/{id}",
    tag = "reservations",
    operation_id = "getReservation",
    params(
        ("id" = String, Path, description = doc::RESERVATIONIDPATH),
    ),
    responses(
        (status = 200, description = "The reservation.", body = ReservationView),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
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

/// The order is placed; the hold stops expiring
///
/// Scope: `reserve`. Called by the checkout once payment succeeded (or by a fulfilment
/// system accepting a routed order): status becomes `confirmed` and `expires_at` null;
/// the stock stays held until a `sale`/`transfer_out` movement carrying the
/// `reservation_id` consumes it, or a DELETE releases it. Confirming a confirmed
/// reservation answers 200 again. A reservation that is `released`, `expired` or
/// `fulfilled`, or still `held` but past its `expires_at` (not yet swept by the expiry
/// job), is a 409 `reservation_not_held`. No request body is read.
#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/confirm",
    tag = "reservations",
    operation_id = "confirmReservation",
    params(
        ("id" = String, Path, description = doc::RESERVATIONIDPATH),
    ),
    responses(
        (status = 200, description = "Confirmed.", body = ReservationView),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 409, description = "`reservation_not_held`: nothing to confirm; `details.status` is its status.", body = super::error::ErrorBody),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
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
            details: Details::Status { status: v.status },
        }),
    }
}

/// Release what is still held
///
/// Scope: `reserve`. The checkout was abandoned or the order cancelled: the stock still
/// held goes back to `available` and the status becomes `released`. Idempotent: a
/// reservation that is no longer live (`released`, `expired`, `fulfilled`) is left as it
/// is and returned with its status (200).
#[utoipa::path(
    delete,
    path = "/v1/reservations/{id}",
    tag = "reservations",
    operation_id = "releaseReservation",
    params(
        ("id" = String, Path, description = doc::RESERVATIONIDPATH),
    ),
    responses(
        (status = 200, description = "The reservation after the release.", body = ReservationView),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExtendRequest {
    ttl_seconds: Option<i64>,
}

/// Extend a hold
///
/// Scope: `reserve`. A checkout that takes longer than planned: a `held` reservation now
/// expires `ttl_seconds` (1-86400) from now, whether that is later or sooner than before.
/// Quantities do not change, so no change event is published. A reservation that is
/// `confirmed`, `released`, `expired` or `fulfilled`, or still `held` but past its
/// `expires_at` (not yet swept by the expiry job), is a 409 `reservation_not_held`: a
/// hold that has lapsed is never extended. Safe against the expiry job and confirm:
/// either the extension wins and the hold stays held, or the hold has expired and the
/// answer is 409. The same request again extends again from the new now.
#[utoipa::path(
    patch,
    path = "/v1/reservations/{id}",
    tag = "reservations",
    operation_id = "extendReservation",
    params(
        ("id" = String, Path, description = doc::RESERVATIONIDPATH),
    ),
    request_body(content = ExtendRequest, example = json!({"ttl_seconds": 600})),
    responses(
        (status = 200, description = "Extended; `expires_at` is the new deadline.", body = ReservationView),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 409, description = "`reservation_not_held`: nothing to extend; `details.status` is its status (`expired` for a lapsed hold).", body = super::error::ErrorBody),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
// A checkout that needs longer: the hold now expires `ttl_seconds` from now. Only a hold that
// is still held and has not run out is extended; anything else is a 409 with its status.
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
                details: Details::Status { status },
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
    sku: Option<String>,
    order_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ListResponse {
    reservations: Vec<ReservationView>,
    next_cursor: Option<String>,
}

/// Reservations for operations, newest first
///
/// Scope: `reserve`. Operations staff and tools look through holds: newest first, one
/// page at a time. Each item is the reservation as `GET /v1/reservations/{id}` returns
/// it. Pass `next_cursor` back as `cursor` for the next page; it is null on the last
/// page. Pages are keyset pages on (`created_at`, `reservation_id`): no item repeats or
/// is skipped across pages, and holds taken while paging show up on a new first page. A key bound to a
/// location lists only that location's holds; `location_id` naming another location is
/// a 403. `sku` keeps the reservations with a line of that SKU, `order_id` those an order's
/// route took. A bad `status`, `limit`, `cursor`, `location_id`, `sku` or `order_id` is a
/// 422 naming it.
#[utoipa::path(
    get,
    path = "/v1/reservations",
    tag = "reservations",
    operation_id = "listReservations",
    params(
        ("status" = Option<Status>, Query),
        ("location_id" = Option<String>, Query),
        ("sku" = Option<String>, Query, description = "Only reservations with a line of this SKU."),
        ("order_id" = Option<String>, Query, description = "Only the holds of this routed order."),
        ("limit" = Option<i64>, Query),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page; opaque."),
    ),
    responses(
        (status = 200, description = "One page.", body = ListResponse),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
// Reservations for operations, newest first, one keyset page at a time. A key bound to a
// location lists only that location's.
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
    if let Some(sku) = q.sku.as_deref() {
        validate::sku("sku", sku)?;
    }
    if let Some(order_id) = q.order_id.as_deref() {
        validate::client_id("order_id", order_id)?;
    }
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
        sku: q.sku.as_deref(),
        order_id: q.order_id.as_deref(),
        after: after.as_ref(),
        limit,
    };
    let (reservations, next) = holds::list(&state.pool, &filter).await?;
    Ok(Json(ListResponse {
        reservations,
        next_cursor: next.map(|c| c.encode()),
    }))
}
