//! Configuration, from the environment (or the same-named flags). The doc comment of each field
//! is its user documentation: `omnistock serve --help` prints it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::http::auth::ApiKeys;

/// Where the three servers are. Needed by every command that touches the truth. The URLs may
/// carry passwords: `--help` does not print their values from the environment, and `Debug`
/// prints them redacted.
#[derive(Clone, Args)]
pub struct Connections {
    /// PostgreSQL URL, e.g. `postgres://omnistock@127.0.0.1:5432/omnistock`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Redis URL of the hot cache, e.g. `redis://127.0.0.1:6379/`.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// NATS URL, e.g. `nats://127.0.0.1:4222`; a user and password may ride in it
    /// (`nats://user:pass@host:4222`).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// First token of every NATS subject omnistock uses: `<prefix>.movements.<location_id>`,
    /// `<prefix>.deadletter.<location_id>`. The contract's value is `inventory`; change it only
    /// to run several isolated installations (or test runs) against one NATS server.
    #[arg(long, env = "OMNISTOCK_SUBJECT_PREFIX", default_value = "inventory")]
    pub subject_prefix: String,

    /// Prefix of every Redis key omnistock writes, so a Redis can be shared.
    #[arg(long, env = "OMNISTOCK_REDIS_PREFIX", default_value = "omnistock")]
    pub redis_prefix: String,

    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "OMNISTOCK_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Milliseconds a call waits for a PostgreSQL connection (a free one from the pool, or a
    /// new one) before it fails (503 over HTTP). It covers queueing under load; a database
    /// known to be down is failed faster (`OMNISTOCK_DB_DOWN_REQUEST_TIMEOUT_MS`).
    #[arg(
        long,
        env = "OMNISTOCK_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = DEFAULT_DB_ACQUIRE_TIMEOUT_MS
    )]
    pub db_acquire_timeout_ms: u64,

    #[command(flatten)]
    pub nats_auth: NatsAuth,
}

/// How omnistock proves who it is to NATS, and how it checks the server (TLS). At most one
/// of: a creds file, an NKey seed (inline or in a file), a user and password (or those in
/// `NATS_URL`). Secrets are never printed: `--help` hides their values and `Debug` redacts
/// them. See README, "Security model".
#[derive(Clone, Default, Args)]
pub struct NatsAuth {
    /// NATS credentials file (a user JWT and its NKey seed, as `nsc` writes it), for servers
    /// that use decentralized JWT authentication.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,

    /// NKey seed (`SU...`) of this process's NATS user. Prefer `NATS_NKEY_SEED_FILE`: a
    /// variable's value can leak through `/proc` or a crash report.
    #[arg(long, env = "NATS_NKEY_SEED", hide_env_values = true)]
    pub nats_nkey_seed: Option<String>,

    /// File holding the NKey seed (`SU...`), e.g. one written by `omnistock nats-config`.
    #[arg(long, env = "NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<std::path::PathBuf>,

    /// NATS user name (with `NATS_PASSWORD`), instead of putting both in `NATS_URL`.
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password of `NATS_USER`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// PEM file of the CA(s) that signed the NATS server's certificate (instead of the
    /// system's roots). Setting it turns TLS on.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<std::path::PathBuf>,

    /// PEM client certificate, for servers that verify clients (`verify: true`); needs
    /// `NATS_TLS_KEY`.
    #[arg(long, env = "NATS_TLS_CERT")]
    pub nats_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `NATS_TLS_CERT`.
    #[arg(long, env = "NATS_TLS_KEY")]
    pub nats_tls_key: Option<std::path::PathBuf>,

    /// Refuse to talk to NATS without TLS (also implied by a `tls://` URL).
    #[arg(long, env = "NATS_TLS_REQUIRED", default_value_t = false, action = clap::ArgAction::Set)]
    pub nats_tls_required: bool,

    /// Subject prefix of this client's reply inboxes (default `_INBOX`). The users that
    /// `omnistock nats-config` writes may listen only on their own: `_INBOX_omnistock` for
    /// the daemon and the ops tools, `_INBOX_store_<location_id>` for a store.
    #[arg(long, env = "NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("NatsAuth")
            .field("nats_creds", &self.nats_creds)
            .field("nats_nkey_seed", &secret(&self.nats_nkey_seed))
            .field("nats_nkey_seed_file", &self.nats_nkey_seed_file)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &secret(&self.nats_password))
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("nats_tls_required", &self.nats_tls_required)
            .field("nats_inbox_prefix", &self.nats_inbox_prefix)
            .finish()
    }
}

