//! Reading and checking opening-count rows as the file streams by: one row in memory at a
//! time, each turned into a line of `COPY` text or into the reasons it is refused.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::bail;
use chrono::{DateTime, Utc};

use super::counted_at_problem;
use crate::db;
use crate::domain::ids::is_valid_sku;
use crate::domain::movement::MAX_QUANTITY;

/// Counts the bytes read, for the progress bar (the file size is the total).
pub struct Counting<R> {
    pub inner: R,
    pub read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Where each column is in the file.
pub struct Columns {
    location_id: usize,
    sku: usize,
    on_hand: usize,
    counted_at: Option<usize>,
}

impl Columns {
    pub fn of(headers: &csv::StringRecord) -> anyhow::Result<Self> {
        let find = |name: &str| headers.iter().position(|h| h == name);
        let need = |name: &str| match find(name) {
            Some(i) => Ok(i),
            None => bail!(
                "line 1: missing column {name:?} (columns: location_id,sku,on_hand[,counted_at])"
            ),
        };
        Ok(Columns {
            location_id: need("location_id")?,
            sku: need("sku")?,
            on_hand: need("on_hand")?,
            counted_at: find("counted_at"),
        })
    }
}

/// Checks rows against the domain's rules and the registered locations.
pub struct Checker {
    columns: Columns,
    known: HashSet<String>,
    default_at: (DateTime<Utc>, String),
    now: DateTime<Utc>,
    /// The last explicit `counted_at` seen, parsed: files usually repeat one instant.
    last_at: Option<(String, DateTime<Utc>, String)>,
}

impl Checker {
    pub fn new(
        columns: Columns,
        known: HashSet<String>,
        default_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Checker {
            columns,
            known,
            default_at: (default_at, default_at.to_rfc3339()),
            now,
            last_at: None,
        }
    }

    /// Appends the row's `COPY` line to `out`, or returns why the row is refused.
    pub fn row(
        &mut self,
        r: &csv::StringRecord,
        line: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let field = |i: usize| r.get(i).unwrap_or("");
        let c = &self.columns;
        let (location_id, sku, on_hand) = (field(c.location_id), field(c.sku), field(c.on_hand));
        let counted_at = c.counted_at.map(field).unwrap_or("");
        if !is_valid_sku(sku) {
            return Err("sku must be 1-128 printable characters".into());
        }
        let on_hand: i64 = on_hand
            .parse()
            .map_err(|_| format!("on_hand {on_hand:?} is not a whole number"))?;
        if !(0..=MAX_QUANTITY).contains(&on_hand) {
            return Err(format!(
                "on_hand must be between 0 and {MAX_QUANTITY}, got {on_hand}"
            ));
        }
        let (at, at_text) = if counted_at.is_empty() {
            (self.default_at.0, self.default_at.1.as_str())
        } else {
            if self
                .last_at
                .as_ref()
                .is_none_or(|(raw, _, _)| raw != counted_at)
            {
                let t = DateTime::parse_from_rfc3339(counted_at)
                    .map_err(|e| {
                        format!("counted_at {counted_at:?} is not an RFC 3339 timestamp: {e}")
                    })?
                    .with_timezone(&Utc);
                self.last_at = Some((counted_at.to_owned(), t, t.to_rfc3339()));
            }
            match &self.last_at {
                Some((_, t, text)) => (*t, text.as_str()),
                None => return Err("counted_at could not be read".into()),
            }
        };
        if let Some(problem) = counted_at_problem(at, self.now) {
            return Err(problem);
        }
        if !self.known.contains(location_id) {
            return Err(format!(
                "location {location_id:?} is not registered (import locations first)"
            ));
        }
        let event_id = opening_event_id(location_id, sku, at_text, on_hand);
        db::import::copy_row(out, line, location_id, sku, on_hand, at_text, &event_id);
        Ok(())
    }
}

/// A stable id for an opening count, so importing the same file again changes nothing, while a
/// corrected quantity for the same instant is a new recount. `at` is the count's instant in
/// RFC 3339 (as `DateTime::to_rfc3339` writes it: ids of earlier imports stay the same).
pub fn opening_event_id(location_id: &str, sku: &str, at: &str, quantity: i64) -> String {
    fn fnv1a(seed: u64, parts: &[&str]) -> u64 {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
    let qty = quantity.to_string();
    let parts = [location_id, sku, at, qty.as_str()];
    format!(
        "import-{:016x}{:016x}",
        fnv1a(0xcbf2_9ce4_8422_2325, &parts),
        fnv1a(0x6c62_272e_07bb_0142, &parts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_and_follow_every_part() {
        // The id of an import made before the streaming import: the same file must dedupe.
        let id = opening_event_id("TW001", "TEE-1", "2026-11-01T00:00:00+00:00", 5);
        assert_eq!(
            id,
            opening_event_id("TW001", "TEE-1", "2026-11-01T00:00:00+00:00", 5)
        );
        assert_ne!(
            id,
            opening_event_id("TW001", "TEE-1", "2026-11-01T00:00:00+00:00", 6)
        );
        assert_ne!(
            id,
            opening_event_id("TW001", "TEE-2", "2026-11-01T00:00:00+00:00", 5)
        );
        assert_ne!(
            id,
            opening_event_id("TW00", "1TEE-1", "2026-11-01T00:00:00+00:00", 5)
        );
        assert!(id.starts_with("import-") && id.len() == 39);
    }
}
