//! The command line: `serve`, `migrate`, `import`, `cache rebuild`, `check`, `publish`,
//! `nats-config`, and the operator commands of [`crate::ops`] (`deadletter`, `reservations`, `keys`, `healthcheck`).

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::app::{self, Application};
use crate::cache::{RedisStore, StockCache};
use crate::config::{Connections, ServeConfig, Subjects};
use crate::ops::{export, import};
use crate::{db, shutdown};

#[derive(Parser)]
#[command(
    name = "omnistock",
    version,
    about = "Real-time cross-channel inventory sync daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: consume movements, serve the HTTP API.
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Load locations or opening stock from CSV (all rows or none).
    Import {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// Redis cache maintenance.
    Cache {
        #[command(subcommand)]
        what: CacheWhat,
        #[command(flatten)]
        connections: Connections,
    },
    /// Check that every level's on-hand equals what its ledger implies; exit 1 if not.
    Check {
        #[command(flatten)]
        connections: Connections,
    },
    /// Check every level against its ledger and holds, and Redis against PostgreSQL; repair
    /// Redis. Exit 1 if PostgreSQL is inconsistent (never repaired: a human must look) or Redis
    /// differences were left unrepaired (--no-repair).
    Reconcile {
        #[command(flatten)]
        connections: Connections,
        /// Report Redis differences without rewriting them.
        #[arg(long)]
        no_repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write data out (CSV).
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// Ingest load tool: publish many movements, report how fast the daemon commits them.
    Load {
        #[command(flatten)]
        connections: Connections,
        #[command(flatten)]
        args: crate::ops::loadgen::LoadArgs,
    },
    /// A retail day on the network against a running daemon (POS, receipts, transfers,
    /// counts, e-shop checkouts, BOPIS and delivery routes, a flash sale), then a summary, an
    /// oversell audit and `check`; exit 1 if anything was oversold or the check is not clean.
    Simulate {
        #[command(flatten)]
        connections: Connections,
        #[command(flatten)]
        args: crate::ops::simulate::SimulateArgs,
    },
    /// Write the NATS users (nats-server include `users.conf` and NKey seeds): one per location,
    /// which may publish only its own movements, plus the daemon's and the operators'. Re-run
    /// after adding locations: existing seeds are kept.
    NatsConfig {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, env = "OMNISTOCK_SUBJECT_PREFIX", default_value = "inventory")]
        subject_prefix: String,
        /// Folder to write `users.conf`, `daemon.seed`, `ops.seed` and `stores/<id>.seed` into.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Publish one movement to JetStream (for trying things out; POS systems publish directly).
    Publish {
        #[command(flatten)]
        connections: Connections,
        #[arg(long)]
        location: String,
        #[arg(long)]
        sku: String,
        /// receipt, sale, return, transfer_out, transfer_in, damage, adjustment or count.
        #[arg(long)]
        kind: String,
        #[arg(long, allow_negative_numbers = true)]
        quantity: i64,
        /// Defaults to a fresh unique id.
        #[arg(long)]
        event_id: Option<String>,
        /// Defaults to now.
        #[arg(long)]
        occurred_at: Option<DateTime<Utc>>,
        #[arg(long)]
        reservation_id: Option<String>,
    },
    /// Rejected movements: list, show, replay after a fix.
    Deadletter {
        #[command(subcommand)]
        what: crate::ops::deadletter::Command,
    },
    /// Holds: list, release.
    Reservations {
        #[command(subcommand)]
        what: crate::ops::reservations_cli::Command,
    },
    /// API keys: generate.
    Keys {
        #[command(subcommand)]
        what: crate::ops::keys::Command,
    },
    /// GET /healthz on the daemon's address; exit 0 when it answers 200 (a container
    /// HEALTHCHECK: the image has no shell or curl).
    Healthcheck {
        #[arg(long, env = "OMNISTOCK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 3)]
        timeout_seconds: u64,
    },
    /// Print the OpenAPI document of the HTTP API (as served at /openapi.json).
    Openapi,
    /// The parts of `make bench` written in Rust (scripts/bench.sh calls them).
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        what: crate::ops::bench::Command,
    },
}

