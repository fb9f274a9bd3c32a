//! `/v1/skus/{sku}`: per-SKU settings (the low-stock alert threshold).

use axum::extract::State;
use axum::routing::put;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::{ApiError, Details};
use super::extract::{ApiJson, SkuPath};
use super::openapi as doc;
use super::AppState;
use crate::db;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/skus/{sku}", put(set))
}

#[derive(OpenApi)]
#[openapi(paths(set))]
pub struct Doc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SkuSettings {
    /// Alerts call the SKU low at or below this `available` (null: its location's or the
    /// daemon's default).
    low_stock_threshold: Option<i64>,
}

/// Set a SKU's low-stock alert threshold
///
/// Scope: `admin`. Merchandising sets the level at or below which a SKU counts as low
/// (alerts on `inventory.alerts.low_stock`). It wins over the location's threshold and
/// the daemon's default; null (or `{}`) clears it. Works for a SKU not seen yet.
#[utoipa::path(
    put,
    path = "/v1/skus/{sku}",
    tag = "skus",
    operation_id = "putSkuSettings",
    params(
        ("sku" = String, Path, description = doc::SKUPATH),
    ),
    request_body(content = SkuSettings, example = json!({"low_stock_threshold": 5})),
    responses(
        (status = 200, description = "The SKU's settings as stored.", body = SkuSettingsAnswer),
        (status = 400, response = doc::Malformed),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]
async fn set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiJson(body): ApiJson<SkuSettings>,
) -> Result<Json<SkuSettingsAnswer>, ApiError> {
    caller.require(Scope::Admin)?;
    if body
        .low_stock_threshold
        .is_some_and(|t| !(0..=1_000_000_000).contains(&t))
    {
        return Err(ApiError::Invalid {
            message: "`low_stock_threshold` must be null or between 0 and 1000000000".into(),
            details: Details::field("low_stock_threshold"),
        });
    }
    db::levels::set_sku_threshold(&state.pool, &sku, body.low_stock_threshold).await?;
    Ok(Json(SkuSettingsAnswer {
        sku,
        low_stock_threshold: body.low_stock_threshold,
    }))
}

/// The SKU's settings as stored.
#[derive(Serialize, ToSchema)]
#[schema(as = SkuSettingsResponse)]
struct SkuSettingsAnswer {
    sku: String,
    low_stock_threshold: Option<i64>,
}
