//! The references of levels (to their location and SKU) and of the ledger (to its level) are
//! checked once per statement, and their parents are permanent (migration
//! 20261203010000_parent_checks_per_statement.sql): what the row-level foreign keys guaranteed must
//! still hold. Plus the bulk import's plain-insert path meeting a level a live writer creates.

use chrono::Utc;
use omnistock::ops::import;
use sqlx::PgPool;

use crate::helpers::spawn_app;

const LOCATIONS: &str = "location_id,name,kind,lat,lon\nTW001,Taipei,store,25.05,121.52\n";

fn temp_csv(name: &str, text: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("omnistock-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write csv");
    path
}

/// The SQLSTATE `sql` fails with, or `None` when it succeeds.
async fn sqlstate(pool: &PgPool, sql: &str) -> Option<String> {
    match sqlx::query(sql).execute(pool).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// What a missing or changed parent fails with: foreign_key_violation.
fn fk() -> Option<String> {
    Some("23503".to_owned())
}

#[tokio::test]
async fn levels_and_ledger_rows_without_their_parents_are_refused_whole_statements() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("locations");
    let pool = &app.pool;
    assert_eq!(
        sqlstate(pool, "INSERT INTO skus (sku) VALUES ('A'), ('B')").await,
        None
    );
    // One good row and one with an unknown location / SKU: the statement writes nothing.
    assert_eq!(
        sqlstate(
            pool,
            "INSERT INTO stock_levels (location_id, sku) VALUES ('TW001', 'A'), ('NOPE', 'A')"
        )
        .await,
        fk()
    );
    assert_eq!(
        sqlstate(
            pool,
            "INSERT INTO stock_levels (location_id, sku) VALUES ('TW001', 'A'), ('TW001', 'NOPE')"
        )
        .await,
        fk()
    );
    let levels: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_levels")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(levels, 0);
    assert_eq!(
        sqlstate(
            pool,
            "INSERT INTO stock_levels (location_id, sku) VALUES ('TW001', 'A')"
        )
        .await,
        None
    );
    let ledger = |event: &str, sku: &str| {
        format!(
            "INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity,
                                    effect, outcome, on_hand_after, occurred_at)
             VALUES ('{event}', 'TW001', '{sku}', 'receipt', 1, 1, 0, 'late', 0, now())"
        )
    };
    // A ledger row for a level that does not exist (B has no level at TW001).
    assert_eq!(sqlstate(pool, &ledger("e1", "B")).await, fk());
    assert_eq!(sqlstate(pool, &ledger("e2", "A")).await, None);
    // Keys of referenced rows never change; the rest of a row may.
    assert_eq!(
        sqlstate(pool, "UPDATE movements SET sku = 'B' WHERE event_id = 'e2'").await,
        fk()
    );
    assert_eq!(
        sqlstate(pool, "UPDATE stock_levels SET sku = 'B'").await,
        fk()
    );
    assert_eq!(
        sqlstate(pool, "UPDATE skus SET sku = 'C' WHERE sku = 'A'").await,
        fk()
    );
    assert_eq!(
        sqlstate(pool, "UPDATE locations SET location_id = 'TW002'").await,
        fk()
    );
    assert_eq!(
        sqlstate(pool, "UPDATE stock_levels SET updated_at = now()").await,
        None
    );
    assert_eq!(
        sqlstate(pool, "UPDATE locations SET name = 'Taipei Main'").await,
        None
    );
}

#[tokio::test]
async fn locations_skus_and_levels_are_permanent() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("locations");
    app.stock("TW001", "TEE-1", 3).await;
    let pool = &app.pool;
    for sql in [
        "DELETE FROM stock_levels",
        "TRUNCATE stock_levels CASCADE",
        "DELETE FROM skus WHERE sku = 'UNUSED'",
        "TRUNCATE skus CASCADE",
        "DELETE FROM locations WHERE location_id = 'TW001'",
    ] {
        assert_eq!(sqlstate(pool, sql).await, fk(), "{sql}");
    }
    assert_eq!(app.on_hand("TW001", "TEE-1").await, Some(3));
    app.assert_ledger_consistent().await;
}

/// A level of the import file created by another transaction after the import looked for
/// existing levels: its plain insert meets the level, rolls back to its savepoint, and the
/// range is merged again around it. Every count is recorded once and the ledger agrees.
#[tokio::test]
async fn a_level_created_under_the_import_is_merged_not_duplicated() {
    let app = spawn_app().await;
    import::locations(&app.pool, &temp_csv("l.csv", LOCATIONS))
        .await
        .expect("locations");
    let mut csv = String::from("location_id,sku,on_hand,counted_at\n");
    for i in 0..50 {
        csv.push_str(&format!("TW001,S{i:03},{},2026-11-01T00:00:00Z\n", 10 + i));
    }
    let file = temp_csv("s.csv", &csv);
    // The racing writer: a level in the middle of the file, created but not yet committed
    // (its SKU committed before, so the import passes its SKUs and waits on the level itself).
    sqlx::query("INSERT INTO skus (sku) VALUES ('S025')")
        .execute(&app.pool)
        .await
        .expect("sku");
    let mut other = app.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO stock_levels (location_id, sku) VALUES ('TW001', 'S025')")
        .execute(&mut *other)
        .await
        .expect("level");
    let pool = app.pool.clone();
    let importing =
        tokio::spawn(async move { import::stock(&pool, None, &file, Utc::now()).await });
    // The import's plain insert blocks on the uncommitted level until the writer commits.
    app.wait_for_a_lock_wait("the import waits for the other writer")
        .await;
    other.commit().await.expect("commit");
    let r = importing.await.expect("task").expect("import");
    assert_eq!((r.rows, r.recorded, r.already_imported), (50, 50, 0));
    let counts: i64 = sqlx::query_scalar("SELECT count(*) FROM movements WHERE kind = 'count'")
        .fetch_one(&app.pool)
        .await
        .expect("ledger");
    assert_eq!(counts, 50);
    assert_eq!(app.on_hand("TW001", "S025").await, Some(35));
    assert_eq!(app.on_hand("TW001", "S049").await, Some(59));
    app.assert_ledger_consistent().await;
}
