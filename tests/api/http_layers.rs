//! The standard HTTP layers: request id, compression, CORS, and a timeout that spares streams.
//! (Logs, panics and OpenTelemetry need the real binary: `tests/api/daemon_process.rs`.)

use std::io::Read;
use std::time::Duration;

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with, Isolation, TestApp, ADMIN_KEY, READ_KEY};

fn request_id(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn whoami_with_id(app: &TestApp, id: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(app.url("/v1/whoami")).bearer_auth(READ_KEY);
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn every_answer_carries_a_request_id_generated_or_propagated() {
    let app = spawn_app().await;

    let r = whoami_with_id(&app, None).await;
    assert_eq!(r.status(), 200);
    let generated = request_id(&r).expect("a generated id");
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let again = request_id(&whoami_with_id(&app, None).await).expect("id");
    assert_ne!(generated, again, "each request gets its own id");

    let r = whoami_with_id(&app, Some("checkout-7f3a:42")).await;
    assert_eq!(request_id(&r).as_deref(), Some("checkout-7f3a:42"));

    // Errors, 404s and unauthenticated calls carry one too.
    let r = app
        .http
        .get(app.url("/v1/whoami"))
        .header("x-request-id", "no-key-1")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(request_id(&r).as_deref(), Some("no-key-1"));
    let r = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert!(request_id(&r).is_some());

    // An unsound id (too long, or with spaces) is replaced, never echoed.
    for bad in ["x".repeat(129), "two words".to_owned()] {
        let r = whoami_with_id(&app, Some(&bad)).await;
        let got = request_id(&r).expect("an id");
        assert_ne!(got, bad);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
    }
}

/// Thirty locations: a JSON list of several kilobytes.
async fn many_locations(app: &TestApp) {
    for i in 0..30 {
        app.put_location(
            &format!("LOC{i:03}"),
            json!({"name": format!("A store with a long enough name, number {i}"),
                   "kind": "store", "lat": 25.0, "lon": 121.5, "pickup": true}),
        )
        .await;
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[tokio::test]
async fn a_large_json_answer_is_gzipped_only_when_the_client_asks() {
    let app = spawn_app().await;
    many_locations(&app).await;
    let get = |encoding: Option<&'static str>| {
        let mut req = app
            .http
            .get(app.url("/v1/locations"))
            .bearer_auth(ADMIN_KEY);
        if let Some(e) = encoding {
            req = req.header(ACCEPT_ENCODING, e);
        }
        req.send()
    };

    let plain = get(None).await.expect("request");
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get(CONTENT_ENCODING).is_none());
    let plain = plain.bytes().await.expect("body");
    let listed: Value = serde_json::from_slice(&plain).expect("plain JSON");
    assert!(
        plain.len() > 2_000,
        "{} bytes: not a large answer",
        plain.len()
    );

    let zipped = get(Some("gzip")).await.expect("request");
    assert_eq!(zipped.status(), 200);
    assert_eq!(
        zipped
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let zipped = zipped.bytes().await.expect("body");
    assert!(zipped.len() < plain.len() / 2, "{} bytes", zipped.len());
    let unzipped: Value = serde_json::from_slice(&gunzip(&zipped)).expect("JSON inside");
    assert_eq!(unzipped, listed);

    // An encoding the daemon does not speak: the plain answer.
    let other = get(Some("br")).await.expect("request");
    assert!(other.headers().get(CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn a_live_stream_outlives_the_request_timeout_and_is_never_compressed() {
    let app = spawn_with(Isolation::new().await, |c| {
        c.limits.http_request_timeout_seconds = 1;
    })
    .await;
    app.store("SSE1", 25.0, 121.5).await;
    let mut stream = app
        .http
        .get(app.url("/v1/stream?location_id=SSE1"))
        .bearer_auth(READ_KEY)
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("open the stream");
    assert_eq!(stream.status(), 200);
    let content_type = stream
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert!(
        stream.headers().get(CONTENT_ENCODING).is_none(),
        "a live stream must not be compressed (gzip buffers events)"
    );

    // Well past the 1 s request timeout, the stream still delivers.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    app.stock("SSE1", "SKU-LATE", 3).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("SKU-LATE") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the change event within 10 s")
            .expect("the stream is still open");
        match chunk {
            Some(bytes) => seen.extend_from_slice(&bytes),
            None => panic!("the stream was cut: {}", String::from_utf8_lossy(&seen)),
        }
    }
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, app.url("/v1/levels/SKU-1"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization,x-request-id",
        )
        .send()
        .await
        .expect("preflight")
}

fn allowed_origin(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let shop = "https://shop.example";
    let app = spawn_with(Isolation::new().await, |c| {
        c.cors_allow_origins = format!("{shop}, http://localhost:3000")
            .parse()
            .expect("origins");
    })
    .await;

    let ok = preflight(&app, shop).await;
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(allowed_origin(&ok).as_deref(), Some(shop));
    let headers = ok
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    assert!(headers.contains("x-request-id"), "{headers}");
    assert!(ok
        .headers()
        .get("access-control-allow-credentials")
        .is_none());

    let refused = preflight(&app, "https://evil.example").await;
    assert_eq!(allowed_origin(&refused), None);

    // A real call from the allowed origin: the browser may read the request id.
    let r = app
        .http
        .get(app.url("/v1/whoami"))
        .bearer_auth(READ_KEY)
        .header("origin", shop)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(allowed_origin(&r).as_deref(), Some(shop));
    let exposed = r
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let app = spawn_app().await;
    let r = preflight(&app, "https://shop.example").await;
    assert_eq!(allowed_origin(&r), None);
    let r = app
        .http
        .get(app.url("/v1/whoami"))
        .bearer_auth(READ_KEY)
        .header("origin", "https://shop.example")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(allowed_origin(&r), None);
}
