//! Per-store NATS credentials, against a real nats-server running the shipped configuration
//! (`deploy/nats/nats-server.conf`) with the users `omnistock nats-config` writes: a store
//! publishes its own movements and gets the JetStream ack, another store's subject is
//! refused, and the daemon works with nothing but its own NKey.
//!
//! Uses the shared PostgreSQL and Redis (a fresh database, a unique key prefix) and a private
//! nats-server; everything is removed or killed on drop, also on panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use omnistock::config::{Connections, NatsAuth, Subjects};
use omnistock::ops::nats_config::{store_inbox, SERVICE_INBOX};

use crate::daemon::{Daemon, Urls, PREFIX};
use crate::serve::tail;
use crate::servers::{free_port, shared_database, shared_redis, turn, Server, TempDir};
use crate::support::{movement, wait_for, Truth};

const SHIPPED_STORE_DIR: &str = "/var/lib/nats/jetstream";

/// Runs `omnistock nats-config` into `out`; its standard output.
fn nats_config(database_url: &str, out: &Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_omnistock"))
        .args(["nats-config", "--out"])
        .arg(out)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("OMNISTOCK_SUBJECT_PREFIX", PREFIX)
        .output()
        .expect("run omnistock nats-config");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "nats-config failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// Creates the locations `ids` in a fresh database of the shared PostgreSQL.
pub async fn database_with_locations(dir: &Path, ids: &[&str]) -> String {
    let url = shared_database().await;
    let pool = omnistock::db::connect(&url, 2).await.expect("connect");
    omnistock::db::migrate(&pool).await.expect("migrate");
    let csv = dir.join("locations.csv");
    let rows: String = ids
        .iter()
        .map(|id| format!("{id},Store {id},store,52.5,13.4\n"))
        .collect();
    std::fs::write(&csv, format!("location_id,name,kind,lat,lon\n{rows}")).expect("csv");
    omnistock::ops::import::locations(&pool, &csv)
        .await
        .expect("import locations");
    pool.close().await;
    url
}

/// The connection settings of a client that logs in with the seed in `seed_file` and takes its
/// replies on `inbox` (each generated user may listen only on its own).
fn with_seed_file(nats_url: &str, seed_file: PathBuf, inbox: &str) -> Connections {
    Connections {
        database_url: "postgres://unused".into(),
        redis_url: "redis://unused".into(),
        nats_url: nats_url.to_owned(),
        subject_prefix: PREFIX.into(),
        redis_prefix: "unused".into(),
        db_max_connections: 1,
        db_acquire_timeout_ms: 1_000,
        nats_auth: NatsAuth {
            nats_nkey_seed_file: Some(seed_file),
            nats_inbox_prefix: Some(inbox.to_owned()),
            ..Default::default()
        },
    }
}

/// A store's own NATS client (its seed, its inbox), with the client errors the server reports
/// to it, e.g. a permissions violation.
async fn store_client(
    url: &str,
    seed: &str,
    location_id: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, errors) = tokio::sync::mpsc::unbounded_channel::<String>();
    let client = async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        .custom_inbox_prefix(store_inbox(location_id))
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(url)
        .await
        .expect("the store connects");
    (client, errors)
}

