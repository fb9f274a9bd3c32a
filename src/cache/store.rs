//! The Redis side of the cache: key layout, the versioned write script, raw reads.
//!
//! One hash per SKU, `<prefix>:level:<sku>`, field per location:
//! `"<version> <on_hand> <reserved> <in_transit>"`.
//! A write never replaces a field holding a newer version (compared inside Redis, in Lua, so
//! concurrent writers from several daemons cannot interleave badly). The field `~complete`
//! marks a hash that holds *every* level of the SKU (it was filled from a PostgreSQL snapshot);
//! a hash without it, e.g. recreated by a single write after Redis lost its data, is a miss.
//!
//! Totals: one hash per SKU, `<prefix>:total:<sku>`, field per channel: `"<version> <available>"`,
//! written by the same versioned script (a total is whole by itself, so there is no completeness
//! marker: a missing field is a miss). Every level write also writes the totals of its SKUs (read
//! from PostgreSQL no earlier than the levels), so whatever vouches for the levels (the
//! watermark) vouches for the totals too.
//!
//! `<prefix>:synced_through` holds the watermark of the cache sync (`cache::sync`): a Redis
//! clock time (ms) such that every level change committed before it is in Redis, and the
//! `run_id` of the Redis process it was proved on. Reads fetch it, with Redis's clock, in the
//! same round trip.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use sqlx::PgPool;

use crate::db::levels::LevelRow;
use crate::db::totals::TotalRow;
use crate::domain::availability::LevelQuantities;

/// Field marking a hash as complete. `~` cannot occur in a location id.
const COMPLETE: &str = "~complete";

/// KEYS: one hash per SKU. ARGV, per key in order: field count n, complete flag (1/0), then n
/// triples (location, version, "on_hand reserved in_transit").
const WRITE_LEVELS: &str = r#"
local a = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[a])
  local complete = ARGV[a + 1]
  a = a + 2
  for i = 1, n do
    local loc, ver, val = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
    a = a + 3
    local cur = redis.call('HGET', KEYS[k], loc)
    local cur_ver = cur and tonumber(string.match(cur, '^(%d+)'))
    if (not cur_ver) or cur_ver < ver then
      redis.call('HSET', KEYS[k], loc, ver .. ' ' .. val)
    end
  end
  if complete == '1' then
    redis.call('HSET', KEYS[k], '~complete', '1')
  end
end
return 1
"#;

/// Keys per script call: bounds the time one call holds Redis.
const KEYS_PER_CALL: usize = 200;

/// Raises the watermark, never lowers it (a slow sync run finishing late must not take back what
/// a later run proved), except that a watermark of another Redis instance is always replaced.
/// Value: `"<ms> <run_id>"`.
const RAISE_WATERMARK: &str = r#"
local cur = redis.call('GET', KEYS[1])
local ms, id = nil, nil
if cur then
  ms, id = string.match(cur, '^(%d+) (%S+)$')
end
if (not ms) or id ~= ARGV[2] or tonumber(ms) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
end
return 1
"#;

/// Levels read from Redis, and how far behind PostgreSQL they may be.
#[derive(Debug)]
pub struct Read {
    /// `None` where the cache does not hold the complete set of a SKU.
    pub levels: Vec<Option<Vec<LevelQuantities>>>,
    /// Age of the sync watermark by Redis's clock; `None` when there is none (Redis lost its
    /// data, or no sync has run yet).
    pub watermark_age: Option<Duration>,
}

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
    raise: Script,
    /// Where a level write reads the totals of its SKUs when it was not handed them (the cache
    /// sync and the rebuild write levels only).
    totals_source: Option<PgPool>,
}

/// Totals read from Redis, and how far behind PostgreSQL they may be.
#[derive(Debug)]
pub struct TotalsRead {
    /// `None` where Redis holds no total for that SKU and channel.
    pub totals: Vec<Option<i64>>,
    pub watermark_age: Option<Duration>,
}

