//! Totals: each (SKU, channel) total in PostgreSQL against the sum of its levels, and each total
//! in Redis against PostgreSQL's.
//!
//! A total is derived data (the triggers keep it), so a wrong one is repaired: recomputed from
//! the levels (holding level writers off for the moment it takes), then rewritten to Redis.
//! A total in Redis is judged like a level, by version and in two looks: newer than PostgreSQL
//! read after it, or equal in version and not in value, is wrong; older than PostgreSQL read
//! before the first look (after the pause) is stale; anything between is a write in flight.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;

use super::{COUNT_CAP, EXAMPLES, SETTLE};
use crate::cache::RedisStore;
use crate::db;
use crate::db::totals::{TotalMismatch, TotalRow};

/// Totals per page of the Redis comparison.
const TOTALS_PAGE: i64 = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TotalsFindings {
    /// PostgreSQL totals that differ from the sum of their levels.
    pub mismatched: u64,
    pub capped: bool,
    pub examples: Vec<TotalMismatch>,
    /// Of those, recomputed from the levels.
    pub repaired: u64,
    /// Totals compared between Redis and PostgreSQL.
    pub redis_checked: u64,
    /// Redis totals older than PostgreSQL's.
    pub redis_stale: u64,
    /// Redis totals newer than PostgreSQL's, of another value at the same version, or unreadable.
    pub redis_mismatched: u64,
    /// SKUs whose Redis totals were rewritten from PostgreSQL.
    pub redis_repaired: u64,
    pub redis_examples: Vec<RedisTotalDifference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisTotalDifference {
    pub sku: String,
    pub channel: String,
    /// PostgreSQL's `(version, available)`.
    pub postgres: (i64, i64),
    /// The Redis field as stored.
    pub redis: String,
}

impl TotalsFindings {
    pub fn is_clean(&self) -> bool {
        self.mismatched == 0 && self.redis_stale == 0 && self.redis_mismatched == 0
    }

    pub fn unrepaired(&self) -> u64 {
        let redis_bad =
            (self.redis_stale + self.redis_mismatched).saturating_sub(self.redis_repaired);
        self.mismatched.saturating_sub(self.repaired) + redis_bad
    }

    pub fn display(&self, repair: bool) -> Display<'_> {
        Display { t: self, repair }
    }
}

pub async fn check(
    pool: &PgPool,
    store: &RedisStore,
    repair: bool,
) -> anyhow::Result<TotalsFindings> {
    let mut found = TotalsFindings::default();
    let wrong = db::totals::mismatches(pool, COUNT_CAP)
        .await
        .context("checking totals against the sum of their levels")?;
    found.mismatched = wrong.len() as u64;
    found.capped = wrong.len() as i64 >= COUNT_CAP;
    found.examples = wrong.iter().take(EXAMPLES).cloned().collect();
    if repair && !wrong.is_empty() {
        let mut skus: Vec<String> = wrong.iter().map(|m| m.sku.clone()).collect();
        skus.dedup();
        let mut tx = pool.begin().await?;
        db::totals::recompute(&mut tx, &skus)
            .await
            .context("recomputing totals from their levels")?;
        tx.commit().await?;
        // Redis follows, from the repaired rows.
        rewrite(pool, store, &skus).await?;
        found.repaired = found.mismatched;
    }
    compare_redis(pool, store, repair, &mut found).await?;
    Ok(found)
}

async fn compare_redis(
    pool: &PgPool,
    store: &RedisStore,
    repair: bool,
    found: &mut TotalsFindings,
) -> anyhow::Result<()> {
    let mut after: Option<(String, String)> = None;
    loop {
        let read_at = Instant::now();
        let rows = db::totals::page(
            pool,
            after.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
            TOTALS_PAGE,
        )
        .await
        .context("reading totals from PostgreSQL")?;
        let Some(last) = rows.last() else { break };
        after = Some((last.sku.clone(), last.channel.clone()));
        found.redis_checked += rows.len() as u64;
        let before = by_sku(rows);
        let skus: Vec<&str> = before.keys().map(String::as_str).collect();
        let hashes = store
            .read_totals_raw(&skus)
            .await
            .context("reading totals from Redis")?;
        let suspects: Vec<&str> = skus
            .iter()
            .zip(&hashes)
            .filter(|(sku, hash)| judge(sku, &before[**sku], &before[**sku], hash).is_some())
            .map(|(s, _)| *s)
            .collect();
        if suspects.is_empty() {
            continue;
        }
        // The second look: Redis first, then PostgreSQL.
        tokio::time::sleep(SETTLE.saturating_sub(read_at.elapsed())).await;
        let hashes = store
            .read_totals_raw(&suspects)
            .await
            .context("reading totals from Redis")?;
        let owned: Vec<String> = suspects.iter().map(|s| s.to_string()).collect();
        let now = by_sku(
            db::totals::for_skus(pool, &owned)
                .await
                .context("reading totals from PostgreSQL")?,
        );
        let mut differ = Vec::new();
        for (sku, hash) in suspects.iter().zip(&hashes) {
            let empty = HashMap::new();
            let now = now.get(*sku).unwrap_or(&empty);
            if let Some((stale, d)) = judge(sku, &before[*sku], now, hash) {
                if stale {
                    found.redis_stale += 1;
                } else {
                    found.redis_mismatched += 1;
                }
                if found.redis_examples.len() < EXAMPLES {
                    found.redis_examples.push(d);
                }
                differ.push(sku.to_string());
            }
        }
        if repair && !differ.is_empty() {
            rewrite(pool, store, &differ).await?;
            found.redis_repaired += differ.len() as u64;
        }
    }
    Ok(())
}

