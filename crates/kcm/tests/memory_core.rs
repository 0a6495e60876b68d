//! Memory per connection at the core level, measured (`bench.md` target: an idle connection
//! holds ≤ 4 KiB of buffers; a busy one at most its largest message plus one read buffer).
//!
//! One [`StrParser`] driven as the runtime's read loop drives it (`Shared::read_passes`): read
//! at most the spare capacity of `recv_buf()`, parse every message, and `shrink()` once idle (the
//! runtime does that in the engine's sweep of idle connections; the release itself is the same).
//! A counting global allocator wraps the system allocator in this test binary; the binary starts
//! no runtime, so no other thread allocates while a test measures, and the heap growth is the
//! connection's buffers and nothing else, checked against `buffered()`. The runtime-level figures
//! are in `tests/memory.rs`. Tests here run one at a time (they share the counters).

mod common;
#[path = "memory/counting.rs"]
mod counting;

use std::time::Instant;

use bytes::Bytes;
use common::{frame, thrift};
use counting::{delta, live, peak, reset_peak, serial};
use kcm_core::{StrConfig, StrParser};

const KIB: usize = 1024;
const READ_SIZE: usize = 64 * KIB;

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

/// Both scenarios in one test: libtest runs tests on threads of its own and captures their
/// output into growing buffers, and this allocator counts every thread; one test at a time in
/// the whole binary keeps the counts to the connection alone.
#[test]
fn core_memory_per_connection() {
    core_connection_is_empty_when_idle_and_bounded_when_busy();
    core_peak_while_assembling_1mib_is_message_plus_one_read_buffer();
}
