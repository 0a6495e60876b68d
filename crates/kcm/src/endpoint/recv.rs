//! The receiving half of [`Endpoint`]: `recvmsg`/`recvmmsg`, and the wait in which a receiving
//! thread reads the connections itself.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kcm_core::mux::Event;

use super::batch::BatchSink;
use super::{from_nanos, Endpoint, Message, RecvBatch, RecvMeta};
use crate::shared::Events;
use crate::shared::Shared;
use crate::sys;

/// How often at most a busy endpoint thread looks for arrivals left to it
/// ([`Endpoint::poll_arrivals`]): one non-blocking `epoll_wait` per period while the engine
/// defers, a small price beside the wait it saves a quiet connection's message.
const ARRIVALS_POLL: Duration = Duration::from_micros(100);

/// A thread that comes back for messages later than this after it last left with some is not
/// keeping up alone ([`MuxOptions::concentrate`](crate::MuxOptions)): it keeps only the first
/// read pass of its next wait and leaves the others to idle endpoints' threads. Far above what
/// a batch of small requests takes (the bench's W3: tens of microseconds), below the
/// engine's `STANDBY_DEFER`. (`Shared::slow_away` holds it, so that tests can change it.)
pub(crate) const SLOW_AWAY: Duration = Duration::from_micros(200);

/// Whether the endpoint's queue is empty.
fn queue_empty(core: &kcm_core::mux::MuxCore, ep: kcm_core::mux::EndpointId) -> bool {
    core.rx_queued(ep).is_none_or(|(msgs, _)| msgs == 0)
}

/// Whether a thread that used `ran` ns of CPU over `passed` ns was running for at least three
/// quarters of the time (so not mostly preempted or idle).
fn mostly_running(ran: u64, passed: u64) -> bool {
    ran.saturating_mul(4) >= passed.saturating_mul(3)
}

/// After a thread falls behind, no thread goes to standby for this long
/// ([`MuxOptions::concentrate`](crate::MuxOptions)): a load that needs more than one thread
/// keeps them all, instead of each going back to standby as soon as it catches up.
const SPREAD_HOLD: Duration = Duration::from_millis(10);

/// A thread at work that has not come back for messages for this long keeps no one in standby
/// ([`MuxOptions::concentrate`](crate::MuxOptions)): it may never come back (its application
/// gone to other work, or done receiving on that endpoint), and meanwhile every message would
/// reach the others only by the engine's read after `STANDBY_DEFER` (about 1 ms each instead of
/// a direct wake-up). (`Shared::at_work_stale` holds it, so that tests can change it.)
pub(crate) const AT_WORK_STALE: Duration = Duration::from_millis(10);

impl Endpoint {
    // ---- receiving ----

    /// Receives one whole message, blocking until one arrives (or the read timeout passes, or
    /// the endpoint is non-blocking: `WouldBlock`). While it waits, the calling thread reads and
    /// parses the mux's connections itself, so a message usually reaches it without any hand-off
    /// between threads.
    pub fn recv(&self) -> io::Result<Message> {
        let r = self.recv_inner(usize::MAX, false, None)?;
        Ok(Message {
            data: r.data,
            conn: r.conn,
        })
    }

    /// Returns the next message without taking it (`MSG_PEEK`: no counters change).
    pub fn peek(&self) -> io::Result<Message> {
        let r = self.recv_inner(usize::MAX, true, None)?;
        Ok(Message {
            data: r.data,
            conn: r.conn,
        })
    }

    /// Receives into a buffer with the kernel's semantics for short buffers: a datagram
    /// endpoint returns the prefix and drops the rest (`trunc`); a seqpacket endpoint returns the
    /// prefix and keeps the rest for the next call (`eor` false until the last piece; the
    /// original KCM semantics, `design.md` §2 decision 2).
    pub fn recv_into(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let r = self.recv_inner(buf.len(), false, None)?;
        buf[..r.data.len()].copy_from_slice(&r.data);
        Ok(RecvMeta {
            len: r.data.len(),
            conn: r.conn,
            eor: r.eor,
            trunc: r.trunc,
        })
    }