/// Per SKU, per channel: (version, available).
fn by_sku(rows: Vec<TotalRow>) -> HashMap<String, HashMap<String, (i64, i64)>> {
    let mut out: HashMap<String, HashMap<String, (i64, i64)>> = HashMap::new();
    for r in rows {
        out.entry(r.sku)
            .or_default()
            .insert(r.channel, (r.version, r.available));
    }
    out
}

/// The first difference of one SKU's Redis totals, and whether it is (only) stale. `before`
/// was read before the hash, `after` after it; at the first look they are the same read.
fn judge(
    sku: &str,
    before: &HashMap<String, (i64, i64)>,
    after: &HashMap<String, (i64, i64)>,
    hash: &[(String, String)],
) -> Option<(bool, RedisTotalDifference)> {
    let mut stale = None;
    for (channel, value) in hash {
        let diff = |pg: (i64, i64)| RedisTotalDifference {
            sku: sku.to_owned(),
            channel: channel.clone(),
            postgres: pg,
            redis: value.clone(),
        };
        let pg = after.get(channel).copied().unwrap_or((0, 0));
        let parsed = value
            .split_once(' ')
            .and_then(|(v, a)| Some((v.parse::<i64>().ok()?, a.parse::<i64>().ok()?)));
        let Some((version, available)) = parsed else {
            return Some((false, diff(pg)));
        };
        if version > pg.0 || (version == pg.0 && available != pg.1) {
            return Some((false, diff(pg)));
        }
        let was = before.get(channel).copied().unwrap_or((0, 0));
        if version < was.0 {
            stale.get_or_insert_with(|| diff(was));
        }
    }
    stale.map(|d| (true, d))
}

/// Deletes the SKUs' totals in Redis, then writes them from PostgreSQL (read after the delete,
/// so at least as new as what Redis held; later writes are newer still and win by version).
async fn rewrite(pool: &PgPool, store: &RedisStore, skus: &[String]) -> anyhow::Result<()> {
    let refs: Vec<&str> = skus.iter().map(String::as_str).collect();
    store
        .delete_totals(&refs)
        .await
        .context("deleting Redis totals to repair")?;
    let rows = db::totals::for_skus(pool, skus)
        .await
        .context("reading totals from PostgreSQL")?;
    store
        .write_with_totals(&[], false, skus, &rows, &[])
        .await
        .context("rewriting Redis totals")?;
    Ok(())
}

pub struct Display<'a> {
    t: &'a TotalsFindings,
    repair: bool,
}

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.t;
        if t.mismatched == 0 {
            writeln!(
                f,
                "totals:   ok, every channel total equals the sum of its levels"
            )?;
        } else {
            writeln!(
                f,
                "totals:   {}{} total(s) differ from the sum of their levels; {}",
                if t.capped { "at least " } else { "" },
                t.mismatched,
                if self.repair {
                    format!("{} recomputed from the levels", t.repaired)
                } else {
                    "not repaired (--no-repair)".to_owned()
                }
            )?;
            for m in &t.examples {
                writeln!(
                    f,
                    "  {:?} channel {}: stored {}, the levels sum to {}",
                    m.sku, m.channel, m.stored, m.summed
                )?;
            }
        }
        writeln!(
            f,
            "redis totals: {} checked: {} stale, {} mismatched{}",
            t.redis_checked,
            t.redis_stale,
            t.redis_mismatched,
            match (t.redis_stale + t.redis_mismatched, self.repair) {
                (0, _) => "; ok".to_owned(),
                (_, true) => format!("; {} SKU(s) rewritten from PostgreSQL", t.redis_repaired),
                (_, false) => "; not repaired (--no-repair)".to_owned(),
            }
        )?;
        for d in &t.redis_examples {
            writeln!(
                f,
                "  {:?} channel {}: PostgreSQL v{} {}, Redis {:?}",
                d.sku, d.channel, d.postgres.0, d.postgres.1, d.redis
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(entries: &[(&str, i64, i64)]) -> HashMap<String, (i64, i64)> {
        entries
            .iter()
            .map(|(c, v, a)| (c.to_string(), (*v, *a)))
            .collect()
    }

    fn hash(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn totals_are_judged_by_version_and_value() {
        let now = pg(&[("all", 3, 10)]);
        assert_eq!(judge("S", &now, &now, &hash(&[("all", "3 10")])), None);
        // A zero filled at version 0 for a total without a row is right.
        assert_eq!(judge("S", &now, &now, &hash(&[("online", "0 0")])), None);
        for bad in ["3 11", "4 10", "x", "3"] {
            let got = judge("S", &now, &now, &hash(&[("all", bad)]));
            assert!(matches!(got, Some((false, _))), "{bad}");
        }
        assert!(matches!(
            judge("S", &now, &now, &hash(&[("all", "2 12")])),
            Some((true, _))
        ));
        // Between the two reads: a write in flight.
        let later = pg(&[("all", 5, 7)]);
        assert_eq!(judge("S", &now, &later, &hash(&[("all", "4 8")])), None);
    }
}
