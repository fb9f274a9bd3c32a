//! The OpenAPI document generated from the code (`omnistock::http::openapi`) against the
//! router and against itself: every route registered in `src/http` is documented with the
//! same methods and every documented path is a route; every `$ref` resolves; the document reads
//! back as OpenAPI 3.1 with utoipa's own types; and `docs/openapi.json` is that document.
//!
//! The routes are read from the sources (`.route("/path", get(..).post(..))`) rather than from
//! a router built with utoipa-axum: registration stays plain axum (the auth `route_layer`, the
//! other layers), and this reader catches a handler registered without `#[utoipa::path]` as
//! surely as a router built from the annotations would, without making every router depend on
//! the documentation crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The source without whole-line `//` comments, so a doc comment quoting `.route(` is not a route.
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    strip_line_comments(&text)
}

fn strip_line_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The method names called as functions (`get(`, `.post(`) in a method-router expression.
fn methods_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for m in METHODS {
        let pattern = format!("{m}(");
        for (i, _) in expr.match_indices(&pattern) {
            let before = expr[..i].chars().next_back();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                found.insert(m.to_owned());
            }
        }
    }
    found
}

/// The routes one source registers: `(path, methods)`; methods are empty for `.route_service`
/// (a service answers any method). `Err` when a route cannot be read.
fn routes_in(code: &str) -> Result<Vec<(String, BTreeSet<String>)>, String> {
    if code.contains(".nest(") || code.contains(".nest_service(") {
        return Err("nests a router: teach tests/openapi.rs the prefix".into());
    }
    let mut routes = Vec::new();
    for opener in [".route(", ".route_service("] {
        for (start, _) in code.match_indices(opener) {
            let rest = code[start + opener.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue; // not a literal path, e.g. a function taking a path argument
            };
            let end = rest.find('"').ok_or("unterminated route string")?;
            let path = &rest[..end];
            let after = rest[end + 1..].trim_start();
            if !after.starts_with(',') {
                return Err(format!("cannot read the route {path:?}"));
            }
            // The method-router expression: up to the `)` closing `.route(`.
            let mut depth = 1;
            let mut in_string = false;
            let mut close = after.len();
            for (i, c) in after.char_indices() {
                match c {
                    '"' => in_string = !in_string,
                    '(' if !in_string => depth += 1,
                    ')' if !in_string => {
                        depth -= 1;
                        if depth == 0 {
                            close = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = if opener == ".route(" {
                let m = methods_in(&after[1..close]);
                if m.is_empty() {
                    return Err(format!(
                        "no method found for {path} (a method router tests/openapi.rs cannot read?)"
                    ));
                }
                m
            } else {
                BTreeSet::new()
            };
            routes.push((path.to_owned(), methods));
        }
    }
    Ok(routes)
}

/// Every route registered in `src/http`, with the methods its method router names.
fn router_routes() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&root().join("src/http"), &mut files);
    files.sort();
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let found = routes_in(&code_of(file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (path, methods) in found {
            routes.entry(path).or_default().extend(methods);
        }
    }
    assert!(
        routes.contains_key("/healthz") && routes.keys().any(|r| r.starts_with("/v1/")),
        "found too few routes in src/http: {routes:?}"
    );
    routes
}

/// The generated document as JSON.
fn document() -> Value {
    serde_json::to_value(omnistock::http::openapi::document()).expect("the document is JSON")
}

/// Every documented path, with its operations' methods.
fn documented_paths() -> BTreeMap<String, BTreeSet<String>> {
    let doc = document();
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    assert!(!paths.is_empty(), "no paths in the document");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("a path item is an object")
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[test]
fn every_route_is_documented() {
    let documented = documented_paths();
    let missing: Vec<String> = router_routes()
        .into_keys()
        .filter(|r| !documented.contains_key(r))
        .collect();
    assert!(
        missing.is_empty(),
        "routes registered in src/http without #[utoipa::path] (or not listed in their module's `Doc`): {missing:?}"
    );
}

#[test]
fn every_documented_path_is_a_route() {
    let routes = router_routes();
    let stale: Vec<String> = documented_paths()
        .into_keys()
        .filter(|p| !routes.contains_key(p))
        .collect();
    assert!(
        stale.is_empty(),
        "paths in the OpenAPI document that no router registers (stale or misspelt): {stale:?}"
    );
}

#[test]
fn documented_methods_match_the_router() {
    let documented = documented_paths();
    for (route, methods) in router_routes() {
        let Some(doc) = documented.get(&route) else {
            continue; // reported by every_route_is_documented
        };
        if methods.is_empty() {
            continue; // a `.route_service`: any method
        }
        assert_eq!(
            doc, &methods,
            "methods of {route}: the OpenAPI document (left) differs from the router (right)"
        );
    }
}

/// Every `$ref` in `v`, with the JSON pointer where it sits.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "$ref" {
                    if let Some(r) = x.as_str() {
                        out.push((at.to_owned(), r.to_owned()));
                    }
                }
                refs(
                    x,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(
        found
            .iter()
            .any(|(_, r)| r.starts_with("#/components/responses/"))
            && found
                .iter()
                .any(|(_, r)| r.starts_with("#/components/schemas/")),
        "too few references found: {found:?}"
    );
    let dangling: Vec<&(String, String)> = found
        .iter()
        .filter(|(_, r)| {
            r.strip_prefix('#')
                .and_then(|pointer| doc.pointer(pointer))
                .is_none()
        })
        .collect();
    assert!(
        dangling.is_empty(),
        "references that point nowhere (at, $ref): {dangling:?}"
    );
    // The walk sees a dangling reference.
    let mut bad = Vec::new();
    refs(
        &serde_json::json!({"a": [{"$ref": "#/components/schemas/Nope"}]}),
        "",
        &mut bad,
    );
    assert_eq!(
        bad,
        vec![("/a/0".to_owned(), "#/components/schemas/Nope".to_owned())]
    );
}

#[test]
fn the_document_reads_back_as_openapi_3_1() {
    let text = omnistock::http::openapi::json();
    let mut de = serde_json::Deserializer::from_str(text);
    let doc: utoipa::openapi::OpenApi = serde_path_to_error::deserialize(&mut de)
        .unwrap_or_else(|e| panic!("not utoipa's OpenApi at {}: {}", e.path(), e.inner()));
    assert!(
        matches!(doc.openapi, utoipa::openapi::OpenApiVersion::Version31),
        "not OpenAPI 3.1"
    );
    // Read back, it still has every operation and every schema (utoipa's types normalise some
    // details, e.g. the order of keys, so the texts are not compared).
    let back = serde_json::to_value(&doc).expect("json");
    let v = document();
    let ops = |d: &Value| -> BTreeSet<String> {
        d["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(p, item)| {
                item.as_object()
                    .into_iter()
                    .flatten()
                    .map(move |(m, _)| format!("{m} {p}"))
            })
            .collect()
    };
    let names = |d: &Value, kind: &str| -> BTreeSet<String> {
        d["components"][kind]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        ops(&back),
        ops(&v),
        "operations lost reading the document back"
    );
    for kind in ["schemas", "responses", "securitySchemes"] {
        assert_eq!(
            names(&back, kind),
            names(&v, kind),
            "{kind} lost reading it back"
        );
    }
    assert_eq!(v["openapi"], "3.1.0");
    for scheme in ["bearerAuth", "apiKeyHeader"] {
        assert!(
            v["components"]["securitySchemes"][scheme].is_object(),
            "security scheme {scheme} missing"
        );
    }
}

/// Every operation says what it needs: a scope (`x-required-scope`, and in its description)
/// under `/v1`, no key elsewhere; and every authenticated one documents the errors of the key
/// check, the rate limit and the deadline.
#[test]
fn every_operation_names_its_scope_and_errors() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            let description = op["description"].as_str().unwrap_or_default();
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no summary"
            );
            if path.starts_with("/v1/") {
                for status in ["401", "403", "429", "500", "503"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{name}: no {status} response"
                    );
                }
                if path == "/v1/whoami" {
                    continue; // any valid key
                }
                let scope = op["x-required-scope"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no x-required-scope"));
                assert!(
                    ["read", "reserve", "write", "admin"].contains(&scope),
                    "{name}: scope {scope:?}"
                );
                assert!(
                    description.contains(&format!("`{scope}`")),
                    "{name}: the description does not name the scope `{scope}`"
                );
            } else {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{}]),
                    "{name}: a route outside /v1 needs no key and should say so"
                );
            }
        }
    }
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let file = root().join("docs/openapi.json");
    let committed = fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == omnistock::http::openapi::json(),
        "docs/openapi.json differs from the document the code generates; regenerate it with\n\
         \tcargo run --quiet -- openapi > docs/openapi.json"
    );
}

#[test]
fn the_route_reader_copes_with_formatting() {
    let code = strip_line_comments(
        r#"
        /// Docs may quote `.route("/v1/doc", get(x))` without registering it.
        Router::new()
            .route("/a", get(list))
            .route(
                "/b/{id}",
                axum::routing::get(get_one).put(put).delete(delete_it),
            )
            .route("/c", post(route)) // trailing comment
            .route_layer(middleware::from_fn(auth))
            .route_service("/d", ServeDir::new("x"))
        "#,
    );
    let routes = routes_in(&code).expect("readable");
    let set = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        routes,
        vec![
            ("/a".to_owned(), set(&["get"])),
            ("/b/{id}".to_owned(), set(&["delete", "get", "put"])),
            ("/c".to_owned(), set(&["post"])),
            ("/d".to_owned(), set(&[])),
        ]
    );
    assert!(routes_in(r#".route("/e", on(MethodFilter::GET, h))"#).is_err());
    assert!(routes_in(r#".nest("/v2", other())"#).is_err());
}
