//! `/v1/availability`: what can be promised, per SKU, from Redis with PostgreSQL behind it.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::DateTime;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::atp::{self, Supply};
use super::auth::{Caller, Scope};
use super::channels::resolve;
use super::error::{ApiError, Details};
use super::extract::{ApiJson, ApiQuery, SkuPath};
use super::openapi as doc;
use super::{validate, AppState};
use crate::cache::{Answer, Source};
use crate::channels::{includes, ChannelSet};
use crate::db;
use crate::directory::Directory;
use crate::domain::availability::{available, summarize_with, InTransit, LocationAvailability};
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

#[derive(OpenApi)]
#[openapi(paths(batch, one, nearby))]
pub struct Doc;

/// Most locations `nearest=` or `largest=` may ask for.
pub const MAX_PICK: usize = 1_000;

#[derive(Deserialize)]
struct OneQuery {
    channel: Option<String>,
    at: Option<String>,
    /// `false`: the total only, read from the totals kept at write time.
    locations: Option<bool>,
    nearest: Option<usize>,
    largest: Option<usize>,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// Which locations a single-SKU answer lists.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Listing {
    All,
    None,
    Nearest { n: usize, lat: f64, lon: f64 },
    Largest(usize),
}

impl OneQuery {
    /// The listing asked for; a 422 naming the field otherwise.
    fn listing(&self) -> Result<Listing, ApiError> {
        let count = |name: &str, n: usize| {
            if (1..=MAX_PICK).contains(&n) {
                Ok(n)
            } else {
                Err(ApiError::field(
                    name,
                    format!("`{name}` must be between 1 and {MAX_PICK}"),
                ))
            }
        };
        if self.nearest.is_some() && self.largest.is_some() {
            return Err(ApiError::field(
                "largest",
                "`largest` cannot be combined with `nearest`",
            ));
        }
        if self.locations == Some(false) && (self.nearest.is_some() || self.largest.is_some()) {
            let which = if self.nearest.is_some() {
                "nearest"
            } else {
                "largest"
            };
            return Err(ApiError::field(
                which,
                format!("`{which}` lists locations; it cannot be combined with `locations=false`"),
            ));
        }
        if self.nearest.is_none() && (self.lat.is_some() || self.lon.is_some()) {
            let which = if self.lat.is_some() { "lat" } else { "lon" };
            return Err(ApiError::field(
                which,
                format!("`{which}` is only taken with `nearest`"),
            ));
        }
        if let Some(n) = self.nearest {
            let n = count("nearest", n)?;
            let lat = self
                .lat
                .filter(|l| (-90.0..=90.0).contains(l))
                .ok_or_else(|| {
                    ApiError::field(
                        "lat",
                        "`lat` is required with `nearest`, between -90 and 90",
                    )
                })?;
            let lon = self
                .lon
                .filter(|l| (-180.0..=180.0).contains(l))
                .ok_or_else(|| {
                    ApiError::field(
                        "lon",
                        "`lon` is required with `nearest`, between -180 and 180",
                    )
                })?;
            return Ok(Listing::Nearest { n, lat, lon });
        }
        if let Some(n) = self.largest {
            return Ok(Listing::Largest(count("largest", n)?));
        }
        Ok(if self.locations == Some(false) {
            Listing::None
        } else {
            Listing::All
        })
    }
}