impl NatsAuth {
    /// Rejects combinations NATS would refuse or silently ignore, naming the variables.
    pub fn validate(&self) -> anyhow::Result<()> {
        let seed = self.nats_nkey_seed.is_some() || self.nats_nkey_seed_file.is_some();
        let methods = [
            self.nats_creds.is_some(),
            seed,
            self.nats_user.is_some() || self.nats_password.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            anyhow::bail!(
                "set only one of NATS_CREDS, NATS_NKEY_SEED(_FILE), NATS_USER/NATS_PASSWORD"
            );
        }
        if self.nats_nkey_seed.is_some() && self.nats_nkey_seed_file.is_some() {
            anyhow::bail!("set NATS_NKEY_SEED or NATS_NKEY_SEED_FILE, not both");
        }
        if self.nats_user.is_some() != self.nats_password.is_some() {
            anyhow::bail!("NATS_USER and NATS_PASSWORD go together");
        }
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            anyhow::bail!("NATS_TLS_CERT and NATS_TLS_KEY go together");
        }
        if let Some(prefix) = &self.nats_inbox_prefix {
            // Replies go to `<prefix>.<token>`: a wildcard or an empty token would make the
            // client's own reply subscription mean something else.
            let token_ok = |t: &str| {
                !t.is_empty() && !t.contains(['*', '>']) && !t.chars().any(char::is_whitespace)
            };
            if !prefix.split('.').all(token_ok) {
                anyhow::bail!(
                    "NATS_INBOX_PREFIX must be a subject without wildcards or spaces, e.g. _INBOX_omnistock"
                );
            }
        }
        Ok(())
    }
}

pub const DEFAULT_DB_ACQUIRE_TIMEOUT_MS: u64 = 5_000;

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("nats_url", &redact_url(&self.nats_url))
            .field("subject_prefix", &self.subject_prefix)
            .field("redis_prefix", &self.redis_prefix)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout_ms", &self.db_acquire_timeout_ms)
            .field("nats_auth", &self.nats_auth)
            .finish()
    }
}

/// A server URL (or a comma-separated list of them) fit for a log: any `user:password@` or
/// `token@` is replaced by `***@`.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let authority_at = url.find("://").map_or(0, |i| i + 3);
            let rest = &url[authority_at..];
            let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_len].rfind('@') {
                Some(at) => format!("{}***{}", &url[..authority_at], &rest[at..]),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Connections {
    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms.max(1))
    }
}

