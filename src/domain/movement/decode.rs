//! Decoding and validating the movements of a message: every rejection names its reason.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{max_clock_skew, Movement, MovementKind, MAX_BATCH, MAX_QUANTITY, MAX_TEXT_LEN};
use crate::domain::ids::{is_valid_client_id, is_valid_location_id, is_valid_sku};

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
