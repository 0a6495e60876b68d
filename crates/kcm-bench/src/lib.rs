//! The benchmark harness behind `kcm bench`, following the protocol of `bench.md`.
//!
//! Every figure is measured side by side in one process, on one machine, in one run: for each
//! workload and repetition, each system serves a fresh set of loopback connections with the same
//! worker count and the same wire format (Thrift framing: a 4-byte big-endian length, then the
//! body), driven by the same load generator. The claims are ratios between systems of the same
//! repetition, reported as the median and min–max over the repetitions.
//!
//! ```text
//!  load generator threads                   server under test (same process)
//!  ┌─────────────────────────┐   loopback   ┌──────────────────────────────────────────┐
//!  │ epoll over its clients, │── requests ─▶│ thread │ tokio │ kcm │ raw │ kernel       │
//!  │ depth / skew / one-way, │◀── replies ──│ N workers, same framing, same replies    │
//!  │ checks every reply,     │              └──────────────────────────────────────────┘
//!  │ HDR latency (ns), CPU   │   server counters (messages, bytes) for one-way rates
//!  └─────────────────────────┘
//! ```
//!
//! - [`wire`]: the request and reply format; every reply is checked, so a broken server posts
//!   no numbers.
//! - [`loadgen`]: closed-loop and one-way load, latency histograms, its own CPU share.
//! - [`systems`]: the servers (`thread`, `tokio`, `kcm`, `raw`, `kernel`).
//! - [`runner`] and [`suite`]: workloads W1–W5, repetitions, warm-up, ratios.
//! - [`report`], [`json`], [`plot`]: the tables, the JSON record and the latency plot.
//!
//! ```no_run
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     bench: kcm_bench::BenchArgs,
//! }
//! kcm_bench::run(&Cli::parse().bench)?;
//! # Ok::<(), anyhow::Error>(())
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod framer;
pub mod json;
pub mod loadgen;
pub mod parsebench;
pub mod plot;
pub mod poller;
pub mod report;
pub mod results;
pub mod runner;
pub mod suite;
pub mod systems;
pub mod wire;
pub mod work;

use anyhow::Context;

pub use config::{BenchArgs, Plan, System, Workload};
pub use results::Suite;

/// Runs the benchmark the flags describe: prints one table per workload to stdout (progress to
/// stderr), and writes the JSON record and the latency plot when asked.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let suite = suite::run_suite(&plan, false);
    print!("{}", report::render(&suite));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json::suite_json(&suite))?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        eprintln!("kcm bench: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::suite_svg(&suite))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("kcm bench: wrote {}", path.display());
    }
    Ok(())
}
