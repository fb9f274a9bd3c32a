//! Publish → visible over HTTP: while a background load of movements streams in at a set rate,
//! publish single receipts for a probe SKU and time each until `GET /v1/availability/{sku}`
//! shows it. Measured end to end, from the client's side, so it includes JetStream's fsync,
//! the daemon's commit, the Redis write and the read path.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app;
use crate::config::{Connections, Subjects};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Background movements per second (published in messages of `--per-message`).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    #[arg(long, default_value_t = 50)]
    pub per_message: u32,
    /// Probes to time (one every `--interval-ms`).
    #[arg(long, default_value_t = 200)]
    pub samples: u32,
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// The daemon's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: std::net::SocketAddr,
    /// An API key with scope `read`.
    #[arg(long, env = "OMNISTOCK_BENCH_KEY")]
    pub key: String,
    /// The probe SKU: nothing else may move it during the run.
    #[arg(long, default_value = "BENCH-PROBE")]
    pub sku: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Background movements per second actually published (JetStream acks awaited).
    pub background_rate: f64,
    /// Set when the daemon fell behind the background load: a probe was not visible within
    /// [`WAIT`], or the probes ran past [`BUDGET`]. The percentiles are then those of the probes
    /// timed so far, and they only grow with a longer run.
    pub behind: Option<String>,
}

/// Every wait of the probe is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// All probes together: a daemon slower than the background load has a backlog that only
/// grows, and timing more probes would measure the length of the run, not the daemon.
const BUDGET: Duration = Duration::from_secs(60);

pub async fn run(c: &Connections, args: &Args) -> anyhow::Result<Report> {
    let pool = app::connect_db(c).await?;
    let js = jetstream::new(app::connect_nats(c).await?);
    let subjects = Subjects::new(&c.subject_prefix);
    let locations: Vec<String> = sqlx::query_scalar("SELECT location_id FROM locations ORDER BY 1")
        .fetch_all(&pool)
        .await?;
    let skus: Vec<String> =
        sqlx::query_scalar("SELECT sku FROM skus WHERE sku <> $1 ORDER BY sku LIMIT 2000")
            .bind(&args.sku)
            .fetch_all(&pool)
            .await?;
    anyhow::ensure!(
        !locations.is_empty() && !skus.is_empty(),
        "import locations and stock first"
    );
    let probe_location = locations[0].clone();
    let path = format!("/v1/availability/{}?channel=all", args.sku);

    let stop = tokio_util::sync::CancellationToken::new();
    let background = tokio::spawn(background(
        js.clone(),
        subjects.clone(),
        locations.clone(),
        skus,
        args.rate,
        args.per_message.max(1),
        stop.clone(),
    ));
    // let the background load settle into its rate before timing
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut expected = available(args.http, &path, &args.key).await?;
    let mut lat = Vec::with_capacity(args.samples as usize);
    let probing = Instant::now();
    let mut behind = None;
    let result: anyhow::Result<()> = async {
        for s in 0..args.samples {
            if probing.elapsed() > BUDGET {
                behind = Some(format!(
                    "{s} of {} probes within the {BUDGET:?} budget",
                    args.samples
                ));
                break;
            }
            let body = json!({
                "event_id": format!("probe-{run}-{s}"), "location_id": probe_location,
                "sku": args.sku, "kind": "receipt", "quantity": 1,
                "occurred_at": Utc::now(), "source": "bench",
            });
            let t = Instant::now();
            js.publish(
                subjects.movements(&probe_location),
                serde_json::to_vec(&body)?.into(),
            )
            .await?
            .await
            .context("JetStream did not store the probe")?;
            expected += 1;
            loop {
                if available(args.http, &path, &args.key).await? >= expected {
                    break;
                }
                if t.elapsed() > WAIT {
                    behind = Some(format!("probe {s} not visible over HTTP within {WAIT:?}"));
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        Ok(())
    }
    .await;
    stop.cancel();
    let background_rate = tokio::time::timeout(WAIT, background)
        .await
        .context("background publisher did not stop")???;
    result?;
    anyhow::ensure!(!lat.is_empty(), "{}", behind.unwrap_or_default());
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok(Report {
        samples: lat.len(),
        p50_ms: p(0.5),
        p90_ms: p(0.9),
        p99_ms: p(0.99),
        max_ms: p(1.0),
        background_rate,
        behind,
    })
}

/// Publishes `rate` movements a second until stopped; returns the rate achieved.
async fn background(
    js: jetstream::Context,
    subjects: Subjects,
    locations: Vec<String>,
    skus: Vec<String>,
    rate: u32,
    per_message: u32,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    if rate == 0 {
        stop.cancelled().await;
        return Ok(0.0);
    }
    let every = Duration::from_secs_f64(f64::from(per_message) / f64::from(rate));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // acks are awaited on their own task so that a slow ack does not slow the pace
    let (tx, mut rx) = tokio::sync::mpsc::channel::<jetstream::context::PublishAckFuture>(4096);
    let acker = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(a) = rx.recv().await {
            tokio::time::timeout(WAIT, a)
                .await
                .context("JetStream ack timed out")??;
            n += 1;
        }
        anyhow::Ok(n)
    });
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut k: usize = 0;
    let mut published = 0u64;
    let kinds = ["receipt", "sale", "sale", "return"];
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let location = &locations[k / per_message as usize % locations.len()];
        let body: Vec<_> = (0..per_message as usize)
            .map(|i| {
                let n = k + i;
                json!({
                    "event_id": format!("bg-{run}-{n}"), "location_id": location,
                    "sku": skus[(n * 7919) % skus.len()], "kind": kinds[n % kinds.len()],
                    "quantity": 1 + (n % 3), "occurred_at": Utc::now(), "source": "bench",
                })
            })
            .collect();
        k += per_message as usize;
        let ack = js
            .publish(
                subjects.movements(location),
                serde_json::to_vec(&body)?.into(),
            )
            .await?;
        tx.send(ack).await.context("ack task ended")?;
        published += u64::from(per_message);
    }
    drop(tx);
    tokio::time::timeout(WAIT, acker)
        .await
        .context("background acks did not arrive")???;
    Ok(published as f64 / started.elapsed().as_secs_f64())
}

/// `available` of the SKU's answer: one HTTP/1.1 request on a fresh connection (a client library
/// would be a dependency for this alone; localhost connects take microseconds).
async fn available(addr: std::net::SocketAddr, path: &str, key: &str) -> anyhow::Result<i64> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(WAIT, fetch)
        .await
        .context("HTTP read timed out")??;
    parse_available(&buf)
}

fn parse_available(buf: &[u8]) -> anyhow::Result<i64> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!(
            "GET availability answered {status}: {}",
            body.chars().take(200).collect::<String>()
        );
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let v: serde_json::Value =
        serde_json::from_str(&body).context("availability body is not JSON")?;
    v.get("available")
        .and_then(|a| a.as_i64())
        .context("no `available` in the answer")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_available_from_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n{\"sku\":\"X\",\"available\":41,\"locations\":[{\"available\":3}]}";
        assert_eq!(parse_available(plain).expect("plain"), 41);
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"ava\r\nf\r\nilable\":7,\"a\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_available(chunked).expect("chunked"), 7);
        let refused = b"HTTP/1.1 429 Too Many Requests\r\n\r\n{}";
        assert!(parse_available(refused).is_err());
    }
}
