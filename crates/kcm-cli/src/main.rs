//! `kcm`: the command-line face of kcm, a user-space Kernel Connection Multiplexor.
//!
//! Subcommands: `echo` (a message echo server), `demo` (an echo server and a client in one
//! process, checked end to end). Each lives in its own module; this file only parses the
//! command line and maps results to exit codes: 0 success, 1 failure, 2 usage error.

mod bpf_cmd;
mod demo;
mod drops;
mod echo;
mod pattern;
mod spec;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::spec::ParserSpec;

/// kcm: Linux's Kernel Connection Multiplexor (AF_KCM) in user space.
///
/// KCM turns TCP byte streams into whole messages: a parser finds the message boundaries,
/// a multiplexor hands each message to one of several endpoints (one per worker thread) and
/// sends each reply whole on one connection.
#[derive(Debug, Parser)]
#[command(name = "kcm", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a message echo server: every message is sent back on the connection it came from.
    ///
    /// Prints `listening on IP:PORT` once ready. On SIGINT or SIGTERM it prints the
    /// /proc/net/kcm_stats-style totals and the dropped connections by reason, and exits 0.
    /// A connection that sends bad input is dropped; the others carry on.
    #[command(after_long_help = spec::HELP)]
    Echo {
        /// Address to listen on, IP:PORT or HOST:PORT (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// How messages are framed: a preset, `lf:OPTIONS` or `bpf:PATH[:SECTION]` (see below
        /// with --help).
        #[arg(long, value_name = "SPEC", value_parser = spec::resolve)]
        parser: ParserSpec,
        /// Worker threads, each with its own endpoint [default: number of CPUs].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
        /// Largest message accepted, in bytes [default: each socket's receive buffer size,
        /// as the kernel].
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        max_message_size: Option<u64>,
    },
    /// Measure the published KCM workloads (W1–W5 of bench.md) for every system side by side.
    ///
    /// Systems: `thread` (connection per worker thread, epoll), `tokio` (Framed +
    /// LengthDelimitedCodec), `kcm` (this library), `raw` (read and frame only: the ceiling) and
    /// `kernel` (AF_KCM, where the kernel has it). Prints one table per workload with medians
    /// and min–max over the repetitions, and the ratios bench.md names.
    Bench(kcm_bench::BenchArgs),
    /// Inspect or run a BPF socket-filter parser program (the `.o` a kernel-KCM user loads).
    Bpf {
        #[command(subcommand)]
        command: BpfCommand,
    },
    /// Run an echo server and a client mux in one process on loopback and check every reply.
    ///
    /// T client threads send M messages of random sizes (thrift framing: a 4-byte big-endian
    /// length, then a body holding a sequence number and pseudo-random bytes) over C
    /// connections, and check that every one comes back exactly once, byte for byte. Prints
    /// the throughput and both muxes' statistics; exits 1 if a reply is missing or wrong.
    Demo {
        /// TCP connections between client and server.
        #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
        connections: u16,
        /// Client threads, each with its own endpoint.
        #[arg(long, value_name = "T", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
        /// Messages to send.
        #[arg(long, value_name = "M", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
        messages: u64,
        /// Largest message body in bytes (sizes are uniform from 8, the sequence number, to S).
        #[arg(long, value_name = "S", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(8..=(64 << 20)))]
        max_size: u32,
        /// Seed of the message sizes and contents.
        #[arg(long, value_name = "N", default_value_t = 1)]
        seed: u64,
        /// Echo server worker threads [default: number of CPUs].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
    },
}

/// `kcm bpf` subcommands.
#[derive(Subcommand, Debug)]
enum BpfCommand {
    /// Print the verifier's verdict, the disassembly, and whether the program is recognised
    /// as a native length-field parser (and as which). Exits 1 if the program is refused.
    Check {
        /// ELF object (`clang -O2 -target bpf -c`) or raw `struct bpf_insn` array.
        path: std::path::PathBuf,
        /// Section holding the program [default: `socket_kcm`, else the first `socket*`].
        #[arg(long, value_name = "S")]
        section: Option<String>,
    },
    /// Run the program on the given bytes (as the message view) and print its return value,
    /// as a signed decimal integer, on the last line.
    Run {
        /// ELF object or raw instructions.
        path: std::path::PathBuf,
        /// Section holding the program.
        #[arg(long, value_name = "S")]
        section: Option<String>,
        /// The message bytes in hex (spaces and `0x` allowed), e.g. `0000000568656c6c6f`.
        #[arg(long, value_name = "HEX")]
        hex: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => kcm_bench::run(&args),
        Command::Bpf { command } => match command {
            BpfCommand::Check { path, section } => bpf_cmd::check(&path, section.as_deref()),
            BpfCommand::Run { path, section, hex } => bpf_cmd::run(&path, section.as_deref(), &hex),
        },
        Command::Echo {
            listen,
            parser,
            workers,
            max_message_size,
        } => {
            let cfg = echo::EchoConfig {
                listen,
                parser,
                workers: workers.map_or_else(cpus, usize::from),
                max_message_size: max_message_size
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            run_echo(cfg)
        }
        Command::Demo {
            connections,
            threads,
            messages,
            max_size,
            seed,
            workers,
        } => demo::run(&demo::DemoConfig {
            connections: connections.into(),
            threads: threads.into(),
            messages,
            // At most 64 MiB, checked by clap.
            max_size: max_size as usize,
            seed,
            workers: workers.map_or_else(cpus, usize::from),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `kcm echo`: serve until SIGINT or SIGTERM, then print the statistics.
fn run_echo(cfg: echo::EchoConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once, in case shutdown hangs.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install a signal handler")?;
    }
    if cfg.parser.parser.strip_prefix() > 0 {
        eprintln!(
            "kcm echo: note: parser `{}` strips a prefix; replies go back without it",
            cfg.parser
        );
    }
    let mut server = echo::EchoServer::start(cfg)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.local_addr()).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        for ev in server.poll_events() {
            eprintln!("kcm echo: {ev}");
        }
    }
    let report = server.shutdown();
    write!(out, "{}", kcm::proc_net_kcm_stats()).context("cannot write to stdout")?;
    writeln!(
        out,
        "echoed {} messages ({} replies undeliverable)",
        report.echoed, report.failed_replies
    )
    .context("cannot write to stdout")?;
    writeln!(out, "{}", report.drops).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    Ok(())
}
