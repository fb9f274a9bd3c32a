//! `/v1/locations`: the network of stores, warehouses and the e-shop.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, LocationIdPath};
use super::openapi as doc;
use super::AppState;
use crate::db;
use crate::domain::location::{FieldError, Location, LocationInput};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/locations", get(list))
        .route("/v1/locations/{location_id}", get(get_one).put(put))
}

#[derive(OpenApi)]
#[openapi(paths(list, get_one, put))]
pub struct Doc;

/// List every location
///
/// Scope: `read`. Every location, ordered by `location_id`. Store tablets use it to show
/// the network (names, pickup, coordinates); fulfilment systems to map ids to places.
#[utoipa::path(
    get,
    path = "/v1/locations",
    tag = "locations",
    operation_id = "listLocations",
    responses(
        (status = 200, description = "All locations.", body = LocationList),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<LocationList>, ApiError> {
    caller.require(Scope::Read)?;
    let locations = db::locations::list(&state.pool).await?;
    Ok(Json(LocationList { locations }))
}

#[derive(Serialize, ToSchema)]
struct LocationList {
    /// Ordered by `location_id`.
    locations: Vec<Location>,
}

/// One location
///
/// Scope: `read`. One location by id (case-sensitive). An id that does not match the
/// location id pattern is a 422 with field `location_id`.
#[utoipa::path(
    get,
    path = "/v1/locations/{location_id}",
    tag = "locations",
    operation_id = "getLocation",
    params(
        ("location_id" = String, Path, description = doc::LOCATIONIDPATH),
    ),
    responses(
        (status = 200, description = "The location.", body = Location),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
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

/// Create or replace a location
///
/// Scope: `admin`. Creates the location (201) or replaces it whole (200); every daemon then
/// reloads its locations. Used by back-office tooling when a store opens, changes its
/// pickup/ship-from terms, safety stock, daily order capacity or alert threshold.
/// Every invalid field is reported at once in `details.fields` (422); the time zone must
/// also be known to PostgreSQL. The path id must match `^[A-Za-z0-9_-]{1,64}$` (else 422
/// with field `location_id`).
#[utoipa::path(
    put,
    path = "/v1/locations/{location_id}",
    tag = "locations",
    operation_id = "putLocation",
    params(
        ("location_id" = String, Path, description = doc::LOCATIONIDPATH),
    ),
    request_body(content = LocationInput, example = json!({"name": "Yilan Store", "kind": "store", "lat": 24.757, "lon": 121.7533, "pickup": true, "ship_from": false, "safety_stock": 1, "daily_order_capacity": null, "timezone": "Asia/Taipei"})),
    responses(
        (status = 200, description = "Replaced an existing location.", body = Location),
        (status = 201, description = "Created a new location.", body = Location),
        (status = 400, response = doc::Malformed),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]
// Creates (201) or replaces (200) a location, then tells every daemon to reload locations.
// The path id is checked with the body (`LocationInput::validate`), so that every bad field is
// reported at once.
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