/// Settings of the daemon (`omnistock serve`).
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub connections: Connections,

    /// Listen address of the HTTP API.
    #[arg(long, env = "OMNISTOCK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// API keys and their scopes: comma-separated `key=scope|scope` entries. Scopes are
    /// `read`, `reserve` and `admin`; `*` grants every scope. Example:
    /// `OMNISTOCK_API_KEYS='checkout-7f3a=read|reserve,ops-91bc=*'`. Keys are secrets: use long
    /// random strings. Without any key every `/v1` call answers 401. A key may be given by its
    /// SHA-256 instead, `sha256:<64 hex digits>=scopes` (`omnistock keys generate` prints
    /// both), so that no plaintext key sits in configuration.
    #[arg(
        long,
        env = "OMNISTOCK_API_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    pub api_keys: ApiKeys,

    /// Requests per second each API key may make (a burst of the same size is allowed);
    /// over it the API answers 429 with `Retry-After`.
    #[arg(long, env = "OMNISTOCK_RATE_LIMIT_PER_SECOND", default_value_t = 1000)]
    pub rate_limit_per_second: u32,

    /// Replicas of the JetStream streams (and the ingest consumer) omnistock creates: 1 on a
    /// single server, 3 on a 3-node cluster. Applied when a stream is created; an existing
    /// stream keeps its replicas (change them with `nats stream edit`).
    #[arg(long, env = "OMNISTOCK_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Apply migrations when the daemon starts.
    #[arg(long, env = "OMNISTOCK_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Most movement messages taken from JetStream and applied in one transaction.
    #[arg(long, env = "OMNISTOCK_INGEST_BATCH", default_value_t = 500)]
    pub ingest_batch: usize,

    /// Seconds JetStream waits for an ack before it redelivers a movement message: the most a
    /// movement can be delayed when a daemon dies holding it. Must exceed the slowest batch.
    /// (Applied to the existing consumer when the daemon starts.)
    #[arg(long, env = "OMNISTOCK_INGEST_ACK_WAIT_SECONDS", default_value_t = 10)]
    pub ingest_ack_wait_seconds: u64,

    /// Deliveries JetStream makes of one movement message before the daemon gives it up: on
    /// its last delivery a message that still cannot be applied (or dead-lettered) is kept as
    /// a `delivery_limit` dead letter and terminated, with an error log and
    /// `omnistock_ingest_given_up_total`. Redeliveries back off from 1 s to 10 s, so the
    /// default of 200 rides out about 33 minutes of PostgreSQL outage. Applied to the existing
    /// consumer when the daemon starts; 0 means unlimited.
    #[arg(long, env = "OMNISTOCK_INGEST_MAX_DELIVER", default_value_t = 200)]
    pub ingest_max_deliver: i64,

    /// Movement transactions in flight at once, each applying the SKUs that hash to it (order
    /// per level is kept; a message spanning shards is acked once all its parts committed).
    /// Each holds a database connection while it applies.
    #[arg(long, env = "OMNISTOCK_INGEST_SHARDS", default_value_t = 4)]
    pub ingest_shards: usize,

    /// Rebuild the whole Redis cache from PostgreSQL when the daemon starts.
    #[arg(long, env = "OMNISTOCK_CACHE_REBUILD_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache_rebuild_on_start: bool,

    /// Seconds between two reconciliation runs inside the daemon (ledger vs levels, Redis vs
    /// PostgreSQL, Redis repaired); 0 turns the periodic run off.
    #[arg(
        long,
        env = "OMNISTOCK_RECONCILE_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub reconcile_interval_seconds: u64,

    /// Default low-stock threshold: an alert fires when `available` falls to this or below
    /// (and above zero). A location's or a SKU's own threshold takes precedence.
    #[arg(long, env = "OMNISTOCK_LOW_STOCK_THRESHOLD", default_value_t = 2)]
    pub low_stock_threshold: i64,

    /// Seconds the daemon waits for in-flight work to finish after SIGTERM / Ctrl-C: open
    /// requests and streams, then background jobs, each get at most this long.
    #[arg(long, env = "OMNISTOCK_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,

    #[command(flatten)]
    pub limits: Limits,

    /// Secret (at least 32 characters) that signs the short-lived live-stream tokens of
    /// `POST /v1/stream/token`, with which a browser opens `GET /v1/stream?token=` without
    /// putting its API key in a URL. Give every daemon behind one load balancer the same
    /// secret; unset, each process draws a random one, and a token works only on the daemon
    /// that issued it.
    #[arg(long, env = "OMNISTOCK_STREAM_SECRET", hide_env_values = true)]
    pub stream_secret: Option<String>,

    #[command(flatten)]
    pub ops: OpsThresholds,

    /// Browser origins allowed to call the API (CORS): comma-separated exact origins
    /// (`https://shop.example,http://localhost:3000`), or `*` for any. Empty: no CORS headers,
    /// so browsers on other origins are refused. Cookies are never allowed (the API key goes in
    /// `Authorization`).
    #[arg(long, env = "OMNISTOCK_CORS_ALLOW_ORIGINS", default_value = "")]
    pub cors_allow_origins: crate::http::layers::CorsOrigins,
}

