//! Dead letters: a rejected movement is published, with its reason and original body, to
//! `<prefix>.deadletter.<location_id or "unknown">` on a JetStream stream that keeps them.
//!
//! A letter must always be publishable, or the message it speaks for could never be settled:
//! a body too big for the server's `max_payload` is cut to a prefix (and the letter says so),
//! and a letter whose original has no known stream sequence gets an id of its own content
//! rather than one it would share with every other such letter.

use std::hash::{Hash, Hasher};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::Subjects;
use crate::domain::ids::is_valid_location_id;
use crate::domain::movement::Rejection;
use crate::metrics::METRICS;

/// Room left for the headers and the protocol line within `max_payload`.
const HEADROOM: usize = 512;
/// Longest `message` and `subject` kept when even an empty body does not fit.
const SHORT_TEXT: usize = 256;

/// The body of a dead letter (documented in the contract extension in README).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter<'a> {
    pub reason: &'static str,
    pub message: &'a str,
    /// Subject the movement arrived on.
    pub subject: &'a str,
    /// Position in a batch message, or null for the whole message.
    pub index: Option<usize>,
    /// The original movement (or the whole message, as text, when it is not JSON). When
    /// `body_truncated`, a prefix of the original body's JSON text (or of the text).
    pub body: Value,
    /// The body did not fit the server's `max_payload` and was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
    /// Size in bytes of the original body when it was cut: of its JSON text, or of the text
    /// itself when the message was not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_size: Option<usize>,
    /// JetStream sequence of the original message, to find it again (0 when unknown).
    pub stream_sequence: u64,
    pub rejected_at: DateTime<Utc>,
}

/// Where a rejected movement came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The location token of the subject, if it had one.
    pub location: Option<&'a str>,
    pub subject: &'a str,
    /// 0 when JetStream's metadata of the message could not be read.
    pub stream_sequence: u64,
    pub payload: &'a [u8],
}

/// The `Nats-Msg-Id` of a letter: the same for a redelivered original (so a crash before its
/// ack produces no second letter), different for different originals. Without a stream
/// sequence, the original's subject and payload stand in for it: a fixed `dl-0-…` would make
/// JetStream drop every later such letter as a duplicate within its window.
pub fn msg_id(origin: &Origin<'_>, index: Option<usize>) -> String {
    let index = index.map_or("all".to_owned(), |i| i.to_string());
    if origin.stream_sequence > 0 {
        return format!("dl-{}-{index}", origin.stream_sequence);
    }
    // SipHash with fixed keys: the same in every process of this build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    origin.subject.hash(&mut h);
    origin.payload.hash(&mut h);
    format!("dl-h{:016x}-{index}", h.finish())
}

