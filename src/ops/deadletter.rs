//! `omnistock deadletter list|show|replay`. Dead letters live on their JetStream stream (see
//! [`crate::ingest::deadletter`]), each named by its sequence there. A replay publishes the
//! letter's stored body again to the movements subject of its location, where the ordinary
//! ingest applies it (once: a movement's `event_id` counts once however often it comes), and
//! is recorded in PostgreSQL: the letter itself is kept, as every stream message is.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use crate::app;
use crate::config::{Connections, Subjects};
use crate::db;
use crate::domain::ids::is_valid_location_id;

/// Most letters read by one listing (newest kept): a bound on its time and memory.
pub const SCAN_CAP: usize = 200_000;
/// Bound on every single NATS request of these commands.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Subcommand)]
pub enum Command {
    /// List dead letters, newest last (the newest `--limit` of those matching).
    List {
        #[command(flatten)]
        connections: Connections,
        /// Only letters with this reason (e.g. `unknown_location`, `invalid_quantity`).
        #[arg(long)]
        reason: Option<String>,
        /// Only letters rejected at or after this time: RFC 3339, or an age like `90m`, `6h`,
        /// `2d`.
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// Print JSON (an array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: reason, message, subject, time, the stored body, its replays.
    Show {
        #[command(flatten)]
        connections: Connections,
        /// The letter's sequence on the dead-letter stream (first column of `list`).
        sequence: u64,
        #[arg(long)]
        json: bool,
    },
    /// After the cause is fixed (e.g. the location created), publish the stored body again to
    /// `<prefix>.movements.<location_id>` and record the replay. Exit 1 when the letter is
    /// unknown, its body cannot be replayed (cut, or not JSON), or it was replayed before
    /// (unless --force).
    Replay {
        #[command(flatten)]
        connections: Connections,
        sequence: u64,
        /// Replay even though it was replayed before (harmless: each event_id counts once).
        #[arg(long)]
        force: bool,
    },
}

/// A dead letter's body as [`crate::ingest::deadletter::DeadLetter`] writes it; lenient, so
/// that a letter of an older or newer version is still shown.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Stored {
    pub reason: String,
    pub message: String,
    pub subject: String,
    pub index: Option<usize>,
    pub body: Value,
    pub body_truncated: bool,
    pub body_size: Option<usize>,
    pub stream_sequence: u64,
    pub rejected_at: Option<DateTime<Utc>>,
}

/// One letter as the commands print it.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    /// Its sequence on the dead-letter stream: what `show` and `replay` take.
    pub sequence: u64,
    pub reason: String,
    pub message: String,
    /// The subject the movement arrived on.
    pub subject: String,
    /// Position in a batch message, or null for the whole message.
    pub index: Option<usize>,
    pub event_id: Option<String>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub body: Value,
    pub body_truncated: bool,
    /// Sequence of the original message on the movements stream (0: unknown).
    pub original_sequence: u64,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replayed_to: Option<String>,
    pub replays: i32,
}

impl Letter {
    fn new(sequence: u64, payload: &[u8], stored_at: DateTime<Utc>) -> Letter {
        // A letter that is not even JSON is still shown, as text.
        let s: Stored = serde_json::from_slice(payload).unwrap_or_else(|_| Stored {
            reason: "unreadable_letter".into(),
            body: Value::String(String::from_utf8_lossy(payload).into_owned()),
            ..Default::default()
        });
        Letter {
            sequence,
            event_id: s
                .body
                .get("event_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            reason: s.reason,
            message: s.message,
            subject: s.subject,
            index: s.index,
            rejected_at: s.rejected_at.or(Some(stored_at)),
            body: s.body,
            body_truncated: s.body_truncated,
            original_sequence: s.stream_sequence,
            replayed_at: None,
            replayed_to: None,
            replays: 0,
        }
    }

    fn with_replay(mut self, r: Option<&db::deadletters::Replay>) -> Letter {
        if let Some(r) = r {
            self.replayed_at = Some(r.replayed_at);
            self.replayed_to = Some(r.replayed_to.clone());
            self.replays = r.replays;
        }
        self
    }
}

/// `--since`: RFC 3339, or an age (`30s`, `90m`, `6h`, `2d`) back from now.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let err = || format!("{s:?} is neither an RFC 3339 time nor an age like 90m, 6h or 2d");
    let unit = s.chars().last().ok_or_else(err)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| err())?;
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3_600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s >= 0)
    .ok_or_else(err)?;
    chrono::Duration::try_seconds(seconds)
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(err)
}

