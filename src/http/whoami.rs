//! `GET /v1/whoami`: what the caller's key may do, so a client (the store page) can disable
//! what it may not press instead of learning it from a 403. The key itself is never echoed.

use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use utoipa::{OpenApi, ToSchema};

use super::auth::Caller;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/whoami", get(whoami))
}

#[derive(OpenApi)]
#[openapi(paths(whoami))]
pub struct Doc;

#[derive(Serialize, ToSchema)]
struct WhoAmI {
    /// `read`, `reserve`, `write`, `admin`.
    scopes: Vec<&'static str>,
    /// The one location a bound key acts at, or null.
    location_id: Option<String>,
}

/// What the caller's key may do
///
/// Any valid key. Its scopes and the location it is bound to (or null), so a client can
/// disable what it may not do. The key itself is never echoed.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "page",
    operation_id = "whoAmI",
    responses(
        (status = 200, description = "The key's grant.", body = WhoAmI),
    ),
)]
async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    let g = caller.grant();
    Json(WhoAmI {
        scopes: g.scopes.iter().map(|s| s.as_str()).collect(),
        location_id: g.location_id.clone(),
    })
}
