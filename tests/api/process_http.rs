//! What only the real binary shows: the request id in the log lines of a request, a panic
//! answered 500 with the standard body, and spans exported over OTLP/HTTP when (and only when)
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use crate::daemon_process::Daemon;
use crate::helpers::{wait_until, Isolation, READ_KEY};

fn span_request_id(line: &Value) -> Option<&str> {
    line["span"]["request_id"].as_str()
}

#[tokio::test]
async fn log_lines_of_a_request_carry_its_id_and_a_panic_answers_a_plain_500() {
    let iso = Isolation::new().await;
    let daemon = Daemon::start(&iso, &[("OMNISTOCK_FAILPOINT", "http_panic".to_owned())]).await;

    let r = daemon
        .http
        .get(daemon.url("/v1/whoami"))
        .bearer_auth(READ_KEY)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    let r = daemon
        .http
        .get(daemon.url("/failpoint/panic"))
        .header("x-request-id", "panic-me-456")
        .send()
        .await
        .expect("the daemon answers a panicking request");
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("panic-me-456")
    );
    let body = r.text().await.expect("body");
    assert!(!body.contains("secret"), "the panic leaked: {body}");
    let body: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["error"], "internal", "{body}");
    assert!(body["message"].is_string(), "{body}");

    // The daemon survived the panic.
    let r = daemon
        .http
        .get(daemon.url("/v1/whoami"))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .expect("request after the panic");
    assert_eq!(r.status(), 200);

    wait_until("the log lines of both requests", || async {
        let lines = daemon.log_lines();
        lines
            .iter()
            .any(|l| span_request_id(l) == Some("panic-me-456") && l["level"] == "ERROR")
            && lines
                .iter()
                .any(|l| span_request_id(l) == Some("trace-me-123"))
    })
    .await;
    let lines = daemon.log_lines();
    let finished = lines
        .iter()
        .find(|l| span_request_id(l) == Some("trace-me-123"))
        .expect("a line of the first request");
    assert_eq!(finished["span"]["route"], "/v1/whoami", "{finished}");
    assert_eq!(finished["span"]["method"], "GET", "{finished}");
    assert_eq!(finished["status"], 200, "{finished}");
    assert!(finished["latency_ms"].is_number(), "{finished}");
    let panic_line = lines
        .iter()
        .find(|l| span_request_id(l) == Some("panic-me-456") && l["level"] == "ERROR")
        .expect("the panic's line");
    assert!(panic_line.to_string().contains("panicked"), "{panic_line}");
    // No API key reaches a log line.
    let text = daemon.log_text();
    assert!(!text.contains(READ_KEY), "an API key was logged");
    let (status, _) = daemon.terminate().await;
    assert!(status.success(), "{status}");
}

/// An OTLP/HTTP receiver: records the body of every `POST /v1/traces`.
#[derive(Clone, Default)]
struct Receiver {
    exports: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl Receiver {
    async fn start() -> (Receiver, u16) {
        let receiver = Receiver::default();
        let app = Router::new()
            .route("/v1/traces", post(record))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, port)
    }

    fn exports(&self) -> Vec<(String, Bytes)> {
        self.exports.lock().expect("lock").clone()
    }
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.exports.lock().expect("lock").push((content_type, body));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn traced_request(daemon: &Daemon) {
    let r = daemon
        .http
        .get(daemon.url("/v1/locations/OTEL1"))
        .bearer_auth(READ_KEY)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
}

/// The SDK's exporting thread, as Linux shows its name.
const EXPORT_THREAD: &str = "OpenTelemetry.T";

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set_and_flushed_at_shutdown() {
    let (receiver, port) = Receiver::start().await;
    let iso = Isolation::new().await;
    let daemon = Daemon::start(
        &iso,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_SERVICE_NAME", "omnistock-otel-test".to_owned()),
            // Nothing is sent on a schedule during the test: what arrives, the shutdown flushed.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
        ],
    )
    .await;
    assert!(
        daemon.thread_names().iter().any(|n| n == EXPORT_THREAD),
        "no exporter thread: {:?}",
        daemon.thread_names()
    );
    traced_request(&daemon).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.exports().is_empty(), "exported before the flush");

    let (status, log) = daemon.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    let exports = receiver.exports();
    assert!(!exports.is_empty(), "no export arrived at shutdown\n{log}");
    for (content_type, _) in &exports {
        assert_eq!(content_type, "application/x-protobuf");
    }
    let all: Vec<u8> = exports.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert!(
        contains(&all, b"omnistock-otel-test"),
        "service.name missing"
    );
    assert!(
        contains(&all, b"GET /v1/locations/{location_id}"),
        "the request's span is missing"
    );
    assert!(
        contains(&all, &hex(TRACE_ID)),
        "the span did not join the caller's trace (traceparent)"
    );
}

#[tokio::test]
async fn nothing_is_exported_without_the_endpoint_variable() {
    let (receiver, port) = Receiver::start().await;
    let iso = Isolation::new().await;
    // Every other OTLP setting points at the receiver: only the endpoint variable turns export on.
    let daemon = Daemon::start(
        &iso,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://127.0.0.1:{port}/v1/traces"),
            ),
            ("OTEL_SERVICE_NAME", "omnistock-otel-test".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    )
    .await;
    assert!(
        !daemon.thread_names().iter().any(|n| n == EXPORT_THREAD),
        "an exporter thread runs: {:?}",
        daemon.thread_names()
    );
    traced_request(&daemon).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (status, log) = daemon.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(receiver.exports().is_empty(), "spans were exported");
}