/// Whether the server reports a permissions violation to the client within 5 s.
async fn violation_reported(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> bool {
    let seen = async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains("permissions violation") {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .unwrap_or(false)
}

fn public_key(seed_file: &Path) -> String {
    let seed = std::fs::read_to_string(seed_file).expect("seed file");
    nkeys::KeyPair::from_seed(seed.trim())
        .expect("seed")
        .public_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_publishes_only_its_own_movements_and_the_daemon_only_what_it_needs() {
    let _turn = turn().await;
    let dir = TempDir::new("natssec");
    let database = database_with_locations(dir.path(), &["A", "B"]).await;

    // The shipped server config, next to the users the command generates for it.
    let conf_dir = dir.path().join("nats");
    std::fs::create_dir_all(&conf_dir).expect("conf dir");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/nats-server.conf"),
    )
    .expect("deploy/nats/nats-server.conf");
    // Only the place of the data changes; listen and monitor ports come from the flags.
    assert!(shipped.contains(SHIPPED_STORE_DIR));
    let store_dir = dir.path().join("js");
    std::fs::write(
        conf_dir.join("nats-server.conf"),
        shipped.replace(SHIPPED_STORE_DIR, &store_dir.to_string_lossy()),
    )
    .expect("write the server config");
    let first = nats_config(&database, &conf_dir);
    assert!(first.contains("4 new NKey user(s), 0 kept"), "{first}");
    let again = nats_config(&database, &conf_dir);
    assert!(again.contains("0 new NKey user(s), 4 kept"), "{again}");

    let mut nats = Server::nats_with(
        &conf_dir.join("nats-server.conf"),
        free_port(),
        free_port(),
        &[],
        dir.path().join("nats.log"),
    );
    nats.start().await;
    let url = format!("nats://127.0.0.1:{}", nats.port);

    // Nobody gets in without a key.
    let anonymous = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new().connect(&url),
    )
    .await
    .expect("the server answers");
    assert!(anonymous.is_err(), "a client without credentials got in");

    // The daemon, with its seed file only.
    let mut daemon = Daemon::on(
        &Urls {
            database: database.clone(),
            redis: shared_redis(),
            redis_prefix: format!("fsec{}", free_port()),
            nats: url.clone(),
        },
        dir.path().join("omnistock.log"),
        10,
    );
    let daemon_seed = conf_dir.join("daemon.seed");
    daemon.set_env("NATS_NKEY_SEED_FILE", &daemon_seed.to_string_lossy());
    daemon.set_env("NATS_INBOX_PREFIX", SERVICE_INBOX);
    daemon.start().await;

    // Store A, through the same connect function as every omnistock command.
    let store_a = omnistock::app::connect_nats(&with_seed_file(
        &url,
        conf_dir.join("stores/A.seed"),
        &store_inbox("A"),
    ))
    .await
    .expect("store A connects with its seed file");
    let js_a = jetstream::new(store_a);
    let subjects = Subjects::new(PREFIX);
    let own = serde_json::to_vec(&movement("sec-a-1", "A", "TEE", "receipt", 5)).expect("json");
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        js_a.publish(subjects.movements("A"), own.into())
            .await?
            .await
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("ack in time")
    .expect("JetStream stores store A's own movement");
    assert_eq!(ack.stream, subjects.movements_stream());

    // Store A pretending to be store B: the server refuses the publish, nothing is stored.
    let seed_a = std::fs::read_to_string(conf_dir.join("stores/A.seed")).expect("seed");
    let (raw_a, mut errors) = store_client(&url, &seed_a, "A").await;
    let forged =
        serde_json::to_vec(&movement("sec-b-forged", "B", "TEE", "sale", 5)).expect("json");
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        jetstream::new(raw_a)
            .publish(subjects.movements("B"), forged.into())
            .await?
            .await
            .map_err(anyhow::Error::from)
    })
    .await
    .expect("the publish settles within the JetStream timeout");
    assert!(
        refused.is_err(),
        "store A's publish to B's subject was acked"
    );
    assert!(
        violation_reported(&mut errors).await,
        "no permissions violation reported to store A"
    );

    // The daemon consumed A's movement, with its own credentials, and published the change.
    let truth = Truth::at(&database).await;
    let applied = wait_for(Duration::from_secs(30), || async {
        truth.ledger_ids().await.contains_key("sec-a-1")
    })
    .await;
    assert!(
        applied.is_some(),
        "store A's movement was not applied:\n{}",
        daemon.log_tail()
    );
    let ops = omnistock::app::connect_nats(&with_seed_file(
        &url,
        conf_dir.join("ops.seed"),
        SERVICE_INBOX,
    ))
    .await
    .expect("the ops user connects");
    let ops_js = jetstream::new(ops);
    let changes = subjects.changes_stream();
    let published = wait_for(Duration::from_secs(30), || async {
        match ops_js.get_stream(&changes).await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages >= 1),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        published.is_some(),
        "no change event published:\n{}",
        daemon.log_tail()
    );
    // Store A listening on the daemon's inbox, where the daemon's pull consumer delivers every
    // store's movements: the server refuses the subscription and nothing arrives.
    let (spy, mut spy_errors) = store_client(&url, &seed_a, "A").await;
    let mut spied = spy
        .subscribe(format!("{SERVICE_INBOX}.>"))
        .await
        .expect("the subscription is sent");
    spy.flush().await.expect("flush");
    // More of what the daemon does on NATS: dead-letter a bad movement, announce a changed
    // location, read its consumer and dead letters for the ops view.
    let bad = serde_json::to_vec(&movement("sec-a-bad", "A", "TEE", "receipt", -3)).expect("json");
    js_a.publish(subjects.movements("A"), bad.into())
        .await
        .expect("publish")
        .await
        .expect("a bad movement is still stored");
    let dead_lettered = wait_for(Duration::from_secs(30), || async {
        match ops_js.get_stream(subjects.deadletter_stream()).await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages >= 1),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        dead_lettered.is_some(),
        "no dead letter:\n{}",
        daemon.log_tail()
    );
    let overheard = tokio::time::timeout(Duration::from_millis(500), spied.next()).await;
    assert!(
        !matches!(overheard, Ok(Some(_))),
        "store A read a message on the daemon's inbox"
    );
    assert!(
        violation_reported(&mut spy_errors).await,
        "store A's subscription to the daemon's inbox was not refused"
    );
    daemon.store("A", 52.5, 13.4).await;
    let summary = daemon.get("/v1/ops/summary").await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    // Both are null when the daemon could not read them from JetStream.
    assert!(
        summary.body["network"]["consumer_lag"].is_u64(),
        "{}",
        summary.body
    );
    let a = summary.body["locations"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["location_id"] == "A"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(a["dead_letters_last_hour"], 1, "{}", summary.body);

    let mut movements = ops_js
        .get_stream(subjects.movements_stream())
        .await
        .expect("movement stream");
    let stored = movements.info().await.expect("info").state.messages;
    assert_eq!(stored, 2, "only store A's own movements are in the stream");
    assert_eq!(truth.ledger_count().await, 1);

    // The server saw exactly the forged publish as a violation, and nothing of the daemon's.
    let log = std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    let daemon_key = public_key(&daemon_seed);
    assert!(
        !violations.iter().any(|l| l.contains(&daemon_key)),
        "the daemon was refused something it needs:\n{}",
        violations.join("\n")
    );
    let a_key = public_key(&conf_dir.join("stores/A.seed"));
    assert!(
        violations
            .iter()
            .any(|l| l.contains(&a_key) && l.contains(&subjects.movements("B"))),
        "the server log does not show store A refused on B's subject:\n{}",
        tail(&dir.path().join("nats.log"))
    );

    // A seed that is no seed is refused before connecting, and not echoed back.
    let mut bad = with_seed_file(&url, conf_dir.join("none"), SERVICE_INBOX);
    bad.nats_auth = NatsAuth {
        nats_nkey_seed: Some("SUnot-a-seed-s3cret".into()),
        ..Default::default()
    };
    let err = omnistock::app::connect_nats(&bad)
        .await
        .expect_err("a malformed seed is refused");
    assert!(!format!("{err:#}").contains("s3cret"), "{err:#}");

    // A well-formed key the server does not know: refused, and the error says so.
    let stranger = dir.path().join("stranger.seed");
    let key = nkeys::KeyPair::new_user();
    std::fs::write(&stranger, key.seed().expect("seed")).expect("write seed");
    let err = omnistock::app::connect_nats(&with_seed_file(&url, stranger, SERVICE_INBOX))
        .await
        .expect_err("an unknown key is refused");
    assert!(
        format!("{err:#}").contains("authorization violation"),
        "{err:#}"
    );
    drop(daemon);
}

