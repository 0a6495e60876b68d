//! `--plot PATH.svg`: the latency distribution of every system, one panel per workload, as
//! percentile curves: latency on a log scale across, the percentile up the side on a "nines"
//! scale (0 %, 90 %, 99 %, 99.9 %, 99.99 % equally spaced), so the tail that p99 and p999
//! summarise is as readable as the median.
//!
//! Written by hand rather than with `plotters`: the figure is a few polylines, axes and labels,
//! and hand-written SVG keeps the harness free of a plotting stack (font handling included) that
//! would have to build on every machine that runs `kcm bench`.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::results::Suite;

const W: f64 = 900.0;
const PANEL_H: f64 = 280.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// Nines shown up the side: 4 is the 99.99th percentile.
const MAX_NINES: f64 = 4.0;

/// One curve: a label and its (latency µs, quantile) points.
pub type Curve = (String, Vec<(f64, f64)>);

/// The quantile `q` on the nines scale, `-log10(1 - q)`, capped at 4 (99.99 %).
pub fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(10f64.powf(-MAX_NINES)).log10()).clamp(0.0, MAX_NINES)
}

/// The percentile curve of a histogram recorded in ns, as (µs, quantile), from the minimum
/// to the 99.99th percentile, sampled evenly on the nines scale.
pub fn percentiles(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=80)
        .map(|k| 1.0 - 10f64.powf(-f64::from(k) / 20.0))
        .map(|q| ((h.value_at_quantile(q) as f64 / 1000.0).max(0.001), q))
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws one panel at vertical offset `y0`.
fn panel(out: &mut String, y0: f64, title: &str, curves: &[Curve]) {
    let (x_lo, x_hi) = {
        let xs = curves.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
        let lo = xs.clone().fold(f64::INFINITY, f64::min);
        let hi = xs.fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi.is_finite() {
            (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            )
        } else {
            (0.0, 3.0)
        }
    };
    let pw = W - LEFT - RIGHT;
    let ph = PANEL_H - TOP - BOTTOM;
    let sx = |us: f64| LEFT + (us.log10() - x_lo) / (x_hi - x_lo) * pw;
    let sy = |q: f64| y0 + TOP + (1.0 - nines(q) / MAX_NINES) * ph;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#444"/>"##,
        y0 + TOP
    );
    for d in (x_lo as i32)..=(x_hi as i32) {
        let x = sx(10f64.powi(d));
        let label = match d {
            d if d < 0 => format!("{} µs", 10f64.powi(d)),
            d if d < 3 => format!("{} µs", 10i64.pow(d as u32)),
            d if d < 6 => format!("{} ms", 10i64.pow(d as u32 - 3)),
            d => format!("{} s", 10i64.pow(d as u32 - 6)),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            y0 + TOP,
            y0 + TOP + ph,
            y0 + TOP + ph + 16.0
        );
    }
    let ticks = [
        (0.0, "0"),
        (0.5, "50"),
        (0.9, "90"),
        (0.99, "99"),
        (0.999, "99.9"),
        (0.9999, "99.99"),
    ];
    for (q, label) in ticks {
        let y = sy(q);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale); up: percentile (nines scale)</text>"#,
        LEFT + pw / 2.0,
        y0 + PANEL_H - 6.0
    );
    for (i, (label, pts)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, q)| format!("{:.1},{:.1}", sx(x), sy(q)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            path.join(" ")
        );
        let ly = y0 + TOP + 14.0 + 18.0 * i as f64;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            lx + 20.0,
            ly - 4.0,
            lx + 26.0,
            esc(label)
        );
    }
}

/// An SVG document with one panel per (title, curves).
pub fn svg(panels: &[(String, Vec<Curve>)]) -> String {
    let h = PANEL_H * panels.len().max(1) as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    for (i, (title, curves)) in panels.iter().enumerate() {
        panel(&mut out, PANEL_H * i as f64, title, curves);
    }
    out.push_str("</svg>\n");
    out
}

/// The plot of a suite: every workload with latencies, every row that has any.
pub fn suite_svg(s: &Suite) -> String {
    let panels: Vec<(String, Vec<Curve>)> = s
        .workloads
        .iter()
        .filter_map(|w| {
            let curves: Vec<Curve> = w
                .rows
                .iter()
                .filter_map(|r| Some((r.label(), percentiles(&r.merged_hist()?))))
                .collect();
            (!curves.is_empty()).then(|| (format!("{}: {}", w.workload.id(), w.shape), curves))
        })
        .collect();
    svg(&panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_a_curve_per_system_and_no_nan() {
        let mut a = crate::loadgen::new_histogram();
        let mut b = crate::loadgen::new_histogram();
        for i in 1..1000u64 {
            a.record(10_000 + i * 10).unwrap();
            b.record(50_000 + i * 100).unwrap();
        }
        let panels = vec![
            (
                "W1 <a&b>".to_string(),
                vec![
                    ("thread".to_string(), percentiles(&a)),
                    ("kcm".to_string(), percentiles(&b)),
                ],
            ),
            ("W4".to_string(), vec![("kcm".to_string(), percentiles(&a))]),
        ];
        let s = svg(&panels);
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 3);
        assert!(s.contains("W1 &lt;a&amp;b&gt;"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // Decade ticks cover the data: 10 µs to 1 ms.
        assert!(s.contains(">10 µs<") && s.contains(">1 ms<"));
    }

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0), MAX_NINES);
    }

    #[test]
    fn percentiles_are_monotonic() {
        let mut h = crate::loadgen::new_histogram();
        for v in [1_000u64, 2_000, 4_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let pts = percentiles(&h);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert!(pts
            .last()
            .is_some_and(|p| (nines(p.1) - MAX_NINES).abs() < 1e-9));
        // The slowest sample is at the top of the curve.
        assert_eq!(pts.last().map(|p| p.0.round()), Some(1000.0));
    }
}
