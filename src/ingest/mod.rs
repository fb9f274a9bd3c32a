//! Movements in: the JetStream stream and durable pull consumer, and the loop that hands what
//! arrives to the shards (`shards`: several transactions in flight, split by SKU), acking each
//! message only after all its movements are committed.
//!
//! Several daemons may share the consumer: JetStream hands each message to one of them, and
//! the ledger's unique `event_id` (see `apply`) makes a redelivery to another daemon harmless.

pub mod apply;
mod batch;
pub mod deadletter;
pub mod isolate;
pub mod shards;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::StockCache;
use crate::config::Subjects;
use crate::metrics::METRICS;

/// Durable name of the consumer every daemon shares.
pub const CONSUMER: &str = "omnistock-ingest";

/// Creates, if missing, the stream of movements and the stream keeping dead letters (one
/// replica).
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<stream::Stream> {
    ensure_streams_replicated(js, subjects, 1).await
}

/// [`ensure_streams`] with `replicas` copies of each new stream (`OMNISTOCK_STREAM_REPLICAS`;
/// 3 on a 3-node cluster, so losing one node loses no movement and stops no ingest).
pub async fn ensure_streams_replicated(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> anyhow::Result<stream::Stream> {
    let replicas = replicas.max(1);
    js.get_or_create_stream(stream::Config {
        name: subjects.deadletter_stream(),
        subjects: vec![subjects.deadletter_wildcard()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(30 * 24 * 3600),
        num_replicas: replicas,
        ..Default::default()
    })
    .await?;
    Ok(js
        .get_or_create_stream(stream::Config {
            name: subjects.movements_stream(),
            subjects: vec![subjects.movements_wildcard()],
            storage: stream::StorageType::File,
            // Kept after they are applied, so a new consumer or an audit can replay them.
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        })
        .await?)
}

/// Creates the durable consumer, or updates it to this configuration (`create_consumer` is
/// create-or-update; `get_or_create_consumer` would keep a consumer made before `max_deliver`
/// existed unlimited).
pub async fn ensure_consumer(
    stream: &stream::Stream,
    subjects: &Subjects,
    ack_wait: Duration,
    max_deliver: i64,
) -> anyhow::Result<consumer::PullConsumer> {
    let config = consumer::pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        filter_subject: subjects.movements_wildcard(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: 20_000,
        max_deliver: if max_deliver > 0 { max_deliver } else { -1 },
        ..Default::default()
    };
    let current = stream
        .get_consumer::<consumer::pull::Config>(CONSUMER)
        .await;
    match current {
        Ok(mut c) => {
            let info = c.info().await?;
            if info.config.max_deliver == config.max_deliver
                && info.config.ack_wait == config.ack_wait
                && info.config.max_ack_pending == config.max_ack_pending
            {
                return Ok(c);
            }
            Ok(stream.create_consumer(config).await?)
        }
        Err(_) => Ok(stream.create_consumer(config).await?),
    }
}

/// What the ingest loop needs.
#[derive(Clone)]
pub struct Ingest {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub cache: Arc<StockCache>,
    pub subjects: Subjects,
    pub batch: usize,
    pub ack_wait: Duration,
    /// JetStream's delivery limit of the consumer (0: unlimited).
    pub max_deliver: i64,
    /// Replicas of the streams when (re)created (`OMNISTOCK_STREAM_REPLICAS`).
    pub replicas: usize,
    /// Transactions applying movements at once, each for its own SKUs
    /// (`OMNISTOCK_INGEST_SHARDS`; see `shards`).
    pub shards: usize,
}

/// Background job: consumes until `shutdown`, finishing the batch in hand. Any failure of the
/// consumer (NATS restart, stream deleted) rebuilds it, with exponential backoff.
pub async fn run(ingest: Ingest, shutdown: CancellationToken) {
    let shards = shards::Shards::start(&ingest, ingest.shards);
    let mut backoff = Duration::from_millis(100);
    loop {
        match consume(&ingest, &shards, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                METRICS.ingest_consumer_restarts.inc();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "movement consumer failed; rebuilding");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    // What was handed to the shards is applied and settled before we stop.
    shards.stop().await;
    tracing::info!("movement ingest stopped");
}

async fn consume(
    ingest: &Ingest,
    shards: &shards::Shards,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let stream = ensure_streams_replicated(&ingest.js, &ingest.subjects, ingest.replicas).await?;
    let consumer = ensure_consumer(
        &stream,
        &ingest.subjects,
        ingest.ack_wait,
        ingest.max_deliver,
    )
    .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(ingest.batch)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await?;
    // Whatever has arrived is one batch: large under load, a single message when idle.
    let mut chunks = messages.ready_chunks(ingest.batch);
    tracing::info!(stream = %stream.cached_info().config.name, consumer = CONSUMER, "consuming movements");
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("the message stream ended");
        };
        let mut msgs = Vec::with_capacity(chunk.len());
        let mut failure = None;
        for item in chunk {
            match item {
                Ok(m) => msgs.push(m),
                Err(e) => failure = Some(e),
            }
        }
        // Not raced against shutdown: a batch in hand is queued, then applied and acked
        // before we stop (`Shards::stop`).
        batch::dispatch(ingest, shards, msgs).await;
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
}
