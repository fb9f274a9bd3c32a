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
use serde_json::json;
use tokio::sync::Semaphore;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::validate;
use super::AppState;
use crate::events_hub::{Delivery, Filter};

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

#[derive(Serialize)]
struct TokenAnswer {
    /// Opens `GET /v1/stream?token=` until `expires_at`; grants nothing else.
    token: String,
    expires_at: DateTime<Utc>,
}

/// Trades a key with the `read` scope for a short-lived stream token.
async fn token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TokenAnswer>, ApiError> {
    caller.require(Scope::Read)?;
    let (token, expires_at) = state.stream_tokens.issue(caller.grant(), Utc::now());
    Ok(Json(TokenAnswer { token, expires_at }))
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
            .data(json!({ "skipped": n }).to_string()),
    }
}

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