impl RedisStore {
    /// Connects lazily: the daemon starts (and serves from PostgreSQL) while Redis is down.
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(RedisStore {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            script: Script::new(WRITE_LEVELS),
            raise: Script::new(RAISE_WATERMARK),
            totals_source: None,
        })
    }

    /// Lets level writes that are not handed the totals of their SKUs read them from `pool`.
    pub fn read_totals_from(&mut self, pool: PgPool) {
        self.totals_source = Some(pool);
    }

    pub fn total_key(&self, sku: &str) -> String {
        format!("{}:total:{sku}", self.prefix)
    }

    pub fn level_key(&self, sku: &str) -> String {
        format!("{}:level:{sku}", self.prefix)
    }

    fn watermark_key(&self) -> String {
        format!("{}:synced_through", self.prefix)
    }

    /// Redis's clock (ms since the epoch: the one clock the watermark is set and read by) and the `run_id` of the Redis process: a restarted Redis (empty, or
    /// loaded from a snapshot missing later writes) has a new one.
    pub async fn clock(&self) -> Result<(i64, String), RedisError> {
        let mut conn = self.conn.clone();
        let ((secs, micros), info): ((i64, i64), String) = redis::pipe()
            .cmd("TIME")
            .cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| {
                RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "INFO server without run_id",
                ))
            })?;
        Ok((secs * 1000 + micros / 1000, run_id))
    }

    /// The watermark: (ms, run_id of the Redis it was proved on).
    pub async fn watermark(&self) -> Result<Option<(i64, String)>, RedisError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(self.watermark_key())
            .query_async(&mut conn)
            .await?;
        Ok(v.as_deref().and_then(parse_watermark))
    }

    /// Declares every change committed before `ms` (Redis clock) written to the Redis process
    /// `run_id`.
    pub async fn raise_watermark(&self, ms: i64, run_id: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        self.raise
            .key(self.watermark_key())
            .arg(ms)
            .arg(run_id)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Writes levels, grouped by SKU, with the totals of their SKUs (read from PostgreSQL now,
    /// when the store has a source). With `complete`, each SKU's group must be every level of
    /// that SKU (a snapshot), and the hash is marked complete.
    pub async fn write(&self, levels: &[LevelRow], complete: bool) -> Result<(), RedisError> {
        let totals = match &self.totals_source {
            Some(pool) if !levels.is_empty() => {
                let mut skus: Vec<String> = levels.iter().map(|l| l.sku.clone()).collect();
                skus.sort_unstable();
                skus.dedup();
                let rows = crate::db::totals::for_skus(pool, &skus)
                    .await
                    .map_err(|e| {
                        RedisError::from((
                            redis::ErrorKind::Client,
                            "reading totals from PostgreSQL",
                            e.to_string(),
                        ))
                    })?;
                Some((skus, rows))
            }
            _ => None,
        };
        match &totals {
            Some((skus, rows)) => {
                self.write_with_totals(levels, complete, skus, rows, &[])
                    .await
            }
            None => {
                self.write_with_totals(levels, complete, &[], &[], &[])
                    .await
            }
        }
    }

    /// Writes levels (as [`RedisStore::write`]) and totals in one script call per chunk.
    /// `totals` holds every total of the SKUs in `skus` (in SKU order); the `zero_channels` of
    /// each such SKU without a row are written as 0 at version 0, so that a SKU without stock is
    /// a hit too (any real total has a higher version and replaces it).
    pub async fn write_with_totals(
        &self,
        levels: &[LevelRow],
        complete: bool,
        skus: &[String],
        totals: &[TotalRow],
        zero_channels: &[&str],
    ) -> Result<(), RedisError> {
        enum Group<'a> {
            Levels(&'a str, Vec<&'a LevelRow>),
            Totals(&'a str, Vec<(&'a str, i64, i64)>),
        }
        let mut groups: Vec<Group> = Vec::new();
        for l in levels {
            match groups.last_mut() {
                Some(Group::Levels(sku, g)) if *sku == l.sku => g.push(l),
                _ => groups.push(Group::Levels(&l.sku, vec![l])),
            }
        }
        let mut rows = totals.iter().peekable();
        for sku in skus {
            let mut g: Vec<(&str, i64, i64)> = Vec::new();
            while rows.next_if(|t| t.sku < *sku).is_some() {}
            while let Some(t) = rows.next_if(|t| t.sku == *sku) {
                g.push((&t.channel, t.version, t.available));
            }
            for c in zero_channels {
                if !g.iter().any(|(ch, _, _)| ch == c) {
                    g.push((c, 0, 0));
                }
            }
            if !g.is_empty() {
                groups.push(Group::Totals(sku, g));
            }
        }
        let mut conn = self.conn.clone();
        for chunk in groups.chunks(KEYS_PER_CALL) {
            let mut inv = self.script.prepare_invoke();
            for group in chunk {
                match group {
                    Group::Levels(sku, group) => {
                        inv.key(self.level_key(sku));
                        inv.arg(group.len()).arg(if complete { "1" } else { "0" });
                        for l in group {
                            inv.arg(&l.location_id)
                                .arg(l.version)
                                .arg(format!("{} {} {}", l.on_hand, l.reserved, l.in_transit));
                        }
                    }
                    Group::Totals(sku, group) => {
                        inv.key(self.total_key(sku));
                        inv.arg(group.len()).arg("0");
                        for (channel, version, available) in group {
                            inv.arg(*channel).arg(*version).arg(*available);
                        }
                    }
                }
            }
            inv.invoke_async::<i64>(&mut conn).await?;
        }
        Ok(())
    }

    /// One channel's total of each SKU, with the age of the sync watermark, in one round trip.
    pub async fn read_totals(
        &self,
        skus: &[&str],
        channel: &str,
    ) -> Result<TotalsRead, RedisError> {
        let (totals, watermark_age) = self
            .read_behind_watermark(
                skus,
                |pipe, sku| {
                    pipe.hget(self.total_key(sku), channel);
                },
                |v| Ok(parse_total(&v)),
            )
            .await?;
        Ok(TotalsRead {
            totals,
            watermark_age,
        })
    }

    /// Every field of each SKU's totals hash exactly as stored (for reconciliation).
    pub async fn read_totals_raw(
        &self,
        skus: &[&str],
    ) -> Result<Vec<Vec<(String, String)>>, RedisError> {
        self.hgetall_each(skus.iter().map(|s| self.total_key(s)))
            .await
    }

    /// Deletes the totals hashes of these SKUs (reconciliation, for a bogus version).
    pub async fn delete_totals(&self, skus: &[&str]) -> Result<(), RedisError> {
        self.delete_keys(skus, Self::total_key).await
    }

    /// Reads the levels of each SKU; `None` where the cache does not hold the complete set.
    pub async fn read(
        &self,
        skus: &[&str],
    ) -> Result<Vec<Option<Vec<LevelQuantities>>>, RedisError> {
        Ok(self.read_with_watermark(skus).await?.levels)
    }

    /// Reads the levels of each SKU with the age of the sync watermark, in one round trip.
    pub async fn read_with_watermark(&self, skus: &[&str]) -> Result<Read, RedisError> {
        let (levels, watermark_age) = self
            .read_behind_watermark(
                skus,
                |pipe, sku| {
                    pipe.hgetall(self.level_key(sku));
                },
                |v| Ok(parse_hash(parse_value(Some(v))?)),
            )
            .await?;
        Ok(Read {
            levels,
            watermark_age,
        })
    }

    /// One command per SKU between the sync watermark and Redis's clock, in one round trip,
    /// with the watermark's age.
    async fn read_behind_watermark<T>(
        &self,
        skus: &[&str],
        command: impl Fn(&mut redis::Pipeline, &str),
        parse: impl Fn(redis::Value) -> Result<T, RedisError>,
    ) -> Result<(Vec<T>, Option<Duration>), RedisError> {
        // Watermark first, clock last: values read after the watermark hold at least what it
        // vouches for, so a sync run raising it in between cannot make older values look fresh.
        let mut pipe = redis::pipe();
        pipe.get(self.watermark_key());
        for sku in skus {
            command(&mut pipe, sku);
        }
        pipe.cmd("TIME");
        let mut conn = self.conn.clone();
        let mut values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let time: (i64, i64) = parse_value(values.pop())?;
        let now = time.0 * 1000 + time.1 / 1000;
        let mut values = values.into_iter();
        let mark: Option<String> = parse_value(values.next())?;
        let mark = mark.as_deref().and_then(parse_watermark).map(|(ms, _)| ms);
        let parsed = values.map(parse).collect::<Result<Vec<T>, RedisError>>()?;
        let age = mark.map(|m| Duration::from_millis(u64::try_from(now - m).unwrap_or(0)));
        Ok((parsed, age))
    }

    /// Every field of each SKU's hash exactly as stored, the completeness marker included
    /// (see [`RedisStore::is_complete_marker`]): reconciliation must see incomplete and corrupt
    /// entries that [`RedisStore::read`] turns into misses.
    pub async fn read_raw(&self, skus: &[&str]) -> Result<Vec<Vec<(String, String)>>, RedisError> {
        self.hgetall_each(skus.iter().map(|s| self.level_key(s)))
            .await
    }

    /// Deletes the hashes of these SKUs. Unlike a versioned write this also removes a field
    /// holding a bogus version higher than any PostgreSQL has (which no write would replace).
    pub async fn delete(&self, skus: &[&str]) -> Result<(), RedisError> {
        self.delete_keys(skus, Self::level_key).await
    }

    async fn hgetall_each(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<Vec<(String, String)>>, RedisError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.hgetall(key);
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }

    /// `DEL` of each SKU's key, a bounded number per call.
    async fn delete_keys(
        &self,
        skus: &[&str],
        key: fn(&Self, &str) -> String,
    ) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        for chunk in skus.chunks(KEYS_PER_CALL) {
            let keys: Vec<String> = chunk.iter().map(|s| key(self, s)).collect();
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Whether a hash field is the completeness marker rather than a location.
    pub fn is_complete_marker(field: &str) -> bool {
        field == COMPLETE
    }

    /// One stored field value read exactly as [`RedisStore::read`] reads it; `None` when a
    /// reader could not use it.
    pub fn parse_value(location_id: &str, value: &str) -> Option<LevelQuantities> {
        let one = vec![
            (COMPLETE.to_owned(), "1".to_owned()),
            (location_id.to_owned(), value.to_owned()),
        ];
        parse_hash(one)?.pop()
    }
}

