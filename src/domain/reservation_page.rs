//! Paging through reservations, newest first: page size bounds and the keyset cursor.
//!
//! The cursor is the last item's (created_at, reservation_id): ids break ties between holds
//! taken in the same microsecond, so no page repeats or skips one. It is hex-encoded so clients
//! treat it as opaque rather than building their own.

use chrono::{DateTime, Utc};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// The page size asked for (`None`: the default), if within bounds.
pub fn limit(asked: Option<&str>) -> Option<i64> {
    match asked {
        None => Some(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n)),
    }
}

/// Where the next page starts: strictly after this item in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub reservation_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let plain = format!(
            "{}|{}",
            self.created_at.timestamp_micros(),
            self.reservation_id
        );
        plain.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// `None` for anything `encode` did not produce.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() % 2 != 0 || s.len() > 2 * 600 {
            return None;
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let plain = String::from_utf8(bytes).ok()?;
        let (micros, id) = plain.split_once('|')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        if !crate::domain::ids::is_valid_client_id(id) {
            return None;
        }
        Some(Cursor {
            created_at,
            reservation_id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits_are_bounded_with_a_default() {
        assert_eq!(limit(None), Some(50));
        assert_eq!(limit(Some("500")), Some(500));
        assert_eq!(limit(Some("1")), Some(1));
        for bad in ["0", "501", "-1", "ten", "", "1.5"] {
            assert_eq!(limit(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for bad in ["", "zz", "abc", "00ff", "7c", "31327c", "not-a-cursor"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_cursor_survives_its_round_trip(
            micros in 0i64..4_102_444_800_000_000,
            id in "[ -~]{1,128}",
        ) {
            let c = Cursor {
                created_at: DateTime::from_timestamp_micros(micros).expect("in range"),
                reservation_id: id,
            };
            prop_assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }

        #[test]
        fn decoding_any_string_never_panics(s in ".{0,80}") {
            let _ = Cursor::decode(&s);
        }
    }
}
