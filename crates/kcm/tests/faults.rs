//! kcm over a lossy, slow, reordering network: every message still arrives whole.
//!
//! The test makes its own network namespace whose loopback interface has a queueing
//! discipline that hurts: `netem` (delay 5 ms, 5 % loss, 25 % reordering) where the kernel has
//! it, else a token bucket (`tbf`) with a tiny queue on a 1500-byte MTU, which drops most
//! bursts and delays the rest. TCP repairs all of it with retransmissions, so segments reach
//! kcm late, cut in odd places and after long pauses; the messages must not notice. The mux,
//! the clients and their sockets all live in that namespace (the test thread enters it with
//! `setns`), so no packet leaves it, and the namespace is deleted at the end even if the test
//! fails.
//!
//! It needs root and the `ip` and `tc` tools. Without them it prints `SKIPPED: ...` and passes,
//! except under CI (`CI` set), where a skipped fault test is a failure.

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{frame, read_frame, thrift};
use kcm::{Endpoint, Kind};

/// Messages each client sends (and gets back echoed).
const PER_CLIENT: u32 = 1500;
const CLIENTS: usize = 2;
/// Longest the whole exchange may take on a bad network.
const BUDGET: Duration = Duration::from_secs(60);

/// Passes with a notice, or fails under CI, when the environment cannot run the test.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("the fault test cannot run under CI: {why}");
    }
    eprintln!("SKIPPED: faults: {why}");
}

/// Finds an administration tool on PATH or in the usual sbin folders.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new(cmd).args(args).output()
}

fn ok(out: &std::io::Result<Output>) -> bool {
    out.as_ref().is_ok_and(|o| o.status.success())
}

/// A network namespace made for this test, deleted on drop (also when the test panics).
struct Namespace {
    ip: PathBuf,
    name: String,
    /// What the loopback interface was given, for the report.
    impairment: String,
}

impl Namespace {
    /// Creates the namespace with an impaired loopback interface, or says why it cannot.
    fn create() -> Result<Namespace, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        let ip = tool("ip").ok_or("the `ip` tool (iproute2) is missing")?;
        let tc = tool("tc").ok_or("the `tc` tool (iproute2) is missing")?;
        let name = format!("kcm-faults-{}", std::process::id());
        let add = run(&ip, &["netns", "add", &name]);
        if !ok(&add) {
            return Err(format!("`ip netns add` failed: {add:?}"));
        }
        // From here on the guard deletes the namespace whatever happens.
        let mut ns = Namespace {
            ip,
            name,
            impairment: String::new(),
        };
        let tc = tc.to_string_lossy().into_owned();
        let ns_exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str()];
            all.extend_from_slice(args);
            run(&ns.ip, &all)
        };
        let up = ns_exec(&["ip", "link", "set", "lo", "up"]);
        if !ok(&up) {
            return Err(format!("cannot bring up lo in the namespace: {up:?}"));
        }
        let netem = [
            "qdisc", "add", "dev", "lo", "root", "netem", "delay", "5ms", "loss", "5%", "reorder",
            "25%",
        ];
        let tbf = [
            "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "50mbit", "burst", "10kb", "limit",
            "12kb",
        ];
        let with_tc = |args: &[&str]| {
            let mut all = vec![tc.as_str()];
            all.extend_from_slice(args);
            ns_exec(&all)
        };
        if ok(&with_tc(&netem)) {
            ns.impairment = netem[5..].join(" ");
        } else if ok(&ns_exec(&["ip", "link", "set", "lo", "mtu", "1500"])) && ok(&with_tc(&tbf)) {
            ns.impairment = format!(
                "{} on mtu 1500 (netem is not available)",
                tbf[5..].join(" ")
            );
        } else {
            return Err("neither the netem nor the tbf queueing discipline is available".into());
        }
        Ok(ns)
    }

    /// The namespace's handle, where `ip netns add` put it.
    fn path(&self) -> PathBuf {
        ["/run/netns", "/var/run/netns"]
            .iter()
            .map(|d| Path::new(d).join(&self.name))
            .find(|p| p.exists())
            .unwrap_or_else(|| Path::new("/run/netns").join(&self.name))
    }

    /// `tc -s qdisc` of the namespace's loopback, for the report.
    fn qdisc_stats(&self) -> String {
        let tc = tool("tc")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tc".into());
        run(
            &self.ip,
            &[
                "netns", "exec", &self.name, &tc, "-s", "qdisc", "show", "dev", "lo",
            ],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run(&self.ip, &["netns", "del", &self.name]);
    }
}

