//! `omnistock nats-config`: one NKey user per store, so that a store's credentials can publish
//! its own movements and nothing else, plus the users of the daemon and of operators.
//!
//! Writes into one folder:
//! - `users.conf`: the server include (an `authorization` block) with every user's public key
//!   and permissions; it holds no secret.
//! - `daemon.seed`, `ops.seed`, `stores/<location_id>.seed`: the private seeds (mode 0600), to
//!   hand out one to each party and then delete or lock away.
//!
//! Each user listens only on its own reply inbox, so its client must set that inbox prefix
//! ([`SERVICE_INBOX`], [`store_inbox`]).
//!
//! Re-running keeps every existing seed (so nothing deployed breaks) and adds users for new
//! locations. The locations come from PostgreSQL: that is where `import locations` and
//! `PUT /v1/locations` put them, so the users always match what the daemon accepts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Subjects;
use crate::domain::ids::is_valid_location_id;

/// One NATS user: who, its public NKey, what it may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub public_key: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// What a run did, for the command's output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub created: Vec<String>,
    pub kept: Vec<String>,
    /// Seed files of locations that no longer exist: left in place (their users are dropped
    /// from `users.conf`, so they can no longer log in).
    pub orphaned: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} new NKey user(s), {} kept",
            self.created.len(),
            self.kept.len()
        )?;
        for n in &self.created {
            writeln!(f, "  new   {n}")?;
        }
        for n in &self.orphaned {
            writeln!(
                f,
                "  gone  {n} (no such location any more: removed from users.conf, seed left)"
            )?;
        }
        // Without its own inbox prefix a client gets no replies at all (its subscription is
        // refused), so say it where the seeds are handed out.
        writeln!(
            f,
            "inbox prefixes (NATS_INBOX_PREFIX, or the client library's inbox prefix option):\n  \
             daemon and ops: {SERVICE_INBOX}\n  store <id>:     {}",
            store_inbox("<id>")
        )
    }
}

/// The reply inbox of the daemon and the ops tools (`NATS_INBOX_PREFIX`). Its own, because the
/// daemon's pull consumers deliver every store's movements to it, and its JetStream API replies
/// arrive there: on the shared `_INBOX` any store could read them.
pub const SERVICE_INBOX: &str = "_INBOX_omnistock";

/// A store's reply inbox (`NATS_INBOX_PREFIX` of its client), where its JetStream acks arrive.
/// "store_" keeps a location called "omnistock" off the service inbox.
pub fn store_inbox(location_id: &str) -> String {
    format!("_INBOX_store_{location_id}")
}

/// Store credentials: their own movement subject, and their own inbox for the JetStream ack.
/// Nothing else: no JetStream API, no other store's subject or acks, no events.
pub fn store_permissions(subjects: &Subjects, location_id: &str) -> (Vec<String>, Vec<String>) {
    (
        vec![subjects.movements(location_id)],
        vec![format!("{}.>", store_inbox(location_id))],
    )
}

