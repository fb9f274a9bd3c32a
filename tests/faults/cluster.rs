//! Beyond one machine: a 3-node NATS cluster on loopback with the movement stream at 3
//! replicas, and two `omnistock serve` processes sharing one PostgreSQL database and one Redis
//! prefix. Movements are published while the movement stream's leader node and one daemon
//! are killed (SIGKILL) and restarted. Then: every movement applied exactly once, levels equal
//! the ledger, ingest went on while they were down, and every change event reached the
//! changes stream.
//!
//! Short form by default (CI); `OMNISTOCK_LONG=1` publishes 50,000 movements
//! (`OMNISTOCK_CLUSTER_MOVEMENTS` overrides either). Prints its figures.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::Value;

use crate::daemon::{Daemon, Urls};
use crate::nats_security::database_with_locations;
use crate::servers::{free_port, shared_redis, tcp_exchange, turn, Server, TempDir};
use crate::support::{drained, env_or, movement, tally, wait_for, Bus, Checks, Expected, Truth};

const LOCATIONS: [&str; 4] = ["C1", "C2", "C3", "C4"];
const SKUS: u64 = 50;
/// Movements per published message (a batch, as a till sends them).
const PER_MESSAGE: usize = 50;

struct Cluster {
    nodes: Vec<Server>,
    names: Vec<String>,
}

