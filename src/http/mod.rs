//! The HTTP API: one router per resource, one error type, API keys on everything under `/v1`.

mod atp;
pub mod auth;
mod availability;
mod channels;
mod docs;
pub mod error;
mod extract;
mod health;
pub mod layers;
mod levels;
mod locations;
mod metrics_layer;
mod movements;
pub mod openapi;
mod ops;
mod orders;
mod page;
mod reservations;
mod skus;
mod stream;
pub mod stream_token;
mod supply;
mod validate;
mod whoami;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sqlx::PgPool;

use crate::cache::StockCache;
use crate::channels::Channels;
use crate::config::Subjects;
use crate::db::health::DbHealth;
use crate::directory::Directory;
use crate::events::hub::ChangeHub;
use crate::jobs::JobStatus;
use auth::Auth;
use error::ApiError;
pub use health::Readiness;
pub use stream::StreamSlots;
pub use stream_token::StreamTokens;

/// What every handler reads. Cloned per request (axum's `State` extractor), so it is one `Arc`:
/// cloning the fields one by one (a NATS client, a pool, a dozen `Arc`s) was 10 % of a
/// cached read's CPU in a profile.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    pub pool: PgPool,
    pub cache: Arc<StockCache>,
    pub directory: Directory,
    /// Channel definitions and per-SKU overrides, in memory for reads.
    pub channels: Channels,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    /// Level change events fanned out to live-stream clients (`GET /v1/stream`).
    pub changes: ChangeHub,
    /// The background jobs, alive or dead (`/readyz`, `/metrics`).
    pub jobs: JobStatus,
    /// The last dependency probe of `/readyz`, reused for a second.
    pub readiness: Readiness,
    /// Room for live streams: one slot per open `GET /v1/stream`.
    pub streams: StreamSlots,
    /// Signs and checks the tokens that open a live stream from a browser.
    pub stream_tokens: StreamTokens,
    /// Traffic-light thresholds of the ops view.
    pub ops: crate::config::OpsThresholds,
    /// How long a request may take.
    pub deadlines: Deadlines,
    /// Holds queued per hot level, group-committed.
    pub holds: crate::holds::group::HoldQueues,
    /// Routes queued per channel, group-committed.
    pub routes: crate::holds::route_group::RouteQueues,
}

/// How long a request may take (making the response: the body of a live stream is not
/// counted), normally and while PostgreSQL is known to be down.
#[derive(Clone)]
pub struct Deadlines {
    pub request: Duration,
    pub db_down: Duration,
    pub db: DbHealth,
}

impl AppState {
    /// Reloads this daemon's locations and tells the others to do the same.
    pub async fn locations_changed(&self) {
        // Terms feed the totals: the triggers changed them in PostgreSQL, Redis follows.
        self.cache.totals_changed();
        if let Err(e) = self.directory.refresh(&self.pool).await {
            tracing::warn!(error = %e, "location reload failed; the periodic refresh will retry");
        }
        if let Err(e) = self
            .nats
            .publish(self.subjects.locations_changed(), "changed".into())
            .await
        {
            tracing::warn!(error = %e, "could not announce a location change");
        }
    }
}

impl AppState {
    /// Reloads this daemon's channels and tells the others to do the same.
    pub async fn channels_changed(&self) {
        self.cache.totals_changed();
        if let Err(e) = self.channels.refresh(&self.pool).await {
            tracing::warn!(error = %e, "channel reload failed; the periodic refresh will retry");
        }
        if let Err(e) = self
            .nats
            .publish(self.subjects.channels_changed(), "changed".into())
            .await
        {
            tracing::warn!(error = %e, "could not announce a channel change");
        }
    }
}

pub fn router(state: AppState, auth: Auth) -> Router {
    let v1 = Router::new()
        .merge(locations::router())
        .merge(availability::router())
        .merge(channels::router())
        .merge(reservations::router())
        .merge(orders::router())
        .merge(skus::router())
        .merge(movements::router())
        .merge(stream::router())
        .merge(levels::router())
        .merge(ops::router())
        .merge(whoami::router())
        .merge(supply::router())
        .route_layer(middleware::from_fn_with_state(auth, auth::authenticate));
    Router::new()
        .merge(health::router())
        .merge(page::router())
        .merge(docs::router())
        .merge(v1)
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.deadlines.clone(),
            time_limit,
        ))
        .layer(middleware::from_fn(metrics_layer::record))
        .with_state(state)
}

/// Gives up on a request that takes too long: the client gets a 503 it may retry (a hold or
/// route is idempotent by its id) instead of waiting on a stuck dependency. While PostgreSQL
/// is down the bound is short: what Redis answers still gets through, and a call needing
/// PostgreSQL fails fast instead of queueing for a connection that cannot come.
async fn time_limit(State(d): State<Deadlines>, req: Request, next: Next) -> Response {
    // A request already running when PostgreSQL goes down gets the short bound from then on.
    let db_down_for_a_while = async {
        d.db.down().await;
        tokio::time::sleep(d.db_down).await;
    };
    tokio::select! {
        response = next.run(req) => response,
        () = db_down_for_a_while => ApiError::Unavailable("PostgreSQL").into_response(),
        () = tokio::time::sleep(d.request) => {
            tracing::warn!(limit_ms = d.request.as_millis() as u64, "request timed out");
            ApiError::TimedOut(d.request).into_response()
        }
    }
}
