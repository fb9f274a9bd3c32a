//! `/v1/availability`: what can be promised, per SKU, from Redis with PostgreSQL behind it.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::directory::Directory;
use crate::domain::availability::{summarize, Channel};
use crate::domain::ids::is_valid_sku;

/// Most SKUs one batch request may ask for.
pub const MAX_BATCH_SKUS: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/availability", post(batch))
        .route("/v1/availability/{sku}", get(one))
}

#[derive(Deserialize)]
struct ChannelQuery {
    channel: Option<String>,
}

fn channel(c: Option<&str>) -> Result<Channel, ApiError> {
    let c = c.unwrap_or("all");
    Channel::parse(c).ok_or_else(|| ApiError::Invalid {
        message: format!("unknown channel {c:?}"),
        details: json!({ "field": "channel", "allowed": ["all", "online"] }),
    })
}

fn check_sku(sku: &str) -> Result<(), ApiError> {
    if is_valid_sku(sku) {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            message: "a SKU is 1-128 printable characters".into(),
            details: json!({ "field": "sku" }),
        })
    }
}

async fn one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(sku): ApiPath<String>,
    ApiQuery(q): ApiQuery<ChannelQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    check_sku(&sku)?;
    let channel = channel(q.channel.as_deref())?;
    let (levels, source) = state.cache.levels(&[sku.as_str()]).await?;
    let locations = state
        .directory
        .covering(
            &state.pool,
            levels[0].iter().map(|l| l.location_id.as_str()),
        )
        .await?;
    let a = summarize(&levels[0], |id| Directory::terms(&locations, id), channel);
    Ok(Json(json!({
        "sku": sku,
        "channel": channel,
        "available": a.available,
        "locations": a.locations,
        "as_of": Utc::now(),
        "source": source,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    skus: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
}

async fn batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    if req.skus.is_empty() || req.skus.len() > MAX_BATCH_SKUS {
        return Err(ApiError::Invalid {
            message: format!("`skus` must hold 1 to {MAX_BATCH_SKUS} SKUs"),
            details: json!({ "field": "skus", "count": req.skus.len() }),
        });
    }
    for sku in &req.skus {
        check_sku(sku)?;
    }
    let channel = channel(req.channel.as_deref())?;
    let skus: Vec<&str> = req.skus.iter().map(String::as_str).collect();
    let (levels, source) = state.cache.levels(&skus).await?;
    let locations = state
        .directory
        .covering(
            &state.pool,
            levels.iter().flatten().map(|l| l.location_id.as_str()),
        )
        .await?;
    let items: Vec<Value> = skus
        .iter()
        .zip(&levels)
        .map(|(sku, l)| {
            let a = summarize(l, |id| Directory::terms(&locations, id), channel);
            json!({ "sku": sku, "available": a.available })
        })
        .collect();
    Ok(Json(json!({
        "channel": channel,
        "items": items,
        "as_of": Utc::now(),
        "source": source,
    })))
}
