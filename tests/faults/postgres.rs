//! PostgreSQL stopped, then started again, under a running daemon: nothing is acked that was
//! not committed, holds and routes say 503 fast, reads go on from Redis saying how old they
//! are, and everything comes back without restarting the daemon.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::Daemon;
use crate::servers::Servers;
use crate::support::{age_field, drained, movement, tally, wait_for, Bus, Checks, Expected, Truth};

/// The bound for a call needing PostgreSQL while it is down.
const FAIL_FAST: Duration = Duration::from_secs(1);
/// A read answered from Redis needs no PostgreSQL: the read bound under faults.
const READ_BOUND: Duration = Duration::from_millis(500);
const DOWN_MESSAGES: usize = 20;
const PER_MESSAGE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_acks_nothing_uncommitted_and_recovers_in_place() {
    let mut servers = Servers::start("pg").await;
    // The default ack wait: an ack of uncommitted work must show before JetStream would redeliver.
    let mut daemon = Daemon::new(&servers, 10);
    daemon.start().await;
    daemon.store("TW001", 25.05306, 121.52639).await;
    let bus = Bus::connect(&servers).await;
    let truth = Truth::connect(&servers).await;
    let mut expected = Expected::default();
    let mut checks = Checks::default();

    let opening = vec![
        movement("open-a", "TW001", "A", "receipt", 10),
        movement("open-b", "TW001", "B", "receipt", 10),
    ];
    opening.iter().for_each(|m| expected.add(m));
    bus.publish("TW001", &opening).await;
    wait_for(Duration::from_secs(30), || async {
        truth.ledger_count().await == 2
    })
    .await
    .expect("opening stock applied");
    // The first read may fill Redis; the next ones come from it.
    let warm = wait_for(Duration::from_secs(10), || async {
        let a = daemon.get("/v1/availability/A").await;
        a.status == 200 && a.body["source"] == json!("cache") && a.body["available"] == json!(10)
    })
    .await;
    assert!(
        warm.is_some(),
        "availability of A never came from the cache"
    );
    let pid = daemon.pid();

    servers.pg.stop().await;
    let down_at = Instant::now();
    eprintln!("pg: PostgreSQL stopped");

    // Holds and routes need PostgreSQL: a quick 503, not a hang.
    let mut hold_worst = Duration::ZERO;
    let mut route_worst = Duration::ZERO;
    for i in 0..3 {
        let h = daemon
            .post(
                "/v1/reservations",
                &json!({"reservation_id": format!("down-{i}"), "location_id": "TW001",
                        "lines": [{"sku": "A", "quantity": 1}]}),
            )
            .await;
        checks.check(
            h.status == 503,
            format!("hold with PostgreSQL down answered {} {}", h.status, h.body),
        );
        hold_worst = hold_worst.max(h.took);
        let r = daemon
            .post(
                "/v1/orders/route",
                &json!({"order_id": format!("down-{i}"), "lines": [{"sku": "A", "quantity": 1}],
                        "fulfilment": "delivery", "customer": {"lat": 25.05, "lon": 121.5}}),
            )
            .await;
        checks.check(
            r.status == 503,
            format!(
                "route with PostgreSQL down answered {} {}",
                r.status, r.body
            ),
        );
        route_worst = route_worst.max(r.took);
    }

    // Reads go on from Redis.
    let mut read_worst = Duration::ZERO;
    let mut read_failures = 0;
    let mut ages = Vec::new();
    for _ in 0..20 {
        let a = daemon.get("/v1/availability/A").await;
        read_worst = read_worst.max(a.took);
        if a.status != 200 || a.body["available"] != json!(10) || a.body["source"] != json!("cache")
        {
            read_failures += 1;
            eprintln!("pg: read while down: {} {}", a.status, a.body);
        }
        ages.push(age_field(&a.body));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Movements published while PostgreSQL is down: stored by JetStream, never acked.
    let mut first_seq = u64::MAX;
    let mut down_bodies = Vec::new();
    for i in 0..DOWN_MESSAGES {
        let body: Vec<_> = (0..PER_MESSAGE)
            .map(|j| movement(&format!("down-{i}-{j}"), "TW001", "A", "receipt", 1))
            .collect();
        body.iter().for_each(|m| expected.add(m));
        first_seq = first_seq.min(bus.publish("TW001", &body).await);
        down_bodies.push(body);
    }
    // Two sent twice, as a publisher retrying would.
    for body in down_bodies.iter().take(2) {
        bus.publish("TW001", body).await;
    }
    // Longer than one failed attempt to reach PostgreSQL (the pool waits up to 5 s today).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (ack_floor, ack_pending, pending) = bus.consumer_state().await.expect("consumer info");
    eprintln!(
        "pg: while down: ack floor {ack_floor}, first sequence published while down {first_seq}, \
         ack pending {ack_pending}, pending {pending}"
    );
    checks.check(
        ack_floor < first_seq,
        format!(
            "a movement was acked while PostgreSQL was down (ack floor {ack_floor} >= {first_seq})"
        ),
    );
    let down_for = down_at.elapsed();

    servers.pg.start().await;
    let up_at = Instant::now();
    eprintln!("pg: PostgreSQL back after {:.1} s", down_for.as_secs_f64());
    let want = expected.events.len() as i64;
    let hold_back = wait_for(Duration::from_secs(60), || async {
        daemon
            .call(
                reqwest::Method::POST,
                "/v1/reservations",
                crate::daemon::RESERVE_KEY,
                Some(&json!({"reservation_id": "after", "location_id": "TW001",
                             "lines": [{"sku": "B", "quantity": 1}]})),
            )
            .await
            .is_ok_and(|a| a.status == 201 || a.status == 200)
    })
    .await;
    let ingest_back = drained(&truth, &bus, want as usize, Duration::from_secs(120)).await;
    let ingest_secs = ingest_back.map(|_| up_at.elapsed().as_secs_f64());
    let read_back = daemon.get("/v1/availability/A").await;

    let t = tally(&truth, &expected).await;
    let (ledger_bad, reserved_bad) = truth.invariant_violations().await;
    let age = ages.iter().flatten().next().cloned();
    eprintln!(
        "pg: hold 503 worst {:.3} s, route 503 worst {:.3} s (bound {:.1} s); reads while down: \
         worst {:.3} s, {read_failures} of 20 not 200/cache/10, age field {age:?}",
        hold_worst.as_secs_f64(),
        route_worst.as_secs_f64(),
        FAIL_FAST.as_secs_f64(),
        read_worst.as_secs_f64()
    );
    eprintln!(
        "pg: recovery after PostgreSQL came back: first hold {:?} s, every movement applied {:?} s; \
         lost {} doubled {} unexpected {} level mismatches {}; ledger violations {ledger_bad}, \
         reserved violations {reserved_bad}",
        hold_back.map(|d| d.as_secs_f64()),
        ingest_secs,
        t.lost,
        t.doubled,
        t.unexpected,
        t.level_mismatches
    );

    checks.check(
        daemon.running() && daemon.pid() == pid,
        "the daemon did not survive the outage",
    );
    checks.check(hold_back.is_some(), "holds did not come back within 60 s");
    checks.check(
        ingest_back.is_some(),
        "the movements published while PostgreSQL was down were not all applied within 120 s",
    );
    checks.check(
        (t.lost, t.doubled, t.unexpected, t.level_mismatches) == (0, 0, 0, 0),
        format!(
            "lost {} doubled {} unexpected {} level mismatches {}",
            t.lost, t.doubled, t.unexpected, t.level_mismatches
        ),
    );
    checks.check(
        (ledger_bad, reserved_bad) == (0, 0),
        "levels disagree with the ledger or the holds",
    );
    checks.check(
        read_back.status == 200
            && read_back.body["available"] == json!(10 + (DOWN_MESSAGES * PER_MESSAGE) as i64),
        format!(
            "read after recovery: {} {}",
            read_back.status, read_back.body
        ),
    );
    checks.check(
        read_failures == 0,
        format!("{read_failures} reads failed while PostgreSQL was down"),
    );
    checks.check(
        read_worst <= READ_BOUND,
        format!(
            "a read took {:.3} s with PostgreSQL down (bound 0.5 s): the read path waits for PostgreSQL",
            read_worst.as_secs_f64()
        ),
    );
    checks.check(
        hold_worst <= FAIL_FAST,
        format!(
            "a hold took {:.3} s to answer with PostgreSQL down (bound 1 s)",
            hold_worst.as_secs_f64()
        ),
    );
    checks.check(
        route_worst <= FAIL_FAST,
        format!(
            "a route took {:.3} s to answer with PostgreSQL down (bound 1 s)",
            route_worst.as_secs_f64()
        ),
    );
    checks.check(
        ages.iter().all(Option::is_some),
        "reads while PostgreSQL is down do not say how old they are (no `*age*` number in the answer)",
    );
    checks.finish("postgres");
}
