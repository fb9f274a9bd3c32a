//! `POST /v1/orders/route`: where an online order ships from (or is picked up), with the stock
//! held before the answer is given. `?dry_run=true` answers without holding.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::{Alternative, ApiError, Details};
use super::extract::{ApiJson, ApiQuery};
use super::openapi as doc;
use super::reservations::valid_lines;
use super::{validate, AppState};
use crate::domain::routing::{Fulfilment, OrderLine};
use crate::holds::routing::{route_order, Customer, Order, RouteAnswer, RouteError, Routed};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/orders/route", post(route))
}

#[derive(OpenApi)]
#[openapi(paths(route))]
pub struct Doc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RouteBody {
    /// The idempotency key of the routing.
    order_id: String,
    lines: Vec<OrderLine>,
    fulfilment: Fulfilment,
    /// Where the customer (delivery address) is.
    customer: Customer,
    /// For `pickup` only (else 422); the store to pick up at (unknown is a 404).
    pickup_location_id: Option<String>,
    /// No location farther than this from the customer is used.
    max_distance_km: Option<f64>,
    /// A delivery may ship from several locations: the fewest shipments, then the least total
    /// distance. A line no eligible location holds whole is split in quantity across
    /// locations (each assignment's `lines` carry the quantity held there). A pickup never
    /// splits. Default false.
    allow_split: Option<bool>,
    /// How long the holds last before the order is confirmed (default 15 minutes).
    ttl_seconds: Option<i64>,
    /// The store whose staff placed the order ("endless aisle"), kept with the answer.
    placed_at_location_id: Option<String>,
    /// Route within this sales channel's pool.
    channel: Option<String>,
}

#[derive(Deserialize)]
struct RouteQuery {
    dry_run: Option<bool>,
}

