//! The plot of docs/performance.md, written by hand (no plotting crate to build in CI): two
//! panels, requests/s and p99 against connections, one line per data set.

use std::fmt::Write;

use super::results::Results;

const W: f64 = 360.0;
const H: f64 = 240.0;
const PAD: f64 = 48.0;
const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

struct Series {
    name: String,
    points: Vec<(u32, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * p)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel at horizontal offset `x0`: x on a log2 scale of connections.
fn panel(out: &mut String, x0: f64, title: &str, series: &[Series], xs: &[u32]) {
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let (lo, hi) = (
        f64::from(*xs.first().unwrap_or(&1)).log2(),
        f64::from(*xs.last().unwrap_or(&2)).log2(),
    );
    let span = if hi > lo { hi - lo } else { 1.0 };
    let px = |c: u32| x0 + PAD + (f64::from(c).log2() - lo) / span * (W - 2.0 * PAD);
    let py = |v: f64| H - PAD + 10.0 - v / ymax * (H - 2.0 * PAD);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="18" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + W / 2.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        x0 + PAD,
        py(0.0),
        x0 + W - PAD,
        py(0.0)
    );
    let _ = writeln!(
        out,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        x0 + PAD,
        py(0.0),
        x0 + PAD,
        py(ymax)
    );
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PAD,
            py(v),
            x0 + W - PAD,
            py(v),
            x0 + PAD - 4.0,
            py(v) + 4.0,
            trim(v)
        );
    }
    for c in xs {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{c}</text>"#,
            px(*c),
            py(0.0) + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">connections</text>"#,
        x0 + W / 2.0,
        H + 4.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(c, v)| format!("{:.1},{:.1}", px(*c), py(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for (c, v) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(*c),
                py(*v)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            x0 + W - PAD - 60.0,
            36.0 + 14.0 * i as f64,
            escape(&s.name)
        );
    }
}

fn trim(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn plot(r: &Results) -> String {
    let mut rps = Vec::new();
    let mut p99 = Vec::new();
    let mut xs: Vec<u32> = Vec::new();
    for scale in r.scales() {
        let pts = r.curve("curve.reads", &scale);
        if pts.is_empty() {
            continue;
        }
        for p in &pts {
            let c = p.connections.unwrap_or(1).max(1);
            if !xs.contains(&c) {
                xs.push(c);
            }
        }
        let at = |f: &dyn Fn(&super::results::Figure) -> Option<f64>| -> Vec<(u32, f64)> {
            pts.iter()
                .filter_map(|p| Some((p.connections.unwrap_or(1).max(1), f(p)?)))
                .collect()
        };
        rps.push(Series {
            name: scale.clone(),
            points: at(&|p| Some(p.value)),
        });
        p99.push(Series {
            name: scale.clone(),
            points: at(&|p| p.p99_ms),
        });
    }
    xs.sort_unstable();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" viewBox="0 0 {:.0} {:.0}" font-family="sans-serif" font-size="11">"#,
        2.0 * W,
        H + 12.0,
        2.0 * W,
        H + 12.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    if xs.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="20" y="40">no curve measured in this run</text>"#
        );
    } else {
        panel(&mut out, 0.0, "availability reads: requests/s", &rps, &xs);
        panel(&mut out, W, "availability reads: p99 (ms)", &p99, &xs);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bench::results::Figure;

    #[test]
    fn plots_one_line_per_data_set_with_a_point_per_connection_count() {
        let point = |scale: &str, c: u32, v: f64| Figure {
            id: "curve.reads".into(),
            scale: scale.into(),
            value: v,
            p99_ms: Some(v / 1000.0),
            connections: Some(c),
            ..Default::default()
        };
        let r = Results {
            figures: vec![
                point("demo", 1, 4_000.0),
                point("demo", 16, 20_000.0),
                point("demo", 64, 21_000.0),
                point("1m", 1, 3_000.0),
                point("1m", 64, 9_000.0),
            ],
            ..Default::default()
        };
        let svg = plot(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // two panels × two data sets
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 10);
        // the throughput axis is rounded up from the 21k maximum to 50k
        assert!(svg.contains(">50k<"), "{svg}");
        assert_eq!(nice_max(21_000.0), 50_000.0);
        assert_eq!(nice_max(0.9), 1.0);
    }

    #[test]
    fn without_a_curve_the_plot_says_so() {
        assert!(plot(&Results::default()).contains("no curve measured"));
    }
}
