//! Runs the plan: for each workload, repetition after repetition, every system side by side,
//! each run with a fresh set of loopback connections, a warm-up and a measured window.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::{Plan, System, Workload};
use crate::loadgen::{self, LoadSpec};
use crate::results::{Latency, Mode, Ratio, Row, Run, WorkloadResult};
use crate::systems::{self, ServerCtx};
use crate::wire::Op;
use crate::work;

/// The load shape of one row of a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Server's action.
    pub op: Op,
    /// Request size.
    pub req_size: usize,
    /// Client connections.
    pub conns: usize,
    /// In flight per connection.
    pub depth: usize,
    /// Skewed window (W2): total in flight and the hot connection's share.
    pub window: Option<(usize, f64)>,
    /// Mean CPU work per request, ns.
    pub work_mean_ns: f64,
}

/// W2's connections.
pub const W2_CONNS: usize = 8;
/// W2's mean CPU work per request, ns.
pub const W2_WORK_NS: f64 = 20_000.0;

/// The closed-loop shape of a network workload.
pub fn shape(w: Workload, plan: &Plan) -> Option<Shape> {
    let base = Shape {
        op: Op::Ack,
        req_size: 32,
        conns: 1,
        depth: 1,
        window: None,
        work_mean_ns: 0.0,
    };
    Some(match w {
        Workload::W1 => Shape {
            req_size: 5000,
            conns: plan.connections,
            ..base
        },
        // Enough requests in flight that the hot connection's worker is never idle.
        Workload::W2 => Shape {
            op: Op::Echo,
            req_size: 64,
            conns: W2_CONNS,
            window: Some((4 * W2_CONNS, plan.hot_share)),
            work_mean_ns: W2_WORK_NS,
            ..base
        },
        Workload::W3 => Shape {
            conns: plan.connections,
            depth: plan.depth,
            ..base
        },
        Workload::W4 => Shape {
            op: Op::Echo,
            req_size: 64,
            ..base
        },
        Workload::W5 => return None,
    })
}

/// A one-line description of a workload with the plan's numbers.
pub fn describe(w: Workload, plan: &Plan) -> String {
    match w {
        Workload::W1 => format!("5,000 B -> 16 B ack, {} connections x 1 in flight", plan.connections),
        Workload::W2 => format!(
            "64 B -> 64 B, exp. CPU work mean 20 us, {W2_CONNS} connections (one carries {} %), {} in flight",
            (plan.hot_share * 1000.0).round() / 10.0,
            4 * W2_CONNS
        ),
        Workload::W3 => format!(
            "32 B -> 16 B ack, {} connections x depth {}{}",
            plan.connections,
            plan.depth,
            if plan.depth < 64 { " (bench.md asks for depth >= 64)" } else { "" }
        ),
        Workload::W4 => "64 B ping-pong, 1 connection, 1 in flight (RTT)".to_string(),
        Workload::W5 => format!(
            "parser only, a buffer of {} framed 32 B messages (bpf: {})",
            crate::report::thousands(plan.parser_messages as f64),
            plan.bpf_object.display()
        ),
    }
}

/// The rows a workload has for the chosen systems (`raw` only streams one way; W1 adds a
/// one-way 5,000 B stream for kcm and raw).
pub fn rows(w: Workload, systems: &[System]) -> Vec<(System, Mode)> {
    let mut out = Vec::new();
    for &s in systems {
        match (w, s) {
            (Workload::W5, _) => {}
            (Workload::W1 | Workload::W3, System::Raw) => out.push((s, Mode::OneWay)),
            (_, System::Raw) => {}
            _ => out.push((s, Mode::ClosedLoop)),
        }
    }
    if w == Workload::W1 && systems.contains(&System::Kcm) {
        out.push((System::Kcm, Mode::OneWay));
    }
    out
}

/// Connected loopback pairs, client and server ends in the same order (the order is the
/// connection index the requests carry).
fn pairs(n: usize) -> anyhow::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind loopback listener")?;
    let addr = l.local_addr()?;
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let c = TcpStream::connect(addr).context("connect")?;
        let (s, _) = l.accept().context("accept")?;
        // Request/response traffic: no Nagle delay on either side, for every system alike.
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        clients.push(c);
        servers.push(s);
    }
    Ok((clients, servers))
}

