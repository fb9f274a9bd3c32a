//! `/v1/movements`: movements in over HTTP (for systems that cannot speak NATS) and the ledger
//! history out.
//!
//! A posted movement goes through the same validation and the same `apply` as one from
//! JetStream, so one `event_id` counts once whichever way it came: the ledger's unique
//! `event_id` decides, not the transport.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::extract::ApiQuery;
use super::openapi as doc;
use super::{validate, AppState};
use crate::db;
use crate::db::movements::{HistoryFilter, HistoryRow};
use crate::domain::ids::is_valid_client_id;
use crate::domain::movement::{self, Incoming, Movement, RejectReason, MAX_BATCH};
use crate::ingest::apply;
use crate::ingest::isolate::{is_poison, isolate};
use crate::metrics::METRICS;

/// Rows of history per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/movements", get(history).post(post))
}

#[derive(OpenApi)]
#[openapi(paths(post, history))]
pub struct Doc;

/// The body: one movement or an array of 1 to 1,000. Only documents it: the body is read as
/// JSON and checked element by element, so that a bad element is answered alone.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum MovementBody {
    One(Box<Movement>),
    Many(Vec<Movement>),
}

#[derive(Serialize, ToSchema)]
#[schema(as = MovementResults)]
struct PostAnswer {
    results: Vec<ElementResult>,
}