/// The traffic lights of the ops view (`GET /v1/ops/summary`): a value at or above `amber`
/// is amber, at or above `red` is red. Returned with the summary, so the page shows them.
#[derive(Debug, Clone, Copy, Args, serde::Serialize)]
pub struct OpsThresholds {
    /// Sync delay (seconds since a location's newest movement occurred) that turns it amber.
    #[arg(long, env = "OMNISTOCK_OPS_SYNC_DELAY_AMBER_SECONDS", default_value_t = OpsThresholds::DEFAULT.sync_delay_amber_seconds)]
    pub sync_delay_amber_seconds: i64,
    /// Sync delay (seconds) that turns a location red.
    #[arg(long, env = "OMNISTOCK_OPS_SYNC_DELAY_RED_SECONDS", default_value_t = OpsThresholds::DEFAULT.sync_delay_red_seconds)]
    pub sync_delay_red_seconds: i64,
    /// Publish-to-commit delay (seconds from the JetStream publish time, or an HTTP post's
    /// arrival, to the commit; median of the location's recent published movements) that
    /// turns it amber.
    #[arg(long, env = "OMNISTOCK_OPS_COMMIT_DELAY_AMBER_SECONDS", default_value_t = OpsThresholds::DEFAULT.commit_delay_amber_seconds)]
    pub commit_delay_amber_seconds: f64,
    /// Publish-to-commit delay (seconds) that turns a location red.
    #[arg(long, env = "OMNISTOCK_OPS_COMMIT_DELAY_RED_SECONDS", default_value_t = OpsThresholds::DEFAULT.commit_delay_red_seconds)]
    pub commit_delay_red_seconds: f64,
    /// Dead letters in the last hour that turn a location amber.
    #[arg(long, env = "OMNISTOCK_OPS_DEAD_LETTERS_AMBER", default_value_t = OpsThresholds::DEFAULT.dead_letters_amber)]
    pub dead_letters_amber: i64,
    /// Dead letters in the last hour that turn a location red.
    #[arg(long, env = "OMNISTOCK_OPS_DEAD_LETTERS_RED", default_value_t = OpsThresholds::DEFAULT.dead_letters_red)]
    pub dead_letters_red: i64,
    /// SKUs out of stock (available 0) at a location that turn it amber.
    #[arg(long, env = "OMNISTOCK_OPS_STOCKOUTS_AMBER", default_value_t = OpsThresholds::DEFAULT.stockouts_amber)]
    pub stockouts_amber: i64,
    /// SKUs out of stock at a location that turn it red.
    #[arg(long, env = "OMNISTOCK_OPS_STOCKOUTS_RED", default_value_t = OpsThresholds::DEFAULT.stockouts_red)]
    pub stockouts_red: i64,
    /// Movement messages waiting for the ingest consumer that turn the network amber.
    #[arg(long, env = "OMNISTOCK_OPS_CONSUMER_LAG_AMBER", default_value_t = OpsThresholds::DEFAULT.consumer_lag_amber)]
    pub consumer_lag_amber: i64,
    /// Movement messages waiting that turn the network red.
    #[arg(long, env = "OMNISTOCK_OPS_CONSUMER_LAG_RED", default_value_t = OpsThresholds::DEFAULT.consumer_lag_red)]
    pub consumer_lag_red: i64,
    /// A hold that expires within this many seconds counts as "expiring soon".
    #[arg(long, env = "OMNISTOCK_OPS_HOLDS_EXPIRING_SECONDS", default_value_t = OpsThresholds::DEFAULT.holds_expiring_seconds)]
    pub holds_expiring_seconds: i64,
}

impl OpsThresholds {
    pub const DEFAULT: OpsThresholds = OpsThresholds {
        sync_delay_amber_seconds: 900,
        sync_delay_red_seconds: 3_600,
        commit_delay_amber_seconds: 5.0,
        commit_delay_red_seconds: 60.0,
        dead_letters_amber: 1,
        dead_letters_red: 10,
        stockouts_amber: 5,
        stockouts_red: 50,
        consumer_lag_amber: 1_000,
        consumer_lag_red: 10_000,
        holds_expiring_seconds: 300,
    };
}

impl Default for OpsThresholds {
    fn default() -> Self {
        OpsThresholds::DEFAULT
    }
}

