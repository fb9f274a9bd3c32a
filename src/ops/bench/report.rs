//! docs/performance.md from a run's results: ratios to the ceilings of the same run first
//! (absolute figures drift with whatever else the machine does), then the targets of issues 12
//! and 13, then every figure with its exact command.

use std::fmt::Write;

use super::results::{Figure, Results};

/// A figure divided by a ceiling measured in the same run (both in "per second").
struct Ratio {
    what: &'static str,
    id: &'static str,
    ceiling: &'static str,
    /// The ceiling is measured per scale (the `\copy` of the same file) rather than once.
    ceiling_per_scale: bool,
}

const RATIOS: &[Ratio] = &[
    Ratio {
        what: "ingest, `omnistock load`, 1 daemon",
        id: "ingest.1d",
        ceiling: "ceiling.pg_batch",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "ingest, 1 daemon, until its change events are in JetStream",
        id: "ingest.events",
        ceiling: "ceiling.pg_batch",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "ingest, `omnistock load`, 2 daemons",
        id: "ingest.2d",
        ceiling: "ceiling.pg_batch",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "reads, one SKU, 50 connections",
        id: "reads.single",
        ceiling: "ceiling.axum",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "reads, one SKU total only (`?locations=false`)",
        id: "reads.totals",
        ceiling: "ceiling.axum",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "reads, batch of 100 SKUs, 50 connections",
        id: "reads.batch",
        ceiling: "ceiling.axum",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "holds on one hot SKU, 64 connections",
        id: "holds.hot",
        ceiling: "ceiling.pg_hot",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "route + hold, 1-line, 16 connections",
        id: "route.1",
        ceiling: "",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "route + hold, 5-line, 16 connections",
        id: "route.5",
        ceiling: "",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "publish → visible, 1,000 movements/s background",
        id: "visible.1000",
        ceiling: "",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "publish → visible, 5,000 movements/s background",
        id: "visible.5000",
        ceiling: "",
        ceiling_per_scale: false,
    },
    Ratio {
        what: "`omnistock import stock`",
        id: "import.stock",
        ceiling: "ceiling.copy_keyed",
        ceiling_per_scale: true,
    },
    Ratio {
        what: "`omnistock cache rebuild`",
        id: "cache.rebuild",
        ceiling: "",
        ceiling_per_scale: false,
    },
];

/// Figures whose 10M cost must stay within 2× their 1M cost (issue 12 and 13), all "per second".
const SCALE_IDS: &[&str] = &[
    "import.stock",
    "cache.rebuild",
    "reads.single",
    "reads.totals",
    "reads.batch",
    "ingest.1d",
    "holds.hot",
    "route.1",
    "route.5",
];

#[derive(Debug, PartialEq)]
pub enum Verdict {
    Met(String),
    NotMet(String),
    NotMeasured,
}

impl Verdict {
    fn cell(&self) -> String {
        match self {
            Verdict::Met(d) => format!("**met**: {d}"),
            Verdict::NotMet(d) => format!("**not met**: {d}"),
            Verdict::NotMeasured => "not measured in this run".into(),
        }
    }
}

pub fn ratio(r: &Results, id: &str, scale: &str, ceiling: &str, per_scale: bool) -> Option<f64> {
    let f = r.get(id, scale)?;
    let c = r.get(ceiling, if per_scale { scale } else { "-" })?;
    (c.value > 0.0).then(|| f.value / c.value)
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        // thousands separated, as the issues write them
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{} ms", fmt_num(v)))
        .unwrap_or_else(|| "—".into())
}

fn value(f: &Figure) -> String {
    format!("{} {}", fmt_num(f.value), f.unit)
}

/// The scale the targets on "the big network" are judged at: 10m when measured, else 1m, else
/// whatever larger set ran (quick mode).
fn big_scale(r: &Results) -> Option<String> {
    let scales = r.scales();
    ["10m", "1m"]
        .iter()
        .map(|s| s.to_string())
        .find(|s| scales.contains(s))
        .or_else(|| {
            scales
                .into_iter()
                .find(|s| !s.starts_with("demo") && !s.ends_with("-after"))
        })
}

