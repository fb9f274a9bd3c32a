//! `/metrics`: the histograms and gauges move when their event happens.
//!
//! The recorder is one per process, and `cargo test` runs many daemons in one process: every
//! assertion is a delta between two scrapes, or on a label value no other test uses.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{movement, spawn_app, wait_until, TestApp, ADMIN_KEY, READ_KEY, RESERVE_KEY};

/// One sample of the exposition text: name, labels, value.
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (what the exporter writes: no escaped quotes in the
/// label values these tests look at).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// The sum of every series of `name` carrying all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .sum()
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn hold(app: &TestApp, id: &str, location: &str, sku: &str, quantity: i64) -> u16 {
    hold_in(app, id, location, sku, quantity, None).await
}

async fn hold_in(
    app: &TestApp,
    id: &str,
    location: &str,
    sku: &str,
    quantity: i64,
    channel: Option<&str>,
) -> u16 {
    let mut body = json!({"reservation_id": id, "location_id": location,
                          "lines": [{"sku": sku, "quantity": quantity}]});
    if let Some(c) = channel {
        body["channel"] = json!(c);
    }
    app.send(Method::POST, "/v1/reservations", RESERVE_KEY, &body)
        .await
        .0
}

#[tokio::test]
async fn ingesting_movements_grows_the_batch_and_delay_histograms() {
    let app = spawn_app().await;
    app.store("MX1", 25.0, 121.5).await;
    let before = app.metrics().await;
    let n = 12;
    for i in 0..n {
        app.publish(
            "MX1",
            &movement(&format!("mx-{i}"), "MX1", "MX-A", "receipt", 1),
        )
        .await;
    }
    app.wait_for_ledger(n).await;
    // The histograms are recorded just after the commit the ledger shows.
    let grown = |name: &'static str, by: f64| {
        let before = sum(&before, name, &[]);
        let app = &app;
        async move { sum(&app.metrics().await, name, &[]) - before >= by }
    };
    wait_until("the batch size histogram to count the movements", || {
        grown("omnistock_ingest_batch_size_sum", n as f64)
    })
    .await;
    let after = app.metrics().await;
    let delta = |name: &str| sum(&after, name, &[]) - sum(&before, name, &[]);
    assert!(delta("omnistock_ingest_batch_size_count") >= 1.0, "{after}");
    assert!(delta("omnistock_ingest_batch_duration_seconds_count") >= 1.0);
    // The old counter divided microseconds by a million in integers: a fast batch added 0.
    assert!(delta("omnistock_ingest_batch_duration_seconds_sum") > 0.0);
    assert!(
        delta("omnistock_ingest_publish_to_commit_seconds_count") >= n as f64,
        "one observation per message"
    );
    assert!(delta("omnistock_commit_to_visible_seconds_count") >= 1.0);
    // Buckets are cumulative and end with +Inf = count.
    let inf = sum(
        &after,
        "omnistock_ingest_batch_size_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, sum(&after, "omnistock_ingest_batch_size_count", &[]));
    assert!(after.contains("# TYPE omnistock_ingest_batch_size histogram"));
    assert!(
        !after.contains("omnistock_ingest_batch_seconds_total"),
        "replaced by the batch duration histogram"
    );
    assert_eq!(
        sum(&after, "omnistock_job_up", &[("job", "ingest")]),
        1.0,
        "{after}"
    );
    assert!(
        sum(
            &after,
            "omnistock_job_last_success_timestamp_seconds",
            &[("job", "ingest")]
        ) > 0.0
    );
}

#[tokio::test]
async fn holds_are_timed_by_outcome_and_a_short_one_is_an_oversell_attempt() {
    let app = spawn_app().await;
    app.store("MH1", 25.0, 121.5).await;
    app.stock("MH1", "MH-A", 3).await;
    let channel = unique("ch");
    let (status, body) = app
        .send(
            Method::PUT,
            &format!("/v1/channels/{channel}"),
            ADMIN_KEY,
            &json!({"locations": ["MH1"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let before = app.metrics().await;

    assert_eq!(hold(&app, "mh-1", "MH1", "MH-A", 2).await, 201);
    assert_eq!(hold(&app, "mh-1", "MH1", "MH-A", 2).await, 200, "a replay");
    assert_eq!(hold(&app, "mh-2", "MH1", "MH-A", 2).await, 409, "one left");
    assert_eq!(
        hold_in(&app, "mh-3", "MH1", "MH-A", 5, Some(&channel)).await,
        409
    );

    let after = app.metrics().await;
    let delta = |outcome: &str| {
        let l = [("outcome", outcome)];
        sum(&after, "omnistock_hold_duration_seconds_count", &l)
            - sum(&before, "omnistock_hold_duration_seconds_count", &l)
    };
    assert!(delta("created") >= 1.0, "{after}");
    assert!(delta("replay") >= 1.0);
    assert!(delta("insufficient") >= 2.0);
    // Every ordinary hold goes through its (location, SKU) group, even alone.
    let groups = |name: &str| sum(&after, name, &[]) - sum(&before, name, &[]);
    assert!(
        groups("omnistock_hold_group_size_count") >= 1.0,
        "no group recorded: {after}"
    );
    assert!(
        groups("omnistock_hold_group_size_sum") >= groups("omnistock_hold_group_size_count"),
        "{after}"
    );
    // This channel is this test's own: exactly its one refused hold.
    assert_eq!(
        sum(
            &after,
            "omnistock_oversell_attempts_total",
            &[("operation", "hold"), ("channel", &channel)]
        ),
        1.0,
        "{after}"
    );
    let none = [("operation", "hold"), ("channel", "none")];
    assert!(
        sum(&after, "omnistock_oversell_attempts_total", &none)
            - sum(&before, "omnistock_oversell_attempts_total", &none)
            >= 1.0
    );
}

#[tokio::test]
async fn a_route_no_location_can_serve_is_timed_and_counted_as_an_oversell_attempt() {
    let app = spawn_app().await;
    app.put_location(
        "MR1",
        json!({"name": "MR1", "kind": "warehouse", "lat": 25.0, "lon": 121.5, "ship_from": true}),
    )
    .await;
    app.stock("MR1", "MR-A", 1).await;
    let before = app.metrics().await;
    let order = |id: &str, quantity: i64| {
        json!({"order_id": id, "lines": [{"sku": "MR-A", "quantity": quantity}],
               "fulfilment": "delivery", "customer": {"lat": 25.0, "lon": 121.5}})
    };
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/orders/route",
            RESERVE_KEY,
            &order("mr-1", 1),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/orders/route",
            RESERVE_KEY,
            &order("mr-2", 5),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let after = app.metrics().await;
    let delta = |name: &str, l: &[(&str, &str)]| sum(&after, name, l) - sum(&before, name, l);
    assert!(
        delta(
            "omnistock_route_duration_seconds_count",
            &[("outcome", "routed")]
        ) >= 1.0
    );
    assert!(
        delta(
            "omnistock_route_duration_seconds_count",
            &[("outcome", "no_option")]
        ) >= 1.0,
        "{after}"
    );
    assert!(
        delta(
            "omnistock_oversell_attempts_total",
            &[("operation", "route")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn http_latency_is_labelled_by_route_template_never_by_the_raw_path() {
    let app = spawn_app().await;
    let sku = unique("RAW-SKU-");
    let route = [
        ("method", "GET"),
        ("route", "/v1/availability/{sku}"),
        ("status", "200"),
    ];
    let before = app.metrics().await;
    for _ in 0..3 {
        let (status, body) = app.get(&format!("/v1/availability/{sku}"), READ_KEY).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = app.get(&format!("/no/such/{sku}"), READ_KEY).await;
    assert_eq!(status, 404);
    let after = app.metrics().await;
    let name = "omnistock_http_request_duration_seconds_count";
    assert!(
        sum(&after, name, &route) - sum(&before, name, &route) >= 3.0,
        "{after}"
    );
    assert!(sum(&after, name, &[("route", "unmatched"), ("status", "404")]) >= 1.0);
    assert!(!after.contains(&sku), "the raw path leaked into a label");
    // Cache reads are counted too.
    let reads = |t: &str| {
        sum(t, "omnistock_cache_hits_total", &[])
            + sum(t, "omnistock_cache_misses_total", &[])
            + sum(t, "omnistock_cache_fallbacks_total", &[])
    };
    assert!(reads(&after) - reads(&before) >= 3.0);
}

#[tokio::test]
async fn the_consumer_lag_and_outbox_backlog_are_polled_by_a_supervised_job() {
    let app = spawn_app().await;
    wait_until("the metrics-poll job to succeed once", || async {
        let text = app.metrics().await;
        sum(
            &text,
            "omnistock_job_last_success_timestamp_seconds",
            &[("job", "metrics-poll")],
        ) > 0.0
    })
    .await;
    let text = app.metrics().await;
    assert_eq!(
        sum(&text, "omnistock_job_up", &[("job", "metrics-poll")]),
        1.0
    );
    for gauge in [
        "omnistock_ingest_consumer_pending_messages",
        "omnistock_ingest_consumer_ack_pending_messages",
        "omnistock_outbox_backlog_events",
    ] {
        assert!(
            samples(&text)
                .iter()
                .any(|s| s.name == gauge && s.value >= 0.0),
            "{gauge} missing: {text}"
        );
    }
}
