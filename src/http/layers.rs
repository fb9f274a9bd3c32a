//! The layers every answer goes through, outermost first: a request id (`x-request-id`, taken
//! from the client when sound, else a new UUID; echoed on the response), CORS, a trace span
//! carrying the id (so every log line of the request names it, and OpenTelemetry exports it),
//! gzip compression (never of a live stream), and a panic turned into the standard 500 body.
//! The request timeout is `time_limit` in `http/mod.rs`: it bounds making the response, not
//! streaming its body, so a live stream is never cut.

use std::any::Any;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::field::Empty;
use tracing::Span;

use super::error::ApiError;
use crate::failpoint;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-given request id kept; a longer one is replaced (it would bloat every log line).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A route that panics, present only while the `http_panic` fail point is armed: how the tests
/// reach the catch-panic layer of the real binary.
pub const PANIC_ROUTE: &str = "/failpoint/panic";

/// Wraps the API's router in the standard layers.
pub fn wrap(mut router: Router, cors: &CorsOrigins) -> Router {
    if failpoint::is_armed(failpoint::HTTP_PANIC) {
        router = router.route(PANIC_ROUTE, axum::routing::get(panic_on_purpose));
    }
    // `Router::layer` wraps each route (after routing), so the span can name the matched route.
    // Each `.layer` call wraps the previous ones: the last is outermost.
    let router = router
        .layer(CatchPanicLayer::custom(answer_panic))
        .layer(CompressionLayer::new())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        );
    let router = match cors.layer() {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, RequestIds::new()))
        .layer(middleware::map_request(drop_unsound_request_id))
}

/// Makes the ids of requests that came without one: UUIDs in the version 4 format, random
/// across processes and distinct within one. A fresh `Uuid::new_v4` per request was a
/// `getrandom` system call each (3 % of the daemon's CPU serving `/healthz`): the randomness
/// is drawn once, and each id mixes it with a counter through a bijection (so no two counters
/// give the same low half).
#[derive(Clone)]
struct RequestIds {
    seed: [u64; 2],
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let r = uuid::Uuid::new_v4().as_u128();
        Self {
            seed: [(r >> 64) as u64, r as u64],
            next: Default::default(),
        }
    }

    /// The id for counter value `n`.
    fn id(&self, n: u64) -> uuid::Uuid {
        let lo = splitmix64(n ^ self.seed[1]);
        let bytes = (u128::from(self.seed[0]) << 64 | u128::from(lo)).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// SplitMix64's finalizer: a bijection on `u64` that scatters consecutive inputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut buf = uuid::Uuid::encode_buffer();
        let id = self.id(n).hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

/// A client's request id is kept only if it is one short, printable token: it goes into every
/// log line and back into a response header, so anything else is replaced by a fresh UUID.
pub fn sound_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.iter().all(|b| b.is_ascii_graphic())
}

async fn drop_unsound_request_id(mut req: Request) -> Request {
    let ids = req.headers().get_all(&X_REQUEST_ID);
    let mut values = ids.iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(one), None) => sound_request_id(one.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(&X_REQUEST_ID);
    }
    req
}

async fn panic_on_purpose() -> &'static str {
    panic!("fail point http_panic: secret panic detail")
}

/// The span of one request. It is at ERROR level so that it exists whatever `RUST_LOG` keeps:
/// every line logged while handling the request carries `request_id`, warnings included. No
/// header (API keys) and no body is recorded.
fn request_span(req: &Request) -> Span {
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let method = req.method().as_str();
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::error_span!(
        "request",
        method,
        route,
        request_id,
        status = Empty,
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
    );
    crate::telemetry::otel::adopt_remote_parent(&span, req.headers());
    span
}

/// One line per finished request (its status and latency); 5xx at WARN.
fn log_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    span.record("status", status);
    let latency_ms = latency.as_secs_f64() * 1_000.0;
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(status, latency_ms, "request finished");
    } else {
        tracing::info!(status, latency_ms, "request finished");
    }
}

/// A panic while answering: the standard 500 body (the panic's text only in the log, with the
/// request's span, so its id).
fn answer_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    ApiError::Internal(anyhow::anyhow!("a request handler panicked: {what}")).into_response()
}

/// Which browser origins may call the API (`OMNISTOCK_CORS_ALLOW_ORIGINS`): none (no CORS
/// headers at all), any (`*`), or a list of exact origins. Credentials (cookies) are never
/// allowed: the API authenticates with a bearer key in `Authorization`, which CORS lets
/// through as an allowed header.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CorsOrigins {
    #[default]
    None,
    Any,
    List(Vec<HeaderValue>),
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if entries.contains(&"*") {
            if entries.len() > 1 {
                return Err("`*` allows every origin: give it alone".into());
            }
            return Ok(CorsOrigins::Any);
        }
        entries
            .into_iter()
            .map(|origin| {
                let rest = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"))
                    .ok_or_else(|| {
                        format!("origin {origin:?} must start with https:// or http://")
                    })?;
                if rest.is_empty() || rest.contains(['/', '?', '#', '*']) {
                    return Err(format!(
                        "origin {origin:?} must be scheme://host[:port], with no path or wildcard"
                    ));
                }
                HeaderValue::from_str(origin).map_err(|_| format!("origin {origin:?} is not valid"))
            })
            .collect::<Result<_, _>>()
            .map(CorsOrigins::List)
    }
}

impl CorsOrigins {
    fn layer(&self) -> Option<CorsLayer> {
        let origins = match self {
            CorsOrigins::None => return None,
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::List(list) => AllowOrigin::list(list.clone()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, X_REQUEST_ID])
                .expose_headers([X_REQUEST_ID, header::RETRY_AFTER])
                .max_age(Duration::from_secs(600)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_request_ids_are_kept() {
        assert!(sound_request_id(b"req-42"));
        assert!(sound_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!sound_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!sound_request_id(b""));
        assert!(!sound_request_id(b"two words"));
        assert!(!sound_request_id(b"tab\there"));
        assert!(!sound_request_id("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids_and_differ_between_processes() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for n in 0..100_000 {
            let id = ids.id(n);
            assert_eq!(id.get_version_num(), 4, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert!(seen.insert(id), "id {id} repeated at counter {n}");
        }
        // Another process (another seed) does not start where this one did.
        assert_ne!(RequestIds::new().id(0), ids.id(0));
    }

    #[test]
    fn cors_origins_parse_strictly() {
        assert_eq!("".parse(), Ok(CorsOrigins::None));
        assert_eq!(" , ".parse(), Ok(CorsOrigins::None));
        assert_eq!("*".parse(), Ok(CorsOrigins::Any));
        assert_eq!(
            "https://shop.example, http://localhost:3000".parse(),
            Ok(CorsOrigins::List(vec![
                HeaderValue::from_static("https://shop.example"),
                HeaderValue::from_static("http://localhost:3000"),
            ]))
        );
        for bad in [
            "*,https://a.example",
            "shop.example",
            "https://shop.example/",
            "https://*.example",
            "https://",
        ] {
            assert!(bad.parse::<CorsOrigins>().is_err(), "{bad}");
        }
    }
}
