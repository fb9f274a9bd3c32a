//! `/v1/supply`: expected receipts (purchase orders, production, inbound) and transfers in
//! transit, which preorders may hold against and `at=` reads count.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::{ApiError, Details};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::openapi as doc;
use super::{validate, AppState};
use crate::domain::supply as rules;
use crate::supply::{self, Cancel, Cancelled, NewSupply, SupplyView, Upserted};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/supply", post(upsert).get(list))
        .route("/v1/supply/{id}", get(show).delete(cancel))
}

#[derive(OpenApi)]
#[openapi(paths(upsert, list, show, cancel))]
pub struct Doc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SupplyRequest {
    supply_id: String,
    location_id: String,
    sku: String,
    quantity: i64,
    expected_at: DateTime<Utc>,
}

/// Create or replace an expected receipt
///
/// Scope: `admin`. Stock expected at a location: a purchase order, production, an inbound
/// delivery. The same `supply_id` again replaces the line (200): what receipts brought so
/// far still counts (`remaining` = new `quantity` − `received`), and never below what
/// preorders hold on it (409 `supply_preordered`, field `quantity`); a line with
/// preorders cannot move to another location or SKU (409, field `location_id`).
/// 422 naming the field: `quantity` ≤ 0 or > 1,000,000,000, `expected_at` more than a day
/// in the past, an unregistered `location_id`, a `supply_id` starting with `transfer:`
/// (those are transfers in transit, kept by their movements).
#[utoipa::path(
    post,
    path = "/v1/supply",
    tag = "supply",
    operation_id = "upsertSupply",
    request_body(content = SupplyRequest, example = json!({"supply_id": "PO-2026-0042", "location_id": "WH1", "sku": "TEE-112-BLK-L", "quantity": 120, "expected_at": "2026-12-05T09:00:00+08:00"})),
    responses(
        (status = 200, description = "Replaced.", body = SupplyView),
        (status = 201, description = "Created.", body = SupplyView),
        (status = 409, description = "`supply_preordered` (preorders hold more than the new line leaves) or `transfer_supply`.", body = super::error::ErrorBody),
        (status = 422, response = doc::Invalid),
        (status = 400, response = doc::Malformed),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]
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
            details: Details::Preordered {
                field: "quantity",
                remaining: Some(remaining),
                preordered: allocated,
            },
        }),
        Upserted::Moved { allocated } => Err(ApiError::Conflict {
            code: "supply_preordered",
            message: format!(
                "preorders hold {allocated} on this line: it cannot move to another location or SKU"
            ),
            details: Details::Preordered {
                field: "location_id",
                remaining: None,
                preordered: allocated,
            },
        }),
        Upserted::Transfer => Err(transfer_line()),
    }
}

fn transfer_line() -> ApiError {
    ApiError::Conflict {
        code: "transfer_supply",
        message: "a transfer in transit is kept by its movements".into(),
        details: Details::field("supply_id"),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    sku: Option<String>,
    location_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SupplyList {
    supply: Vec<SupplyView>,
}

/// Open supply lines
///
/// Scope: `read`. Open lines (at most 1,000), by SKU, location and expected arrival, with
/// `remaining` and what preorders hold on it (`preordered`). Transfers in transit to a
/// registered destination are listed as `transfer:<transfer_id>:<sku>` with source
/// `transfer` and the `expected_at` its transfer_out gave (null when it gave none).
#[utoipa::path(
    get,
    path = "/v1/supply",
    tag = "supply",
    operation_id = "listSupply",
    params(
        ("sku" = Option<String>, Query),
        ("location_id" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "The open lines.", body = SupplyList),
        (status = 422, response = doc::Invalid),
        (status = 400, response = doc::Malformed),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
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

/// One supply line, whatever its status
///
/// Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/supply/{id}",
    tag = "supply",
    operation_id = "getSupply",
    params(
        ("id" = String, Path, description = "The supply id."),
    ),
    responses(
        (status = 200, description = "The line.", body = SupplyView),
        (status = 404, response = doc::NotFound),
        (status = 400, response = doc::Malformed),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
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

/// Cancel what remains of a line
///
/// Scope: `admin`. The line becomes `cancelled`. Preorders holding on it, oldest first,
/// move whole to other open lines of the same location and SKU (earliest expected first)
/// or to stock available now; one that does not fit is released (the reservation as a
/// whole), so no preorder is left waiting on nothing. The answer lists both. Cancelling a
/// line that is not open changes nothing. A transfer in transit cannot be cancelled (409
/// `transfer_supply`).
#[utoipa::path(
    delete,
    path = "/v1/supply/{id}",
    tag = "supply",
    operation_id = "cancelSupply",
    params(
        ("id" = String, Path, description = "The supply id."),
    ),
    responses(
        (status = 200, description = "Cancelled.", body = Cancelled),
        (status = 404, response = doc::NotFound),
        (status = 409, description = "`transfer_supply`.", body = super::error::ErrorBody),
        (status = 400, response = doc::Malformed),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]

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
