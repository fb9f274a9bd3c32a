//! `omnistock reservations list|release`: holds for an operator, without SQL. Listing reads
//! what `GET /v1/reservations` reads; releasing runs [`reservations::release`], the very path
//! of `DELETE /v1/reservations/{id}` (levels, change events and cache after the commit).

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::app;
use crate::cache::{RedisStore, StockCache};
use crate::config::Connections;
use crate::domain::reservation::Status;
use crate::domain::reservation_page::MAX_LIMIT;
use crate::holds::reservations::{self, ListFilter, ReservationView};

#[derive(Subcommand)]
pub enum Command {
    /// List reservations, newest first.
    List {
        #[command(flatten)]
        connections: Connections,
        #[command(flatten)]
        filter: Filter,
        /// Print JSON (an array of reservations, as `GET /v1/reservations/{id}` shows one).
        #[arg(long)]
        json: bool,
    },
    /// Release what a reservation still holds (as `DELETE /v1/reservations/{id}` does). Exit
    /// 1 when it is unknown or no longer holds anything.
    Release {
        #[command(flatten)]
        connections: Connections,
        reservation_id: String,
    },
}

#[derive(Args)]
pub struct Filter {
    /// Only reservations with a line of this SKU.
    #[arg(long)]
    pub sku: Option<String>,
    #[arg(long)]
    pub location: Option<String>,
    /// held, confirmed, fulfilled, released or expired.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<Status>,
    #[arg(long)]
    pub order_id: Option<String>,
    /// Most reservations listed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=MAX_LIMIT))]
    pub limit: i64,
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s)
        .ok_or_else(|| "must be held, confirmed, fulfilled, released or expired".to_owned())
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::List {
            connections,
            filter,
            json,
        } => {
            let pool = app::connect_db(&connections).await?;
            let f = ListFilter {
                status: filter.status,
                location_id: filter.location.as_deref(),
                sku: filter.sku.as_deref(),
                order_id: filter.order_id.as_deref(),
                after: None,
                limit: filter.limit,
            };
            let (views, more) = reservations::list(&pool, &f).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", table(&views));
                if more.is_some() {
                    println!("(more match: raise --limit or narrow the filters)");
                }
            }
            Ok(())
        }
        Command::Release {
            connections,
            reservation_id,
        } => {
            let pool = app::connect_db(&connections).await?;
            let before = reservations::view(&pool, &reservation_id)
                .await?
                .with_context(|| format!("no reservation {reservation_id:?}"))?;
            if !before.status.is_live() {
                anyhow::bail!(
                    "reservation {reservation_id:?} is {}: it holds nothing, nothing released",
                    before.status.as_str()
                );
            }
            let store = RedisStore::new(&connections.redis_url, &connections.redis_prefix)
                .context("REDIS_URL")?;
            let cache = StockCache::new(store, pool.clone());
            match reservations::release(&pool, &cache, &reservation_id).await? {
                reservations::Released::NotFound => {
                    anyhow::bail!("no reservation {reservation_id:?}")
                }
                reservations::Released::Done(after) => {
                    let held: i64 = before.lines.iter().map(|l| l.held).sum();
                    println!(
                        "released {reservation_id} at {}: {held} units given back, status now {}",
                        after.location_id,
                        after.status.as_str()
                    );
                    for l in &before.lines {
                        println!("  {} {}", l.sku, l.held);
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Fixed columns, lines as `SKU×quantity(held)`.
pub fn table(views: &[ReservationView]) -> String {
    let mut out = format!(
        "{:<36} {:<9} {:<12} {:<20} {:<20} LINES\n",
        "RESERVATION", "STATUS", "LOCATION", "ORDER", "EXPIRES"
    );
    for v in views {
        let lines: Vec<String> = v
            .lines
            .iter()
            .map(|l| format!("{}×{}({} held)", l.sku, l.quantity, l.held))
            .collect();
        out.push_str(&format!(
            "{:<36} {:<9} {:<12} {:<20} {:<20} {}\n",
            v.reservation_id,
            v.status.as_str(),
            v.location_id,
            v.order_id.as_deref().unwrap_or("-"),
            v.expires_at
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "-".into()),
            lines.join(", ")
        ));
    }
    if views.is_empty() {
        out.push_str("(no reservations match)\n");
    }
    out
}
