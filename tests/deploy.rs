//! The deploy files against the code, with no Docker engine and no cluster: every YAML file
//! under deploy/ parses; every environment variable that compose, Kubernetes, systemd, the env
//! example or the Dockerfile sets is one the daemon reads; the Kubernetes objects carry what
//! they need and refer to each other correctly; the compose file has its services, healthchecks
//! and start order; and the README's configuration table lists every variable the code reads.
//! (scripts/deploy-check.sh runs the Dockerfile's steps; this file reads the files.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn yaml_docs(text: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut v: Value = serde::Deserialize::deserialize(doc)?;
        v.apply_merge()?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn yaml(rel: &str) -> Vec<Value> {
    yaml_docs(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- the environment variables the code reads ---------------------------------------------

/// Every name in `env = "NAME"` (clap) and `env::var("NAME")` in these sources, and
/// `RUST_LOG` where tracing's default filter variable is read.
fn env_names_in(sources: &[(String, String)]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, text) in sources {
        for marker in ["env = \"", "env::var(\"", "env::var_os(\""] {
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let name: String = rest.chars().take_while(|c| *c != '"').collect();
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    names.insert(name);
                }
            }
        }
        if text.contains("EnvFilter::try_from_default_env")
            || text.contains("EnvFilter::from_default_env")
        {
            names.insert("RUST_LOG".to_owned());
        }
    }
    names
}

fn sources() -> Vec<(String, String)> {
    let mut paths = Vec::new();
    files(&root().join("src"), &mut paths);
    paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("source");
            (p.display().to_string(), text)
        })
        .collect()
}

fn code_env() -> BTreeSet<String> {
    let names = env_names_in(&sources());
    // The scan must find the well-known ones, or it finds nothing at all.
    for known in [
        "DATABASE_URL",
        "OMNISTOCK_API_KEYS",
        "OMNISTOCK_HTTP_ADDR",
        "RUST_LOG",
    ] {
        assert!(
            names.contains(known),
            "{known} not found in src/: the scan is broken"
        );
    }
    names
}

// ---- the environment variables the deploy files set ---------------------------------------

/// `(where, NAME)` for every variable set by the omnistock services of a compose file: those
/// whose image or build is omnistock's.
fn compose_env(text: &str) -> Vec<(String, String)> {
    let docs = yaml_docs(text).expect("compose parses");
    let mut out = Vec::new();
    let Some(services) = docs[0]["services"].as_mapping() else {
        return out;
    };
    for (name, s) in services {
        let name = name.as_str().unwrap_or("?").to_owned();
        let ours =
            s["image"].as_str().is_some_and(|i| i.contains("omnistock")) || !s["build"].is_null();
        if !ours {
            continue;
        }
        match &s["environment"] {
            Value::Mapping(m) => out.extend(
                m.keys()
                    .filter_map(Value::as_str)
                    .map(|k| (format!("compose {name}"), k.to_owned())),
            ),
            Value::Sequence(items) => {
                out.extend(items.iter().filter_map(Value::as_str).map(|kv| {
                    (
                        format!("compose {name}"),
                        kv.split('=').next().unwrap_or(kv).to_owned(),
                    )
                }))
            }
            _ => {}
        }
    }
    out
}

/// Variables of Kubernetes objects: ConfigMap and Secret keys (loaded with envFrom) and the
/// containers' `env` entries.
fn k8s_env(docs: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"].as_str().unwrap_or("?");
        match kind {
            "ConfigMap" | "Secret" => {
                for field in ["data", "stringData"] {
                    if let Some(m) = d[field].as_mapping() {
                        out.extend(
                            m.keys()
                                .filter_map(Value::as_str)
                                .map(|k| (format!("{kind} {name}"), k.to_owned())),
                        );
                    }
                }
            }
            "Deployment" => {
                for c in containers(d) {
                    if let Some(env) = c["env"].as_sequence() {
                        out.extend(env.iter().filter_map(|e| e["name"].as_str()).map(|k| {
                            (
                                format!(
                                    "Deployment {name} container {}",
                                    c["name"].as_str().unwrap_or("?")
                                ),
                                k.to_owned(),
                            )
                        }));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn containers(d: &Value) -> Vec<&Value> {
    let spec = &d["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec[*f].as_sequence())
        .flatten()
        .collect()
}

/// `NAME=value` lines of an environment file (and `Environment=NAME=value` of a unit).
fn env_file(label: &str, text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let l = l.strip_prefix("Environment=").unwrap_or(l);
            let l = l.trim_matches('"');
            let (k, _) = l.split_once('=')?;
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| (label.to_owned(), k.to_owned()))
        })
        .collect()
}

/// `ENV NAME=value ...` of a Dockerfile (continuations joined).
fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(k, _)| ("Dockerfile".to_owned(), k.to_owned()))
        })
        .collect()
}

