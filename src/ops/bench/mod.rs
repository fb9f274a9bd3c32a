//! `omnistock bench …` (hidden): the pieces of `make bench` (scripts/bench.sh) that are easier
//! in Rust than in shell: the bare-axum and JetStream ceilings, the publish→visible probe, and the
//! writer of docs/performance.md from the run's results JSON.

pub mod ceiling;
pub mod jetstream;
pub mod report;
pub mod results;
pub mod svg;
pub mod visible;

use std::path::PathBuf;

use crate::config::Connections;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Serve a bare axum `/healthz` (the same JSON as the daemon's) until SIGTERM: the HTTP
    /// ceiling that the API's figures are divided by.
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:58090")]
        addr: std::net::SocketAddr,
    },
    /// Publish→visible over HTTP under a background load of movements; prints one JSON line.
    Visible {
        #[command(flatten)]
        connections: Box<Connections>,
        #[command(flatten)]
        args: visible::Args,
    },
    /// Publish to a scratch JetStream stream as the outbox relay does; prints one JSON line.
    Jetstream {
        #[command(flatten)]
        connections: Box<Connections>,
        #[command(flatten)]
        args: jetstream::Args,
    },
    /// Write docs/performance.md and its SVG plot from a results JSON of scripts/bench.sh.
    Report {
        results: PathBuf,
        #[arg(long, default_value = "docs/performance.md")]
        out: PathBuf,
        #[arg(long, default_value = "docs/performance.svg")]
        svg: PathBuf,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Ceiling { addr } => ceiling::serve(addr).await,
        Command::Visible { connections, args } => {
            let r = visible::run(&connections, &args).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Jetstream { connections, args } => {
            let r = jetstream::run(&connections, &args).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Report { results, out, svg } => {
            let text = std::fs::read_to_string(&results)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", results.display()))?;
            let r: results::Results = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("parsing {}: {e}", results.display()))?;
            let svg_name = svg
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "performance.svg".into());
            std::fs::write(&out, report::markdown(&r, &svg_name))?;
            std::fs::write(&svg, svg::plot(&r))?;
            eprintln!("wrote {} and {}", out.display(), svg.display());
            Ok(())
        }
    }
}
