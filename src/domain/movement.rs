//! The movement event of the contract: decoding, validation and its effect on on-hand.
//!
//! Decoding is strict about what the contract fixes (ids, kinds, quantity signs and bounds,
//! timestamps) and lenient about what it does not (unknown fields are ignored so producers can
//! add fields without breaking us). Every rejection carries a machine-readable reason.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{is_valid_client_id, is_valid_location_id, is_valid_sku};

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

/// Why a movement (or a whole message) was not applied. The code is what dead-letter consumers
/// switch on; it is part of the contract's dead-letter body as `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    MalformedJson,
    EmptyBatch,
    BatchTooLarge,
    InvalidMovement,
    InvalidEventId,
    InvalidLocationId,
    LocationMismatch,
    UnknownLocation,
    InvalidSku,
    InvalidKind,
    InvalidQuantity,
    InvalidOccurredAt,
    InvalidReservationId,
    InvalidText,
    InvalidSubject,
    RejectedByDatabase,
    InvalidTransfer,
    InvalidSupplyId,
    /// Its effect would take a quantity past what an i64 (a PostgreSQL bigint) holds.
    QuantityOverflow,
    /// JetStream's delivery limit was reached before the message could be applied.
    DeliveryLimit,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::EmptyBatch => "empty_batch",
            RejectReason::BatchTooLarge => "batch_too_large",
            RejectReason::InvalidMovement => "invalid_movement",
            RejectReason::InvalidEventId => "invalid_event_id",
            RejectReason::InvalidLocationId => "invalid_location_id",
            RejectReason::LocationMismatch => "location_mismatch",
            RejectReason::UnknownLocation => "unknown_location",
            RejectReason::InvalidSku => "invalid_sku",
            RejectReason::InvalidKind => "invalid_kind",
            RejectReason::InvalidQuantity => "invalid_quantity",
            RejectReason::InvalidOccurredAt => "invalid_occurred_at",
            RejectReason::InvalidReservationId => "invalid_reservation_id",
            RejectReason::InvalidText => "invalid_text",
            RejectReason::InvalidSubject => "invalid_subject",
            RejectReason::RejectedByDatabase => "rejected_by_database",
            RejectReason::InvalidTransfer => "invalid_transfer",
            RejectReason::InvalidSupplyId => "invalid_supply_id",
            RejectReason::QuantityOverflow => "quantity_overflow",
            RejectReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A rejected movement: the reason, a human explanation, and the original body to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
    /// Position in a batch message; `None` when the whole message was rejected.
    pub index: Option<usize>,
    /// The original body: the element of a batch, or the whole message as text when it is not
    /// JSON at all.
    pub body: Value,
}

/// One message, decoded: what may be applied, and what must be dead-lettered.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid movements with their position in a batch (`None` for a single-movement message).
    pub movements: Vec<(Option<usize>, Movement)>,
    pub rejections: Vec<Rejection>,
}

/// Decodes the body of a message published on `inventory.movements.<subject_location>`.
///
/// A batch is judged element by element: movements are facts, so one bad line of a POS upload
/// must not drop the good ones; each bad element is rejected on its own with its index.
pub fn decode_message(subject_location: &str, body: &[u8], now: DateTime<Utc>) -> Decoded {
    let mut out = Decoded::default();
    let whole = |reason: RejectReason, message: String, body: Value| Rejection {
        reason,
        message,
        index: None,
        body,
    };
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            out.rejections.push(whole(
                RejectReason::MalformedJson,
                format!("body is not JSON: {e}"),
                Value::String(String::from_utf8_lossy(body).into_owned()),
            ));
            return out;
        }
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                out.rejections.push(whole(
                    RejectReason::EmptyBatch,
                    "a batch must hold at least one movement".into(),
                    Value::Array(items),
                ));
            } else if items.len() > MAX_BATCH {
                let n = items.len();
                out.rejections.push(whole(
                    RejectReason::BatchTooLarge,
                    format!("a batch holds at most {MAX_BATCH} movements, this one {n}"),
                    Value::Array(items),
                ));
            } else {
                for (i, item) in items.into_iter().enumerate() {
                    match validate(subject_location, &item, now) {
                        Ok(m) => out.movements.push((Some(i), m)),
                        Err((reason, message)) => out.rejections.push(Rejection {
                            reason,
                            message,
                            index: Some(i),
                            body: item,
                        }),
                    }
                }
            }
        }
        other => match validate(subject_location, &other, now) {
            Ok(m) => out.movements.push((None, m)),
            Err((reason, message)) => out.rejections.push(whole(reason, message, other)),
        },
    }
    out
}