/// What became of one posted element, in the order posted.
#[derive(Serialize, Clone, ToSchema)]
struct ElementResult {
    /// Null when the element carries no valid `event_id`.
    event_id: Option<String>,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Status {
    Applied,
    Duplicate,
    Rejected,
}

/// Reason of an element a location-bound key may not post (not a dead-letter reason: HTTP
/// answers its rejections instead of dead-lettering them).
const OTHER_LOCATION: &str = "forbidden_location";

impl ElementResult {
    fn rejected(event_id: Option<String>, reason: &'static str, message: String) -> Self {
        ElementResult {
            event_id,
            status: Status::Rejected,
            reason: Some(reason),
            message: Some(message),
        }
    }
}

/// Record movements over HTTP (for systems that cannot speak NATS)
///
/// Scope: `write`. One movement or an array of 1 to 1,000, with the same body and the same
/// rules as on `inventory.movements.<location_id>`; each element's own `location_id` is its
/// "subject". Valid movements are applied in one transaction (a movement the database
/// refuses is isolated and rejected alone) and the answer comes after the commit, one
/// result per element in order. An `event_id` counts once whichever way it came (NATS or
/// HTTP): one already in the ledger, or repeated in the body, is a `duplicate`.
/// Rejected elements are answered here, not dead-lettered; their `reason` is the
/// dead-letter reason (`unknown_location`, `invalid_quantity`, …) or `forbidden_location`.
/// A key bound to a location may post only that location's movements: others are rejected
/// per element (`forbidden_location`), and a request with none of its own is a 403.
/// Errors of the whole body: not JSON 400; an empty array or more than 1,000 elements 422
/// (field `body`).
#[utoipa::path(
    post,
    path = "/v1/movements",
    tag = "movements",
    operation_id = "postMovements",
    request_body(content = MovementBody),
    responses(
        (status = 200, description = "Committed; one result per element, in order.", body = PostAnswer),
        (status = 400, response = doc::Malformed),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("write"))),
)]
async fn post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<PostAnswer>, ApiError> {
    // The post is the publish: its movements are recorded as published when it came in, not
    // at whatever `occurred_at` says (a sender cannot set this).
    let received = Utc::now();
    caller.require(Scope::Write)?;
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(super::extract::BODY_LIMIT)
        } else {
            ApiError::Malformed(e.body_text())
        }
    })?;
    let elements = elements(&body)?;

    // A bound key that posts nothing for its own location is refused whole: most likely the
    // wrong key, and a 403 says so louder than a page of per-element rejections.
    if let Some(own) = caller.location_id() {
        if elements
            .iter()
            .all(|e| location_of(e).is_some_and(|l| l != own))
        {
            return Err(ApiError::OtherLocation(own.to_owned()));
        }
    }

    let now = Utc::now();
    let mut results: Vec<Option<ElementResult>> = vec![None; elements.len()];
    // Valid movements and their position among the elements.
    let mut valid: Vec<(usize, Movement)> = Vec::new();
    for (i, e) in elements.iter().enumerate() {
        let event_id = e
            .get("event_id")
            .and_then(Value::as_str)
            .filter(|id| is_valid_client_id(id))
            .map(str::to_owned);
        // The element's own location is its "subject": only its own form is checked here.
        match movement::validate(location_of(e).unwrap_or_default(), e, now) {
            Ok(m) if !caller.covers(&m.location_id) => {
                let message = format!(
                    "this API key may only post movements of location {:?}",
                    caller.location_id().unwrap_or_default()
                );
                results[i] = Some(ElementResult::rejected(event_id, OTHER_LOCATION, message));
            }
            Ok(m) => valid.push((i, m)),
            Err((reason, message)) => {
                results[i] = Some(ElementResult::rejected(event_id, reason.as_str(), message));
            }
        }
    }

    let locations: Vec<String> = valid
        .iter()
        .map(|(_, m)| m.location_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !locations.is_empty() {
        let known = db::locations::known_ids(&state.pool, &locations).await?;
        valid.retain(|(i, m)| {
            if known.contains(&m.location_id) {
                return true;
            }
            results[*i] = Some(ElementResult::rejected(
                Some(m.event_id.clone()),
                RejectReason::UnknownLocation.as_str(),
                format!("location {:?} is not registered", m.location_id),
            ));
            false
        });
    }

    if !valid.is_empty() {
        let movements: Vec<Incoming> = valid
            .iter()
            .map(|(_, m)| Incoming::published(m.clone(), received))
            .collect();
        let pool = &state.pool;
        let cache = &*state.cache;
        // An outage ends the request with a 503 (parts already committed are duplicates when
        // the client retries); a data error is isolated to the one movement it comes from.
        let isolated = isolate(
            &movements,
            |part| async move {
                apply::apply_batch(pool, Some(cache), part)
                    .await
                    .map(|a| (part.len(), a))
            },
            is_poison,
        )
        .await?;
        for (offset, e) in isolated.poisoned {
            tracing::warn!(error = %e, "movement refused by PostgreSQL; answered as rejected");
            let (i, m) = &valid[offset];
            results[*i] = Some(ElementResult::rejected(
                Some(m.event_id.clone()),
                RejectReason::RejectedByDatabase.as_str(),
                "the database refused this movement".into(),
            ));
        }
        for (offset, (len, applied)) in isolated.applied {
            for (local, (i, m)) in valid[offset..offset + len].iter().enumerate() {
                let overflow = applied.rejected.iter().find(|(p, _)| *p == local);
                results[*i] = Some(match overflow {
                    Some((_, why)) => ElementResult::rejected(
                        Some(m.event_id.clone()),
                        RejectReason::QuantityOverflow.as_str(),
                        why.clone(),
                    ),
                    None => ElementResult {
                        event_id: Some(m.event_id.clone()),
                        status: if applied.duplicate_at.binary_search(&local).is_ok() {
                            Status::Duplicate
                        } else {
                            Status::Applied
                        },
                        reason: None,
                        message: None,
                    },
                });
            }
            METRICS.movements_recorded.add(applied.recorded as u64);
            METRICS.movements_duplicate.add(applied.duplicates as u64);
            METRICS.movements_late.add(applied.late as u64);
        }
    }

    let results = results
        .into_iter()
        .map(|r| {
            // Every element was given a result above; this is the one that cannot happen.
            r.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a movement got no result")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(PostAnswer { results }))
}

/// The body's movements: one object, or an array of 1 to [`MAX_BATCH`]. Errors of the whole
/// request are answered as such (400 not JSON, 422 empty or too large).
fn elements(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::Malformed(format!("body is not valid JSON: {e}")))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(ApiError::field(
            "body",
            "a batch must hold at least one movement",
        )),
        Value::Array(items) if items.len() > MAX_BATCH => Err(ApiError::field(
            "body",
            format!(
                "a batch holds at most {MAX_BATCH} movements, this one {}",
                items.len()
            ),
        )),
        Value::Array(items) => Ok(items),
        other => Ok(vec![other]),
    }
}

fn location_of(e: &Value) -> Option<&str> {
    e.get("location_id").and_then(Value::as_str)
}

/// Query of the history. Every field is taken as text and checked here, so a bad one is a 422
/// naming it rather than a generic 400.
#[derive(Deserialize)]
struct HistoryQuery {
    sku: Option<String>,
    location_id: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MovementHistory)]
