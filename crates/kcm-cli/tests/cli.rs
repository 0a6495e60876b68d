//! End-to-end tests of the `kcm` binary: every test runs the real executable, and every child
//! has a hard deadline after which it is killed, so a hung server fails the test instead of CI.
// Helpers outside `#[test]` functions are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KCM: &str = env!("CARGO_BIN_EXE_kcm");
const DEADLINE: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `kcm` child, killed on drop. Its stdout arrives line by line on `lines`; its
/// stderr is collected for failure messages.
struct Kcm {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Kcm {
    fn spawn(args: &[&str]) -> Kcm {
        let mut child = Command::new(KCM)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kcm");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            sink.lock().unwrap().push_str(&s);
        });
        Kcm {
            child,
            lines,
            stderr,
        }
    }

    fn next_line(&self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(l) => l,
            Err(e) => panic!("no line from kcm ({e}); stderr: {}", self.stderr()),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit (killing the child at the deadline), then returns the status, all
    /// remaining stdout and all stderr.
    fn wait(mut self) -> (ExitStatus, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kcm did not exit within {DEADLINE:?}; stderr: {}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The reader threads finish once the pipes close.
        let mut out = String::new();
        while let Ok(l) = self.lines.recv_timeout(IO_TIMEOUT) {
            out.push_str(&l);
            out.push('\n');
        }
        thread::sleep(Duration::from_millis(50));
        let err = self.stderr();
        (status, out, err)
    }

    /// Sends a signal with the `kill` command (no unsafe code needed).
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }
}