fn parse_watermark(v: &str) -> Option<(i64, String)> {
    let (ms, id) = v.split_once(' ')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

fn parse_value<T: redis::FromRedisValue>(v: Option<redis::Value>) -> Result<T, RedisError> {
    redis::from_redis_value(v.unwrap_or(redis::Value::Nil)).map_err(|e| {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected reply",
            e.to_string(),
        ))
    })
}

/// A stored total, `"<version> <available>"`; `None` when absent or unreadable (a miss).
pub fn parse_total(v: &redis::Value) -> Option<i64> {
    let bytes = match v {
        redis::Value::BulkString(b) => b.as_slice(),
        _ => return None,
    };
    let s = std::str::from_utf8(bytes).ok()?;
    let (version, available) = s.split_once(' ')?;
    version.parse::<i64>().ok()?;
    available.parse::<i64>().ok().filter(|a| *a >= 0)
}

fn parse_hash(fields: Vec<(String, String)>) -> Option<Vec<LevelQuantities>> {
    if !fields.iter().any(|(k, _)| k == COMPLETE) {
        return None;
    }
    let mut out = Vec::with_capacity(fields.len());
    for (location_id, value) in fields.into_iter().filter(|(k, _)| k != COMPLETE) {
        let mut parts = value.split(' ').map(str::parse::<i64>);
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (
                Some(Ok(version)),
                Some(Ok(on_hand)),
                Some(Ok(reserved)),
                Some(Ok(in_transit)),
                None,
            ) => out.push(LevelQuantities {
                location_id,
                on_hand,
                reserved,
                in_transit,
                version,
            }),
            // A field we cannot read makes the whole entry untrustworthy: treat as a miss.
            _ => return None,
        }
    }
    out.sort_by(|a, b| a.location_id.cmp(&b.location_id));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_or_corrupt_hashes_are_misses() {
        let f = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(parse_hash(vec![f("TW001", "3 10 2 0")]), None);
        assert_eq!(
            parse_hash(vec![f(COMPLETE, "1"), f("TW001", "3 ten 2 0")]),
            None
        );
        assert_eq!(
            parse_hash(vec![f(COMPLETE, "1"), f("TW001", "3 10 2")]),
            None,
            "old format"
        );
        let levels = parse_hash(vec![
            f("TW002", "1 5 0 0"),
            f(COMPLETE, "1"),
            f("TW001", "3 10 2 4"),
        ])
        .expect("complete");
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0].location_id, "TW001");
        assert_eq!(
            (
                levels[0].version,
                levels[0].on_hand,
                levels[0].reserved,
                levels[0].in_transit
            ),
            (3, 10, 2, 4)
        );
        assert_eq!(parse_hash(vec![f(COMPLETE, "1")]), Some(vec![]));
    }
}