fn k8s_files() -> Vec<String> {
    let mut paths = Vec::new();
    files(&root().join("deploy/k8s"), &mut paths);
    let mut names: Vec<String> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .filter(|n| n != "kustomization.yaml" && n != "nats-values.yaml")
        .collect();
    names.sort();
    names
}

fn k8s_objects() -> Vec<Value> {
    k8s_files()
        .iter()
        .flat_map(|f| yaml(&format!("deploy/k8s/{f}")))
        .collect()
}

fn everything_set() -> Vec<(String, String)> {
    let mut set = compose_env(&read("deploy/compose.yaml"));
    set.extend(k8s_env(&k8s_objects()));
    set.extend(env_file(
        "deploy/omnistock.env.example",
        &read("deploy/omnistock.env.example"),
    ));
    set.extend(env_file(
        "deploy/omnistock.service",
        &read("deploy/omnistock.service"),
    ));
    set.extend(dockerfile_env(&read("Dockerfile")));
    set
}

fn unknown(set: &[(String, String)], known: &BTreeSet<String>) -> Vec<String> {
    set.iter()
        .filter(|(_, k)| !known.contains(k))
        .map(|(w, k)| format!("{w}: {k}"))
        .collect()
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let mut paths = Vec::new();
    files(&root().join("deploy"), &mut paths);
    let yamls: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert!(yamls.len() >= 9, "{yamls:?}");
    for p in yamls {
        let text = std::fs::read_to_string(p).expect("read");
        let docs = yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!docs.is_empty(), "{} is empty", p.display());
    }
    assert!(
        yaml_docs("a: [1, 2\nb: 3").is_err(),
        "a broken file must fail"
    );
}

#[test]
fn every_variable_the_deploy_files_set_is_read_by_the_code() {
    let known = code_env();
    let set = everything_set();
    for (source, min) in [
        ("compose", 10),
        ("ConfigMap", 5),
        ("Secret", 3),
        ("deploy/omnistock.env.example", 5),
        ("Dockerfile", 2),
    ] {
        let n = set.iter().filter(|(w, _)| w.starts_with(source)).count();
        assert!(
            n >= min,
            "only {n} variables found in {source}: the reader is broken"
        );
    }
    let bad = unknown(&set, &known);
    assert!(
        bad.is_empty(),
        "set but never read by omnistock (a typo?): {bad:#?}"
    );
}

#[test]
fn a_misspelt_variable_is_caught() {
    let known = code_env();
    let compose = "services:\n  omnistock:\n    image: omnistock:local\n    environment:\n      OMNISTOCK_HTTP_ADR: 0.0.0.0:8080\n  postgres:\n    image: postgres:17\n    environment:\n      POSTGRES_PASSWORD: x\n";
    assert_eq!(
        unknown(&compose_env(compose), &known),
        ["compose omnistock: OMNISTOCK_HTTP_ADR"]
    );
    let listed =
        "services:\n  a:\n    build: .\n    environment: [\"DATABASE_URI=x\", \"REDIS_URL=y\"]\n";
    assert_eq!(
        unknown(&compose_env(listed), &known),
        ["compose a: DATABASE_URI"]
    );
    let unit = "[Service]\nEnvironment=OMNISTOK_API_KEYS=k=*\n";
    assert_eq!(
        unknown(&env_file("unit", unit), &known),
        ["unit: OMNISTOK_API_KEYS"]
    );
    let docker = "FROM x AS y\nENV OMNISTOCK_HTTP_ADDR=0.0.0.0:8080 \\\n    RUSTLOG=info\n";
    assert_eq!(
        unknown(&dockerfile_env(docker), &known),
        ["Dockerfile: RUSTLOG"]
    );
    let k8s = yaml_docs("kind: ConfigMap\nmetadata: {name: c}\ndata: {NATS_ULR: x}\n---\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: [{name: m, env: [{name: REDIS_URI, value: x}]}]}}}\n").expect("yaml");
    assert_eq!(
        unknown(&k8s_env(&k8s), &known),
        [
            "ConfigMap c: NATS_ULR",
            "Deployment d container m: REDIS_URI"
        ]
    );
}