#[derive(Subcommand)]
pub enum ImportWhat {
    /// Columns: location_id,name,kind,lat,lon[,pickup,ship_from,safety_stock,daily_order_capacity,timezone]
    Locations {
        file: PathBuf,
        #[command(flatten)]
        connections: Connections,
    },
    /// Columns: location_id,sku,on_hand[,counted_at]: recorded as count movements.
    Stock {
        file: PathBuf,
        #[command(flatten)]
        connections: Connections,
        /// When the counts were taken, for rows without `counted_at` (default: now).
        #[arg(long)]
        counted_at: Option<DateTime<Utc>>,
        /// No progress bar (it is also hidden when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
pub enum CacheWhat {
    /// Rewrite every level in Redis from PostgreSQL.
    Rebuild,
}

#[derive(Subcommand)]
pub enum ExportWhat {
    /// Every level: location_id,sku,on_hand,reserved,available,version,last_movement_at,last_count_at
    Stock {
        #[command(flatten)]
        connections: Connections,
        /// Write here (replaced only once complete) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Deadletter { what } => crate::ops::deadletter::run(what).await,
        Command::Reservations { what } => crate::ops::reservations_cli::run(what).await,
        Command::Keys { what } => crate::ops::keys::run(what),
        Command::Healthcheck {
            http_addr,
            timeout_seconds,
        } => {
            let timeout = std::time::Duration::from_secs(timeout_seconds.max(1));
            crate::ops::healthcheck::run(http_addr, timeout).await
        }
        Command::Bench { what } => crate::ops::bench::run(what).await,
        Command::Openapi => {
            print!("{}", crate::http::openapi::json());
            Ok(())
        }
        Command::Serve(config) => {
            let app = Application::build(*config).await?;
            app.run_until_stopped(shutdown::signal()).await
        }
        Command::Migrate { database_url } => {
            let pool = db::connect(&database_url, 2)
                .await
                .context("connecting to PostgreSQL")?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Import {
            what: ImportWhat::Locations { file, connections },
        } => {
            let pool = migrated_pool(&connections).await?;
            let n = import::locations(&pool, &file).await?;
            println!("imported {n} locations from {}", file.display());
            announce_locations_changed(&connections).await;
            Ok(())
        }
        Command::Import {
            what:
                ImportWhat::Stock {
                    file,
                    connections,
                    counted_at,
                    quiet,
                },
        } => {
            let pool = migrated_pool(&connections).await?;
            let cache = StockCache::new(
                RedisStore::new(&connections.redis_url, &connections.redis_prefix)?,
                pool.clone(),
            );
            let r = import::stock_with(
                &pool,
                Some(&cache),
                &file,
                counted_at.unwrap_or_else(Utc::now),
                import::Options { quiet },
            )
            .await?;
            println!(
                "imported {} stock rows from {}: {} counts recorded, {} already imported",
                r.rows,
                file.display(),
                r.recorded,
                r.already_imported
            );
            if r.recorded > 0 && r.cached_skus.is_none() && r.recorded as u64 > import::EVENT_LIMIT
            {
                eprintln!("Redis was not filled after the import: run `omnistock cache rebuild`");
            }
            Ok(())
        }
        Command::Cache {
            what: CacheWhat::Rebuild,
            connections,
        } => {
            let pool = app::connect_db(&connections).await?;
            let cache = StockCache::new(
                RedisStore::new(&connections.redis_url, &connections.redis_prefix)?,
                pool,
            );
            let n = crate::cache::sync::rebuild_and_vouch(&cache)
                .await
                .context("rebuilding the cache")?;
            println!("cache rebuilt: {n} SKUs written");
            Ok(())
        }
        Command::Check { connections } => {
            let pool = app::connect_db(&connections).await?;
            let totals = db::totals::mismatches(&pool, 20).await?;
            for m in &totals {
                println!(
                    "{:?} channel {}: total {} but its levels sum to {} (`omnistock reconcile` repairs it)",
                    m.sku, m.channel, m.stored, m.summed
                );
            }
            let bad = db::invariants::ledger_mismatches(&pool, 20).await?;
            if bad.is_empty() && totals.is_empty() {
                println!("ok: every level equals what its ledger implies");
                return Ok(());
            }
            for m in &bad {
                println!(
                    "{} {:?}: on_hand {} but the ledger implies {}",
                    m.location_id, m.sku, m.on_hand, m.implied
                );
            }
            anyhow::bail!(
                "{} (or more) levels disagree with the ledger, {} (or more) totals with their levels",
                bad.len(),
                totals.len()
            )
        }
        Command::Reconcile {
            connections,
            no_repair,
            json,
        } => reconcile(&connections, !no_repair, json).await,
        Command::Export {
            what:
                ExportWhat::Stock {
                    connections,
                    output,
                },
        } => {
            let pool = app::connect_db(&connections).await?;
            match output {
                Some(path) => {
                    let n = export::stock_to_file(&pool, &path).await?;
                    eprintln!("exported {n} levels to {}", path.display());
                }
                None => {
                    export::stock(&pool, std::io::stdout()).await?;
                }
            }
            Ok(())
        }
        Command::Load { connections, args } => {
            let pool = app::connect_db(&connections).await?;
            let js = async_nats::jetstream::new(app::connect_nats(&connections).await?);
            let report = crate::ops::loadgen::run(
                &pool,
                &js,
                &Subjects::new(&connections.subject_prefix),
                &args,
            )
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Simulate { connections, args } => {
            let summary = crate::ops::simulate::run(&connections, &args).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("{summary}");
            }
            anyhow::ensure!(
                summary.passed,
                "the simulated day failed: {} oversell(s), check {}, {} of {} accepted movements in the ledger",
                summary.oversells,
                if summary.check.clean { "clean" } else { "not clean" },
                summary.movements.in_ledger,
                summary.movements.accepted
            );
            Ok(())
        }
        Command::NatsConfig {
            database_url,
            subject_prefix,
            out,
        } => {
            let pool = db::connect(&database_url, 2)
                .await
                .context("connecting to PostgreSQL (DATABASE_URL)")?;
            let ids: Vec<String> = db::locations::list(&pool)
                .await
                .context("reading the locations")?
                .into_iter()
                .map(|l| l.location_id)
                .collect();
            let report =
                crate::ops::nats_config::generate(&out, &Subjects::new(&subject_prefix), &ids)?;
            print!("{report}");
            println!(
                "wrote {} ({} store users); include it from the nats-server config and reload",
                out.join("users.conf").display(),
                ids.len()
            );
            Ok(())
        }
        Command::Publish {
            connections,
            location,
            sku,
            kind,
            quantity,
            event_id,
            occurred_at,
            reservation_id,
        } => {
            let nats = app::connect_nats(&connections).await?;
            let js = async_nats::jetstream::new(nats);
            let subjects = Subjects::new(&connections.subject_prefix);
            let body = serde_json::json!({
                "event_id": event_id.unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4())),
                "location_id": location,
                "sku": sku,
                "kind": kind,
                "quantity": quantity,
                "occurred_at": occurred_at.unwrap_or_else(Utc::now),
                "source": "cli",
                "reservation_id": reservation_id,
            });
            let ack = js
                .publish(
                    subjects.movements(&location),
                    serde_json::to_vec(&body)?.into(),
                )
                .await?
                .await
                .context("JetStream did not store the movement")?;
            println!(
                "published {} (stream {}, sequence {})",
                body["event_id"], ack.stream, ack.sequence
            );
            Ok(())
        }
    }
}

/// `omnistock reconcile`: prints the report; fails (exit 1) when PostgreSQL is inconsistent or
/// Redis differences were left as they were.
async fn reconcile(c: &Connections, repair: bool, json: bool) -> anyhow::Result<()> {
    let pool = app::connect_db(c).await?;
    let store = RedisStore::new(&c.redis_url, &c.redis_prefix).context("REDIS_URL")?;
    let report = crate::ops::reconcile::run(&pool, &store, repair).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !report.postgres_consistent() {
        anyhow::bail!(
            "PostgreSQL is inconsistent: {} level(s) disagree with the ledger, {} with their holds",
            report.ledger.count,
            report.reserved.count
        );
    }
    if report.redis_unrepaired() > 0 {
        anyhow::bail!(
            "{} Redis entries differ from PostgreSQL",
            report.redis_unrepaired()
        );
    }
    if report.totals_unrepaired() > 0 {
        anyhow::bail!(
            "{} totals differ from their levels or from PostgreSQL",
            report.totals_unrepaired()
        );
    }
    Ok(())
}

/// Tells running daemons to reload locations now rather than at their next periodic refresh.
/// Best effort: with NATS unreachable they still catch up within 30 seconds.
async fn announce_locations_changed(c: &Connections) {
    let announce = async {
        let nats = app::connect_nats(c).await?;
        nats.publish(
            Subjects::new(&c.subject_prefix).locations_changed(),
            "changed".into(),
        )
        .await?;
        nats.flush().await?;
        anyhow::Ok(())
    };
    if let Err(e) = announce.await {
        tracing::warn!(error = %e, "could not tell running daemons about the new locations");
    }
}

async fn migrated_pool(c: &Connections) -> anyhow::Result<sqlx::PgPool> {
    let pool = app::connect_db(c).await?;
    db::migrate(&pool).await.context("applying migrations")?;
    Ok(pool)
}
