//! `/v1/skus/{sku}`: per-SKU settings (the low-stock alert threshold).

use axum::extract::State;
use axum::routing::put;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, SkuPath};
use super::AppState;
use crate::db;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/skus/{sku}", put(set))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkuSettings {
    /// Alerts call the SKU low at or below this `available` (null: its location's or the
    /// daemon's default).
    low_stock_threshold: Option<i64>,
}

async fn set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiJson(body): ApiJson<SkuSettings>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    if body
        .low_stock_threshold
        .is_some_and(|t| !(0..=1_000_000_000).contains(&t))
    {
        return Err(ApiError::Invalid {
            message: "`low_stock_threshold` must be null or between 0 and 1000000000".into(),
            details: json!({ "field": "low_stock_threshold" }),
        });
    }
    db::levels::set_sku_threshold(&state.pool, &sku, body.low_stock_threshold).await?;
    Ok(Json(
        json!({ "sku": sku, "low_stock_threshold": body.low_stock_threshold }),
    ))
}
