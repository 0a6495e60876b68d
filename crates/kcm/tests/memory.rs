//! Memory per connection, measured (`bench.md` target: an idle connection holds ≤ 4 KiB of
//! buffers; a busy one at most its largest message plus one read buffer).
//!
//! A counting global allocator wraps the system allocator in this test binary, so every heap
//! byte that kcm (or anything else in the process) holds is seen. Two levels:
//!
//! - **Core**: one [`StrParser`] driven as the runtime's read loop drives it
//!   (`Shared::read_passes`): read at most the spare capacity of `recv_buf()`, parse every
//!   message, and `shrink()` when a read would block (the runtime may defer that to a later
//!   sweep of idle connections; the release itself is the same). Here the heap growth is the
//!   connection's buffers and nothing else, and it is checked against `buffered()`.
//! - **Runtime**: 1,000 loopback connections attached to one mux, each carrying a few
//!   requests and replies, then left idle; the heap growth of the whole process is split into
//!   what attaching costs (kcm's per-connection bookkeeping) and what the traffic left behind
//!   (buffers and queues that did not go back). And the peak while one connection assembles a
//!   1 MiB message in pieces.
//!
//! The bounds asserted are the targets (or generous multiples, where the figure is
//! bookkeeping that has no target); the measured figures are printed (`--nocapture`) and
//! recorded in `docs/bench.md`. Counts are requested sizes (`Layout::size`), not the
//! allocator's rounded block sizes. Tests here run one at a time (they share the counters).

mod common;
#[path = "memory/counting.rs"]
mod counting;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use counting::{delta, live, peak, reset_peak, serial};
use kcm::{AttachOptions, Kind};
use kcm_core::{StrConfig, StrParser};

const KIB: usize = 1024;
const READ_SIZE: usize = 64 * KIB;
/// The target for an idle connection's buffers (`bench.md`, memory row).
const IDLE_TARGET: usize = 4 * KIB;

// ---- core level ----

/// When the application lets go of delivered messages. Messages are zero-copy slices of the
/// read buffer they arrived in, so a held message keeps that buffer's allocation alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consume {
    /// After every read pass (the server handles a pass before the next read).
    PerRead,
    /// Only after the whole burst (every read of one wake-up), so the next read cannot reuse
    /// the buffer the previous read's messages still point into.
    PerBurst,
    /// Not at all while the test runs (it inspects `held`).
    Never,
}

/// One connection's receive side, driven like the runtime's read loop over bytes that arrive
/// in bursts (what one readiness wake-up finds in the socket).
struct Driven {
    sp: StrParser,
    now: Instant,
    consume: Consume,
    /// Delivered messages the application still holds.
    held: Vec<Bytes>,
    /// Largest `buffered()` seen after any step.
    peak_buffered: usize,
}

impl Driven {
    fn new(max_msg_size: usize, consume: Consume, capacity: usize) -> Driven {
        let cfg = StrConfig {
            max_msg_size,
            timeout: None,
            read_size: READ_SIZE,
        };
        Driven {
            sp: StrParser::new(thrift(), cfg),
            now: Instant::now(),
            consume,
            held: Vec::with_capacity(capacity),
            peak_buffered: 0,
        }
    }

    /// Reads `burst` as the runtime would: `recv_buf()`, read at most its spare capacity,
    /// `handle_recv`, drain `next_message`; once the burst is used up the next read would
    /// block, so `shrink()`.
    fn burst(&mut self, mut burst: &[u8]) {
        loop {
            let buf = self.sp.recv_buf();
            let spare = buf.capacity() - buf.len();
            let n = spare.min(burst.len());
            buf.extend_from_slice(&burst[..n]);
            self.peak_buffered = self.peak_buffered.max(self.sp.buffered());
            if n == 0 {
                self.sp.shrink();
                break;
            }
            burst = &burst[n..];
            self.sp.handle_recv(n, self.now);
            while let Some(m) = self.sp.next_message().expect("well-formed stream") {
                self.held.push(m);
            }
            self.peak_buffered = self.peak_buffered.max(self.sp.buffered());
            if self.consume == Consume::PerRead {
                self.held.clear();
            }
        }
        if self.consume == Consume::PerBurst {
            self.held.clear();
        }
    }
}

