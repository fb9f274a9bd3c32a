//! `/v1/channels`: sales channel pools and their per-SKU overrides.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::{ApiError, Details};
use super::extract::{ApiJson, ApiPath};
use super::openapi as doc;
use super::{validate, AppState};
use crate::channels::ChannelSet;
use crate::db;
use crate::domain::channel::{
    is_valid_name, ChannelDef, ChannelInput, ChannelView, Invalid, Selector, SkuOverride, ALL,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/channels", get(list))
        .route("/v1/channels/{channel}", get(get_one).put(put))
        .route(
            "/v1/channels/{channel}/skus/{sku}",
            get(get_override).put(put_override).delete(delete_override),
        )
}

#[derive(OpenApi)]
#[openapi(paths(list, get_one, put, get_override, put_override, delete_override))]
pub struct Doc;

fn invalid(e: Invalid) -> ApiError {
    ApiError::field(e.field, e.message)
}

fn channel_name(name: &str) -> Result<(), ApiError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::field(
            "channel",
            "a channel name must match [A-Za-z0-9_-]{1,64}",
        ))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("channel {name:?}"))
}

/// The channel a read asks for (`all` when none) with the channels it was read from. A
/// channel this daemon does not know yet (created through another daemon a moment ago) is
/// looked up in PostgreSQL before it is called unknown.
pub async fn resolve(
    state: &AppState,
    name: Option<&str>,
) -> Result<(Arc<ChannelSet>, ChannelDef), ApiError> {
    let name = match name {
        None | Some("") => ALL,
        Some(n) => n,
    };
    channel_name(name)?;
    let set = state.channels.snapshot();
    if let Some(d) = set.get(name) {
        return Ok((Arc::clone(&set), d.clone()));
    }
    if db::channels::get(&state.pool, name).await?.is_none() {
        return Err(not_found(name));
    }
    state.channels.refresh(&state.pool).await?;
    let set = state.channels.snapshot();
    let def = set.get(name).cloned().ok_or_else(|| not_found(name))?;
    Ok((set, def))
}

#[derive(Serialize, ToSchema)]
struct ChannelList {
    channels: Vec<ChannelView>,
}

/// Every sales channel
///
/// Scope `read`. The built-in `all` and `online`, and every defined channel, by name.
#[utoipa::path(
    get,
    path = "/v1/channels",
    tag = "channels",
    operation_id = "listChannels",
    responses(
        (status = 200, description = "The channels.", body = ChannelList),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ChannelList>, ApiError> {
    caller.require(Scope::Read)?;
    let defs = db::channels::list(&state.pool).await?;
    Ok(Json(ChannelList {
        channels: defs.iter().map(ChannelView::from).collect(),
    }))
}

async fn known(state: &AppState, name: &str) -> Result<ChannelDef, ApiError> {
    channel_name(name)?;
    db::channels::get(&state.pool, name)
        .await?
        .ok_or_else(|| not_found(name))
}

/// One sales channel
///
/// Scope `read`.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}",
    tag = "channels",
    operation_id = "getChannel",
    params(
        ("channel" = String, Path, description = doc::CHANNELPATH),
    ),
    responses(
        (status = 200, description = "The channel.", body = ChannelView),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ChannelView>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(ChannelView::from(&known(&state, &name).await?)))
}

/// Create or replace a sales channel's pool
///
/// Scope `admin`. Creates (201) or replaces (200) the channel whole: `locations` (a list of
/// registered location ids, `"ship_from"` or `"all"`), `buffer_units` (>= 0, default 0),
/// `max_percent` (1-100, default 100). The built-in `all` and `online` take a buffer and a
/// percent, but their locations are fixed (`locations`, if given, must be theirs). Bad
/// input is a 422 naming the field; a list with unknown locations lists them in
/// `details.unknown`. Every daemon reloads its channels; totals that changed are published
/// on `inventory.channels.<channel>`.
#[utoipa::path(
    put,
    path = "/v1/channels/{channel}",
    tag = "channels",
    operation_id = "putChannel",
    params(
        ("channel" = String, Path, description = doc::CHANNELPATH),
    ),
    request_body(content = ChannelInput, example = json!({"locations": ["WH-TPE", "TW001"], "buffer_units": 2, "max_percent": 50})),
    responses(
        (status = 200, description = "Replaced.", body = ChannelView),
        (status = 201, description = "Created.", body = ChannelView),
        (status = 400, response = doc::Malformed),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]
// Creates (201) or replaces (200) a channel. Every SKU's totals may change with it: all are
// marked for the channel feed, which publishes those that did.
async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<ChannelInput>,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    caller.require(Scope::Admin)?;
    let def = input.validate(&name).map_err(invalid)?;
    if let Selector::Locations(ids) = &def.selector {
        let known = db::locations::known_ids(&state.pool, ids).await?;
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid {
                message: format!(
                    "{} of the listed locations are not registered",
                    unknown.len()
                ),
                details: Details::UnknownLocations {
                    field: "locations".into(),
                    unknown,
                },
            });
        }
    }
    let mut tx = state.pool.begin().await?;
    let created = db::channels::upsert(&mut *tx, &def).await?;
    db::channels::mark_all_dirty(&mut *tx).await?;
    tx.commit().await?;
    state.channels_changed().await;
    crate::events::relay::wake();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ChannelView::from(&def))))
}