/// The letter as bytes of at most `limit` (as long as `limit` leaves room for the fixed
/// fields): the body is cut to a prefix of its JSON text when the whole does not fit.
pub fn encode(letter: &DeadLetter<'_>, limit: usize) -> serde_json::Result<Vec<u8>> {
    let whole = serde_json::to_vec(letter)?;
    if whole.len() <= limit {
        return Ok(whole);
    }
    let text = match &letter.body {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other)?,
    };
    let mut cut = letter.clone();
    cut.body_truncated = true;
    cut.body_size = Some(text.len());
    cut.body = Value::String(String::new());
    let mut fixed = serde_json::to_vec(&cut)?.len();
    let message;
    let subject;
    if fixed > limit {
        message = prefix(letter.message, SHORT_TEXT).to_owned();
        subject = prefix(letter.subject, SHORT_TEXT).to_owned();
        cut.message = &message;
        cut.subject = &subject;
        fixed = serde_json::to_vec(&cut)?.len();
    }
    // Escaping can make the kept prefix longer on the wire than in memory: shrink until it fits.
    let mut room = limit.saturating_sub(fixed);
    loop {
        cut.body = Value::String(prefix(&text, room).to_owned());
        let bytes = serde_json::to_vec(&cut)?;
        if bytes.len() <= limit || room == 0 {
            return Ok(bytes);
        }
        // Scale the prefix by how much its escaped form overshot the room (each kept byte
        // took `wire / room` bytes), and always by at least one byte so the loop ends.
        let wire = bytes.len().saturating_sub(fixed).max(1);
        let fits = limit.saturating_sub(fixed);
        let scaled = (room as u128 * fits as u128 / wire as u128) as usize;
        room = scaled.min(room - 1);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Publishes one dead letter and waits for JetStream to store it.
pub async fn publish(
    js: &jetstream::Context,
    subjects: &Subjects,
    origin: &Origin<'_>,
    r: &Rejection,
) -> anyhow::Result<()> {
    let location = origin
        .location
        .filter(|l| is_valid_location_id(l))
        .unwrap_or("unknown");
    let letter = DeadLetter {
        reason: r.reason.as_str(),
        message: &r.message,
        subject: origin.subject,
        index: r.index,
        body: r.body.clone(),
        body_truncated: false,
        body_size: None,
        stream_sequence: origin.stream_sequence,
        rejected_at: Utc::now(),
    };
    let max_payload = js.client().server_info().max_payload;
    let bytes = encode(&letter, max_payload.saturating_sub(HEADROOM))?;
    let mut headers = async_nats::HeaderMap::new();
    let id = msg_id(origin, r.index);
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("Omnistock-Reason", r.reason.as_str());
    js.publish_with_headers(subjects.deadletter(location), headers, bytes.into())
        .await?
        .await?;
    METRICS.movements_deadlettered.inc(r.reason.as_str());
    tracing::info!(reason = r.reason.as_str(), subject = origin.subject, index = ?r.index, "movement dead-lettered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn letter(body: Value) -> DeadLetter<'static> {
        DeadLetter {
            reason: "invalid_text",
            message: "`source` is longer than 256 characters",
            subject: "inventory.movements.TW001",
            index: Some(3),
            body,
            body_truncated: false,
            body_size: None,
            stream_sequence: 42,
            rejected_at: "2026-11-23T12:00:00Z".parse().expect("t"),
        }
    }

    #[test]
    fn a_small_letter_is_kept_whole() {
        let l = letter(json!({"sku": "A"}));
        let v: Value = serde_json::from_slice(&encode(&l, 10_000).expect("json")).expect("j");
        assert_eq!(v["body"], json!({"sku": "A"}));
        assert!(v.get("body_truncated").is_none());
    }

    #[test]
    fn a_big_body_is_cut_and_the_letter_says_so() {
        let big = json!({"sku": "A", "source": "x\"y\u{1}é".repeat(50_000)});
        let size = serde_json::to_string(&big).expect("j").len();
        let bytes = encode(&letter(big), 4_096).expect("json");
        assert!(bytes.len() <= 4_096, "{} bytes", bytes.len());
        let v: Value = serde_json::from_slice(&bytes).expect("still JSON");
        assert_eq!(v["body_truncated"], json!(true));
        assert_eq!(v["body_size"], json!(size));
        assert_eq!(v["reason"], json!("invalid_text"));
        assert_eq!(v["index"], json!(3));
        assert_eq!(v["stream_sequence"], json!(42));
        assert_eq!(v["subject"], json!("inventory.movements.TW001"));
        let kept = v["body"].as_str().expect("a string prefix");
        assert!(kept.starts_with("{\"sku\":\"A\""), "{}", &kept[..20]);
        assert!(
            kept.len() > 1_000,
            "most of the room is used: {}",
            kept.len()
        );
    }

    #[test]
    fn letters_without_a_sequence_get_distinct_ids() {
        let a = Origin {
            location: Some("TW001"),
            subject: "inventory.movements.TW001",
            stream_sequence: 0,
            payload: b"[1]",
        };
        let b = Origin {
            payload: b"[2]",
            ..a
        };
        assert_ne!(msg_id(&a, None), msg_id(&b, None));
        assert_eq!(
            msg_id(&a, Some(1)),
            msg_id(&a, Some(1)),
            "stable for a redelivery"
        );
        assert_ne!(msg_id(&a, Some(1)), msg_id(&a, Some(2)));
        let known = Origin {
            stream_sequence: 7,
            ..a
        };
        assert_eq!(msg_id(&known, Some(1)), "dl-7-1");
    }

    proptest! {
        /// Whatever the body and the limit (above the fixed fields), the letter fits and is
        /// JSON.
        #[test]
        fn every_letter_fits(text in ".{0,3000}", limit in 600usize..5_000) {
            let bytes = encode(&letter(json!({"reference": text})), limit).expect("json");
            prop_assert!(bytes.len() <= limit);
            let v: Value = serde_json::from_slice(&bytes).expect("JSON");
            prop_assert_eq!(&v["reason"], &json!("invalid_text"));
        }
    }
}