// ---- Kubernetes -------------------------------------------------------------------------

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn routes() -> String {
    read("src/http/health.rs")
}

#[test]
fn the_kustomize_base_lists_every_object_file_and_each_object_is_complete() {
    let kustomization = &yaml("deploy/k8s/kustomization.yaml")[0];
    assert_eq!(kustomization["kind"], Value::from("Kustomization"));
    let mut listed: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file").to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        k8s_files(),
        "kustomization resources vs the files in deploy/k8s"
    );

    let objects = k8s_objects();
    let mut kinds = BTreeMap::new();
    for o in &objects {
        let kind = o["kind"].as_str().expect("kind");
        assert!(
            o["apiVersion"].as_str().is_some_and(|v| !v.is_empty()),
            "{kind}: apiVersion"
        );
        let name =
            str_at(o, &["metadata", "name"]).unwrap_or_else(|| panic!("{kind}: metadata.name"));
        kinds
            .entry(kind.to_owned())
            .or_insert_with(Vec::new)
            .push((name.to_owned(), o));
    }
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains_key(kind), "no {kind}");
    }
    let one = |kind: &str| kinds[kind][0].1;
    let names = |kind: &str| -> BTreeSet<String> {
        kinds
            .get(kind)
            .into_iter()
            .flatten()
            .map(|(n, _)| n.clone())
            .collect()
    };

    let deployment = one("Deployment");
    let dep_name = str_at(deployment, &["metadata", "name"]).expect("name");
    let template_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    assert!(
        selects(
            &labels(&deployment["spec"]["selector"]["matchLabels"]),
            &template_labels
        ),
        "Deployment selector vs its template"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::from(true));
    let configmap = one("ConfigMap");
    let grace: u64 = str_at(configmap, &["data", "OMNISTOCK_SHUTDOWN_GRACE_SECONDS"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let termination = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination > grace,
        "the kubelet kills ({termination} s) before the drain ends ({grace} s)"
    );

    let health = routes();
    let mut port_names = BTreeSet::new();
    let mut main = 0;
    for c in containers(deployment) {
        let cname = c["name"].as_str().expect("container name");
        assert!(c["image"].as_str().is_some(), "{cname}: image");
        for (field, what) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                !c["resources"][field][what].is_null(),
                "{cname}: resources.{field}.{what}"
            );
        }
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"],
            Value::from(false),
            "{cname}"
        );
        assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true), "{cname}");
        let drops: Vec<&str> = sc["capabilities"]["drop"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(drops.contains(&"ALL"), "{cname}: drop ALL capabilities");
        for p in c["ports"].as_sequence().into_iter().flatten() {
            if let Some(n) = p["name"].as_str() {
                port_names.insert(n.to_owned());
            }
        }
        for from in c["envFrom"].as_sequence().into_iter().flatten() {
            if let Some(n) = str_at(from, &["configMapRef", "name"]) {
                assert!(names("ConfigMap").contains(n), "{cname}: no ConfigMap {n}");
            }
            if let Some(n) = str_at(from, &["secretRef", "name"]) {
                assert!(names("Secret").contains(n), "{cname}: no Secret {n}");
            }
        }
        for e in c["env"].as_sequence().into_iter().flatten() {
            if let Some(r) = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
                let (n, k) = (
                    r["name"].as_str().expect("name"),
                    r["key"].as_str().expect("key"),
                );
                let secret = kinds["Secret"]
                    .iter()
                    .find(|(s, _)| s == n)
                    .unwrap_or_else(|| panic!("no Secret {n}"))
                    .1;
                assert!(
                    !secret["stringData"][k].is_null() || !secret["data"][k].is_null(),
                    "Secret {n} has no {k}"
                );
            }
        }
        if c["args"]
            .as_sequence()
            .is_some_and(|a| a.first() == Some(&Value::from("serve")))
        {
            main += 1;
            for (probe, path) in [
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("startupProbe", "/healthz"),
            ] {
                let get = &c[probe]["httpGet"];
                assert_eq!(get["path"], Value::from(path), "{cname}: {probe}");
                assert!(
                    health.contains(&format!("\"{path}\"")),
                    "{path} is not a route of src/http/health.rs"
                );
                let port = get["port"].as_str().expect("a named port");
                assert!(
                    c["ports"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"].as_str() == Some(port)),
                    "{cname}: {probe} port {port}"
                );
            }
        }
    }
    assert_eq!(main, 1, "one container runs `serve`");

    let service = one("Service");
    assert!(
        selects(&labels(&service["spec"]["selector"]), &template_labels),
        "Service selects no pod of the Deployment"
    );
    for p in service["spec"]["ports"].as_sequence().expect("ports") {
        match &p["targetPort"] {
            Value::String(n) => assert!(port_names.contains(n), "Service targetPort {n}"),
            Value::Number(_) => {}
            other => panic!("Service targetPort {other:?}"),
        }
    }
    let pdb = one("PodDisruptionBudget");
    assert!(
        selects(
            &labels(&pdb["spec"]["selector"]["matchLabels"]),
            &template_labels
        ),
        "PDB selects no pod"
    );
    let hpa = one("HorizontalPodAutoscaler");
    assert_eq!(
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        Some("Deployment")
    );
    assert_eq!(
        str_at(hpa, &["spec", "scaleTargetRef", "name"]),
        Some(dep_name)
    );
    let (min, max) = (
        hpa["spec"]["minReplicas"].as_u64().expect("min"),
        hpa["spec"]["maxReplicas"].as_u64().expect("max"),
    );
    assert!(2 <= min && min <= max, "HPA {min}..{max}");
    let min_available = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert!(
        min_available < min,
        "the PDB would block every eviction at the HPA's minimum"
    );
}

