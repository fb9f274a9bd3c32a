use super::*;
use chrono::Datelike;
use proptest::prelude::*;
use serde_json::{json, Value};

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
    let body =
        serde_json::to_vec(&json!([good(), with("kind", json!("theft")), good()])).expect("json");
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
