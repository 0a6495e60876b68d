//! The background engine thread: progress that no caller is there to make.
//!
//! One thread per mux. Every connection is registered *last* in a receive epoll of the engine's
//! (`rx_epoll`) with `EPOLLIN | EPOLLEXCLUSIVE | EPOLLET`, as in the endpoints' epolls. Because
//! exclusive wake-ups go to the first registered epoll that has a waiter, a connection's new bytes
//! wake a thread blocked in an endpoint's `recv` whenever there is one, and reach the engine only
//! when no endpoint thread is waiting in its epoll. Then, if some endpoint thread is busy — it took
//! messages with a blocking receive and will be back for more, or it is inside one on its way into
//! (or out of) its wait; a non-blocking caller, who waits for the endpoint's descriptor instead,
//! never counts — the bytes are left to it (they are on its epoll's ready list too) for up to
//! [`MuxOptions::busy_read_defer`](crate::MuxOptions) (300 µs by default): reading them here would
//! only queue messages nobody is free to take and cost a hand-off between threads. `rx_epoll` is
//! nested in the engine's main epoll with `EPOLLONESHOT` and armed again only once the deferred
//! reads are settled, so busy endpoint threads cost the engine one wake-up per window, not one per
//! arrival (and bytes that arrive during a window are noticed at its end: the engine reads them one
//! to two windows after they came, if nobody did). Meanwhile `Shared::rx_deferred` is raised, and a
//! busy thread that comes back for its next message reads what became readable itself (at most
//! every 100 µs): a thread that always has a message waiting never blocks in its epoll, so without
//! that a quiet connection's message would wait for the whole window.
//!
//! While *every* endpoint's thread is busy the window is [`ALL_BUSY_DEFER`] (20 ms) instead
//! (`Shared::window`): what the engine read could only be queued for a thread that is not
//! free, and each busy thread reads the arrivals itself as above; the engine's read is then
//! only for threads that never come back (so that errors and ends of stream are still seen).
//! A thread that leaves its receive without a message, or a new endpoint, wakes the engine
//! (`Shared::wake_busy_engine`), and the short window applies again at once. Under the bench's
//! W1 and W3, whose two workers are always busy, this took the engine from about 3,000–4,500
//! wake-ups a second to about 75.
//!
//! While some endpoint's thread waits in standby
//! ([`MuxOptions::concentrate`](crate::MuxOptions): it reads no connection while another
//! thread is at work and keeping up) the window is [`STANDBY_DEFER`] (1 ms) instead, and what
//! the engine reads is steered to a standby endpoint, which brings its thread in: the thread at
//! work left those bytes unread for that long.
//!
//! Its other duties: resume a transmit when a socket has write space again (the kernel's
//! `tx_work`; the main epoll watches every connection for `EPOLLOUT`, edge-triggered, which
//! the kernel reports only after a write found the socket full), fire assembly timeouts (the
//! strparser timer), and unattach connections that
//! [`MuxOptions::drop_failed`](crate::MuxOptions) marked once they are idle.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::conn::WAKER_KEY;
use crate::shared::Events;
use crate::shared::Shared;
use crate::sys::{Epoll, EventFlags, Waker};

pub(crate) struct EngineIo {
    /// What wakes the engine: its waker, connections' write space and errors, and `rx_epoll`
    /// while that is armed.
    pub(crate) epoll: Epoll,
    /// Connections' arrivals, registered last in each connection's wait queue (see the module
    /// docs). Nested in `epoll` with `EPOLLONESHOT`, so the engine decides when arrivals may
    /// wake it again.
    pub(crate) rx_epoll: Epoll,
    pub(crate) waker: Waker,
    timers: Mutex<BinaryHeap<Reverse<(Instant, u64)>>>,
    pub(crate) stop: std::sync::atomic::AtomicBool,
}

