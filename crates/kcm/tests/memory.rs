//! Memory per connection, measured (`bench.md` target: an idle connection holds ≤ 4 KiB of
//! buffers; a busy one at most its largest message plus one read buffer).
//!
//! A counting global allocator wraps the system allocator in this test binary, so every heap
//! byte that kcm (or anything else in the process) holds is seen. Two levels:
//!
//! - **Core**: in `tests/memory_core.rs` (a binary of its own, so no runtime thread allocates
//!   while it measures).
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

const KIB: usize = 1024;
const READ_SIZE: usize = 64 * KIB;
/// The target for an idle connection's buffers (`bench.md`, memory row).
const IDLE_TARGET: usize = 4 * KIB;

/// `count` framed messages of `total` bytes each (header included).
fn stream(total: usize, count: usize) -> Vec<u8> {
    frame(&vec![0x5a; total - 4]).repeat(count)
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

/// Both scenarios in one test: libtest runs tests on threads of its own and captures their
/// output into growing buffers, and this allocator counts every thread; one test at a time in
/// the whole binary keeps the counts to kcm alone.
#[test]
fn runtime_memory_per_connection() {
    runtime_idle_connections_hold_no_buffers();
    runtime_peak_while_assembling_1mib_message();
}
