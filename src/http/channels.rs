//! `/v1/channels`: sales channel pools and their per-SKU overrides.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::json;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
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

#[derive(Serialize)]
struct ChannelList {
    channels: Vec<ChannelView>,
}

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

async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ChannelView>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(ChannelView::from(&known(&state, &name).await?)))
}

/// Creates (201) or replaces (200) a channel. Every SKU's totals may change with it: all are
/// marked for the channel feed, which publishes those that did.
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
        let unknown: Vec<&String> = ids.iter().filter(|id| !known.contains(*id)).collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid {
                message: format!(
                    "{} of the listed locations are not registered",
                    unknown.len()
                ),
                details: json!({ "field": "locations", "unknown": unknown }),
            });
        }
    }
    let mut tx = state.pool.begin().await?;
    let created = db::channels::upsert(&mut *tx, &def).await?;
    db::channels::mark_all_dirty(&mut *tx).await?;
    tx.commit().await?;
    state.channels_changed().await;
    crate::outbox::wake();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ChannelView::from(&def))))
}

/// An override as the API shows it: what is set (null: the channel's), and the terms in force.
#[derive(Serialize)]
struct OverrideView {
    channel: String,
    sku: String,
    buffer_units: Option<i64>,
    max_percent: Option<i64>,
    enabled: Option<bool>,
    effective: Effective,
}

#[derive(Serialize)]
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

/// Creates (201) or replaces (200) a SKU's override; fields left out are the channel's.
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
    crate::outbox::wake();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(override_view(&def, &sku, Some(&o)))))
}

#[derive(Serialize)]
struct Deleted {
    deleted: bool,
    #[serde(flatten)]
    now: OverrideView,
}

/// Removes a SKU's override (the channel's terms apply again). Idempotent: `deleted` says
/// whether there was one.
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
        crate::outbox::wake();
    }
    Ok(Json(Deleted {
        deleted,
        now: override_view(&def, &sku, None),
    }))
}
