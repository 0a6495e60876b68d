//! Command-line flags ([`BenchArgs`]), the workloads and systems they name, and the resolved
//! run [`Plan`].

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A workload of `bench.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Workload {
    /// 5,000 B → 16 B ack, C connections, 1 in flight each; plus a one-way 5,000 B stream.
    #[value(name = "W1", alias = "w1")]
    W1,
    /// 64 B → 64 B with exponential CPU work (mean 20 µs), 8 connections, one with 90 % of the
    /// requests (`--hot-share`).
    #[value(name = "W2", alias = "w2")]
    W2,
    /// 32 B → 16 B, pipelined, depth D per connection.
    #[value(name = "W3", alias = "w3")]
    W3,
    /// 64 B ping-pong on one connection: round-trip time.
    #[value(name = "W4", alias = "w4")]
    W4,
    /// Parser only: calls per second over a buffer of framed messages.
    #[value(name = "W5", alias = "w5")]
    W5,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 5] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
    ];

    /// "W1" … "W5".
    pub fn id(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
        }
    }
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum System {
    /// One epoll loop per worker thread, connections dealt round robin.
    Thread,
    /// tokio multi-thread runtime, one task per connection.
    Tokio,
    /// This library: one mux, one endpoint per worker.
    Kcm,
    /// One thread that only frames the streams: the ceiling.
    Raw,
    /// Linux AF_KCM, where the kernel has it.
    Kernel,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 5] = [
        System::Thread,
        System::Tokio,
        System::Kcm,
        System::Raw,
        System::Kernel,
    ];

    /// The name used in flags, tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Thread => "thread",
            System::Tokio => "tokio",
            System::Kcm => "kcm",
            System::Raw => "raw",
            System::Kernel => "kernel",
        }
    }
}

/// Flags of `kcm bench`.
///
/// ```
/// use clap::Parser;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     bench: kcm_bench::BenchArgs,
/// }
/// let cli = Cli::parse_from(["kcm", "--workload", "W1,w3", "--systems", "kcm,raw", "--quick"]);
/// assert_eq!(cli.bench.workloads, [kcm_bench::Workload::W1, kcm_bench::Workload::W3]);
/// assert!(cli.bench.quick);
/// ```
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// Workloads to run, comma-separated (W1 … W5).
    #[arg(long = "workload", alias = "workloads", value_delimiter = ',', default_values = ["W1", "W2", "W3", "W4", "W5"])]
    pub workloads: Vec<Workload>,
    /// Systems to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["thread", "tokio", "kcm", "raw", "kernel"])]
    pub systems: Vec<System>,
    /// Measured seconds per run [default: 1.2, --quick 0.4].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Warm-up seconds before each run's measured window [default: 0.25, --quick 0.1].
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<f64>,
    /// Client connections for W1 and W3 (W2 always uses 8, W4 one).
    #[arg(long, value_name = "C", default_value_t = 8)]
    pub connections: usize,
    /// Requests in flight per connection for W3 (bench.md asks for at least 64).
    #[arg(long, value_name = "D", default_value_t = 64)]
    pub depth: usize,
    /// Server worker threads, the same for every system.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
    /// Repetitions per workload and system [default: 3, --quick 1].
    #[arg(long, value_name = "R")]
    pub reps: Option<usize>,
    /// Load-generator threads (W2 always uses one, to keep its skew exact).
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub lg_threads: usize,
    /// W2: the share of requests on its hot connection (`bench.md`: 0.9; 0.125 spreads them
    /// evenly over the 8 connections, the best case for `thread`).
    #[arg(long, value_name = "F", default_value_t = 0.9)]
    pub hot_share: f64,
    /// Framed messages in W5's parser buffer.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub parser_messages: usize,
    /// BPF parser object for W5 [default: bpf/kcm_doc.o, the KCM documentation's parser].
    #[arg(long, value_name = "PATH")]
    pub bpf_object: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Draw the latency distributions (CDF, log-scale latency) to this SVG file.
    #[arg(long, value_name = "PATH.svg")]
    pub plot: Option<PathBuf>,
    /// Short runs, one repetition: a smoke test that finishes in well under 30 s.
    #[arg(long)]
    pub quick: bool,
}

impl Default for BenchArgs {
    /// The defaults the command line has (checked by a test).
    fn default() -> BenchArgs {
        BenchArgs {
            workloads: Workload::ALL.to_vec(),
            systems: System::ALL.to_vec(),
            duration: None,
            warmup: None,
            connections: 8,
            depth: 64,
            workers: 2,
            reps: None,
            lg_threads: 1,
            hot_share: 0.9,
            parser_messages: 1_000_000,
            bpf_object: None,
            json: None,
            plot: None,
            quick: false,
        }
    }
}

