//! `docs/openapi.yaml` against the router: every route registered in `src/http` is documented
//! with the same methods, and every documented path is a route. No server, no YAML parser: the
//! routes are read from the sources (`.route("/path", get(..).post(..))`) and the paths from the
//! document's text (keys indented two spaces under `paths:`, methods four spaces under a path).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

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

/// Every path documented in `docs/openapi.yaml`, with its operations' methods.
fn documented_paths() -> BTreeMap<String, BTreeSet<String>> {
    let file = root().join("docs/openapi.yaml");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut paths: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            current = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  /") {
            let key = key
                .strip_suffix(':')
                .unwrap_or_else(|| panic!("path line {line:?}"));
            let path = format!("/{key}");
            assert!(
                !paths.contains_key(&path),
                "{path} is documented twice in docs/openapi.yaml"
            );
            paths.insert(path.clone(), BTreeSet::new());
            current = Some(path);
        } else if let Some(key) = line.strip_prefix("  ").filter(|k| !k.starts_with(' ')) {
            panic!("unexpected key under paths: {key:?} (paths are unquoted, starting with `/`)");
        } else if let (Some(path), Some(key)) = (&current, line.strip_prefix("    ")) {
            if let Some(method) = key.strip_suffix(':').filter(|m| METHODS.contains(m)) {
                paths
                    .entry(path.clone())
                    .or_default()
                    .insert(method.to_owned());
            }
        }
    }
    assert!(!paths.is_empty(), "no paths found in docs/openapi.yaml");
    paths
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
        "routes registered in src/http but missing from docs/openapi.yaml: {missing:?}"
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
        "paths in docs/openapi.yaml that no router registers (stale or misspelt): {stale:?}"
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
            "methods of {route}: docs/openapi.yaml (left) differs from the router (right)"
        );
    }
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

/// Keys repeated within one mapping of `text` (line-based: block mappings, `- ` list items and
/// `|` / `>` block scalars, which is all the document uses), as (line, key).
fn duplicate_keys(text: &str) -> Vec<(usize, String)> {
    let mut dups = Vec::new();
    // Open mappings: (indent of their keys, keys seen).
    let mut open: Vec<(usize, BTreeSet<String>)> = Vec::new();
    let mut scalar_above: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        if let Some(key_indent) = scalar_above {
            if indent > key_indent {
                continue;
            }
            scalar_above = None;
        }
        let mut rest = trimmed;
        let item = rest.starts_with("- ");
        if item {
            rest = &rest[2..];
            indent += 2;
        }
        open.retain(|(i, _)| *i < indent || (*i == indent && !item));
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        if key.contains(' ') && !key.starts_with('\'') || key.starts_with('{') {
            continue;
        }
        let value = value.trim();
        if matches!(value, "|" | ">" | ">-" | "|-") {
            scalar_above = Some(indent);
        }
        match open.last_mut() {
            Some((i, keys)) if *i == indent => {
                if !keys.insert(key.to_owned()) {
                    dups.push((n + 1, key.to_owned()));
                }
            }
            _ => open.push((indent, BTreeSet::from([key.to_owned()]))),
        }
    }
    dups
}

#[test]
fn no_mapping_in_the_document_repeats_a_key() {
    let text = fs::read_to_string(root().join("docs/openapi.yaml")).expect("read openapi.yaml");
    let dups = duplicate_keys(&text);
    assert!(
        dups.is_empty(),
        "keys repeated in one mapping of docs/openapi.yaml (a YAML parser keeps only the last): {dups:?}"
    );
    // The checker itself sees a repeat, and not keys of sibling mappings or of list items.
    let sample = "a:\n  b: 1\n  c: |\n    b: text\n  b: 2\nd:\n  - e: 1\n  - e: 2\n";
    assert_eq!(duplicate_keys(sample), vec![(5, "b".to_owned())]);
}

#[test]
fn every_schema_reference_resolves() {
    let text = fs::read_to_string(root().join("docs/openapi.yaml")).expect("read openapi.yaml");
    let mut defined = BTreeSet::new();
    let mut kind = "";
    for line in text.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            kind = line.trim().trim_end_matches(':');
        } else if line.starts_with("    ") && !line.starts_with("     ") {
            if let Some(name) = line.trim().strip_suffix(':') {
                defined.insert(format!("#/components/{kind}/{name}"));
            }
        }
    }
    let missing: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- ")
                .unwrap_or(l.trim())
                .strip_prefix("$ref: ")
        })
        .map(|r| r.trim_matches('\''))
        .filter(|r| !defined.contains(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "$ref targets not defined in docs/openapi.yaml: {missing:?}"
    );
}
