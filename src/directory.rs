//! Locations in memory: every read of availability needs each location's kind, shipping flag
//! and safety stock, and asking PostgreSQL for them on every call would double its load.
//! Refreshed from PostgreSQL after a change (announced on NATS to every daemon) and periodically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::availability::LocationTerms;
use crate::domain::location::Location;

#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<RwLock<Arc<HashMap<String, Location>>>>,
    last_on_demand: Arc<Mutex<Option<Instant>>>,
}

/// Least time between two refreshes triggered by a read that met an unknown location.
const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(1);

impl Directory {
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let d = Directory::default();
        d.refresh(pool).await?;
        Ok(d)
    }

    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let all = db::locations::list(pool).await?;
        let map = all
            .into_iter()
            .map(|l| (l.location_id.clone(), l))
            .collect();
        if let Ok(mut inner) = self.inner.write() {
            *inner = Arc::new(map);
        }
        Ok(())
    }

    /// A view that knows every location in `ids`, if PostgreSQL does: a location added by
    /// another process (e.g. `omnistock import locations`) is picked up on first sight
    /// instead of at the next periodic refresh.
    pub async fn covering<'a>(
        &self,
        pool: &PgPool,
        mut ids: impl Iterator<Item = &'a str>,
    ) -> Result<Arc<HashMap<String, Location>>, sqlx::Error> {
        let snap = self.snapshot();
        if ids.all(|id| snap.contains_key(id)) {
            return Ok(snap);
        }
        let due = self
            .last_on_demand
            .lock()
            .map(|mut t| {
                let due = t.is_none_or(|t| t.elapsed() >= ON_DEMAND_INTERVAL);
                if due {
                    *t = Some(Instant::now());
                }
                due
            })
            .unwrap_or(true);
        if due {
            self.refresh(pool).await?;
        }
        Ok(self.snapshot())
    }

    /// A consistent view of every location.
    pub fn snapshot(&self) -> Arc<HashMap<String, Location>> {
        self.inner
            .read()
            .map(|i| Arc::clone(&i))
            .unwrap_or_default()
    }

    pub fn terms(map: &HashMap<String, Location>, id: &str) -> Option<LocationTerms> {
        map.get(id).map(|l| LocationTerms {
            kind: l.kind,
            ship_from: l.ship_from,
            safety_stock: l.safety_stock,
        })
    }
}

/// Background job: refreshes the directory when any daemon announces a change, and every
/// 30 seconds in case an announcement was missed.
pub async fn run_refresh_job(
    directory: Directory,
    pool: PgPool,
    nats: async_nats::Client,
    subject: String,
    shutdown: CancellationToken,
) {
    crate::jobs::refresh_on_announce("directory", nats, subject, shutdown, || {
        directory.refresh(&pool)
    })
    .await
}