/// Bounds on waiting and on open connections, so that nothing waits forever.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Milliseconds one SQL statement of the daemon may run before PostgreSQL cancels it
    /// (`statement_timeout`; 0 turns it off). The request answers 503 with `Retry-After`.
    #[arg(
        long,
        env = "OMNISTOCK_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = Limits::DEFAULT.db_statement_timeout_ms
    )]
    pub db_statement_timeout_ms: u64,

    /// Milliseconds a statement of the daemon waits for a row lock (`lock_timeout`; 0 turns
    /// it off). The request answers 503 with `Retry-After`; a movement batch is retried.
    #[arg(
        long,
        env = "OMNISTOCK_DB_LOCK_TIMEOUT_MS",
        default_value_t = Limits::DEFAULT.db_lock_timeout_ms
    )]
    pub db_lock_timeout_ms: u64,

    /// Seconds an HTTP request may take before the daemon gives up on it and answers 503
    /// (the live stream `/v1/stream` is exempt: it is open by design).
    #[arg(
        long,
        env = "OMNISTOCK_HTTP_REQUEST_TIMEOUT_SECONDS",
        default_value_t = Limits::DEFAULT.http_request_timeout_seconds
    )]
    pub http_request_timeout_seconds: u64,

    /// Milliseconds an HTTP request may take while PostgreSQL is known to be unreachable (its
    /// own watch connection was closed or stopped answering): enough for what Redis answers,
    /// while a call needing PostgreSQL answers 503 at once instead of waiting for a connection.
    #[arg(
        long,
        env = "OMNISTOCK_DB_DOWN_REQUEST_TIMEOUT_MS",
        default_value_t = Limits::DEFAULT.db_down_request_timeout_ms
    )]
    pub db_down_request_timeout_ms: u64,

    /// Most live streams (`GET /v1/stream`) open at once; over it the API answers 503 with
    /// `Retry-After`.
    #[arg(
        long,
        env = "OMNISTOCK_SSE_MAX_CONNECTIONS",
        default_value_t = Limits::DEFAULT.sse_max_connections
    )]
    pub sse_max_connections: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        db_statement_timeout_ms: 30_000,
        db_lock_timeout_ms: 5_000,
        http_request_timeout_seconds: 30,
        db_down_request_timeout_ms: 500,
        sse_max_connections: 1_000,
    };

    pub fn http_request_timeout(&self) -> Duration {
        Duration::from_secs(self.http_request_timeout_seconds.max(1))
    }

    pub fn db_down_request_timeout(&self) -> Duration {
        Duration::from_millis(self.db_down_request_timeout_ms.max(1))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

impl ServeConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ingest_ack_wait_seconds.max(1))
    }
}

