//! `omnistock load`: the ingest load tool. Publishes movements to JetStream as fast as the
//! server takes them, then measures how long the daemon(s) take to commit every one of them,
//! and the publish-to-commit latency of single movements on an otherwise idle stream.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;

use crate::config::Subjects;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Movements to publish.
    #[arg(long, default_value_t = 100_000)]
    pub movements: usize,
    /// Movements per message (1 = one JSON object per message; more = a JSON array batch).
    #[arg(long, default_value_t = 50)]
    pub per_message: usize,
    /// Single movements timed one by one for publish-to-commit latency.
    #[arg(long, default_value_t = 50)]
    pub latency_samples: usize,
}

pub struct LoadReport {
    pub movements: usize,
    pub publish_secs: f64,
    pub apply_secs: f64,
    pub latency_ms: Vec<f64>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |secs: f64| self.movements as f64 / secs.max(1e-9);
        writeln!(f, "movements:           {}", self.movements)?;
        writeln!(
            f,
            "published in:        {:.2} s ({:.0} movements/s)",
            self.publish_secs,
            rate(self.publish_secs)
        )?;
        writeln!(
            f,
            "all committed after: {:.2} s ({:.0} movements/s end to end)",
            self.apply_secs,
            rate(self.apply_secs)
        )?;
        if !self.latency_ms.is_empty() {
            let mut l = self.latency_ms.clone();
            l.sort_by(f64::total_cmp);
            let p = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize];
            write!(
                f,
                "publish->commit:     p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms ({} single movements)",
                p(0.5),
                p(0.9),
                p(1.0),
                l.len()
            )?;
        }
        Ok(())
    }
}

/// Ledger rows recorded after `after_id` (a primary-key range scan: polling it does not itself
/// load the database the way a scan by event id would).
async fn committed_since(pool: &PgPool, after_id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM movements WHERE id > $1")
        .bind(after_id)
        .fetch_one(pool)
        .await
}

/// How long to wait before counting again: half the time the rest should take at the rate so
/// far, within 0.1 to 1 s. The count is a range scan of everything committed since the start,
/// so polling at a fixed 100 ms cost the database under test up to a tenth of its time on a
/// run of 100,000 movements; this way most polls fall near the end, where the figure is made.
fn poll_pause(left: i64, done: i64, elapsed: Duration) -> Duration {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);
    if done <= 0 || left <= 0 {
        return MIN;
    }
    let rest = elapsed.as_secs_f64() * left as f64 / done as f64;
    Duration::from_secs_f64((rest / 2.0).clamp(MIN.as_secs_f64(), MAX.as_secs_f64()))
}

pub async fn run(
    pool: &PgPool,
    js: &jetstream::Context,
    subjects: &Subjects,
    args: &LoadArgs,
) -> anyhow::Result<LoadReport> {
    let locations: Vec<String> = sqlx::query_scalar("SELECT location_id FROM locations ORDER BY 1")
        .fetch_all(pool)
        .await?;
    anyhow::ensure!(
        !locations.is_empty(),
        "no locations: import some first (make run does)"
    );
    let mut skus: Vec<String> = sqlx::query_scalar("SELECT sku FROM skus ORDER BY sku LIMIT 2000")
        .fetch_all(pool)
        .await?;
    if skus.is_empty() {
        skus = (0..500).map(|i| format!("LOAD-{i:04}")).collect();
    }
    let run = format!("load-{}-", uuid::Uuid::new_v4().simple());
    // Measure against an otherwise idle stream: everything after this id is ours.
    let start_id: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM movements")
        .fetch_one(pool)
        .await?;
    let per_message = args.per_message.clamp(1, 1000);
    let now = Utc::now();
    let started = Instant::now();
    let mut acks = Vec::new();
    let mut i = 0;
    while i < args.movements {
        // Each message holds movements of one location, as a POS upload would.
        let location = &locations[(i / per_message) % locations.len()];
        let n = per_message.min(args.movements - i);
        let body: Vec<_> = (i..i + n)
            .map(|k| {
                let kinds = ["receipt", "sale", "sale", "return"];
                json!({
                    "event_id": format!("{run}{k}"),
                    "location_id": location,
                    "sku": skus[(k * 7919) % skus.len()],
                    "kind": kinds[k % kinds.len()],
                    "quantity": 1 + (k % 3),
                    "occurred_at": now,
                    "source": "load",
                })
            })
            .collect();
        let payload = if per_message == 1 {
            serde_json::to_vec(&body[0])?
        } else {
            serde_json::to_vec(&body)?
        };
        acks.push(
            js.publish(subjects.movements(location), payload.into())
                .await?,
        );
        if acks.len() >= 512 {
            for a in acks.drain(..) {
                a.await.context("JetStream did not store a message")?;
            }
        }
        i += n;
    }
    for a in acks.drain(..) {
        a.await.context("JetStream did not store a message")?;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let target = args.movements as i64;
    let mut last = (Instant::now(), 0);
    loop {
        let n = committed_since(pool, start_id).await?;
        if n >= target {
            break;
        }
        if n > last.1 {
            last = (Instant::now(), n);
        } else {
            anyhow::ensure!(
                last.0.elapsed() < Duration::from_secs(30),
                "no progress for 30 s at {n}/{target} committed: is `omnistock serve` running against this stream?"
            );
        }
        tokio::time::sleep(poll_pause(target - n, n, started.elapsed())).await;
    }
    let apply_secs = started.elapsed().as_secs_f64();

    let mut latency_ms = Vec::with_capacity(args.latency_samples);
    for s in 0..args.latency_samples {
        let id = format!("{run}lat-{s}");
        let location = &locations[s % locations.len()];
        let body = json!({
            "event_id": id, "location_id": location, "sku": skus[s % skus.len()],
            "kind": "receipt", "quantity": 1, "occurred_at": Utc::now(), "source": "load",
        });
        let t = Instant::now();
        js.publish(
            subjects.movements(location),
            serde_json::to_vec(&body)?.into(),
        )
        .await?
        .await?;
        loop {
            let found: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM movements WHERE event_id = $1)")
                    .bind(&id)
                    .fetch_one(pool)
                    .await?;
            if found {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "movement {id} not committed within 10 s"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        latency_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(LoadReport {
        movements: args.movements,
        publish_secs,
        apply_secs,
        latency_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_slowly_while_far_from_done_and_every_tenth_near_the_end() {
        let s = Duration::from_secs;
        // Nothing committed yet, or done: the shortest pause.
        assert_eq!(poll_pause(100, 0, s(1)), Duration::from_millis(100));
        assert_eq!(poll_pause(0, 100, s(1)), Duration::from_millis(100));
        // 10 % done after 1 s: 9 s to go, capped at 1 s.
        assert_eq!(poll_pause(90_000, 10_000, s(1)), s(1));
        // Half done after 1 s: 1 s to go, so half of it.
        assert_eq!(poll_pause(50_000, 50_000, s(1)), Duration::from_millis(500));
        // Almost done: the floor.
        assert_eq!(poll_pause(100, 99_900, s(7)), Duration::from_millis(100));
    }
}
