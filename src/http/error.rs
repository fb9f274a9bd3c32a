//! The one error type of the HTTP API. Each variant maps to a status and a stable `error` code;
//! internal failures are logged with their cause and answered without it.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Scope;
use crate::db::{self, Unavailable};
use crate::domain::location::FieldError;
use crate::domain::reservation::{Shortfall, Status};
use crate::domain::routing::Considered;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this API key lacks the `{}` scope", .0.as_str())]
    Forbidden(Scope),
    /// A key bound to one location asked to act at another.
    #[error("this API key may only act at location {0:?}")]
    OtherLocation(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    /// A conflict of stock, with the contract's code (`insufficient_stock`,
    /// `no_fulfilment_option`) and what the client needs to decide again.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Details,
    },
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid request: {message}")]
    Invalid { message: String, details: Details },
    #[error("rate limit exceeded")]
    RateLimited(Duration),
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// A passing failure of PostgreSQL: the same call may succeed when retried.
    #[error("{0}")]
    Retry(&'static str),
    #[error("the request took longer than {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            details: Details::None,
        }
    }

    /// A 422 naming the one field at fault (`details.field`).
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            details: Details::field(field),
        }
    }

    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        ApiError::Invalid {
            message: "some fields are invalid".into(),
            details: Details::Fields { fields: errors },
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) | ApiError::OtherLocation(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) | ApiError::Retry(_) | ApiError::TimedOut(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The one error body of the API.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// Stable code: `malformed_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `invalid_request`, `insufficient_stock`,
    /// `no_fulfilment_option`, `reservation_not_held`, `contended`, `supply_preordered`,
    /// `transfer_supply`, `rate_limited`, `unavailable` or `internal`.
    #[schema(example = "not_found")]
    pub error: &'static str,
    /// For people; not stable.
    pub message: String,
    /// Machine-readable details for the code, or null.
    pub details: Details,
}

/// What a client needs to act on an error, by code; null when there is nothing to add.
/// Kept as one untagged enum so that every shape the API sends is written down here.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Details {
    /// `invalid_request` (and some conflicts): the field or path parameter at fault, by its
    /// JSON path when nested (`lines[0].quantity`).
    Field {
        field: String,
    },
    /// `invalid_request` of a batch with too few or too many SKUs.
    FieldCount {
        field: String,
        count: usize,
    },
    /// `invalid_request` of a channel over locations that are not registered.
    UnknownLocations {
        field: String,
        unknown: Vec<String>,
    },
    /// `invalid_request` of a location body: every bad field at once.
    Fields {
        fields: Vec<FieldError>,
    },
    /// `forbidden`: the scope the key lacks.
    RequiredScope {
        required_scope: &'static str,
    },
    /// `forbidden`: a key bound to a location asked to act at another; this is its own.
    Location {
        location_id: String,
    },
    /// `rate_limited` and `unavailable`: seconds to wait (also in `Retry-After`).
    RetryAfter {
        retry_after_seconds: u64,
    },
    /// `insufficient_stock`: every line that cannot be held (after merging repeated SKUs).
    Shortfall {
        lines: Vec<Shortfall>,
    },
    /// `reservation_not_held`: the reservation's status (`expired` for a lapsed hold).
    Status {
        status: Status,
    },
    /// `no_fulfilment_option`: why each location was or was not chosen and, for a pickup at a
    /// given location that cannot serve it, up to 5 nearest pickup stores that could.
    NoOption {
        explanation: Vec<Considered>,
        alternatives: Vec<Alternative>,
    },
    /// `supply_preordered`: what preorders hold on the line, and what the change would leave.
    Preordered {
        field: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        remaining: Option<i64>,
        preordered: i64,
    },
    None,
}

impl Details {
    pub fn field(field: impl Into<String>) -> Self {
        Details::Field {
            field: field.into(),
        }
    }
}

/// A pickup store that could serve an order the asked one cannot.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alternative {
    pub location_id: String,
    pub distance_km: f64,
}

/// Seconds a client is told to wait before retrying a 503.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// PostgreSQL failures: an unreachable database, a transaction it aborted (deadlock,
/// serialization failure) and a statement or lock timeout are a 503 the client may retry;
/// anything else is a bug or a broken invariant, logged and answered as 500.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match db::unavailable(&e) {
            Some(Unavailable::Unreachable) => {
                tracing::warn!(error = %e, "PostgreSQL unavailable");
                ApiError::Unavailable("PostgreSQL")
            }
            Some(Unavailable::Aborted) => {
                tracing::info!(error = %e, "PostgreSQL aborted a transaction; the client may retry");
                ApiError::Retry(
                    "the database aborted this transaction to resolve a conflict with another one; retry",
                )
            }
            Some(Unavailable::TimedOut) => {
                tracing::warn!(error = %e, "PostgreSQL statement timed out");
                ApiError::Retry("the database did not answer in time; retry")
            }
            None => ApiError::Internal(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let details = match &self {
            ApiError::Invalid { details, .. } | ApiError::Conflict { details, .. } => {
                details.clone()
            }
            ApiError::Forbidden(scope) => Details::RequiredScope {
                required_scope: scope.as_str(),
            },
            ApiError::OtherLocation(own) => Details::Location {
                location_id: own.clone(),
            },
            ApiError::RateLimited(wait) => Details::RetryAfter {
                retry_after_seconds: wait.as_secs().max(1),
            },
            ApiError::Unavailable(_) | ApiError::Retry(_) | ApiError::TimedOut(_) => {
                Details::RetryAfter {
                    retry_after_seconds: RETRY_AFTER.as_secs(),
                }
            }
            _ => Details::None,
        };
        let message = match &self {
            ApiError::Invalid { message, .. } | ApiError::Conflict { message, .. } => {
                message.clone()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error answering a request");
                "internal error; see the server log".into()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code,
                message,
                details,
            }),
        )
            .into_response();
        let retry_after = match self {
            ApiError::RateLimited(wait) => Some(wait),
            ApiError::Unavailable(_) | ApiError::Retry(_) | ApiError::TimedOut(_) => {
                Some(RETRY_AFTER)
            }
            _ => None,
        };
        if let Some(wait) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was refused unread, so the connection cannot carry another request:
            // say so, or a client reuses it and its next request fails with no answer at all
            // (seen in CI: a pooled connection, closed under it, answered nothing).
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
