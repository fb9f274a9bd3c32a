//! `GET /v1/stream`: level change events as server-sent events, filtered per client.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{movement, spawn_app, TestApp, READ_KEY, RESERVE_KEY};

/// A generous correctness deadline for one event (not a speed assertion).
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct SseEvent {
    event: Option<String>,
    id: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// A minimal SSE reader over a reqwest response.
struct SseClient {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl SseClient {
    async fn open(app: &TestApp, query: &str) -> SseClient {
        let response = app
            .http
            .get(app.url(&format!("/v1/stream{query}")))
            .bearer_auth(READ_KEY)
            .send()
            .await
            .expect("open the stream");
        assert_eq!(response.status(), 200, "GET /v1/stream{query}");
        let ct = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content type {ct:?}");
        SseClient {
            response,
            buf: Vec::new(),
        }
    }

    /// The next event that has a name or data (comments, keep-alives and `retry` hints are
    /// skipped); `None` when the server ends the stream. Fails the test after `within`.
    async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let frame = String::from_utf8(frame).expect("UTF-8 frame");
                let mut ev = SseEvent::default();
                let mut has_data = false;
                for line in frame.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => ev.event = Some(value.to_owned()),
                        "id" => ev.id = Some(value.to_owned()),
                        "data" => {
                            if has_data {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(value);
                            has_data = true;
                        }
                        _ => {} // comment, retry
                    }
                }
                if ev.event.is_some() || has_data {
                    return Some(ev);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("timed out waiting for an event")
                .expect("reading the stream");
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }

    /// Events until (and including) the change with `last_id`.
    async fn changes_until(&mut self, last_id: &str) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let ev = self
                .next(DEADLINE)
                .await
                .unwrap_or_else(|| panic!("stream ended before {last_id}; got {out:?}"));
            let done = ev.id.as_deref() == Some(last_id);
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}

/// A change event body as the outbox relay publishes it.
fn change(event_id: &str, location: &str, sku: &str, on_hand: i64) -> Value {
    json!({
        "event_id": event_id,
        "location_id": location,
        "sku": sku,
        "on_hand": on_hand,
        "reserved": 0,
        "available": on_hand,
        "version": on_hand,
        "changed_at": chrono::Utc::now().to_rfc3339(),
        "cause": "receipt",
        "reference": null,
    })
}

/// Publishes change events on `<prefix>.changes.<location>` with plain NATS, in order.
async fn publish_changes(app: &TestApp, changes: &[Value]) {
    let nats = app.js.client();
    for c in changes {
        let loc = c["location_id"].as_str().expect("location_id");
        nats.publish(
            app.subjects.changes(loc),
            serde_json::to_vec(c).expect("json").into(),
        )
        .await
        .expect("publish");
    }
    nats.flush().await.expect("flush");
}

#[tokio::test]
async fn sse_filters_deliver_only_matching_changes_in_order() {
    let app = spawn_app().await;
    let (a, b) = ("TEE-112-BLK-L", "GIFT CARD/500");
    let mut all = SseClient::open(&app, "").await;
    let mut by_sku = SseClient::open(&app, "?sku=TEE-112-BLK-L").await;
    let mut by_loc = SseClient::open(&app, "?location_id=TW001").await;
    let mut both = SseClient::open(&app, "?sku=TEE-112-BLK-L&location_id=TW001").await;
    let mut encoded = SseClient::open(&app, "?sku=GIFT%20CARD%2F500&location_id=TW002").await;

    let changes = [
        change("chg-1", "TW001", a, 1),
        change("chg-2", "TW001", b, 2),
        change("chg-3", "TW002", a, 3),
        change("chg-4", "TW002", b, 4),
        change("chg-5", "TW001", a, 5),
    ];
    publish_changes(&app, &changes).await;

    // Every stream's last match is chg-5 (or chg-4 for the last one): everything it was sent
    // before that has arrived by then, in order.
    let ids = |evs: &[SseEvent]| -> Vec<String> {
        evs.iter()
            .map(|e| e.id.clone().unwrap_or_default())
            .collect()
    };
    let got = all.changes_until("chg-5").await;
    assert_eq!(ids(&got), ["chg-1", "chg-2", "chg-3", "chg-4", "chg-5"]);
    for (ev, sent) in got.iter().zip(&changes) {
        assert_eq!(ev.event.as_deref(), Some("change"));
        assert_eq!(&ev.json(), sent, "data is the change event");
    }
    assert_eq!(
        ids(&by_sku.changes_until("chg-5").await),
        ["chg-1", "chg-3", "chg-5"]
    );
    assert_eq!(
        ids(&by_loc.changes_until("chg-5").await),
        ["chg-1", "chg-2", "chg-5"]
    );
    assert_eq!(ids(&both.changes_until("chg-5").await), ["chg-1", "chg-5"]);
    let got = encoded.changes_until("chg-4").await;
    assert_eq!(ids(&got), ["chg-4"]);
    assert_eq!(got[0].json()["sku"], json!(b));

    // The filtered streams stay quiet until something matches them.
    publish_changes(&app, &[change("chg-6", "TW002", b, 6)]).await;
    assert_eq!(ids(&encoded.changes_until("chg-6").await), ["chg-6"]);
    assert_eq!(ids(&all.changes_until("chg-6").await), ["chg-6"]);
    publish_changes(&app, &[change("chg-7", "TW001", a, 7)]).await;
    assert_eq!(ids(&by_sku.changes_until("chg-7").await), ["chg-7"]);
    assert_eq!(ids(&by_loc.changes_until("chg-7").await), ["chg-7"]);
    assert_eq!(ids(&both.changes_until("chg-7").await), ["chg-7"]);

    let clients = app
        .metric("omnistock_sse_clients")
        .await
        .expect("omnistock_sse_clients in /metrics");
    assert!(
        clients >= 5.0,
        "five clients connected, /metrics says {clients}"
    );
}

#[tokio::test]
async fn sse_a_client_sees_a_movements_change_within_a_second() {
    let app = spawn_app().await;
    app.store("TW001", 25.05306, 121.52639).await;
    let sku = "TEE-112-BLK-L";
    app.stock("TW001", sku, 5).await;
    let mut stream = SseClient::open(&app, "?sku=TEE-112-BLK-L&location_id=TW001").await;
    app.publish("TW001", &movement("rcv-1", "TW001", sku, "receipt", 3))
        .await;

    // When the commit becomes visible, and when the change reaches the client (the stock-up's
    // own change may come first if the relay had not published it yet).
    let committed = async {
        loop {
            if app.on_hand("TW001", sku).await == Some(8) {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let received = async {
        loop {
            let ev = stream.next(DEADLINE).await.expect("the stream is open");
            if ev.event.as_deref() == Some("change") && ev.json()["on_hand"] == json!(8) {
                return (Instant::now(), ev);
            }
        }
    };
    let (committed_at, (received_at, ev)) =
        tokio::time::timeout(DEADLINE, async { tokio::join!(committed, received) })
            .await
            .expect("the movement's change reached the client");
    let body = ev.json();
    assert_eq!(body["location_id"], json!("TW001"));
    assert_eq!(body["sku"], json!(sku));
    assert_eq!(body["cause"], json!("receipt"));
    assert_eq!(body["reference"], json!("rcv-1"));
    let event_id = body["event_id"].as_str().expect("event_id");
    assert_eq!(
        ev.id.as_deref(),
        Some(event_id),
        "the SSE id is the event_id"
    );
    // Loose: the point is that it arrives; speed is measured elsewhere.
    let gap = received_at.saturating_duration_since(committed_at);
    assert!(
        gap < Duration::from_secs(1),
        "change arrived {gap:?} after the commit"
    );
}

#[tokio::test]
async fn sse_needs_a_read_key_and_valid_filters() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/v1/stream"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], json!("unauthorized"));

    for (query, field) in [
        ("?location_id=TW.001", "location_id"),
        ("?location_id=", "location_id"),
        ("?sku=TEE-112-BLK-L&location_id=TW%20001", "location_id"),
        ("?sku=", "sku"),
        ("?sku=TEE%0ARED", "sku"),
    ] {
        let (status, body) = app.get(&format!("/v1/stream{query}"), READ_KEY).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"], json!("invalid_request"), "{query}");
        assert_eq!(body["details"]["field"], json!(field), "{query}");
    }

    // Any key with the read scope may listen.
    let r = app
        .http
        .get(app.url("/v1/stream?location_id=TW001"))
        .bearer_auth(RESERVE_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sse_streams_end_when_the_daemon_stops() {
    let mut app = spawn_app().await;
    let mut stream = SseClient::open(&app, "").await;
    publish_changes(&app, &[change("chg-1", "TW001", "A", 1)]).await;
    assert_eq!(
        stream.next(DEADLINE).await.and_then(|e| e.id).as_deref(),
        Some("chg-1")
    );
    // Graceful shutdown waits for open connections: an open stream must not hold it up.
    tokio::time::timeout(Duration::from_secs(8), app.stop())
        .await
        .expect("the daemon stopped with a stream open");
    assert!(
        stream.next(DEADLINE).await.is_none(),
        "the stream ended with the daemon"
    );
}
