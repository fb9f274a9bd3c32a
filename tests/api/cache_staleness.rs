//! The cache's staleness bound under faults: a value older than `cache::sync::MAX_STALENESS`
//! is never served, whatever happened between a commit and its Redis write.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omnistock::cache::sync::MAX_STALENESS;
use omnistock::cache::{RedisStore, Source, StockCache};
use omnistock::domain::movement::{Incoming, Movement, MovementKind};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{movement, spawn_with, wait_until, Isolation, TestApp, READ_KEY, RESERVE_KEY};

/// Slack on top of the bound for a loaded 2-core machine (the sync runs every 250 ms).
const SLACK: Duration = Duration::from_secs(3);

async fn available(app: &TestApp, sku: &str) -> (i64, String) {
    let (status, body) = app.get(&format!("/v1/availability/{sku}"), READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    (
        body["available"].as_i64().expect("available"),
        body["source"].as_str().unwrap_or_default().to_owned(),
    )
}

/// What Redis itself holds as on-hand of one level (`None`: no complete entry).
async fn redis_on_hand(store: &RedisStore, sku: &str, location: &str) -> Option<i64> {
    let read = store.read(&[sku]).await.expect("redis read");
    read.into_iter()
        .next()
        .flatten()?
        .into_iter()
        .find(|l| l.location_id == location)
        .map(|l| l.on_hand)
}

/// A change (from `old` to `new`) committed at `committed`: reads must serve `new` from the
/// cache within the bound (plus slack for this machine), never `old` once the bound has passed,
/// and never `old` again after that.
async fn assert_repaired_within_bound(
    app: &TestApp,
    sku: &str,
    (old, new): (i64, i64),
    committed: Instant,
) {
    let deadline = committed + MAX_STALENESS + SLACK;
    loop {
        let asked = Instant::now();
        let (got, source) = available(app, sku).await;
        assert!(
            got != old || asked < committed + MAX_STALENESS,
            "{old} served {:?} after the change (bound {MAX_STALENESS:?})",
            asked - committed
        );
        if got == new && source == "cache" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {got} from {source} {:?} after the change (bound {MAX_STALENESS:?})",
            committed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let repaired = committed.elapsed();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(available(app, sku).await.0, new, "an old value came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{sku}: repaired {repaired:?} after the change (bound {MAX_STALENESS:?})");
}

/// The real daemon binary as a child process, its log in `log`.
fn daemon(iso: &Isolation, failpoint: Option<&str>, log: &std::path::Path) -> Child {
    let c = iso.connections();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnistock"));
    cmd.arg("serve")
        .env("DATABASE_URL", &c.database_url)
        .env("REDIS_URL", &c.redis_url)
        .env("NATS_URL", &c.nats_url)
        .env("OMNISTOCK_SUBJECT_PREFIX", &c.subject_prefix)
        .env("OMNISTOCK_REDIS_PREFIX", &c.redis_prefix)
        .env("OMNISTOCK_HTTP_ADDR", "127.0.0.1:0")
        .env("OMNISTOCK_API_KEYS", "test-admin-key=*")
        .env("OMNISTOCK_CACHE_REBUILD_ON_START", "false")
        .env("OMNISTOCK_RECONCILE_INTERVAL_SECONDS", "0")
        .env_remove("OMNISTOCK_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    if let Some(f) = failpoint {
        cmd.env("OMNISTOCK_FAILPOINT", f);
    }
    cmd.spawn().expect("start the omnistock binary")
}

#[tokio::test]
async fn a_crash_between_commit_and_cache_write_is_repaired_within_the_bound() {
    let iso = Isolation::new().await;
    let sku = "CRASH-SKU";
    let mut first = spawn_with(iso.clone(), |_| {}).await;
    first.store("TW001", 25.05306, 121.52639).await;
    first.stock("TW001", sku, 10).await;
    wait_until("10 served from the cache", || async {
        available(&first, sku).await == (10, "cache".into())
    })
    .await;
    first.stop().await;

    // A daemon armed to die right after its next commit, before the cache write and the ack.
    first
        .publish("TW001", &movement("crash-sale", "TW001", sku, "sale", 3))
        .await;
    let log = std::env::temp_dir().join(format!("omnistock-armed-{}.log", iso.redis_prefix));
    let mut armed = daemon(&iso, Some("after_commit_before_cache"), &log);
    let died = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(status) = armed.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let status = match died {
        Ok(s) => s,
        Err(_) => {
            let _ = armed.kill();
            panic!("the armed daemon did not crash within 60 s");
        }
    };
    let crashed_at = Instant::now();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.contains("fail point after_commit_before_cache armed"),
        "the daemon must have died at the fail point ({status:?}):\n{log}"
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "aborted (SIGABRT), as a kill -9 would leave it: nothing after the commit ran"
    );
    assert_eq!(
        first.on_hand("TW001", sku).await,
        Some(7),
        "the sale committed"
    );
    let store = RedisStore::new(&iso.redis_url, &iso.redis_prefix).expect("store");
    assert_eq!(
        redis_on_hand(&store, sku, "TW001").await,
        Some(10),
        "Redis missed the committed sale (the fault happened)"
    );

    // A second daemon, without the fail point and without a rebuild at start (like any daemon
    // that was already running): it must neither serve 10 past the bound nor double the sale.
    let second = spawn_with(iso.clone(), |c| c.cache_rebuild_on_start = false).await;
    assert_repaired_within_bound(&second, sku, (10, 7), crashed_at).await;
    assert_eq!(redis_on_hand(&store, sku, "TW001").await, Some(7));
    assert_eq!(
        second.ledger_count().await,
        2,
        "nothing lost, nothing doubled"
    );
    second.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_write_one_daemon_failed_is_not_served_stale_by_another() {
    let iso = Isolation::new().await;
    let sku = "SHARED-SKU";
    let reader = spawn_with(iso.clone(), |_| {}).await;
    reader.store("TW001", 25.05306, 121.52639).await;
    reader.stock("TW001", sku, 10).await;
    wait_until("10 served from the cache", || async {
        available(&reader, sku).await == (10, "cache".into())
    })
    .await;

    // A daemon whose Redis writes all fail (here: Redis is unreachable from it).
    let mut broken = iso.clone();
    broken.redis_url = "redis://127.0.0.1:1/".into();
    let writer = spawn_with(broken, |c| c.cache_rebuild_on_start = false).await;
    let (status, body) = writer
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"reservation_id": "cart-1", "location_id": "TW001",
                    "lines": [{"sku": sku, "quantity": 4}]}),
        )
        .await;
    let held_at = Instant::now();
    assert_eq!(status, 201, "{body}");
    assert_repaired_within_bound(&reader, sku, (10, 6), held_at).await;
}

