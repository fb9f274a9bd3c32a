//! The ingest pipeline of issue 12: movements split over SKU shards (a message acked only when
//! every part committed, counted once on redelivery), two daemons on one stream, and the
//! insert-only outbox (its readers never update a row; the cleanup deletes only what both are
//! past).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{movement, spawn_app, spawn_with, wait_until, Isolation, TestApp};

const SKUS: usize = 16;

fn sku(i: usize) -> String {
    format!("SHARD-{i:02}")
}

/// One message with a receipt of each of [`SKUS`] SKUs (they land on every shard).
fn spanning_message(tag: &str) -> Value {
    Value::Array(
        (0..SKUS)
            .map(|i| movement(&format!("{tag}-{i}"), "TW001", &sku(i), "receipt", 1))
            .collect(),
    )
}

/// How many of the message's SKUs share the shard of the first (whose level the tests lock):
/// those commit together with it, in one transaction of that shard.
fn on_first_shard() -> usize {
    let shard = |i: usize| omnistock::ingest::shards::shard_of(&sku(i), 4);
    (0..SKUS).filter(|&i| shard(i) == shard(0)).count()
}

async fn ack_pending(app: &TestApp) -> (u64, usize) {
    let stream = app
        .js
        .get_stream(app.subjects.movements_stream())
        .await
        .expect("stream");
    let mut c: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(omnistock::ingest::CONSUMER)
        .await
        .expect("consumer");
    let info = c.info().await.expect("info");
    (info.num_pending, info.num_ack_pending)
}

