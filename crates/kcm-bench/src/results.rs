//! What a benchmark run produced: per-repetition figures, their medians and spreads, and the
//! ratios `bench.md` names. Ratios are taken per repetition, between systems measured side by
//! side in that repetition, then summarised (`bench.md`: "every claim is a ratio measured side
//! by side in one run").

use hdrhistogram::Histogram;

use crate::config::{Plan, System, Workload};

/// One run of one system on one workload.
#[derive(Debug, Clone)]
pub struct Run {
    /// Requests (or, one-way, messages delivered) per second.
    pub qps: f64,
    /// Bytes per second delivered (one-way runs; 0 otherwise).
    pub bytes_per_s: f64,
    /// Requests counted (replies received and verified, or messages delivered).
    pub requests: u64,
    /// Replies that passed verification (one-way: messages delivered whole and of the right size).
    pub verified: u64,
    /// Latency statistics in µs (closed-loop runs).
    pub latency: Option<Latency>,
    /// The latency histogram (ns), for the plot.
    pub hist: Option<Histogram<u64>>,
    /// Load-generator CPU time ÷ (wall time × cores).
    pub lg_cpu_share: f64,
    /// The server's CPU time per request (one-way: per message delivered), µs: the process's
    /// CPU time over the measured window minus the load generator's. Less moved by the shared
    /// host's speed than the rates, as long as the machine is not idle. It is the server
    /// threads' own time: on loopback the kernel's receive work for a segment runs in the
    /// thread that sent it, so the server's receiving is charged to the load generator and
    /// the load generator's to the server (the same for every system).
    pub server_cpu_us: f64,
    /// Of that, the requests' own work (W2's CPU work per request, as burnt; 0 elsewhere), µs
    /// per request: `server_cpu_us - work_us` is what the server itself costs.
    pub work_us: f64,
    /// The load generator's CPU time per request (one-way: per message delivered), µs.
    pub lg_cpu_us: f64,
}

impl Run {
    /// The requests' own work per request, µs, for a run whose requests carried some (W2).
    pub fn work(&self) -> Option<f64> {
        (self.work_us > 0.0).then_some(self.work_us)
    }

    /// A closed-loop run with these figures and nothing else (tests).
    #[cfg(test)]
    pub(crate) fn sample(qps: f64, server_cpu_us: f64, work_us: f64, lg_cpu_us: f64) -> Run {
        Run {
            qps,
            bytes_per_s: 0.0,
            requests: 1,
            verified: 1,
            latency: None,
            hist: None,
            lg_cpu_share: 0.0,
            server_cpu_us,
            work_us,
            lg_cpu_us,
        }
    }
}

/// Latency statistics of one run, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Latency {
    /// Statistics of a histogram recorded in ns.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: f64| ns / 1000.0;
        Latency {
            mean: us(h.mean()),
            sd: us(h.stdev()),
            p50: us(h.value_at_quantile(0.5) as f64),
            p99: us(h.value_at_quantile(0.99) as f64),
            p999: us(h.value_at_quantile(0.999) as f64),
        }
    }
}

/// Median, minimum and maximum of per-repetition values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (of an even count: the mean of the middle two).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    ///
    /// ```
    /// use kcm_bench::results::Spread;
    /// let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
    /// assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    /// ```
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// How a row's runs were driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Requests with replies, as the workload defines.
    ClosedLoop,
    /// A one-way stream of the workload's requests, no replies.
    OneWay,
}

/// One row of a workload's table: a system in one mode, over the repetitions.
#[derive(Debug, Clone)]
pub struct Row {
    /// The system.
    pub system: System,
    /// How it was driven.
    pub mode: Mode,
    /// Its runs, one per repetition that succeeded.
    pub runs: Vec<Run>,
    /// Why it stopped, if a run failed (later repetitions are not attempted).
    pub error: Option<String>,
}

impl Row {
    /// The row's label: the system, with " one-way" for one-way rows.
    pub fn label(&self) -> String {
        match self.mode {
            Mode::ClosedLoop => self.system.name().to_string(),
            Mode::OneWay => format!("{} one-way", self.system.name()),
        }
    }

    /// Spread of a per-run figure.
    pub fn spread(&self, f: impl Fn(&Run) -> Option<f64>) -> Option<Spread> {
        let v: Vec<f64> = self.runs.iter().filter_map(f).collect();
        Spread::of(&v)
    }

    /// All runs' latencies merged (for the plot).
    pub fn merged_hist(&self) -> Option<Histogram<u64>> {
        let mut it = self.runs.iter().filter_map(|r| r.hist.as_ref());
        let mut h = it.next()?.clone();
        for o in it {
            let _ = h.add(o);
        }
        Some(h)
    }
}

/// A parser's speed in W5.
#[derive(Debug, Clone)]
pub struct ParserRow {
    /// "native" or "bpf".
    pub name: String,
    /// Calls per second, one value per repetition.
    pub calls_per_s: Vec<f64>,
    /// Why it was not measured.
    pub unavailable: Option<String>,
}

/// A ratio between two rows, per repetition.
#[derive(Debug, Clone)]
pub struct Ratio {
    /// Its name, e.g. "kcm/thread".
    pub name: String,
    /// What it divides, for the table ("QPS", "p99", …).
    pub what: String,
    /// One value per repetition in which both sides ran.
    pub values: Vec<f64>,
}

/// Everything measured for one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// Which workload.
    pub workload: Workload,
    /// A one-line description of its shape, with the plan's numbers.
    pub shape: String,
    /// Table rows.
    pub rows: Vec<Row>,
    /// Parser rows (W5).
    pub parsers: Vec<ParserRow>,
    /// The ratios bench.md names.
    pub ratios: Vec<Ratio>,
}

impl WorkloadResult {
    /// The row of `system` in `mode`.
    pub fn row(&self, system: System, mode: Mode) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.system == system && r.mode == mode)
    }
}

/// The machine a suite ran on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    /// Cores available to the process.
    pub cores: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// UTC date and time of the run (ISO 8601).
    pub date: String,
}

/// A whole `kcm bench` run.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Where it ran.
    pub machine: Machine,
    /// `git rev-parse --short HEAD`, or "unknown".
    pub commit: String,
    /// The resolved plan.
    pub plan: Plan,
    /// Systems that could not run at all, with the reason (the kernel without AF_KCM).
    pub skipped: Vec<(System, String)>,
    /// Per workload.
    pub workloads: Vec<WorkloadResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_even_count_and_non_finite() {
        let s = Spread::of(&[4.0, f64::NAN, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn latency_from_histogram_is_in_microseconds() {
        let mut h = crate::loadgen::new_histogram();
        for v in [10_000u64, 20_000, 30_000] {
            h.record(v).unwrap();
        }
        let l = Latency::of(&h);
        assert!((l.mean - 20.0).abs() < 0.1, "{l:?}");
        assert!((l.p50 - 20.0).abs() < 0.1, "{l:?}");
        assert!((l.p999 - 30.0).abs() < 0.1, "{l:?}");
    }
}
