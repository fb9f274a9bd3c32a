use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omnistock::cache::RedisStore;
use omnistock::db::levels::LevelRow;
use serde_json::json;

use crate::helpers::{movement, spawn_app, spawn_with, wait_until, Isolation, TestApp, READ_KEY};

/// A private redis-server this test may stop and start (the shared one must stay up).
pub(crate) struct PrivateRedis {
    port: u16,
    child: Option<Child>,
    /// Where it keeps its snapshot (`SAVE`), loaded again on restart; `None`: no persistence.
    dir: Option<std::path::PathBuf>,
}

impl PrivateRedis {
    pub(crate) fn start() -> Self {
        let mut r = Self::start_with(None);
        r.restart();
        r
    }

    fn start_with(dir: Option<std::path::PathBuf>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        PrivateRedis {
            port,
            child: None,
            dir,
        }
    }

    /// One that loads the snapshot last taken with `SAVE` when it restarts.
    pub(crate) fn start_persistent() -> Self {
        let dir =
            std::env::temp_dir().join(format!("omnistock-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Self::start_with(Some(dir));
        r.restart();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let bin =
            std::env::var("OMNISTOCK_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(bin);
        if let Some(dir) = &self.dir {
            cmd.arg("--dir").arg(dir);
        }
        let child = cmd
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (installed by scripts/services.sh)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis-server did not start");
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn level(sku: &str, loc: &str, version: i64, on_hand: i64) -> LevelRow {
    LevelRow {
        location_id: loc.into(),
        sku: sku.into(),
        on_hand,
        reserved: 0,
        in_transit: 0,
        version,
        last_count_at: None,
        last_movement_at: None,
    }
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let iso = Isolation::new().await;
    let store = RedisStore::new(&iso.redis_url, &iso.redis_prefix).expect("store");
    store
        .write(&[level("S", "A", 5, 50), level("S", "B", 1, 10)], true)
        .await
        .expect("write");
    store
        .write(&[level("S", "A", 3, 30), level("S", "B", 2, 20)], false)
        .await
        .expect("write");
    let read = store.read(&["S"]).await.expect("read");
    let levels = read[0].as_ref().expect("complete");
    assert_eq!(
        (levels[0].version, levels[0].on_hand),
        (5, 50),
        "v3 must not replace v5"
    );
    assert_eq!(
        (levels[1].version, levels[1].on_hand),
        (2, 20),
        "v2 replaces v1"
    );

    // Many writers racing with shuffled versions: the newest always wins.
    let mut tasks = Vec::new();
    for v in (1..=200).rev().chain(1..=200) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(&[level("RACE", "A", v, v * 10)], false)
                .await
                .expect("write");
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    store.write(&[], true).await.expect("noop");
    store
        .write(&[level("RACE", "B", 1, 1)], true)
        .await
        .expect("mark complete");
    let read = store.read(&["RACE"]).await.expect("read");
    let a = &read[0].as_ref().expect("complete")[0];
    assert_eq!((a.version, a.on_hand), (200, 2000));
}

#[tokio::test]
async fn an_entry_not_marked_complete_is_a_miss() {
    let iso = Isolation::new().await;
    let store = RedisStore::new(&iso.redis_url, &iso.redis_prefix).expect("store");
    store
        .write(&[level("P", "A", 1, 1)], false)
        .await
        .expect("write");
    assert_eq!(
        store.read(&["P", "NONE"]).await.expect("read"),
        vec![None, None]
    );
}

#[tokio::test]
async fn reads_survive_a_redis_outage_and_the_cache_catches_up() {
    let mut redis = PrivateRedis::start();
    let mut iso = Isolation::new().await;
    iso.redis_url = redis.url();
    let app = spawn_with(iso, |_| {}).await;
    app.store("TW008", 24.80361, 120.96861).await;
    let sku = "HOOD-010-GRY-S";
    let path = format!("/v1/availability/{sku}");
    app.publish("TW008", &movement("r1", "TW008", sku, "receipt", 10))
        .await;
    app.wait_for_ledger(1).await;
    wait_until("read from cache", || async {
        let (_, b) = app.get(&path, READ_KEY).await;
        b["source"] == json!("cache") && b["available"] == json!(10)
    })
    .await;

    redis.stop();
    app.publish("TW008", &movement("s1", "TW008", sku, "sale", 3))
        .await;
    app.wait_for_ledger(2).await;
    let (status, body) = app.get(&path, READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available"], json!(7));
    assert_eq!(body["source"], json!("database"));
    let (_, ready) = app.get("/readyz", READ_KEY).await;
    assert_eq!(ready["checks"]["redis"], json!("down"));
    assert_eq!(ready["status"], json!("degraded"));

    redis.restart();
    app.publish("TW008", &movement("s2", "TW008", sku, "sale", 1))
        .await;
    app.wait_for_ledger(3).await;
    wait_until("cache caught up", || async {
        let (_, b) = app.get(&path, READ_KEY).await;
        b["source"] == json!("cache") && b["available"] == json!(6)
    })
    .await;
    let fallbacks = app
        .metric("omnistock_cache_fallbacks_total")
        .await
        .expect("fallback metric");
    assert!(fallbacks >= 1.0, "fallback reads are counted");
}

#[tokio::test]
async fn the_cache_can_be_rebuilt_from_postgres() {
    let app = spawn_app().await;
    app.store("TW009", 25.13089, 121.74094).await;
    let batch: Vec<_> = (0..30)
        .map(|i| {
            movement(
                &format!("e{i}"),
                "TW009",
                &format!("S{}", i % 6),
                "receipt",
                1,
            )
        })
        .collect();
    app.publish("TW009", &serde_json::Value::Array(batch)).await;
    app.wait_for_ledger(30).await;
    let client = redis::Client::open(app.iso.redis_url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.iso.redis_prefix))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .expect("del");
    }
    let pool = omnistock::db::connect(&app.iso.database_url, 2)
        .await
        .expect("pool");
    let cache = omnistock::cache::StockCache::new(
        RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix).expect("store"),
        pool,
    );
    assert_eq!(cache.rebuild().await.expect("rebuild"), 6);
    let store = RedisStore::new(&app.iso.redis_url, &app.iso.redis_prefix).expect("store");
    let read = store.read(&["S0", "S5"]).await.expect("read");
    for r in read {
        let levels = r.expect("complete after rebuild");
        assert_eq!(levels[0].on_hand, 5);
    }
}

/// `omnistock cache rebuild` ends by vouching for the Redis it filled, so the first daemon
/// after it trusts Redis at once: before, the daemon's sync rebuilt it all again (75 s at 10M
/// levels), with every read going to PostgreSQL meanwhile.
#[tokio::test]
async fn a_rebuild_vouches_for_the_redis_it_filled() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.stock("TW1", "V", 3).await;
    // A prefix no daemon syncs: only the rebuild can set its watermark.
    let prefix = format!("{}-vouch", app.iso.redis_prefix);
    let store = RedisStore::new(&app.iso.redis_url, &prefix).expect("store");
    assert!(store.watermark().await.expect("watermark").is_none());
    let (before, run_id) = store.clock().await.expect("clock");
    let pool = omnistock::db::connect(&app.iso.database_url, 2)
        .await
        .expect("pool");
    let cache = omnistock::cache::StockCache::new(
        RedisStore::new(&app.iso.redis_url, &prefix).expect("store"),
        pool,
    );
    let skus = omnistock::cache::sync::rebuild_and_vouch(&cache)
        .await
        .expect("rebuild");
    assert!(skus >= 1, "{skus} SKUs rebuilt");
    let (at, id) = store
        .watermark()
        .await
        .expect("watermark")
        .expect("the rebuild vouched for Redis");
    assert_eq!(id, run_id, "the watermark names this Redis process");
    assert!(at >= before, "vouched from the rebuild's start, not before");
    let read = store.read(&["V"]).await.expect("read");
    let levels = read[0].as_ref().expect("complete after the rebuild");
    assert_eq!(levels[0].on_hand, 3);
}

/// SKUs `{prefix}1..={n}` with a level at each location, on hand the SKU's number times the
/// location's factor, written behind the daemon's back (a catalogue bigger than tests import).
async fn seed_catalogue(app: &TestApp, prefix: &str, n: i32, locations: &[(&str, i64)]) {
    sqlx::query("INSERT INTO skus (sku) SELECT $1 || g FROM generate_series(1, $2) g")
        .bind(prefix)
        .bind(n)
        .execute(&app.pool)
        .await
        .expect("skus");
    let (locs, factors): (Vec<&str>, Vec<i64>) = locations.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO stock_levels (location_id, sku, on_hand, version)
         SELECT l.loc, $1 || g, g * l.k, 1
         FROM generate_series(1, $2) g, UNNEST($3::text[], $4::int8[]) AS l(loc, k)",
    )
    .bind(prefix)
    .bind(n)
    .bind(&locs)
    .bind(&factors)
    .execute(&app.pool)
    .await
    .expect("levels");
}

/// A rebuild pages through the catalogue 500 SKUs at a time: every SKU of every page, with all
/// of its levels, ends up complete in Redis, whatever the paging query looks like.
#[tokio::test]
async fn a_rebuild_writes_every_sku_of_every_page_complete() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    app.store("TW2", 25.1, 121.6).await;
    // On hand: the SKU's number at TW1, twice it at TW2.
    seed_catalogue(&app, "P", 1234, &[("TW1", 1), ("TW2", 2)]).await;
    let prefix = format!("{}-pages", app.iso.redis_prefix);
    let store = RedisStore::new(&app.iso.redis_url, &prefix).expect("store");
    let cache = omnistock::cache::StockCache::new(
        RedisStore::new(&app.iso.redis_url, &prefix).expect("store"),
        app.pool.clone(),
    );
    assert_eq!(cache.rebuild().await.expect("rebuild"), 1234);
    let skus: Vec<String> = (1..=1234).map(|g| format!("P{g}")).collect();
    let refs: Vec<&str> = skus.iter().map(String::as_str).collect();
    let read = store.read(&refs).await.expect("read");
    for (g, entry) in (1..=1234).zip(&read) {
        let levels = entry
            .as_ref()
            .unwrap_or_else(|| panic!("P{g} is not complete in Redis"));
        let mut got: Vec<(String, i64)> = levels
            .iter()
            .map(|l| (l.location_id.clone(), l.on_hand))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [("TW1".to_owned(), g), ("TW2".to_owned(), 2 * g)],
            "P{g}"
        );
    }
}

/// A fill whose Redis fails ends with the error: its reader, pages ahead of the writer, must
/// not wait forever to hand a page to a writer that has stopped.
#[tokio::test]
async fn a_rebuild_into_a_failing_redis_ends_with_its_error() {
    let app = spawn_app().await;
    app.store("TW1", 25.0, 121.5).await;
    // More SKU pages (500 SKUs each) than the channel between reader and writer holds.
    seed_catalogue(&app, "F", 1600, &[("TW1", 1)]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nobody = format!("redis://127.0.0.1:{port}/");
    let cache = omnistock::cache::StockCache::new(
        RedisStore::new(&nobody, "nobody").expect("store"),
        app.pool.clone(),
    );
    let ended = tokio::time::timeout(Duration::from_secs(60), cache.rebuild())
        .await
        .expect("the rebuild ended instead of waiting forever");
    assert!(ended.is_err(), "a rebuild into no Redis reported success");
}
