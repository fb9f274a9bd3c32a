//! HTTP latency by route: `omnistock_http_request_duration_seconds{method, route, status}`
//! and `omnistock_http_requests_total{status}`.
//!
//! The route label is the matched route's template (`/v1/skus/{sku}`), never the raw path: a
//! path carries SKUs and ids, and each distinct label value would be a time series of its own.
//! A request no route matched is `unmatched`. The time is until the response head (a live
//! stream's body is not counted).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{HTTP_REQUEST_SECONDS, METRICS};

pub async fn record(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status();
    metrics::histogram!(
        HTTP_REQUEST_SECONDS,
        "method" => method,
        "route" => route,
        "status" => status.as_str().to_owned()
    )
    .record(started.elapsed());
    METRICS.http_requests.inc(status.as_str());
    response
}

/// The standard methods by name; any other (a client may send anything) as `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