type Invalid = (RejectReason, String);

fn bad(reason: RejectReason, message: impl Into<String>) -> Invalid {
    (reason, message.into())
}

/// Validates one movement object.
pub fn validate(
    subject_location: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Result<Movement, Invalid> {
    let obj = v.as_object().ok_or_else(|| {
        bad(
            RejectReason::InvalidMovement,
            "a movement must be a JSON object",
        )
    })?;
    let string = |field: &str, reason: RejectReason| -> Result<&str, Invalid> {
        match obj.get(field) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(bad(reason, format!("`{field}` must be a string"))),
            None => Err(bad(reason, format!("`{field}` is required"))),
        }
    };
    let optional = |field: &str, reason: RejectReason| -> Result<Option<&str>, Invalid> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(reason, format!("`{field}` must be a string or null"))),
        }
    };

    let event_id = string("event_id", RejectReason::InvalidEventId)?;
    if !is_valid_client_id(event_id) {
        return Err(bad(
            RejectReason::InvalidEventId,
            "`event_id` must be 1-128 printable characters",
        ));
    }
    let location_id = string("location_id", RejectReason::InvalidLocationId)?;
    if !is_valid_location_id(location_id) {
        return Err(bad(
            RejectReason::InvalidLocationId,
            "`location_id` must match [A-Za-z0-9_-]{1,64}",
        ));
    }
    if location_id != subject_location {
        return Err(bad(
            RejectReason::LocationMismatch,
            format!(
                "`location_id` {location_id:?} differs from the subject's location {subject_location:?}"
            ),
        ));
    }
    let sku = string("sku", RejectReason::InvalidSku)?;
    if !is_valid_sku(sku) {
        return Err(bad(
            RejectReason::InvalidSku,
            "`sku` must be 1-128 printable characters",
        ));
    }
    let kind_text = string("kind", RejectReason::InvalidKind)?;
    let kind = MovementKind::parse(kind_text).ok_or_else(|| {
        bad(
            RejectReason::InvalidKind,
            format!("unknown kind {kind_text:?}; expected one of receipt, sale, return, transfer_out, transfer_in, damage, adjustment, count"),
        )
    })?;
    let quantity = match obj.get("quantity") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            bad(
                RejectReason::InvalidQuantity,
                format!("`quantity` must be an integer with |quantity| <= {MAX_QUANTITY}"),
            )
        })?,
        Some(_) => {
            return Err(bad(
                RejectReason::InvalidQuantity,
                "`quantity` must be an integer",
            ))
        }
        None => return Err(bad(RejectReason::InvalidQuantity, "`quantity` is required")),
    };
    if !kind.accepts_quantity(quantity) {
        let rule = match kind {
            MovementKind::Adjustment => "a non-zero integer",
            MovementKind::Count => "an integer >= 0",
            _ => "an integer > 0",
        };
        return Err(bad(
            RejectReason::InvalidQuantity,
            format!(
                "`quantity` {quantity} for kind {} must be {rule} with |quantity| <= {MAX_QUANTITY}",
                kind.as_str()
            ),
        ));
    }
    let occurred_text = string("occurred_at", RejectReason::InvalidOccurredAt)?;
    let occurred_at = DateTime::parse_from_rfc3339(occurred_text)
        .map_err(|e| {
            bad(
                RejectReason::InvalidOccurredAt,
                format!("`occurred_at` must be an RFC 3339 timestamp with offset: {e}"),
            )
        })?
        .with_timezone(&Utc)
        // PostgreSQL keeps microseconds: compared with a stored count, a finer instant would
        // land after the count it equals and turn a late delta into an applied one.
        .trunc_subsecs(6);
    if occurred_at > now + max_clock_skew() {
        return Err(bad(
            RejectReason::InvalidOccurredAt,
            "`occurred_at` lies more than 24 hours in the future; check the sender's clock",
        ));
    }
    let source = optional("source", RejectReason::InvalidText)?;
    let reference = optional("reference", RejectReason::InvalidText)?;
    for (field, text) in [("source", source), ("reference", reference)] {
        if text.is_some_and(|t| t.chars().count() > MAX_TEXT_LEN) {
            return Err(bad(
                RejectReason::InvalidText,
                format!("`{field}` is longer than {MAX_TEXT_LEN} characters"),
            ));
        }
        // PostgreSQL text cannot hold NUL (error 22021): caught here, it costs one element
        // instead of a failed transaction.
        if text.is_some_and(|t| t.contains('\0')) {
            return Err(bad(
                RejectReason::InvalidText,
                format!("`{field}` contains a NUL character"),
            ));
        }
    }
    let reservation_id = optional("reservation_id", RejectReason::InvalidReservationId)?;
    if let Some(r) = reservation_id {
        if !is_valid_client_id(r) {
            return Err(bad(
                RejectReason::InvalidReservationId,
                "`reservation_id` must be 1-128 printable characters",
            ));
        }
    }
    let transfer_id = optional("transfer_id", RejectReason::InvalidTransfer)?;
    let to_location_id = optional("to_location_id", RejectReason::InvalidTransfer)?;
    let is_transfer = matches!(kind, MovementKind::TransferOut | MovementKind::TransferIn);
    if transfer_id.is_some() && !is_transfer {
        return Err(bad(
            RejectReason::InvalidTransfer,
            "`transfer_id` belongs on transfer_out and transfer_in only",
        ));
    }
    if transfer_id.is_some_and(|t| !is_valid_client_id(t)) {
        return Err(bad(
            RejectReason::InvalidTransfer,
            "`transfer_id` must be 1-128 printable characters",
        ));
    }
    if let Some(to) = to_location_id {
        if kind != MovementKind::TransferOut || !is_valid_location_id(to) || to == location_id {
            return Err(bad(
                RejectReason::InvalidTransfer,
                "`to_location_id` belongs on a transfer_out, matches [A-Za-z0-9_-]{1,64} and differs from `location_id`",
            ));
        }
    }
    // Rejected elsewhere rather than ignored: a supply_id on a sale is a sender's mistake that
    // would otherwise go unnoticed while the expected line never fills.
    let supply_id = optional("supply_id", RejectReason::InvalidSupplyId)?;
    if let Some(s) = supply_id {
        if !matches!(kind, MovementKind::Receipt | MovementKind::TransferIn) {
            return Err(bad(
                RejectReason::InvalidSupplyId,
                "`supply_id` belongs on receipt and transfer_in only",
            ));
        }
        if !is_valid_client_id(s) {
            return Err(bad(
                RejectReason::InvalidSupplyId,
                "`supply_id` must be 1-128 printable characters",
            ));
        }
    }
    let expected_at = match optional("expected_at", RejectReason::InvalidTransfer)? {
        None => None,
        Some(_) if kind != MovementKind::TransferOut => {
            return Err(bad(
                RejectReason::InvalidTransfer,
                "`expected_at` belongs on a transfer_out",
            ))
        }
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    bad(
                        RejectReason::InvalidTransfer,
                        format!("`expected_at` must be an RFC 3339 timestamp with offset: {e}"),
                    )
                })?
                .with_timezone(&Utc)
                .trunc_subsecs(6),
        ),
    };
    Ok(Movement {
        event_id: event_id.to_owned(),
        location_id: location_id.to_owned(),
        sku: sku.to_owned(),
        kind,
        quantity,
        occurred_at,
        source: source.map(str::to_owned),
        reference: reference.map(str::to_owned),
        reservation_id: reservation_id.map(str::to_owned),
        transfer_id: transfer_id.map(str::to_owned),
        to_location_id: to_location_id.map(str::to_owned),
        supply_id: supply_id.map(str::to_owned),
        expected_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().expect("time")
    }

    fn good() -> Value {
        json!({
            "event_id": "pos-TW001-1", "location_id": "TW001", "sku": "TEE-RED-M",
            "kind": "sale", "quantity": 2, "occurred_at": "2026-11-23T10:00:00+08:00",
            "source": "pos", "reference": "receipt-8812", "reservation_id": null,
            "some_future_field": 1
        })
    }

    fn reason_of(v: Value) -> RejectReason {
        validate("TW001", &v, now())
            .expect_err("must be rejected")
            .0
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = good();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = good();
        v.as_object_mut().expect("object").remove(field);
        v
    }

    #[test]
    fn decodes_the_contract_example() {
        let m = validate("TW001", &good(), now()).expect("valid");
        assert_eq!(m.kind, MovementKind::Sale);
        assert_eq!(m.quantity, 2);
        assert_eq!(
            m.occurred_at,
            "2026-11-23T02:00:00Z".parse::<DateTime<Utc>>().expect("t")
        );
        assert_eq!(m.signed_delta(), Some(-2));
        assert_eq!(m.reservation_id, None);
    }

    #[test]
    fn effects_of_every_kind() {
        use MovementKind::*;
        assert_eq!(Receipt.signed_delta(5), Some(5));
        assert_eq!(Return.signed_delta(5), Some(5));
        assert_eq!(TransferIn.signed_delta(5), Some(5));
        assert_eq!(Sale.signed_delta(5), Some(-5));
        assert_eq!(TransferOut.signed_delta(5), Some(-5));
        assert_eq!(Damage.signed_delta(5), Some(-5));
        assert_eq!(Adjustment.signed_delta(-3), Some(-3));
        assert_eq!(Adjustment.signed_delta(3), Some(3));
        assert_eq!(Count.signed_delta(3), None);
    }

    #[test]
    fn quantity_rules() {
        use MovementKind::*;
        assert!(!Sale.accepts_quantity(0));
        assert!(!Sale.accepts_quantity(-1));
        assert!(Sale.accepts_quantity(MAX_QUANTITY));
        assert!(!Sale.accepts_quantity(MAX_QUANTITY + 1));
        assert!(!Adjustment.accepts_quantity(0));
        assert!(Adjustment.accepts_quantity(-MAX_QUANTITY));
        assert!(!Adjustment.accepts_quantity(-MAX_QUANTITY - 1));
        assert!(Count.accepts_quantity(0));
        assert!(!Count.accepts_quantity(-1));
        // |i64::MIN| does not fit an i64: `abs` overflowed here and let it through.
        for kind in MovementKind::ALL {
            assert!(!kind.accepts_quantity(i64::MIN), "{kind:?}");
            assert!(!kind.accepts_quantity(i64::MAX), "{kind:?}");
            assert!(!kind.accepts_quantity(i64::MIN + 1), "{kind:?}");
        }
        assert_eq!(Sale.signed_delta_checked(i64::MIN), Some(None));
        assert_eq!(Count.signed_delta_checked(i64::MIN), None);
    }

    #[test]
    fn i64_min_adjustment_is_rejected() {
        let mut v = with("kind", json!("adjustment"));
        v["quantity"] = json!(i64::MIN);
        assert_eq!(reason_of(v), RejectReason::InvalidQuantity);
    }

    #[test]
    fn nul_in_any_text_field_is_rejected_before_postgres_sees_it() {
        for field in ["source", "reference"] {
            assert_eq!(
                reason_of(with(field, json!("pos\u{0}1"))),
                RejectReason::InvalidText,
                "{field}"
            );
        }
        for (field, reason) in [
            ("event_id", RejectReason::InvalidEventId),
            ("sku", RejectReason::InvalidSku),
            ("reservation_id", RejectReason::InvalidReservationId),
            ("location_id", RejectReason::InvalidLocationId),
        ] {
            assert_eq!(reason_of(with(field, json!("A\u{0}B"))), reason, "{field}");
        }
        let mut t = with("kind", json!("transfer_out"));
        t["transfer_id"] = json!("T\u{0}1");
        assert_eq!(reason_of(t), RejectReason::InvalidTransfer);
    }

    #[test]
    fn timestamps_stay_within_what_postgres_stores() {
        // RFC 3339 has four-digit years; the earliest with any offset is still far inside
        // PostgreSQL's range (4713 BC); the latest is bounded by the clock-skew rule.
        let m = validate(
            "TW001",
            &with("occurred_at", json!("0000-01-01T00:00:00+23:59")),
            now(),
        )
        .expect("valid");
        assert!(m.occurred_at.year() >= -4712);
        assert_eq!(
            reason_of(with("occurred_at", json!("9999-12-31T23:59:59-23:59"))),
            RejectReason::InvalidOccurredAt
        );
        assert_eq!(
            reason_of(with("occurred_at", json!("+262143-01-01T00:00:00Z"))),
            RejectReason::InvalidOccurredAt
        );
    }

    #[test]
    fn rejects_each_class_of_bad_field() {
        assert_eq!(reason_of(without("event_id")), RejectReason::InvalidEventId);
        assert_eq!(
            reason_of(with("event_id", json!(""))),
            RejectReason::InvalidEventId
        );
        assert_eq!(
            reason_of(with("location_id", json!("TW 1"))),
            RejectReason::InvalidLocationId
        );
        assert_eq!(
            reason_of(with("location_id", json!("TW002"))),
            RejectReason::LocationMismatch
        );
        assert_eq!(reason_of(with("sku", json!(""))), RejectReason::InvalidSku);
        assert_eq!(reason_of(with("sku", json!(12))), RejectReason::InvalidSku);
        assert_eq!(
            reason_of(with("kind", json!("theft"))),
            RejectReason::InvalidKind
        );
        assert_eq!(
            reason_of(with("quantity", json!(0))),
            RejectReason::InvalidQuantity
        );
        assert_eq!(
            reason_of(with("quantity", json!(2.5))),
            RejectReason::InvalidQuantity
        );
        assert_eq!(
            reason_of(with("quantity", json!("2"))),
            RejectReason::InvalidQuantity
        );
        assert_eq!(
            reason_of(with("quantity", json!(1_000_000_001))),
            RejectReason::InvalidQuantity
        );
        assert_eq!(
            reason_of(with("quantity", json!(u64::MAX))),
            RejectReason::InvalidQuantity
        );
        assert_eq!(
            reason_of(without("quantity")),
            RejectReason::InvalidQuantity
        );
        assert_eq!(
            reason_of(with("occurred_at", json!("yesterday"))),
            RejectReason::InvalidOccurredAt
        );
        assert_eq!(
            reason_of(with("occurred_at", json!("2026-11-23T10:00:00"))),
            RejectReason::InvalidOccurredAt
        );
        assert_eq!(
            reason_of(with("occurred_at", json!("2026-11-25T12:00:01Z"))),
            RejectReason::InvalidOccurredAt
        );
        assert_eq!(
            reason_of(with("reservation_id", json!(7))),
            RejectReason::InvalidReservationId
        );
        assert_eq!(
            reason_of(with("reference", json!("x".repeat(257)))),
            RejectReason::InvalidText
        );
        assert_eq!(reason_of(json!([1])), RejectReason::InvalidMovement);
        assert_eq!(
            reason_of(with("transfer_id", json!("T-1"))),
            RejectReason::InvalidTransfer
        );
        assert_eq!(
            reason_of(with("to_location_id", json!("TW002"))),
            RejectReason::InvalidTransfer
        );
        let mut out = with("kind", json!("transfer_out"));
        out["to_location_id"] = json!("TW001");
        assert_eq!(reason_of(out), RejectReason::InvalidTransfer, "to itself");
    }

    #[test]
    fn occurred_at_keeps_the_microseconds_postgresql_keeps() {
        let m = validate(
            "TW001",
            &with("occurred_at", json!("2026-11-23T10:00:00.123456789Z")),
            now(),
        )
        .expect("valid");
        assert_eq!(
            m.occurred_at,
            "2026-11-23T10:00:00.123456Z"
                .parse::<DateTime<Utc>>()
                .expect("t")
        );
    }

    #[test]
    fn signed_adjustment_and_zero_count_are_valid() {
        let m = validate("TW001", &with("kind", json!("adjustment")), now()).expect("valid");
        assert_eq!(m.signed_delta(), Some(2));
        let mut v = with("kind", json!("adjustment"));
        v["quantity"] = json!(-4);
        assert_eq!(
            validate("TW001", &v, now()).expect("valid").signed_delta(),
            Some(-4)
        );
        let mut v = with("kind", json!("count"));
        v["quantity"] = json!(0);
        assert!(validate("TW001", &v, now()).is_ok());
    }

    #[test]
    fn transfers_carry_their_id_and_destination() {
        let mut v = with("kind", json!("transfer_out"));
        v["transfer_id"] = json!("T-77");
        v["to_location_id"] = json!("TW002");
        let m = validate("TW001", &v, now()).expect("valid");
        assert_eq!(
            (m.transfer_id.as_deref(), m.to_location_id.as_deref()),
            (Some("T-77"), Some("TW002"))
        );
    }

    #[test]
    fn supply_id_belongs_on_arrivals_only() {
        let mut r = with("kind", json!("receipt"));
        r["supply_id"] = json!("PO-1");
        let m = validate("TW001", &r, now()).expect("receipt with supply");
        assert_eq!(m.supply_id.as_deref(), Some("PO-1"));
        r["kind"] = json!("transfer_in");
        assert!(validate("TW001", &r, now()).is_ok());
        assert_eq!(
            reason_of(with("supply_id", json!("PO-1"))),
            RejectReason::InvalidSupplyId,
            "a sale carries no supply"
        );
        r["supply_id"] = json!("");
        assert_eq!(reason_of(r.clone()), RejectReason::InvalidSupplyId);
        r["supply_id"] = json!(5);
        assert_eq!(reason_of(r), RejectReason::InvalidSupplyId);
    }

    #[test]
    fn expected_at_belongs_on_a_transfer_out() {
        let mut t = with("kind", json!("transfer_out"));
        t["expected_at"] = json!("2026-11-25T09:00:00+08:00");
        let m = validate("TW001", &t, now()).expect("transfer_out with arrival");
        assert_eq!(
            m.expected_at,
            Some("2026-11-25T01:00:00Z".parse().expect("t"))
        );
        t["expected_at"] = json!("Friday");
        assert_eq!(reason_of(t), RejectReason::InvalidTransfer);
        assert_eq!(
            reason_of(with("expected_at", json!("2026-11-25T09:00:00Z"))),
            RejectReason::InvalidTransfer,
            "a sale has no arrival"
        );
    }

    #[test]
    fn batch_is_judged_per_element() {
        let body = serde_json::to_vec(&json!([good(), with("kind", json!("theft")), good()]))
            .expect("json");
        let d = decode_message("TW001", &body, now());
        assert_eq!(d.movements.len(), 2);
        assert_eq!(d.rejections.len(), 1);
        assert_eq!(d.rejections[0].index, Some(1));
        assert_eq!(d.rejections[0].reason, RejectReason::InvalidKind);
        assert_eq!(d.rejections[0].body["kind"], json!("theft"));
    }

    #[test]
    fn whole_message_rejections() {
        let d = decode_message("TW001", b"{not json", now());
        assert_eq!(d.rejections[0].reason, RejectReason::MalformedJson);
        assert_eq!(d.rejections[0].body, json!("{not json"));
        assert!(d.movements.is_empty());
        let d = decode_message("TW001", b"[]", now());
        assert_eq!(d.rejections[0].reason, RejectReason::EmptyBatch);
        let big = Value::Array(vec![good(); MAX_BATCH + 1]);
        let d = decode_message("TW001", &serde_json::to_vec(&big).expect("json"), now());
        assert_eq!(d.rejections.len(), 1);
        assert_eq!(d.rejections[0].reason, RejectReason::BatchTooLarge);
        assert!(d.movements.is_empty());
        let full = Value::Array(vec![good(); MAX_BATCH]);
        let d = decode_message("TW001", &serde_json::to_vec(&full).expect("json"), now());
        assert_eq!(d.movements.len(), MAX_BATCH);
    }

    /// Every field name of the contract's movement body.
    const FIELDS: [&str; 13] = [
        "event_id",
        "location_id",
        "sku",
        "kind",
        "quantity",
        "occurred_at",
        "source",
        "reference",
        "reservation_id",
        "transfer_id",
        "to_location_id",
        "supply_id",
        "expected_at",
    ];

    /// Any JSON value, nested a few levels, with the contract's field names and edge numbers
    /// drawn often so that near-valid movements are common.
    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            ".{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop::sample::select(vec![
                i64::MIN,
                -1,
                0,
                1,
                MAX_QUANTITY,
                MAX_QUANTITY + 1,
                i64::MAX
            ])
            .prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            prop::sample::select(MovementKind::ALL.to_vec()).prop_map(|k| json!(k.as_str())),
            prop::sample::select(vec![
                "TW001",
                "2026-11-23T10:00:00Z",
                "\u{0}",
                "",
                "x\u{0}y"
            ])
            .prop_map(|s| json!(s)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 40, 12, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..12)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid movement with one field replaced by anything.
    fn arb_mutated() -> impl Strategy<Value = Value> {
        (prop::sample::select(FIELDS.to_vec()), arb_json())
            .prop_map(|(field, value)| with(field, value))
    }

    /// A valid movement of any kind with a quantity from the edges of the i64 range.
    fn arb_edge_quantity() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(MovementKind::ALL.to_vec()),
            prop_oneof![
                prop::sample::select(vec![
                    i64::MIN,
                    i64::MIN + 1,
                    -MAX_QUANTITY - 1,
                    -MAX_QUANTITY,
                    -1,
                    0,
                    1,
                    MAX_QUANTITY,
                    MAX_QUANTITY + 1,
                    i64::MAX,
                ]),
                any::<i64>(),
            ],
        )
            .prop_map(|(kind, q)| {
                let mut v = with("kind", json!(kind.as_str()));
                v["quantity"] = json!(q);
                v
            })
    }

    /// What every decoded message must satisfy, whatever its bytes.
    fn check_decoded(body: &[u8], d: &Decoded) -> Result<(), TestCaseError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH => {
                // Every element is either a movement or a rejection, with its own index.
                prop_assert_eq!(d.movements.len() + d.rejections.len(), items.len());
                let mut seen: Vec<usize> = d
                    .movements
                    .iter()
                    .map(|(i, _)| i.expect("indexed"))
                    .chain(d.rejections.iter().map(|r| r.index.expect("indexed")))
                    .collect();
                seen.sort_unstable();
                prop_assert_eq!(seen, (0..items.len()).collect::<Vec<_>>());
                for r in &d.rejections {
                    prop_assert_eq!(&r.body, &items[r.index.expect("indexed")]);
                }
            }
            _ => {
                prop_assert_eq!(d.movements.len() + d.rejections.len(), 1);
                prop_assert!(d.rejections.iter().all(|r| r.index.is_none()));
                prop_assert!(d.movements.iter().all(|(i, _)| i.is_none()));
            }
        }
        for (_, m) in &d.movements {
            prop_assert!(m.kind.accepts_quantity(m.quantity));
            prop_assert!(m.quantity.unsigned_abs() <= MAX_QUANTITY as u64);
            prop_assert!(m
                .signed_delta()
                .is_none_or(|q| q.unsigned_abs() <= MAX_QUANTITY as u64));
            for t in [&m.source, &m.reference].into_iter().flatten() {
                prop_assert!(!t.contains('\0'));
            }
            prop_assert_eq!(m.location_id.as_str(), "TW001");
            prop_assert!(m.occurred_at <= now() + max_clock_skew());
        }
        for r in &d.rejections {
            prop_assert!(!r.message.is_empty());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No JSON value makes the decoder panic, and the counts add up.
        #[test]
        fn any_json_decodes_without_panic(v in prop_oneof![arb_json(), arb_mutated(), arb_edge_quantity(),
            prop::collection::vec(prop_oneof![arb_mutated(), Just(good())], 1..8).prop_map(Value::Array)]) {
            let body = serde_json::to_vec(&v).expect("json");
            let d = decode_message("TW001", &body, now());
            check_decoded(&body, &d)?;
        }

        /// Nor do arbitrary bytes.
        #[test]
        fn any_bytes_decode_without_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let d = decode_message("TW001", &body, now());
            check_decoded(&body, &d)?;
        }
    }
}
