//! Dead letters: a rejected movement is published, with its reason and original body, to
//! `<prefix>.deadletter.<location_id or "unknown">` on a JetStream stream that keeps them.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::Subjects;
use crate::domain::ids::is_valid_location_id;
use crate::domain::movement::Rejection;
use crate::metrics::METRICS;

/// The body of a dead letter (documented in the contract extension in README).
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub reason: &'static str,
    pub message: &'a str,
    /// Subject the movement arrived on.
    pub subject: &'a str,
    /// Position in a batch message, or null for the whole message.
    pub index: Option<usize>,
    /// The original movement (or the whole message, as text, when it is not JSON).
    pub body: &'a Value,
    /// JetStream sequence of the original message, to find it again.
    pub stream_sequence: u64,
    pub rejected_at: DateTime<Utc>,
}

/// Publishes one dead letter and waits for JetStream to store it. The message id makes a
/// redelivered original (after a crash before its ack) produce no second dead letter.
pub async fn publish(
    js: &jetstream::Context,
    subjects: &Subjects,
    location_token: Option<&str>,
    subject: &str,
    stream_sequence: u64,
    r: &Rejection,
) -> anyhow::Result<()> {
    let location = location_token
        .filter(|l| is_valid_location_id(l))
        .unwrap_or("unknown");
    let letter = DeadLetter {
        reason: r.reason.as_str(),
        message: &r.message,
        subject,
        index: r.index,
        body: &r.body,
        stream_sequence,
        rejected_at: Utc::now(),
    };
    let mut headers = async_nats::HeaderMap::new();
    let id = format!(
        "dl-{stream_sequence}-{}",
        r.index.map_or("all".to_owned(), |i| i.to_string())
    );
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("Omnistock-Reason", r.reason.as_str());
    js.publish_with_headers(
        subjects.deadletter(location),
        headers,
        serde_json::to_vec(&letter)?.into(),
    )
    .await?
    .await?;
    METRICS.movements_deadlettered.inc(r.reason.as_str());
    tracing::info!(reason = r.reason.as_str(), subject, index = ?r.index, "movement dead-lettered");
    Ok(())
}