    /// Receives up to `max` whole messages into `out` (`recvmmsg` with `MSG_WAITFORONE`):
    /// waits for the first as [`Endpoint::recv`] does, then takes whatever else is already
    /// queued. Returns how many were added.
    ///
    /// [`Endpoint::recv_runs`] takes the same messages without a `Bytes` for each.
    pub fn recv_batch(&self, out: &mut Vec<Message>, max: usize) -> io::Result<usize> {
        self.recv_batch_into(out, max)
    }

    /// Receives up to `max` whole messages into `batch`, as [`Endpoint::recv_batch`] does,
    /// but keeps them as the runs they arrived in ([`RecvBatch`]): a read pass of many small
    /// messages is taken as one buffer and a list of lengths, and reading them costs no
    /// reference count or allocation per message. The batch is added to, not cleared.
    /// Returns how many messages were added.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::net::{TcpListener, TcpStream};
    /// use kcm::{Endpoint, Kind, RecvBatch};
    ///
    /// let l = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(l.local_addr()?)?;
    /// let ep = Endpoint::new(Kind::Datagram)?;
    /// ep.attach(&l.accept()?.0, kcm::presets::by_name("thrift").unwrap())?;
    /// client.write_all(b"\0\0\0\x03one\0\0\0\x03two")?;
    /// let mut batch = RecvBatch::new();
    /// while batch.len() < 2 {
    ///     ep.recv_runs(&mut batch, 64)?;
    /// }
    /// let got: Vec<&[u8]> = batch.iter().map(|m| m.data).collect();
    /// assert_eq!(got, [&b"\0\0\0\x03one"[..], b"\0\0\0\x03two"]);
    /// batch.clear();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_runs(&self, batch: &mut RecvBatch, max: usize) -> io::Result<usize> {
        self.recv_batch_into(batch, max)
    }

    fn recv_batch_into(&self, out: &mut impl BatchSink, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let fast = self.check_pace();
        let mut n = 0;
        let mut events = Events::new();
        let left_empty;
        {
            // Whatever is queued already is taken under one lock; only an empty queue goes
            // the blocking way for its first message.
            let mut st = self.shared.lock();
            if queue_empty(&st.core, self.id) {
                drop(st);
                let r = self.recv_inner(usize::MAX, false, Some(fast))?;
                out.push_one(Message {
                    data: r.data,
                    conn: r.conn,
                });
                n = 1;
                st = self.shared.lock();
            }
            n += out.take(&mut st.core, self.id, max - n);
            left_empty = queue_empty(&st.core, self.id);
            // A non-blocking caller waits for the endpoint's descriptor, not in its epoll: it
            // reads no connection while it waits, so it never counts as busy (`recv_inner`).
            self.shared.set_busy(&self.io, !self.is_nonblocking());
            Shared::drain(&mut st.core, &mut events);
        }
        self.leave_with_messages(fast && left_empty);
        self.shared.dispatch(events, Some(self.id));
        self.shared.sync_pollfd(self.id, &self.io);
        self.poll_arrivals();
        Ok(n)
    }

    /// While the engine leaves arrivals to busy endpoint threads ([`Shared::rx_deferred`]), a
    /// thread that takes messages reads the connections that became readable since it last
    /// looked (here or in a blocking wait), at most once per [`ARRIVALS_POLL`]: their messages
    /// join the queues (or wait their turn on their connection) now, not when every busy
    /// thread has run dry or the engine's deadline passes. (Without it, under W2's skew a
    /// quiet connection's request waited ≈ 1 ms to be read while the busy connection kept
    /// both workers supplied; tests/receive.rs,
    /// a_busy_thread_reads_a_quiet_connection_without_draining_the_busy_one_first.)
    fn poll_arrivals(&self) {
        if !self.shared.rx_deferred.load(Ordering::Relaxed) {
            return;
        }
        let now = self.shared.since_epoch();
        let last = self.io.last_poll.load(Ordering::Relaxed);
        if now.saturating_sub(last) < ARRIVALS_POLL.as_nanos() as u64 {
            return;
        }
        self.io.last_poll.store(now, Ordering::Relaxed);
        let mut ready = Vec::new();
        if self
            .io
            .epoll
            .wait(&mut ready, Some(Duration::ZERO))
            .is_err()
        {
            return;
        }
        let mut events = Events::new();
        for &(key, _) in &ready {
            // The waker (level-triggered) is left as it is: the next blocking wait sees it and
            // looks at the queue, and a caller polling the internal epoll as the endpoint's
            // descriptor (the fallback of `as_fd`) still finds it readable.
            if let Some(conn) = self.shared.conn_by_key(key) {
                // Every endpoint thread is busy (else the bytes would have woken one): this
                // one, back already, may keep what it reads, as in a blocking wait.
                self.shared.drive_rx(&conn, Some(self.id), &mut events);
            }
        }
        self.shared.dispatch(events, Some(self.id));
    }

    /// A blocking receive leaves without a message (an error, its timeout): the thread is
    /// neither waiting nor busy any more.
    fn leave_empty_handed(&self) {
        self.shared.set_sleeping(&self.io, false);
        self.shared.set_busy(&self.io, false);
    }

    /// A receive leaves with messages ([`MuxOptions::concentrate`](crate::MuxOptions)).
    /// `caught_up`: the thread came back in time and its queue is now empty, so it is keeping
    /// up. A queue not empty for longer than [`SLOW_AWAY`] is a sign that it is not.
    fn leave_with_messages(&self, caught_up: bool) {
        if !self.concentrates() {
            return;
        }
        let now = self.shared.since_epoch();
        self.io.left_at.store(now, Ordering::Relaxed);
        if caught_up {
            self.io.drained(now);
            return;
        }
        let drained = self.io.drained_at.load(Ordering::Relaxed);
        if now.saturating_sub(drained) > self.shared.slow_away.load(Ordering::Relaxed) {
            self.slow_sign();
        }
    }

    /// Whether this endpoint's receives take part in [`MuxOptions::concentrate`]
    /// (crate::MuxOptions): a blocking one of a mux with the option on.
    fn concentrates(&self) -> bool {
        self.shared.opts.concentrate && !self.is_nonblocking()
    }

    /// A receive begins: whether the thread came back within [`SLOW_AWAY`] of leaving with
    /// messages. One that did not shows a sign of not keeping up.
    fn check_pace(&self) -> bool {
        if !self.concentrates() {
            return true;
        }
        let left = self.io.left_at.load(Ordering::Relaxed);
        let slow = self.shared.slow_away.load(Ordering::Relaxed);
        if left == 0 || self.shared.since_epoch().saturating_sub(left) <= slow {
            return true;
        }
        self.slow_sign();
        false
    }

    /// A sign that the thread is not keeping up alone. It falls behind if it has been
    /// running for at least three quarters of the time since the previous sign (its CPU time
    /// against the wall clock): a thread that was away because it was preempted, or idle,
    /// would gain nothing from another competing for the same cores (on the bench's 2 shared
    /// cores, acting on every sign brought a second thread in whenever the first was
    /// preempted, and took W3 from about 1.5 to about 1.2 × `thread`). The CPU clock is a
    /// system call (≈ 0.4 µs here), read only at these signs, not per receive.
    fn slow_sign(&self) {
        let now = self.shared.since_epoch();
        let wall0 = self.io.sign_wall.load(Ordering::Relaxed);
        let slow = self.shared.slow_away.load(Ordering::Relaxed);
        if wall0 != 0 && now.saturating_sub(wall0) < slow {
            // At most one look per `SLOW_AWAY`: a thread at full load shows a sign on every
            // receive.
            return;
        }
        let cpu = sys::thread_cpu_ns();
        self.io.sign_wall.store(now, Ordering::Relaxed);
        let cpu0 = self.io.sign_cpu.swap(cpu, Ordering::Relaxed);
        let (ran, passed) = (cpu.saturating_sub(cpu0), now.saturating_sub(wall0));
        if wall0 != 0 && mostly_running(ran, passed) && self.shared.idle_core() {
            self.fall_behind();
        }
    }

    /// The thread is not keeping up alone ([`EpIo::behind`](crate::shared::EpIo)): the
    /// threads in standby are woken, and wait for the connections themselves until it
    /// catches up ([`MuxOptions::concentrate`](crate::MuxOptions)). Without this, under a
    /// CPU-heavy load with the default receive buffer one thread kept the work for itself
    /// while the other slept (the bench's W2 with a 208 KiB `SO_RCVBUF` and a batch of 16:
    /// 0.98 × `thread` against 1.53 spreading).
    fn fall_behind(&self) {
        // Spread for a while: without it the two threads of a CPU-heavy load took turns,
        // each going to standby as soon as it caught up (the W2 variants above: 1.17–1.29
        // against 1.26–1.34 with it; see `SPREAD_HOLD`).
        let until = self.shared.since_epoch() + SPREAD_HOLD.as_nanos() as u64;
        self.shared.spread_until.fetch_max(until, Ordering::SeqCst);
        if !self.io.behind.swap(true, Ordering::SeqCst) {
            self.shared.wake_standby();
        }
    }

    /// Takes one message, waiting for it as the endpoint's mode says. `batch`: called by a
    /// batch receive with its pace check's answer ([`Endpoint::check_pace`]); the batch
    /// receive then does what follows a message itself (the pace bookkeeping, arrivals).
    fn recv_inner(
        &self,
        max: usize,
        peek: bool,
        batch: Option<bool>,
    ) -> io::Result<kcm_core::mux::RecvRead> {
        let nonblocking = self.is_nonblocking();
        let concentrate = self.concentrates();
        let fast = batch.unwrap_or_else(|| self.check_pace());
        let keep_all = concentrate && !self.io.behind.load(Ordering::Relaxed);
        let deadline =
            from_nanos(self.read_timeout.load(Ordering::Relaxed)).map(|d| Instant::now() + d);
        let mut ready = Vec::new();
        let mut polled_once = false;
        loop {
            let mut events = Events::new();
            let roomy;
            {
                let mut st = self.shared.lock();
                let r = st.core.recv(self.id, max, peek);
                Shared::drain(&mut st.core, &mut events);
                // Under the lock that saw the queue empty (see `EpIo::sleeping`).
                self.shared
                    .set_sleeping(&self.io, r.is_none() && !nonblocking);
                // A thread in a blocking receive counts as busy until it leaves without a
                // message: it will look at its epoll, whose ready list holds every arrival the
                // engine is woken for while the thread is not yet (or no longer) waiting in
                // it, so the engine need not read and hand over those bytes. A non-blocking
                // receive never counts, message or not: its caller waits for the endpoint's
                // descriptor in its own loop, which only the engine's reads make readable, so
                // bytes left to it would wait out the engine's window (20 ms while no endpoint
                // is free).
                self.shared.set_busy(&self.io, !nonblocking);
                if let Some(r) = r {
                    let left_empty = queue_empty(&st.core, self.id);
                    drop(st);
                    // (A batch receive does these once it has taken the rest.)
                    let single = !peek && batch.is_none();
                    if single {
                        self.leave_with_messages(fast && left_empty);
                    }
                    self.shared.dispatch(events, Some(self.id));
                    self.shared.sync_pollfd(self.id, &self.io);
                    if single {
                        self.poll_arrivals();
                    }
                    return Ok(r);
                }
                if let Some(e) = st.core.take_endpoint_error(self.id) {
                    self.leave_empty_handed();
                    return Err(sys::os_err(e));
                }
                // An endpoint whose receive buffer cannot hold a read pass is set up to balance
                // message by message (KCM's idiom: a one-byte SO_RCVBUF): it does not
                // concentrate. (Looked up only on the way to a wait.)
                roomy = concentrate
                    && st
                        .core
                        .rcvbuf(self.id)
                        .is_some_and(|b| b >= self.shared.opts.read_size);
            }
            self.shared
                .dispatch(std::mem::take(&mut events), Some(self.id));
            let timeout = if nonblocking {
                if polled_once {
                    self.shared.sync_pollfd(self.id, &self.io);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Some(Duration::ZERO)
            } else {
                match deadline {
                    None => None,
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(w) if !w.is_zero() => Some(w),
                        // SO_RCVTIMEO expiry is EAGAIN, as for any socket.
                        _ => {
                            self.leave_empty_handed();
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                    },
                }
            };
            polled_once = true;
            // Its queue is empty: a thread that came back in time is keeping up.
            if fast {
                self.io.drained(self.shared.since_epoch());
            }
            // While another endpoint's thread is at work this one waits only for messages
            // steered to it (standby), so that new bytes go to the thread at work instead of
            // waking this one (`MuxOptions::concentrate`).
            let standby = roomy && self.shared.standby_fits();
            let waited = if standby {
                self.shared.set_standby(&self.io, true);
                // Asked again once counted: a thread that falls behind in between wakes only
                // the threads it sees in standby (`Shared::wake_standby`, SeqCst both sides).
                let w = if self.shared.standby_fits() {
                    self.io.standby.wait(&mut ready, timeout)
                } else {
                    self.io.epoll.wait(&mut ready, timeout)
                };
                self.shared.set_standby(&self.io, false);
                w
            } else {
                self.io.epoll.wait(&mut ready, timeout)
            };
            self.shared.set_sleeping(&self.io, false);
            // What is ready now is in `ready`: no need to look again for a while.
            self.io
                .last_poll
                .store(self.shared.since_epoch(), Ordering::Relaxed);
            if let Err(e) = waited {
                self.leave_empty_handed();
                return Err(e);
            }
            // This thread keeps the first read pass that brings it messages. The passes of the
            // other ready connections go by the eligible FIFO while another endpoint's thread
            // is idle, so that it starts on them at once instead of waiting for this one to
            // work through everything; while every other thread is busy, this one keeps them
            // too (handing them to a busy thread would only make them wait behind its work).
            // With `concentrate` it keeps them all while it keeps up (`keep_all`).
            let mut have_pass = false;
            for &(key, _) in &ready {
                if key == crate::conn::WAKER_KEY {
                    self.io.waker.reset();
                } else if let Some(conn) = self.shared.conn_by_key(key) {
                    let others_idle = self.shared.sleeping_eps.load(Ordering::SeqCst) > 0;
                    let prefer =
                        (keep_all && roomy || !have_pass || !others_idle).then_some(self.id);
                    self.shared.drive_rx(&conn, prefer, &mut events);
                    have_pass = have_pass || events.contains(&Event::Readable(self.id));
                }
            }
            self.shared.dispatch(events, Some(self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::{Endpoint, Kind};

    fn busy_eps(ep: &Endpoint) -> usize {
        ep.shared.busy_eps.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until `f` holds.
    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The engine leaves arrivals to busy endpoint threads: a thread in a blocking receive
    /// counts as one (it will look at its epoll, whose ready list holds them) until it leaves
    /// without a message, and a non-blocking receive never does.
    #[test]
    fn a_blocking_receive_counts_as_busy_until_it_leaves_empty_handed() {
        let ep = Arc::new(Endpoint::new(Kind::Datagram).unwrap());
        ep.set_nonblocking(true);
        assert!(ep.recv().is_err());
        assert_eq!(busy_eps(&ep), 0, "a non-blocking receive is not busy");
        ep.set_nonblocking(false);
        ep.set_read_timeout(Some(Duration::from_millis(300)));
        let waiter = {
            let ep = ep.clone();
            std::thread::spawn(move || ep.recv().map(|_| ()))
        };
        until("the receiving thread waits", || {
            ep.io.sleeping.load(Ordering::SeqCst)
        });
        assert_eq!(busy_eps(&ep), 1, "a thread waiting in recv");
        let r = waiter.join().unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the read timeout"
        );
        assert_eq!(busy_eps(&ep), 0, "left without a message");
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn queued(eps: &[&Endpoint]) -> usize {
        eps.iter().map(|e| e.queued().0).sum()
    }

    /// Two endpoints whose threads each took a message and keep it (both busy, neither
    /// waiting), with the engine's window while all are busy made a minute long, so that only
    /// a wake-up can make it read sooner.
    fn both_busy() -> (Endpoint, Endpoint, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let opts = crate::MuxOptions::default().busy_read_defer(Duration::from_micros(200));
        let a = Endpoint::with_options(Kind::Datagram, opts).unwrap();
        let b = a.clone_endpoint().unwrap();
        a.attach(&server, crate::presets::by_name("thrift").unwrap())
            .unwrap();
        a.shared
            .all_busy_defer
            .store(60_000_000_000, Ordering::Relaxed);
        client.write_all(&frame(b"1")).unwrap();
        let _one = a.recv().unwrap();
        client.write_all(&frame(b"2")).unwrap();
        let _two = b.recv().unwrap();
        assert_eq!(busy_eps(&a), 2);
        until("the engine sees every thread busy", || {
            a.shared.all_busy.load(Ordering::SeqCst)
        });
        client.write_all(&frame(b"3")).unwrap();
        // Well past `busy_read_defer`: a slow machine can only make the engine read later,
        // so this holds unless it reads too soon.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(queued(&[&a, &b]), 0, "read while every thread was busy");
        (a, b, client)
    }

    /// While every endpoint's thread is busy the engine leaves arrivals to them for the long
    /// window (`ALL_BUSY_DEFER`); a new endpoint, free to take them, wakes it, and it reads
    /// them once `busy_read_defer` has passed. (The wake-up is checked by its count: the
    /// engine's buffer sweep would wake it within 200 ms anyway, so the read alone cannot
    /// tell.)
    #[test]
    fn a_new_endpoint_wakes_the_engine_to_read_what_busy_threads_left() {
        let (a, b, _client) = both_busy();
        let woken = a.shared.busy_wakes.load(Ordering::Relaxed);
        let c = a.clone_endpoint().unwrap();
        assert!(
            a.shared.busy_wakes.load(Ordering::Relaxed) > woken,
            "not woken"
        );
        until("read for the free endpoint", || queued(&[&a, &b, &c]) == 1);
        assert!(!a.shared.all_busy.load(Ordering::SeqCst));
    }

    /// The same when a busy thread's endpoint turns non-blocking: its caller now waits for
    /// the descriptor, which only the engine's reads make readable.
    #[test]
    fn an_endpoint_turning_non_blocking_wakes_the_engine() {
        let (a, b, _client) = both_busy();
        let woken = a.shared.busy_wakes.load(Ordering::Relaxed);
        b.set_nonblocking(true);
        assert!(
            a.shared.busy_wakes.load(Ordering::Relaxed) > woken,
            "not woken"
        );
        assert_eq!(busy_eps(&a), 1);
        until("read once an endpoint is free", || queued(&[&a, &b]) == 1);
    }

    /// A non-blocking batch receive that takes messages does not count as busy (its caller
    /// waits for the descriptor, not in the epoll).
    #[test]
    fn a_non_blocking_batch_receive_is_not_busy() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let a = Endpoint::new(Kind::Datagram).unwrap();
        a.attach(&server, crate::presets::by_name("thrift").unwrap())
            .unwrap();
        client.write_all(&frame(b"1")).unwrap();
        a.set_nonblocking(true);
        let mut got = Vec::new();
        until("a message", || {
            a.recv_batch(&mut got, 4).is_ok_and(|n| n == 1)
        });
        assert_eq!(busy_eps(&a), 0);
    }

    /// Two endpoints of one mux, two attached connections, and a thread of `a` at work (it
    /// took a message and has not come back). The engine's windows are a minute long unless
    /// `engine_reads`, so that only the threads read.
    struct Pair {
        a: Arc<Endpoint>,
        b: Arc<Endpoint>,
        clients: [TcpStream; 2],
    }

    fn pair(opts: crate::MuxOptions, engine_reads: bool) -> Pair {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = if engine_reads {
            opts
        } else {
            opts.busy_read_defer(Duration::from_secs(60))
        };
        let a = Arc::new(Endpoint::with_options(Kind::Datagram, opts).unwrap());
        let b = Arc::new(a.clone_endpoint().unwrap());
        let clients = [0, 1].map(|_| {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            a.attach(&s, crate::presets::by_name("thrift").unwrap())
                .unwrap();
            c
        });
        let mut p = Pair { a, b, clients };
        // However slow the machine, `a`'s thread stays at work for these tests.
        p.a.shared
            .at_work_stale
            .store(60_000_000_000, Ordering::Relaxed);
        // A failure, not a hang, if a message goes astray.
        p.a.set_read_timeout(Some(Duration::from_secs(10)));
        p.clients[0].write_all(&frame(b"first")).unwrap();
        assert_eq!(&p.a.recv().unwrap().data[4..], b"first");
        p
    }

    /// Starts a thread receiving on `ep` (10 s timeout) and waits until it waits.
    fn waiting(ep: &Arc<Endpoint>) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
        ep.set_read_timeout(Some(Duration::from_secs(10)));
        let t = {
            let ep = ep.clone();
            std::thread::spawn(move || ep.recv().map(|m| m.data.to_vec()))
        };
        until("the second thread waits", || {
            ep.io.sleeping.load(Ordering::SeqCst)
        });
        t
    }

    /// `concentrate`: while `a`'s thread is at work, `b`'s waits in standby, reading nothing;
    /// bytes `a`'s thread leaves unread are read by the engine after `STANDBY_DEFER` and
    /// steered to `b`, whose thread takes them.
    #[test]
    fn a_thread_waits_in_standby_while_another_is_at_work() {
        let mut p = pair(crate::MuxOptions::default(), true);
        let t = waiting(&p.b);
        until("standby", || p.b.io.standby_now.load(Ordering::SeqCst));
        assert_eq!(p.a.shared.standby_eps.load(Ordering::SeqCst), 1);
        p.clients[1].write_all(&frame(b"second")).unwrap();
        assert_eq!(&t.join().unwrap().unwrap()[4..], b"second");
        assert_eq!(p.a.shared.standby_eps.load(Ordering::SeqCst), 0);
    }

    /// The engine steers what it reads after the standby window to a standby endpoint that
    /// can take it, even when the head of the eligible FIFO is the thread at work (which is
    /// not coming back here).
    #[test]
    fn the_engine_steers_what_it_reads_to_a_standby_thread() {
        let mut p = pair(crate::MuxOptions::default(), true);
        // `b` takes a pass too, so that `a` heads the eligible FIFO again.
        p.clients[1].write_all(&frame(b"b's")).unwrap();
        p.b.set_read_timeout(Some(Duration::from_secs(10)));
        assert_eq!(&p.b.recv().unwrap().data[4..], b"b's");
        let t = waiting(&p.b);
        until("standby", || p.b.io.standby_now.load(Ordering::SeqCst));
        p.clients[1].write_all(&frame(b"second")).unwrap();
        assert_eq!(&t.join().unwrap().unwrap()[4..], b"second");
        assert_eq!(queued(&[&p.a]), 0, "steered to the thread at work");
    }

    /// Without `concentrate` (the kernel's spreading), and for an endpoint whose receive
    /// buffer cannot hold a read pass (balanced per message), the second thread waits for the
    /// connections themselves and is woken by the bytes.
    #[test]
    fn spreading_endpoints_do_not_wait_in_standby() {
        for kernel_spreading in [true, false] {
            let opts = crate::MuxOptions::default().concentrate(!kernel_spreading);
            let mut p = pair(opts, false);
            if !kernel_spreading {
                p.b.set_recv_buffer_size(1).unwrap();
            }
            let t = waiting(&p.b);
            p.clients[1].write_all(&frame(b"second")).unwrap();
            let got = t.join().unwrap().unwrap();
            assert_eq!(&got[4..], b"second", "{kernel_spreading}");
            assert!(!p.b.io.standby_now.load(Ordering::SeqCst));
        }
    }

    /// `concentrate`: the thread at work keeps every read pass it reads while it keeps up,
    /// and the standby thread stays asleep.
    #[test]
    fn a_thread_that_keeps_up_keeps_every_pass_it_reads() {
        let mut p = pair(crate::MuxOptions::default(), false);
        p.a.shared
            .slow_away
            .store(60_000_000_000, Ordering::Relaxed);
        let t = waiting(&p.b);
        until("standby", || p.b.io.standby_now.load(Ordering::SeqCst));
        for (i, c) in p.clients.iter_mut().enumerate() {
            c.write_all(&frame(&[b'0' + i as u8])).unwrap();
        }
        // Both connections readable before `a`'s thread looks.
        std::thread::sleep(Duration::from_millis(20));
        let mut got = Vec::new();
        p.a.recv_batch(&mut got, 16).unwrap();
        assert_eq!(got.len(), 2, "kept both passes");
        assert!(
            p.b.io.standby_now.load(Ordering::SeqCst),
            "standby thread woken"
        );
        assert_eq!(queued(&[&p.b]), 0);
        // (The waiting thread ends at its timeout.)
        drop(t);
    }

    /// A thread that falls behind wakes the standby thread, which then waits for the
    /// connections itself and takes the next arrival (the engine's windows are a minute
    /// long here, so only that wake-up can bring it in).
    #[test]
    fn a_thread_that_falls_behind_brings_the_standby_thread_in() {
        let mut p = pair(crate::MuxOptions::default(), false);
        let t = waiting(&p.b);
        until("standby", || p.b.io.standby_now.load(Ordering::SeqCst));
        p.a.fall_behind();
        until("out of standby", || {
            !p.b.io.standby_now.load(Ordering::SeqCst)
        });
        p.clients[1].write_all(&frame(b"second")).unwrap();
        assert_eq!(&t.join().unwrap().unwrap()[4..], b"second");
        assert!(p.a.io.behind.load(Ordering::SeqCst));
        // Neither the hold nor a thread behind keeps others in standby, each on its own.
        let far = p.a.shared.since_epoch() + 60_000_000_000;
        for (hold, behind) in [(0, true), (far, false)] {
            p.a.shared.spread_until.store(hold, Ordering::SeqCst);
            p.a.io.behind.store(behind, Ordering::SeqCst);
            let t = waiting(&p.b);
            assert!(!p.b.io.standby_now.load(Ordering::SeqCst), "{behind}");
            p.clients[1].write_all(&frame(b"third")).unwrap();
            assert_eq!(&t.join().unwrap().unwrap()[4..], b"third");
        }
    }

    /// Burns `ms` milliseconds of this thread's CPU time.
    fn run_for(ms: u64) {
        let end = crate::sys::thread_cpu_ns() + ms * 1_000_000;
        while crate::sys::thread_cpu_ns() < end {
            std::hint::spin_loop();
        }
    }

    /// The pace rules: a thread at work that comes back after running longer than
    /// `slow_away` (made 1 ms here), twice (the first sign only starts the count), falls
    /// behind and brings the standby thread in, but only when a core is idle for it.
    #[test]
    fn a_thread_running_long_between_receives_falls_behind_if_a_core_is_idle() {
        for idle in [true, false] {
            let mut p = pair(crate::MuxOptions::default(), false);
            p.a.shared.slow_away.store(1_000_000, Ordering::Relaxed);
            p.a.shared
                .idle_core_test
                .store(if idle { 1 } else { 2 }, Ordering::Relaxed);
            let _t = waiting(&p.b);
            until("standby", || p.b.io.standby_now.load(Ordering::SeqCst));
            // A sign counts when the thread ran for three quarters of the time since the
            // last: rounds that a busy machine preempts that much are retried. (Once `a`'s
            // thread falls behind, `b`'s may take the round's message: hence the timeout.)
            p.a.set_read_timeout(Some(Duration::from_millis(200)));
            for round in 0..20u8 {
                run_for(3);
                p.clients[0].write_all(&frame(&[round])).unwrap();
                let _ = p.a.recv();
                if p.a.io.behind.load(Ordering::SeqCst) || (!idle && round == 3) {
                    break;
                }
            }
            assert_eq!(p.a.io.behind.load(Ordering::SeqCst), idle);
            if idle {
                until("out of standby", || {
                    !p.b.io.standby_now.load(Ordering::SeqCst)
                });
            } else {
                assert!(p.b.io.standby_now.load(Ordering::SeqCst));
            }
        }
    }

    /// A thread that took a message and stays away (its application at other work, or done
    /// receiving on its endpoint) keeps no one in standby once `AT_WORK_STALE` has passed: the
    /// second thread waits for the connections itself and the bytes wake it. (The engine's
    /// windows are a minute long here: in standby, the message would wait for it.)
    #[test]
    fn a_thread_that_stays_away_keeps_no_one_in_standby() {
        let mut p = pair(crate::MuxOptions::default(), false);
        p.a.shared
            .at_work_stale
            .store(super::AT_WORK_STALE.as_nanos() as u64, Ordering::Relaxed);
        std::thread::sleep(super::AT_WORK_STALE * 3);
        let t = waiting(&p.b);
        p.clients[1].write_all(&frame(b"second")).unwrap();
        assert_eq!(&t.join().unwrap().unwrap()[4..], b"second");
    }

    /// A sign of falling behind counts only for a thread that was running most of the time
    /// since the last one: not one that was preempted or idle.
    #[test]
    fn only_a_thread_that_was_running_falls_behind() {
        assert!(super::mostly_running(1_000, 1_000));
        assert!(super::mostly_running(750, 1_000));
        assert!(!super::mostly_running(700, 1_000));
        assert!(!super::mostly_running(0, 1_000));
        assert!(super::mostly_running(u64::MAX, u64::MAX), "no overflow");
    }
}