fn at_least(v: Option<f64>, min: f64, what: &str) -> Verdict {
    match v {
        None => Verdict::NotMeasured,
        Some(v) if v >= min => Verdict::Met(format!("{what} {v:.2} ≥ {min}")),
        Some(v) => Verdict::NotMet(format!("{what} {v:.2} < {min}")),
    }
}

fn at_most(v: Option<f64>, max: f64, what: &str) -> Verdict {
    match v {
        None => Verdict::NotMeasured,
        Some(v) if v <= max => Verdict::Met(format!("{what} {v:.2} ≤ {max}")),
        Some(v) => Verdict::NotMet(format!("{what} {v:.2} > {max}")),
    }
}

fn all(vs: Vec<Verdict>) -> Verdict {
    if vs.contains(&Verdict::NotMeasured) {
        return Verdict::NotMeasured;
    }
    let met = vs.iter().all(|v| matches!(v, Verdict::Met(_)));
    let text = vs
        .iter()
        .map(|v| match v {
            Verdict::Met(d) | Verdict::NotMet(d) => d.clone(),
            Verdict::NotMeasured => String::new(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if met {
        Verdict::Met(text)
    } else {
        Verdict::NotMet(text)
    }
}

/// The worst 1M→10M cost ratio over the per-second figures measured at both.
fn scale_cost(r: &Results) -> Verdict {
    let mut worst: Option<(f64, &str)> = None;
    for id in SCALE_IDS {
        if let (Some(a), Some(b)) = (r.get(id, "1m"), r.get(id, "10m")) {
            if b.value > 0.0 {
                let c = a.value / b.value;
                if worst.is_none_or(|(w, _)| c > w) {
                    worst = Some((c, id));
                }
            }
        }
    }
    match worst {
        None => Verdict::NotMeasured,
        Some((c, id)) => at_most(Some(c), 2.0, &format!("worst cost 10M/1M ({id})")),
    }
}

pub fn targets(r: &Results) -> Vec<(&'static str, &'static str, Verdict)> {
    let big = big_scale(r);
    let big = big.as_deref().unwrap_or("1m");
    let p99 = |id: &str, scale: &str| r.get(id, scale).and_then(|f| f.p99_ms);
    let errors = |id: &str, scale: &str| r.get(id, scale).and_then(|f| f.errors).map(|e| e as f64);
    let oversold = r.get("holds.oversold", "demo").map(|f| f.value);
    vec![
        // "Change events on": committed is not enough, the run's events must be out too.
        ("12", "Ingest ≥ 0.6 of the batched-Postgres ceiling, change events on",
            all(vec![
                at_least(ratio(r, "ingest.1d", "demo", "ceiling.pg_batch", false), 0.6, "ratio"),
                at_least(ratio(r, "ingest.events", "demo", "ceiling.pg_batch", false), 0.6, "ratio with events published"),
            ])),
        ("12", "Publish → visible p99 ≤ 10 ms at 5,000 movements/s",
            at_most(p99("visible.5000", "demo"), 10.0, "p99 ms")),
        ("12", "Reads on the demo data ≥ 0.5 of bare axum, p99 ≤ 5 ms at 50 connections",
            all(vec![
                at_least(ratio(r, "reads.single", "demo", "ceiling.axum", false), 0.5, "ratio"),
                at_most(p99("reads.single", "demo"), 5.0, "p99 ms"),
            ])),
        ("12", "Hot-SKU holds ≥ 3× Postgres's one-row hot update, p99 ≤ 50 ms at 64 connections, 0 oversold",
            all(vec![
                at_least(ratio(r, "holds.hot", "demo", "ceiling.pg_hot", false), 3.0, "ratio"),
                at_most(p99("holds.hot", "demo"), 50.0, "p99 ms"),
                at_most(oversold, 0.0, "oversold units"),
            ])),
        ("12", "Route + hold ≥ 2,000/s with p99 ≤ 20 ms at 16 connections",
            all(vec![
                at_least(r.get("route.1", "demo").map(|f| f.value), 2000.0, "1-line/s"),
                at_most(p99("route.1", "demo"), 20.0, "p99 ms"),
            ])),
        ("12", "10M stock rows cost at most 2× what 1M cost", scale_cost(r)),
        ("13", "Import of 1M opening counts ≥ 0.25 of `\\copy` into a keyed table",
            at_least(ratio(r, "import.stock", "1m", "ceiling.copy_keyed", true), 0.25, "ratio")),
        ("13", "Import peak memory ≤ 256 MB for any file size; 10M rows in ≤ 2 minutes",
            all(vec![
                at_most(
                    r.figures.iter().filter(|f| f.id == "import.peak_rss").map(|f| f.value).reduce(f64::max),
                    256.0,
                    "peak RSS MB",
                ),
                at_most(r.get("import.stock", "10m").map(|f| 10_000_000.0 / f.value.max(1e-9)), 120.0, "10M import s"),
            ])),
        ("13", "Batch of 100 SKUs on 200 locations: p99 ≤ 10 ms at 50 connections, throughput within 1.5× of the demo data",
            all(vec![
                at_most(p99("reads.batch", big), 10.0, "p99 ms"),
                at_most(
                    match (r.get("reads.batch", "demo"), r.get("reads.batch", big)) {
                        (Some(d), Some(b)) if b.value > 0.0 => Some(d.value / b.value),
                        _ => None,
                    },
                    1.5,
                    "demo/big throughput",
                ),
            ])),
        ("13", "Single-SKU totals ≥ 0.5 of bare axum at 10M rows",
            all(vec![
                at_least(ratio(r, "reads.totals", "10m", "ceiling.axum", false), 0.5, "ratio"),
                at_most(errors("reads.totals", "10m"), 0.0, "non-2xx answers"),
            ])),
        ("13", "Every figure at 10M costs at most 2× its figure at 1M", scale_cost(r)),
    ]
}

pub fn markdown(r: &Results, svg_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Performance\n");
    s.push_str(
        "Written by `make bench` (scripts/bench.sh, then `omnistock bench report`) from \
         `target/bench/results.json`; do not edit by hand. Every figure below is listed with the \
         exact command that measured it at the end of this page (README, Benchmarks).\n\n",
    );
    if !r.note.is_empty() {
        let _ = writeln!(s, "> **{}**\n", r.note);
    }
    if r.quick {
        let _ = writeln!(
            s,
            "> BENCH_QUICK=1: small data sets and short runs. These figures prove that the harness \
             works; they are not the ones to quote.\n"
        );
    }
    let _ = writeln!(
        s,
        "Run started {} (commit `{}`), took {:.0} s. Absolute figures drift on a shared machine; \
         the ratios to the ceilings measured **in the same run** are what to compare across runs.\n",
        r.started_at, r.git, r.duration_s
    );

    let m = &r.machine;
    let _ = writeln!(s, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in [
        ("CPU", format!("{} ({} cores)", m.cpu, m.cores)),
        ("memory", m.memory.clone()),
        ("kernel", m.kernel.clone()),
        ("OS", m.os.clone()),
        ("PostgreSQL", m.postgres.clone()),
        ("Redis", m.redis.clone()),
        ("NATS", m.nats.clone()),
        ("services", m.services.clone()),
        ("load at start", m.load.clone()),
    ] {
        let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
    }

    let _ = writeln!(
        s,
        "\n## Ceilings (same run)\n\n| ceiling | figure | p99 |\n|---|---|---|"
    );
    for f in r.figures.iter().filter(|f| f.id.starts_with("ceiling.")) {
        let scale = if f.scale == "-" {
            String::new()
        } else {
            format!(" ({})", f.scale)
        };
        let _ = writeln!(
            s,
            "| {}{} | {} | {} |",
            ceiling_name(&f.id),
            scale,
            value(f),
            ms(f.p99_ms)
        );
    }

    let _ = writeln!(
        s,
        "\n## omnistock against the ceilings\n\n| what | data | omnistock | p50 | p99 | ceiling | ratio |\n|---|---|---|---|---|---|---|"
    );
    for scale in r.scales() {
        for q in RATIOS {
            let Some(f) = r.get(q.id, &scale) else {
                continue;
            };
            let c = if q.ceiling.is_empty() {
                None
            } else {
                r.get(q.ceiling, if q.ceiling_per_scale { &scale } else { "-" })
            };
            let ratio = ratio(r, q.id, &scale, q.ceiling, q.ceiling_per_scale)
                .map(|x| format!("**{x:.3}**"))
                .unwrap_or_else(|| "—".into());
            let errs = match f.errors {
                Some(e) if e > 0 => format!(" ({e} not 2xx)"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {}{} | {} | {} | {} | {} |",
                q.what,
                scale,
                value(f),
                errs,
                ms(f.p50_ms),
                ms(f.p99_ms),
                c.map(|c| format!("{}: {}", ceiling_name(&c.id), value(c)))
                    .unwrap_or_else(|| "—".into()),
                ratio
            );
        }
    }

    let _ = writeln!(
        s,
        "\n## Memory and disk\n\n| what | data | figure |\n|---|---|---|"
    );
    for f in r.figures.iter().filter(|f| {
        f.id.starts_with("mem.")
            || f.id.starts_with("disk.")
            || f.id == "import.peak_rss"
            || f.id == "holds.oversold"
    }) {
        let _ = writeln!(s, "| {} | {} | {} |", f.id, f.scale, value(f));
    }

    let _ = writeln!(
        s,
        "\n## Targets (issues 12 and 13)\n\n| issue | target | this run |\n|---|---|---|"
    );
    for (issue, text, v) in targets(r) {
        let _ = writeln!(s, "| {issue} | {text} | {} |", v.cell());
    }
    // The why of a missed target takes a profile and prose, which a generated page cannot hold.
    s.push_str(
        "\nWhere the time goes in each benchmark, and why a target is missed: \
         [profiles.md](profiles.md) (whole-machine `perf` profiles of the same workloads).\n",
    );

    let _ = writeln!(
        s,
        "\n## Throughput and p99 against load\n\n![availability reads: requests/s and p99 against connections]({svg_name})\n"
    );
    for scale in r.scales() {
        let pts = r.curve("curve.reads", &scale);
        if pts.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "Reads of one SKU, {scale}:\n\n| connections | requests/s | p99 |\n|---|---|---|"
        );
        for p in pts {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                p.connections.unwrap_or(0),
                fmt_num(p.value),
                ms(p.p99_ms)
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Every figure and its command\n\n| id | data | figure | p50 | p99 | connections | command |\n|---|---|---|---|---|---|---|");
    for f in &r.figures {
        let note = if f.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.note)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {}{} | {} | {} | {} | `{}` |",
            f.id,
            f.scale,
            value(f),
            note.replace('|', "\\|"),
            ms(f.p50_ms),
            ms(f.p99_ms),
            f.connections
                .map(|c| c.to_string())
                .unwrap_or_else(|| "—".into()),
            f.command.replace('|', "\\|").replace('`', "'")
        );
    }
    s
}

fn ceiling_name(id: &str) -> &str {
    match id {
        "ceiling.pg_batch" => {
            "PostgreSQL ledger insert + level update, 500 per transaction, 4 clients"
        }
        "ceiling.pg_hot" => "PostgreSQL one-row hot `UPDATE`, 64 clients",
        "ceiling.axum" => "bare axum `/healthz`, 50 connections",
        "ceiling.redis_get" => "Redis `GET`, 50 clients",
        "ceiling.js_publish" => "JetStream publish as the relay does, 1,000 acks in flight",
        "ceiling.copy_keyed" => "`psql \\copy` of the stock file into a keyed table",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bench::results::{Figure, Machine};

    fn fig(id: &str, scale: &str, value: f64, p99: Option<f64>) -> Figure {
        Figure {
            id: id.into(),
            scale: scale.into(),
            value,
            unit: "/s".into(),
            p99_ms: p99,
            command: format!("tool --for {id}"),
            ..Default::default()
        }
    }

    fn sample() -> Results {
        Results {
            started_at: "2026-12-01T20:00:00Z".into(),
            git: "abc123".into(),
            machine: Machine {
                cores: 2,
                ..Default::default()
            },
            figures: vec![
                fig("ceiling.pg_batch", "-", 80_000.0, None),
                fig("ceiling.axum", "-", 70_000.0, Some(1.0)),
                fig("ceiling.pg_hot", "-", 2_000.0, None),
                fig("ingest.1d", "demo", 20_000.0, None),
                fig("ingest.events", "demo", 5_000.0, None),
                fig("reads.single", "demo", 42_000.0, Some(4.0)),
                fig("holds.hot", "demo", 7_000.0, Some(60.0)),
                fig("holds.oversold", "demo", 0.0, None),
                fig("reads.single", "1m", 40_000.0, Some(4.0)),
                fig("reads.single", "10m", 10_000.0, Some(9.0)),
                Figure {
                    connections: Some(1),
                    ..fig("curve.reads", "demo", 5_000.0, Some(0.3))
                },
                Figure {
                    connections: Some(16),
                    ..fig("curve.reads", "demo", 30_000.0, Some(2.0))
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn ratios_are_taken_against_the_same_runs_ceilings() {
        let r = sample();
        assert_eq!(
            ratio(&r, "ingest.1d", "demo", "ceiling.pg_batch", false),
            Some(0.25)
        );
        let md = markdown(&r, "p.svg");
        assert!(
            md.contains("| reads, one SKU, 50 connections | demo | 42,000 /s | — | 4.00 ms |"),
            "{md}"
        );
        assert!(md.contains("**0.600**"), "{md}");
        assert!(md.contains("`tool --for holds.hot`"));
        assert!(md.contains("![availability reads"));
    }

    #[test]
    fn ingest_is_met_only_when_its_change_events_keep_up_too() {
        let mut r = sample();
        let ingest = |r: &Results| {
            targets(r)
                .into_iter()
                .find(|(_, text, _)| text.starts_with("Ingest"))
                .expect("ingest target")
                .2
        };
        for f in r.figures.iter_mut().filter(|f| f.id == "ingest.1d") {
            f.value = 60_000.0;
        }
        let v = ingest(&r);
        assert!(
            matches!(&v, Verdict::NotMet(d) if d.contains("with events published")),
            "{v:?}"
        );
        for f in r.figures.iter_mut().filter(|f| f.id == "ingest.events") {
            f.value = 50_000.0;
        }
        assert!(matches!(ingest(&r), Verdict::Met(_)));
        r.figures.retain(|f| f.id != "ingest.events");
        assert_eq!(ingest(&r), Verdict::NotMeasured);
    }

    #[test]
    fn targets_say_met_not_met_or_not_measured() {
        let r = sample();
        let t = targets(&r);
        let find = |prefix: &str| {
            &t.iter()
                .find(|(_, text, _)| text.starts_with(prefix))
                .expect(prefix)
                .2
        };
        assert!(matches!(find("Ingest"), Verdict::NotMet(_)), "0.25 < 0.6");
        assert!(
            matches!(find("Reads on the demo"), Verdict::Met(_)),
            "0.6 and 4 ms"
        );
        // 3.5× the hot update but p99 60 ms > 50 ms
        assert!(matches!(find("Hot-SKU"), Verdict::NotMet(d) if d.contains("60.00 > 50")));
        assert_eq!(*find("Publish"), Verdict::NotMeasured);
        // 40,000 at 1M against 10,000 at 10M: 4× the cost
        assert!(matches!(find("10M stock rows"), Verdict::NotMet(d) if d.contains("4.00")));
    }

    #[test]
    fn numbers_are_written_as_the_issues_write_them() {
        assert_eq!(fmt_num(82_345.4), "82,345");
        assert_eq!(fmt_num(412.0), "412");
        assert_eq!(fmt_num(15.44), "15.4");
        assert_eq!(fmt_num(0.5), "0.50");
    }
}