#[tokio::test]
async fn a_message_spanning_shards_is_acked_only_once_every_part_committed_and_counted_once() {
    let app = spawn_app().await;
    app.store("TW001", 25.05, 121.52).await;
    let shards: std::collections::HashSet<usize> = (0..SKUS)
        .map(|i| omnistock::ingest::shards::shard_of(&sku(i), 4))
        .collect();
    assert_eq!(shards.len(), 4, "the message spans every shard");
    let others = (SKUS - on_first_shard()) as i64;
    // A level to hold: the first SKU's, stocked.
    app.publish("TW001", &movement("seed", "TW001", &sku(0), "receipt", 5))
        .await;
    app.wait_for_ledger(1).await;
    wait_until("the seed acked", || async {
        ack_pending(&app).await == (0, 0)
    })
    .await;

    // Another session holds the first SKU's level: its shard waits, the others commit.
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT on_hand FROM stock_levels WHERE location_id = 'TW001' AND sku = $1 FOR UPDATE",
    )
    .bind(sku(0))
    .fetch_one(&mut *blocker)
    .await
    .expect("lock");
    app.publish("TW001", &spanning_message("m1")).await;
    wait_until("the other shards committed", || async {
        app.ledger_count().await == 1 + others
    })
    .await;
    assert_eq!(
        ack_pending(&app).await,
        (0, 1),
        "delivered, and not acked while a part is uncommitted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ack_pending(&app).await, (0, 1), "still not acked");
    assert_eq!(
        app.ledger_count().await,
        1 + others,
        "the first shard waits"
    );
    blocker.commit().await.expect("release");
    app.wait_for_ledger(1 + SKUS as i64).await;
    wait_until("the message acked", || async {
        ack_pending(&app).await == (0, 0)
    })
    .await;

    // The same message again (a redelivery, as another daemon or a retry would see it): no
    // movement counts twice.
    app.publish_with_msg_id("TW001", &spanning_message("m1"), "again")
        .await;
    wait_until("the copy acked", || async {
        ack_pending(&app).await == (0, 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.ledger_count().await, 1 + SKUS as i64);
    assert_eq!(app.on_hand("TW001", &sku(0)).await, Some(6));
    for i in 1..SKUS {
        assert_eq!(app.on_hand("TW001", &sku(i)).await, Some(1), "{}", sku(i));
    }
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_part_that_fails_hands_the_whole_message_back_and_the_retry_counts_each_once() {
    // The blocked shard's transaction outlives its lock timeout: that part fails, the message
    // is handed back and redelivered; the parts that committed are duplicates then.
    let iso = Isolation::new().await;
    let app = spawn_with(iso, |c| c.limits.db_lock_timeout_ms = 300).await;
    app.store("TW001", 25.05, 121.52).await;
    app.publish("TW001", &movement("seed", "TW001", &sku(0), "receipt", 5))
        .await;
    app.wait_for_ledger(1).await;
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT on_hand FROM stock_levels WHERE location_id = 'TW001' AND sku = $1 FOR UPDATE",
    )
    .bind(sku(0))
    .fetch_one(&mut *blocker)
    .await
    .expect("lock");
    app.publish("TW001", &spanning_message("m2")).await;
    let others = (SKUS - on_first_shard()) as i64;
    wait_until("the other shards committed", || async {
        app.ledger_count().await == 1 + others
    })
    .await;
    // Past the lock timeout at least once (handed back), then released.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    blocker.commit().await.expect("release");
    app.wait_for_ledger(1 + SKUS as i64).await;
    wait_until("the message acked", || async {
        ack_pending(&app).await == (0, 0)
    })
    .await;
    assert_eq!(app.on_hand("TW001", &sku(0)).await, Some(6));
    for i in 1..SKUS {
        assert_eq!(app.on_hand("TW001", &sku(i)).await, Some(1), "{}", sku(i));
    }
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn two_daemons_ingesting_one_stream_in_parallel_leave_a_clean_check() {
    let iso = Isolation::new().await;
    let a = spawn_with(iso.clone(), |_| {}).await;
    let b = spawn_with(iso.clone(), |_| {}).await;
    a.store("TW001", 25.05, 121.52).await;
    a.store("TW002", 25.03, 121.56).await;
    // 100 messages of 20 movements, the same SKUs over and over, both locations, mixed kinds
    // (sales may drive on-hand below zero: still counted once each).
    let kinds = ["receipt", "receipt", "sale", "return", "adjustment"];
    let mut n = 0i64;
    for m in 0..100 {
        let loc = if m % 2 == 0 { "TW001" } else { "TW002" };
        let body: Vec<Value> = (0..20)
            .map(|i| {
                n += 1;
                movement(
                    &format!("p-{m}-{i}"),
                    loc,
                    &format!("PAR-{}", (m + i) % 7),
                    kinds[(m + i) % kinds.len()],
                    1 + (i as i64 % 3),
                )
            })
            .collect();
        a.publish(loc, &Value::Array(body)).await;
    }
    a.wait_for_ledger(n).await;
    wait_until("every message acked", || async {
        ack_pending(&a).await == (0, 0)
    })
    .await;
    a.assert_ledger_consistent().await;
    let c = iso.connections();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_omnistock"));
    cmd.env_clear()
        .arg("check")
        .env("DATABASE_URL", &c.database_url)
        .env("REDIS_URL", &c.redis_url)
        .env("NATS_URL", &c.nats_url)
        .env("OMNISTOCK_SUBJECT_PREFIX", &c.subject_prefix)
        .env("OMNISTOCK_REDIS_PREFIX", &c.redis_prefix)
        .env("RUST_LOG", "warn");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run omnistock check");
    assert!(
        out.status.success(),
        "check: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(b);
}

/// Refuses any UPDATE of an outbox row, superuser or not.
async fn forbid_outbox_updates(pool: &sqlx::PgPool) {
    sqlx::query(
        "CREATE FUNCTION outbox_is_insert_only() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'outbox rows are never updated'; END $$",
    )
    .execute(pool)
    .await
    .expect("function");
    sqlx::query(
        "CREATE TRIGGER outbox_no_update BEFORE UPDATE ON outbox
         FOR EACH ROW EXECUTE FUNCTION outbox_is_insert_only()",
    )
    .execute(pool)
    .await
    .expect("trigger");
}

#[tokio::test]
async fn the_relay_and_the_cache_sync_never_update_an_outbox_row() {
    let app = spawn_app().await;
    forbid_outbox_updates(&app.pool).await;
    app.store("TW001", 25.05, 121.52).await;
    for i in 0..5 {
        app.publish(
            "TW001",
            &movement(&format!("u{i}"), "TW001", "NOUPD", "receipt", 2),
        )
        .await;
    }
    app.wait_for_ledger(5).await;
    // Every change published, in order, once...
    wait_until("the changes published", || async {
        app.stream_messages(&app.subjects.changes_stream())
            .await
            .len()
            == 5
    })
    .await;
    let versions: Vec<i64> = app
        .stream_messages(&app.subjects.changes_stream())
        .await
        .iter()
        .map(|(_, b, _)| b["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    // ... and both readers are past every row, with no row touched.
    wait_until("both cursors past the outbox", || async {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox o, outbox_cursors c
             WHERE c.name IN ('relay', 'cache_sync') AND o.id > c.done_to",
        )
        .fetch_one(&app.pool)
        .await
        .expect("behind");
        behind == 0
    })
    .await;
    // ... and Redis vouched for by the cache sync (its watermark can be late by a run on a
    // loaded machine: waited for, not read once).
    wait_until("availability served from the cache", || async {
        let (_, body) = app
            .get("/v1/availability/NOUPD", crate::helpers::READ_KEY)
            .await;
        body["source"] == json!("cache") && body["available"] == json!(10)
    })
    .await;
}

#[tokio::test]
async fn the_cleanup_deletes_only_rows_both_readers_are_past() {
    let iso = Isolation::new().await;
    let pool = omnistock::db::connect(&iso.database_url, 2)
        .await
        .expect("pool");
    omnistock::db::migrate(&pool).await.expect("migrate");
    sqlx::query(
        "INSERT INTO outbox (subject, payload)
         SELECT 'changes.X', jsonb_build_object('sku', 'S', 'n', g) FROM generate_series(1, 10) g",
    )
    .execute(&pool)
    .await
    .expect("rows");
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("ids");
    let first = ids[0];
    let set = |name: &'static str, done: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE outbox_cursors SET done_to = $2, seen_to = $2 WHERE name = $1")
                .bind(name)
                .bind(done)
                .execute(&pool)
                .await
                .expect("cursor");
        }
    };
    let left = || async {
        sqlx::query_scalar::<_, i64>("SELECT min(id) FROM outbox")
            .fetch_one(&pool)
            .await
            .expect("min")
    };
    let mut conn = pool.acquire().await.expect("conn");
    // The relay is past 7 rows, the cache sync past 3: only 3 may go.
    set("relay", first + 6).await;
    set("cache_sync", first + 2).await;
    let n = omnistock::db::outbox::delete_done(&mut conn, i64::MAX, 1_000)
        .await
        .expect("delete");
    assert_eq!(n, 3);
    assert_eq!(left().await, first + 3);
    // The other way round: the relay is the one behind.
    set("relay", first + 4).await;
    set("cache_sync", first + 9).await;
    assert_eq!(
        omnistock::db::outbox::delete_done(&mut conn, i64::MAX, 1_000)
            .await
            .expect("delete"),
        2
    );
    assert_eq!(left().await, first + 5);
    // Never past the bound the caller keeps (the retention), and in chunks.
    set("relay", first + 9).await;
    assert_eq!(
        omnistock::db::outbox::delete_done(&mut conn, first + 7, 1)
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        omnistock::db::outbox::delete_done(&mut conn, first + 7, 1_000)
            .await
            .expect("delete"),
        2
    );
    assert_eq!(left().await, first + 8);
    // A reader without a cursor row: nothing goes.
    sqlx::query("DELETE FROM outbox_cursors WHERE name = 'cache_sync'")
        .execute(&pool)
        .await
        .expect("drop cursor");
    assert_eq!(
        omnistock::db::outbox::delete_done(&mut conn, i64::MAX, 1_000)
            .await
            .expect("delete"),
        0
    );
}

async fn take_xid(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT pg_current_xact_id()::text::int8")
        .fetch_one(conn)
        .await
        .expect("xid")
}

/// Found reviewing the outbox cursor: a gap's bound was the snapshot's `xmax`, which
/// PostgreSQL sets to the latest *completed* transaction id + 1. A transaction that took its
/// id after that commit (but before the read) is at or above it, so the gap of its outbox row
/// was dropped as "proven empty" by the next read while it was still open, and its event,
/// committed afterwards, was never published (nor cached). Run alone it fails without the fix
/// every time (other transactions completing in the cluster meanwhile can hide it).
#[tokio::test]
async fn an_outbox_row_of_a_transaction_still_open_is_relayed_once_it_commits() {
    use omnistock::events::relay::{self, Finish};
    let iso = Isolation::new().await;
    let pool = omnistock::db::connect(&iso.database_url, 4)
        .await
        .expect("pool");
    omnistock::db::migrate(&pool).await.expect("migrate");
    let nats = async_nats::connect(std::env::var("NATS_URL").expect("NATS_URL"))
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(nats);
    let subjects = omnistock::config::Subjects::new(&iso.subject_prefix);
    relay::ensure_streams(&js, &subjects)
        .await
        .expect("streams");
    let event = |n: i64| {
        (
            vec!["changes.TW001".to_owned()],
            vec![
                json!({"location_id": "TW001", "sku": format!("GAP-{n}"), "on_hand": n,
                        "reserved": 0, "in_transit": 0, "version": 1, "cause": "receipt"}),
            ],
        )
    };
    // `first` takes its transaction id, then `open` does and writes the lower outbox id; then
    // `first` writes the higher one and commits: the latest completed id is `first`'s, below
    // `open`'s.
    let mut first = pool.begin().await.expect("begin");
    take_xid(&mut first).await;
    let mut open = pool.begin().await.expect("begin");
    let open_xid = take_xid(&mut open).await;
    let (s, p) = event(1);
    omnistock::db::events::insert_outbox(&mut open, &s, &p)
        .await
        .expect("row of the open transaction");
    let (s, p) = event(2);
    omnistock::db::events::insert_outbox(&mut first, &s, &p)
        .await
        .expect("row");
    first.commit().await.expect("commit");
    // Reads while `open` is still open: its row is a gap, bounded above `open`'s id (the
    // snapshot's own xmax was `open`'s id itself here), and kept.
    relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
        .await
        .expect("relay");
    let bounds: Vec<i64> =
        sqlx::query_scalar("SELECT gap_xmax FROM outbox_cursors WHERE name = 'relay'")
            .fetch_one(&pool)
            .await
            .expect("gaps");
    assert!(
        !bounds.is_empty() && bounds.iter().all(|&b| b > open_xid),
        "the gap's bound {bounds:?} must be above the open transaction {open_xid}"
    );
    for _ in 0..2 {
        relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
            .await
            .expect("relay");
    }
    open.commit().await.expect("commit the open one");
    relay::relay_once(&pool, &js, &subjects, Finish::MarkSent)
        .await
        .expect("relay");
    let mut stream = js
        .get_stream(subjects.changes_stream())
        .await
        .expect("stream");
    let published = stream.info().await.expect("info").state.messages;
    assert_eq!(published, 2, "both events published, the late one too");
    let (done, max): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT done_to FROM outbox_cursors WHERE name = 'relay'),
                (SELECT max(id) FROM outbox)",
    )
    .fetch_one(&pool)
    .await
    .expect("cursor");
    assert_eq!(done, max, "the relay's cursor is past both");
}

/// Found reviewing the shards: a repeat of an event id queued from another message of the same
/// batch was skipped, so its message had nothing left to wait for and was acked at once, while
/// the movement had not committed (a part that then failed for good would have lost it). Each
/// message must wait for its own movements.
#[tokio::test]
async fn a_repeat_in_another_message_of_the_batch_is_acked_only_after_the_movement_committed() {
    let app = spawn_app().await;
    app.store("TW001", 25.05, 121.52).await;
    app.publish("TW001", &movement("seed", "TW001", "REPEAT", "receipt", 5))
        .await;
    app.wait_for_ledger(1).await;
    wait_until("the seed acked", || async {
        ack_pending(&app).await == (0, 0)
    })
    .await;
    // The consume loop is held on its first query (the location check) by a lock on the
    // locations table, so that the two copies published meanwhile arrive as one batch.
    let mut hold_loop = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE locations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold_loop)
        .await
        .expect("lock locations");
    // Of another shard than the copies: on theirs it would wait for their lock with them.
    let stall_sku = (0..)
        .map(|i| format!("STALL-{i}"))
        .find(|s| {
            omnistock::ingest::shards::shard_of(s, 4)
                != omnistock::ingest::shards::shard_of("REPEAT", 4)
        })
        .expect("a SKU of another shard");
    app.publish(
        "TW001",
        &movement("stall", "TW001", &stall_sku, "receipt", 1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copy = movement("twice", "TW001", "REPEAT", "receipt", 2);
    app.publish_with_msg_id("TW001", &copy, "copy-1").await;
    app.publish_with_msg_id("TW001", &copy, "copy-2").await;
    // The level the copies change is locked: neither can commit yet.
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT on_hand FROM stock_levels WHERE location_id = 'TW001' AND sku = 'REPEAT' FOR UPDATE",
    )
    .fetch_one(&mut *blocker)
    .await
    .expect("lock level");
    tokio::time::sleep(Duration::from_millis(300)).await;
    hold_loop.commit().await.expect("release the loop");
    wait_until("the stall applied", || async {
        app.ledger_count().await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ack_pending(&app).await,
        (0, 2),
        "neither copy acked while the movement is uncommitted"
    );
    blocker.commit().await.expect("release the level");
    app.wait_for_ledger(3).await;
    wait_until("both copies acked", || async {
        ack_pending(&app).await == (0, 0)
    })
    .await;
    assert_eq!(
        app.on_hand("TW001", "REPEAT").await,
        Some(7),
        "counted once"
    );
    app.assert_ledger_consistent().await;
}