/// The daemon: the JetStream API of its own five streams (create, info, its consumers, message
/// reads), acks of the movements it consumes, and the subjects it publishes (events, dead
/// letters, the internal announcements) or listens to (change fan-out, announcements).
pub fn daemon_permissions(subjects: &Subjects) -> (Vec<String>, Vec<String>) {
    let p = &subjects.prefix;
    let mut publish = vec!["$JS.API.INFO".to_owned()];
    for stream in [
        subjects.movements_stream(),
        subjects.deadletter_stream(),
        subjects.changes_stream(),
        subjects.alerts_stream(),
        subjects.channels_stream(),
    ] {
        publish.extend([
            // STREAM.CREATE / INFO / UPDATE / NAMES of this stream
            format!("$JS.API.STREAM.*.{stream}"),
            // STREAM.MSG.GET (message reads by sequence, ops and tests)
            format!("$JS.API.STREAM.MSG.*.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            // CONSUMER.CREATE / INFO / DELETE / NAMES / LIST on this stream
            format!("$JS.API.CONSUMER.*.{stream}"),
            format!("$JS.API.CONSUMER.*.{stream}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
            // pull requests of its consumers
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
            // acks, naks and terms of delivered messages
            format!("$JS.ACK.{stream}.>"),
        ]);
    }
    publish.extend([
        format!("{p}.changes.>"),
        format!("{p}.alerts.>"),
        format!("{p}.channels.>"),
        format!("{p}.deadletter.>"),
        format!("{p}.internal.>"),
    ]);
    let subscribe = vec![
        format!("{SERVICE_INBOX}.>"),
        format!("{p}.changes.>"),
        format!("{p}.internal.>"),
    ];
    (publish, subscribe)
}

/// Operators' tools (`omnistock publish`, `load`, a dead-letter replay): the daemon's rights
/// plus publishing movements for any store. Keep this seed with the operators, not on a till.
pub fn ops_permissions(subjects: &Subjects) -> (Vec<String>, Vec<String>) {
    let (mut publish, subscribe) = daemon_permissions(subjects);
    publish.push(subjects.movements_wildcard());
    (publish, subscribe)
}

/// Writes the users of `locations` (and the daemon's and ops') into `out`, keeping seeds
/// that exist. Seeds are written before `users.conf`, which is replaced only once complete.
pub fn generate(out: &Path, subjects: &Subjects, locations: &[String]) -> anyhow::Result<Report> {
    let stores_dir = out.join("stores");
    std::fs::create_dir_all(&stores_dir)
        .with_context(|| format!("creating {}", stores_dir.display()))?;
    let mut report = Report::default();
    let mut users = Vec::with_capacity(locations.len() + 2);
    for (name, file, perms) in [
        (
            "omnistock-daemon".to_owned(),
            out.join("daemon.seed"),
            daemon_permissions(subjects),
        ),
        (
            "omnistock-ops".to_owned(),
            out.join("ops.seed"),
            ops_permissions(subjects),
        ),
    ] {
        users.push(user(&name, &file, perms, &mut report)?);
    }
    let mut sorted: Vec<&String> = locations.iter().collect();
    sorted.sort();
    sorted.dedup();
    for id in sorted {
        // A location id goes into a subject and a file name: the contract's shape only.
        anyhow::ensure!(
            is_valid_location_id(id),
            "location id {id:?} does not match [A-Za-z0-9_-]{{1,64}}"
        );
        let file = stores_dir.join(format!("{id}.seed"));
        users.push(user(
            &format!("store:{id}"),
            &file,
            store_permissions(subjects, id),
            &mut report,
        )?);
    }
    report.orphaned = orphans(&stores_dir, locations)?;
    let conf = out.join("users.conf");
    write_replacing(&conf, render(subjects, &users).as_bytes(), 0o644)?;
    Ok(report)
}

fn user(
    name: &str,
    seed_file: &Path,
    (publish, subscribe): (Vec<String>, Vec<String>),
    report: &mut Report,
) -> anyhow::Result<User> {
    let (key, created) = load_or_create(seed_file)?;
    if created {
        report.created.push(name.to_owned());
    } else {
        report.kept.push(name.to_owned());
    }
    Ok(User {
        name: name.to_owned(),
        public_key: key.public_key(),
        publish,
        subscribe,
    })
}

/// The user key in `path`, or a new one written there (0600).
fn load_or_create(path: &Path) -> anyhow::Result<(nkeys::KeyPair, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = nkeys::KeyPair::from_seed(text.trim()).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not an NKey seed; move it away to make a new one",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                matches!(key.key_pair_type(), nkeys::KeyPairType::User),
                "{} holds a seed that is not a user seed (SU...)",
                path.display()
            );
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = nkeys::KeyPair::new_user();
            let seed = key
                .seed()
                .map_err(|e| anyhow::anyhow!("encoding a new seed: {e}"))?;
            write_replacing(path, format!("{seed}\n").as_bytes(), 0o600)?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Seed files of ids that are no longer locations.
fn orphans(stores_dir: &Path, locations: &[String]) -> anyhow::Result<Vec<String>> {
    let mut gone = Vec::new();
    for entry in std::fs::read_dir(stores_dir)
        .with_context(|| format!("listing {}", stores_dir.display()))?
    {
        let name = entry?.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".seed")) else {
            continue;
        };
        if !locations.iter().any(|l| l == id) {
            gone.push(id.to_owned());
        }
    }
    gone.sort();
    Ok(gone)
}

