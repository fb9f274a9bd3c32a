//! `POST /v1/movements` and `GET /v1/movements`: movements over HTTP count exactly once with
//! those from NATS, and the ledger history pages newest first without gaps.

use std::collections::{BTreeSet, HashMap};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    movement, movement_at, spawn_app, spawn_with, Isolation, TestApp, ADMIN_KEY, READ_KEY,
    RESERVE_KEY,
};

const BOUND_KEY: &str = "test-tw001-writer";

async fn post(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    app.send(Method::POST, "/v1/movements", key, body).await
}

/// (event_id, status, reason) of each result, in order.
fn outcomes(resp: &Value) -> Vec<(Value, String, Option<String>)> {
    resp["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {resp}"))
        .iter()
        .map(|r| {
            (
                r["event_id"].clone(),
                r["status"].as_str().expect("status").to_owned(),
                r["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn applied(s: &str) -> (Value, String, Option<String>) {
    (json!(s), "applied".into(), None)
}

fn duplicate(s: &str) -> (Value, String, Option<String>) {
    (json!(s), "duplicate".into(), None)
}

fn rejected(id: Value, reason: &str) -> (Value, String, Option<String>) {
    (id, "rejected".into(), Some(reason.into()))
}

#[tokio::test]
async fn a_batch_gets_one_result_per_element_and_only_the_good_count() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let mut no_id = movement("x", "TW001", "TEE", "receipt", 1);
    no_id.as_object_mut().expect("object").remove("event_id");
    let body = json!([
        movement("e1", "TW001", "TEE", "receipt", 10),
        movement("e2", "TW001", "TEE", "sale", 3),
        movement("e1", "TW001", "TEE", "receipt", 10),
        movement("e3", "TW001", "TEE", "steal", 1),
        movement("e4", "NOPE01", "TEE", "receipt", 5),
        no_id,
        "not a movement",
        movement("e5", "TW001", "TEE", "receipt", 0),
    ]);
    let (status, resp) = post(&app, ADMIN_KEY, &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        outcomes(&resp),
        vec![
            applied("e1"),
            applied("e2"),
            duplicate("e1"),
            rejected(json!("e3"), "invalid_kind"),
            rejected(json!("e4"), "unknown_location"),
            rejected(Value::Null, "invalid_event_id"),
            rejected(Value::Null, "invalid_movement"),
            rejected(json!("e5"), "invalid_quantity"),
        ]
    );
    assert!(resp["results"][3]["message"].is_string(), "{resp}");
    // Answered after the commit: the levels already say so.
    assert_eq!(app.on_hand("TW001", "TEE").await, Some(7));
    assert_eq!(app.ledger_count().await, 2);
    app.assert_ledger_consistent().await;

    // The same batch again changes nothing.
    let (status, resp) = post(&app, ADMIN_KEY, &body).await;
    assert_eq!(status, 200, "{resp}");
    let again = outcomes(&resp);
    assert_eq!(
        again[..3],
        [duplicate("e1"), duplicate("e2"), duplicate("e1")]
    );
    assert_eq!(app.on_hand("TW001", "TEE").await, Some(7));
    assert_eq!(app.ledger_count().await, 2);

    // One movement alone (not an array) gets a one-element answer.
    let (status, resp) = post(&app, ADMIN_KEY, &movement("e6", "TW001", "TEE", "sale", 1)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(outcomes(&resp), vec![applied("e6")]);
    assert_eq!(app.on_hand("TW001", "TEE").await, Some(6));
    // Rejections over HTTP are answered, not dead-lettered.
    assert!(app.deadletters().await.is_empty());
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn an_event_id_counts_once_whether_it_came_by_nats_or_http() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;

    // NATS first, then HTTP.
    app.publish("TW001", &movement("n1", "TW001", "TEE", "receipt", 10))
        .await;
    app.wait_for_ledger(1).await;
    let (status, resp) = post(
        &app,
        ADMIN_KEY,
        &json!([movement("n1", "TW001", "TEE", "receipt", 10)]),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(outcomes(&resp), vec![duplicate("n1")]);
    assert_eq!(app.on_hand("TW001", "TEE").await, Some(10));

    // HTTP first, then NATS (with a fresh movement behind it, to know NATS got there).
    let (_, resp) = post(&app, ADMIN_KEY, &movement("h1", "TW001", "TEE", "sale", 4)).await;
    assert_eq!(outcomes(&resp), vec![applied("h1")]);
    app.publish(
        "TW001",
        &json!([
            movement("h1", "TW001", "TEE", "sale", 4),
            movement("h2", "TW001", "TEE", "sale", 1),
        ]),
    )
    .await;
    app.wait_for_ledger(3).await;
    assert_eq!(app.on_hand("TW001", "TEE").await, Some(5));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn concurrent_posts_of_one_batch_count_once() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            movement(
                &format!("c{i}"),
                "TW001",
                &format!("SKU-{}", i % 5),
                "receipt",
                2,
            )
        })
        .collect();
    let body = json!(batch);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let http = app.http.clone();
            let url = app.url("/v1/movements");
            let body = body.clone();
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await
                    .expect("post");
                (r.status().as_u16(), r.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut applied_count: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let (status, resp) = t.await.expect("task");
        assert_eq!(status, 200, "{resp}");
        for (id, status, _) in outcomes(&resp) {
            assert!(status == "applied" || status == "duplicate", "{resp}");
            if status == "applied" {
                *applied_count
                    .entry(id.as_str().expect("id").to_owned())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(applied_count.len(), 40, "every event applied by someone");
    assert!(applied_count.values().all(|&n| n == 1), "{applied_count:?}");
    assert_eq!(app.ledger_count().await, 40);
    for s in 0..5 {
        assert_eq!(app.on_hand("TW001", &format!("SKU-{s}")).await, Some(16));
    }
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn posting_needs_the_write_scope() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let body = movement("w1", "TW001", "TEE", "receipt", 1);
    for key in [READ_KEY, RESERVE_KEY] {
        let (status, resp) = post(&app, key, &body).await;
        assert_eq!(status, 403, "{resp}");
        assert_eq!(resp["details"]["required_scope"], "write");
    }
    assert_eq!(app.ledger_count().await, 0);
    // And reading the history does not.
    let (status, resp) = app.get("/v1/movements", READ_KEY).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn a_bound_key_posts_and_sees_only_its_location() {
    let app = spawn_with(Isolation::new().await, |c| {
        c.api_keys = format!("{ADMIN_KEY}=*,{BOUND_KEY}=read|write@TW001")
            .parse()
            .expect("keys");
    })
    .await;
    app.store("TW001", 25.0, 121.5).await;
    app.store("TW002", 25.1, 121.6).await;

    let (status, resp) = post(
        &app,
        BOUND_KEY,
        &json!([
            movement("b1", "TW001", "TEE", "receipt", 3),
            movement("b2", "TW002", "TEE", "receipt", 3),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        outcomes(&resp),
        vec![applied("b1"), rejected(json!("b2"), "forbidden_location")]
    );
    assert_eq!(app.on_hand("TW002", "TEE").await, None);

    // Nothing of its own: refused whole.
    let (status, resp) = post(
        &app,
        BOUND_KEY,
        &movement("b3", "TW002", "TEE", "receipt", 1),
    )
    .await;
    assert_eq!(status, 403, "{resp}");
    assert_eq!(app.ledger_count().await, 1);

    let (_, resp) = post(
        &app,
        ADMIN_KEY,
        &movement("b4", "TW002", "TEE", "receipt", 1),
    )
    .await;
    assert_eq!(outcomes(&resp), vec![applied("b4")]);
    let (status, resp) = app.get("/v1/movements", BOUND_KEY).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(ids(&resp), vec!["b1"]);
    let (status, _) = app.get("/v1/movements?location_id=TW002", BOUND_KEY).await;
    assert_eq!(status, 403);
    let (_, resp) = app.get("/v1/movements", ADMIN_KEY).await;
    assert_eq!(ids(&resp), vec!["b4", "b1"]);
}

fn ids(resp: &Value) -> Vec<String> {
    resp["movements"]
        .as_array()
        .unwrap_or_else(|| panic!("no movements: {resp}"))
        .iter()
        .map(|m| m["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

#[tokio::test]
async fn history_pages_newest_first_with_filters() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    app.store("TW002", 25.1, 121.6).await;
    // 23 of SKU A at TW001 in several posts, interleaved with others.
    let mut expected_a = Vec::new();
    for round in 0..4 {
        let mut batch = Vec::new();
        for i in 0..6 {
            let n = round * 6 + i;
            if n >= 23 {
                break;
            }
            let id = format!("a{n}");
            batch.push(movement_at(
                &id,
                "TW001",
                "A",
                "receipt",
                1,
                &format!("2026-11-{:02}T10:00:00Z", n + 1),
            ));
            expected_a.push(id);
            batch.push(movement(&format!("b{n}"), "TW002", "A", "receipt", 1));
            batch.push(movement(&format!("o{n}"), "TW001", "OTHER", "receipt", 1));
        }
        let (status, resp) = post(&app, ADMIN_KEY, &json!(batch)).await;
        assert_eq!(status, 200, "{resp}");
    }
    expected_a.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/movements?sku=A&location_id=TW001&limit=5".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, resp) = app.get(&path, READ_KEY).await;
        assert_eq!(status, 200, "{resp}");
        let page = ids(&resp);
        assert!(page.len() <= 5);
        seen.extend(page);
        pages += 1;
        match resp["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, expected_a, "newest first, no gaps, no repeats");

    // Fields of one row.
    let (_, resp) = app
        .get("/v1/movements?sku=A&location_id=TW001&limit=1", READ_KEY)
        .await;
    let m = &resp["movements"][0];
    assert_eq!(m["event_id"], "a22");
    assert_eq!(m["kind"], "receipt");
    assert_eq!(m["quantity"], 1);
    assert_eq!(m["applied"], true);
    assert_eq!(m["on_hand_after"], 23);
    assert!(m["recorded_at"].is_string() && m["occurred_at"].is_string());
    assert!(resp["next_cursor"].is_string());

    // `since` bounds occurred_at.
    let (_, resp) = app
        .get(
            "/v1/movements?sku=A&location_id=TW001&since=2026-11-21T10:00:00Z",
            READ_KEY,
        )
        .await;
    assert_eq!(ids(&resp), vec!["a22", "a21", "a20"]);
    assert!(resp["next_cursor"].is_null());

    // Filters alone: location only, sku only, none (default limit 50).
    let (_, resp) = app.get("/v1/movements?location_id=TW002", READ_KEY).await;
    assert_eq!(ids(&resp).len(), 23);
    assert!(ids(&resp).iter().all(|i| i.starts_with('b')));
    let (_, resp) = app.get("/v1/movements?sku=OTHER", READ_KEY).await;
    assert_eq!(ids(&resp).len(), 23);
    let (_, resp) = app.get("/v1/movements", READ_KEY).await;
    assert_eq!(ids(&resp).len(), 50);
    let all: BTreeSet<String> = ids(&resp).into_iter().collect();
    assert_eq!(all.len(), 50);
}

#[tokio::test]
async fn a_late_delta_shows_as_not_applied() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let (_, resp) = post(
        &app,
        ADMIN_KEY,
        &json!([
            movement_at("k1", "TW001", "TEE", "count", 5, "2026-11-23T10:00:00Z"),
            // Occurred before the count: the count already saw it.
            movement_at("k2", "TW001", "TEE", "sale", 2, "2026-11-23T09:00:00Z"),
            movement_at("k3", "TW001", "TEE", "sale", 1, "2026-11-23T11:00:00Z"),
        ]),
    )
    .await;
    assert_eq!(
        outcomes(&resp),
        vec![applied("k1"), applied("k2"), applied("k3")]
    );
    let (_, resp) = app.get("/v1/movements?sku=TEE", READ_KEY).await;
    let flags: Vec<(String, bool)> = resp["movements"]
        .as_array()
        .expect("movements")
        .iter()
        .map(|m| {
            (
                m["event_id"].as_str().expect("id").to_owned(),
                m["applied"].as_bool().expect("applied"),
            )
        })
        .collect();
    assert_eq!(
        flags,
        vec![
            ("k3".into(), true),
            ("k2".into(), false),
            ("k1".into(), true)
        ]
    );
    assert_eq!(app.on_hand("TW001", "TEE").await, Some(4));
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn bad_requests_name_the_problem() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let long_sku = "S".repeat(129);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("since=yesterday", "since"),
        ("since=2026-11-23T10:00:00", "since"),
        ("cursor=zzz", "cursor"),
        ("cursor=m1.-3", "cursor"),
        ("location_id=TW.001", "location_id"),
        (&format!("sku={long_sku}") as &str, "sku"),
    ] {
        let (status, resp) = app.get(&format!("/v1/movements?{query}"), READ_KEY).await;
        assert_eq!(status, 422, "{query}: {resp}");
        assert_eq!(resp["details"]["field"], field, "{query}: {resp}");
    }
    let (status, _) = app.get("/v1/movements?limit=500", READ_KEY).await;
    assert_eq!(status, 200);

    // Errors of the whole body.
    let r = app
        .http
        .post(app.url("/v1/movements"))
        .bearer_auth(ADMIN_KEY)
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let (status, resp) = post(&app, ADMIN_KEY, &json!([])).await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["details"]["field"], "body");
    let big: Vec<Value> = (0..1001)
        .map(|i| movement(&format!("big{i}"), "TW001", "TEE", "receipt", 1))
        .collect();
    let (status, resp) = post(&app, ADMIN_KEY, &json!(big)).await;
    assert_eq!(status, 422, "{resp}");
    assert!(resp["message"].as_str().expect("message").contains("1000"));
    assert_eq!(app.ledger_count().await, 0);
}

/// A posted movement is recorded as published when its request came in, whatever its
/// `occurred_at` says; a `published_at` in the body is not the sender's to set and is ignored.
#[tokio::test]
async fn a_posted_movement_is_published_when_its_request_came_in() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let long_ago = "2026-11-01T08:00:00Z";
    let mut body = movement_at("p1", "TW001", "A", "receipt", 2, long_ago);
    body["published_at"] = json!(long_ago);
    let before = chrono::Utc::now();
    let (status, resp) = post(&app, ADMIN_KEY, &body).await;
    let after = chrono::Utc::now();
    assert_eq!(status, 200, "{resp}");
    assert_eq!(outcomes(&resp), vec![applied("p1")]);

    let (status, history) = app.get("/v1/movements?location_id=TW001", READ_KEY).await;
    assert_eq!(status, 200, "{history}");
    let row = &history["movements"][0];
    assert_eq!(row["event_id"], "p1", "{history}");
    let published = row["published_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("a published_at: {row}"));
    // PostgreSQL keeps microseconds: allow the truncation at the lower bound.
    assert!(
        before - chrono::Duration::milliseconds(1) <= published && published <= after,
        "published {published}, request between {before} and {after}: {row}"
    );
    let recorded =
        chrono::DateTime::parse_from_rfc3339(row["recorded_at"].as_str().expect("recorded_at"))
            .expect("rfc3339");
    assert!(
        published <= recorded + chrono::Duration::seconds(1),
        "{row}"
    );
}
