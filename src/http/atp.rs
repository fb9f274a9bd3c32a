//! `at=` on availability reads: available-to-promise at a time, from PostgreSQL (the cache
//! knows nothing of supply). Kept apart from the read handlers so they stay small.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::error::ApiError;
use super::AppState;
use crate::cache::{quantities, Answer, Source};
use crate::db;
use crate::domain::supply as rules;

/// `at` as an RFC 3339 time; a 422 naming `at` otherwise.
pub fn parse(at: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    at.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| ApiError::field("at", format!("`at` must be an RFC 3339 time: {e}")))
    })
    .transpose()
}

/// The levels of some SKUs: from the cache as every read, or, for an `at=` read, from
/// PostgreSQL as they are now, so that they agree with the supply read beside them.
pub async fn levels(
    state: &AppState,
    skus: &[&str],
    at: Option<DateTime<Utc>>,
) -> Result<Answer, ApiError> {
    if at.is_none() {
        return Ok(state.cache.levels(skus).await?);
    }
    let owned: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let rows = db::levels::for_skus(&state.pool, &owned).await?;
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

/// Open supply expected by `at`, not yet promised to preorders, per (location, SKU).
pub struct Supply {
    at: DateTime<Utc>,
    expected: HashMap<(String, String), Vec<rules::Expected>>,
}

impl Supply {
    /// None without `at`: a read without it promises only what is there.
    pub async fn load(
        pool: &PgPool,
        skus: &[&str],
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<Self>, ApiError> {
        let Some(at) = at else { return Ok(None) };
        let owned: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
        let expected = crate::supply::expected_for(pool, &owned).await?;
        Ok(Some(Supply { at, expected }))
    }

    /// Available-to-promise at `at` of one level whose available now is `available`.
    pub fn atp(&self, location_id: &str, sku: &str, available: i64) -> i64 {
        match self.expected.get(&(location_id.to_owned(), sku.to_owned())) {
            Some(lines) => rules::atp(available, lines, self.at),
            None => available,
        }
    }
}