/// Decide where an order ships from (or is picked up) and hold the stock
///
/// Scope: `reserve`. What the e-shop's order pipeline or a fulfilment system calls for an
/// online order, and a store tablet for an "endless aisle" order (a `delivery` with
/// `placed_at_location_id`). `delivery` considers locations that ship (`ship_from`
/// stores, warehouses, the e-shop): one location with every line wins, nearest first;
/// with `allow_split`, the fewest shipments then the least total distance. A line some
/// eligible location holds whole ships whole from one location; a line none holds whole
/// (e.g. 9 units, stores with 4 and 5 and a warehouse with 5) is split in quantity: each
/// assignment's `lines` carry the quantity held there, adding up to what was asked, and
/// the chosen locations' `reason` says how much each gives ("gives 4 of 9 TEE-RED-M, 2 of
/// 2 CAP-BLK"). The search is exact up to 3 shipments (see the README for its bounds) and
/// never worse than a greedy cover beyond. Without `allow_split` nothing is split.
/// `pickup` considers stores with `pickup` enabled, or only `pickup_location_id`
/// when given. `max_distance_km` and each location's `daily_order_capacity` are never
/// exceeded. Unless `dry_run=true`, the chosen stock is held (one reservation per
/// assignment, `ttl_seconds` default 900) before the answer returns; confirm or release
/// those holds with the reservation endpoints. Idempotent by `order_id`: the same id
/// again (also with `dry_run=true`) returns the first stored answer (with
/// `dry_run: false`) and takes no second hold. A 409 is not remembered.
/// An unknown `pickup_location_id` is a 404.
#[utoipa::path(
    post,
    path = "/v1/orders/route",
    tag = "orders",
    operation_id = "routeOrder",
    params(
        ("dry_run" = Option<bool>, Query, description = "`true`: decide without holding anything (what-if). Anything but `true`/`false` is a 400."),
    ),
    request_body(content = RouteBody, example = json!({"order_id": "web-100234", "fulfilment": "delivery", "allow_split": true, "customer": {"lat": 25.033, "lon": 121.5654}, "lines": [{"sku": "TEE-112-BLK-L", "quantity": 1}, {"sku": "GIFT CARD/500", "quantity": 1}]})),
    responses(
        (status = 200, description = "Routed (and held, unless a dry run), or the stored answer for this `order_id`.", body = RouteAnswer),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 409, description = "`no_fulfilment_option`: no location (or allowed set of locations) can serve every\nline now; nothing was held; `details` has the explanation and, for a pickup at a\ngiven location, alternatives. `contended`: concurrent orders kept taking the stock\n(10 attempts); `details` is null; retry.", body = super::error::ErrorBody),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("reserve"))),
)]
async fn route(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<RouteQuery>,
    ApiJson(body): ApiJson<RouteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Reserve)?;
    validate::client_id("order_id", &body.order_id)?;
    let c = &body.customer;
    if !(-90.0..=90.0).contains(&c.lat) || !(-180.0..=180.0).contains(&c.lon) {
        return Err(ApiError::field(
            "customer",
            "`customer` needs lat in [-90, 90] and lon in [-180, 180]",
        ));
    }
    if body
        .max_distance_km
        .is_some_and(|d| !(d > 0.0 && d.is_finite()))
    {
        return Err(ApiError::field(
            "max_distance_km",
            "`max_distance_km` must be a positive number",
        ));
    }
    if let Some(p) = &body.pickup_location_id {
        if body.fulfilment != Fulfilment::Pickup {
            return Err(ApiError::field(
                "pickup_location_id",
                "`pickup_location_id` is for `pickup` orders only",
            ));
        }
        validate::location_id("pickup_location_id", p)?;
        if !state
            .directory
            .covering(&state.pool, std::iter::once(p.as_str()))
            .await?
            .contains_key(p)
        {
            return Err(ApiError::NotFound(format!("location {p:?}")));
        }
    }
    if let Some(p) = &body.placed_at_location_id {
        validate::location_id("placed_at_location_id", p)?;
    }
    // A key bound to a store routes only the orders its store places (endless aisle).
    if let Some(own) = caller.location_id() {
        if body.placed_at_location_id.as_deref() != Some(own) {
            return Err(ApiError::OtherLocation(own.to_owned()));
        }
    }
    let channel = match body.channel.as_deref() {
        Some(c) => Some(super::channels::resolve(&state, Some(c)).await?.1.channel),
        None => None,
    };
    let order = Order {
        channel,
        lines: valid_lines(&body.lines)?,
        order_id: body.order_id,
        fulfilment: body.fulfilment,
        customer: body.customer,
        pickup_location_id: body.pickup_location_id,
        max_distance_km: body.max_distance_km,
        allow_split: body.allow_split.unwrap_or(false),
        ttl_seconds: body.ttl_seconds,
        placed_at_location_id: body.placed_at_location_id,
    };
    let dry_run = q.dry_run.unwrap_or(false);
    let routed = route_order(state.routes.clone(), order, dry_run);
    match routed.await {
        Ok(Routed::Done(v)) | Ok(Routed::Replay(v)) => Ok((StatusCode::OK, Json(v))),
        Ok(Routed::NoOption(outcome)) => Err(ApiError::Conflict {
            code: "no_fulfilment_option",
            message: "no location (or allowed set of locations) can serve every line now; nothing was held".into(),
            details: Details::NoOption {
                explanation: outcome.explanation,
                alternatives: outcome
                    .alternatives
                    .into_iter()
                    .map(|(location_id, distance_km)| Alternative {
                        location_id,
                        distance_km,
                    })
                    .collect(),
            },
        }),
        Err(RouteError::Invalid(m)) => Err(ApiError::field("ttl_seconds", &m)),
        Err(RouteError::Contended) => Err(ApiError::Conflict {
            code: "contended",
            message: RouteError::Contended.to_string(),
            details: Details::None,
        }),
        Err(RouteError::Db(e)) => Err(e.into()),
    }
}