impl Cluster {
    /// Three nodes routed to each other, JetStream in their own folders under `dir`.
    fn new(dir: &Path) -> Self {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        for (i, (client, monitor, cluster)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.join(format!("{name}-js"));
            // The default sync interval: a node here dies by SIGKILL, not by power loss, so
            // what it acked is in the page cache; the replicas are what the test is about.
            let conf = format!(
                "server_name: {name}\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 cluster {{\n  name: omnistock-test\n  listen: 127.0.0.1:{cluster}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, conf).expect("node config");
            nodes.push(Server::nats_with(
                &path,
                *client,
                *monitor,
                &[] as &[OsString],
                dir.join(format!("{name}.log")),
            ));
            names.push(name);
        }
        Cluster { nodes, names }
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running node reports itself healthy (JetStream meta leader known,
    /// streams current).
    async fn healthy(&self, timeout: Duration) -> bool {
        wait_for(timeout, || async {
            for n in self.nodes.iter().filter(|n| n.pid().is_some()) {
                let reply = tcp_exchange(
                    n.monitor_port,
                    b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                )
                .await;
                if !reply.is_some_and(|r| r.starts_with("HTTP/1.0 200")) {
                    return false;
                }
            }
            true
        })
        .await
        .is_some()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.port, crate::serve::tail(&n.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The published movements of message `i`: receipts and sales spread over the locations and
/// SKUs, ids unique per run.
fn message(i: usize, rng: &mut crate::support::Rng) -> (String, Vec<Value>) {
    let location = LOCATIONS[i % LOCATIONS.len()];
    let body = (0..PER_MESSAGE)
        .map(|j| {
            let sku = format!("SKU-{}", rng.below(SKUS));
            let (kind, q) = if rng.below(3) == 0 {
                ("sale", 1 + rng.below(3) as i64)
            } else {
                ("receipt", 1 + rng.below(5) as i64)
            };
            movement(&format!("cl-{i}-{j}"), location, &sku, kind, q)
        })
        .collect();
    (location.to_owned(), body)
}

/// A reader of the whole stream. After a node was killed and restarted, the R3 stream may still
/// be electing a leader, and JetStream requests time out meanwhile (CI saw "reader: TimedOut"):
/// retry for a minute, as the daemon does at start.
async fn reader(
    js: &jetstream::Context,
    stream: &str,
) -> consumer::Consumer<consumer::pull::Config> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            s.create_consumer(consumer::pull::Config {
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reader of {stream} not ready ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("reader of {stream}: {e}"),
        }
    }
}

/// Every change event on the changes stream: Nats-Msg-Id → (location, sku, version, on_hand).
async fn change_events(
    js: &jetstream::Context,
    stream: &str,
) -> HashMap<String, (String, String, i64, i64)> {
    let c = reader(js, stream).await;
    let mut pending = c.cached_info().num_pending;
    let mut out = HashMap::new();
    while pending > 0 {
        let mut batch = c
            .fetch()
            .max_messages(pending.min(1_000) as usize)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch");
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.expect("message");
            got += 1;
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let b: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            out.insert(
                id,
                (
                    b["location_id"].as_str().unwrap_or_default().to_owned(),
                    b["sku"].as_str().unwrap_or_default().to_owned(),
                    b["version"].as_i64().unwrap_or(-1),
                    b["on_hand"].as_i64().unwrap_or(i64::MIN),
                ),
            );
        }
        assert!(got > 0, "the changes stream stopped delivering");
        pending = pending.saturating_sub(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_a_three_node_cluster_survive_a_node_and_a_daemon_dying() {
    let long = std::env::var_os("OMNISTOCK_LONG").is_some_and(|v| v == "1");
    let total = env_or(
        "OMNISTOCK_CLUSTER_MOVEMENTS",
        if long { 50_000 } else { 3_000 },
    ) as usize;
    let messages = total.div_ceil(PER_MESSAGE);
    let _turn = turn().await;
    let started = Instant::now();
    let dir = TempDir::new("cluster");
    let database = database_with_locations(dir.path(), &LOCATIONS).await;

    let mut cluster = Cluster::new(dir.path());
    {
        let (a, rest) = cluster.nodes.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        tokio::join!(a[0].start(), b[0].start(), c[0].start());
    }
    assert!(
        cluster.healthy(Duration::from_secs(60)).await,
        "the cluster did not form:\n{}",
        cluster.logs()
    );

    let urls = Urls {
        database: database.clone(),
        redis: shared_redis(),
        redis_prefix: format!("fcl{}", free_port()),
        nats: cluster.urls(),
    };
    let mut daemons: Vec<Daemon> = (0..2)
        .map(|i| {
            let mut d = Daemon::on(&urls, dir.path().join(format!("omnistock-{i}.log")), 5);
            d.set_env("OMNISTOCK_STREAM_REPLICAS", "3");
            d
        })
        .collect();
    for d in &mut daemons {
        d.start().await;
    }

    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(cluster.urls().split(',').collect::<Vec<_>>())
        .await
        .expect("connect to the cluster");
    let bus = Bus::on(client);
    let truth = Truth::at(&database).await;
    let mut stream = bus
        .js
        .get_stream(bus.subjects.movements_stream())
        .await
        .expect("movement stream");
    let info = stream.info().await.expect("stream info").clone();
    let mut checks = Checks::default();
    checks.check(
        info.config.num_replicas == 3,
        format!("movement stream replicas {}", info.config.num_replicas),
    );
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_default();
    let victim = cluster.names.iter().position(|n| *n == leader).unwrap_or(0);

    let mut rng = crate::support::Rng::seeded("cluster");
    let mut expected = Expected::default();
    let third = messages / 3;
    let publish_started = Instant::now();
    let mut plan = |from: usize, to: usize| -> Vec<(String, Vec<Value>)> {
        let batch: Vec<(String, Vec<Value>)> = (from..to).map(|i| message(i, &mut rng)).collect();
        for (_, body) in &batch {
            for m in body {
                expected.add(m);
            }
        }
        batch
    };

    publish_all(&bus, plan(0, third)).await;
    // Down: the movement stream's leader node and one daemon, both by SIGKILL.
    cluster.nodes[victim].kill9().await;
    daemons[0].kill9();
    let applied_at_kill = truth.ledger_count().await;
    publish_all(&bus, plan(third, 2 * third)).await;
    let want_while_down = (2 * third * PER_MESSAGE) as i64;
    let continued = wait_for(Duration::from_secs(60), || async {
        truth.ledger_count().await >= want_while_down
    })
    .await;
    let applied_while_down = truth.ledger_count().await - applied_at_kill;
    checks.check(
        continued.is_some(),
        format!(
            "ingest did not continue with a node and a daemon down: {applied_while_down} applied"
        ),
    );
    checks.check(applied_while_down > 0, "nothing applied while down");

    cluster.nodes[victim].start().await;
    daemons[0].start().await;
    publish_all(&bus, plan(2 * third, messages)).await;
    let published_in = publish_started.elapsed();

    let want = expected.events.len();
    let drain = drained(&truth, &bus, want, Duration::from_secs(600)).await;
    checks.check(
        drain.is_some(),
        format!(
            "not drained: {} of {want} movements in the ledger",
            truth.ledger_count().await
        ),
    );
    let total_time = publish_started.elapsed();
    let t = tally(&truth, &expected).await;
    checks.check(t.lost == 0, format!("{} movements lost", t.lost));
    checks.check(
        t.doubled == 0,
        format!("{} movements applied twice", t.doubled),
    );
    checks.check(
        t.unexpected == 0,
        format!("{} unexpected movements", t.unexpected),
    );
    checks.check(
        t.level_mismatches == 0,
        format!(
            "{} levels differ from the published sums",
            t.level_mismatches
        ),
    );
    let (ledger_bad, reserved_bad) = truth.invariant_violations().await;
    checks.check(
        ledger_bad == 0 && reserved_bad == 0,
        format!("levels disagree with the ledger: {ledger_bad}, with holds: {reserved_bad}"),
    );

    // Every change event: the outbox is empty, each of its change rows is on the stream
    // under its id, and each level's newest event is its final state.
    let unsent = wait_for(Duration::from_secs(120), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE id > (SELECT done_to FROM outbox_cursors WHERE name = 'relay')")
            .fetch_one(&truth.pool)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;
    checks.check(unsent.is_some(), "the outbox did not drain");
    let outbox: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM outbox WHERE subject LIKE 'changes.%' ORDER BY id")
            .fetch_all(&truth.pool)
            .await
            .expect("outbox ids");
    let events = change_events(&bus.js, &bus.subjects.changes_stream()).await;
    let missing = outbox
        .iter()
        .filter(|id| !events.contains_key(&omnistock::events::relay::event_id("changes.", **id)))
        .count();
    checks.check(
        !outbox.is_empty() && missing == 0,
        format!(
            "{missing} of {} change events missing from the stream",
            outbox.len()
        ),
    );
    let mut newest: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for (loc, sku, version, on_hand) in events.values() {
        let e = newest.entry((loc.clone(), sku.clone())).or_insert((-1, 0));
        if *version > e.0 {
            *e = (*version, *on_hand);
        }
    }
    let levels: Vec<(String, String, i64, i64)> =
        sqlx::query_as("SELECT location_id, sku, version, on_hand FROM stock_levels")
            .fetch_all(&truth.pool)
            .await
            .expect("levels");
    let stale: HashSet<(String, String)> = levels
        .iter()
        .filter(|(l, s, v, o)| newest.get(&(l.clone(), s.clone())) != Some(&(*v, *o)))
        .map(|(l, s, _, _)| (l.clone(), s.clone()))
        .collect();
    checks.check(
        stale.is_empty(),
        format!(
            "{} levels whose newest change event is not their state",
            stale.len()
        ),
    );

    let secs = total_time.as_secs_f64();
    eprintln!(
        "cluster: {want} movements in {messages} messages; published in {:.1} s, all applied \
         {:.1} s after the first publish ({:.0} movements/s); {applied_while_down} applied with \
         node {leader} and a daemon down; {} change events; whole test {:.1} s",
        published_in.as_secs_f64(),
        secs,
        want as f64 / secs,
        events.len(),
        started.elapsed().as_secs_f64()
    );
    if !checks.is_ok() {
        eprintln!("{}", cluster.logs());
    }
    checks.finish("cluster");
}

async fn publish_all(bus: &Bus, batch: Vec<(String, Vec<Value>)>) {
    for (location, body) in batch {
        bus.publish(&location, &body).await;
    }
}
