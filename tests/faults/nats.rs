//! NATS killed -9 mid-ingest and started again (same port, same JetStream store) under a
//! running daemon: consuming and the outbox relay resume by themselves; no movement is lost or
//! applied twice, and every change event committed reaches the stream exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::Daemon;
use crate::servers::Servers;
use crate::support::{drained, movement, tally, wait_for, Bus, Checks, Expected, Truth};

const BEFORE_MESSAGES: usize = 20;
const AFTER_MESSAGES: usize = 10;
const PER_MESSAGE: usize = 250;
const HOLDS_WHILE_DOWN: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_consume_and_outbox_resume_nothing_lost_or_doubled() {
    let mut servers = Servers::start("nats").await;
    let mut daemon = Daemon::new(&servers, 5);
    daemon.start().await;
    daemon.store("TW001", 25.05306, 121.52639).await;
    daemon.store("TW002", 24.1469, 120.6839).await;
    let bus = Bus::connect(&servers).await;
    let truth = Truth::connect(&servers).await;
    let mut expected = Expected::default();
    let mut checks = Checks::default();

    let opening = [movement("open-h", "TW001", "H", "receipt", 100)];
    opening.iter().for_each(|m| expected.add(m));
    bus.publish("TW001", &opening).await;
    wait_for(Duration::from_secs(30), || async {
        truth.ledger_count().await == 1
    })
    .await
    .expect("opening stock applied");

    let batch = |phase: &str, i: usize| {
        let location = ["TW001", "TW002"][i % 2];
        let body: Vec<_> = (0..PER_MESSAGE)
            .map(|j| {
                movement(
                    &format!("{phase}-{i}-{j}"),
                    location,
                    &format!("N{:03}", j % 50),
                    if j % 4 == 0 { "sale" } else { "receipt" },
                    1 + (j % 3) as i64,
                )
            })
            .collect();
        (location, body)
    };
    for i in 0..BEFORE_MESSAGES {
        let (location, body) = batch("before", i);
        body.iter().for_each(|m| expected.add(m));
        bus.publish(location, &body).await;
    }
    // Kill it once ingest is under way, with messages still in flight.
    wait_for(Duration::from_secs(30), || async {
        truth.ledger_count().await > 1
    })
    .await;
    let at_kill = truth.ledger_count().await;
    servers.nats.kill9().await;
    eprintln!(
        "nats: killed -9 with {at_kill} of {} movements applied",
        expected.events.len()
    );

    // Holds while NATS is down: their change events wait in the outbox.
    let mut held = 0;
    for i in 0..HOLDS_WHILE_DOWN {
        let a = daemon
            .post(
                "/v1/reservations",
                &json!({"reservation_id": format!("nd-{i}"), "location_id": "TW001",
                        "lines": [{"sku": "H", "quantity": 1}]}),
            )
            .await;
        if a.status == 201 {
            held += 1;
        } else {
            eprintln!("nats: hold with NATS down: {} {}", a.status, a.body);
        }
    }
    let outbox_at_restart: i64 = sqlx::query_scalar(
        "SELECT COALESCE(max(id), 0) FROM outbox WHERE subject LIKE 'changes.%'",
    )
    .fetch_one(&truth.pool)
    .await
    .expect("outbox");
    tokio::time::sleep(Duration::from_secs(2)).await;

    servers.nats.start().await;
    let back_at = Instant::now();
    let ledger_at_restart = truth.ledger_count().await;
    for i in 0..AFTER_MESSAGES {
        let (location, body) = batch("after", i);
        body.iter().for_each(|m| expected.add(m));
        bus.publish(location, &body).await;
    }
    let want = expected.events.len() as i64;
    let consume_back = wait_for(Duration::from_secs(60), || async {
        truth.ledger_count().await > ledger_at_restart
    })
    .await
    .map(|_| back_at.elapsed().as_secs_f64());
    let drained = drained(&truth, &bus, want as usize, Duration::from_secs(120))
        .await
        .map(|_| back_at.elapsed().as_secs_f64());
    let unsent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE id > (SELECT done_to FROM outbox_cursors WHERE name = 'relay')")
            .fetch_one(&truth.pool)
            .await
            .expect("unsent")
    };
    let outbox_back = wait_for(Duration::from_secs(60), || async { unsent().await == 0 })
        .await
        .map(|_| back_at.elapsed().as_secs_f64());

    // Every committed change event on the stream exactly once.
    let outbox_ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM outbox WHERE subject LIKE 'changes.%' ORDER BY id")
            .fetch_all(&truth.pool)
            .await
            .expect("outbox ids");
    let mut on_stream: HashMap<String, usize> = HashMap::new();
    for (_, _, id) in bus.stream_messages(&bus.subjects.changes_stream()).await {
        *on_stream.entry(id.unwrap_or_default()).or_default() += 1;
    }
    let events_lost = outbox_ids
        .iter()
        .filter(|id| !on_stream.contains_key(&format!("chg-{id}")))
        .count();
    let events_doubled: usize = on_stream.values().map(|n| n - 1).sum();
    let outage_events = outbox_ids
        .iter()
        .filter(|id| **id > 0 && **id <= outbox_at_restart)
        .count();

    let t = tally(&truth, &expected).await;
    let (ledger_bad, reserved_bad) = truth.invariant_violations().await;
    eprintln!(
        "nats: {} movements; consume resumed {consume_back:?} s and drained {drained:?} s after \
         NATS came back; outbox empty after {outbox_back:?} s; {held}/{HOLDS_WHILE_DOWN} holds \
         taken while NATS was down",
        expected.events.len()
    );
    eprintln!(
        "nats: movements lost {} doubled {} unexpected {} level mismatches {}; change events: \
         {} committed ({outage_events} by the time NATS came back), {events_lost} lost, \
         {events_doubled} doubled; ledger violations {ledger_bad}, reserved violations {reserved_bad}",
        t.lost,
        t.doubled,
        t.unexpected,
        t.level_mismatches,
        outbox_ids.len()
    );

    checks.check(daemon.running(), "the daemon died");
    checks.check(held == HOLDS_WHILE_DOWN, "holds failed while NATS was down");
    checks.check(
        consume_back.is_some(),
        "consuming did not resume within 60 s",
    );
    checks.check(drained.is_some(), "ingest did not drain within 120 s");
    checks.check(
        outbox_back.is_some(),
        "the outbox did not empty within 60 s",
    );
    checks.check(
        (t.lost, t.doubled, t.unexpected, t.level_mismatches) == (0, 0, 0, 0),
        format!(
            "movements lost {} doubled {} unexpected {} level mismatches {}",
            t.lost, t.doubled, t.unexpected, t.level_mismatches
        ),
    );
    checks.check(
        (ledger_bad, reserved_bad) == (0, 0),
        "levels disagree with the ledger or the holds",
    );
    checks.check(
        events_lost == 0 && events_doubled == 0,
        format!("change events lost {events_lost}, doubled {events_doubled}"),
    );
    checks.check(
        outbox_ids.len() > outage_events,
        "no change event was committed after NATS came back",
    );
    checks.finish("nats");
}