/// Availability of one SKU, per location
///
/// Scope: `read`. `available` summed over the locations of the channel, each location's
/// `on_hand`, `reserved`, `available` and `in_transit`, and stock in transit per
/// destination. A checkout shows "in stock" from `available` (channel `online`); a store
/// tablet shows where the item is (channel `all`). A SKU never seen answers 200 with
/// `available` 0 and no locations.
#[utoipa::path(
    get,
    path = "/v1/availability/{sku}",
    tag = "availability",
    operation_id = "getAvailability",
    params(
        ("sku" = String, Path, description = doc::SKUPATH),
        ("channel" = Option<String>, Query, description = doc::CHANNELQUERY),
        ("at" = Option<String>, Query, description = doc::ATQUERY),
        ("locations" = Option<bool>, Query, description = "`false`: the total only (`locations` and `in_transit` are empty), read from the totals kept at write time: one cached value whatever the number of locations. With `at`, the total is summed from the levels instead. Default `true`: the answer is unchanged."),
        ("nearest" = Option<i64>, Query, description = "List only the N (1 to 1000) locations nearest to (`lat`, `lon`), nearest first (ties: location id); `available` stays the channel's total over all its locations. Needs `lat` and `lon`; out of range: 422 naming the field; negative or not an integer: 400."),
        ("lat" = Option<f64>, Query, description = "Latitude for `nearest` (-90 to 90; only with `nearest`, else 422 with field `lat`)."),
        ("lon" = Option<f64>, Query, description = "Longitude for `nearest` (-180 to 180)."),
        ("largest" = Option<i64>, Query, description = "List only the N (1 to 1000) locations with the most available, largest first (ties: location id); `available` stays the total. Not with `nearest` (422 with field `largest`)."),
    ),
    responses(
        (status = 200, description = "The SKU's availability.", body = SkuAnswer),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<OneQuery>,
) -> Result<Json<SkuAnswer>, ApiError> {
    caller.require(Scope::Read)?;
    let listing = q.listing()?;
    let (set, channel) = resolve(&state, q.channel.as_deref()).await?;
    let at = atp::parse(q.at.as_deref())?;
    if listing == Listing::None && at.is_none() {
        let answer = state
            .cache
            .totals(&[sku.as_str()], &channel.channel)
            .await?;
        return Ok(Json(SkuAnswer {
            sku,
            channel: channel.channel,
            available: answer.totals[0],
            locations: Vec::new(),
            in_transit: Vec::new(),
            as_of: Utc::now(),
            source: answer.source,
            age_ms: answer
                .age
                .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        }));
    }
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
    let mut a = summarize_with(
        &levels[0],
        |id| Directory::terms(&locations, id),
        |id, t| includes(&channel, id, t),
        promise(&set, &channel, &sku, supply.as_ref()),
    );
    match listing {
        Listing::All => {}
        Listing::None => {
            a.locations.clear();
            a.in_transit.clear();
        }
        Listing::Nearest { n, lat, lon } => {
            let distance = |id: &str| {
                locations
                    .get(id)
                    .map_or(f64::INFINITY, |l| haversine_km(lat, lon, l.lat, l.lon))
            };
            pick(&mut a.locations, n, |x, y| {
                distance(&x.location_id).total_cmp(&distance(&y.location_id))
            });
        }
        Listing::Largest(n) => pick(&mut a.locations, n, |x, y| y.available.cmp(&x.available)),
    }
    Ok(Json(SkuAnswer {
        sku,
        channel: channel.channel,
        available: a.available,
        locations: a.locations,
        in_transit: a.in_transit,
        as_of: Utc::now(),
        source: answer.source,
        age_ms: age_ms(&answer),
    }))
}

/// Keeps the first `n` locations by `order`, ties by location id.
fn pick(
    locations: &mut Vec<LocationAvailability>,
    n: usize,
    order: impl Fn(&LocationAvailability, &LocationAvailability) -> std::cmp::Ordering,
) {
    locations.sort_by(|x, y| order(x, y).then_with(|| x.location_id.cmp(&y.location_id)));
    locations.truncate(n);
}

/// One SKU's availability: the channel's total and each location's part.
#[derive(Serialize, ToSchema)]
#[schema(as = Availability)]
struct SkuAnswer {
    sku: String,
    channel: String,
    /// Summed over the channel's locations (its share at each).
    available: i64,
    locations: Vec<LocationAvailability>,
    /// Per destination, what transfers have shipped and not yet delivered.
    in_transit: Vec<InTransit>,
    as_of: DateTime<Utc>,
    /// Where the numbers came from: Redis (`cache`) or PostgreSQL (`database`).
    source: Source,
    /// How old the answer may be, in milliseconds (null when Redis had no watermark to tell).
    age_ms: Option<u64>,
}

