//! The text report: one table per workload with every system's figures (median and min–max
//! over the repetitions), the ratios `bench.md` names, and the load generator's CPU share.

use std::fmt::Write as _;

use crate::results::{Mode, Row, Run, Spread, Suite, WorkloadResult};

/// A plain text table: first column left-aligned, the others right-aligned.
///
/// ```
/// use kcm_bench::report::Table;
/// let mut t = Table::new(["system", "QPS"]);
/// t.row(["kcm", "1,000"]);
/// t.row(["thread", "10"]);
/// assert_eq!(t.render(), "system    QPS\nkcm     1,000\nthread     10\n");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            rows: vec![headers.into_iter().map(Into::into).collect()],
        }
    }

    /// Appends a row (missing cells are blank, extra cells are kept).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as lines of text, columns separated by two spaces, no trailing blanks.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, w) in width.iter().enumerate() {
                let cell = r.get(c).map_or("", String::as_str);
                let pad = w - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                if c == 0 {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `1234567.8` → `"1,234,568"`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let n = v.round().abs() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 && n > 0 {
        out.insert(0, '-');
    }
    out
}

/// A figure with 3 significant digits and a unit suffix for large values (`1.23M`).
pub fn short(v: f64) -> String {
    let (div, suffix) = match v.abs() {
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e4 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let x = v / div;
    let prec = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else if x.abs() >= 1.0 || x == 0.0 {
        2
    } else {
        // Below one (a server's µs of CPU per W3 message): still three significant digits.
        3
    };
    format!("{x:.prec$}{suffix}")
}

/// `median [min–max]` of a throughput, or just the median for one repetition.
pub fn spread_rate(s: Option<Spread>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.min == s.max => thousands(s.median),
        Some(s) => format!(
            "{} [{}–{}]",
            thousands(s.median),
            short(s.min),
            short(s.max)
        ),
    }
}

/// A latency in µs, 1 decimal.
fn us(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| format!("{:.1}", s.median))
}

/// A ratio: `median [min–max]`.
pub fn spread_ratio(s: Option<Spread>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.min == s.max => format!("{:.2}", s.median),
        Some(s) => format!("{:.2} [{:.2}–{:.2}]", s.median, s.min, s.max),
    }
}

fn row_cells(r: &Row) -> Vec<String> {
    if r.error.is_some() && r.runs.is_empty() {
        return vec![r.label(), "failed".into()];
    }
    let lat = |f: fn(&crate::results::Latency) -> f64| us(r.spread(|x| x.latency.as_ref().map(f)));
    let mbs = match r.mode {
        Mode::OneWay => r
            .spread(|x| Some(x.bytes_per_s / 1e6))
            .map_or("-".into(), |s| format!("{:.0}", s.median)),
        Mode::ClosedLoop => "-".into(),
    };
    let cpu = r
        .spread(|x| Some(x.lg_cpu_share * 100.0))
        .map_or("-".into(), |s| format!("{:.0} %", s.median));
    let srv = r
        .spread(|x| Some(x.server_cpu_us))
        .map_or("-".into(), |s| short(s.median));
    vec![
        r.label(),
        spread_rate(r.spread(|x| Some(x.qps))),
        mbs,
        lat(|l| l.mean),
        lat(|l| l.sd),
        lat(|l| l.p50),
        lat(|l| l.p99),
        lat(|l| l.p999),
        cpu,
        srv,
    ]
}

/// One workload's table, ratios and notes.
pub fn workload_table(w: &WorkloadResult) -> String {
    let mut out = format!("{}: {}\n", w.workload.id(), w.shape);
    if !w.parsers.is_empty() {
        let mut t = Table::new(["parser", "calls/s", "note"]);
        for p in &w.parsers {
            let note = p.unavailable.clone().unwrap_or_default();
            t.row([
                p.name.clone(),
                spread_rate(Spread::of(&p.calls_per_s)),
                note,
            ]);
        }
        out.push_str(&t.render());
    }
    if !w.rows.is_empty() {
        let rate = if w.workload == crate::config::Workload::W3 {
            "msgs/s"
        } else {
            "QPS"
        };
        let mut t = Table::new([
            "system",
            rate,
            "MB/s",
            "mean µs",
            "sd µs",
            "p50 µs",
            "p99 µs",
            "p999 µs",
            "LG CPU",
            "srv CPU µs/msg",
        ]);
        for r in &w.rows {
            t.row(row_cells(r));
        }
        out.push_str(&t.render());
        for r in &w.rows {
            if let Some(e) = &r.error {
                let _ = writeln!(
                    out,
                    "  {}: failed after {} good run(s): {e}",
                    r.label(),
                    r.runs.len()
                );
            }
        }
        if w.rows.iter().any(|r| r.mode == Mode::OneWay) {
            out.push_str("  one-way rows: the requests streamed with no replies, rate = messages delivered/s\n");
        }
    }
    if let Some(line) = work_note(w) {
        out.push_str(&line);
    }
    if !w.ratios.is_empty() {
        let parts: Vec<String> = w
            .ratios
            .iter()
            .map(|r| {
                format!(
                    "{} ({}) {}",
                    r.name,
                    r.what,
                    spread_ratio(Spread::of(&r.values))
                )
            })
            .collect();
        let _ = writeln!(out, "  ratios: {}", parts.join("; "));
    }
    out
}

