//! The HTTP ceiling: axum with nothing behind it, answering what the daemon's `/healthz` does.
//! Run on the same machine in the same run as the API's figures, it gives the ratio that does
//! not drift with the machine.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

#[derive(Serialize)]
struct Alive {
    status: &'static str,
}

pub async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().route("/healthz", get(|| async { Json(Alive { status: "ok" }) }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench ceiling: bare axum /healthz on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown::signal())
        .await?;
    Ok(())
}
