//! The daemon: build every part (so tests can build one on a random port), then run until told
//! to stop, and drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, RedisStore, StockCache};
use crate::config::{Connections, ServeConfig, Subjects};
use crate::directory::{self, Directory};
use crate::events_hub::{self, ChangeHub};
use crate::http::{self, auth::Auth, AppState};
use crate::{db, ingest};

/// Connects to NATS (user and password, if any, ride in the URL).
pub async fn connect_nats(c: &Connections) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .name("omnistock")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    // retry_on_initial_connect makes connect() return at once; wait briefly for the first
    // connection so a wrong URL is reported at start rather than as a silent stall.
    let client = options
        .connect(&c.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {}", c.nats_url))?;
    for _ in 0..50 {
        if matches!(
            client.connection_state(),
            async_nats::connection::State::Connected
        ) {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("NATS at {} did not answer within 5 seconds", c.nats_url)
}

pub async fn connect_db(c: &Connections) -> anyhow::Result<PgPool> {
    db::connect(&c.database_url, c.db_max_connections)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL)")
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    auth: Auth,
    ingest: ingest::Ingest,
    config: ServeConfig,
}

impl Application {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let c = &config.connections;
        let pool = connect_db(c).await?;
        if config.migrate_on_start {
            db::migrate(&pool).await.context("applying migrations")?;
        }
        let nats = connect_nats(c).await?;
        let subjects = Subjects::new(&c.subject_prefix);
        let js = jetstream::new(nats.clone());
        let stream = ingest::ensure_streams(&js, &subjects)
            .await
            .context("creating the JetStream streams (is JetStream enabled on the server?)")?;
        ingest::ensure_consumer(
            &stream,
            &subjects,
            config.ack_wait(),
            config.ingest_max_deliver,
        )
        .await?;
        crate::outbox::ensure_streams(&js, &subjects).await?;
        crate::events::set_default_low_stock_threshold(config.low_stock_threshold);
        let store = RedisStore::new(&c.redis_url, &c.redis_prefix).context("REDIS_URL")?;
        let cache = StockCache::new(store, pool.clone());
        let directory = Directory::load(&pool).await?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP API to {}", config.http_addr))?;
        if config.api_keys.is_empty() {
            tracing::warn!(
                "OMNISTOCK_API_KEYS is empty: every /v1 request will be refused with 401"
            );
        }
        let auth = Auth::new(config.api_keys.clone(), config.rate_limit_per_second);
        let ingest = ingest::Ingest {
            pool: pool.clone(),
            js,
            cache: Arc::clone(&cache),
            subjects: subjects.clone(),
            batch: config.ingest_batch.clamp(1, 10_000),
            ack_wait: config.ack_wait(),
            max_deliver: config.ingest_max_deliver,
        };
        let state = AppState {
            pool,
            cache,
            directory,
            nats,
            subjects,
            changes: ChangeHub::default(),
        };
        Ok(Application {
            listener,
            state,
            auth,
            ingest,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.http_addr)
    }

    /// Serves and consumes until `shutdown` completes, then stops taking requests and
    /// messages, lets the batch in hand commit and ack, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let mut jobs = JoinSet::new();
        let addr = self.local_addr();
        let st = &self.state;
        jobs.spawn(named(
            "outbox-relay",
            crate::outbox::run_relay(
                st.pool.clone(),
                self.ingest.js.clone(),
                st.subjects.clone(),
                token.clone(),
            ),
        ));
        jobs.spawn(named("ingest", ingest::run(self.ingest, token.clone())));
        jobs.spawn(named(
            "cache-resync",
            cache::run_resync_job(
                Arc::clone(&st.cache),
                self.config.cache_rebuild_on_start,
                token.clone(),
            ),
        ));
        jobs.spawn(named(
            "reservation-expiry",
            crate::reservations::run_expiry_job(
                st.pool.clone(),
                Arc::clone(&st.cache),
                token.clone(),
            ),
        ));
        jobs.spawn(named(
            "location-refresh",
            directory::run_refresh_job(
                st.directory.clone(),
                st.pool.clone(),
                st.nats.clone(),
                st.subjects.locations_changed(),
                token.clone(),
            ),
        ));
        jobs.spawn(named(
            "change-fanout",
            events_hub::run_fanout_job(
                st.changes.clone(),
                st.nats.clone(),
                st.subjects.clone(),
                token.clone(),
            ),
        ));
        jobs.spawn(named(
            "reconcile",
            crate::reconcile::run_job(
                st.pool.clone(),
                Arc::clone(&st.cache),
                Duration::from_secs(self.config.reconcile_interval_seconds),
                token.clone(),
            ),
        ));
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });

        tracing::info!(%addr, "omnistock serving");
        let app = http::router(self.state.clone(), self.auth);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await;
        token.cancel();

        let grace = Duration::from_secs(self.config.shutdown_grace_seconds);
        let drained =
            tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("background jobs did not stop within {grace:?}; aborting them");
            jobs.abort_all();
        }
        // Draining closes the connection, so the server drops this daemon's pending pull
        // requests at once instead of delivering to them until they time out.
        if let Err(e) = self.state.nats.drain().await {
            tracing::warn!(error = %e, "NATS drain at shutdown failed");
        }
        self.state.pool.close().await;
        tracing::info!("omnistock stopped");
        served.context("HTTP server failed")
    }
}

/// Runs a background job inside a span carrying its name, and logs when it ends.
async fn named(name: &'static str, job: impl Future<Output = ()>) {
    use tracing::Instrument;
    job.instrument(tracing::info_span!("job", name)).await;
    tracing::debug!(job = name, "background job finished");
}
