//! Future supply and preorders: `/v1/supply`, `"preorder": true` holds, `at=` reads, fills by
//! receipts / transfer_ins carrying `supply_id`, cancellation, and the preorder race.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{movement, spawn_app, wait_until, TestApp, ADMIN_KEY, READ_KEY, RESERVE_KEY};

fn day(d: i64) -> String {
    (Utc::now() + Duration::days(d)).to_rfc3339()
}

async fn supply(app: &TestApp, id: &str, loc: &str, sku: &str, q: i64, at: &str) -> (u16, Value) {
    app.send(
        Method::POST,
        "/v1/supply",
        ADMIN_KEY,
        &json!({"supply_id": id, "location_id": loc, "sku": sku, "quantity": q, "expected_at": at}),
    )
    .await
}

async fn preorder(app: &TestApp, id: &str, loc: &str, sku: &str, q: i64) -> (u16, Value) {
    app.send(
        Method::POST,
        "/v1/reservations",
        RESERVE_KEY,
        &json!({"reservation_id": id, "location_id": loc, "preorder": true,
                "lines": [{"sku": sku, "quantity": q}]}),
    )
    .await
}

async fn line(app: &TestApp, id: &str) -> Value {
    let (s, v) = app.get(&format!("/v1/supply/{id}"), READ_KEY).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn hold(app: &TestApp, id: &str) -> Value {
    let (s, v) = app
        .get(&format!("/v1/reservations/{id}"), RESERVE_KEY)
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Allocations agree with the lines' `allocated` and the preorder lines' `waiting`.
async fn assert_allocations_agree(app: &TestApp) {
    let bad: Vec<(String,)> = sqlx::query_as(
        "SELECT s.supply_id FROM supply_lines s
         LEFT JOIN (SELECT supply_id, sum(quantity) q FROM preorder_allocations GROUP BY 1) a
           USING (supply_id)
         WHERE s.allocated <> coalesce(a.q, 0)
         UNION ALL
         SELECT l.reservation_id FROM reservation_lines l
         LEFT JOIN (SELECT reservation_id, sku, sum(quantity) q FROM preorder_allocations
                    GROUP BY 1, 2) a USING (reservation_id, sku)
         WHERE l.waiting <> coalesce(a.q, 0)",
    )
    .fetch_all(&app.pool)
    .await
    .expect("allocation invariant");
    assert!(bad.is_empty(), "allocations disagree: {bad:?}");
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn supply_lines_are_created_replaced_listed_and_bad_values_name_their_field() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    let (s, v) = supply(&app, "PO-1", "TW001", "TEE", 10, &day(3)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["remaining"].clone(), v["status"].clone()),
        (json!(10), json!("open"))
    );
    let (s, v) = supply(&app, "PO-1", "TW001", "TEE", 12, &day(4)).await;
    assert_eq!(
        (s, v["remaining"].clone()),
        (200, json!(12)),
        "the same id replaces"
    );
    let (s, v) = app
        .get("/v1/supply?sku=TEE&location_id=TW001", READ_KEY)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["supply"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["supply"][0]["remaining"], json!(12));

    for (q, at, field) in [
        (0, day(3), "quantity"),
        (-1, day(3), "quantity"),
        (1_000_000_001, day(3), "quantity"),
        (5, day(-2), "expected_at"),
    ] {
        let (s, v) = supply(&app, "PO-2", "TW001", "TEE", q, &at).await;
        assert_eq!(
            (s, v["details"]["field"].clone()),
            (422, json!(field)),
            "{q} {at}: {v}"
        );
    }
    let (s, v) = supply(&app, "PO-2", "NOWHERE", "TEE", 5, &day(1)).await;
    assert_eq!(
        (s, v["details"]["field"].clone()),
        (422, json!("location_id")),
        "{v}"
    );
    let (s, v) = supply(&app, "transfer:T1:TEE", "TW001", "TEE", 5, &day(1)).await;
    assert_eq!(
        (s, v["details"]["field"].clone()),
        (422, json!("supply_id")),
        "{v}"
    );
    let (s, v) = app.get("/v1/availability/TEE?at=tomorrow", READ_KEY).await;
    assert_eq!(
        (s, v["details"]["field"].clone()),
        (422, json!("at")),
        "{v}"
    );

    // A preorder beyond open supply (nothing on hand): 409 with what a preorder could get.
    let (s, v) = preorder(&app, "P-big", "TW001", "TEE", 13).await;
    assert_eq!(
        (s, v["error"].clone()),
        (409, json!("insufficient_stock")),
        "{v}"
    );
    assert_eq!(v["details"]["lines"][0]["requested"], json!(13));
    assert_eq!(v["details"]["lines"][0]["available"], json!(12));
    // An ordinary hold never takes supply that has not arrived.
    let (s, _) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"location_id": "TW001", "lines": [{"sku": "TEE", "quantity": 1}]}),
        )
        .await;
    assert_eq!(s, 409);
    // Preorders hold on the line: it cannot be replaced below them.
    let (s, v) = preorder(&app, "P-8", "TW001", "TEE", 8).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["preorder"], json!(true));
    assert_eq!(v["lines"][0]["waiting"], json!(8));
    assert_eq!(v["lines"][0]["held"], json!(0));
    assert_eq!(v["lines"][0]["supply"][0]["supply_id"], json!("PO-1"));
    let (s, v) = supply(&app, "PO-1", "TW001", "TEE", 7, &day(4)).await;
    assert_eq!(
        (s, v["details"]["field"].clone()),
        (409, json!("quantity")),
        "{v}"
    );
    assert_eq!(line(&app, "PO-1").await["preordered"], json!(8));
    // Releasing the preorder frees its hold on the line.
    let (s, _) = app
        .send(
            Method::DELETE,
            "/v1/reservations/P-8",
            RESERVE_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(line(&app, "PO-1").await["preordered"], json!(0));
    assert_allocations_agree(&app).await;
}