fn receipt(event_id: &str, sku: &str, quantity: i64) -> Movement {
    Movement {
        event_id: event_id.into(),
        location_id: "TW001".into(),
        sku: sku.into(),
        kind: MovementKind::Receipt,
        quantity,
        occurred_at: chrono::Utc::now(),
        source: None,
        reference: None,
        reservation_id: None,
        transfer_id: None,
        to_location_id: None,
        supply_id: None,
        expected_at: None,
    }
}

#[tokio::test]
async fn after_the_dirty_set_overflows_reads_bypass_redis_until_rebuilt() {
    let mut redis = crate::cache::PrivateRedis::start();
    let mut iso = Isolation::new().await;
    iso.redis_url = redis.url();
    let mut app = spawn_with(iso.clone(), |_| {}).await;
    app.store("TW001", 25.05306, 121.52639).await;
    let skus: Vec<String> = (0..5).map(|i| format!("OVF-{i}")).collect();
    for s in &skus {
        app.stock("TW001", s, 10).await;
    }
    // No daemon runs from here on: only this test's cache, standing for one daemon.
    app.stop().await;
    let pool = omnistock::db::connect(&iso.database_url, 2)
        .await
        .expect("pool");
    let store = RedisStore::new(&iso.redis_url, &iso.redis_prefix).expect("store");
    let cache = StockCache::new(store.clone(), pool.clone());
    cache.set_max_dirty(2);
    let names: Vec<&str> = skus.iter().map(String::as_str).collect();
    cache.levels(&names).await.expect("fill");
    let old: Vec<_> = omnistock::db::levels::for_skus(&pool, &skus)
        .await
        .expect("levels");

    // Commit +1 on every SKU while Redis is down: this daemon's writes fail, 5 > 2 dirty.
    redis.stop();
    let moves: Vec<Incoming> = skus
        .iter()
        .enumerate()
        .map(|(i, s)| receipt(&format!("ovf-{i}"), s, 1).into())
        .collect();
    omnistock::ingest::apply::apply_batch(&pool, Some(&cache), &moves)
        .await
        .expect("apply");
    assert!(cache.rebuild_pending(), "the overflow asks for a rebuild");

    // Redis comes back holding the old levels (say, restored from its snapshot), with a
    // watermark that vouches for them: only this daemon knows they are stale.
    redis.restart();
    let mut tries = 0;
    while store.write(&old, true).await.is_err() {
        tries += 1;
        assert!(tries < 50, "Redis did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (now, run_id) = store.clock().await.expect("clock");
    store
        .raise_watermark(now, &run_id)
        .await
        .expect("watermark");
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the read breaker
    let read = cache.levels(&names).await.expect("read");
    assert_eq!(
        read.source,
        Source::Database,
        "Redis is not trusted before the rebuild"
    );
    assert_eq!(read.age, Some(Duration::ZERO), "PostgreSQL is the present");
    for l in &read.levels {
        assert_eq!(l[0].on_hand, 11, "never the stale 10");
    }

    cache.resync().await.expect("rebuild");
    assert!(!cache.rebuild_pending());
    let (now, run_id) = store.clock().await.expect("clock");
    store
        .raise_watermark(now, &run_id)
        .await
        .expect("watermark");
    let read = cache.levels(&names).await.expect("read");
    assert_eq!(read.source, Source::Cache, "trusted again once rebuilt");
    assert!(
        read.age
            .is_some_and(|a| a <= omnistock::cache::sync::MAX_STALENESS),
        "served within the bound: {:?}",
        read.age
    );
    for l in &read.levels {
        assert_eq!(l[0].on_hand, 11);
    }
}

#[tokio::test]
async fn a_redis_restarted_from_an_older_snapshot_is_rebuilt_before_it_is_trusted() {
    let mut redis = crate::cache::PrivateRedis::start_persistent();
    let mut iso = Isolation::new().await;
    iso.redis_url = redis.url();
    let sku = "SNAP-SKU";
    let app = spawn_with(iso.clone(), |_| {}).await;
    app.store("TW001", 25.05306, 121.52639).await;
    app.stock("TW001", sku, 10).await;
    wait_until("10 served from the cache", || async {
        available(&app, sku).await == (10, "cache".into())
    })
    .await;
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    redis::cmd("SAVE")
        .query_async::<()>(&mut conn)
        .await
        .expect("snapshot");

    // A sale after the snapshot, written to Redis and marked written by the sync.
    app.publish("TW001", &movement("snap-sale", "TW001", sku, "sale", 3))
        .await;
    app.wait_for_ledger(2).await;
    let committed = Instant::now();
    wait_until("the sale cached and synced", || async {
        let uncached: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE id > (SELECT done_to FROM outbox_cursors WHERE name = 'cache_sync')")
                .fetch_one(&app.pool)
                .await
                .expect("uncached");
        uncached == 0 && available(&app, sku).await == (7, "cache".into())
    })
    .await;

    // Past the bound, 10 may never be served again. Redis dies and comes back from the
    // snapshot: 10, complete, with an old watermark.
    tokio::time::sleep(MAX_STALENESS.saturating_sub(committed.elapsed())).await;
    redis.stop();
    redis.restart();
    let store = RedisStore::new(&iso.redis_url, &iso.redis_prefix).expect("store");
    let mut held = None;
    for _ in 0..50 {
        if let Ok(r) = store.read(&[sku]).await {
            held = r[0].as_ref().map(|l| l[0].on_hand);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, Some(10), "the snapshot brought the old level back");
    assert_repaired_within_bound(&app, sku, (10, 7), committed).await;
}
