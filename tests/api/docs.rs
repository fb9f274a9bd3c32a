//! `GET /openapi.json` and `GET /docs` on a running daemon, and real answers checked against
//! the schemas the document gives them.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{movement, spawn_app, spawn_with, Isolation, ADMIN_KEY, READ_KEY};

/// Where `value` breaks `schema` (resolving `$ref`s in `doc`): a missing required property,
/// a wrong type, recursively through properties, array items and `allOf`/`oneOf`/`anyOf`.
fn violations(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = r
            .strip_prefix('#')
            .and_then(|p| doc.pointer(p))
            .unwrap_or_else(|| panic!("{at}: unresolved {r}"));
        return violations(doc, target, value, at);
    }
    let mut out = Vec::new();
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            out.extend(violations(doc, s, value, at));
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema[key].as_array() {
            if !any.iter().any(|s| violations(doc, s, value, at).is_empty()) {
                out.push(format!("{at}: matches none of {key}: {value}"));
            }
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        out.push(format!("{at}: {value} is not {types:?}"));
        return out;
    }
    if let Some(obj) = value.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let name = req.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                out.push(format!("{at}: required `{name}` missing"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (name, s) in props {
                if let Some(v) = obj.get(name) {
                    out.extend(violations(doc, s, v, &format!("{at}.{name}")));
                }
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, v) in values.iter().enumerate() {
            out.extend(violations(doc, items, v, &format!("{at}[{i}]")));
        }
    }
    out
}

/// The JSON schema the document gives the answer `status` of `method path`.
fn answer_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let mut r = doc["paths"][path][method]["responses"][status.to_string()].clone();
    if let Some(name) = r["$ref"].as_str() {
        r = doc
            .pointer(name.trim_start_matches('#'))
            .cloned()
            .unwrap_or_else(|| panic!("unresolved {name}"));
    }
    let s = r["content"]["application/json"]["schema"].clone();
    assert!(!s.is_null(), "{method} {path}: no JSON schema for {status}");
    s
}

#[test]
fn the_schema_check_sees_a_missing_field_and_a_wrong_type() {
    let doc = serde_json::to_value(omnistock::http::openapi::document()).expect("json");
    let schema = json!({"$ref": "#/components/schemas/Location"});
    let v = violations(&doc, &schema, &json!({"location_id": 5}), "");
    assert!(v.iter().any(|m| m.contains("`name` missing")), "{v:?}");
    assert!(v.iter().any(|m| m.contains(".location_id")), "{v:?}");
}

#[tokio::test]
async fn the_document_and_the_docs_page_are_served_without_a_key() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ascii"),
        "application/json"
    );
    let served = r.text().await.expect("text");
    assert_eq!(served, omnistock::http::openapi::json());

    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirect
        .get(app.url("/docs"))
        .send()
        .await
        .expect("/docs");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/docs/index.html");

    // The page, then every script and style sheet it loads, all from the daemon.
    let r = app
        .http
        .get(app.url("/docs"))
        .send()
        .await
        .expect("/docs followed");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    let html = r.text().await.expect("html");
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .map(|s| s.strip_prefix("./").unwrap_or(s))
        .filter(|s| (s.ends_with(".js") || s.ends_with(".css")) && !s.contains(['/', ' ']))
        .collect();
    assert!(
        assets.contains(&"swagger-ui-bundle.js") && assets.contains(&"swagger-initializer.js"),
        "{assets:?} in {html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads something from elsewhere: {html}"
    );
    for asset in assets {
        let r = app
            .http
            .get(app.url(&format!("/docs/{asset}")))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status().as_u16(), 200, "{asset}");
        let body = r.text().await.expect("asset text");
        assert!(!body.is_empty(), "{asset} is empty");
        if asset == "swagger-initializer.js" {
            assert!(body.contains("\"/openapi.json\""), "{body}");
            // No badge fetched from validator.swagger.io: nothing leaves the machine.
            assert!(body.contains("\"validatorUrl\": \"none\""), "{body}");
        }
    }
    let (status, body) = app.get("/docs/nothing-here.js", READ_KEY).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

