//! Whether PostgreSQL is reachable right now, known without waiting for a request to find
//! out: one connection of its own waits on its socket (a server that stops or restarts
//! closes it at once) and pings when quiet (a server that hangs misses the ping).
//!
//! The pool cannot tell "busy" from "down": its acquire timeout covers both the queue for a
//! connection and the attempts to open one. Knowing "down" apart lets a request fail fast
//! then, and still queue patiently under load.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::Executor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A quiet connection is pinged this often.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A ping or a connection attempt slower than this counts as PostgreSQL being down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two connection attempts while PostgreSQL is down.
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct DbHealth {
    up: watch::Sender<bool>,
}

impl Default for DbHealth {
    /// Up until the watch finds otherwise: the daemon starts only after reaching PostgreSQL.
    fn default() -> Self {
        DbHealth {
            up: watch::Sender::new(true),
        }
    }
}

impl DbHealth {
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Completes once PostgreSQL is (or is already) known to be down.
    pub async fn down(&self) {
        let mut rx = self.up.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|up| !*up).await;
    }

    fn set(&self, up: bool) {
        if self.up.send_replace(up) != up {
            if up {
                tracing::info!("PostgreSQL is reachable again");
            } else {
                tracing::warn!("PostgreSQL is unreachable; requests needing it fail fast");
            }
        }
    }
}

/// Background job: keeps `health` current until `shutdown`.
pub async fn watch(options: PgConnectOptions, health: DbHealth, shutdown: CancellationToken) {
    // A pool of one, only so the listener can be made; it never reconnects by itself.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(PROBE_TIMEOUT)
        .connect_lazy_with(options);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = watch_loop(&pool, &health) => {}
    }
}

async fn watch_loop(pool: &sqlx::PgPool, health: &DbHealth) {
    loop {
        if let Ok(Ok(mut listener)) =
            tokio::time::timeout(PROBE_TIMEOUT, PgListener::connect_with(pool)).await
        {
            listener.eager_reconnect(false);
            health.set(true);
            crate::jobs::succeeded();
            while alive(&mut listener).await {
                crate::jobs::succeeded();
            }
        }
        health.set(false);
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Waits up to [`PING_EVERY`] on the connection, then pings it if it was quiet; `false`
/// once it is lost or too slow.
async fn alive(listener: &mut PgListener) -> bool {
    match tokio::time::timeout(PING_EVERY, listener.try_recv()).await {
        // A notification or notice: the connection is there.
        Ok(Ok(Some(_))) => true,
        // Closed (`None`) or failed.
        Ok(_) => false,
        Err(_quiet) => matches!(
            tokio::time::timeout(PROBE_TIMEOUT, listener.execute("SELECT 1")).await,
            Ok(Ok(_))
        ),
    }
}