/// Writes through a temporary file in the same folder and renames, so a reader (or a
/// nats-server reload) never sees half a file; the mode is set before any byte is written.
fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| quoted(s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `authorization` block: public keys and permissions only (no secret).
pub fn render(subjects: &Subjects, users: &[User]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated by `omnistock nats-config` for subject prefix {:?}: do not edit, re-run it.\n\
         # Public keys only; the seeds stay in the files next to this one.\n\
         authorization {{\n  users = [",
        subjects.prefix
    );
    for u in users {
        let _ = writeln!(
            s,
            "    # {}\n    {{ nkey: {}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}",
            u.name,
            quoted(&u.public_key),
            list(&u.publish),
            list(&u.subscribe)
        );
    }
    s.push_str("  ]\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("omnistock-natscfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn a_store_may_publish_only_its_own_movements() {
        let (publish, subscribe) = store_permissions(&Subjects::new("inventory"), "TW001");
        assert_eq!(publish, vec!["inventory.movements.TW001"]);
        assert_eq!(subscribe, vec!["_INBOX_store_TW001.>"]);
        let (_, daemon_sub) = daemon_permissions(&Subjects::new("inventory"));
        assert!(
            !daemon_sub.iter().any(|s| s.starts_with("_INBOX.")),
            "the daemon's deliveries must not land on the inbox stores may read"
        );
        let (daemon_pub, _) = daemon_permissions(&Subjects::new("inventory"));
        assert!(!daemon_pub.iter().any(|s| s.contains(".movements.")));
        assert!(daemon_pub.contains(&"$JS.ACK.INVENTORY_MOVEMENTS.>".to_owned()));
    }

    #[test]
    fn rerunning_keeps_keys_and_adds_new_stores() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        let s = Subjects::new("inventory");
        let first = generate(&dir, &s, &["A".into(), "B".into()]).expect("first run");
        assert_eq!(first.created.len(), 4, "{first:?}");
        let conf1 = std::fs::read_to_string(dir.join("users.conf")).expect("conf");
        let seed_a = std::fs::read_to_string(dir.join("stores/A.seed")).expect("seed");
        let mode = std::fs::metadata(dir.join("stores/A.seed"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            !conf1.contains(seed_a.trim()),
            "a seed leaked into users.conf"
        );

        let second = generate(&dir, &s, &["A".into(), "B".into(), "C".into()]).expect("rerun");
        assert_eq!(second.created, vec!["store:C".to_owned()]);
        assert_eq!(second.kept.len(), 4);
        let conf2 = std::fs::read_to_string(dir.join("users.conf")).expect("conf");
        let public_a = nkeys::KeyPair::from_seed(seed_a.trim())
            .expect("seed")
            .public_key();
        assert!(conf1.contains(&public_a) && conf2.contains(&public_a));
        assert!(conf2.contains("\"inventory.movements.C\""));

        let third = generate(&dir, &s, &["A".into()]).expect("store gone");
        assert_eq!(third.orphaned, vec!["B".to_owned(), "C".to_owned()]);
        assert!(!std::fs::read_to_string(dir.join("users.conf"))
            .expect("conf")
            .contains("movements.B\""));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_location_id_that_could_escape_its_subject_is_refused() {
        let dir = temp_dir();
        let r = generate(&dir, &Subjects::new("inventory"), &["A.>".into()]);
        assert!(r.is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