impl Drop for Kcm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kcm echo` and returns it with its address, checked from the `listening on` line.
fn echo_server(parser: &str) -> (Kcm, SocketAddr) {
    let kcm = Kcm::spawn(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--parser",
        parser,
        "--workers",
        "2",
    ]);
    let line = kcm.next_line();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: SocketAddr = addr.parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the real port is printed");
    (kcm, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

/// A thrift frame: u32 BE length of the body, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn body(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn read_frame(c: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 4];
    c.read_exact(&mut hdr).expect("reply header");
    let mut msg = hdr.to_vec();
    msg.resize(4 + u32::from_be_bytes(hdr) as usize, 0);
    c.read_exact(&mut msg[4..]).expect("reply body");
    msg
}

/// Sends one message and checks its echo; returns 1 (messages sent) for counting.
fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> u64 {
    c.write_all(msg).unwrap();
    assert_eq!(read_frame(c), msg);
    1
}

/// Sends one message a byte at a time, pausing so the bytes arrive in separate segments.
fn roundtrip_bytewise(c: &mut TcpStream, msg: &[u8]) -> u64 {
    for (i, b) in msg.iter().enumerate() {
        c.write_all(&[*b]).unwrap();
        if i % 3 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(read_frame(c), msg);
    1
}

/// Asserts that the server closed the connection: EOF or a reset, before the timeout.
fn assert_dropped(c: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!("dropped connection answered {n} bytes"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("the server did not drop the bad connection: {e}"),
        }
    }
}

/// The numbers on the line after the header that starts with `label` (e.g. "MUX").
fn stats_row(out: &str, label: &str) -> Vec<u64> {
    let mut lines = out.lines();
    lines
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label} header in {out}"));
    lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn echo_serves_connections_drops_a_bad_one_and_stops_on_sigterm() {
    let (kcm, addr) = echo_server("thrift");
    let (mut a, mut b, mut c) = (connect(addr), connect(addr), connect(addr));
    let mut sent = 0;

    // Whole messages, lock-step, empty to large.
    for (i, len) in [0usize, 1, 7, 100, 1500, 20_000].into_iter().enumerate() {
        sent += roundtrip(&mut a, &frame(&body(i as u8, len)));
    }
    // Split byte by byte, header and body.
    for (i, len) in [0usize, 5, 40].into_iter().enumerate() {
        sent += roundtrip_bytewise(&mut b, &frame(&body(50 + i as u8, len)));
    }
    // Pipelined: 50 messages in one write. Two workers may answer them out of order, so
    // compare as multisets.
    let burst: Vec<Vec<u8>> = (0..50)
        .map(|i| frame(&body(100 + i as u8, i * 13)))
        .collect();
    c.write_all(&burst.concat()).unwrap();
    sent += burst.len() as u64;
    let mut replies: Vec<Vec<u8>> = (0..burst.len()).map(|_| read_frame(&mut c)).collect();
    let mut expected = burst.clone();
    replies.sort();
    expected.sort();
    assert_eq!(replies, expected);
    // One connection stalled mid-message does not hold up another.
    let half = frame(&body(200, 300));
    a.write_all(&half[..150]).unwrap();
    sent += roundtrip(&mut c, &frame(b"meanwhile"));
    a.write_all(&half[150..]).unwrap();
    assert_eq!(read_frame(&mut a), half);
    sent += 1;

    // A fourth connection claims a 4 GiB message: EMSGSIZE, the server drops it.
    let mut bad = connect(addr);
    bad.write_all(b"\xff\xff\xff\xffgarbage").unwrap();
    assert_dropped(&mut bad);

    // Everyone else carries on.
    sent += roundtrip(&mut a, &frame(b"still here"));
    sent += roundtrip_bytewise(&mut b, &frame(b"b too"));
    sent += roundtrip(&mut c, &frame(&body(7, 3000)));

    kcm.signal("TERM");
    let (status, out, err) = kcm.wait();
    assert!(status.success(), "exit {status}; stderr: {err}");
    assert!(out.contains("RX-Msgs"), "no kcm_stats header in {out}");
    assert!(
        out.contains("dropped connections: 1 (parser error EMSGSIZE: 1)"),
        "stdout: {out}"
    );
    assert!(
        out.contains(&format!("echoed {sent} messages")),
        "stdout: {out}"
    );
    // MUX row: RX-Msgs, RX-Bytes, TX-Msgs, TX-Bytes, TX-Retries, Attach, ...
    let mux = stats_row(&out, "MUX");
    assert_eq!((mux[0], mux[2], mux[5]), (sent, sent, 4), "stdout: {out}");
    // Psock row: ..., RX-TooBig is the 13th column.
    assert_eq!(stats_row(&out, "Psock")[12], 1, "stdout: {out}");
    assert!(err.contains("EMSGSIZE"), "the failure is logged: {err}");
}

#[test]
fn echo_enforces_the_spec_maximum_and_stops_on_sigint() {
    let (kcm, addr) = echo_server("lf:max=1024");
    let mut good = connect(addr);
    // lf alone is thrift's layout; 1020 + 4 bytes is exactly the maximum.
    roundtrip(&mut good, &frame(&body(1, 1020)));
    let mut big = connect(addr);
    big.write_all(&5000u32.to_be_bytes()).unwrap();
    assert_dropped(&mut big);
    roundtrip(&mut good, &frame(&body(2, 10)));
    kcm.signal("INT");
    let (status, out, err) = kcm.wait();
    assert!(status.success(), "exit {status}; stderr: {err}");
    assert!(
        out.contains("dropped connections: 1 (parser error EMSGSIZE: 1)"),
        "stdout: {out}"
    );
    assert!(out.contains("echoed 2 messages"), "stdout: {out}");
}

#[test]
fn echo_stops_promptly_while_a_peer_refuses_to_read_its_replies() {
    let (kcm, addr) = echo_server("thrift");
    let mut hog = connect(addr);
    // Far more than the socket buffers and the endpoints' send buffers hold: the workers end
    // up blocked on replies that cannot go out. Small messages make for full receive batches.
    let writer = thread::spawn(move || {
        let chunk: Vec<u8> = (0..100).flat_map(|i| frame(&body(i, 100))).collect();
        for _ in 0..10_000 {
            if hog.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    thread::sleep(Duration::from_millis(500));
    let mut other = connect(addr);
    other.write_all(&frame(b"hello")).unwrap();
    let start = Instant::now();
    kcm.signal("TERM");
    let (status, out, err) = kcm.wait();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        start.elapsed()
    );
    assert!(status.success(), "exit {status}; stderr: {err}");
    assert!(out.contains("RX-Msgs"), "stdout: {out}");
    // The server is gone, so the writer's connection failed instead of draining 100 MB.
    assert!(
        writer.join().unwrap(),
        "the writer finished without the server reading"
    );
}

#[test]
fn demo_checks_every_reply_and_prints_both_muxes() {
    let kcm = Kcm::spawn(&[
        "demo",
        "--messages",
        "2000",
        "--connections",
        "2",
        "--threads",
        "2",
    ]);
    let (status, out, err) = kcm.wait();
    assert!(
        status.success(),
        "exit {status}; stdout: {out}; stderr: {err}"
    );
    assert!(
        out.contains("replies verified: 2000 of 2000 (0 wrong or repeated)"),
        "{out}"
    );
    assert!(out.contains("messages/s") && out.contains("MB/s"), "{out}");
    assert!(
        out.contains("client mux:") && out.contains("server mux:"),
        "{out}"
    );
    assert_eq!(
        out.matches("RX-Msgs").count(),
        4,
        "two muxes, two headers each: {out}"
    );
    // Both muxes carried every message each way.
    let mux = stats_row(&out, "MUX");
    assert_eq!((mux[0], mux[2]), (2000, 2000), "{out}");
}

#[test]
fn bad_parser_spec_is_a_usage_error() {
    for (spec, why) in [
        ("nonsense", "unknown parser `nonsense`"),
        ("lf:width=9", "width"),
        ("thrift,bogus", "unknown parser option `bogus`"),
        ("bpf:/nonexistent/parser.o", "/nonexistent/parser.o"),
    ] {
        let kcm = Kcm::spawn(&["echo", "--listen", "127.0.0.1:0", "--parser", spec]);
        let (status, out, err) = kcm.wait();
        assert_eq!(status.code(), Some(2), "{spec}: {status}; stderr: {err}");
        assert!(
            err.contains("--parser") && err.contains(why),
            "{spec}: {err}"
        );
        assert!(out.is_empty(), "{spec}: nothing is served: {out}");
    }
}

#[test]
fn help_documents_specs_and_flags() {
    assert_help_mentions(
        "echo",
        &[
            "Parser specs",
            "lf[:OPTIONS]",
            "bpf:PATH",
            "--listen",
            "--workers",
            "--max-message-size",
        ],
    );
    assert_help_mentions(
        "demo",
        &[
            "--connections",
            "--threads",
            "--messages",
            "--max-size",
            "--seed",
            "--workers",
        ],
    );
}

/// `kcm <command> --help` succeeds and mentions every one of `needles`.
fn assert_help_mentions(command: &str, needles: &[&str]) {
    let out = Command::new(KCM)
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kcm {command} --help");
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in needles {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }
}
