use serde_json::{json, Value};

use crate::helpers::{
    movement, movement_at, spawn_app, spawn_with, wait_until, Isolation, READ_KEY,
};

#[tokio::test]
async fn every_kind_changes_on_hand_as_the_contract_says() {
    let app = spawn_app().await;
    app.store("TW001", 25.05306, 121.52639).await;
    let steps = [
        ("receipt", 10, 10),
        ("sale", 3, 7),
        ("return", 1, 8),
        ("transfer_out", 2, 6),
        ("transfer_in", 4, 10),
        ("damage", 1, 9),
        ("adjustment", -2, 7),
        ("adjustment", 3, 10),
        ("count", 5, 5),
        ("sale", 6, -1),
    ];
    for (i, (kind, qty, expected)) in steps.iter().enumerate() {
        app.publish(
            "TW001",
            &movement(&format!("e{i}"), "TW001", "TEE-RED-M", kind, *qty),
        )
        .await;
        app.wait_for_ledger(i as i64 + 1).await;
        assert_eq!(
            app.on_hand("TW001", "TEE-RED-M").await,
            Some(*expected),
            "after {kind} {qty}"
        );
    }
    // Movements are facts: on-hand may go negative, but available never does.
    let (status, body) = app.get("/v1/availability/TEE-RED-M", READ_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(body["locations"][0]["on_hand"], json!(-1));
    assert_eq!(body["available"], json!(0));
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM stock_levels WHERE sku = 'TEE-RED-M'")
            .fetch_one(&app.pool)
            .await
            .expect("version");
    assert_eq!(version, steps.len() as i64, "one version per change");
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_batch_message_applies_every_movement_and_unknown_skus_are_accepted() {
    let app = spawn_app().await;
    app.store("TW002", 25.06199, 121.45703).await;
    let batch: Vec<Value> = (0..50)
        .map(|i| {
            movement(
                &format!("b{i}"),
                "TW002",
                &format!("NEW SKU/{}", i % 5),
                "receipt",
                2,
            )
        })
        .collect();
    app.publish("TW002", &Value::Array(batch)).await;
    app.wait_for_ledger(50).await;
    for i in 0..5 {
        assert_eq!(
            app.on_hand("TW002", &format!("NEW SKU/{i}")).await,
            Some(20)
        );
    }
    let skus: i64 = sqlx::query_scalar("SELECT count(*) FROM skus")
        .fetch_one(&app.pool)
        .await
        .expect("skus");
    assert_eq!(skus, 5);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_duplicate_event_id_is_applied_once_however_it_arrives() {
    let app = spawn_app().await;
    app.store("TW003", 24.1469, 120.6839).await;
    let m = movement("dup-1", "TW003", "JEAN-001-BLU-32", "receipt", 5);
    app.publish("TW003", &m).await;
    // Same event again: plain, with different JetStream message ids (so JetStream's own dedupe
    // does not hide it), and inside a batch next to a new movement.
    app.publish("TW003", &m).await;
    app.publish_with_msg_id("TW003", &m, "other-id-1").await;
    app.publish_with_msg_id("TW003", &m, "other-id-2").await;
    app.publish(
        "TW003",
        &json!([
            m.clone(),
            movement("dup-2", "TW003", "JEAN-001-BLU-32", "receipt", 1),
            m
        ]),
    )
    .await;
    let sentinel = movement("sentinel", "TW003", "OTHER", "receipt", 1);
    app.publish("TW003", &sentinel).await;
    app.wait_for_ledger(3).await;
    wait_until("sentinel applied", || async {
        app.on_hand("TW003", "OTHER").await == Some(1)
    })
    .await;
    assert_eq!(app.on_hand("TW003", "JEAN-001-BLU-32").await, Some(6));
    assert_eq!(app.ledger_count().await, 3);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_late_delta_after_a_count_is_recorded_but_does_not_change_on_hand() {
    let app = spawn_app().await;
    app.store("TW004", 22.61626, 120.31333).await;
    let sku = "POLO-003-WHT-L";
    app.publish(
        "TW004",
        &movement_at(
            "r1",
            "TW004",
            sku,
            "receipt",
            10,
            "2026-11-23T09:00:00+08:00",
        ),
    )
    .await;
    app.publish(
        "TW004",
        &movement_at("c1", "TW004", sku, "count", 7, "2026-11-23T10:00:00+08:00"),
    )
    .await;
    app.wait_for_ledger(2).await;
    assert_eq!(app.on_hand("TW004", sku).await, Some(7));
    // A sale rung up at 09:59 reaches us after the 10:00 count: the count already saw it.
    app.publish(
        "TW004",
        &movement_at("late", "TW004", sku, "sale", 2, "2026-11-23T09:59:00+08:00"),
    )
    .await;
    // A sale after the count applies; a count that arrives after a later sale adds it back.
    app.publish(
        "TW004",
        &movement_at(
            "after",
            "TW004",
            sku,
            "sale",
            1,
            "2026-11-23T10:30:00+08:00",
        ),
    )
    .await;
    app.wait_for_ledger(4).await;
    assert_eq!(app.on_hand("TW004", sku).await, Some(6));
    app.publish(
        "TW004",
        &movement_at("c2", "TW004", sku, "count", 9, "2026-11-23T10:15:00+08:00"),
    )
    .await;
    app.wait_for_ledger(5).await;
    assert_eq!(
        app.on_hand("TW004", sku).await,
        Some(8),
        "count 9 at 10:15 plus the 10:30 sale"
    );
    let (outcome, effect): (String, i64) =
        sqlx::query_as("SELECT outcome, effect FROM movements WHERE event_id = 'late'")
            .fetch_one(&app.pool)
            .await
            .expect("late row");
    assert_eq!((outcome.as_str(), effect), ("late", 0));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn each_class_of_bad_input_is_dead_lettered_and_the_stream_keeps_flowing() {
    let app = spawn_app().await;
    app.store("TW005", 22.99083, 120.21333).await;
    let good = |id: &str| movement(id, "TW005", "SKU-A", "receipt", 1);
    let mut bad_kind = good("bad-kind");
    bad_kind["kind"] = json!("theft");
    let mut bad_qty = good("bad-qty");
    bad_qty["quantity"] = json!(0);
    let mut too_big = good("too-big");
    too_big["quantity"] = json!(1_000_000_001_i64);
    let mut no_event = good("x");
    no_event.as_object_mut().expect("object").remove("event_id");
    let mut bad_time = good("bad-time");
    bad_time["occurred_at"] = json!("last tuesday");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("TW005", b"{not json".to_vec(), "malformed_json", "TW005"),
        (
            "TW005",
            serde_json::to_vec(&bad_kind).expect("json"),
            "invalid_kind",
            "TW005",
        ),
        (
            "TW005",
            serde_json::to_vec(&bad_qty).expect("json"),
            "invalid_quantity",
            "TW005",
        ),
        (
            "TW005",
            serde_json::to_vec(&too_big).expect("json"),
            "invalid_quantity",
            "TW005",
        ),
        (
            "TW005",
            serde_json::to_vec(&no_event).expect("json"),
            "invalid_event_id",
            "TW005",
        ),
        (
            "TW005",
            serde_json::to_vec(&bad_time).expect("json"),
            "invalid_occurred_at",
            "TW005",
        ),
        (
            "TW999",
            serde_json::to_vec(&good("mismatch")).expect("json"),
            "location_mismatch",
            "TW999",
        ),
        (
            "TW404",
            serde_json::to_vec(&movement("unknown-loc", "TW404", "SKU-A", "receipt", 1))
                .expect("json"),
            "unknown_location",
            "TW404",
        ),
        ("TW005", b"[]".to_vec(), "empty_batch", "TW005"),
        (
            "TW005",
            serde_json::to_vec(&Value::Array(vec![good("big"); 1001])).expect("json"),
            "batch_too_large",
            "TW005",
        ),
    ];
    for (i, (location, body, _, _)) in cases.iter().enumerate() {
        app.publish_raw(&app.subjects.movements(location), body.clone())
            .await;
        // After each bad message a good one: it must still apply.
        app.publish("TW005", &good(&format!("good-{i}"))).await;
    }
    app.publish_raw(
        &format!("{}.movements.TW005.extra", app.subjects.prefix),
        b"{}".to_vec(),
    )
    .await;
    let letters = app.wait_for_deadletters(cases.len() + 1).await;
    app.wait_for_ledger(cases.len() as i64).await;
    assert_eq!(
        app.on_hand("TW005", "SKU-A").await,
        Some(cases.len() as i64),
        "only the good ones applied"
    );
    for (_, _, reason, location) in &cases {
        let found = letters.iter().find(|(subject, l)| {
            l["reason"] == json!(reason) && subject == &app.subjects.deadletter(location)
        });
        assert!(
            found.is_some(),
            "no dead letter with reason {reason} on {location}: {letters:?}"
        );
        let (_, l) = found.expect("found");
        assert!(l["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!l["body"].is_null(), "original body kept");
    }
    let malformed = letters
        .iter()
        .find(|(_, l)| l["reason"] == json!("malformed_json"))
        .expect("malformed");
    assert_eq!(malformed.1["body"], json!("{not json"));
    assert!(letters
        .iter()
        .any(|(s, l)| l["reason"] == json!("invalid_subject")
            && s == &app.subjects.deadletter("unknown")));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_bad_element_of_a_batch_is_dead_lettered_alone() {
    let app = spawn_app().await;
    app.store("TW006", 25.01427, 121.46719).await;
    let mut bad = movement("b-bad", "TW006", "SKU-B", "sale", 1);
    bad["quantity"] = json!(-1);
    let batch = json!([
        movement("b-1", "TW006", "SKU-B", "receipt", 4),
        bad,
        movement("b-2", "TW006", "SKU-B", "sale", 1),
    ]);
    app.publish("TW006", &batch).await;
    let letters = app.wait_for_deadletters(1).await;
    app.wait_for_ledger(2).await;
    assert_eq!(app.on_hand("TW006", "SKU-B").await, Some(3));
    assert_eq!(letters[0].1["index"], json!(1));
    assert_eq!(letters[0].1["body"]["event_id"], json!("b-bad"));
    assert_eq!(letters[0].1["reason"], json!("invalid_quantity"));
}

#[tokio::test]
async fn several_daemons_on_one_stream_never_double_apply() {
    let iso = Isolation::new().await;
    let a = spawn_with(iso.clone(), |c| c.ingest_batch = 50).await;
    let b = spawn_with(iso.clone(), |c| c.ingest_batch = 50).await;
    a.store("TW007", 24.99368, 121.29696).await;
    wait_until("both daemons know TW007", || async {
        b.get("/v1/locations/TW007", READ_KEY).await.0 == 200
    })
    .await;
    // 600 distinct movements, each published twice with different message ids, interleaved
    // through both daemons; receipts of 1 to 3 units on 10 SKUs.
    let mut expected = std::collections::HashMap::new();
    for round in 0..2 {
        for i in 0..600 {
            let sku = format!("SKU-{}", i % 10);
            let q = (i % 3 + 1) as i64;
            if round == 0 {
                *expected.entry(sku.clone()).or_insert(0) += q;
            }
            let m = movement(&format!("m-{i}"), "TW007", &sku, "receipt", q);
            a.publish_with_msg_id("TW007", &m, &format!("{round}-{i}"))
                .await;
        }
    }
    a.wait_for_ledger(600).await;
    for (sku, q) in expected {
        assert_eq!(a.on_hand("TW007", &sku).await, Some(q), "{sku}");
    }
    a.assert_ledger_consistent().await;
}

#[tokio::test]
async fn movements_published_while_the_daemon_is_down_apply_after_restart() {
    let iso = Isolation::new().await;
    // A stopped daemon's last pull request may still be answered by the server with messages
    // nobody will ack; they come back after the ack wait, kept short here.
    let mut first = spawn_with(iso.clone(), |c| c.ingest_ack_wait_seconds = 2).await;
    first.store("TW010", 22.62659, 120.36126).await;
    first
        .publish("TW010", &movement("before", "TW010", "CAP-1", "receipt", 5))
        .await;
    first.wait_for_ledger(1).await;
    first.stop().await;
    for i in 0..20 {
        first
            .publish(
                "TW010",
                &movement(&format!("down-{i}"), "TW010", "CAP-1", "sale", 1),
            )
            .await;
    }
    let second = spawn_with(iso, |c| c.ingest_ack_wait_seconds = 2).await;
    second.wait_for_ledger(21).await;
    assert_eq!(second.on_hand("TW010", "CAP-1").await, Some(-15));
    second.assert_ledger_consistent().await;
}

/// Gives a level an on-hand near the bigint limit the only way there is (a movement may move
/// at most 10^9): a count written straight into the ledger, with its level, as an older
/// writer could have left it. Levels and ledger agree.
async fn seed_count(app: &crate::helpers::TestApp, location: &str, sku: &str, on_hand: i64) {
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut tx = app.pool.begin().await.expect("tx");
    sqlx::query("INSERT INTO skus (sku) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(sku)
        .execute(&mut *tx)
        .await
        .expect("sku");
    sqlx::query(
        "INSERT INTO stock_levels (location_id, sku, on_hand, version, last_count_at, last_movement_at)
         VALUES ($1, $2, $3, 1, $4, $4)",
    )
    .bind(location)
    .bind(sku)
    .bind(on_hand)
    .bind(at)
    .execute(&mut *tx)
    .await
    .expect("level");
    sqlx::query(
        "INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                                effect, outcome, on_hand_after, occurred_at)
         VALUES ($1, $2, $3, 'count', $4, NULL, $4, 'applied', $4, $5)",
    )
    .bind(format!("seed-{sku}"))
    .bind(location)
    .bind(sku)
    .bind(on_hand)
    .bind(at)
    .execute(&mut *tx)
    .await
    .expect("ledger");
    tx.commit().await.expect("commit");
}

fn letter_at(letters: &[(String, Value)], index: usize) -> &Value {
    &letters
        .iter()
        .find(|(_, l)| l["index"] == json!(index))
        .unwrap_or_else(|| panic!("no dead letter for index {index}: {letters:?}"))
        .1
}

#[tokio::test]
async fn overflowing_movements_are_dead_lettered_alone_and_the_rest_of_their_batch_applies() {
    let app = spawn_app().await;
    app.store("TW010", 25.03, 121.56).await;
    let near = i64::MAX - 5;
    seed_count(&app, "TW010", "SKU-BIG", near).await;
    let mut min_adjustment = movement("o-min", "TW010", "SKU-BIG", "adjustment", 1);
    min_adjustment["quantity"] = json!(i64::MIN);
    let batch = json!([
        movement("o-over", "TW010", "SKU-BIG", "receipt", 10),
        movement("o-sale", "TW010", "SKU-BIG", "sale", 3),
        min_adjustment.clone(),
        movement("o-rcpt", "TW010", "SKU-BIG", "receipt", 2),
        movement("o-ok", "TW010", "SKU-OK", "receipt", 7),
        movement("o-over2", "TW010", "SKU-BIG", "adjustment", 1_000_000_000),
    ]);
    app.publish("TW010", &batch).await;
    // Alone in its message, i64::MIN is rejected whole.
    let mut alone = min_adjustment;
    alone["event_id"] = json!("o-min-alone");
    app.publish("TW010", &alone).await;
    app.publish(
        "TW010",
        &movement("o-after", "TW010", "SKU-OK", "receipt", 1),
    )
    .await;

    let letters = app.wait_for_deadletters(4).await;
    app.wait_for_ledger(1 + 4).await;
    assert_eq!(
        app.on_hand("TW010", "SKU-BIG").await,
        Some(near - 3 + 2),
        "the sale and the small receipt applied, nothing wrapped"
    );
    assert_eq!(app.on_hand("TW010", "SKU-OK").await, Some(8));
    let over = letter_at(&letters, 0);
    assert_eq!(over["reason"], json!("quantity_overflow"));
    assert_eq!(over["body"]["event_id"], json!("o-over"));
    assert!(over["message"]
        .as_str()
        .is_some_and(|m| m.contains("64-bit")));
    assert_eq!(letter_at(&letters, 2)["reason"], json!("invalid_quantity"));
    assert_eq!(letter_at(&letters, 5)["reason"], json!("quantity_overflow"));
    let whole = letters
        .iter()
        .find(|(_, l)| l["index"].is_null())
        .expect("the single i64::MIN");
    assert_eq!(whole.1["reason"], json!("invalid_quantity"));
    // In arrival order per SKU: SKUs are applied by shards of their own, which commit
    // independently, so there is no order across SKUs (see `ingest::shards`).
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM movements ORDER BY sku, id")
            .fetch_all(&app.pool)
            .await
            .expect("ids");
    assert_eq!(
        recorded,
        vec!["seed-SKU-BIG", "o-sale", "o-rcpt", "o-ok", "o-after"]
    );
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_nul_in_one_element_costs_only_that_element() {
    let app = spawn_app().await;
    app.store("TW011", 25.03, 121.56).await;
    let mut nul = movement("n-2", "TW011", "SKU-N", "receipt", 2);
    nul["source"] = json!("pos\u{0}7");
    let mut nul_ref = movement("n-4", "TW011", "SKU-N", "receipt", 8);
    nul_ref["reference"] = json!("\u{0}");
    app.publish(
        "TW011",
        &json!([
            movement("n-1", "TW011", "SKU-N", "receipt", 1),
            nul,
            movement("n-3", "TW011", "SKU-N", "receipt", 4),
            nul_ref,
        ]),
    )
    .await;
    let letters = app.wait_for_deadletters(2).await;
    app.wait_for_ledger(2).await;
    assert_eq!(app.on_hand("TW011", "SKU-N").await, Some(5));
    for i in [1, 3] {
        let l = letter_at(&letters, i);
        assert_eq!(l["reason"], json!("invalid_text"), "{l}");
    }
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_database_refusal_validation_misses_is_bisected_down_to_its_movement() {
    let app = spawn_app().await;
    app.store("TW012", 25.03, 121.56).await;
    // A refusal no validation knows of: PostgreSQL raises 23514 for this one reference.
    sqlx::query(
        "ALTER TABLE movements ADD CONSTRAINT test_refuses_poison
         CHECK (reference IS DISTINCT FROM 'poison')",
    )
    .execute(&app.pool)
    .await
    .expect("constraint");
    let element = |i: usize| {
        let mut m = movement(&format!("p-{i}"), "TW012", "SKU-P", "receipt", 1 << i);
        if i == 5 || i == 11 {
            m["reference"] = json!("poison");
        }
        m
    };
    app.publish("TW012", &Value::Array((0..8).map(element).collect()))
        .await;
    app.publish("TW012", &Value::Array((8..13).map(element).collect()))
        .await;
    let letters = app.wait_for_deadletters(2).await;
    app.wait_for_ledger(11).await;
    let expected: i64 = (0..13)
        .filter(|i| *i != 5 && *i != 11)
        .map(|i| 1 << i)
        .sum();
    assert_eq!(app.on_hand("TW012", "SKU-P").await, Some(expected));
    let mut refused: Vec<&Value> = letters
        .iter()
        .map(|(_, l)| &l["body"]["event_id"])
        .collect();
    refused.sort_by_key(|v| v.to_string());
    assert_eq!(refused, vec![&json!("p-11"), &json!("p-5")]);
    for (_, l) in &letters {
        assert_eq!(l["reason"], json!("rejected_by_database"));
        assert!(
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("test_refuses_poison")),
            "{l}"
        );
    }
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_dead_letter_bigger_than_max_payload_is_cut_down_and_published() {
    let app = spawn_app().await;
    app.store("TW013", 25.03, 121.56).await;
    let max_payload = app.js.client().server_info().max_payload;
    // Not JSON: the letter keeps it as a JSON string, where each control byte takes six.
    let body = vec![1u8; max_payload - 4_096];
    app.publish_raw(&app.subjects.movements("TW013"), body.clone())
        .await;
    app.publish("TW013", &movement("c-1", "TW013", "SKU-C", "receipt", 1))
        .await;
    let letters = app.wait_for_deadletters(1).await;
    let l = &letters[0].1;
    assert_eq!(l["reason"], json!("malformed_json"));
    assert_eq!(l["body_truncated"], json!(true));
    assert_eq!(l["body_size"], json!(body.len()));
    // Each control character takes six bytes as JSON: a sixth of the room, less the rest.
    assert!(l["body"]
        .as_str()
        .is_some_and(|b| b.len() > max_payload / 8 && b.bytes().all(|c| c == 1)));
    assert!(l["stream_sequence"].as_u64().is_some_and(|s| s > 0));
    app.wait_for_ledger(1).await;
}

fn given_up(metrics: &str, reason: &str) -> f64 {
    let prefix = format!("omnistock_ingest_given_up_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_message_that_can_never_be_settled_is_terminated_at_the_delivery_limit() {
    let iso = Isolation::new().await;
    // A consumer made before max_deliver existed: unlimited. The daemon must update it.
    {
        let nats = async_nats::connect(std::env::var("NATS_URL").expect("NATS_URL"))
            .await
            .expect("nats");
        let js = async_nats::jetstream::new(nats);
        let subjects = omnistock::config::Subjects::new(&iso.subject_prefix);
        let stream = omnistock::ingest::ensure_streams(&js, &subjects)
            .await
            .expect("streams");
        stream
            .get_or_create_consumer(
                omnistock::ingest::CONSUMER,
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(omnistock::ingest::CONSUMER.to_owned()),
                    filter_subject: subjects.movements_wildcard(),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .expect("old consumer");
    }
    let app = spawn_with(iso, |c| c.ingest_max_deliver = 3).await;
    let stream = app
        .js
        .get_stream(app.subjects.movements_stream())
        .await
        .expect("stream");
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(omnistock::ingest::CONSUMER)
        .await
        .expect("consumer");
    assert_eq!(
        consumer.info().await.expect("info").config.max_deliver,
        3,
        "the existing consumer was updated"
    );
    app.store("TW014", 25.03, 121.56).await;
    // With the dead-letter stream gone, a rejection can be neither applied nor dead-lettered.
    app.js
        .delete_stream(app.subjects.deadletter_stream())
        .await
        .expect("delete");
    app.publish_raw(&app.subjects.movements("TW014"), b"{not json".to_vec())
        .await;
    wait_until("the message to be given up", || async {
        given_up(&app.metrics().await, "deadletter_failed") >= 1.0
    })
    .await;
    wait_until("nothing pending", || async {
        let mut c = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                omnistock::ingest::CONSUMER,
            )
            .await
            .expect("consumer");
        let info = c.info().await.expect("info");
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;
    // Ingest goes on.
    app.publish("TW014", &movement("g-1", "TW014", "SKU-G", "receipt", 1))
        .await;
    app.wait_for_ledger(1).await;
}

#[tokio::test]
async fn an_import_count_whose_effect_overflows_fails_the_import_and_changes_nothing() {
    let app = spawn_app().await;
    app.store("TW015", 25.03, 121.56).await;
    // A delta near the bigint limit recorded after the count's instant: the count must add it.
    let near = i64::MAX - 10;
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut tx = app.pool.begin().await.expect("tx");
    sqlx::query("INSERT INTO skus (sku) VALUES ('SKU-I')")
        .execute(&mut *tx)
        .await
        .expect("sku");
    sqlx::query(
        "INSERT INTO stock_levels (location_id, sku, on_hand, version, last_movement_at)
         VALUES ('TW015', 'SKU-I', $1, 1, $2)",
    )
    .bind(near)
    .bind(at)
    .execute(&mut *tx)
    .await
    .expect("level");
    sqlx::query(
        "INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                                effect, outcome, on_hand_after, occurred_at)
         VALUES ('seed-i', 'TW015', 'SKU-I', 'receipt', $1, $1, $1, 'applied', $1, $2)",
    )
    .bind(near)
    .bind(at)
    .execute(&mut *tx)
    .await
    .expect("ledger");
    tx.commit().await.expect("commit");
    let dir =
        std::env::temp_dir().join(format!("omnistock-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("s.csv");
    let counted = (at - chrono::Duration::hours(1)).to_rfc3339();
    std::fs::write(
        &file,
        format!("location_id,sku,on_hand,counted_at\nTW015,SKU-I,1000000000,{counted}\n"),
    )
    .expect("csv");
    let e = omnistock::ops::import::stock(&app.pool, None, &file, chrono::Utc::now())
        .await
        .expect_err("the count does not fit");
    // The reason sits under the "importing <file>" context.
    assert!(format!("{e:#}").contains("64-bit"), "{e:#}");
    assert_eq!(app.on_hand("TW015", "SKU-I").await, Some(near));
    assert_eq!(app.ledger_count().await, 1);
    app.assert_ledger_consistent().await;
}

/// A movement from JetStream is recorded with its message's publish time, exactly (to
/// PostgreSQL's microsecond), not with when it occurred nor when the daemon got to it.
#[tokio::test]
async fn a_movement_from_nats_keeps_its_jetstream_publish_time() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let body = movement_at("n1", "TW001", "A", "receipt", 2, "2026-11-01T08:00:00Z");
    let ack = app
        .js
        .publish(
            app.subjects.movements("TW001"),
            serde_json::to_vec(&body).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    app.wait_for_ledger(1).await;
    let stored = app
        .js
        .get_stream(app.subjects.movements_stream())
        .await
        .expect("stream")
        .get_raw_message(ack.sequence)
        .await
        .expect("message")
        .time;
    let expected = stored.unix_timestamp_nanos() / 1_000;

    let (status, history) = app.get("/v1/movements?location_id=TW001", READ_KEY).await;
    assert_eq!(status, 200, "{history}");
    let row = &history["movements"][0];
    assert_eq!(row["event_id"], "n1", "{history}");
    let published = row["published_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("a published_at: {row}"));
    assert_eq!(
        i128::from(published.timestamp_micros()),
        expected,
        "the JetStream publish time: {row}"
    );
}

/// Two transfers of different SKUs to different stores in one batch: each touches only its own
/// destination. Pairing every destination with every SKU of the batch once created empty levels
/// at stores the goods never went to (seen by `omnistock simulate`: levels never cached, which
/// reconcile then reported as stale).
#[tokio::test]
async fn transfers_in_one_batch_create_levels_only_at_their_own_destinations() {
    let app = spawn_app().await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.store("TW002", 25.06199, 121.45703).await;
    app.store("TW003", 25.03, 121.5).await;
    let transfer = |id: &str, sku: &str, to: &str| {
        let mut m = movement(id, "TW003", sku, "transfer_out", 2);
        m["transfer_id"] = json!(format!("T-{id}"));
        m["to_location_id"] = json!(to);
        m
    };
    let batch = json!([
        movement("r-a", "TW003", "SKU-A", "receipt", 10),
        movement("r-b", "TW003", "SKU-B", "receipt", 10),
        transfer("t-a", "SKU-A", "TW001"),
        transfer("t-b", "SKU-B", "TW002"),
    ]);
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/v1/movements",
            crate::helpers::ADMIN_KEY,
            &batch,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let levels: Vec<(String, String)> = sqlx::query_as(
        "SELECT location_id, sku FROM stock_levels WHERE location_id <> 'TW003'
         ORDER BY location_id, sku",
    )
    .fetch_all(&app.pool)
    .await
    .expect("levels");
    let expected =
        [("TW001", "SKU-A"), ("TW002", "SKU-B")].map(|(l, s)| (l.to_owned(), s.to_owned()));
    assert_eq!(levels, expected.to_vec());
    app.assert_ledger_consistent().await;
}