/// Runs one system once with `shape` (one-way when `mode` says so).
pub fn run_once(system: System, mode: Mode, shape: &Shape, plan: &Plan) -> anyhow::Result<Run> {
    let one_way = mode == Mode::OneWay;
    let op = if one_way { Op::None } else { shape.op };
    let (clients, servers) = pairs(shape.conns)?;
    let mut ctx = ServerCtx::new(plan.workers);
    ctx.cpu_work = shape.work_mean_ns > 0.0;
    let server = systems::start(system, servers, &ctx)?;
    let t0 = Instant::now() + Duration::from_millis(5);
    let measure_from = t0 + plan.warmup;
    let measure_until = measure_from + plan.duration;
    let spec = LoadSpec {
        op,
        req_size: shape.req_size,
        depth: shape.depth,
        window: if one_way { None } else { shape.window },
        work_mean_ns: shape.work_mean_ns,
        measure_from,
        measure_until,
    };
    // The skewed window must see every connection; otherwise deal connections round robin.
    let threads = if spec.window.is_some() {
        1
    } else {
        plan.lg_threads.min(shape.conns)
    };
    let mut shares: Vec<Vec<(u16, TcpStream)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        shares[i % threads].push((i as u16, c));
    }
    let lg: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(t, share)| {
            let spec = spec.clone();
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || loadgen::run_thread(share, &spec, 0x6b63_6d00 + t as u64))
        })
        .collect::<Result<_, _>>()
        .context("spawn load generator")?;
    // The server side's own count, for one-way rates.
    sleep_until(measure_from);
    let (m0, b0) = server.counters().snapshot();
    let cpu0 = work::process_cpu_time();
    let work0 = work::work_cpu_time();
    sleep_until(measure_until);
    let (m1, b1) = server.counters().snapshot();
    let cpu1 = work::process_cpu_time();
    let work1 = work::work_cpu_time();
    let mut load: Option<loadgen::LoadResult> = None;
    let mut lg_err = None;
    for t in lg {
        match t.join() {
            Ok(Ok(r)) => match &mut load {
                Some(l) => l.merge(&r),
                None => load = Some(r),
            },
            Ok(Err(e)) => lg_err = lg_err.or(Some(e)),
            Err(_) => lg_err = lg_err.or(Some(anyhow::anyhow!("load generator panicked"))),
        }
    }
    let totals = server.counters().snapshot();
    let stopped = server.stop();
    if let Some(e) = lg_err {
        return Err(e);
    }
    stopped?;
    let Some(load) = load else {
        bail!("no load generator result")
    };
    let secs = plan.duration.as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let lg_cpu_share = load.cpu.as_secs_f64() / (secs * cores);
    // Everything but the load generator is the server (this thread only sleeps meanwhile).
    let server_cpu = (cpu1.saturating_sub(cpu0)).saturating_sub(load.cpu);
    let us_per = |t: Duration, n: u64| t.as_secs_f64() * 1e6 / n.max(1) as f64;
    let work_cpu = work1.saturating_sub(work0);
    if one_way {
        let (msgs, bytes) = (m1 - m0, b1 - b0);
        if msgs == 0 {
            bail!("no messages delivered in the measured window");
        }
        // Every message delivered whole and of the size sent.
        if totals.1 != totals.0 * shape.req_size as u64 {
            bail!(
                "delivered {} bytes in {} messages of {} B",
                totals.1,
                totals.0,
                shape.req_size
            );
        }
        return Ok(Run {
            qps: msgs as f64 / secs,
            bytes_per_s: bytes as f64 / secs,
            requests: msgs,
            verified: msgs,
            latency: None,
            hist: None,
            lg_cpu_share,
            server_cpu_us: us_per(server_cpu, msgs),
            work_us: us_per(work_cpu, msgs),
            lg_cpu_us: us_per(load.cpu, msgs),
        });
    }
    if load.requests == 0 {
        bail!("no replies in the measured window");
    }
    Ok(Run {
        qps: load.requests as f64 / secs,
        bytes_per_s: 0.0,
        requests: load.requests,
        verified: load.verified,
        latency: Some(Latency::of(&load.hist)),
        hist: Some(load.hist),
        lg_cpu_share,
        server_cpu_us: us_per(server_cpu, load.requests),
        work_us: us_per(work_cpu, load.requests),
        lg_cpu_us: us_per(load.cpu, load.requests),
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// A ratio to compute: name, what it divides, numerator row, denominator row, the figure.
type RatioSpec<'a> = (
    &'static str,
    &'static str,
    Option<&'a Row>,
    Option<&'a Row>,
    fn(&Run) -> Option<f64>,
);

/// The most requests per second a server could answer on `cores` cores if each cost it
/// `server_us` of CPU and the load generator `lg_us`, with every core busy all the time.
fn ceiling_qps(cores: usize, server_us: f64, lg_us: f64) -> f64 {
    cores as f64 * 1e6 / (server_us + lg_us)
}

/// The ratios bench.md names for a workload, per repetition, on a machine of `cores` cores;
/// for W2 also its ceiling ([`w2_ceiling`]).
pub fn ratios(w: &WorkloadResult, cores: usize) -> Vec<Ratio> {
    let cl = |s| w.row(s, Mode::ClosedLoop);
    let ow = |s| w.row(s, Mode::OneWay);
    let qps = |r: &Run| Some(r.qps);
    let bps = |r: &Run| Some(r.bytes_per_s);
    let p99 = |r: &Run| r.latency.map(|l| l.p99);
    let p50 = |r: &Run| r.latency.map(|l| l.p50);
    let specs: Vec<RatioSpec<'_>> = match w.workload {
        Workload::W1 => vec![
            (
                "kcm/thread",
                "QPS",
                cl(System::Kcm),
                cl(System::Thread),
                qps,
            ),
            (
                "kcm/raw",
                "one-way bytes/s",
                ow(System::Kcm),
                ow(System::Raw),
                bps,
            ),
        ],
        Workload::W2 => vec![
            (
                "kcm/thread",
                "QPS",
                cl(System::Kcm),
                cl(System::Thread),
                qps,
            ),
            (
                "kcm/thread p99",
                "p99 latency",
                cl(System::Kcm),
                cl(System::Thread),
                p99,
            ),
        ],
        Workload::W3 => vec![
            (
                "kcm/thread",
                "msgs/s",
                cl(System::Kcm),
                cl(System::Thread),
                qps,
            ),
            ("kcm/raw", "msgs/s", cl(System::Kcm), ow(System::Raw), qps),
            (
                "kcm/tokio",
                "msgs/s",
                cl(System::Kcm),
                cl(System::Tokio),
                qps,
            ),
        ],
        Workload::W4 => vec![(
            "kcm/thread p50",
            "RTT p50",
            cl(System::Kcm),
            cl(System::Thread),
            p50,
        )],
        Workload::W5 => Vec::new(),
    };
    let mut out = Vec::new();
    for (name, what, a, b, f) in specs {
        let (Some(a), Some(b)) = (a, b) else { continue };
        // Repetition i of both rows ran side by side; rows that failed have fewer runs.
        let values: Vec<f64> = a
            .runs
            .iter()
            .zip(&b.runs)
            .filter_map(|(x, y)| Some(f(x)? / f(y)?))
            .filter(|v| v.is_finite())
            .collect();
        if !values.is_empty() {
            out.push(Ratio {
                name: name.to_string(),
                what: what.to_string(),
                values,
            });
        }
    }
    if w.workload == Workload::W2 {
        out.extend(w2_ceiling(w, cores));
    }
    if w.workload == Workload::W5 {
        let get = |name: &str| w.parsers.iter().find(|p| p.name == name);
        for (name, num) in [
            ("bpf/native", "bpf"),
            ("bpf-interpreter/native", "bpf-interpreter"),
        ] {
            let (Some(n), Some(b)) = (get("native"), get(num)) else {
                continue;
            };
            let values: Vec<f64> = b
                .calls_per_s
                .iter()
                .zip(&n.calls_per_s)
                .map(|(b, n)| b / n)
                .collect();
            if !values.is_empty() {
                out.push(Ratio {
                    name: name.into(),
                    what: "calls/s".into(),
                    values,
                });
            }
        }
    }
    out
}