/// A key limited to 2 requests a second is turned away by `/v1` after its burst, while the
/// docs keep answering: they are outside the per-key limit.
#[tokio::test]
async fn the_docs_are_not_rate_limited() {
    let app = spawn_with(Isolation::new().await, |c| c.rate_limit_per_second = 2).await;
    let mut limited = 0;
    for _ in 0..6 {
        if app.get("/v1/whoami", READ_KEY).await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the rate limit did not apply to /v1");
    for path in ["/openapi.json", "/docs/index.html"] {
        for _ in 0..6 {
            let r = app
                .http
                .get(app.url(path))
                .bearer_auth(READ_KEY)
                .send()
                .await
                .expect("req");
            assert_eq!(r.status().as_u16(), 200, "{path}");
        }
    }
}

#[tokio::test]
async fn real_answers_match_their_schemas() {
    let app = spawn_app().await;
    let doc = serde_json::to_value(omnistock::http::openapi::document()).expect("json");
    let check = |method: &str, path: &str, status: u16, body: &Value| {
        let schema = answer_schema(&doc, method, path, status);
        let v = violations(&doc, &schema, body, "");
        assert!(v.is_empty(), "{method} {path} {status}: {v:?}\n{body}");
    };

    let (s, body) = app
        .send(
            Method::PUT,
            "/v1/locations/DOC1",
            ADMIN_KEY,
            &json!({"name": "Docs Store", "kind": "store", "lat": 25.0, "lon": 121.5, "pickup": true}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    check("put", "/v1/locations/{location_id}", 201, &body);
    let (s, body) = app.get("/v1/locations", READ_KEY).await;
    check("get", "/v1/locations", s, &body);
    let (s, body) = app.get("/v1/locations/NOPE", READ_KEY).await;
    assert_eq!(s, 404);
    check("get", "/v1/locations/{location_id}", s, &body);

    let (s, body) = app
        .send(
            Method::POST,
            "/v1/movements",
            ADMIN_KEY,
            &json!([
                movement("doc-m1", "DOC1", "TEE-1", "receipt", 5),
                movement("doc-m2", "ELSEWHERE", "TEE-1", "receipt", 5),
            ]),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    check("post", "/v1/movements", s, &body);
    let (s, body) = app.get("/v1/movements?sku=TEE-1", READ_KEY).await;
    check("get", "/v1/movements", s, &body);
    let (s, body) = app.get("/v1/availability/TEE-1", READ_KEY).await;
    assert_eq!(body["available"], 5, "{body}");
    check("get", "/v1/availability/{sku}", s, &body);
    let (s, body) = app
        .get("/v1/availability/TEE-1/nearby?lat=25&lon=121.5", READ_KEY)
        .await;
    assert_eq!(body["stores"][0]["location_id"], "DOC1", "{body}");
    check("get", "/v1/availability/{sku}/nearby", s, &body);
    let (s, body) = app.get("/v1/levels/TEE-1", READ_KEY).await;
    check("get", "/v1/levels/{sku}", s, &body);

    let hold = json!({"location_id": "DOC1", "lines": [{"sku": "TEE-1", "quantity": 9}]});
    let (s, body) = app
        .send(Method::POST, "/v1/reservations", ADMIN_KEY, &hold)
        .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["details"]["lines"][0]["available"], 5, "{body}");
    check("post", "/v1/reservations", s, &body);
    let hold = json!({"location_id": "DOC1", "lines": [{"sku": "TEE-1", "quantity": 2}]});
    let (s, body) = app
        .send(Method::POST, "/v1/reservations", ADMIN_KEY, &hold)
        .await;
    assert_eq!(s, 201, "{body}");
    check("post", "/v1/reservations", s, &body);

    let (s, body) = app.get("/v1/whoami", READ_KEY).await;
    check("get", "/v1/whoami", s, &body);
    let (s, body) = app.get("/v1/whoami", "not-a-key-at-all").await;
    assert_eq!(s, 401);
    check("get", "/v1/whoami", s, &body);
    let (s, body) = app.get("/healthz", READ_KEY).await;
    check("get", "/healthz", s, &body);
    let (s, body) = app.get("/readyz", READ_KEY).await;
    check("get", "/readyz", s, &body);
}
