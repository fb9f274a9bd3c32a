//! `GET /openapi.json` and the interactive docs at `GET /docs` (Swagger UI, its files embedded
//! in the binary at build time from the `vendored` crate: nothing is fetched, at build or at
//! run time). Public like the staff page: the document describes the API and grants nothing,
//! and these routes sit outside `/v1`, so no key and no per-key rate limit applies to them.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::Config;

use super::error::ApiError;
use super::openapi as doc;
use super::AppState;

#[derive(OpenApi)]
#[openapi(paths(openapi_json, docs_page, docs_file))]
pub struct Doc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route("/docs/{file}", get(docs_file))
}

/// This document
///
/// No key. The OpenAPI 3.1 document of this API, generated from the code (the same text as
/// `omnistock openapi` prints and `docs/openapi.json` holds).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    operation_id = "openapiDocument",
    responses((status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json")),
    security(()),
)]
async fn openapi_json() -> Response {
    (
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-cache"),
        ],
        doc::json(),
    )
        .into_response()
}

/// Interactive API documentation
///
/// No key to load. Redirects to the Swagger UI page (`/docs/index.html`), which reads
/// `/openapi.json`; "Try it out" sends the key given under "Authorize".
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    operation_id = "docsPage",
    responses((status = 303, description = "To `/docs/index.html`.")),
    security(()),
)]
async fn docs_page() -> Redirect {
    Redirect::to("/docs/index.html")
}

/// A file of the interactive documentation
///
/// No key. The Swagger UI page and its scripts and style sheets, embedded in the binary.
/// Anything else is a 404.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    operation_id = "docsFile",
    params(("file" = String, Path, description = "`index.html`, `swagger-ui-bundle.js`, `swagger-initializer.js`, …")),
    responses(
        (status = 200, description = "The file, with its content type."),
        (status = 404, response = doc::NotFound),
    ),
    security(()),
)]
async fn docs_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
        // Swagger UI would otherwise load a validity badge from validator.swagger.io.
        Arc::new(Config::from("/openapi.json").validator_url("none"))
    });
    let found = utoipa_swagger_ui::serve(&file, Arc::clone(&CONFIG))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("swagger ui file {file:?}: {e}")))?;
    let f = found.ok_or_else(|| ApiError::NotFound(format!("docs file {file:?}")))?;
    Ok((
        [
            (CONTENT_TYPE, f.content_type),
            (CACHE_CONTROL, "no-cache".to_owned()),
        ],
        f.bytes.into_owned(),
    )
        .into_response())
}