/// Runs openssl with `args` in `dir` (test certificates only).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (the TLS test makes its certificates with it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA, and a server and a client certificate it signed (EC P-256, one day).
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=omnistock-test-ca",
    ]);
    openssl(dir, &ca);
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
        )
        .expect("ext file");
        let (key, csr, pem) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_reach_a_server_that_verifies_clients() {
    let _turn = turn().await;
    let dir = TempDir::new("natstls");
    let d = dir.path();
    certificates(d);
    let conf = d.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
            d.join("server.pem"),
            d.join("server-key.pem"),
            d.join("ca.pem")
        ),
    )
    .expect("config");
    let mut nats = Server::nats_with(&conf, free_port(), free_port(), &[], d.join("nats.log"));
    nats.start().await;
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let connections = |auth: NatsAuth| Connections {
        nats_auth: auth,
        ..with_seed_file(&url, d.join("unused"), SERVICE_INBOX)
    };
    let full = NatsAuth {
        nats_tls_ca: Some(d.join("ca.pem")),
        nats_tls_cert: Some(d.join("client.pem")),
        nats_tls_key: Some(d.join("client-key.pem")),
        nats_tls_required: true,
        ..Default::default()
    };
    let client = omnistock::app::connect_nats(&connections(full.clone()))
        .await
        .expect("connects with the CA and a client certificate");
    client
        .publish("tls.check", "x".into())
        .await
        .expect("publish");
    tokio::time::timeout(Duration::from_secs(5), client.flush())
        .await
        .expect("flush in time")
        .expect("flush");

    // The server asks for a client certificate: without one, no connection.
    let no_cert = NatsAuth {
        nats_tls_cert: None,
        nats_tls_key: None,
        ..full.clone()
    };
    assert!(
        omnistock::app::connect_nats(&connections(no_cert))
            .await
            .is_err(),
        "connected without the client certificate the server requires"
    );
    // A server certificate from a CA the client was not told to trust: refused.
    let untrusted = NatsAuth {
        nats_tls_ca: Some(d.join("client.pem")),
        ..full
    };
    assert!(
        omnistock::app::connect_nats(&connections(untrusted))
            .await
            .is_err(),
        "trusted a server certificate of an unknown CA"
    );
}