/// `count` Thrift frames of `total` bytes each (header included).
fn stream(total: usize, count: usize) -> Vec<u8> {
    frame(&vec![0x5a; total - 4]).repeat(count)
}

/// Slack for `bytes`' shared-buffer header (one small allocation per read buffer that has
/// handed out a message).
const SLACK: usize = 256;

/// Streams of small and mid-size messages, in bursts of one loopback segment or one full read:
/// the connection's buffers go back to nothing once idle, and while busy the connection holds
/// at most one read buffer plus one message. Messages the application still holds keep their
/// read buffer alive on top of that (zero copy), at most one more read buffer here.
#[test]
fn core_connection_is_empty_when_idle_and_bounded_when_busy() {
    let _g = serial();
    for consume in [Consume::PerRead, Consume::PerBurst] {
        for (size, count, burst) in [
            (32, 10_000, 1448),
            (32, 10_000, READ_SIZE),
            (5000, 200, 1448),
            (5000, 200, READ_SIZE),
        ] {
            let input = stream(size, count);
            let mut conn = Driven::new(128 * KIB, consume, count);
            let base = reset_peak();
            for chunk in input.chunks(burst) {
                conn.burst(chunk);
            }
            let idle_heap = delta(live(), base);
            let peak_heap = peak() - base;
            println!(
                "core {size} B messages, {burst} B bursts, consumed {consume:?}: idle \
                 buffered {} B, idle heap {idle_heap} B, peak buffered {} B, peak heap \
                 {peak_heap} B",
                conn.sp.buffered(),
                conn.peak_buffered
            );
            assert_eq!(conn.sp.stats().msgs, count as u64);
            assert_eq!(conn.sp.buffered(), 0, "an idle connection keeps no buffer");
            // The allocator counts the whole process: a runtime thread left over from another
            // test may allocate a few bytes meanwhile.
            assert!(
                idle_heap <= SLACK as isize,
                "an idle connection keeps no heap: {idle_heap} B"
            );
            assert!(conn.peak_buffered <= READ_SIZE + size);
            let app = match consume {
                Consume::PerRead => 0,
                Consume::PerBurst | Consume::Never => READ_SIZE,
            };
            // Growing a buffer that holds a partial message copies it into a new one: for a
            // moment both exist, so the heap's peak may reach two buffers.
            assert!(
                peak_heap <= 2 * (READ_SIZE + size) + app + SLACK,
                "peak heap {peak_heap} B"
            );
        }
    }
}

/// A 1 MiB message arriving in 16 KiB pieces: the connection holds one buffer of exactly the
/// message's size while it assembles (plus, for a moment, the read buffer it is moved out
/// of), and nothing once it is delivered.
#[test]
fn core_peak_while_assembling_1mib_is_message_plus_one_read_buffer() {
    let _g = serial();
    const MSG: usize = 1 << 20;
    let input = stream(MSG, 1);
    let mut conn = Driven::new(2 * MSG, Consume::Never, 1);
    let base = reset_peak();
    let mut peak_while_partial = 0;
    for chunk in input.chunks(16 * KIB) {
        conn.burst(chunk);
        if conn.held.is_empty() {
            peak_while_partial = peak_while_partial.max(conn.sp.buffered());
        }
    }
    assert_eq!(conn.held.len(), 1);
    assert_eq!(conn.held[0].len(), MSG);
    let held_by_app = delta(live(), base);
    conn.held.clear();
    let peak_heap = peak() - base;
    let idle_heap = delta(live(), base);
    println!(
        "core 1 MiB in 16 KiB pieces: buffered while partial {peak_while_partial} B, peak heap \
         {peak_heap} B, heap while the application holds the message {held_by_app} B \
         (connection buffered {} B), idle heap {idle_heap} B",
        conn.sp.buffered()
    );
    assert_eq!(peak_while_partial, MSG, "one buffer of exactly the message");
    assert_eq!(conn.peak_buffered, MSG);
    assert!(
        peak_heap <= MSG + READ_SIZE + SLACK,
        "peak heap {peak_heap} B"
    );
    assert!(held_by_app <= (MSG + SLACK) as isize);
    assert_eq!(conn.sp.buffered(), 0);
    // The allocator counts the whole process: a runtime thread left over from another test may
    // allocate a few bytes meanwhile.
    assert!(idle_heap <= SLACK as isize, "idle heap {idle_heap} B");
}

