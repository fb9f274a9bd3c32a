//! Channels in memory: every availability read with a channel needs its definition and the
//! SKU's override, and asking PostgreSQL for them would make a channel read slower than an
//! `all` read. Refreshed after a change (announced on NATS to every daemon) and periodically,
//! like the location directory.
//!
//! Holds and routes do not trust this copy: they read the channel and its overrides inside
//! their transaction (`HoldPool::load`), so a hold is checked against the current terms.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::availability::LocationTerms;
use crate::domain::channel::{pool_available, ChannelDef, SkuOverride, Terms};
use crate::domain::location::LocationKind;

/// Every channel and override, as of the last refresh.
#[derive(Debug, Default)]
pub struct ChannelSet {
    defs: HashMap<String, ChannelDef>,
    /// Per channel, per SKU.
    overrides: HashMap<String, HashMap<String, SkuOverride>>,
}

impl ChannelSet {
    pub fn get(&self, channel: &str) -> Option<&ChannelDef> {
        self.defs.get(channel)
    }

    pub fn terms(&self, def: &ChannelDef, sku: &str) -> Terms {
        def.terms(self.overrides.get(&def.channel).and_then(|o| o.get(sku)))
    }
}

#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<RwLock<Arc<ChannelSet>>>,
}

impl Channels {
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let c = Channels::default();
        c.refresh(pool).await?;
        Ok(c)
    }

    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let defs = db::channels::list(pool).await?;
        let rows = db::channels::all_overrides(pool).await?;
        let mut overrides: HashMap<String, HashMap<String, SkuOverride>> = HashMap::new();
        for r in rows {
            let terms = r.terms();
            overrides.entry(r.channel).or_default().insert(r.sku, terms);
        }
        let set = ChannelSet {
            defs: defs.into_iter().map(|d| (d.channel.clone(), d)).collect(),
            overrides,
        };
        if let Ok(mut inner) = self.inner.write() {
            *inner = Arc::new(set);
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Arc<ChannelSet> {
        self.inner
            .read()
            .map(|i| Arc::clone(&i))
            .unwrap_or_default()
    }
}

/// Whether a channel sells from a location with these terms.
pub fn includes(def: &ChannelDef, location_id: &str, t: &LocationTerms) -> bool {
    def.includes(location_id, t.kind, t.ship_from)
}

/// A channel's definition and its overrides for some SKUs, read inside a hold's or a route's
/// transaction, so it is checked against the current terms.
#[derive(Debug, Clone)]
pub struct ChannelPool {
    def: Option<ChannelDef>,
    overrides: HashMap<String, SkuOverride>,
}

impl ChannelPool {
    pub async fn load(
        conn: &mut PgConnection,
        channel: &str,
        skus: &[&str],
    ) -> Result<Self, sqlx::Error> {
        let def = db::channels::get(&mut *conn, channel).await?;
        let overrides = if def.is_some() {
            db::channels::overrides_for(&mut *conn, channel, skus).await?
        } else {
            HashMap::new()
        };
        Ok(ChannelPool { def, overrides })
    }

    /// Whether the channel sells from this location (a channel that no longer exists sells
    /// from none).
    pub fn includes(&self, location_id: &str, kind: LocationKind, ship_from: bool) -> bool {
        self.def
            .as_ref()
            .is_some_and(|d| d.includes(location_id, kind, ship_from))
    }

    /// The channel's share of a location's `available` of `sku`.
    pub fn available(&self, sku: &str, available: i64) -> i64 {
        match &self.def {
            Some(d) => pool_available(available, d.terms(self.overrides.get(sku))),
            None => 0,
        }
    }
}

/// A channel's pool at the one location of a hold.
#[derive(Debug, Clone)]
pub struct HoldPool {
    pool: ChannelPool,
    /// False when the channel does not sell from the location: its available there is 0.
    in_pool: bool,
}

impl HoldPool {
    pub async fn load(
        conn: &mut PgConnection,
        channel: &str,
        location_id: &str,
        skus: &[&str],
    ) -> Result<Self, sqlx::Error> {
        let pool = ChannelPool::load(conn, channel, skus).await?;
        let in_pool = db::locations::get(&mut *conn, location_id)
            .await?
            .is_some_and(|l| pool.includes(location_id, l.kind, l.ship_from));
        Ok(HoldPool { pool, in_pool })
    }

    pub fn available(&self, sku: &str, available: i64) -> i64 {
        if self.in_pool {
            self.pool.available(sku, available)
        } else {
            0
        }
    }
}

/// Background job: refreshes the channels when any daemon announces a change, and every
/// 30 seconds in case an announcement was missed.
pub async fn run_refresh_job(
    channels: Channels,
    pool: PgPool,
    nats: async_nats::Client,
    subject: String,
    shutdown: CancellationToken,
) {
    crate::jobs::refresh_on_announce("channels", nats, subject, shutdown, || {
        channels.refresh(&pool)
    })
    .await
}