/// Totals of many SKUs, one item per SKU asked, in request order.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchAvailability)]
struct BatchAnswer {
    channel: String,
    items: Vec<BatchItem>,
    as_of: DateTime<Utc>,
    source: Source,
    age_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct BatchItem {
    sku: String,
    available: i64,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    skus: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
    /// Available-to-promise at this RFC 3339 time (see `atp`).
    #[serde(default)]
    at: Option<String>,
}

/// Availability of many SKUs at once
///
/// Scope: `read`. Totals only, for 1 to 500 SKUs: what a checkout or a product listing
/// page asks for a cart or a page of products. Repeated SKUs are answered once per
/// occurrence, in request order. Answered from the per-SKU totals kept at write time, in
/// Redis, or in PostgreSQL when Redis misses or fails (`source`): one value per SKU whatever
/// the number of locations. With `at`, summed from the levels and the supply instead.
#[utoipa::path(
    post,
    path = "/v1/availability",
    tag = "availability",
    operation_id = "batchAvailability",
    request_body(content = BatchRequest, example = json!({"skus": ["TEE-112-BLK-L", "GIFT CARD/500"], "channel": "online"})),
    responses(
        (status = 200, description = "One item per requested SKU.", body = BatchAnswer),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<Json<BatchAnswer>, ApiError> {
    caller.require(Scope::Read)?;
    if req.skus.is_empty() || req.skus.len() > MAX_BATCH_SKUS {
        return Err(ApiError::Invalid {
            message: format!("`skus` must hold 1 to {MAX_BATCH_SKUS} SKUs"),
            details: Details::FieldCount {
                field: "skus".into(),
                count: req.skus.len(),
            },
        });
    }
    for sku in &req.skus {
        validate::sku("sku", sku)?;
    }
    let (set, channel) = resolve(&state, req.channel.as_deref()).await?;
    let skus: Vec<&str> = req.skus.iter().map(String::as_str).collect();
    let at = atp::parse(req.at.as_deref())?;
    if at.is_none() {
        // One cached total per SKU, kept at write time: no level is read.
        let answer = state.cache.totals(&skus, &channel.channel).await?;
        return Ok(Json(BatchAnswer {
            channel: channel.channel,
            items: skus
                .iter()
                .zip(answer.totals)
                .map(|(sku, available)| BatchItem {
                    sku: sku.to_string(),
                    available,
                })
                .collect(),
            as_of: Utc::now(),
            source: answer.source,
            age_ms: answer
                .age
                .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        }));
    }
    // `at=` adds supply per location, which no total holds: summed from the levels.
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
    let items: Vec<BatchItem> = skus
        .iter()
        .zip(levels)
        .map(|(sku, l)| {
            let a = summarize_with(
                l,
                |id| Directory::terms(&locations, id),
                |id, t| includes(&channel, id, t),
                promise(&set, &channel, sku, supply.as_ref()),
            );
            BatchItem {
                sku: sku.to_string(),
                available: a.available,
            }
        })
        .collect();
    Ok(Json(BatchAnswer {
        channel: channel.channel,
        items,
        as_of: Utc::now(),
        source: answer.source,
        age_ms: age_ms(&answer),
    }))
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

/// Stores near a point that have the SKU
///
/// Scope: `read`. Stores (kind `store`) within `radius_km` of (`lat`, `lon`) whose
/// `available` is above 0, nearest first (ties: location id), at most `limit`. Each says
/// how old its latest movement and latest count are, so store staff on a tablet know how
/// far to trust the number before sending a customer there. Read from PostgreSQL.
#[utoipa::path(
    get,
    path = "/v1/availability/{sku}/nearby",
    tag = "availability",
    operation_id = "nearbyAvailability",
    params(
        ("sku" = String, Path, description = doc::SKUPATH),
        ("at" = Option<String>, Query, description = doc::ATQUERY),
        ("lat" = f64, Query, description = "Latitude of the customer or store (required with `lon`; else 422 with field `lat`)."),
        ("lon" = f64, Query, description = "Longitude (required with `lat`; an invalid one is reported as field `lat`)."),
        ("radius_km" = Option<f64>, Query),
        ("limit" = Option<i64>, Query, description = "Most stores returned. A negative or non-integer value is a 400."),
        ("channel" = Option<String>, Query, description = doc::CHANNELQUERY),
    ),
    responses(
        (status = 200, description = "Stores that have it, nearest first.", body = NearbyAnswer),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
// Stores near a point that have the SKU, nearest first, for store staff helping a customer.
// Each says how old its latest movement and latest count are, so staff know how much to trust
// the number. Read from PostgreSQL: the cache does not carry those timestamps.
async fn nearby(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SkuPath(sku): SkuPath,
    ApiQuery(q): ApiQuery<NearbyQuery>,
) -> Result<Json<NearbyAnswer>, ApiError> {
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
    let mut stores: Vec<(f64, NearbyStore)> = levels
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
                    NearbyStore {
                        location_id: loc.location_id.clone(),
                        name: loc.name.clone(),
                        distance_km: (d * 100.0).round() / 100.0,
                        available: avail,
                        pickup: loc.pickup,
                        last_movement_at: lv.last_movement_at,
                        last_movement_age_seconds: age(lv.last_movement_at),
                        last_count_at: lv.last_count_at,
                        last_count_age_seconds: age(lv.last_count_at),
                    },
                )
            })
        })
        .collect();
    stores.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| a.1.location_id.cmp(&b.1.location_id))
    });
    stores.truncate(limit);
    Ok(Json(NearbyAnswer {
        sku: sku.clone(),
        channel: channel.channel.clone(),
        origin: Point { lat, lon },
        radius_km: radius,
        stores: stores.into_iter().map(|(_, v)| v).collect(),
        as_of: now,
    }))
}

/// Stores near a point that have the SKU, nearest first.
#[derive(Serialize, ToSchema)]
#[schema(as = NearbyStores)]
struct NearbyAnswer {
    sku: String,
    channel: String,
    origin: Point,
    radius_km: f64,
    stores: Vec<NearbyStore>,
    as_of: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
struct Point {
    lat: f64,
    lon: f64,
}

#[derive(Serialize, ToSchema)]
struct NearbyStore {
    location_id: String,
    name: String,
    /// Great-circle distance from the point, rounded to 10 m.
    distance_km: f64,
    available: i64,
    pickup: bool,
    /// `occurred_at` of its newest movement of the SKU, and how long ago.
    last_movement_at: Option<DateTime<Utc>>,
    last_movement_age_seconds: Option<i64>,
    /// `occurred_at` of its latest count of the SKU, and how long ago.
    last_count_at: Option<DateTime<Utc>>,
    last_count_age_seconds: Option<i64>,
}
