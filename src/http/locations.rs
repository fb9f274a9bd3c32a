//! `/v1/locations`: the network of stores, warehouses and the e-shop.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, LocationIdPath};
use super::AppState;
use crate::db;
use crate::domain::location::{FieldError, Location, LocationInput};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/locations", get(list))
        .route("/v1/locations/{location_id}", get(get_one).put(put))
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let locations = db::locations::list(&state.pool).await?;
    Ok(Json(json!({ "locations": locations })))
}

async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    LocationIdPath(id): LocationIdPath,
) -> Result<Json<Location>, ApiError> {
    caller.require(Scope::Read)?;
    db::locations::get(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("location {id:?}")))
}

/// Creates (201) or replaces (200) a location, then tells every daemon to reload locations.
/// The path id is checked with the body (`LocationInput::validate`), so that every bad field is
/// reported at once.
async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<LocationInput>,
) -> Result<(StatusCode, Json<Location>), ApiError> {
    caller.require(Scope::Admin)?;
    let location = input.validate(&id).map_err(ApiError::invalid_fields)?;
    if !db::locations::timezone_exists(&state.pool, &location.timezone).await? {
        return Err(ApiError::invalid_fields(vec![FieldError {
            field: "timezone",
            problem: format!("unknown time zone {:?}", location.timezone),
        }]));
    }
    let created = db::locations::upsert(&state.pool, &location).await?;
    state.locations_changed().await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(location)))
}
