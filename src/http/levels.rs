//! `GET /v1/levels/{sku}`: each location's level of one SKU from PostgreSQL, with how fresh it
//! is: when its newest movement occurred and when it was last counted. The store page shows
//! these beside each number so staff know how much to trust it ("counted this morning, sold
//! twice since"). Availability reads come from Redis, which does not carry those times.

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiQuery, SkuPath};
use super::openapi as doc;
use super::{validate, AppState};
use crate::db;
use crate::domain::availability::available;
use crate::domain::location::LocationKind;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/levels/{sku}", get(levels))
}

#[derive(OpenApi)]
#[openapi(paths(levels))]
pub struct Doc;

#[derive(Deserialize)]
struct LevelsQuery {
    location_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct LevelsAnswer {
    sku: String,
    levels: Vec<Level>,
    as_of: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
struct Level {
    location_id: String,
    name: String,
    kind: LocationKind,
    on_hand: i64,
    reserved: i64,
    available: i64,
    in_transit: i64,
    version: i64,
    /// `occurred_at` of the newest movement recorded here, whatever its effect.
    last_movement_at: Option<DateTime<Utc>>,
    last_movement_age_seconds: Option<i64>,
    /// `occurred_at` of the latest count applied.
    last_count_at: Option<DateTime<Utc>>,
    last_count_age_seconds: Option<i64>,
}

/// Each location's level of one SKU, with how fresh it is
///
/// Scope: `read`. Read from PostgreSQL (the truth), not the Redis cache: every location
/// with a level of the SKU (including those with nothing available), by location id, with
/// the time of its newest movement and of its latest count and their ages in seconds. The
/// store page shows these beside each number.
#[utoipa::path(
    get,
    path = "/v1/levels/{sku}",
    tag = "availability",
    operation_id = "getLevels",
    params(
        ("sku" = String, Path, description = doc::SKUPATH),
        ("location_id" = Option<String>, Query, description = "Only this location's level."),
    ),
    responses(
        (status = 200, description = "The levels.", body = LevelsAnswer),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn levels(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<LevelsQuery>,
) -> Result<Json<LevelsAnswer>, ApiError> {
    caller.require(Scope::Read)?;
    if let Some(id) = &q.location_id {
        validate::location_id("location_id", id)?;
    }
    let rows = db::levels::for_sku(&state.pool, &sku).await?;
    let locations = state
        .directory
        .covering(&state.pool, rows.iter().map(|l| l.location_id.as_str()))
        .await?;
    let now = Utc::now();
    let age = |t: Option<DateTime<Utc>>| t.map(|t| (now - t).num_seconds().max(0));
    let levels = rows
        .into_iter()
        .filter(|r| q.location_id.as_ref().is_none_or(|id| *id == r.location_id))
        .filter_map(|r| {
            let loc = locations.get(&r.location_id)?;
            Some(Level {
                available: available(r.on_hand, r.reserved, loc.safety_stock),
                name: loc.name.clone(),
                kind: loc.kind,
                on_hand: r.on_hand,
                reserved: r.reserved,
                in_transit: r.in_transit,
                version: r.version,
                last_movement_age_seconds: age(r.last_movement_at),
                last_movement_at: r.last_movement_at,
                last_count_age_seconds: age(r.last_count_at),
                last_count_at: r.last_count_at,
                location_id: r.location_id,
            })
        })
        .collect();
    Ok(Json(LevelsAnswer {
        sku,
        levels,
        as_of: now,
    }))
}
