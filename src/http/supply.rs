//! `/v1/supply`: expected receipts (purchase orders, production, inbound) and transfers in
//! transit, which preorders may hold against and `at=` reads count.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{validate, AppState};
use crate::domain::supply as rules;
use crate::supply::{self, Cancel, Cancelled, NewSupply, SupplyView, Upserted};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/supply", post(upsert).get(list))
        .route("/v1/supply/{id}", get(show).delete(cancel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SupplyRequest {
    supply_id: String,
    location_id: String,
    sku: String,
    quantity: i64,
    expected_at: DateTime<Utc>,
}

async fn upsert(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<SupplyRequest>,
) -> Result<(StatusCode, Json<SupplyView>), ApiError> {
    caller.require(Scope::Admin)?;
    validate::client_id("supply_id", &req.supply_id)?;
    validate::location_id("location_id", &req.location_id)?;
    validate::sku("sku", &req.sku)?;
    rules::validate(&req.supply_id, req.quantity, req.expected_at, Utc::now())
        .map_err(|e| ApiError::field(e.field, e.message))?;
    let s = NewSupply {
        supply_id: &req.supply_id,
        location_id: &req.location_id,
        sku: &req.sku,
        quantity: req.quantity,
        expected_at: req.expected_at,
    };
    match supply::upsert(&state.pool, &s).await? {
        Upserted::Created(v) => Ok((StatusCode::CREATED, Json(v))),
        Upserted::Replaced(v) => Ok((StatusCode::OK, Json(v))),
        Upserted::UnknownLocation => Err(ApiError::field(
            "location_id",
            format!("location {:?} is not registered", req.location_id),
        )),
        Upserted::BelowPreorders {
            remaining,
            allocated,
        } => Err(ApiError::Conflict {
            code: "supply_preordered",
            message: format!(
                "preorders hold {allocated} on this line; the new quantity leaves {remaining}"
            ),
            details: json!({ "field": "quantity", "remaining": remaining, "preordered": allocated }),
        }),
        Upserted::Moved { allocated } => Err(ApiError::Conflict {
            code: "supply_preordered",
            message: format!(
                "preorders hold {allocated} on this line: it cannot move to another location or SKU"
            ),
            details: json!({ "field": "location_id", "preordered": allocated }),
        }),
        Upserted::Transfer => Err(transfer_line()),
    }
}

fn transfer_line() -> ApiError {
    ApiError::Conflict {
        code: "transfer_supply",
        message: "a transfer in transit is kept by its movements".into(),
        details: json!({ "field": "supply_id" }),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    sku: Option<String>,
    location_id: Option<String>,
}

#[derive(Serialize)]
struct SupplyList {
    supply: Vec<SupplyView>,
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<SupplyList>, ApiError> {
    caller.require(Scope::Read)?;
    if let Some(s) = &q.sku {
        validate::sku("sku", s)?;
    }
    if let Some(l) = &q.location_id {
        validate::location_id("location_id", l)?;
    }
    let supply = supply::list(&state.pool, q.sku.as_deref(), q.location_id.as_deref()).await?;
    Ok(Json(SupplyList { supply }))
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SupplyView>, ApiError> {
    caller.require(Scope::Read)?;
    supply::get(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("supply {id:?}")))
}

async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Cancelled>, ApiError> {
    caller.require(Scope::Admin)?;
    if id.is_empty() || id.contains('\0') {
        return Err(ApiError::field("id", "a supply id is printable text"));
    }
    match supply::cancel(&state.pool, &state.cache, &id).await? {
        Cancel::Done(c) => Ok(Json(*c)),
        Cancel::NotFound => Err(ApiError::NotFound(format!("supply {id:?}"))),
        Cancel::Transfer => Err(transfer_line()),
    }
}
