//! The JetStream ceiling: how many messages a second this NATS server stores when a client
//! publishes them the way the outbox relay does: each with a `Nats-Msg-Id`, up to 1,000 acks in
//! flight, a new message sent as each ack returns. The relay's change events are divided by it
//! (with `sync_interval: always` the server syncs what it stores before it acks).

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;

use crate::app;
use crate::config::Connections;

/// The scratch stream: its own subjects, so it overlaps no stream of the daemon's.
const STREAM: &str = "OMNISTOCK_BENCH_CEILING";
const SUBJECT: &str = "omnistock-bench-ceiling";
/// Acks in flight at most, as the relay's batch.
const IN_FLIGHT: usize = 1_000;
/// Every ack is awaited at most this long.
const ACK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Messages to publish.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Bytes per message (a change event is about 250).
    #[arg(long, default_value_t = 250)]
    pub size: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub messages: usize,
    pub seconds: f64,
    pub rate: f64,
}

pub async fn run(c: &Connections, args: &Args) -> anyhow::Result<Report> {
    let client = app::connect_nats(c).await?;
    let js = jetstream::new(client);
    // A stream left by an interrupted run would hold old ids in its duplicate window.
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .context("creating the scratch stream")?;
    let result = publish(&js, args).await;
    let _ = js.delete_stream(STREAM).await;
    result
}

async fn publish(js: &jetstream::Context, args: &Args) -> anyhow::Result<Report> {
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    // A window, not rounds: a new message goes out as each ack comes back, as the relay's
    // per-SKU queues keep up to a batch in flight.
    let mut acks = FuturesUnordered::new();
    for i in 0..args.messages {
        if acks.len() == IN_FLIGHT {
            if let Some(acked) = acks.next().await {
                settle(acked)?;
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("ceiling-{i}").as_str());
        // Spread over subjects as change events are (one per location).
        let subject = format!("{SUBJECT}.{}", i % 50);
        let ack = js
            .publish_with_headers(subject, headers, body.clone())
            .await?;
        acks.push(tokio::time::timeout(ACK_WAIT, ack.into_future()));
    }
    while let Some(acked) = acks.next().await {
        settle(acked)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        messages: args.messages,
        seconds,
        rate: args.messages as f64 / seconds.max(1e-9),
    })
}

type Acked = Result<
    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    tokio::time::error::Elapsed,
>;

fn settle(acked: Acked) -> anyhow::Result<()> {
    match acked {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("JetStream did not ack within 30 s"),
    }
}