/// W2's ceiling on this machine, per repetition: the QPS of a server that costs what `thread`
/// costs per request (its CPU time per request in that repetition, the work included), with
/// the load spread perfectly over every core and the load generator beside it at what it
/// cost per request in kcm's run. On 2 cores the load generator shares the cores with the
/// server, and `thread` with its busiest worker holding ≈ 94 % of the work leaves part of one
/// core idle, so a balancer can gain less than the 1.9 × that the skew allows on its own.
/// Returns `ceiling/thread` and `kcm/ceiling`; nothing without both rows.
fn w2_ceiling(w: &WorkloadResult, cores: usize) -> Vec<Ratio> {
    let (Some(t), Some(k)) = (
        w.row(System::Thread, Mode::ClosedLoop),
        w.row(System::Kcm, Mode::ClosedLoop),
    ) else {
        return Vec::new();
    };
    let (mut over_thread, mut kcm_share) = (Vec::new(), Vec::new());
    for (t, k) in t.runs.iter().zip(&k.runs) {
        let c = ceiling_qps(cores, t.server_cpu_us, k.lg_cpu_us);
        if c.is_finite() && c > 0.0 && t.qps > 0.0 {
            over_thread.push(c / t.qps);
            kcm_share.push(k.qps / c);
        }
    }
    if over_thread.is_empty() {
        return Vec::new();
    }
    vec![
        Ratio {
            name: "ceiling/thread".into(),
            what: "QPS at thread's cost per request, every core busy".into(),
            values: over_thread,
        },
        Ratio {
            name: "kcm/ceiling".into(),
            what: "QPS".into(),
            values: kcm_share,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(qps: f64, server_cpu_us: f64, lg_cpu_us: f64) -> Run {
        Run::sample(qps, server_cpu_us, 20.0, lg_cpu_us)
    }

    fn w2(rows: Vec<(System, Vec<Run>)>) -> WorkloadResult {
        WorkloadResult {
            workload: Workload::W2,
            shape: "w2".into(),
            rows: rows
                .into_iter()
                .map(|(system, runs)| Row {
                    system,
                    mode: Mode::ClosedLoop,
                    runs,
                    error: None,
                })
                .collect(),
            parsers: vec![],
            ratios: vec![],
        }
    }

    #[test]
    fn w2_ceiling_is_thread_cost_on_every_core_beside_the_load_generator() {
        // thread: 40 k QPS at 24 µs a request; kcm: 60 k QPS, its load generator 1 µs a
        // request. 2 cores ÷ 25 µs = 80 k QPS = 2 × thread; kcm reaches 0.75 of it.
        let w = w2(vec![
            (
                System::Thread,
                vec![run(40e3, 24.0, 2.0), run(50e3, 19.0, 2.0)],
            ),
            (
                System::Kcm,
                vec![run(60e3, 26.0, 1.0), run(60e3, 26.0, 1.0)],
            ),
        ]);
        let r = ratios(&w, 2);
        let get = |n: &str| r.iter().find(|x| x.name == n).unwrap().values.clone();
        assert_eq!(get("kcm/thread"), vec![1.5, 1.2]);
        let c = get("ceiling/thread");
        assert!(
            (c[0] - 2.0).abs() < 1e-9 && (c[1] - 2.0).abs() < 1e-9,
            "{c:?}"
        );
        let k = get("kcm/ceiling");
        assert!(
            (k[0] - 0.75).abs() < 1e-9 && (k[1] - 0.6).abs() < 1e-9,
            "{k:?}"
        );
        // Four cores hold twice as much.
        let c4 = ratios(&w, 4);
        let c4 = &c4
            .iter()
            .find(|x| x.name == "ceiling/thread")
            .unwrap()
            .values;
        assert!((c4[0] - 4.0).abs() < 1e-9);
    }

    #[test]
    fn w2_ceiling_needs_thread_and_kcm() {
        let w = w2(vec![(System::Thread, vec![run(40e3, 24.0, 2.0)])]);
        assert!(ratios(&w, 2).iter().all(|r| !r.name.contains("ceiling")));
        let w = w2(vec![(System::Kcm, vec![run(40e3, 24.0, 2.0)])]);
        assert!(ratios(&w, 2).is_empty());
    }
}
