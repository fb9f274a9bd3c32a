//! `/v1/availability`: what can be promised, per SKU, from Redis with PostgreSQL behind it.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, SkuPath};
use super::{atp, validate, AppState};
use crate::cache::Answer;
use crate::db;
use crate::directory::Directory;
use crate::domain::availability::{available, summarize, Channel};
use crate::domain::geo::haversine_km;
use crate::domain::location::LocationKind;

/// Most SKUs one batch request may ask for.
pub const MAX_BATCH_SKUS: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/availability", post(batch))
        .route("/v1/availability/{sku}", get(one))
        .route("/v1/availability/{sku}/nearby", get(nearby))
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

async fn one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<ChannelQuery>,
    ApiQuery(when): ApiQuery<atp::AtQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let channel = channel(q.channel.as_deref())?;
    let at = atp::parse(when.at.as_deref())?;
    let answer = match at {
        None => state.cache.levels(&[sku.as_str()]).await?,
        Some(_) => atp::levels(&state.pool, &[sku.as_str()]).await?,
    };
    let levels = &answer.levels;
    let locations = state
        .directory
        .covering(
            &state.pool,
            levels[0].iter().map(|l| l.location_id.as_str()),
        )
        .await?;
    let mut a = [summarize(
        &levels[0],
        |id| Directory::terms(&locations, id),
        channel,
    )];
    if let Some(at) = at {
        atp::add_supply(&state.pool, &[sku.as_str()], at, &mut a).await?;
    }
    let [a] = a;
    Ok(Json(json!({
        "sku": sku,
        "channel": channel,
        "available": a.available,
        "locations": a.locations,
        "in_transit": a.in_transit,
        "as_of": Utc::now(),
        "at": at,
        "source": answer.source,
        "age_ms": age_ms(&answer),
    })))
}

/// How old the answer may be, in milliseconds (null when Redis had no watermark to tell).
fn age_ms(answer: &Answer) -> Option<u64> {
    answer
        .age
        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    skus: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
    /// Available-to-promise at this time (RFC 3339).
    #[serde(default)]
    at: Option<String>,
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
        validate::sku("sku", sku)?;
    }
    let channel = channel(req.channel.as_deref())?;
    let skus: Vec<&str> = req.skus.iter().map(String::as_str).collect();
    let at = atp::parse(req.at.as_deref())?;
    let answer = match at {
        None => state.cache.levels(&skus).await?,
        Some(_) => atp::levels(&state.pool, &skus).await?,
    };
    let levels = &answer.levels;
    let locations = state
        .directory
        .covering(
            &state.pool,
            levels.iter().flatten().map(|l| l.location_id.as_str()),
        )
        .await?;
    let mut sums: Vec<_> = levels
        .iter()
        .map(|l| summarize(l, |id| Directory::terms(&locations, id), channel))
        .collect();
    if let Some(at) = at {
        atp::add_supply(&state.pool, &skus, at, &mut sums).await?;
    }
    let items: Vec<Value> = skus
        .iter()
        .zip(&sums)
        .map(|(sku, a)| json!({ "sku": sku, "available": a.available }))
        .collect();
    Ok(Json(json!({
        "channel": channel,
        "items": items,
        "as_of": Utc::now(),
        "source": answer.source,
        "age_ms": age_ms(&answer),
    })))
}

pub const DEFAULT_RADIUS_KM: f64 = 50.0;
pub const DEFAULT_NEARBY_LIMIT: usize = 10;
pub const MAX_NEARBY_LIMIT: usize = 100;

#[derive(Deserialize)]
struct NearbyQuery {
    lat: Option<f64>,
    lon: Option<f64>,
    radius_km: Option<f64>,
    limit: Option<usize>,
}

/// Stores near a point that have the SKU, nearest first, for store staff helping a customer.
/// Each says how old its latest movement and latest count are, so staff know how much to trust
/// the number. Read from PostgreSQL: the cache does not carry those timestamps.
async fn nearby(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<NearbyQuery>,
    ApiQuery(when): ApiQuery<atp::AtQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let at = atp::parse(when.at.as_deref())?;
    let field = ApiError::field;
    let lat = q
        .lat
        .filter(|l| (-90.0..=90.0).contains(l))
        .ok_or_else(|| field("lat", "`lat` is required, between -90 and 90"))?;
    let lon = q
        .lon
        .filter(|l| (-180.0..=180.0).contains(l))
        .ok_or_else(|| field("lon", "`lon` is required, between -180 and 180"))?;
    let radius = q.radius_km.unwrap_or(DEFAULT_RADIUS_KM);
    if !(radius > 0.0 && radius <= 20_100.0) {
        return Err(field(
            "radius_km",
            "`radius_km` must be greater than 0 and at most 20100",
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_NEARBY_LIMIT);
    if !(1..=MAX_NEARBY_LIMIT).contains(&limit) {
        return Err(field("limit", "`limit` must be between 1 and 100"));
    }
    let levels = db::levels::for_sku(&state.pool, &sku).await?;
    let locations = state
        .directory
        .covering(&state.pool, levels.iter().map(|l| l.location_id.as_str()))
        .await?;
    let now = Utc::now();
    let expected = match at {
        Some(_) => atp::expected(&state.pool, &sku).await?,
        None => Default::default(),
    };
    let mut stores: Vec<(f64, Value)> = levels
        .iter()
        .filter_map(|lv| {
            let loc = locations.get(&lv.location_id)?;
            if loc.kind != LocationKind::Store {
                return None;
            }
            let mut avail = available(lv.on_hand, lv.reserved, loc.safety_stock);
            if let (Some(at), Some(lines)) =
                (at, expected.get(&(lv.location_id.clone(), sku.clone())))
            {
                avail = crate::domain::supply::atp(avail, lines, at);
            }
            let d = haversine_km(lat, lon, loc.lat, loc.lon);
            (avail > 0 && d <= radius).then(|| {
                let age =
                    |t: Option<chrono::DateTime<Utc>>| t.map(|t| (now - t).num_seconds().max(0));
                (
                    d,
                    json!({
                        "location_id": loc.location_id,
                        "name": loc.name,
                        "distance_km": (d * 100.0).round() / 100.0,
                        "available": avail,
                        "pickup": loc.pickup,
                        "last_movement_at": lv.last_movement_at,
                        "last_movement_age_seconds": age(lv.last_movement_at),
                        "last_count_at": lv.last_count_at,
                        "last_count_age_seconds": age(lv.last_count_at),
                    }),
                )
            })
        })
        .collect();
    stores.sort_by(|a, b| {
        a.0.total_cmp(&b.0).then_with(|| {
            a.1["location_id"]
                .as_str()
                .cmp(&b.1["location_id"].as_str())
        })
    });
    stores.truncate(limit);
    Ok(Json(json!({
        "sku": sku,
        "origin": { "lat": lat, "lon": lon },
        "radius_km": radius,
        "stores": stores.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "as_of": now,
    })))
}
