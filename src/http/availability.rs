//! `/v1/availability`: what can be promised, per SKU, from Redis with PostgreSQL behind it.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::atp::{self, Supply};
use super::auth::{Caller, Scope};
use super::channels::resolve;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, SkuPath};
use super::{validate, AppState};
use crate::cache::Answer;
use crate::channels::{includes, ChannelSet};
use crate::db;
use crate::directory::Directory;
use crate::domain::availability::{available, summarize_with};
use crate::domain::channel::{pool_available, ChannelDef};
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
    at: Option<String>,
}

async fn one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<ChannelQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let (set, channel) = resolve(&state, q.channel.as_deref()).await?;
    let at = atp::parse(q.at.as_deref())?;
    let answer = atp::levels(&state, &[sku.as_str()], at).await?;
    let supply = Supply::load(&state.pool, &[sku.as_str()], at).await?;
    let levels = &answer.levels;
    let locations = state
        .directory
        .covering(
            &state.pool,
            levels[0].iter().map(|l| l.location_id.as_str()),
        )
        .await?;
    let a = summarize_with(
        &levels[0],
        |id| Directory::terms(&locations, id),
        |id, t| includes(&channel, id, t),
        promise(&set, &channel, &sku, supply.as_ref()),
    );
    Ok(Json(json!({
        "sku": sku,
        "channel": channel.channel,
        "available": a.available,
        "locations": a.locations,
        "in_transit": a.in_transit,
        "as_of": Utc::now(),
        "source": answer.source,
        "age_ms": age_ms(&answer),
    })))
}

/// What a channel may promise of one SKU at a location: its share of the available there,
/// after adding the supply that `at=` counts (supply that arrives joins the stock the channel
/// shares, so a buffer or percentage applies to it too).
fn promise<'a>(
    set: &'a ChannelSet,
    channel: &'a ChannelDef,
    sku: &'a str,
    supply: Option<&'a Supply>,
) -> impl Fn(&str, i64) -> i64 + 'a {
    let terms = set.terms(channel, sku);
    move |location, a| {
        let a = supply.map_or(a, |s| s.atp(location, sku, a));
        pool_available(a, terms)
    }
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
    /// Available-to-promise at this RFC 3339 time (see `atp`).
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
    let (set, channel) = resolve(&state, req.channel.as_deref()).await?;
    let skus: Vec<&str> = req.skus.iter().map(String::as_str).collect();
    let at = atp::parse(req.at.as_deref())?;
    let answer = atp::levels(&state, &skus, at).await?;
    let supply = Supply::load(&state.pool, &skus, at).await?;
    let levels = &answer.levels;
    let locations = state
        .directory
        .covering(
            &state.pool,
            levels.iter().flatten().map(|l| l.location_id.as_str()),
        )
        .await?;
    let items: Vec<Value> = skus
        .iter()
        .zip(levels)
        .map(|(sku, l)| {
            let a = summarize_with(
                l,
                |id| Directory::terms(&locations, id),
                |id, t| includes(&channel, id, t),
                promise(&set, &channel, sku, supply.as_ref()),
            );
            json!({ "sku": sku, "available": a.available })
        })
        .collect();
    Ok(Json(json!({
        "channel": channel.channel,
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
    channel: Option<String>,
    at: Option<String>,
}

/// Stores near a point that have the SKU, nearest first, for store staff helping a customer.
/// Each says how old its latest movement and latest count are, so staff know how much to trust
/// the number. Read from PostgreSQL: the cache does not carry those timestamps.
async fn nearby(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<NearbyQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let at = atp::parse(q.at.as_deref())?;
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
    let (set, channel) = resolve(&state, q.channel.as_deref()).await?;
    let supply = Supply::load(&state.pool, &[sku.as_str()], at).await?;
    let share = promise(&set, &channel, &sku, supply.as_ref());
    let levels = db::levels::for_sku(&state.pool, &sku).await?;
    let locations = state
        .directory
        .covering(&state.pool, levels.iter().map(|l| l.location_id.as_str()))
        .await?;
    let now = Utc::now();
    let mut stores: Vec<(f64, Value)> = levels
        .iter()
        .filter_map(|lv| {
            let loc = locations.get(&lv.location_id)?;
            if loc.kind != LocationKind::Store
                || !channel.includes(&loc.location_id, loc.kind, loc.ship_from)
            {
                return None;
            }
            let avail = share(
                &loc.location_id,
                available(lv.on_hand, lv.reserved, loc.safety_stock),
            );
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
        "channel": channel.channel,
        "origin": { "lat": lat, "lon": lon },
        "radius_km": radius,
        "stores": stores.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "as_of": now,
    })))
}