impl EngineIo {
    pub(crate) fn new() -> io::Result<EngineIo> {
        let epoll = Epoll::new()?;
        let waker = Waker::new()?;
        epoll.add(std::os::fd::AsFd::as_fd(&waker), WAKER_KEY, EventFlags::IN)?;
        let rx_epoll = Epoll::new()?;
        epoll.add(std::os::fd::AsFd::as_fd(&rx_epoll), RX_KEY, RX_ARM)?;
        Ok(EngineIo {
            epoll,
            rx_epoll,
            waker,
            timers: Mutex::new(BinaryHeap::new()),
            stop: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Asks for `key`'s assembly timeout to be checked at `at`.
    pub(crate) fn add_timer(&self, at: Instant, key: u64) {
        let mut t = self.timers.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = t.peek().is_none_or(|Reverse((d, _))| at < *d);
        t.push(Reverse((at, key)));
        drop(t);
        if earliest {
            self.waker.wake();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .peek()
            .map(|Reverse((d, _))| *d)
    }

    fn expired(&self, now: Instant) -> Vec<u64> {
        let mut t = self.timers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        while let Some(Reverse((d, k))) = t.peek().copied() {
            if d > now {
                break;
            }
            t.pop();
            out.push(k);
        }
        out
    }

    /// Lets the next arrival on any connection wake the engine (at once if one is pending).
    /// `false` if the kernel refused (the engine then tries again at its next tick).
    fn arm_rx(&self) -> bool {
        self.epoll
            .modify(std::os::fd::AsFd::as_fd(&self.rx_epoll), RX_KEY, RX_ARM)
            .is_ok()
    }

    pub(crate) fn shutdown(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }
}

/// Starts the engine thread for a mux. It holds only a weak reference, so it never keeps the
/// mux alive, and exits when the mux is torn down.
pub(crate) fn spawn(io: Arc<EngineIo>, shared: Weak<Shared>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("kcm-engine".into())
        .spawn(move || run(&io, &shared))?;
    Ok(())
}

fn run(io: &EngineIo, weak: &Weak<Shared>) {
    let Some(mut window) = weak.upgrade().map(|s| s.opts.busy_read_defer) else {
        return;
    };
    let mut evs = Vec::new();
    let mut last_sweep = Instant::now();
    // Reads left to busy endpoint threads: (when they were left, connection, its read count).
    let mut deferred: VecDeque<(Instant, u64, u64)> = VecDeque::new();
    let mut rx_evs = Vec::new();
    // `rx_epoll` fired and was not armed again yet.
    let mut rx_disarmed = false;
    // How long reads are left to busy threads (`Shared::window`).
    loop {
        if io.stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut timeout = None;
        if let Some(shared) = weak.upgrade() {
            // Decided before the wait, so that a thread that stops being busy during it
            // wakes us (`Shared::wake_busy_engine`).
            window = shared.window();
            let now = Instant::now();
            let next = [
                io.next_deadline(),
                deferred.front().map(|&(at, _, _)| at + window),
            ]
            .into_iter()
            .flatten()
            .min();
            timeout = next.map(|d| d.saturating_duration_since(now));
            if shared.has_reaps() {
                timeout = Some(timeout.map_or(REAP_TICK, |t| t.min(REAP_TICK)));
            }
            if shared
                .sweep_pending
                .load(std::sync::atomic::Ordering::Acquire)
            {
                timeout = Some(timeout.map_or(SWEEP_TICK, |t| t.min(SWEEP_TICK)));
            }
        }
        if rx_disarmed {
            // Arrivals cannot wake us until `rx_epoll` is armed again: come back to do it.
            timeout = Some(timeout.map_or(window, |t| t.min(window)));
        }
        if io.epoll.wait(&mut evs, timeout).is_err() {
            // Only EBADF/EINVAL are possible here, i.e. the mux is gone.
            return;
        }
        if io.stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(shared) = weak.upgrade() else { return };
        let mut events = Events::new();
        let mut arrivals = false;
        for &(key, flags) in &evs {
            if key == WAKER_KEY {
                io.waker.reset();
                continue;
            }
            if key == RX_KEY {
                arrivals = true;
                continue;
            }
            let Some(conn) = shared.conn_by_key(key) else {
                continue;
            };
            shared.write_space(&conn, &mut events);
            if flags.intersects(EventFlags::ERR | EventFlags::HUP) {
                shared.drive_rx(&conn, None, &mut events);
            }
        }
        // A thread may have stopped being busy during the wait (it woke us): the reads left
        // longer than `busy_read_defer` are due now.
        window = shared.window();
        if arrivals {
            // One wake-up for every connection that had bytes arrive since the last one.
            let _ = io.rx_epoll.wait(&mut rx_evs, Some(Duration::ZERO));
            let busy = shared.busy_eps.load(Ordering::Relaxed) > 0;
            for &(key, _) in &rx_evs {
                let Some(conn) = shared.conn_by_key(key) else {
                    continue;
                };
                if busy {
                    // No endpoint thread was waiting in its epoll (else one would have been
                    // woken instead), and at least one will look at it soon: the bytes are
                    // already on its epoll's ready list and it will read them itself, with no
                    // hand-off. If nobody has read the connection within the window, we do.
                    let reads = conn.reads.load(Ordering::Relaxed);
                    deferred.push_back((Instant::now(), key, reads));
                } else {
                    shared.drive_rx(&conn, None, &mut events);
                }
            }
        }
        let now = Instant::now();
        // Looked up once per pass, when a read is due: the core ignores the preference for
        // an endpoint that has filled meanwhile.
        let mut standby = None;
        while let Some(&(at, key, reads)) = deferred.front() {
            if at + window > now {
                break;
            }
            deferred.pop_front();
            if let Some(conn) = shared.conn_by_key(key) {
                if conn.reads.load(Ordering::Relaxed) == reads {
                    let prefer = *standby.get_or_insert_with(|| shared.standby_endpoint());
                    shared.drive_rx(&conn, prefer, &mut events);
                }
            }
        }
        // While reads are deferred, further arrivals wait for the deadline (they are on the
        // busy threads' ready lists too): the engine wakes once per window at most, not once
        // per arrival.
        if (arrivals || rx_disarmed) && deferred.is_empty() {
            rx_disarmed = !io.arm_rx();
        } else if arrivals {
            rx_disarmed = true;
        }
        shared
            .rx_deferred
            .store(!deferred.is_empty() || rx_disarmed, Ordering::Relaxed);
        for key in io.expired(Instant::now()) {
            if let Some(conn) = shared.conn_by_key(key) {
                shared.check_timeout(&conn);
            }
        }
        shared.dispatch(events, None);
        shared.run_reaps();
        if last_sweep.elapsed() >= SWEEP_TICK {
            last_sweep = Instant::now();
            shared.sweep_buffers();
        }
    }
}

/// The engine's window while some endpoint's thread waits in standby
/// ([`MuxOptions::concentrate`](crate::MuxOptions)): bytes the thread at work has not read
/// within it are read here and steered to an endpoint with room, which brings a standby thread
/// in. Long enough that the engine wakes at most about a thousand times a second under a
/// steady load, short enough to bound what a thread at work that stays away costs a message.
pub(crate) const STANDBY_DEFER: Duration = Duration::from_millis(1);

/// The key of the nested `rx_epoll` in the engine's epoll (connection keys never reach it).
const RX_KEY: u64 = u64::MAX - 1;
/// `rx_epoll` wakes the engine once, then waits to be armed again.
const RX_ARM: EventFlags = EventFlags::IN.union(EventFlags::ONESHOT);

/// How often idle connections give their read buffers back.
const SWEEP_TICK: Duration = Duration::from_millis(200);

const REAP_TICK: Duration = Duration::from_millis(20);

/// While every endpoint's thread is busy, how long arrivals are left to them (instead of
/// `busy_read_defer`): what the engine read could only be queued for a thread that is not
/// free, and each busy thread reads them itself when it comes back. The engine still reads
/// them in the end, for threads that never come back (errors and end of stream are seen,
/// statistics move).
pub(crate) const ALL_BUSY_DEFER: Duration = Duration::from_millis(20);