/// Flags that make no run possible.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// A duration that is not a positive number of seconds (or a negative warm-up).
    #[error("--{flag} must be a positive number of seconds, not {value}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: f64,
    },
    /// A count out of its range.
    #[error("--{flag} must be between {min} and {max}, not {value}")]
    Range {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A share that is not between 0 and 1.
    #[error("--{flag} must be between 0 and 1, not {value}")]
    Share {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: f64,
    },
    /// No workload or no system selected.
    #[error("nothing to run: no {0} selected")]
    Empty(&'static str),
}

/// What a run will do, every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Workloads, in order, without duplicates.
    pub workloads: Vec<Workload>,
    /// Systems, in table order, without duplicates.
    pub systems: Vec<System>,
    /// Measured window per run.
    pub duration: Duration,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Connections for W1 and W3.
    pub connections: usize,
    /// W3 depth.
    pub depth: usize,
    /// Server workers.
    pub workers: usize,
    /// Repetitions.
    pub reps: usize,
    /// Load-generator threads.
    pub lg_threads: usize,
    /// W2's hot-connection share.
    pub hot_share: f64,
    /// W5 buffer size in messages.
    pub parser_messages: usize,
    /// W5's BPF parser object.
    pub bpf_object: PathBuf,
}

fn secs(
    flag: &'static str,
    v: Option<f64>,
    default: f64,
    allow_zero: bool,
) -> Result<Duration, ArgsError> {
    let v = v.unwrap_or(default);
    let ok = v.is_finite() && (v > 0.0 || (allow_zero && v == 0.0)) && v < 86_400.0;
    if !ok {
        return Err(ArgsError::Duration { flag, value: v });
    }
    Ok(Duration::from_secs_f64(v))
}

fn share(flag: &'static str, v: f64) -> Result<f64, ArgsError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(ArgsError::Share { flag, value: v })
    }
}

fn range(flag: &'static str, value: usize, min: usize, max: usize) -> Result<usize, ArgsError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ArgsError::Range {
            flag,
            value,
            min,
            max,
        })
    }
}

impl BenchArgs {
    /// Resolves the defaults (`--quick` or not) and checks the flags.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let q = self.quick;
        let mut workloads = self.workloads.clone();
        workloads.sort();
        workloads.dedup();
        let mut systems = self.systems.clone();
        systems.sort();
        systems.dedup();
        if workloads.is_empty() {
            return Err(ArgsError::Empty("workload"));
        }
        if systems.is_empty() && workloads.iter().any(|w| *w != Workload::W5) {
            return Err(ArgsError::Empty("system"));
        }
        Ok(Plan {
            workloads,
            systems,
            duration: secs("duration", self.duration, if q { 0.4 } else { 1.2 }, false)?,
            warmup: secs("warmup", self.warmup, if q { 0.1 } else { 0.25 }, true)?,
            // Connection indexes travel in 16 bits of each request.
            connections: range("connections", self.connections, 1, 4096)?,
            depth: range("depth", self.depth, 1, 4096)?,
            workers: range("workers", self.workers, 1, 256)?,
            reps: range("reps", self.reps.unwrap_or(if q { 1 } else { 3 }), 1, 100)?,
            lg_threads: range("lg-threads", self.lg_threads, 1, 64)?,
            hot_share: share("hot-share", self.hot_share)?,
            parser_messages: range("parser-messages", self.parser_messages, 1, 100_000_000)?,
            bpf_object: self
                .bpf_object
                .clone()
                .unwrap_or_else(crate::parsebench::default_bpf_object),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn default_matches_the_command_line() {
        assert_eq!(Cli::parse_from(["kcm"]).bench, BenchArgs::default());
    }

    #[test]
    fn quick_plan_is_short() {
        let p = BenchArgs {
            quick: true,
            ..BenchArgs::default()
        }
        .plan()
        .unwrap();
        assert_eq!(p.reps, 1);
        assert!(p.duration < Duration::from_secs(1));
        let p = BenchArgs::default().plan().unwrap();
        assert_eq!(p.reps, 3);
    }

    #[test]
    fn flags_are_checked() {
        let bad = BenchArgs {
            duration: Some(-1.0),
            ..BenchArgs::default()
        };
        assert!(matches!(
            bad.plan(),
            Err(ArgsError::Duration {
                flag: "duration",
                ..
            })
        ));
        let bad = BenchArgs {
            workers: 0,
            ..BenchArgs::default()
        };
        assert!(matches!(
            bad.plan(),
            Err(ArgsError::Range {
                flag: "workers",
                ..
            })
        ));
        let bad = BenchArgs {
            workloads: vec![],
            ..BenchArgs::default()
        };
        assert_eq!(bad.plan(), Err(ArgsError::Empty("workload")));
        let bad = BenchArgs {
            hot_share: 1.5,
            ..BenchArgs::default()
        };
        assert!(matches!(
            bad.plan(),
            Err(ArgsError::Share {
                flag: "hot-share",
                ..
            })
        ));
    }

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        let cli = Cli::parse_from(["kcm", "--workload", "w3,W1,W3", "--systems", "raw,kcm,raw"]);
        let p = cli.bench.plan().unwrap();
        assert_eq!(p.workloads, [Workload::W1, Workload::W3]);
        assert_eq!(p.systems, [System::Kcm, System::Raw]);
    }
}