#[tokio::test]
async fn at_counts_supply_expected_by_then_less_preorders() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    app.stock("TW001", "MUG", 5).await;
    assert_eq!(
        supply(&app, "PO-M", "TW001", "MUG", 10, &day(3)).await.0,
        201
    );
    let avail = |at: Option<String>| {
        let app = &app;
        async move {
            let path = match at {
                Some(at) => format!("/v1/availability/MUG?at={}", urlencoding(&at)),
                None => "/v1/availability/MUG".into(),
            };
            let (s, v) = app.get(&path, READ_KEY).await;
            assert_eq!(s, 200, "{v}");
            v["available"].as_i64().expect("available")
        }
    };
    assert_eq!(avail(None).await, 5, "without at, unchanged");
    assert_eq!(
        avail(Some(day(2))).await,
        5,
        "before the supply is expected"
    );
    assert_eq!(avail(Some(day(4))).await, 15, "after");
    assert_eq!(preorder(&app, "P-4", "TW001", "MUG", 4).await.0, 201);
    assert_eq!(
        avail(Some(day(4))).await,
        11,
        "a preorder holds on the supply"
    );
    assert_eq!(avail(None).await, 5, "not on the shelf");
    let (s, v) = app
        .send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &json!({"skus": ["MUG"], "at": day(4)}),
        )
        .await;
    assert_eq!(
        (s, v["items"][0]["available"].clone()),
        (200, json!(11)),
        "{v}"
    );
    let (s, v) = app
        .get(
            &format!(
                "/v1/availability/MUG/nearby?lat=25&lon=121.5&at={}",
                urlencoding(&day(4))
            ),
            READ_KEY,
        )
        .await;
    assert_eq!(
        (s, v["stores"][0]["available"].clone()),
        (200, json!(11)),
        "{v}"
    );
}

fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_receipt_with_supply_id_turns_preorders_into_holds_oldest_first_once() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    assert_eq!(
        supply(&app, "PO-9", "TW001", "CAP", 10, &day(2)).await.0,
        201
    );
    for (id, q) in [("P-a", 4), ("P-b", 4), ("P-c", 2)] {
        assert_eq!(preorder(&app, id, "TW001", "CAP", q).await.0, 201);
    }
    // Over NATS: 5 arrive.
    let mut r = movement("rcv-1", "TW001", "CAP", "receipt", 5);
    r["supply_id"] = json!("PO-9");
    let before = app.ledger_count().await;
    app.publish("TW001", &r).await;
    app.wait_for_ledger(before + 1).await;
    assert_eq!(app.on_hand("TW001", "CAP").await, Some(5));
    assert_eq!(app.reserved("TW001", "CAP").await, 5);
    let a = hold(&app, "P-a").await;
    assert_eq!(
        (
            a["lines"][0]["held"].clone(),
            a["lines"][0]["waiting"].clone()
        ),
        (json!(4), json!(0))
    );
    let b = hold(&app, "P-b").await;
    assert_eq!(
        (
            b["lines"][0]["held"].clone(),
            b["lines"][0]["waiting"].clone()
        ),
        (json!(1), json!(3))
    );
    let c = hold(&app, "P-c").await;
    assert_eq!(c["lines"][0]["waiting"], json!(2));
    let l = line(&app, "PO-9").await;
    assert_eq!(
        (l["remaining"].clone(), l["preordered"].clone()),
        (json!(5), json!(5))
    );
    assert_allocations_agree(&app).await;

    // The same event again over HTTP: a duplicate, nothing fills twice.
    let (s, v) = app.send(Method::POST, "/v1/movements", ADMIN_KEY, &r).await;
    assert_eq!(
        (s, v["results"][0]["status"].clone()),
        (200, json!("duplicate")),
        "{v}"
    );
    assert_eq!(line(&app, "PO-9").await["remaining"], json!(5));
    assert_eq!(app.reserved("TW001", "CAP").await, 5);

    // The rest over HTTP: every preorder now holds, the line is filled and no longer listed.
    let mut r2 = movement("rcv-2", "TW001", "CAP", "receipt", 6);
    r2["supply_id"] = json!("PO-9");
    let (s, v) = app
        .send(Method::POST, "/v1/movements", ADMIN_KEY, &r2)
        .await;
    assert_eq!(
        (s, v["results"][0]["status"].clone()),
        (200, json!("applied")),
        "{v}"
    );
    assert_eq!(app.reserved("TW001", "CAP").await, 10);
    assert_eq!(hold(&app, "P-c").await["lines"][0]["held"], json!(2));
    let l = line(&app, "PO-9").await;
    assert_eq!(
        (l["remaining"].clone(), l["status"].clone()),
        (json!(0), json!("filled"))
    );
    let (_, list) = app.get("/v1/supply?sku=CAP", READ_KEY).await;
    assert_eq!(list["supply"], json!([]));
    let (_, a) = app.get("/v1/availability/CAP", READ_KEY).await;
    assert_eq!(a["available"], json!(1), "11 on hand, 10 held");
    // A link to an unknown line: the movement applies, the link is recorded as ignored.
    let mut r3 = movement("rcv-3", "TW001", "CAP", "receipt", 1);
    r3["supply_id"] = json!("PO-none");
    let (s, _) = app
        .send(Method::POST, "/v1/movements", ADMIN_KEY, &r3)
        .await;
    assert_eq!(s, 200);
    let (_, h) = app.get("/v1/movements?sku=CAP&limit=1", READ_KEY).await;
    assert_eq!(
        h["movements"][0]["supply_outcome"],
        json!("unknown_supply"),
        "{h}"
    );
    assert_eq!(app.on_hand("TW001", "CAP").await, Some(12));
    assert_allocations_agree(&app).await;
}

#[tokio::test]
async fn cancelling_a_line_moves_its_preorders_or_releases_them() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    assert_eq!(supply(&app, "S1", "TW001", "BAG", 5, &day(2)).await.0, 201);
    assert_eq!(supply(&app, "S2", "TW001", "BAG", 5, &day(5)).await.0, 201);
    assert_eq!(preorder(&app, "P1", "TW001", "BAG", 4).await.0, 201); // S1: 4
    assert_eq!(preorder(&app, "P2", "TW001", "BAG", 4).await.0, 201); // S1: 1, S2: 3
    app.stock("TW001", "BAG", 1).await;
    // S1 goes: P1 (4) does not fit S2's 2 free + 1 on hand: released; P2's 1 moves to S2.
    let (s, v) = app
        .send(Method::DELETE, "/v1/supply/S1", ADMIN_KEY, &json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["released"], json!(["P1"]));
    assert_eq!(v["moved"], json!(["P2"]));
    assert_eq!(v["supply"]["status"], json!("cancelled"));
    assert_eq!(hold(&app, "P1").await["status"], json!("released"));
    let p2 = hold(&app, "P2").await;
    assert_eq!(p2["lines"][0]["waiting"], json!(4));
    assert_eq!(p2["lines"][0]["supply"][0]["supply_id"], json!("S2"));
    assert_eq!(line(&app, "S2").await["preordered"], json!(4));
    assert_eq!(app.reserved("TW001", "BAG").await, 0);
    // S2 goes: P2 (4) does not fit 1 on hand either: released, nothing left waiting.
    assert_eq!(preorder(&app, "P3", "TW001", "BAG", 1).await.0, 201); // S2: 1
    let (s, v) = app
        .send(Method::DELETE, "/v1/supply/S2", ADMIN_KEY, &json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["released"], json!(["P2"]));
    assert_eq!(v["moved"], json!(["P3"]), "P3 fits the unit on hand");
    let p3 = hold(&app, "P3").await;
    assert_eq!(
        (
            p3["lines"][0]["held"].clone(),
            p3["lines"][0]["waiting"].clone()
        ),
        (json!(1), json!(0))
    );
    assert_eq!(app.reserved("TW001", "BAG").await, 1);
    let (s, _) = app
        .send(Method::DELETE, "/v1/supply/S9", ADMIN_KEY, &json!({}))
        .await;
    assert_eq!(s, 404);
    assert_allocations_agree(&app).await;
}