struct HistoryAnswer {
    movements: Vec<HistoryItem>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct HistoryItem {
    event_id: String,
    location_id: String,
    sku: String,
    kind: String,
    quantity: i64,
    occurred_at: DateTime<Utc>,
    source: Option<String>,
    reference: Option<String>,
    reservation_id: Option<String>,
    transfer_id: Option<String>,
    to_location_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supply_id: Option<String>,
    /// What became of `supply_id`: `filled`, `unknown_supply`, `other_level` or `not_open`.
    #[serde(skip_serializing_if = "Option::is_none")]
    supply_outcome: Option<String>,
    /// When it was published: the JetStream publish time, or when its `POST /v1/movements`
    /// came in. Null for imported opening counts and movements recorded before it was kept.
    published_at: Option<DateTime<Utc>>,
    recorded_at: DateTime<Utc>,
    /// False for a late delta a count had already seen, or a count older than the latest.
    applied: bool,
    /// `applied`, `late` or `stale_count`: why `applied` is what it is.
    outcome: String,
    on_hand_after: i64,
}

impl From<HistoryRow> for HistoryItem {
    fn from(r: HistoryRow) -> Self {
        HistoryItem {
            applied: r.outcome == "applied",
            event_id: r.event_id,
            location_id: r.location_id,
            sku: r.sku,
            kind: r.kind,
            quantity: r.quantity,
            occurred_at: r.occurred_at,
            source: r.source,
            reference: r.reference,
            reservation_id: r.reservation_id,
            transfer_id: r.transfer_id,
            to_location_id: r.to_location_id,
            supply_id: r.supply_id,
            supply_outcome: r.supply_outcome,
            published_at: r.published_at,
            recorded_at: r.recorded_at,
            outcome: r.outcome,
            on_hand_after: r.on_hand_after,
        }
    }
}

/// The movement ledger, newest first
///
/// Scope: `read`. What is behind a number: every recorded movement, newest recorded first,
/// `limit` per page (default 50, at most 500). Pass `next_cursor` back as `cursor` for the
/// next (older) page; it is null on the last. The order is the ledger id (insertion order),
/// so paging never repeats a row and skips none of the rows committed when it started;
/// rows recorded while paging show on a new first page. A key bound to a location sees only that location (another
/// `location_id` is a 403). A bad parameter is a 422 naming it.
#[utoipa::path(
    get,
    path = "/v1/movements",
    tag = "movements",
    operation_id = "listMovements",
    params(
        ("sku" = Option<String>, Query),
        ("location_id" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339 time with offset; only movements that occurred at or after it (`occurred_at`, not `recorded_at`)."),
        ("limit" = Option<i64>, Query),
        ("cursor" = Option<String>, Query, description = "Opaque; `next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "One page of the ledger.", body = HistoryAnswer),
        (status = 422, response = doc::Invalid),
    ),
    extensions(("x-required-scope" = json!("read"))),
)]
async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    caller.require(Scope::Read)?;
    if let Some(sku) = &q.sku {
        validate::sku("sku", sku)?;
    }
    if let Some(l) = &q.location_id {
        validate::location_id("location_id", l)?;
        caller.require_location(l)?;
    }
    let since = q
        .since
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::field("since", "`since` must be an RFC 3339 time with its offset")
                })
        })
        .transpose()?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::field(
                    "limit",
                    format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let before_id = q.cursor.as_deref().map(cursor::decode).transpose()?;
    // A bound key sees its own location only, asked or not.
    let location_id = q.location_id.as_deref().or(caller.location_id());
    let filter = HistoryFilter {
        sku: q.sku.as_deref(),
        location_id,
        since,
        before_id,
    };
    // One row more than asked tells whether there is a next page.
    let mut rows = db::movements::history(&state.pool, &filter, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| cursor::encode(r.id))
    } else {
        None
    };
    Ok(Json(HistoryAnswer {
        movements: rows.into_iter().map(HistoryItem::from).collect(),
        next_cursor,
    }))
}

/// The keyset cursor: the ledger id of the last row given, which clients treat as opaque (its
/// form may change; only a cursor this daemon gave is meaningful).
mod cursor {
    use super::ApiError;

    const PREFIX: &str = "m1.";

    pub fn encode(id: i64) -> String {
        format!("{PREFIX}{id:x}")
    }

    pub fn decode(s: &str) -> Result<i64, ApiError> {
        s.strip_prefix(PREFIX)
            .filter(|h| !h.is_empty() && h.len() <= 16)
            .and_then(|h| i64::from_str_radix(h, 16).ok())
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                ApiError::field(
                    "cursor",
                    "`cursor` is not one this API gave (use next_cursor)",
                )
            })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_and_refuses_what_it_did_not_make() {
            for id in [1, 255, i64::MAX] {
                assert_eq!(decode(&encode(id)).expect("own cursor"), id);
            }
            for bad in [
                "",
                "m1.",
                "m1.-5",
                "m1.0",
                "12",
                "m1.zz",
                "m1.10000000000000000",
            ] {
                assert!(decode(bad).is_err(), "{bad:?}");
            }
        }
    }
}
