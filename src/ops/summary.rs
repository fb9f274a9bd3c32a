//! The ops view (`GET /v1/ops/summary`): per location, how far behind its sync is, dead
//! letters, stockouts and holds, and the ingest consumer's backlog, each with its traffic
//! light against the configured thresholds.
//!
//! PostgreSQL gives the movements, stockouts and holds. Dead letters live only on their
//! JetStream stream, so they are counted there: a short-lived headers-only consumer starting an
//! hour back, read up to a cap. The consumer lag is the ingest consumer's `num_pending`. Each
//! NATS read has a timeout; one that fails or times out is reported as unknown (null), and the
//! summary is still answered.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::{OpsThresholds, Subjects};
use crate::db;
use crate::directory::Directory;
use crate::domain::location::LocationKind;
use crate::domain::ops::{light, worst, Light};

/// Longest wait for each NATS read of the summary.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(2);
/// Most dead letters read to count the last hour: past it the counts are lower bounds.
pub const DEAD_LETTER_CAP: usize = 10_000;
const DEAD_LETTER_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpsSummary {
    pub as_of: DateTime<Utc>,
    /// The worst light of the network and of every location.
    pub light: Light,
    /// The thresholds the lights were judged against (`OMNISTOCK_OPS_*`).
    #[schema(value_type = Object)]
    pub thresholds: OpsThresholds,
    pub network: NetworkHealth,
    pub locations: Vec<LocationHealth>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NetworkHealth {
    /// Movement messages not yet delivered to the ingest consumer (null: not read in time).
    pub consumer_lag: Option<u64>,
    /// Delivered and not yet acknowledged (being applied).
    pub consumer_ack_pending: Option<u64>,
    pub consumer_lag_light: Light,
    /// Dead letters of the last hour whose subject named no valid location.
    pub dead_letters_unknown_location: Option<i64>,
    /// More than the cap arrived in the hour: the counts are lower bounds.
    pub dead_letters_capped: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationHealth {
    pub location_id: String,
    pub name: String,
    pub kind: LocationKind,
    /// The worst of its lights.
    pub light: Light,
    pub lights: Lights,
    /// Seconds since its newest movement occurred (null: no movement yet).
    pub sync_delay_seconds: Option<i64>,
    pub last_movement_at: Option<DateTime<Utc>>,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Median seconds from publish (the JetStream publish time, or when a `POST /v1/movements`
    /// came in) to the commit, over its 100 newest published movements. Null when none has a
    /// publish time (no movement yet, only imports). Not from `occurred_at`: a movement that
    /// happened hours ago but was published now waited only since its publish.
    pub commit_delay_seconds: Option<f64>,
    pub dead_letters_last_hour: Option<i64>,
    pub stockouts: i64,
    pub holds_held: i64,
    pub holds_expiring: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lights {
    pub sync_delay: Light,
    pub commit_delay: Light,
    pub dead_letters: Light,
    pub stockouts: Light,
}

/// What the summary is made from.
pub struct Sources<'a> {
    pub pool: &'a PgPool,
    pub directory: &'a Directory,
    pub js: jetstream::Context,
    pub subjects: &'a Subjects,
    pub thresholds: OpsThresholds,
}

pub async fn summary(s: Sources<'_>) -> Result<OpsSummary, sqlx::Error> {
    let t = s.thresholds;
    let (recent, stockouts, holds, dead, lag) = tokio::join!(
        db::ops::recent_movements(s.pool),
        db::ops::stockouts(s.pool),
        db::ops::holds(s.pool, t.holds_expiring_seconds),
        bounded(dead_letters_last_hour(&s.js, s.subjects)),
        bounded(consumer_lag(&s.js, s.subjects)),
    );
    let (recent, stockouts, holds) = (recent?, stockouts?, holds?);
    let stockouts: HashMap<_, _> = stockouts
        .into_iter()
        .map(|r| (r.location_id, r.stockouts))
        .collect();
    let holds: HashMap<_, _> = holds
        .into_iter()
        .map(|r| (r.location_id, (r.held, r.expiring)))
        .collect();
    let now = Utc::now();
    let directory = s.directory.snapshot();
    let locations: Vec<LocationHealth> = recent
        .into_iter()
        .map(|r| {
            let (name, kind) = directory
                .get(&r.location_id)
                .map_or((r.location_id.clone(), LocationKind::Store), |l| {
                    (l.name.clone(), l.kind)
                });
            let sync_delay = r.last_movement_at.map(|at| (now - at).num_seconds().max(0));
            // Publish (NATS server's clock) and commit (PostgreSQL's) may skew a little.
            let commit_delay = r.commit_delay_seconds.map(|d| d.max(0.0));
            let dead_letters = dead
                .as_ref()
                .map(|d| d.per_location.get(&r.location_id).copied().unwrap_or(0));
            let stockouts = stockouts.get(&r.location_id).copied().unwrap_or(0);
            let (held, expiring) = holds.get(&r.location_id).copied().unwrap_or((0, 0));
            let lights = Lights {
                sync_delay: light(
                    sync_delay,
                    t.sync_delay_amber_seconds,
                    t.sync_delay_red_seconds,
                ),
                // No published movement yet is no delay: nothing waited.
                commit_delay: light(
                    Some(commit_delay.unwrap_or(0.0)),
                    t.commit_delay_amber_seconds,
                    t.commit_delay_red_seconds,
                ),
                dead_letters: light(dead_letters, t.dead_letters_amber, t.dead_letters_red),
                stockouts: light(Some(stockouts), t.stockouts_amber, t.stockouts_red),
            };
            LocationHealth {
                light: worst([
                    lights.sync_delay,
                    lights.commit_delay,
                    lights.dead_letters,
                    lights.stockouts,
                ]),
                lights,
                location_id: r.location_id,
                name,
                kind,
                sync_delay_seconds: sync_delay,
                last_movement_at: r.last_movement_at,
                last_recorded_at: r.last_recorded_at,
                commit_delay_seconds: commit_delay.map(|d| (d * 1000.0).round() / 1000.0),
                dead_letters_last_hour: dead_letters,
                stockouts,
                holds_held: held,
                holds_expiring: expiring,
            }
        })
        .collect();
    let network = NetworkHealth {
        consumer_lag: lag.map(|l| l.0),
        consumer_ack_pending: lag.map(|l| l.1),
        consumer_lag_light: light(
            lag.map(|l| i64::try_from(l.0).unwrap_or(i64::MAX)),
            t.consumer_lag_amber,
            t.consumer_lag_red,
        ),
        dead_letters_unknown_location: dead.as_ref().map(|d| d.unknown),
        dead_letters_capped: dead.as_ref().is_some_and(|d| d.capped),
    };
    Ok(OpsSummary {
        as_of: now,
        light: worst(
            locations
                .iter()
                .map(|l| l.light)
                .chain([network.consumer_lag_light]),
        ),
        thresholds: t,
        network,
        locations,
    })
}

/// A NATS read within [`NATS_TIMEOUT`]; a failure is logged and read as unknown.
async fn bounded<T>(read: impl std::future::Future<Output = anyhow::Result<T>>) -> Option<T> {
    match tokio::time::timeout(NATS_TIMEOUT, read).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ops summary: a NATS read failed");
            None
        }
        Err(_) => {
            tracing::warn!("ops summary: a NATS read timed out");
            None
        }
    }
}

/// (num_pending, num_ack_pending) of the ingest consumer.
pub(crate) async fn consumer_lag(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<(u64, u64)> {
    let stream = js.get_stream(subjects.movements_stream()).await?;
    let info = stream.consumer_info(crate::ingest::CONSUMER).await?;
    Ok((info.num_pending, info.num_ack_pending as u64))
}

#[derive(Debug, Default)]
struct DeadLetterCounts {
    per_location: HashMap<String, i64>,
    unknown: i64,
    capped: bool,
}

async fn dead_letters_last_hour(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<DeadLetterCounts> {
    let stream = js.get_stream(subjects.deadletter_stream()).await?;
    let start = time::OffsetDateTime::now_utc() - DEAD_LETTER_WINDOW;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ack_policy: consumer::AckPolicy::None,
            filter_subject: subjects.deadletter_wildcard(),
            headers_only: true,
            memory_storage: true,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let name = consumer.cached_info().name.clone();
    let counted = count_subjects(&consumer, subjects).await;
    if let Err(e) = stream.delete_consumer(&name).await {
        // It goes away by itself after `inactive_threshold`.
        tracing::debug!(error = %e, "ops summary: could not delete the dead-letter counter");
    }
    counted
}

async fn count_subjects(
    consumer: &consumer::PullConsumer,
    subjects: &Subjects,
) -> anyhow::Result<DeadLetterCounts> {
    let mut pending = consumer.cached_info().num_pending as usize;
    let mut counts = DeadLetterCounts {
        capped: pending > DEAD_LETTER_CAP,
        ..Default::default()
    };
    pending = pending.min(DEAD_LETTER_CAP);
    let prefix = format!("{}.deadletter.", subjects.prefix);
    while pending > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(pending.min(1_000))
            .messages()
            .await?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!(e))?;
            got += 1;
            match m.subject.strip_prefix(&prefix) {
                Some(loc) if loc != "unknown" => {
                    *counts.per_location.entry(loc.to_owned()).or_default() += 1
                }
                _ => counts.unknown += 1,
            }
        }
        if got == 0 {
            break;
        }
        pending = pending.saturating_sub(got);
    }
    Ok(counts)
}