#[tokio::test]
async fn a_transfer_in_transit_is_supply_at_its_destination_filled_by_its_transfer_in() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    app.store("WH1", 25.1, 121.6).await;
    app.stock("WH1", "JAR", 10).await;
    let mut out = movement("t-out", "WH1", "JAR", "transfer_out", 6);
    out["transfer_id"] = json!("T1");
    out["to_location_id"] = json!("TW001");
    out["expected_at"] = json!(day(2));
    let before = app.ledger_count().await;
    app.publish("WH1", &out).await;
    app.wait_for_ledger(before + 1).await;
    let (_, v) = app.get("/v1/supply?location_id=TW001", READ_KEY).await;
    assert_eq!(v["supply"][0]["supply_id"], json!("transfer:T1:JAR"), "{v}");
    assert_eq!(v["supply"][0]["source"], json!("transfer"));
    assert_eq!(v["supply"][0]["remaining"], json!(6));
    let at = |d: i64| format!("/v1/availability/JAR?at={}", urlencoding(&day(d)));
    let (_, a) = app.get(&at(1), READ_KEY).await;
    assert_eq!(
        a["available"],
        json!(4),
        "WH1's 4 left; the transfer arrives later: {a}"
    );
    let (_, a) = app.get(&at(3), READ_KEY).await;
    assert_eq!(
        a["available"],
        json!(10),
        "and counts once its arrival is due: {a}"
    );
    let (s, v) = preorder(&app, "P-t", "TW001", "JAR", 4).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["lines"][0]["supply"][0]["supply_id"],
        json!("transfer:T1:JAR")
    );
    assert_eq!(
        preorder(&app, "P-t2", "TW001", "JAR", 3).await.0,
        409,
        "6 in transit"
    );
    let (s, _) = app
        .send(
            Method::DELETE,
            "/v1/supply/transfer:T1:JAR",
            ADMIN_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(s, 409, "kept by its movements");
    let mut inn = movement("t-in", "TW001", "JAR", "transfer_in", 6);
    inn["transfer_id"] = json!("T1");
    let before = app.ledger_count().await;
    app.publish("TW001", &inn).await;
    app.wait_for_ledger(before + 1).await;
    assert_eq!(app.reserved("TW001", "JAR").await, 4);
    let p = hold(&app, "P-t").await;
    assert_eq!(
        (
            p["lines"][0]["held"].clone(),
            p["lines"][0]["waiting"].clone()
        ),
        (json!(4), json!(0))
    );
    let (_, v) = app.get("/v1/supply?location_id=TW001", READ_KEY).await;
    assert_eq!(v["supply"], json!([]), "arrived");
    assert_allocations_agree(&app).await;
}

#[tokio::test]
async fn a_thousand_concurrent_preorders_on_a_hundred_units_of_supply_hold_exactly_a_hundred() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    assert_eq!(
        supply(&app, "PO-R1", "TW001", "HOT", 60, &day(2)).await.0,
        201
    );
    assert_eq!(
        supply(&app, "PO-R2", "TW001", "HOT", 40, &day(3)).await.0,
        201
    );
    let url = app.url("/v1/reservations");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (http, url) = (app.http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(RESERVE_KEY)
                .json(
                    &json!({"reservation_id": format!("pre-{i}"), "location_id": "TW001",
                              "preorder": true, "lines": [{"sku": "HOT", "quantity": 1}]}),
                )
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }));
    }
    let (mut held, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            (201, _) => held += 1,
            (409, _) => refused += 1,
            (other, body) => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!((held, refused), (100, 900));
    assert_eq!(line(&app, "PO-R1").await["preordered"], json!(60));
    assert_eq!(line(&app, "PO-R2").await["preordered"], json!(40));
    assert_eq!(app.reserved("TW001", "HOT").await, 0, "nothing arrived");
    let (_, a) = app
        .get(
            &format!("/v1/availability/HOT?at={}", urlencoding(&day(10))),
            READ_KEY,
        )
        .await;
    assert_eq!(a["available"], json!(0));
    assert_allocations_agree(&app).await;
}

