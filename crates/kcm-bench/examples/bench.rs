//! `cargo run --release -p kcm-bench --example bench -- --quick`: the harness without the CLI.

use clap::Parser;

/// Runs the kcm benchmark suite.
#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(flatten)]
    bench: kcm_bench::BenchArgs,
}

fn main() -> anyhow::Result<()> {
    kcm_bench::run(&Cli::parse().bench)
}
