//! The daemon: build every part (so tests can build one on a random port), then run until told
//! to stop, and drain.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, RedisStore, StockCache};
use crate::channels::{self, Channels};
use crate::config::{redact_url, Connections, Limits, NatsAuth, ServeConfig, Subjects};
use crate::db::health::DbHealth;
use crate::db::PoolSettings;
use crate::directory::{self, Directory};
use crate::events::hub::{self, ChangeHub};
use crate::http::{
    self, auth::Auth, AppState, Deadlines, Readiness, Shared, StreamSlots, StreamTokens,
};
use crate::jobs::{JobStatus, Supervisor};
use crate::{db, ingest};

/// Connects to NATS with the configured credentials and TLS (see [`NatsAuth`]). Every command
/// that talks to NATS comes through here. No secret reaches a log: URL passwords are masked,
/// and errors name the variable or file, never the seed or password.
pub async fn connect_nats(c: &Connections) -> anyhow::Result<async_nats::Client> {
    // The last refusal (e.g. "authorization violation"), to say why a start failed.
    let refused: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let seen = Arc::clone(&refused);
    let options = async_nats::ConnectOptions::new()
        .name("omnistock")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            if let async_nats::Event::ClientError(e) = &event {
                if let Ok(mut last) = seen.lock() {
                    *last = Some(e.to_string());
                }
            }
            async {}
        });
    let options = nats_security(options, &c.nats_auth).await?;
    let shown = redact_url(&c.nats_url);
    // retry_on_initial_connect makes connect() return at once; wait briefly for the first
    // connection so a wrong URL is reported at start rather than as a silent stall.
    // The servers of one cluster, comma-separated (the contract's NATS_URL): async-nats
    // parses a single string as one URL.
    let servers: Vec<&str> = c
        .nats_url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let client = options
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {shown}"))?;
    for _ in 0..50 {
        if matches!(
            client.connection_state(),
            async_nats::connection::State::Connected
        ) {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let why = refused.lock().ok().and_then(|last| last.clone());
    match why {
        Some(why) => anyhow::bail!("NATS at {shown} did not accept the connection: {why}"),
        None => anyhow::bail!("NATS at {shown} did not answer within 5 seconds"),
    }
}

/// Applies credentials and TLS to the connect options.
async fn nats_security(
    mut options: async_nats::ConnectOptions,
    a: &NatsAuth,
) -> anyhow::Result<async_nats::ConnectOptions> {
    a.validate()?;
    if let Some(path) = &a.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading the NATS creds file {}", path.display()))?;
    }
    let seed = match (&a.nats_nkey_seed, &a.nats_nkey_seed_file) {
        (Some(seed), _) => Some(seed.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the NKey seed file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(seed) = seed {
        // Checked here so a wrong seed says so, instead of a bare "authorization violation".
        nkeys::KeyPair::from_seed(&seed)
            .map_err(|_| anyhow::anyhow!("the NATS NKey seed is not a valid seed (SU...)"))?;
        options = options.nkey(seed);
    }
    if let (Some(user), Some(password)) = (&a.nats_user, &a.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &a.nats_tls_ca {
        anyhow::ensure!(ca.is_file(), "NATS_TLS_CA {} is not a file", ca.display());
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&a.nats_tls_cert, &a.nats_tls_key) {
        for f in [cert, key] {
            anyhow::ensure!(f.is_file(), "{} is not a file", f.display());
        }
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if a.nats_tls_required {
        options = options.require_tls(true);
    }
    if let Some(prefix) = &a.nats_inbox_prefix {
        options = options.custom_inbox_prefix(prefix.clone());
    }
    Ok(options)
}

/// Creates the streams and the ingest consumer, retrying for a bounded time: a daemon started
/// together with its NATS cluster (compose, Kubernetes, a restart of both), or restarted while
/// the cluster elects a new stream leader after losing a node, can ask before JetStream is ready:
/// a replicated stream is then refused ("no suitable peers") or a request times out for a few
/// seconds although nothing is wrong.
async fn ensure_jetstream_patiently(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &ServeConfig,
) -> anyhow::Result<()> {
    const PATIENCE: Duration = Duration::from_secs(30);
    let replicas = config.stream_replicas;
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let attempt = async {
            let stream = ingest::ensure_streams_replicated(js, subjects, replicas)
                .await
                .context("creating the JetStream streams (is JetStream enabled on the server?)")?;
            ingest::ensure_consumer(
                &stream,
                subjects,
                config.ack_wait(),
                config.ingest_max_deliver,
            )
            .await
            .context("creating the ingest consumer")?;
            crate::events::relay::ensure_streams_replicated(js, subjects, replicas)
                .await
                .context("creating the event streams")?;
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() + pause < PATIENCE => {
                tracing::warn!(error = %format!("{e:#}"), "JetStream is not ready; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pool of one-off commands: no statement or lock bound (an import or export may rightly
/// run one long statement).
pub async fn connect_db(c: &Connections) -> anyhow::Result<PgPool> {
    let mut settings = PoolSettings::new(&c.database_url, c.db_max_connections);
    settings.acquire_timeout = c.db_acquire_timeout();
    db::connect_with(&settings)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL)")
}

/// The daemon's pool: every session runs under the configured statement and lock timeouts.
async fn connect_daemon_db(c: &Connections, limits: &Limits) -> anyhow::Result<PgPool> {
    db::connect_with(&PoolSettings {
        url: &c.database_url,
        max_connections: c.db_max_connections,
        acquire_timeout: c.db_acquire_timeout(),
        statement_timeout: Duration::from_millis(limits.db_statement_timeout_ms),
        lock_timeout: Duration::from_millis(limits.db_lock_timeout_ms),
    })
    .await
    .context("connecting to PostgreSQL (DATABASE_URL)")
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    auth: Auth,
    ingest: ingest::Ingest,
    config: ServeConfig,
    shutdown: CancellationToken,
    jobs: Supervisor,
}

impl Application {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        // Before anything is counted: what is recorded without a recorder is lost.
        crate::metrics::handle();
        let c = &config.connections;
        let pool = connect_daemon_db(c, &config.limits).await?;
        if config.migrate_on_start {
            db::migrate(&pool).await.context("applying migrations")?;
        }
        let nats = connect_nats(c).await?;
        let subjects = Subjects::new(&c.subject_prefix);
        let js = jetstream::new(nats.clone());
        ensure_jetstream_patiently(&js, &subjects, &config).await?;
        crate::events::set_default_low_stock_threshold(config.low_stock_threshold);
        let store = RedisStore::new(&c.redis_url, &c.redis_prefix).context("REDIS_URL")?;
        let db_health = DbHealth::default();
        let cache = StockCache::with_db_health(store, pool.clone(), db_health.clone());
        let directory = Directory::load(&pool).await?;
        let channels = Channels::load(&pool).await?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP API to {}", config.http_addr))?;
        if config.api_keys.is_empty() {
            tracing::warn!(
                "OMNISTOCK_API_KEYS is empty: every /v1 request will be refused with 401"
            );
        }
        let stream_tokens = StreamTokens::new(config.stream_secret.as_deref())
            .map_err(anyhow::Error::msg)
            .context("OMNISTOCK_STREAM_SECRET")?;
        let auth = Auth::new(
            config.api_keys.clone(),
            config.rate_limit_per_second,
            stream_tokens.clone(),
        );
        let ingest = ingest::Ingest {
            pool: pool.clone(),
            js,
            cache: Arc::clone(&cache),
            subjects: subjects.clone(),
            batch: config.ingest_batch.clamp(1, 10_000),
            ack_wait: config.ack_wait(),
            max_deliver: config.ingest_max_deliver,
            replicas: config.stream_replicas,
            shards: config.ingest_shards.clamp(1, 64),
        };
        let shutdown = CancellationToken::new();
        let jobs = Supervisor::new(shutdown.clone(), JobStatus::default());
        let holds = crate::holds::group::HoldQueues::new(pool.clone(), Arc::clone(&cache));
        let routes = crate::holds::route_group::RouteQueues::new(
            pool.clone(),
            Arc::clone(&cache),
            directory.clone(),
        );
        let state = AppState::new(Shared {
            holds,
            routes,
            pool,
            cache,
            directory,
            channels,
            nats,
            subjects,
            changes: ChangeHub::default(),
            jobs: jobs.status().clone(),
            readiness: Readiness::default(),
            streams: StreamSlots::new(config.limits.sse_max_connections),
            stream_tokens,
            ops: config.ops,
            deadlines: Deadlines {
                request: config.limits.http_request_timeout(),
                db_down: config.limits.db_down_request_timeout(),
                db: db_health,
            },
        });
        Ok(Application {
            listener,
            state,
            auth,
            ingest,
            config,
            shutdown,
            jobs,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.http_addr)
    }

    /// The supervisor of the background jobs, to add one before running (a plugin, a test).
    pub fn jobs(&mut self) -> &mut Supervisor {
        &mut self.jobs
    }

    /// Serves and consumes until `shutdown` completes, then stops taking requests and
    /// messages, lets the batch in hand commit and ack, and returns. Open requests and streams,
    /// then background jobs, each get at most `shutdown_grace_seconds`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            auth,
            ingest,
            config,
            shutdown: token,
            mut jobs,
        } = self;
        let addr = listener.local_addr().unwrap_or(config.http_addr);
        let st = &state;
        {
            let (pool, js, subjects) = (st.pool.clone(), ingest.js.clone(), st.subjects.clone());
            jobs.spawn("outbox-relay", move |t| {
                crate::events::relay::run_relay(pool.clone(), js.clone(), subjects.clone(), t)
            });
        }
        jobs.spawn("ingest", move |t| ingest::run(ingest.clone(), t));
        {
            let options = (*st.pool.connect_options()).clone();
            let health = st.deadlines.db.clone();
            jobs.spawn("postgres-watch", move |t| {
                db::health::watch(options.clone(), health.clone(), t)
            });
        }
        {
            let cache = Arc::clone(&st.cache);
            // Rebuilt once at start; a restarted job only resyncs.
            let mut rebuild = config.cache_rebuild_on_start;
            jobs.spawn("cache-resync", move |t| {
                let first = std::mem::take(&mut rebuild);
                cache::run_resync_job(Arc::clone(&cache), first, t)
            });
        }
        {
            let (pool, cache) = (st.pool.clone(), Arc::clone(&st.cache));
            jobs.spawn("reservation-expiry", move |t| {
                crate::holds::reservations::run_expiry_job(pool.clone(), Arc::clone(&cache), t)
            });
        }
        {
            let (directory, pool, nats) = (st.directory.clone(), st.pool.clone(), st.nats.clone());
            let subject = st.subjects.locations_changed();
            jobs.spawn("location-refresh", move |t| {
                directory::run_refresh_job(
                    directory.clone(),
                    pool.clone(),
                    nats.clone(),
                    subject.clone(),
                    t,
                )
            });
        }
        {
            let (ch, pool, nats) = (st.channels.clone(), st.pool.clone(), st.nats.clone());
            let subject = st.subjects.channels_changed();
            jobs.spawn("channel-refresh", move |t| {
                channels::run_refresh_job(
                    ch.clone(),
                    pool.clone(),
                    nats.clone(),
                    subject.clone(),
                    t,
                )
            });
        }
        {
            let (hub, nats, subjects) = (st.changes.clone(), st.nats.clone(), st.subjects.clone());
            jobs.spawn("change-fanout", move |t| {
                hub::run_fanout_job(hub.clone(), nats.clone(), subjects.clone(), t)
            });
        }
        {
            let (pool, cache) = (st.pool.clone(), Arc::clone(&st.cache));
            let interval = Duration::from_secs(config.reconcile_interval_seconds);
            jobs.spawn("reconcile", move |t| {
                crate::ops::reconcile::run_job(pool.clone(), Arc::clone(&cache), interval, t)
            });
        }
        {
            let (pool, js, subjects) = (
                st.pool.clone(),
                jetstream::new(st.nats.clone()),
                st.subjects.clone(),
            );
            jobs.every("metrics-poll", crate::metrics::poll::PERIOD, move |_| {
                let (pool, js, subjects) = (pool.clone(), js.clone(), subjects.clone());
                async move { crate::metrics::poll::tick(&pool, &js, &subjects).await }
            });
        }
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });

        tracing::info!(%addr, "omnistock serving");
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        let app = http::layers::wrap(
            http::router(state.clone(), auth),
            &config.cors_allow_origins,
        );
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future();
        // Graceful shutdown waits for every open connection; a client that never finishes
        // its request must not keep the daemon alive past the grace.
        let served = tokio::select! {
            served = server => served,
            () = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("open HTTP connections did not finish within {grace:?}; closing them");
                Ok(())
            }
        };
        token.cancel();

        if !jobs.join(grace).await {
            tracing::warn!("background jobs did not stop within {grace:?}; aborted them");
        }
        // Draining closes the connection, so the server drops this daemon's pending pull
        // requests at once instead of delivering to them until they time out.
        match tokio::time::timeout(grace, state.nats.drain()).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "NATS drain at shutdown failed"),
            Err(_) => tracing::warn!("NATS drain did not finish within {grace:?}"),
            Ok(Ok(())) => {}
        }
        state.pool.close().await;
        tracing::info!("omnistock stopped");
        served.context("HTTP server failed")
    }
}