/// Moves the calling thread into the namespace; threads it starts afterwards are in it too.
fn enter(ns_path: &Path) {
    let f = File::open(ns_path).expect("open the namespace");
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("setns into the test namespace");
}

/// A body that names its client and sequence number and is filled with a byte derived from
/// both, so truncation, mixing or corruption show.
fn body(client: usize, seq: u32) -> Vec<u8> {
    let len = 6 + (seq as usize * 389 + client * 97) % 1200;
    let mut b = vec![client as u8];
    b.extend_from_slice(&seq.to_le_bytes());
    b.resize(len, (client as u8).wrapping_mul(91) ^ (seq as u8));
    b
}

fn check(client: usize, msg: &[u8]) -> u32 {
    assert!(msg.len() >= 9, "short message: {} bytes", msg.len());
    assert_eq!(
        usize::from(msg[4]),
        client,
        "an echo reached the wrong client"
    );
    let seq = u32::from_le_bytes([msg[5], msg[6], msg[7], msg[8]]);
    assert_eq!(
        &msg[4..],
        &body(client, seq)[..],
        "message {seq} of client {client} is corrupt"
    );
    seq
}

/// Inside the namespace: two clients send framed messages through the impaired loopback to a
/// mux with two worker endpoints, which echo each on the connection it came from; each client
/// checks it gets every one of its messages back exactly once and intact.
fn exchange() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind in the namespace");
    let addr = listener.local_addr().expect("address");
    let ep = Endpoint::new(Kind::Datagram).expect("a mux");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        ep.attach(&server, thrift()).expect("attach");
        c.set_read_timeout(Some(BUDGET)).expect("timeout");
        clients.push(c);
    }
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + BUDGET;
    thread::scope(|s| {
        let workers: Vec<_> = [Some(ep.clone_endpoint().expect("clone")), None]
            .into_iter()
            .map(|owned| {
                let (stop, ep) = (&stop, &ep);
                s.spawn(move || {
                    let me = owned.as_ref().unwrap_or(ep);
                    me.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut echoed = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        match me.recv() {
                            Ok(m) => {
                                me.send_to(m.conn, m.data).expect("echo");
                                echoed += 1;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => panic!("worker: {e}"),
                        }
                        assert!(Instant::now() < deadline, "workers ran out of time");
                    }
                    echoed
                })
            })
            .collect();
        let client_threads: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(k, c)| {
                s.spawn(move || {
                    let mut reader = c.try_clone().expect("clone the stream");
                    let writer = s.spawn(move || {
                        for seq in 0..PER_CLIENT {
                            c.write_all(&frame(&body(k, seq))).expect("client write");
                        }
                    });
                    let mut seen = HashSet::new();
                    for _ in 0..PER_CLIENT {
                        let m = read_frame(&mut reader).expect("an echo within the budget");
                        assert!(seen.insert(check(k, &m)), "an echo arrived twice");
                    }
                    writer.join().expect("writer");
                    seen.len()
                })
            })
            .collect();
        for h in client_threads {
            assert_eq!(h.join().expect("client"), PER_CLIENT as usize);
        }
        stop.store(true, Ordering::SeqCst);
        let echoed: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
        assert_eq!(echoed, u64::from(PER_CLIENT) * CLIENTS as u64);
    });
    let stats = ep.mux_stats();
    assert_eq!(stats.rx_msgs, u64::from(PER_CLIENT) * CLIENTS as u64);
    assert_eq!(stats.tx_msgs, stats.rx_msgs);
    assert!(ep.take_events().is_empty(), "no connection may fail");
}

#[test]
fn messages_arrive_whole_over_a_lossy_delaying_reordering_network() {
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(why) => return skip(&why),
    };
    let path = ns.path();
    let started = Instant::now();
    let result = thread::spawn(move || {
        enter(&path);
        exchange();
    })
    .join();
    eprintln!(
        "faults: {} messages each way through lo with {} in {:?}\n{}",
        PER_CLIENT as usize * CLIENTS,
        ns.impairment,
        started.elapsed(),
        ns.qdisc_stats()
    );
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