/// For a workload whose requests carry CPU work (W2): what that work took per request, what
/// each server cost beyond it, and what the load generator cost; the figures W2's ceiling
/// is made of (`runner::ratios`).
fn work_note(w: &WorkloadResult) -> Option<String> {
    let rows: Vec<&Row> = w
        .rows
        .iter()
        .filter(|r| r.mode == Mode::ClosedLoop)
        .collect();
    let work = rows
        .iter()
        .filter_map(|r| r.spread(Run::work))
        .map(|s| s.median)
        .next()?;
    let each = |f: fn(&Run) -> f64| -> Vec<String> {
        rows.iter()
            .filter_map(|r| {
                let s = r.spread(|x| Some(f(x)))?;
                Some(format!("{} {:.1}", r.label(), s.median))
            })
            .collect()
    };
    Some(format!(
        "  per request: the work {work:.1} µs of CPU; the server beyond it: {} µs; the load \
         generator: {} µs\n",
        each(|x| x.server_cpu_us - x.work_us).join(", "),
        each(|x| x.lg_cpu_us).join(", ")
    ))
}

/// The whole report.
pub fn render(suite: &Suite) -> String {
    let m = &suite.machine;
    let p = &suite.plan;
    let mut out = format!(
        "kcm bench: {} cores, {}, kernel {}, {}, commit {}\n{} workers, {} rep(s) x {:.2} s (+{:.2} s warm-up), median [min–max]\n",
        m.cores,
        m.cpu_model,
        m.kernel,
        m.date,
        suite.commit,
        p.workers,
        p.reps,
        p.duration.as_secs_f64(),
        p.warmup.as_secs_f64()
    );
    for (s, why) in &suite.skipped {
        let _ = writeln!(out, "{}: skipped ({why})", s.name());
    }
    for w in &suite.workloads {
        out.push('\n');
        out.push_str(&workload_table(w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_note_shows_each_server_beyond_the_work() {
        use crate::config::{System, Workload};
        let run =
            |server_cpu_us, work_us, lg_cpu_us| Run::sample(1.0, server_cpu_us, work_us, lg_cpu_us);
        let row = |system, r| Row {
            system,
            mode: Mode::ClosedLoop,
            runs: vec![r],
            error: None,
        };
        let mut w = WorkloadResult {
            workload: Workload::W2,
            shape: "w2".into(),
            rows: vec![
                row(System::Thread, run(23.0, 21.5, 1.6)),
                row(System::Kcm, run(24.0, 21.5, 1.75)),
            ],
            parsers: vec![],
            ratios: vec![],
        };
        let note = work_note(&w).unwrap();
        assert_eq!(
            note,
            "  per request: the work 21.5 µs of CPU; the server beyond it: thread 1.5, kcm 2.5 \
             µs; the load generator: thread 1.6, kcm 1.8 µs\n"
        );
        assert!(workload_table(&w).contains(&note));
        // Without work (every workload but W2) there is no such line.
        for r in &mut w.rows {
            r.runs[0].work_us = 0.0;
        }
        assert_eq!(work_note(&w), None);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_863_429.0), "1,863,429");
        assert_eq!(thousands(-12_345.0), "-12,345");
        assert_eq!(thousands(f64::NAN), "-");
    }

    #[test]
    fn short_uses_three_digits() {
        assert_eq!(short(70_336.0), "70.3k");
        assert_eq!(short(1_337_713.0), "1.34M");
        assert_eq!(short(512.0), "512");
        assert_eq!(short(0.193), "0.193");
        assert_eq!(short(11.24), "11.2");
        assert_eq!(short(2.5e9), "2.50G");
    }

    #[test]
    fn spreads_show_range_only_when_there_is_one() {
        assert_eq!(spread_rate(Spread::of(&[5.0])), "5");
        assert_eq!(
            spread_rate(Spread::of(&[70_000.0, 71_000.0, 69_000.0])),
            "70,000 [69.0k–71.0k]"
        );
        assert_eq!(
            spread_ratio(Spread::of(&[1.0, 1.5, 2.0])),
            "1.50 [1.00–2.00]"
        );
        assert_eq!(spread_ratio(None), "-");
    }

    #[test]
    fn table_aligns_columns_with_wide_characters() {
        let mut t = Table::new(["a", "mean µs"]);
        t.row(["long name", "1.0"]);
        t.row(["x"]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "a          mean µs");
        assert_eq!(lines[1], "long name      1.0");
        assert_eq!(lines[2], "x");
    }
}
