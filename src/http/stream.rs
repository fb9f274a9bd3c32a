//! `GET /v1/stream`: level changes as server-sent events, for browsers and store tablets.
//!
//! Each change is an event named `change` whose `id` is the change's `event_id` and whose data
//! is the change event's JSON, as published on `<prefix>.changes.<location_id>`. `sku` and
//! `location_id` narrow the stream. A client that falls too far behind gets an event named
//! `lagged` (data `{"skipped": n}`) and should re-read what it shows from `/v1/availability`.
//! Nothing is replayed: a reconnecting client re-reads state the same way.
//!
//! A browser opens it with `?token=` from `POST /v1/stream/token` (see `stream_token`): an
//! `EventSource` cannot send the key in a header, and the key never goes into a URL.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::HeaderName;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::openapi as doc;
use super::validate;
use super::AppState;
use crate::events::hub::{Delivery, Filter};

/// Interval of the keep-alive comment, so proxies and tablets do not drop an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to `EventSource` clients.
const RETRY: Duration = Duration::from_secs(3);

/// The cap on open streams: each holds a task, a broadcast receiver and a socket.
#[derive(Clone)]
pub struct StreamSlots(Arc<Semaphore>);

impl StreamSlots {
    pub fn new(max: usize) -> Self {
        StreamSlots(Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))))
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stream", get(stream))
        .route("/v1/stream/token", post(token))
}

#[derive(OpenApi)]
#[openapi(paths(stream, token))]
pub struct Doc;

#[derive(Serialize, ToSchema)]
struct TokenAnswer {
    /// Opens `GET /v1/stream?token=` until `expires_at`; grants nothing else.
    token: String,
    expires_at: DateTime<Utc>,
}

/// A short-lived token that opens the live stream from a browser
///
/// Scope: `read`. Trades the caller's key for a token that opens `GET /v1/stream?token=`
/// for 300 seconds and grants nothing else (no other route accepts it). It is signed with
/// HMAC-SHA256 under `OMNISTOCK_STREAM_SECRET` (every daemon sharing the secret accepts
/// it; unset, a random per-process secret, so a token works only on the daemon that issued
/// it) and carries its expiry and the key's bound location, never the key. No body.
#[utoipa::path(
    post,
    path = "/v1/stream/token",
    tag = "stream",
    operation_id = "streamToken",
    responses(
        (status = 200, description = "The token.", body = TokenAnswer),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
// Trades a key with the `read` scope for a short-lived stream token.
async fn token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TokenAnswer>, ApiError> {
    caller.require(Scope::Read)?;
    let (token, expires_at) = state.stream_tokens.issue(caller.grant(), Utc::now());
    Ok(Json(TokenAnswer { token, expires_at }))
}

/// Data of a `lagged` event: how many changes this client missed.
#[derive(Serialize)]
struct Lagged {
    skipped: u64,
}

#[derive(Deserialize)]
struct StreamQuery {
    sku: Option<String>,
    location_id: Option<String>,
}

fn filter(q: StreamQuery) -> Result<Filter, ApiError> {
    if let Some(sku) = &q.sku {
        validate::sku("sku", sku)?;
    }
    if let Some(id) = &q.location_id {
        validate::location_id("location_id", id)?;
    }
    Ok(Filter {
        sku: q.sku,
        location_id: q.location_id,
    })
}

fn event(d: Delivery) -> Event {
    match d {
        Delivery::Change(c) => {
            let e = Event::default().event("change");
            let e = match &c.event_id {
                Some(id) => e.id(id),
                None => e,
            };
            e.data(&c.data)
        }
        Delivery::Lagged(n) => Event::default()
            .event("lagged")
            .json_data(Lagged { skipped: n })
            .unwrap_or_else(|_| Event::default().event("lagged")),
    }
}

/// Live level changes as server-sent events
///
/// Scope: `read`. For store tablets and staff pages that show stock live. The stream opens
/// with `retry: 3000` and the comment `: connected`; then each level change is an event
/// named `change` whose `id` is the change's `event_id` and whose `data` is the change
/// event's JSON on one line (schema `ChangeEvent`, as published on
/// `inventory.changes.<location_id>`). A client more than 4,096 events behind receives an
/// event named `lagged` with data `{"skipped": n}` (schema `LaggedEvent`) and should re-read
/// `/v1/availability`; the stream goes on. A comment line every 15 s keeps it open through
/// proxies. Nothing is replayed (`Last-Event-ID` is ignored): on (re)connecting, read
/// `/v1/availability` and apply changes with a higher `version`. The stream ends when the
/// daemon stops. At most `OMNISTOCK_SSE_MAX_CONNECTIONS` streams (default 1000) are open at
/// once; over it, 503 `unavailable` with `Retry-After`. A browser `EventSource` cannot send the
/// key header: instead of a key it may pass `token` from `POST /v1/stream/token` (never the
/// key itself in a URL). A token is checked when the stream opens; an open stream is not cut
/// when it expires.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "stream",
    operation_id = "streamChanges",
    params(
        ("token" = Option<String>, Query, description = "A stream token from `POST /v1/stream/token`, used only when the request carries no key. Invalid or expired → 401."),
        ("sku" = Option<String>, Query, description = "Only changes of this SKU (exact, case-sensitive, percent-encoded)."),
        ("location_id" = Option<String>, Query, description = "Only changes at this location."),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`.", body = String, content_type = "text/event-stream", example = json!("retry: 3000\n: connected\n\nevent: change\nid: chg-123\ndata: {\"event_id\":\"chg-123\",\"location_id\":\"TW001\",\"sku\":\"TEE-112-BLK-L\",\"on_hand\":7,\"reserved\":1,\"available\":6,\"in_transit\":0,\"version\":42,\"changed_at\":\"2026-11-23T02:00:00.12Z\",\"cause\":\"sale\",\"reference\":\"pos-TW001-20261123-000123\"}\n\nevent: lagged\ndata: {\"skipped\":17}\n")),
        (status = 400, response = doc::Malformed),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Read)?;
    let filter = filter(q)?;
    // Held by the stream until the client goes away.
    let slot = Arc::clone(&state.streams.0)
        .try_acquire_owned()
        .map_err(|_| {
            crate::metrics::METRICS.sse_refused.inc();
            ApiError::Unavailable("a live stream slot (the most allowed are open)")
        })?;
    let changes = state
        .changes
        .subscribe_live(filter)
        .await
        .ok_or(ApiError::Unavailable(
            "the change stream (the daemon is stopping)",
        ))?;
    // A first event carrying the reconnection delay: it also gets the headers and one chunk
    // through any buffering proxy at once, so the client knows the stream is open.
    let hello = Event::default().retry(RETRY).comment("connected");
    let events = futures::stream::once(async move { hello })
        .chain(changes.map(event))
        .map(move |e| {
            let _held = &slot;
            Ok::<_, Infallible>(e)
        });
    Ok((
        // Tells nginx-style proxies not to buffer the stream.
        [(HeaderName::from_static("x-accel-buffering"), "no")],
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}
