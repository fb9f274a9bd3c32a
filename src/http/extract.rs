//! Extractors whose rejections speak the API's error format instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::error::ApiError;
use super::validate;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 512 * 1024;

/// JSON body: 400 when it is not JSON, 422 naming the field (its JSON path, e.g.
/// `lines[0].quantity`) when it is JSON of the wrong shape or with a value out of range, 413 when
/// too big. The content type is not insisted on: a missing header should not cost a checkout a
/// sale.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(BODY_LIMIT)
                } else {
                    ApiError::Malformed(e.body_text())
                }
            })?;
        from_json(&bytes).map(ApiJson)
    }
}

/// Deserializes a body, telling a document that is not JSON (400) from JSON that does not fit
/// (422, naming where). The body is read a second time only when it is refused.
fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        if well_formed(bytes) {
            misfit(&path, &e)
        } else {
            malformed(&e)
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// Whether the body is JSON at all. serde_json stops at the first value that does not fit, before
/// reading the rest, and calls a number it cannot hold (`1e400`) a syntax error though RFC 8259
/// leaves the range to the reader; skipping values checks the grammar alone.
fn well_formed(bytes: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

fn misfit(path: &str, e: &serde_json::Error) -> ApiError {
    // `.` is the whole body (a missing top-level field, not an object): serde's message says.
    if path == "." {
        ApiError::invalid(e.to_string())
    } else {
        ApiError::field(path, format!("`{path}`: {e}"))
    }
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::Malformed(format!("body is not valid JSON: {e}"))
}

/// Query string: 400 when it cannot be decoded into the expected fields.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_from_str(query).map(ApiQuery)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::Malformed("query string is not valid".into()))?,
    )
    .map(|axum::extract::Query(t)| t)
    .map_err(|e| ApiError::Malformed(e.body_text()))
}

/// Path segment, percent-decoded (a SKU with `/` arrives as `%2F`).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| ApiPath(t))
            .map_err(|e| ApiError::Malformed(e.body_text()))
    }
}

/// Ids in the path, each checked by its contract rule before the handler runs, so none reaches
/// SQL unchecked (PostgreSQL refuses a NUL in text, a 500) and a bad one gets a 422 naming the
/// path parameter.
pub struct SkuPath(pub String);
pub struct LocationIdPath(pub String);
/// A reservation id (client-given or generated): the path parameter `id`.
pub struct ReservationIdPath(pub String);

async fn checked<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    param: &str,
    check: fn(&str, &str) -> Result<(), ApiError>,
) -> Result<String, ApiError> {
    let ApiPath(value) = ApiPath::<String>::from_request_parts(parts, state).await?;
    check(param, &value)?;
    Ok(value)
}

impl<S: Send + Sync> FromRequestParts<S> for SkuPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        checked(parts, state, "sku", validate::sku).await.map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LocationIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        checked(parts, state, "location_id", validate::location_id)
            .await
            .map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReservationIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        checked(parts, state, "id", validate::client_id)
            .await
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::{json, Value};

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        lines: Vec<Line>,
        ttl_seconds: Option<i64>,
        point: Option<Point>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: i64,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Point {
        lat: f64,
    }

    /// (status, error code, details) of the answer to a body.
    fn answer(body: &str) -> (u16, &'static str, Value) {
        match from_json::<Body>(body.as_bytes()).expect_err("rejected") {
            ApiError::Invalid { details, .. } => (
                422,
                "invalid_request",
                serde_json::to_value(details).expect("details are JSON"),
            ),
            ApiError::Malformed(_) => (400, "malformed_request", Value::Null),
            other => panic!("{body:?}: unexpected {other:?}"),
        }
    }

    #[test]
    fn a_value_that_does_not_fit_is_named_by_its_path() {
        for (body, field) in [
            (
                r#"{"lines":[{"sku":"A","quantity":"x\u0000y"}]}"#,
                "lines[0].quantity",
            ),
            (
                r#"{"lines":[{"sku":"A","quantity":1.5}]}"#,
                "lines[0].quantity",
            ),
            (
                r#"{"lines":[],"ttl_seconds":18446744073709551615}"#,
                "ttl_seconds",
            ),
            (r#"{"lines":[],"point":{"lat":"north"}}"#, "point.lat"),
            (r#"{"lines":[{"sku":7,"quantity":1}]}"#, "lines[0].sku"),
            (r#"{"lines":[],"point":{}}"#, "point"),
            (r#"{"lines":[],"colour":"red"}"#, "colour"),
            (
                r#"{"lines":[{"sku":"A","quantity":1,"x":0}]}"#,
                "lines[0].x",
            ),
        ] {
            assert_eq!(
                answer(body),
                (422, "invalid_request", json!({ "field": field })),
                "{body}"
            );
        }
    }

    #[test]
    fn a_number_too_big_to_hold_is_out_of_range_not_malformed() {
        for n in ["1e400", "-1e400"] {
            let body = format!(r#"{{"lines":[{{"sku":"A","quantity":{n}}}]}}"#);
            assert_eq!(
                answer(&body),
                (
                    422,
                    "invalid_request",
                    json!({ "field": "lines[0].quantity" })
                )
            );
        }
    }

    #[test]
    fn a_document_that_is_not_json_is_malformed() {
        for body in [
            "",
            "{oops",
            r#"{"lines":[]} trailing"#,
            r#"{"lines":[{"sku":"A","quantity":1e400]}"#,
            &"[".repeat(10_000),
            "\u{0}",
            r#"{"lines":[{"sku":"A","quantity":"one"}] oops"#,
        ] {
            let (status, code, _) = answer(body);
            assert_eq!((status, code), (400, "malformed_request"), "{body:?}");
        }
    }

    #[test]
    fn a_top_level_misfit_says_which_field_in_the_message() {
        for (body, named) in [(r#"{"ttl_seconds":1}"#, "lines"), ("[]", "struct Body")] {
            let e = from_json::<Body>(body.as_bytes()).expect_err("rejected");
            assert!(
                matches!(
                    &e,
                    ApiError::Invalid {
                        details: crate::http::error::Details::None,
                        ..
                    }
                ),
                "{body}: {e:?}"
            );
            assert!(e.to_string().contains(named), "{body}: {e}");
        }
    }

    #[test]
    fn a_good_body_is_accepted() {
        let b: Body = from_json(br#"{"lines":[{"sku":"A","quantity":2}],"point":{"lat":1.5}} "#)
            .expect("valid");
        assert_eq!(b.lines[0].quantity, 2);
    }
}