/// The NATS names derived from the subject prefix.
#[derive(Debug, Clone)]
pub struct Subjects {
    pub prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.trim_end_matches('.').to_owned(),
        }
    }

    pub fn movements_wildcard(&self) -> String {
        format!("{}.movements.>", self.prefix)
    }

    pub fn movements(&self, location_id: &str) -> String {
        format!("{}.movements.{location_id}", self.prefix)
    }

    /// The location token of a movement subject, if the subject has exactly that shape.
    pub fn location_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".movements.")?;
        (!rest.is_empty() && !rest.contains('.')).then_some(rest)
    }

    pub fn deadletter_wildcard(&self) -> String {
        format!("{}.deadletter.>", self.prefix)
    }

    pub fn deadletter(&self, location_id: &str) -> String {
        format!("{}.deadletter.{location_id}", self.prefix)
    }

    /// Level change events of one location: `<prefix>.changes.<location_id>`.
    pub fn changes(&self, location_id: &str) -> String {
        format!("{}.changes.{location_id}", self.prefix)
    }

    pub fn changes_wildcard(&self) -> String {
        format!("{}.changes.>", self.prefix)
    }

    /// Stock alerts: `<prefix>.alerts.<kind>` (`out_of_stock`, `back_in_stock`, `low_stock`).
    pub fn alerts(&self, kind: &str) -> String {
        format!("{}.alerts.{kind}", self.prefix)
    }

    pub fn alerts_wildcard(&self) -> String {
        format!("{}.alerts.>", self.prefix)
    }

    pub fn locations_changed(&self) -> String {
        format!("{}.internal.locations_changed", self.prefix)
    }

    pub fn channels_changed(&self) -> String {
        format!("{}.internal.channels_changed", self.prefix)
    }

    /// A channel's totals: `<prefix>.channels.<channel>`.
    pub fn channels(&self, channel: &str) -> String {
        format!("{}.channels.{channel}", self.prefix)
    }

    pub fn channels_wildcard(&self) -> String {
        format!("{}.channels.>", self.prefix)
    }

    fn stream_base(&self) -> String {
        self.prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// JetStream stream holding movements: `INVENTORY_MOVEMENTS` for the default prefix.
    pub fn movements_stream(&self) -> String {
        format!("{}_MOVEMENTS", self.stream_base())
    }

    /// JetStream stream of change events: `INVENTORY_CHANGES` for the default prefix.
    pub fn changes_stream(&self) -> String {
        format!("{}_CHANGES", self.stream_base())
    }

    /// JetStream stream of channel totals: `INVENTORY_CHANNELS` for the default prefix.
    pub fn channels_stream(&self) -> String {
        format!("{}_CHANNELS", self.stream_base())
    }

    /// JetStream stream of stock alerts: `INVENTORY_ALERTS` for the default prefix.
    pub fn alerts_stream(&self) -> String {
        format!("{}_ALERTS", self.stream_base())
    }

    /// JetStream stream keeping dead letters: `INVENTORY_DEADLETTER` for the default prefix.
    pub fn deadletter_stream(&self) -> String {
        format!("{}_DEADLETTER", self.stream_base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_a_log() {
        assert_eq!(
            redact_url("nats://omni:s3cret@nats.internal:4222"),
            "nats://***@nats.internal:4222"
        );
        assert_eq!(
            redact_url("tls://tok3n@10.0.0.1:4222/x?y=z"),
            "tls://***@10.0.0.1:4222/x?y=z"
        );
        assert_eq!(
            redact_url("nats://a:b@h1:4222,nats://h2:4222,c:p@w@h3"),
            "nats://***@h1:4222,nats://h2:4222,***@h3"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        // An `@` after the authority is not a credential.
        assert_eq!(redact_url("nats://h:1/a@b"), "nats://h:1/a@b");
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c = Connections {
            database_url: "postgres://omni:pgs3cret@db/omnistock".into(),
            redis_url: "redis://:rs3cret@cache:6379/".into(),
            nats_url: "nats://tok3n@nats:4222".into(),
            subject_prefix: "inventory".into(),
            redis_prefix: "omnistock".into(),
            db_max_connections: 1,
            db_acquire_timeout_ms: 1,
            nats_auth: NatsAuth {
                nats_nkey_seed: Some("SUseeds3cret".into()),
                nats_user: Some("omni".into()),
                nats_password: Some("natss3cret".into()),
                ..Default::default()
            },
        };
        let shown = format!("{c:?}");
        for secret in ["pgs3cret", "rs3cret", "tok3n", "seeds3cret", "natss3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn nats_auth_combinations_that_cannot_work_are_refused() {
        let ok = NatsAuth {
            nats_nkey_seed_file: Some("store.seed".into()),
            nats_tls_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let two_methods = NatsAuth {
            nats_creds: Some("a.creds".into()),
            ..ok.clone()
        };
        assert!(two_methods.validate().is_err());
        let no_password = NatsAuth {
            nats_user: Some("omni".into()),
            ..Default::default()
        };
        assert!(no_password.validate().is_err());
        let cert_without_key = NatsAuth {
            nats_tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(cert_without_key.validate().is_err());
        let inbox = |p: &str| NatsAuth {
            nats_inbox_prefix: Some(p.into()),
            ..Default::default()
        };
        assert!(inbox("_INBOX_store_TW001").validate().is_ok());
        assert!(inbox("_INBOX.omni").validate().is_ok());
        for bad in ["", "_INBOX.>", "_INBOX.*", "a..b", "_INBOX.", "in box"] {
            assert!(inbox(bad).validate().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn subjects_follow_the_prefix() {
        let s = Subjects::new("inventory");
        assert_eq!(s.movements("TW001"), "inventory.movements.TW001");
        assert_eq!(s.location_of("inventory.movements.TW001"), Some("TW001"));
        assert_eq!(s.location_of("inventory.movements.TW001.x"), None);
        assert_eq!(s.location_of("inventory.movements."), None);
        assert_eq!(s.location_of("other.movements.TW001"), None);
        assert_eq!(s.deadletter("unknown"), "inventory.deadletter.unknown");
        assert_eq!(s.movements_stream(), "INVENTORY_MOVEMENTS");
        assert_eq!(
            Subjects::new("t-1.inv").deadletter_stream(),
            "T_1_INV_DEADLETTER"
        );
    }
}