// ---- runtime level ----

/// Waits until the heap is at most `bound` bytes above `base` and then stops moving: the
/// runtime gives idle connections' read buffers back on its own schedule (the engine thread),
/// which this test does not assume. Returns the settled level and how long it took; after
/// `TIMEOUT` it returns the level as it is, and the caller's assertion reports it.
fn settle(base: usize, bound: usize) -> (usize, Duration) {
    let start = Instant::now();
    let deadline = start + TIMEOUT;
    let mut last = live();
    let mut still = 0;
    // Stable for 20 samples 10 ms apart, once within the bound.
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let now = live();
        still = if now == last && now <= base + bound {
            still + 1
        } else {
            0
        };
        last = now;
        if still == 20 {
            break;
        }
    }
    (last, start.elapsed())
}

/// Raises the soft limit on open descriptors to `n` if it is lower (a common default is
/// 1,024), within the hard limit.
fn allow_fds(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < n) {
        let current = Some(lim.maximum.map_or(n, |m| m.min(n)));
        let maximum = lim.maximum;
        // On failure the test fails later, on EMFILE, which says what is wrong.
        let _ = setrlimit(Resource::Nofile, Rlimit { current, maximum });
    }
}

/// Per-connection bookkeeping allowed by the test: generous, as it has no target of its own.
const BOOKKEEPING_BOUND: usize = 4 * IDLE_TARGET;

/// 1,000 connections attached, each carries three requests and three replies, then all idle.
#[test]
fn runtime_idle_connections_hold_no_buffers() {
    let _g = serial();
    const CONNS: usize = 1000;
    const ROUNDS: usize = 3;
    // 3 descriptors a connection (the peer's, ours until attached, kcm's).
    allow_fds(3 * CONNS as u64 + 100);
    let ep = endpoint(Kind::Datagram);
    // Everything the test itself needs is allocated before the first measurement.
    let mut clients: Vec<TcpStream> = Vec::with_capacity(CONNS);
    let mut servers: Vec<Option<TcpStream>> = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let (c, s) = tcp_pair();
        clients.push(c);
        servers.push(Some(s));
    }
    let parser = thrift();
    let request = frame(&[7; 100]);
    let reply = Bytes::from(frame(&[9; 12]));
    let mut reply_buf = vec![0u8; reply.len()];
    let (before_attach, _) = settle(live(), 0);

    for s in &mut servers {
        let s = s.take().expect("each server once");
        ep.attach(&s, parser.clone()).expect("attach");
        // kcm keeps its own descriptor; ours is closed, so the test needs 2 fds a connection.
    }
    let (attached, _) = settle(before_attach, CONNS * BOOKKEEPING_BOUND);

    reset_peak();
    for c in &mut clients {
        for _ in 0..ROUNDS {
            c.write_all(&request).expect("request");
        }
    }
    for _ in 0..CONNS * ROUNDS {
        let m = ep.recv().expect("a request");
        assert_eq!(m.data.len(), request.len());
        ep.send_to(m.conn, reply.clone()).expect("reply");
    }
    for c in &mut clients {
        for _ in 0..ROUNDS {
            std::io::Read::read_exact(c, &mut reply_buf).expect("reply");
            assert_eq!(&reply_buf[..], &reply[..]);
        }
    }
    let busy_peak = peak();
    let just_after = live();
    let (idle, took) = settle(attached, CONNS * IDLE_TARGET);

    let per = |bytes: isize| bytes / CONNS as isize;
    let bookkeeping = per(delta(attached, before_attach));
    let after_traffic = per(delta(just_after, attached));
    let left_by_traffic = per(delta(idle, attached));
    let peak_per_conn = per(delta(busy_peak, attached));
    println!(
        "runtime, {CONNS} connections: attach bookkeeping {bookkeeping} B/conn; right after \
         the traffic {after_traffic} B/conn more; idle (settled after {took:?}) \
         {left_by_traffic} B/conn more; peak during traffic {peak_per_conn} B/conn above \
         attached ({} B in all)",
        delta(busy_peak, attached)
    );
    assert_eq!(ep.connections().len(), CONNS);
    assert_eq!(ep.stats().rx_msgs, (CONNS * ROUNDS) as u64);
    assert!(
        left_by_traffic <= IDLE_TARGET as isize,
        "an idle connection keeps {left_by_traffic} B after traffic"
    );
    assert!(
        bookkeeping <= BOOKKEEPING_BOUND as isize,
        "attaching costs {bookkeeping} B a connection"
    );
}

