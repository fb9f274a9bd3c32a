//! The properties the movement decoder keeps on any input, shared by the libFuzzer target
//! (`fuzz_targets/decode_message.rs`, nightly + cargo-fuzz) and the stable test below, which
//! replays the corpus and the same checks without instrumentation.

#[allow(dead_code, clippy::all)]
#[path = "../../src/domain/mod.rs"]
pub mod domain;

use chrono::{DateTime, Utc};
use serde_json::Value;

use domain::movement::{decode_message, max_clock_skew, MAX_BATCH, MAX_QUANTITY};

/// A fixed "now", so a failure replays.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default()
}

/// Decodes `data` as a message on `inventory.movements.TW001` and checks every property; the
/// first input byte picks the subject's location so mismatches are explored too.
pub fn check(data: &[u8]) -> Result<(), String> {
    let (location, body) = match data.split_first() {
        Some((b, rest)) if b % 4 == 0 => ("TW002", rest),
        Some((_, rest)) => ("TW001", rest),
        None => ("TW001", data),
    };
    let d = decode_message(location, body, now());
    let parsed = serde_json::from_slice::<Value>(body);
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    match parsed {
        Ok(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH => {
            ensure(
                d.movements.len() + d.rejections.len() == items.len(),
                "every element is a movement or a rejection",
            )?;
            let mut seen: Vec<Option<usize>> = d
                .movements
                .iter()
                .map(|(i, _)| *i)
                .chain(d.rejections.iter().map(|r| r.index))
                .collect();
            seen.sort_unstable();
            ensure(
                seen == (0..items.len()).map(Some).collect::<Vec<_>>(),
                "each index once",
            )?;
            for r in &d.rejections {
                let i = r.index.ok_or("indexed")?;
                ensure(r.body == items[i], "a rejection keeps its element")?;
            }
        }
        _ => {
            ensure(
                d.movements.len() + d.rejections.len() == 1,
                "a non-batch message is one movement or one rejection",
            )?;
            ensure(
                d.rejections.iter().all(|r| r.index.is_none())
                    && d.movements.iter().all(|(i, _)| i.is_none()),
                "no index outside a batch",
            )?;
        }
    }
    for (_, m) in &d.movements {
        ensure(m.kind.accepts_quantity(m.quantity), "quantity rule")?;
        ensure(
            m.quantity.unsigned_abs() <= MAX_QUANTITY.unsigned_abs(),
            "quantity bound",
        )?;
        ensure(
            m.kind.signed_delta_checked(m.quantity) != Some(None),
            "the signed delta fits",
        )?;
        ensure(m.location_id == location, "location of the subject")?;
        ensure(
            [&m.event_id, &m.sku]
                .into_iter()
                .chain(m.source.iter())
                .chain(m.reference.iter())
                .chain(m.reservation_id.iter())
                .chain(m.transfer_id.iter())
                .all(|t| !t.contains('\0')),
            "no NUL reaches PostgreSQL",
        )?;
        ensure(
            m.occurred_at <= now() + max_clock_skew(),
            "occurred_at bounded",
        )?;
    }
    ensure(
        d.rejections.iter().all(|r| !r.message.is_empty()),
        "every rejection says why",
    )
}

#[cfg(test)]
mod tests {
    /// Stable replay: every corpus file (and a few edge inputs) through the same checks.
    #[test]
    fn corpus_replays_clean() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\x01[]".to_vec(),
            br#"x{"event_id":"e","location_id":"TW001","sku":"S","kind":"adjustment","quantity":-9223372036854775808,"occurred_at":"2026-11-23T10:00:00Z"}"#.to_vec(),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/decode_message");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                inputs.push(std::fs::read(e.path()).expect("corpus file"));
            }
        }
        for input in inputs {
            if let Err(e) = super::check(&input) {
                panic!("{e}: {:?}", String::from_utf8_lossy(&input));
            }
        }
    }
}