/// An override as the API shows it: what is set (null: the channel's), and the terms in force.
#[derive(Serialize, ToSchema)]
struct OverrideView {
    channel: String,
    sku: String,
    buffer_units: Option<i64>,
    max_percent: Option<i64>,
    enabled: Option<bool>,
    effective: Effective,
}

#[derive(Serialize, ToSchema)]
struct Effective {
    buffer_units: i64,
    max_percent: i64,
    enabled: bool,
}

fn override_view(def: &ChannelDef, sku: &str, o: Option<&SkuOverride>) -> OverrideView {
    let t = def.terms(o);
    let o = o.copied().unwrap_or_default();
    OverrideView {
        channel: def.channel.clone(),
        sku: sku.to_owned(),
        buffer_units: o.buffer_units,
        max_percent: o.max_percent,
        enabled: o.enabled,
        effective: Effective {
            buffer_units: t.buffer_units,
            max_percent: t.max_percent,
            enabled: t.enabled,
        },
    }
}

async fn path(state: &AppState, name: &str, sku: &str) -> Result<ChannelDef, ApiError> {
    channel_name(name)?;
    validate::sku("sku", sku)?;
    known(state, name).await
}

/// A SKU's override in a channel
///
/// Scope `read`. What is set (null fields are the channel's) and the terms in force.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/skus/{sku}",
    tag = "channels",
    operation_id = "getChannelSkuOverride",
    params(
        ("channel" = String, Path, description = doc::CHANNELPATH),
        ("sku" = String, Path, description = doc::SKUPATH),
    ),
    responses(
        (status = 200, description = "The override (all null when there is none).", body = OverrideView),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn get_override(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, sku)): ApiPath<(String, String)>,
) -> Result<Json<OverrideView>, ApiError> {
    caller.require(Scope::Read)?;
    let def = path(&state, &name, &sku).await?;
    let o = db::channels::get_override(&state.pool, &name, &sku).await?;
    Ok(Json(override_view(&def, &sku, o.as_ref())))
}

/// Override a channel's terms for one SKU
///
/// Scope `admin`. Creates (201) or replaces (200) the override: `buffer_units` (>= 0),
/// `max_percent` (1-100), `enabled` (false: the channel sells none of this SKU); fields
/// left out or null are the channel's. Unknown channel: 404.
#[utoipa::path(
    put,
    path = "/v1/channels/{channel}/skus/{sku}",
    tag = "channels",
    operation_id = "putChannelSkuOverride",
    params(
        ("channel" = String, Path, description = doc::CHANNELPATH),
        ("sku" = String, Path, description = doc::SKUPATH),
    ),
    request_body(content = SkuOverride, example = json!({"max_percent": 80})),
    responses(
        (status = 200, description = "Replaced.", body = OverrideView),
        (status = 201, description = "Created.", body = OverrideView),
        (status = 400, response = doc::Malformed),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]
// Creates (201) or replaces (200) a SKU's override; fields left out are the channel's.
async fn put_override(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, sku)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<SkuOverride>,
) -> Result<(StatusCode, Json<OverrideView>), ApiError> {
    caller.require(Scope::Admin)?;
    let def = path(&state, &name, &sku).await?;
    let o = input.validate().map_err(invalid)?;
    let mut tx = state.pool.begin().await?;
    let created = db::channels::put_override(&mut *tx, &name, &sku, &o).await?;
    db::channels::mark_dirty(&mut *tx, &[sku.as_str()]).await?;
    tx.commit().await?;
    state.channels_changed().await;
    crate::events::relay::wake();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(override_view(&def, &sku, Some(&o)))))
}

#[derive(Serialize, ToSchema)]
struct Deleted {
    deleted: bool,
    #[serde(flatten)]
    now: OverrideView,
}

/// Remove a SKU's override
///
/// Scope `admin`. The channel's terms apply to the SKU again. Idempotent: `deleted` says
/// whether there was an override.
#[utoipa::path(
    delete,
    path = "/v1/channels/{channel}/skus/{sku}",
    tag = "channels",
    operation_id = "deleteChannelSkuOverride",
    params(
        ("channel" = String, Path, description = doc::CHANNELPATH),
        ("sku" = String, Path, description = doc::SKUPATH),
    ),
    responses(
        (status = 200, description = "The SKU's terms now.", body = Deleted),
        (status = 404, response = doc::NotFound),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("admin"))),
)]
// Removes a SKU's override (the channel's terms apply again). Idempotent: `deleted` says
// whether there was one.
async fn delete_override(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, sku)): ApiPath<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    caller.require(Scope::Admin)?;
    let def = path(&state, &name, &sku).await?;
    let mut tx = state.pool.begin().await?;
    let deleted = db::channels::delete_override(&mut *tx, &name, &sku).await?;
    if deleted {
        db::channels::mark_dirty(&mut *tx, &[sku.as_str()]).await?;
    }
    tx.commit().await?;
    if deleted {
        state.channels_changed().await;
        crate::events::relay::wake();
    }
    Ok(Json(Deleted {
        deleted,
        now: override_view(&def, &sku, None),
    }))
}
