//! `POST /v1/orders/route`: where an online order ships from (or is picked up), with the stock
//! held before the answer is given. `?dry_run=true` answers without holding.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::reservations::valid_lines;
use super::{validate, AppState};
use crate::domain::routing::{Fulfilment, OrderLine};
use crate::routing::{route_order, Customer, Order, RouteError, Routed};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/orders/route", post(route))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteBody {
    order_id: String,
    lines: Vec<OrderLine>,
    fulfilment: Fulfilment,
    customer: Customer,
    pickup_location_id: Option<String>,
    max_distance_km: Option<f64>,
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
    match route_order(&state.pool, &state.cache, &state.directory, &order, dry_run).await {
        Ok(Routed::Done(v)) | Ok(Routed::Replay(v)) => Ok((StatusCode::OK, Json(v))),
        Ok(Routed::NoOption(outcome)) => Err(ApiError::Conflict {
            code: "no_fulfilment_option",
            message: "no location (or allowed set of locations) can serve every line now; nothing was held".into(),
            details: json!({
                "explanation": outcome.explanation,
                "alternatives": outcome.alternatives.iter()
                    .map(|(id, d)| json!({ "location_id": id, "distance_km": d }))
                    .collect::<Vec<_>>(),
            }),
        }),
        Err(RouteError::Invalid(m)) => Err(ApiError::field("ttl_seconds", &m)),
        Err(RouteError::Contended) => Err(ApiError::Conflict {
            code: "contended",
            message: RouteError::Contended.to_string(),
            details: Value::Null,
        }),
        Err(RouteError::Db(e)) => Err(e.into()),
    }
}
