//! The staff page at `/`: plain HTML, CSS and JavaScript embedded in the binary, so it works on
//! store networks without internet and needs no build step. Everything it loads comes from this
//! daemon; the Content-Security-Policy says so to the browser, which then refuses any script,
//! style, frame or connection from elsewhere (and any inline script).
//!
//! Assets are revalidated on every load (`no-cache` with an `ETag`): a new binary serves new
//! assets at once, and an unchanged one answers 304.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use utoipa::OpenApi;

use super::error::ApiError;
use super::openapi as doc;
use super::AppState;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("page/", $name)),
            etag: LazyLock::new(|| etag(include_bytes!(concat!("page/", $name)))),
        }
    };
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static ASSETS: [Asset; 4] = [
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("taiwan.svg", "image/svg+xml"),
];

fn etag(body: &[u8]) -> String {
    // SipHash with fixed keys: the same tag in every process serving the same bytes.
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/page/{asset}", get(asset))
}

#[derive(OpenApi)]
#[openapi(paths(index, asset))]
pub struct Doc;

/// The staff page (store app and ops view)
///
/// No key to load; the page asks for one and keeps it in the tab's `sessionStorage`. HTML
/// embedded in the binary, with `Content-Security-Policy: default-src 'none'; script-src
/// 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none';
/// form-action 'none'; frame-ancestors 'none'`, `Cache-Control: no-cache` and an `ETag`
/// (`If-None-Match` → 304).
#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    operation_id = "staffPage",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`."),
    ),
    security(()),
)]
async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// A script, style sheet or image of the staff page
///
/// No key. Same headers as `/`. Anything else is a 404.
#[utoipa::path(
    get,
    path = "/page/{asset}",
    tag = "page",
    operation_id = "pageAsset",
    params(
        ("asset" = String, Path),
    ),
    responses(
        (status = 200, description = "The asset (`text/javascript`, `text/css` or `image/svg+xml`)."),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`."),
        (status = 404, response = doc::NotFound),
    ),
    security(()),
)]
async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound("page asset".into()))?;
    Ok(serve(asset, &headers))
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = asset.etag.as_str();
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
