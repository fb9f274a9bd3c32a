//! The movement event of the contract: decoding, validation and its effect on on-hand.
//!
//! Decoding is strict about what the contract fixes (ids, kinds, quantity signs and bounds,
//! timestamps) and lenient about what it does not (unknown fields are ignored so producers can
//! add fields without breaking us). Every rejection carries a machine-readable reason.

mod decode;

pub use decode::{decode_message, validate, Decoded, RejectReason, Rejection};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Most movements one message may carry.
pub const MAX_BATCH: usize = 1_000;
/// Largest |quantity| the contract accepts.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Longest free-text `source` / `reference`.
pub const MAX_TEXT_LEN: usize = 256;
/// How far in the future `occurred_at` may lie. A POS with a clock years ahead would otherwise
/// record a count that silently freezes on-hand against every later delta.
pub fn max_clock_skew() -> Duration {
    Duration::hours(24)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Receipt,
    Sale,
    Return,
    TransferOut,
    TransferIn,
    Damage,
    Adjustment,
    Count,
}

impl MovementKind {
    pub const ALL: [MovementKind; 8] = [
        MovementKind::Receipt,
        MovementKind::Sale,
        MovementKind::Return,
        MovementKind::TransferOut,
        MovementKind::TransferIn,
        MovementKind::Damage,
        MovementKind::Adjustment,
        MovementKind::Count,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Receipt => "receipt",
            MovementKind::Sale => "sale",
            MovementKind::Return => "return",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::Damage => "damage",
            MovementKind::Adjustment => "adjustment",
            MovementKind::Count => "count",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The signed change a delta movement makes to on-hand; `None` for a count, which sets
    /// on-hand instead of changing it. For validated quantities (|q| <= MAX_QUANTITY); the
    /// checked form is for arithmetic on anything else.
    pub fn signed_delta(self, quantity: i64) -> Option<i64> {
        self.signed_delta_checked(quantity)
            .map(|d| d.unwrap_or(i64::MAX))
    }

    /// Like [`signed_delta`](Self::signed_delta), with `Some(None)` when the change does not
    /// fit an i64 (a sale of i64::MIN).
    pub fn signed_delta_checked(self, quantity: i64) -> Option<Option<i64>> {
        match self {
            MovementKind::Receipt | MovementKind::Return | MovementKind::TransferIn => {
                Some(Some(quantity))
            }
            MovementKind::Sale | MovementKind::TransferOut | MovementKind::Damage => {
                Some(quantity.checked_neg())
            }
            MovementKind::Adjustment => Some(Some(quantity)),
            MovementKind::Count => None,
        }
    }

    /// Whether `quantity` is allowed for this kind (sign rules of the contract, bound included).
    pub fn accepts_quantity(self, quantity: i64) -> bool {
        // unsigned_abs: `abs` of i64::MIN overflows (a panic in debug, a wrap in release that
        // let i64::MIN through as a valid adjustment).
        if quantity.unsigned_abs() > MAX_QUANTITY.unsigned_abs() {
            return false;
        }
        match self {
            MovementKind::Adjustment => quantity != 0,
            MovementKind::Count => quantity >= 0,
            _ => quantity > 0,
        }
    }
}

/// A validated movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Movement {
    pub event_id: String,
    pub location_id: String,
    pub sku: String,
    pub kind: MovementKind,
    pub quantity: i64,
    pub occurred_at: DateTime<Utc>,
    pub source: Option<String>,
    pub reference: Option<String>,
    pub reservation_id: Option<String>,
    /// Ties a `transfer_out` to its `transfer_in` (contract extension).
    pub transfer_id: Option<String>,
    /// Destination of a `transfer_out` (contract extension): its stock is in transit there.
    pub to_location_id: Option<String>,
    /// The expected supply line a `receipt` or `transfer_in` fills.
    pub supply_id: Option<String>,
    /// When a `transfer_out`'s stock is expected at its destination (extension): the date its
    /// transfer counts as supply there for `at=` reads.
    pub expected_at: Option<DateTime<Utc>>,
}

impl Movement {
    pub fn signed_delta(&self) -> Option<i64> {
        self.kind.signed_delta(self.quantity)
    }
}

/// A validated movement as it reached the daemon. `published_at` is the transport's: the
/// JetStream publish time, or when the HTTP request came in. It travels beside the movement,
/// not in it, because it is no part of the contract's body and no sender may set it. `None`
/// for what was never published (imported opening counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub movement: Movement,
    pub published_at: Option<DateTime<Utc>>,
}

impl Incoming {
    pub fn published(movement: Movement, at: DateTime<Utc>) -> Self {
        Incoming {
            movement,
            published_at: Some(at),
        }
    }
}

impl From<Movement> for Incoming {
    /// A movement never published: it counts in no publish-to-commit delay.
    fn from(movement: Movement) -> Self {
        Incoming {
            movement,
            published_at: None,
        }
    }
}

#[cfg(test)]
mod tests;