/// One connection assembling a 1 MiB message written in 16 KiB pieces: the process's heap
/// peak, the message itself included, stays within the message plus one read buffer (and a
/// little bookkeeping), and goes back once the message is dropped.
#[test]
fn runtime_peak_while_assembling_1mib_message() {
    let _g = serial();
    const MSG: usize = 1 << 20;
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let input = stream(MSG, 1);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (before_attach, _) = settle(live(), 0);
    let opts = AttachOptions::default().max_message_size(2 * MSG);
    ep.attach_with(&server, thrift(), opts).expect("attach");
    drop(server);
    let writer = std::thread::spawn(move || {
        if go_rx.recv().is_err() {
            // The test failed before the start signal.
            return (client, input);
        }
        for piece in input.chunks(16 * KIB) {
            client.write_all(piece).expect("piece");
            // Give the reader a chance to see the message in several reads.
            std::thread::sleep(Duration::from_micros(200));
        }
        (client, input)
    });
    // Attached and idle: no read buffer (the writer thread's few bytes are in the bound).
    let (attached, took) = settle(before_attach, BOOKKEEPING_BOUND);
    let attach_cost = delta(attached, before_attach);
    println!("runtime 1 connection attached: {attach_cost} B (settled after {took:?})");
    // Attach reads the socket once (it may hold bytes already); finding it empty, the
    // connection must not keep the read buffer.
    assert!(
        attach_cost <= BOOKKEEPING_BOUND as isize,
        "an attached idle connection holds {attach_cost} B"
    );
    let base = reset_peak();
    go_tx.send(()).expect("writer waits");
    let m = ep.recv().expect("the 1 MiB message");
    let peak_heap = peak() - base;
    assert_eq!(m.data.len(), MSG);
    drop(m);
    let (client, input) = writer.join().expect("writer");
    let (level, took) = settle(base, IDLE_TARGET);
    let idle = delta(level, base);
    println!(
        "runtime 1 MiB message in 16 KiB pieces: peak heap {peak_heap} B above the idle \
         connection (message {MSG} B + read buffer {READ_SIZE} B = {} B); after the message is \
         dropped {idle} B (settled after {took:?})",
        MSG + READ_SIZE
    );
    assert!(
        peak_heap <= MSG + READ_SIZE + 16 * KIB,
        "peak {peak_heap} B over message + read buffer + 16 KiB"
    );
    assert!(
        idle <= IDLE_TARGET as isize,
        "{idle} B left after the message"
    );
    drop((client, input));
}
