//! `at=` on availability reads: available-to-promise at a time, from PostgreSQL (the cache
//! knows nothing of supply). Kept apart from the read handlers so they stay small.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use super::error::ApiError;
use crate::cache::{quantities, Answer, Source};
use crate::db;
use crate::domain::availability::{network_total, SkuAvailability};
use crate::domain::supply as rules;

#[derive(Deserialize)]
pub struct AtQuery {
    pub at: Option<String>,
}

/// `at` as an RFC 3339 time; a 422 naming `at` otherwise.
pub fn parse(at: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    at.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| ApiError::field("at", format!("`at` must be an RFC 3339 time: {e}")))
    })
    .transpose()
}

/// The levels of some SKUs as PostgreSQL has them now, shaped as a cache answer.
pub async fn levels(pool: &PgPool, skus: &[&str]) -> Result<Answer, ApiError> {
    let owned: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let rows = db::levels::for_skus(pool, &owned).await?;
    let levels = skus
        .iter()
        .map(|s| {
            rows.iter()
                .filter(|r| r.sku == *s)
                .map(quantities)
                .collect()
        })
        .collect();
    Ok(Answer {
        levels,
        source: Source::Database,
        age: Some(Duration::ZERO),
    })
}

/// Adds to each location's available what its open supply expected by `at` has not promised
/// to preorders, and sums again. `summaries` are in the order of `skus`.
pub async fn add_supply(
    pool: &PgPool,
    skus: &[&str],
    at: DateTime<Utc>,
    summaries: &mut [SkuAvailability],
) -> Result<(), ApiError> {
    let owned: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let expected = crate::supply::expected_for(pool, &owned).await?;
    for (sku, a) in skus.iter().zip(summaries.iter_mut()) {
        for l in &mut a.locations {
            if let Some(lines) = expected.get(&(l.location_id.clone(), sku.to_string())) {
                l.available = rules::atp(l.available, lines, at);
            }
        }
        a.available = network_total(a.locations.iter().map(|l| l.available));
    }
    Ok(())
}

/// The ATP of one level at `at`, for reads that compute availability themselves (nearby).
pub async fn expected(
    pool: &PgPool,
    sku: &str,
) -> Result<std::collections::HashMap<(String, String), Vec<rules::Expected>>, ApiError> {
    Ok(crate::supply::expected_for(pool, &[sku.to_owned()]).await?)
}
