//! Logging: human-readable on a terminal, JSON lines otherwise (for log shippers).
//! The filter comes from `RUST_LOG` (default `info`). Spans are also exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`otel`]).

pub mod otel;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if std::io::stderr().is_terminal() {
        fmt.boxed()
    } else {
        fmt.json().flatten_event(true).boxed()
    };
    let (exporter, otel_error) = match otel::layer() {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(exporter)
        .try_init();
    // Already initialised (tests call this once per app): keep the first subscriber.
    if result.is_ok() {
        if let Some(e) = otel_error {
            tracing::error!(error = %e, "spans are not exported");
        }
    }
}

/// Flushes what the process still has to report (the last spans); call once it has stopped.
pub async fn shutdown() {
    if otel::enabled() {
        let _ = tokio::task::spawn_blocking(otel::shutdown).await;
    }
}
