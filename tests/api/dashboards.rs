//! `deploy/grafana/`: the dashboard and the alert rules parse, every rule is complete, every
//! panel has its thresholds, and every metric they query is one a real daemon exports.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{movement, spawn_with, wait_until, Isolation, READ_KEY, RESERVE_KEY};
use crate::metrics::{samples, sum};

fn grafana_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/grafana")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `omnistock_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("omnistock_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The dashboard's queries, checking each panel's thresholds on the way.
fn dashboard_queries() -> Vec<String> {
    let dash: Value = serde_json::from_str(&grafana_file("omnistock-dashboard.json"))
        .expect("the dashboard is JSON");
    assert_eq!(dash["uid"], json!("omnistock"));
    let panels = dash["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != json!("row")) {
        let title = p["title"].as_str().expect("a title");
        let steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no thresholds"));
        let colors: BTreeSet<&str> = steps.iter().filter_map(|s| s["color"].as_str()).collect();
        assert_eq!(
            colors,
            BTreeSet::from(["green", "orange", "red"]),
            "{title}: red, amber and green"
        );
        let values: Vec<f64> = steps.iter().filter_map(|s| s["value"].as_f64()).collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "{title}: thresholds rise"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
            queries.push(expr.to_owned());
        }
    }
    queries
}

/// The rules' expressions, checking each rule on the way.
fn alert_expressions() -> Vec<String> {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&grafana_file("omnistock-alerts.yaml"))
            .expect("the rules are YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    let mut exprs = Vec::new();
    let mut names = BTreeSet::new();
    for g in groups {
        assert!(g["name"].as_str().is_some(), "a group has a name");
        for r in g["rules"].as_sequence().expect("rules") {
            let alert = r["alert"].as_str().expect("alert");
            assert!(names.insert(alert.to_owned()), "{alert} twice");
            let expr = r["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: expr"));
            let pending = r["for"].as_str().unwrap_or_else(|| panic!("{alert}: for"));
            assert!(
                pending.ends_with('m') || pending.ends_with('s'),
                "{alert}: for {pending}"
            );
            let severity = r["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("warning" | "critical")),
                "{alert}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{alert}: annotations.{a}"
                );
            }
            exprs.push(expr.to_owned());
        }
    }
    for wanted in [
        "OmnistockSyncDelayHigh",
        "OmnistockDeadLetters",
        "OmnistockConsumerLag",
        "OmnistockOversellAttempts",
        "OmnistockJobDown",
        "OmnistockOutboxBacklog",
    ] {
        assert!(names.contains(wanted), "{wanted} missing");
    }
    exprs
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            "sum(rate(omnistock_a_total[5m])) / max by (job) (omnistock_b{job=\"omnistock_c\"})"
        ),
        ["omnistock_a_total", "omnistock_b", "omnistock_c"]
    );
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported_by_a_real_daemon() {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for expr in dashboard_queries().iter().chain(&alert_expressions()) {
        wanted.extend(metric_names(expr));
    }
    // Label values that look like names (a job called omnistock_…) would be caught here.
    assert!(wanted.len() > 20, "{wanted:?}");

    let app = spawn_with(Isolation::new().await, |c| c.reconcile_interval_seconds = 1).await;
    app.put_location(
        "GF1",
        json!({"name": "GF1", "kind": "warehouse", "lat": 25.0, "lon": 121.5, "ship_from": true}),
    )
    .await;
    // A movement over NATS, and one the daemon dead-letters.
    app.stock("GF1", "GF-A", 3).await;
    app.publish_raw(&app.subjects.movements("GF1"), "not json")
        .await;
    app.wait_for_deadletters(1).await;
    // A hold, a hold refused for want of stock, an order no location can serve, a read.
    let hold = |id: &str, q: i64| json!({"reservation_id": id, "location_id": "GF1", "lines": [{"sku": "GF-A", "quantity": q}]});
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("gf-1", 1),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &hold("gf-2", 9),
        )
        .await;
    assert_eq!(status, 409);
    let order = json!({"order_id": "gf-o1", "lines": [{"sku": "GF-A", "quantity": 9}],
                       "fulfilment": "delivery", "customer": {"lat": 25.0, "lon": 121.5}});
    let (status, _) = app
        .send(Method::POST, "/v1/orders/route", RESERVE_KEY, &order)
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .send(
            Method::POST,
            "/v1/orders/route",
            RESERVE_KEY,
            &json!({"order_id": "gf-o2", "lines": [{"sku": "GF-A", "quantity": 1}],
                    "fulfilment": "delivery", "customer": {"lat": 25.0, "lon": 121.5}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/v1/availability/GF-A", READ_KEY).await.0, 200);
    app.publish("GF1", &movement("gf-m2", "GF1", "GF-A", "receipt", 1))
        .await;
    app.wait_for_ledger(2).await;
    // The polled gauges and the reconciliation's need their jobs to have run once.
    wait_until(
        "the polling and reconciliation jobs to have run",
        || async {
            let text = app.metrics().await;
            let ran = |job: &str| {
                sum(
                    &text,
                    "omnistock_job_last_success_timestamp_seconds",
                    &[("job", job)],
                ) > 0.0
            };
            ran("metrics-poll") && ran("reconcile") && ran("outbox-relay")
        },
    )
    .await;

    let text = app.metrics().await;
    let exported: BTreeSet<String> = samples(&text).into_iter().map(|s| s.name).collect();
    let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or the alerts but not exported: {missing:?}\n{text}"
    );
}
