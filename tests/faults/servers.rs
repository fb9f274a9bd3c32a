//! Private PostgreSQL, Redis and NATS servers for one fault test: each on free ports, with its
//! state in a temporary folder, so a test may stop, kill, hang and restart them without
//! touching the shared instance other tests run against. The binaries are the ones
//! `scripts/services.sh` installs (see `Binaries`). Dropping a server kills it.

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::tail;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a server may take to become ready on a loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "omnistock-faults-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("OMNISTOCK_FAULTS_KEEP").is_some() {
            eprintln!("faults: keeping {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port nothing listens on right now, below Linux's ephemeral range (32768–60999): a
/// port the OS hands out for `:0` is handed out again to the next outgoing connection of any
/// test, which then holds it when the server comes to bind it (seen: PostgreSQL "Address
/// already in use" in CI).
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    // Ports handed out but maybe not bound yet must not be handed out twice.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let port = (0..SPAN)
        .map(|i| LOW + (seed.wrapping_add(i.wrapping_mul(7_919))) % SPAN)
        .filter_map(|p| u16::try_from(p).ok())
        .find(|&p| !given.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port between 20000 and 32000");
    given.push(port);
    port
}

/// Where the server programs are: the variables `scripts/services.sh env test` exports, else
/// the places that script installs them to.
pub struct Binaries {
    pub pg_bin: PathBuf,
    pub redis_server: PathBuf,
    pub nats_server: PathBuf,
}

impl Binaries {
    pub fn find() -> Self {
        let pg_bin = std::env::var_os("OMNISTOCK_TEST_PG_BIN")
            .or_else(|| std::env::var_os("OMNISTOCK_PG_BIN"))
            .map(PathBuf::from)
            // `scripts/services.sh env` puts the PostgreSQL it uses first on PATH
            .or_else(|| on_path("initdb").and_then(|p| Some(p.parent()?.to_path_buf())))
            .or_else(newest_postgres_bin)
            .expect("no PostgreSQL binaries: set OMNISTOCK_TEST_PG_BIN (or OMNISTOCK_PG_BIN) or run `scripts/services.sh install`");
        let redis_server = std::env::var_os("OMNISTOCK_TEST_REDIS_SERVER")
            .map(PathBuf::from)
            .or_else(|| on_path("redis-server"))
            .expect("no redis-server: set OMNISTOCK_TEST_REDIS_SERVER or run `scripts/services.sh install`");
        let nats_server = Binaries::find_nats();
        Binaries {
            pg_bin,
            redis_server,
            nats_server,
        }
    }
}

impl Binaries {
    /// The nats-server alone (tests that start only NATS).
    pub fn find_nats() -> PathBuf {
        std::env::var_os("OMNISTOCK_TEST_NATS_SERVER")
            .map(PathBuf::from)
            .or_else(installed_nats)
            .or_else(|| on_path("nats-server"))
            .expect("no nats-server: set OMNISTOCK_TEST_NATS_SERVER or run `scripts/services.sh install`")
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `/usr/lib/postgresql/<highest version>/bin`, as the Debian packages install it.
fn newest_postgres_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

/// The nats-server `scripts/services.sh install` pins into `.omnistock/tools/`.
fn installed_nats() -> Option<PathBuf> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".omnistock/tools");
    std::fs::read_dir(tools)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/nats-server"))
        .find(|p| p.is_file())
}

/// The uid and gid of the `postgres` user when we run as root (PostgreSQL refuses root).
fn postgres_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id("-u")? != 0 {
        return None;
    }
    let uid = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let gid = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    Some((
        String::from_utf8(uid.stdout).ok()?.trim().parse().ok()?,
        String::from_utf8(gid.stdout).ok()?.trim().parse().ok()?,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Redis,
    Nats,
}

/// One server process (in its own process group, so a signal reaches its children too).
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    /// NATS only: the HTTP monitor port.
    pub monitor_port: u16,
    program: PathBuf,
    args: Vec<OsString>,
    user: Option<(u32, u32)>,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// A nats-server (not started) with the given configuration file and extra arguments,
    /// listening on 127.0.0.1:`port`, its monitor on `monitor_port`, logging to `log`.
    pub fn nats_with(
        config: &Path,
        port: u16,
        monitor_port: u16,
        extra: &[OsString],
        log: PathBuf,
    ) -> Server {
        let mut args: Vec<OsString> = vec![
            "-c".into(),
            config.as_os_str().to_owned(),
            "-p".into(),
            port.to_string().into(),
            "-m".into(),
            monitor_port.to_string().into(),
            "-a".into(),
            "127.0.0.1".into(),
        ];
        args.extend(extra.iter().cloned());
        Server {
            kind: Kind::Nats,
            port,
            monitor_port,
            program: Binaries::find_nats(),
            args,
            user: None,
            log,
            child: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (same port, same data as before) and waits until it answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{:?} is already running", self.kind);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("starting {:?} ({}): {e}", self.kind, self.program.display())
        }));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ready().await {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{:?} exited during startup ({status}); log:\n{}",
                    self.kind,
                    tail(&self.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} not ready after {READY_TIMEOUT:?}; log:\n{}",
                self.kind,
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the server answers: a query for PostgreSQL, PING for Redis, the JetStream
    /// health check for NATS.
    pub async fn ready(&self) -> bool {
        let probe = async {
            match self.kind {
                Kind::Postgres => {
                    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
                    let mut c = PgConnection::connect(&url).await.ok()?;
                    sqlx::query("SELECT 1").execute(&mut c).await.ok()?;
                    c.close().await.ok()
                }
                Kind::Redis => {
                    let reply = tcp_exchange(self.port, b"PING\r\n").await?;
                    reply.starts_with("+PONG").then_some(())
                }
                Kind::Nats => {
                    let reply = tcp_exchange(
                        self.monitor_port,
                        b"GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                    )
                    .await?;
                    reply.starts_with("HTTP/1.0 200").then_some(())
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    /// Sends a signal to the whole process group.
    pub fn signal(&self, sig: &str) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill")
            .args(["-s", sig, "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }

    /// A clean stop (fast shutdown for PostgreSQL), killing the server if it takes too long.
    pub async fn stop(&mut self) {
        self.signal(match self.kind {
            // SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave.
            Kind::Postgres => "INT",
            Kind::Redis | Kind::Nats => "TERM",
        });
        if !self.wait_exit(STOP_TIMEOUT).await {
            self.kill9().await;
        }
        self.child = None;
    }

    /// kill -9, the whole process group; waits for it to be gone.
    pub async fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(STOP_TIMEOUT).await;
        self.child = None;
    }

    /// Hangs the server: it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGCONT after SIGKILL is harmless; a stopped process dies on SIGKILL anyway.
            let pgid = format!("-{}", child.id());
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &pgid])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `request` to 127.0.0.1:`port`, returns what comes back first.
pub async fn tcp_exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(request).await.ok()?;
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One fault test at a time per process: nextest runs each test in its own process (and the
/// `faults` test group in .config/nextest.toml serializes those), but plain `cargo test` runs
/// them as threads of one process, where six private server sets would starve a 2-core box.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This process's turn to run a fault test (see `ONE_AT_A_TIME`), for tests that start their
/// servers without [`Servers`].
pub async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// A fresh, empty database on the shared PostgreSQL (`DATABASE_URL`, as `scripts/services.sh
/// env test` exports it), for tests that need no PostgreSQL of their own.
pub async fn shared_database() -> String {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::ConnectOptions;
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL (the shared test PostgreSQL): run `scripts/services.sh env test`");
    let name = format!("f_{}", uuid::Uuid::new_v4().simple());
    let options: PgConnectOptions = base.parse().expect("DATABASE_URL");
    let mut admin = options.connect().await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    admin.close().await.ok();
    options.database(&name).to_url_lossy().to_string()
}

/// The shared test Redis (`REDIS_URL`); share it under a unique key prefix.
pub fn shared_redis() -> String {
    std::env::var("REDIS_URL")
        .expect("REDIS_URL (the shared test Redis): run `scripts/services.sh env test`")
}

/// The three servers of one test, sharing a temporary folder (dropped last).
pub struct Servers {
    pub pg: Server,
    pub redis: Server,
    pub nats: Server,
    dir: TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Servers {
    /// Creates a fresh PostgreSQL cluster with the database `omnistock`, an empty Redis and a
    /// JetStream-enabled NATS, all running.
    pub async fn start(tag: &str) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let bins = Binaries::find();
        let dir = TempDir::new(tag);
        let user = postgres_user();
        let pg_base = dir.path().join("pg");
        std::fs::create_dir_all(&pg_base).expect("pg dir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&pg_base, Some(uid), Some(gid)).expect("chown pg dir");
        }
        let pgdata = pg_base.join("data");
        initdb(&bins.pg_bin, &pgdata, &pg_base.join("initdb.log"), user);

        let pg_port = free_port();
        let pg = Server {
            kind: Kind::Postgres,
            port: pg_port,
            monitor_port: 0,
            program: bins.pg_bin.join("postgres"),
            args: [
                "-D".into(),
                pgdata.into_os_string(),
                "-p".into(),
                pg_port.to_string().into(),
            ]
            .into_iter()
            .chain(
                [
                    "listen_addresses=127.0.0.1",
                    "unix_socket_directories=",
                    "max_connections=100",
                    // throwaway data: trade durability for speed, as the test instance does
                    "fsync=off",
                    "synchronous_commit=off",
                    "full_page_writes=off",
                ]
                .iter()
                .flat_map(|o| ["-c".into(), OsString::from(o)]),
            )
            .collect(),
            user,
            log: pg_base.join("postgres.log"),
            child: None,
        };

        let redis_port = free_port();
        let redis_dir = dir.path().join("redis");
        std::fs::create_dir_all(&redis_dir).expect("redis dir");
        let redis = Server {
            kind: Kind::Redis,
            port: redis_port,
            monitor_port: 0,
            program: bins.redis_server.clone(),
            args: vec![
                "--port".into(),
                redis_port.to_string().into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--daemonize".into(),
                "no".into(),
                "--dir".into(),
                redis_dir.into_os_string(),
            ],
            user: None,
            log: dir.path().join("redis.log"),
            child: None,
        };

        let (nats_port, monitor_port) = (free_port(), free_port());
        let nats = Server {
            kind: Kind::Nats,
            port: nats_port,
            monitor_port,
            program: bins.nats_server.clone(),
            args: vec![
                "-js".into(),
                "-sd".into(),
                dir.path().join("nats").into_os_string(),
                "-p".into(),
                nats_port.to_string().into(),
                "-m".into(),
                monitor_port.to_string().into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-n".into(),
                format!("omnistock-faults-{tag}").into(),
            ],
            user: None,
            log: dir.path().join("nats.log"),
            child: None,
        };

        let mut s = Servers {
            pg,
            redis,
            nats,
            dir,
            _turn: turn,
        };
        tokio::join!(s.pg.start(), s.redis.start(), s.nats.start());
        let mut admin = PgConnection::connect(&s.admin_url())
            .await
            .expect("connect to the private PostgreSQL");
        sqlx::query("CREATE DATABASE omnistock")
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.pg.port)
    }

    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/omnistock", self.pg.port)
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.redis.port)
    }

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats.port)
    }

    /// The logs of the three servers' last lines, for a failing test.
    pub fn logs(&self) -> String {
        [&self.pg, &self.redis, &self.nats]
            .iter()
            .map(|s| format!("--- {:?} ---\n{}", s.kind, tail(&s.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn initdb(pg_bin: &Path, pgdata: &Path, log: &Path, user: Option<(u32, u32)>) {
    let out = File::create(log).expect("initdb log");
    let mut cmd = Command::new(pg_bin.join("initdb"));
    cmd.arg("-D")
        .arg(pgdata)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"])
        // throwaway cluster: no fsync of the new files
        .arg("--no-sync")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let status = cmd.status().expect("run initdb");
    assert!(status.success(), "initdb failed:\n{}", tail(log));
}