#[test]
fn the_nats_helm_values_make_a_three_node_jetstream_cluster_on_files() {
    let v = &yaml("deploy/k8s/nats-values.yaml")[0];
    let c = &v["config"];
    assert_eq!(c["cluster"]["enabled"], Value::from(true));
    assert_eq!(c["cluster"]["replicas"], Value::from(3));
    assert_eq!(c["jetstream"]["enabled"], Value::from(true));
    assert_eq!(c["jetstream"]["fileStore"]["enabled"], Value::from(true));
    assert_eq!(
        c["jetstream"]["fileStore"]["pvc"]["enabled"],
        Value::from(true)
    );
}

// ---- compose ------------------------------------------------------------------------------

#[test]
fn compose_runs_the_stack_in_order_with_healthchecks() {
    let doc = &yaml("deploy/compose.yaml")[0];
    let services = doc["services"].as_mapping().expect("services");
    let service_names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for required in ["postgres", "redis", "nats-1", "nats-2", "nats-3", "migrate"] {
        assert!(service_names.contains(required), "no {required} service");
    }
    let daemons: Vec<(&str, &Value)> = services
        .iter()
        .filter(|(_, s)| s["command"].is_null() && !s["build"].is_null())
        .map(|(n, s)| (n.as_str().expect("name"), s))
        .collect();
    assert!(daemons.len() >= 2, "two omnistock replicas: {daemons:?}");
    for (name, s) in services {
        let name = name.as_str().expect("name");
        if name != "migrate" {
            assert!(
                !s["healthcheck"]["test"].is_null(),
                "{name}: no healthcheck"
            );
        }
        for (dep, cond) in s["depends_on"].as_mapping().into_iter().flatten() {
            let dep = dep.as_str().expect("dependency");
            assert!(
                service_names.contains(dep),
                "{name} depends on unknown {dep}"
            );
            let want = if dep == "migrate" {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            assert_eq!(cond["condition"], Value::from(want), "{name} → {dep}");
        }
    }
    assert_eq!(
        services[&Value::from("migrate")]["command"],
        serde_yaml_ng::from_str::<Value>("[migrate]").expect("y")
    );
    for (name, s) in &daemons {
        let deps = s["depends_on"].as_mapping().expect("depends_on");
        for dep in ["postgres", "redis", "nats-1", "nats-2", "nats-3", "migrate"] {
            assert!(deps.contains_key(dep), "{name} does not wait for {dep}");
        }
        let test: Vec<&str> = s["healthcheck"]["test"]
            .as_sequence()
            .expect("exec form")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            test.contains(&"healthcheck"),
            "{name}: the image has no curl; use `omnistock healthcheck`"
        );
        let urls = s["environment"]["NATS_URL"].as_str().expect("NATS_URL");
        for n in 1..=3 {
            assert!(
                urls.contains(&format!("nats-{n}:4222")),
                "{name}: NATS_URL lacks nats-{n}"
            );
        }
    }
    // A real cluster: each node routes to the other two under one cluster name.
    for n in 1..=3 {
        let cmd: Vec<&str> = services[&Value::from(format!("nats-{n}"))]["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(cmd.contains(&"--jetstream"), "nats-{n}");
        let routes = cmd
            .iter()
            .position(|a| *a == "--routes")
            .map(|i| cmd[i + 1])
            .expect("--routes");
        for other in (1..=3).filter(|o| *o != n) {
            assert!(
                routes.contains(&format!("nats-{other}:6222")),
                "nats-{n} does not route to nats-{other}"
            );
        }
        assert!(cmd.contains(&"--cluster_name"), "nats-{n}");
    }
}

// ---- README -----------------------------------------------------------------------------

/// Variable names in the rows of README's `### Configuration` table under `## Operating
/// omnistock`.
fn readme_config_rows(readme: &str) -> BTreeSet<String> {
    let section = readme
        .split("\n## Operating omnistock")
        .nth(1)
        .expect("README has `## Operating omnistock`");
    let section = section.split("\n## ").next().unwrap_or(section);
    let table = section
        .split("\n### Configuration")
        .nth(1)
        .expect("`### Configuration` under `## Operating omnistock`");
    let table = table.split("\n### ").next().unwrap_or(table);
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_configuration_table_lists_every_variable_the_code_reads() {
    let rows = readme_config_rows(&read("README.md"));
    let code = code_env();
    let missing: Vec<&String> = code.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "read by the code but not in README's configuration table: {missing:?}"
    );
    let fake = "# x\n## Operating omnistock\n### Configuration\n| variable | default | meaning |\n|---|---|---|\n| `DATABASE_URL` | - | x |\n### Deploy\n| `REDIS_URL` | | |\n";
    assert_eq!(
        readme_config_rows(fake),
        BTreeSet::from(["DATABASE_URL".to_owned()])
    );
}

/// `key = value` lines of a postgresql.conf-style file, comments and blanks left out.
fn pg_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('\'').to_owned()))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect()
}

#[test]
fn compose_runs_postgres_with_the_recommended_settings() {
    let wanted = pg_settings(&read("deploy/postgres/omnistock.conf"));
    assert!(wanted.contains_key("max_wal_size"), "{wanted:?}");
    assert_eq!(wanted.get("fsync").map(String::as_str), Some("on"));
    let compose = yaml("deploy/compose.yaml");
    let command: Vec<&str> = compose[0]["services"]["postgres"]["command"]
        .as_sequence()
        .expect("postgres has a command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let given: BTreeMap<String, String> = command
        .windows(2)
        .filter(|w| w[0] == "-c")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in &wanted {
        // Durability is PostgreSQL's default; compose leaves it so.
        if ["fsync", "synchronous_commit", "full_page_writes"].contains(&k.as_str()) {
            assert!(
                !given.contains_key(k),
                "compose turns {k} to {:?}",
                given[k]
            );
            continue;
        }
        assert_eq!(given.get(k), Some(v), "compose's {k}");
    }
    assert!(given.contains_key("shared_buffers"), "{given:?}");
}
