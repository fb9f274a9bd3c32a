//! `GET /v1/whoami`: what the caller's key may do, so a client (the store page) can disable
//! what it may not press instead of learning it from a 403. The key itself is never echoed.

use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use super::auth::Caller;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/whoami", get(whoami))
}

#[derive(Serialize)]
struct WhoAmI {
    /// `read`, `reserve`, `write`, `admin`.
    scopes: Vec<&'static str>,
    /// The one location a bound key acts at, or null.
    location_id: Option<String>,
}

async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    let g = caller.grant();
    Json(WhoAmI {
        scopes: g.scopes.iter().map(|s| s.as_str()).collect(),
        location_id: g.location_id.clone(),
    })
}