/// Where a letter's body goes when replayed: the movements subject of its location (the
/// body's `location_id`, or for a whole batch the subject it came on), and the bytes.
pub fn replay_target(letter: &Letter, subjects: &Subjects) -> Result<(String, Vec<u8>), String> {
    if letter.body_truncated {
        return Err(
            "its body was cut to fit the dead-letter stream: the original is not here \
                    in full, replay it from its source"
                .into(),
        );
    }
    let location =
        match &letter.body {
            Value::Object(m) => m
                .get("location_id")
                .and_then(Value::as_str)
                .ok_or("its body has no location_id: there is no movements subject to send it to")?
                .to_owned(),
            Value::Array(_) => subjects
                .location_of(&letter.subject)
                .ok_or("it is a whole batch that came on no movements subject")?
                .to_owned(),
            _ => return Err(
                "its body is not a JSON movement (the original was not JSON): fix it at the source"
                    .into(),
            ),
        };
    if !is_valid_location_id(&location) {
        return Err(format!(
            "its location_id {location:?} is not a valid location id: no subject can carry it"
        ));
    }
    let bytes = serde_json::to_vec(&letter.body).map_err(|e| e.to_string())?;
    Ok((subjects.movements(&location), bytes))
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::List {
            connections,
            reason,
            since,
            limit,
            json,
        } => {
            let (js, subjects, pool) = connect(&connections).await?;
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let (letters, matched) = scan(&js, &subjects, since, reason.as_deref(), limit).await?;
            let letters = with_replays(&pool, &subjects, letters).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                print!("{}", table(&letters));
                if matched > letters.len() {
                    println!(
                        "({matched} match; the newest {} shown: raise --limit or narrow with --since/--reason)",
                        letters.len()
                    );
                }
            }
            Ok(())
        }
        Command::Show {
            connections,
            sequence,
            json,
        } => {
            let (js, subjects, pool) = connect(&connections).await?;
            let letter = one_with_replays(&js, &subjects, &pool, sequence).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letter)?);
            } else {
                print!("{}", details(&letter)?);
            }
            Ok(())
        }
        Command::Replay {
            connections,
            sequence,
            force,
        } => {
            let (js, subjects, pool) = connect(&connections).await?;
            let letter = one_with_replays(&js, &subjects, &pool, sequence).await?;
            if let (Some(at), false) = (letter.replayed_at, force) {
                anyhow::bail!(
                    "dead letter {sequence} was already replayed at {} (to {}): refused; \
                     --force replays it again",
                    at.to_rfc3339(),
                    letter.replayed_to.as_deref().unwrap_or("?")
                );
            }
            let (subject, bytes) = replay_target(&letter, &subjects).map_err(|why| {
                anyhow::anyhow!("dead letter {sequence} cannot be replayed: {why}")
            })?;
            let ack = tokio::time::timeout(NATS_TIMEOUT, async {
                js.publish(subject.clone(), bytes.into()).await?.await
            })
            .await
            .context("JetStream did not answer within 10 s")?
            .context("JetStream did not store the replayed movement")?;
            let r = db::deadletters::record_replay(
                &pool,
                &subjects.deadletter_stream(),
                i64::try_from(sequence).context("sequence out of range")?,
                &letter.reason,
                &subject,
            )
            .await
            .context("recording the replay")?;
            println!(
                "replayed dead letter {sequence} ({}) to {subject}: stream {} sequence {}; \
                 recorded at {} (replay #{})",
                letter.reason,
                ack.stream,
                ack.sequence,
                r.replayed_at.to_rfc3339(),
                r.replays
            );
            println!(
                "the ingest applies it like any movement: once per event_id; should it fail \
                 again it becomes a new dead letter"
            );
            Ok(())
        }
    }
}

async fn connect(c: &Connections) -> anyhow::Result<(jetstream::Context, Subjects, PgPool)> {
    let pool = app::connect_db(c).await?;
    let js = jetstream::new(app::connect_nats(c).await?);
    Ok((js, Subjects::new(&c.subject_prefix), pool))
}

async fn stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<jetstream::stream::Stream> {
    let name = subjects.deadletter_stream();
    tokio::time::timeout(NATS_TIMEOUT, js.get_stream(&name))
        .await
        .context("JetStream did not answer within 10 s")?
        .with_context(|| {
            format!("no dead-letter stream {name} (has the daemon run with this subject prefix?)")
        })
}