#[tokio::test]
async fn an_expired_preorder_frees_its_hold_on_supply() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    app.stock("TW001", "PEN", 1).await;
    assert_eq!(
        supply(&app, "PO-P", "TW001", "PEN", 3, &day(2)).await.0,
        201
    );
    let (s, v) = app
        .send(
            Method::POST,
            "/v1/reservations",
            RESERVE_KEY,
            &json!({"reservation_id": "P-exp", "location_id": "TW001", "preorder": true,
                    "ttl_seconds": 1, "lines": [{"sku": "PEN", "quantity": 4}]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (
            v["lines"][0]["waiting"].clone(),
            v["lines"][0]["held"].clone()
        ),
        (json!(3), json!(1))
    );
    assert_eq!(
        app.reserved("TW001", "PEN").await,
        1,
        "the unit on hand is an ordinary hold"
    );
    wait_until("the preorder expires", || async {
        hold(&app, "P-exp").await["status"] == json!("expired")
    })
    .await;
    assert_eq!(line(&app, "PO-P").await["preordered"], json!(0));
    assert_eq!(app.reserved("TW001", "PEN").await, 0);
    assert_eq!(
        preorder(&app, "P-again", "TW001", "PEN", 4).await.0,
        201,
        "all of it is free again"
    );
    assert_allocations_agree(&app).await;
}

/// A channel shares supply as it shares stock: `at=` with a channel is the channel's share of
/// the ATP, and a preorder for a channel takes no more than that share.
#[tokio::test]
async fn a_channel_shares_future_supply_as_it_shares_stock() {
    let app = spawn_app().await;
    app.store("TW001", 25.0, 121.5).await;
    app.publish("TW001", &movement("r1", "TW001", "TEE", "receipt", 10))
        .await;
    app.wait_for_ledger(1).await;
    let (s, v) = supply(&app, "PO-1", "TW001", "TEE", 30, &day(2)).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .send(
            Method::PUT,
            "/v1/channels/mkt",
            ADMIN_KEY,
            &json!({"locations": ["TW001"], "buffer_units": 4, "max_percent": 50}),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");

    // Now: min(10 - 4, 5) = 5. At day 3, with the 30 expected: min(40 - 4, 20) = 20.
    let read = |at: Option<String>| {
        let app = &app;
        async move {
            let q = at
                .map(|a| format!("&at={}", urlencode(&a)))
                .unwrap_or_default();
            let (s, v) = app
                .get(&format!("/v1/availability/TEE?channel=mkt{q}"), READ_KEY)
                .await;
            assert_eq!(s, 200, "{v}");
            v["available"].as_i64().expect("available")
        }
    };
    assert_eq!(read(None).await, 5);
    assert_eq!(read(Some(day(3))).await, 20);
    let (s, v) = app
        .send(
            Method::POST,
            "/v1/availability",
            READ_KEY,
            &json!({"skus": ["TEE"], "channel": "mkt", "at": day(3)}),
        )
        .await;
    assert_eq!(
        (s, v["items"][0]["available"].clone()),
        (200, json!(20)),
        "{v}"
    );

    // A preorder for the channel: 21 is beyond its share of 40, 20 fits.
    let take = |id: &'static str, q: i64| {
        let app = &app;
        async move {
            app.send(
                Method::POST,
                "/v1/reservations",
                RESERVE_KEY,
                &json!({"reservation_id": id, "location_id": "TW001", "preorder": true,
                        "channel": "mkt", "lines": [{"sku": "TEE", "quantity": q}]}),
            )
            .await
        }
    };
    let (s, v) = take("pre-big", 21).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["details"]["lines"][0]["available"], json!(20), "{v}");
    let (s, v) = take("pre-fit", 20).await;
    assert_eq!(s, 201, "{v}");
    // Without the channel the rest of stock and supply is still there for a preorder.
    let (s, v) = preorder(&app, "pre-rest", "TW001", "TEE", 20).await;
    assert_eq!(s, 201, "{v}");
    assert_allocations_agree(&app).await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
