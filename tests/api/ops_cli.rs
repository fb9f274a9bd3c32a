//! The operator commands, run as the real binary against a spawned daemon's database, NATS
//! prefix and Redis prefix: their output, their exit codes, and their effect.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `omnistock <args>` with the isolation's connections (and nothing else) in its environment.
async fn omnistock(iso: &Isolation, args: &[&str]) -> Run {
    let c = iso.connections();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnistock"));
    cmd.env_clear()
        .args(args)
        .env("DATABASE_URL", &c.database_url)
        .env("REDIS_URL", &c.redis_url)
        .env("NATS_URL", &c.nats_url)
        .env("OMNISTOCK_SUBJECT_PREFIX", &c.subject_prefix)
        .env("OMNISTOCK_REDIS_PREFIX", &c.redis_prefix)
        .env("RUST_LOG", "warn");
    // Blocking wait off the runtime thread, which keeps serving the daemon meanwhile.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run the omnistock binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
}

async fn ledger_of(app: &TestApp, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM movements WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_dead_letter_is_listed_shown_and_replayed_once_after_the_fix() {
    let app = spawn_app().await;
    let iso = &app.iso;
    // A movement for a location that does not exist yet: dead-lettered.
    app.publish(
        "TW009",
        &movement("dl-receipt-1", "TW009", "SKU-DL", "receipt", 7),
    )
    .await;
    let letters = app.wait_for_deadletters(1).await;
    assert_eq!(letters[0].1["reason"], json!("unknown_location"));

    let list = omnistock(iso, &["deadletter", "list"]).await;
    ok(&list);
    assert!(list.stdout.contains("SEQ"), "{}", list.stdout);
    assert!(list.stdout.contains("unknown_location"), "{}", list.stdout);
    assert!(list.stdout.contains("dl-receipt-1"), "{}", list.stdout);

    let json_list = omnistock(
        iso,
        &[
            "deadletter",
            "list",
            "--json",
            "--reason",
            "unknown_location",
            "--since",
            "1h",
        ],
    )
    .await;
    ok(&json_list);
    let v: Value = serde_json::from_str(&json_list.stdout).expect("JSON listing");
    assert_eq!(v.as_array().expect("array").len(), 1, "{v}");
    let seq = v[0]["sequence"].as_u64().expect("sequence");
    assert_eq!(v[0]["event_id"], json!("dl-receipt-1"));
    assert_eq!(v[0]["replayed_at"], Value::Null);

    let other = omnistock(iso, &["deadletter", "list", "--reason", "invalid_quantity"]).await;
    ok(&other);
    assert!(
        other.stdout.contains("no dead letters match"),
        "{}",
        other.stdout
    );
    let later = omnistock(
        iso,
        &[
            "deadletter",
            "list",
            "--json",
            "--since",
            "2099-01-01T00:00:00Z",
        ],
    )
    .await;
    ok(&later);
    assert_eq!(
        serde_json::from_str::<Value>(&later.stdout).expect("json"),
        json!([])
    );

    let show = omnistock(iso, &["deadletter", "show", &seq.to_string()]).await;
    ok(&show);
    for part in [
        "unknown_location",
        &app.subjects.movements("TW009"),
        "\"quantity\": 7",
        "replayed:    no",
    ] {
        assert!(
            show.stdout.contains(part),
            "{part} missing from {}",
            show.stdout
        );
    }
    let missing = omnistock(iso, &["deadletter", "show", "999"]).await;
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no dead letter 999"),
        "{}",
        missing.stderr
    );
    let usage = omnistock(iso, &["deadletter", "list", "--limit", "0"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let usage = omnistock(iso, &["deadletter", "list", "--since", "yesterday"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);

    // The fix: the location now exists. The replay applies the movement.
    app.store("TW009", 25.0, 121.5).await;
    let replay = omnistock(iso, &["deadletter", "replay", &seq.to_string()]).await;
    ok(&replay);
    assert!(
        replay
            .stdout
            .contains(&format!("replayed dead letter {seq}")),
        "{}",
        replay.stdout
    );
    app.wait_for_ledger(1).await;
    assert_eq!(app.on_hand("TW009", "SKU-DL").await, Some(7));

    // Replayed once is recorded: a second replay is refused, and a forced one changes nothing.
    let again = omnistock(iso, &["deadletter", "replay", &seq.to_string()]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(
        again.stderr.contains("already replayed"),
        "{}",
        again.stderr
    );
    let forced = omnistock(iso, &["deadletter", "replay", "--force", &seq.to_string()]).await;
    ok(&forced);
    // A later movement on the same subject is applied after the forced replay was handled.
    app.publish("TW009", &movement("dl-after", "TW009", "SKU-DL", "sale", 1))
        .await;
    app.wait_for_ledger(2).await;
    assert_eq!(
        ledger_of(&app, "dl-receipt-1").await,
        1,
        "applied exactly once"
    );
    assert_eq!(app.on_hand("TW009", "SKU-DL").await, Some(6));
    assert_eq!(
        app.deadletters().await.len(),
        1,
        "the replays were not rejected"
    );
    app.assert_ledger_consistent().await;

    let shown = omnistock(iso, &["deadletter", "show", "--json", &seq.to_string()]).await;
    ok(&shown);
    let v: Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(v["replays"], json!(2), "{v}");
    assert!(v["replayed_at"].is_string(), "{v}");
    assert_eq!(v["replayed_to"], json!(app.subjects.movements("TW009")));
}

#[tokio::test]
async fn a_letter_whose_body_cannot_be_replayed_is_refused() {
    let app = spawn_app().await;
    app.publish_raw(&app.subjects.movements("TW001"), &b"{not json"[..])
        .await;
    app.wait_for_deadletters(1).await;
    let r = omnistock(&app.iso, &["deadletter", "replay", "1"]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("cannot be replayed"), "{}", r.stderr);
    let nothing = omnistock(&app.iso, &["deadletter", "replay", "2"]).await;
    assert_eq!(nothing.code, 1);
    assert!(
        nothing.stderr.contains("no dead letter 2"),
        "{}",
        nothing.stderr
    );
}

async fn hold(app: &TestApp, id: &str, sku: &str, quantity: i64) {
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"reservation_id": id, "location_id": "TW001",
                    "lines": [{"sku": sku, "quantity": quantity}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn reservations_are_listed_with_filters_and_released_as_over_http() {
    let app = spawn_app().await;
    let iso = &app.iso;
    app.store("TW001", 25.05, 121.52).await;
    app.stock("TW001", "SKU-A", 10).await;
    app.stock("TW001", "SKU-B", 10).await;
    hold(&app, "r-cli-1", "SKU-A", 3).await;
    hold(&app, "r-cli-2", "SKU-B", 2).await;
    let (status, routed) = app
        .send(
            Method::POST,
            "/v1/orders/route",
            RESERVE_KEY,
            &json!({"order_id": "o-cli", "lines": [{"sku": "SKU-A", "quantity": 1}],
                    "fulfilment": "pickup", "pickup_location_id": "TW001",
                    "customer": {"lat": 25.05, "lon": 121.52}}),
        )
        .await;
    assert_eq!(status, 200, "{routed}");
    assert_eq!(app.reserved("TW001", "SKU-A").await, 4);

    let ids = |r: &Run| -> Vec<String> {
        let v: Value = serde_json::from_str(&r.stdout).expect("JSON listing");
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x["reservation_id"].as_str().expect("id").to_owned())
            .collect()
    };
    let all = omnistock(iso, &["reservations", "list", "--json"]).await;
    ok(&all);
    assert_eq!(ids(&all).len(), 3, "{}", all.stdout);
    let by_sku = omnistock(iso, &["reservations", "list", "--json", "--sku", "SKU-B"]).await;
    ok(&by_sku);
    assert_eq!(ids(&by_sku), ["r-cli-2"]);
    let by_order = omnistock(
        iso,
        &["reservations", "list", "--json", "--order-id", "o-cli"],
    )
    .await;
    ok(&by_order);
    let routed_id = routed["assignments"][0]["reservation_id"]
        .as_str()
        .expect("id");
    assert_eq!(ids(&by_order), [routed_id]);
    let elsewhere = omnistock(iso, &["reservations", "list", "--location", "TW002"]).await;
    ok(&elsewhere);
    assert!(
        elsewhere.stdout.contains("no reservations match"),
        "{}",
        elsewhere.stdout
    );
    let table = omnistock(
        iso,
        &["reservations", "list", "--status", "held", "--sku", "SKU-A"],
    )
    .await;
    ok(&table);
    assert!(
        table.stdout.contains("r-cli-1") && table.stdout.contains("SKU-A×3(3 held)"),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains("r-cli-2"), "{}", table.stdout);
    let usage = omnistock(iso, &["reservations", "list", "--status", "gone"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);

    let events_before: i64 = release_events(&app).await;
    let released = omnistock(iso, &["reservations", "release", "r-cli-1"]).await;
    ok(&released);
    assert!(
        released.stdout.contains("released r-cli-1"),
        "{}",
        released.stdout
    );
    assert!(
        released.stdout.contains("3 units given back"),
        "{}",
        released.stdout
    );
    assert_eq!(app.reserved("TW001", "SKU-A").await, 1);
    assert_eq!(
        app.reserved("TW001", "SKU-B").await,
        2,
        "another hold untouched"
    );
    assert_eq!(
        release_events(&app).await,
        events_before + 1,
        "one change event recorded"
    );
    let (_, view) = app.get("/v1/reservations/r-cli-1", RESERVE_KEY).await;
    assert_eq!(view["status"], json!("released"));
    // The cache was written after the commit: the read answers from Redis with the new value.
    let (_, avail) = app.get("/v1/availability/SKU-A", READ_KEY).await;
    assert_eq!(avail["available"], json!(9), "{avail}");
    app.assert_ledger_consistent().await;

    let twice = omnistock(iso, &["reservations", "release", "r-cli-1"]).await;
    assert_eq!(twice.code, 1, "{}", twice.stdout);
    assert!(twice.stderr.contains("is released"), "{}", twice.stderr);
    let unknown = omnistock(iso, &["reservations", "release", "r-nope"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no reservation"),
        "{}",
        unknown.stderr
    );
}

async fn release_events(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox
         WHERE payload->>'cause' = 'reservation_release' AND payload->>'sku' = 'SKU-A'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("events")
}

#[tokio::test]
async fn a_generated_key_authenticates_by_its_hash_and_a_wrong_one_is_401() {
    let iso = Isolation::new().await;
    let gen = omnistock(&iso, &["keys", "generate", "--scopes", "read|reserve"]).await;
    ok(&gen);
    let line = |prefix: &str| {
        gen.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {prefix} line in {}", gen.stdout))
            .to_owned()
    };
    let (key, entry) = (line("key:"), line("config:"));
    assert!(
        entry.starts_with("sha256:") && entry.ends_with("=read|reserve"),
        "{entry}"
    );
    assert!(!entry.contains(&key), "no plaintext in the entry");
    let app = spawn_with(iso, |c| c.api_keys = entry.parse().expect("entry")).await;
    let (status, who) = app.get("/v1/whoami", &key).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["scopes"], json!(["read", "reserve"]));
    let mut wrong = key.clone();
    wrong.pop();
    wrong.push(if key.ends_with('0') { '1' } else { '0' });
    assert_eq!(app.get("/v1/whoami", &wrong).await.0, 401);
    let digest = entry.split('=').next().expect("digest");
    assert_eq!(
        app.get("/v1/whoami", digest).await.0,
        401,
        "the hash is no key"
    );
    let usage = omnistock(&app.iso, &["keys", "generate", "--scopes", "root"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stdout);
}

#[tokio::test]
async fn healthcheck_answers_for_a_running_daemon_and_fails_without_one() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();
    let up = omnistock(&app.iso, &["healthcheck", "--http-addr", &addr]).await;
    ok(&up);
    assert!(up.stdout.contains("answered 200"), "{}", up.stdout);
    // From the environment, as the container's HEALTHCHECK runs it.
    let c = app.iso.connections();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnistock"));
    cmd.env_clear()
        .arg("healthcheck")
        .env(
            "OMNISTOCK_HTTP_ADDR",
            format!("0.0.0.0:{}", app.addr.port()),
        )
        .env("DATABASE_URL", c.database_url);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    // Nothing listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let down = omnistock(
        &app.iso,
        &[
            "healthcheck",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--timeout-seconds",
            "2",
        ],
    )
    .await;
    assert_eq!(down.code, 1, "{}", down.stdout);
    assert!(down.stderr.contains("connecting to"), "{}", down.stderr);
}