/// One letter by its sequence; an error (exit 1) when there is none.
pub async fn get(
    js: &jetstream::Context,
    subjects: &Subjects,
    sequence: u64,
) -> anyhow::Result<Letter> {
    let stream = stream(js, subjects).await?;
    let m = tokio::time::timeout(NATS_TIMEOUT, stream.get_raw_message(sequence))
        .await
        .context("JetStream did not answer within 10 s")?
        .map_err(|e| {
            anyhow::anyhow!(
                "no dead letter {sequence} on {}: {e}",
                subjects.deadletter_stream()
            )
        })?;
    Ok(Letter::new(sequence, &m.payload, to_chrono(m.time)))
}

fn to_chrono(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

/// Reads the stream from `since` (or its start) with a short-lived consumer, and keeps the
/// newest `limit` letters with the reason asked for, and how many matched.
async fn scan(
    js: &jetstream::Context,
    subjects: &Subjects,
    since: Option<DateTime<Utc>>,
    reason: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<Letter>, usize)> {
    let stream = stream(js, subjects).await?;
    let deliver_policy = match since {
        Some(t) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp(t.timestamp())
                .context("--since out of range")?,
        },
        None => consumer::DeliverPolicy::All,
    };
    let consumer = tokio::time::timeout(
        NATS_TIMEOUT,
        stream.create_consumer(consumer::pull::Config {
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            filter_subject: subjects.deadletter_wildcard(),
            memory_storage: true,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        }),
    )
    .await
    .context("JetStream did not answer within 10 s")??;
    let name = consumer.cached_info().name.clone();
    let read = read(&consumer, since, reason, limit).await;
    if let Err(e) = stream.delete_consumer(&name).await {
        // It goes away by itself after `inactive_threshold`.
        tracing::debug!(error = %e, "could not delete the dead-letter reader");
    }
    read
}

async fn read(
    consumer: &consumer::PullConsumer,
    since: Option<DateTime<Utc>>,
    reason: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<Letter>, usize)> {
    let mut pending = (consumer.cached_info().num_pending as usize).min(SCAN_CAP);
    let mut kept = VecDeque::with_capacity(limit.min(1_024));
    let mut matched = 0;
    while pending > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(pending.min(1_000))
            .expires(NATS_TIMEOUT)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("reading dead letters: {e}"))?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("reading dead letters: {e}"))?;
            got += 1;
            let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let letter = Letter::new(info.stream_sequence, &m.payload, to_chrono(info.published));
            // ByStartTime has second precision here; the exact bound is applied now.
            let recent = since.is_none_or(|t| letter.rejected_at.is_none_or(|at| at >= t));
            if recent && reason.is_none_or(|r| letter.reason == r) {
                matched += 1;
                if kept.len() == limit {
                    kept.pop_front();
                }
                kept.push_back(letter);
            }
        }
        if got == 0 {
            break;
        }
        pending = pending.saturating_sub(got);
    }
    Ok((kept.into(), matched))
}

/// One letter by its stream sequence, with the replays recorded for it.
async fn one_with_replays(
    js: &jetstream::Context,
    subjects: &Subjects,
    pool: &PgPool,
    sequence: u64,
) -> anyhow::Result<Letter> {
    let letter = get(js, subjects, sequence).await?;
    with_replays(pool, subjects, vec![letter])
        .await?
        .pop()
        .context("the letter was lost on the way")
}

async fn with_replays(
    pool: &PgPool,
    subjects: &Subjects,
    letters: Vec<Letter>,
) -> anyhow::Result<Vec<Letter>> {
    let seqs: Vec<i64> = letters
        .iter()
        .filter_map(|l| i64::try_from(l.sequence).ok())
        .collect();
    let replays: HashMap<i64, db::deadletters::Replay> =
        db::deadletters::replays(pool, &subjects.deadletter_stream(), &seqs)
            .await
            .context("reading replays (has `omnistock migrate` run?)")?
            .into_iter()
            .map(|r| (r.stream_sequence, r))
            .collect();
    Ok(letters
        .into_iter()
        .map(|l| {
            let r = i64::try_from(l.sequence).ok().and_then(|s| replays.get(&s));
            l.with_replay(r)
        })
        .collect())
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The listing: one line per letter.
pub fn table(letters: &[Letter]) -> String {
    let mut out = format!(
        "{:>8} {:<20} {:<22} {:<32} {:<28} REPLAYED\n",
        "SEQ", "REJECTED", "REASON", "SUBJECT", "EVENT_ID"
    );
    for l in letters {
        out.push_str(&format!(
            "{:>8} {:<20} {:<22} {:<32} {:<28} {}\n",
            l.sequence,
            time(l.rejected_at),
            l.reason,
            l.subject,
            l.event_id.as_deref().unwrap_or("-"),
            time(l.replayed_at),
        ));
    }
    if letters.is_empty() {
        out.push_str("(no dead letters match)\n");
    }
    out
}

/// One letter in full.
pub fn details(l: &Letter) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(&format!("dead letter {}\n", l.sequence));
    out.push_str(&format!("  reason:      {}\n", l.reason));
    out.push_str(&format!("  message:     {}\n", l.message));
    out.push_str(&format!("  subject:     {}\n", l.subject));
    if let Some(i) = l.index {
        out.push_str(&format!("  index:       {i} (in its batch)\n"));
    }
    out.push_str(&format!("  rejected at: {}\n", time(l.rejected_at)));
    out.push_str(&format!(
        "  event id:    {}\n",
        l.event_id.as_deref().unwrap_or("-")
    ));
    match (l.replayed_at, &l.replayed_to) {
        (Some(at), Some(to)) => out.push_str(&format!(
            "  replayed:    {} to {to} ({} time(s))\n",
            time(Some(at)),
            l.replays
        )),
        _ => out.push_str("  replayed:    no\n"),
    }
    if l.body_truncated {
        out.push_str("  body (cut to fit the stream; not replayable):\n");
    } else {
        out.push_str("  body:\n");
    }
    let body = match &l.body {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other)?,
    };
    for line in body.lines() {
        out.push_str(&format!("    {line}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn letter(body: Value, subject: &str) -> Letter {
        let stored = json!({"reason": "unknown_location", "message": "m", "subject": subject,
                            "index": null, "body": body, "stream_sequence": 4,
                            "rejected_at": "2026-12-01T10:00:00Z"});
        Letter::new(7, &serde_json::to_vec(&stored).expect("json"), Utc::now())
    }

    #[test]
    fn a_movement_goes_back_to_its_locations_subject() {
        let s = Subjects::new("inventory");
        let l = letter(
            json!({"event_id": "e1", "location_id": "TW009"}),
            "inventory.movements.TW009",
        );
        assert_eq!(l.event_id.as_deref(), Some("e1"));
        let (subject, bytes) = replay_target(&l, &s).expect("replayable");
        assert_eq!(subject, "inventory.movements.TW009");
        assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("j"), l.body);
        let batch = letter(json!([{"event_id": "e1"}]), "inventory.movements.TW002");
        assert_eq!(
            replay_target(&batch, &s).expect("ok").0,
            "inventory.movements.TW002"
        );
    }

    #[test]
    fn what_cannot_be_replayed_is_refused() {
        let s = Subjects::new("inventory");
        assert!(replay_target(&letter(json!("{not json"), "inventory.movements.A"), &s).is_err());
        assert!(replay_target(&letter(json!({"sku": "A"}), "inventory.movements.A"), &s).is_err());
        assert!(replay_target(&letter(json!({"location_id": "a.b"}), "x"), &s).is_err());
        assert!(replay_target(&letter(json!([1]), "elsewhere.TW001"), &s).is_err());
        let mut cut = letter(json!({"location_id": "TW001"}), "inventory.movements.TW001");
        cut.body_truncated = true;
        assert!(replay_target(&cut, &s).is_err());
    }

    #[test]
    fn since_takes_a_time_or_an_age() {
        let t = parse_since("2026-12-01T10:00:00+01:00").expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2026-12-01T09:00:00+00:00");
        let age = Utc::now() - parse_since("2h").expect("age");
        assert!((age.num_seconds() - 7_200).abs() < 5, "{age}");
        for bad in ["", "h", "2w", "-3h", "yesterday", "9999999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unreadable_letter_is_still_shown() {
        let l = Letter::new(3, b"\xff not json", Utc::now());
        assert_eq!(l.reason, "unreadable_letter");
        assert!(details(&l).expect("text").contains("not json"));
    }
}
