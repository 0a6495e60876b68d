//! The state one mux shares between its endpoints, its engine thread and whoever drives it.
//!
//! The mux lock is a `parking_lot` mutex: the lock is taken a few times per message by
//! threads that hold it for well under a microsecond, where its brief adaptive spinning avoids
//! most futex sleeps (measured before and after in docs/bench.md).
//!
//! Locks, always taken in this order: a connection's `rx` → an endpoint's poll descriptor →
//! `state` (the sans-IO [`MuxCore`]) → the `conns`/`eps` maps. No syscall that can block is
//! made under `state`; socket reads and writes happen outside it, and their results are fed
//! back in (`rx_pass_runs`, `handle_transmit`). Whatever the core asks for afterwards
//! ([`Event`]s) is acted on by [`Shared::dispatch`] with no lock held.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use kcm_core::mux::{ConnectionId, EndpointId, Event, Kind, MuxCore, TxResult};
use kcm_core::MsgRun;

use crate::conn::{key, ConnIo, WAKER_KEY};
use crate::engine::EngineIo;
use crate::events::{ConnectionEvent, ConnectionEventKind, EventLog};
use crate::options::MuxOptions;
use crate::sys::{self, err, Epoll, EventFlags, PollFd, Waker};

/// The core's events of one call, acted on once the lock is let go. A call makes a handful, so
/// they live on the stack: a `Vec` cost an allocation and a free per call on the request path.
pub(crate) type Events = smallvec::SmallVec<[Event; 8]>;

/// The maps from a connection's or endpoint's key to its I/O state, looked up several times per
/// request: keyed by small integers kcm hands out itself, so a fast hash (foldhash, hashbrown's
/// default) instead of SipHash, whose resistance to chosen keys buys nothing here.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Per-endpoint I/O: the epoll its blocking calls wait in, the waker others use to hand it
/// messages, and (once asked for) its pollable descriptor.
pub(crate) struct EpIo {
    pub(crate) epoll: Epoll,
    /// An epoll holding only the waker: a thread waits here instead, reading no connection,
    /// while another endpoint's thread is at work (`MuxOptions::concentrate`).
    pub(crate) standby: Epoll,
    pub(crate) waker: Waker,
    pub(crate) pollfd: std::sync::OnceLock<PollFd>,
    /// A thread is (about to be) blocked in this endpoint's epoll: messages handed to the
    /// endpoint must wake it. Set under the state lock after finding the queue empty, so a
    /// message queued later always sees it; a busy endpoint costs its senders no syscall.
    pub(crate) sleeping: AtomicBool,
    /// The internal epoll descriptor was handed out as the pollable descriptor (fallback):
    /// always wake.
    pub(crate) always_wake: AtomicBool,
    /// The endpoint's thread took messages with a blocking receive and has not come back for
    /// more yet, or is inside one (see [`Shared::busy_eps`]).
    pub(crate) busy: AtomicBool,
    /// When this endpoint's thread last looked for arrivals left to it (nanoseconds since
    /// [`Shared::epoch`]; see [`Shared::rx_deferred`]).
    pub(crate) last_poll: std::sync::atomic::AtomicU64,
    /// When this endpoint's thread last left a receive with messages (nanoseconds since
    /// [`Shared::epoch`]): a thread that comes back later than `SLOW_AWAY` is not keeping up
    /// alone ([`MuxOptions::concentrate`]).
    pub(crate) left_at: std::sync::atomic::AtomicU64,
    /// The thread waits in standby ([`Shared::set_standby`]).
    pub(crate) standby_now: AtomicBool,
    /// When the thread, back in time, last found its queue empty (nanoseconds since
    /// [`Shared::epoch`]).
    pub(crate) drained_at: std::sync::atomic::AtomicU64,
    /// The wall clock (nanoseconds since [`Shared::epoch`]) and the thread's CPU time at the
    /// last sign that it is not keeping up alone (back later than `SLOW_AWAY`, or its queue
    /// not empty for longer).
    pub(crate) sign_wall: std::sync::atomic::AtomicU64,
    pub(crate) sign_cpu: std::sync::atomic::AtomicU64,
    /// The thread is not keeping up alone: it does not keep others in standby
    /// ([`Shared::others_active`]).
    pub(crate) behind: AtomicBool,
}

impl EpIo {
    /// The thread, back in time, found its queue empty at `now` (nanoseconds since
    /// [`Shared::epoch`]): it is keeping up.
    pub(crate) fn drained(&self, now: u64) {
        self.drained_at.store(now, Ordering::Relaxed);
        self.behind.store(false, Ordering::Relaxed);
    }
}

pub(crate) struct State {
    pub(crate) core: MuxCore,
    pub(crate) closed: bool,
}

pub(crate) struct Shared {
    pub(crate) kind: Kind,
    pub(crate) opts: MuxOptions,
    pub(crate) state: parking_lot::Mutex<State>,
    /// Senders blocked on a full send buffer wait here.
    pub(crate) tx_cv: parking_lot::Condvar,
    pub(crate) conns: RwLock<Map<u64, Arc<ConnIo>>>,
    pub(crate) eps: RwLock<Map<u32, Arc<EpIo>>>,
    pub(crate) engine: Arc<EngineIo>,
    pub(crate) log: Mutex<EventLog>,
    reaps: Mutex<Vec<ConnectionId>>,
    /// Some connection may hold a read buffer it no longer needs.
    pub(crate) sweep_pending: std::sync::atomic::AtomicBool,
    /// Endpoints whose thread is busy with messages it took with a blocking receive, or inside
    /// one (waiting, or on its way into or out of the wait): a thread that will look at its
    /// epoll before long. A non-blocking endpoint never counts: its caller waits for the
    /// endpoint's descriptor, which only the engine's reads make readable. While there is one,
    /// the engine leaves new bytes to it for a moment instead of reading them itself and
    /// handing the messages over (see [`Shared::window`]). A blocking receive used to count
    /// only once it had a message, so bytes that arrived while a thread was between its wait
    /// and its next one were read by the engine: about 2,000 hand-offs a second under W1 and
    /// W3.
    pub(crate) busy_eps: std::sync::atomic::AtomicUsize,
    /// Endpoints whose thread is (about to be) blocked waiting for messages.
    pub(crate) sleeping_eps: std::sync::atomic::AtomicUsize,
    /// Endpoints whose thread waits in standby ([`MuxOptions::concentrate`]); they count as
    /// sleeping and busy too.
    pub(crate) standby_eps: std::sync::atomic::AtomicUsize,
    /// The engine left arrivals to busy endpoint threads and is not woken by new ones until
    /// it reads them itself (`MuxOptions::busy_read_defer`). Meanwhile a busy thread coming
    /// back for its next message looks at its own epoll now and then (`ARRIVALS_POLL`), so
    /// that a quiet connection's message is not left unread while the busy ones keep every
    /// thread supplied.
    pub(crate) rx_deferred: AtomicBool,
    /// Every endpoint's thread was busy when the engine last looked ([`Shared::window`]): it
    /// leaves arrivals to them for longer, and a thread that stops being busy, or a new
    /// endpoint, wakes it.
    pub(crate) all_busy: AtomicBool,
    /// The window while every endpoint's thread is busy, in nanoseconds:
    /// `engine::ALL_BUSY_DEFER`, or `busy_read_defer` if longer. (An atomic so that tests can
    /// lengthen it and tell a wake-up from the window's end.)
    pub(crate) all_busy_defer: AtomicU64,
    /// No thread goes to standby before this time (nanoseconds since [`Shared::epoch`]): a
    /// thread fell behind not long ago (`endpoint::recv::SPREAD_HOLD`).
    pub(crate) spread_until: AtomicU64,
    /// `endpoint::recv::SLOW_AWAY` in nanoseconds (an atomic so that tests can change it).
    pub(crate) slow_away: AtomicU64,
    /// `endpoint::recv::AT_WORK_STALE` in nanoseconds (an atomic so that tests can change it).
    pub(crate) at_work_stale: AtomicU64,
    /// How many times [`Shared::wake_busy_engine`] woke the engine (tests only: the engine's
    /// other timers, such as the buffer sweep, would wake it within 200 ms anyway).
    #[cfg(test)]
    pub(crate) busy_wakes: AtomicU64,
    /// Tests: 1 — a core is idle, 2 — none is, else ask the machine ([`Shared::idle_core`]).
    #[cfg(test)]
    pub(crate) idle_core_test: std::sync::atomic::AtomicU8,
    /// The time origin of [`EpIo::last_poll`].
    pub(crate) epoch: Instant,
}

/// Connections registered in endpoint epolls are woken one thread at a time, on each new
/// arrival. (EPOLLEXCLUSIVE allows only IN, OUT, ET and WAKEUP beside it; end of stream shows
/// as IN.)
pub(crate) const EP_CONN_FLAGS: EventFlags = EventFlags::IN
    .union(EventFlags::EXCLUSIVE)
    .union(EventFlags::ET);
/// The engine's own epoll watches connections for write space (and errors and hang-ups, which
/// epoll always reports). Not exclusive: a wake-up for write space concerns only the engine.
pub(crate) const ENGINE_CONN_FLAGS: EventFlags = EventFlags::OUT.union(EventFlags::ET);

impl Shared {
    pub(crate) fn new(
        kind: Kind,
        opts: MuxOptions,
        core: MuxCore,
        engine: Arc<EngineIo>,
    ) -> Shared {
        let all_busy_defer = crate::engine::ALL_BUSY_DEFER.max(opts.busy_read_defer);
        let all_busy_defer = u64::try_from(all_busy_defer.as_nanos()).unwrap_or(u64::MAX);
        Shared {
            kind,
            opts,
            state: parking_lot::Mutex::new(State {
                core,
                closed: false,
            }),
            tx_cv: parking_lot::Condvar::new(),
            conns: RwLock::new(Map::default()),
            eps: RwLock::new(Map::default()),
            engine,
            log: Mutex::new(EventLog::default()),
            reaps: Mutex::new(Vec::new()),
            sweep_pending: std::sync::atomic::AtomicBool::new(false),
            busy_eps: std::sync::atomic::AtomicUsize::new(0),
            sleeping_eps: std::sync::atomic::AtomicUsize::new(0),
            standby_eps: std::sync::atomic::AtomicUsize::new(0),
            rx_deferred: AtomicBool::new(false),
            all_busy: AtomicBool::new(false),
            all_busy_defer: AtomicU64::new(all_busy_defer),
            spread_until: AtomicU64::new(0),
            slow_away: AtomicU64::new(crate::endpoint::recv::SLOW_AWAY.as_nanos() as u64),
            at_work_stale: AtomicU64::new(crate::endpoint::recv::AT_WORK_STALE.as_nanos() as u64),
            #[cfg(test)]
            busy_wakes: AtomicU64::new(0),
            #[cfg(test)]
            idle_core_test: std::sync::atomic::AtomicU8::new(0),
            epoch: Instant::now(),
        }
    }

    /// Records whether an endpoint's thread is (about to be) blocked waiting for messages.
    pub(crate) fn set_sleeping(&self, io: &EpIo, sleeping: bool) {
        if io.sleeping.swap(sleeping, Ordering::SeqCst) != sleeping {
            if sleeping {
                self.sleeping_eps.fetch_add(1, Ordering::SeqCst);
            } else {
                self.sleeping_eps.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Records whether an endpoint's thread is busy with messages it took with a blocking
    /// receive or inside one (`true`), or gone from the receive without a message, or
    /// non-blocking (`false`).
    pub(crate) fn set_busy(&self, io: &EpIo, busy: bool) {
        if io.busy.load(Ordering::Relaxed) != busy && io.busy.swap(busy, Ordering::Relaxed) != busy
        {
            if busy {
                // Relaxed: a stale count only makes the engine read a little earlier or later.
                self.busy_eps.fetch_add(1, Ordering::Relaxed);
            } else {
                // SeqCst with `window`: either the engine sees this thread free, or this
                // thread sees `all_busy` and wakes it.
                self.busy_eps.fetch_sub(1, Ordering::SeqCst);
                self.wake_busy_engine();
            }
        }
    }

    /// How long the engine leaves arrivals to busy endpoint threads: `busy_read_defer`, or
    /// `engine::ALL_BUSY_DEFER` while every endpoint's thread is busy, since each will look at
    /// its own epoll, whose ready list holds the arrivals, before long
    /// (`Endpoint::poll_arrivals` while busy, its wait otherwise), and reading them in the
    /// engine would only queue them for a thread that is not free. With `busy_read_defer` alone
    /// the engine woke once per window for as long as the threads stayed busy (about 4,000
    /// times a second under the bench's W1 and W3). Marks [`Shared::all_busy`] so that a
    /// thread that stops being busy wakes the engine.
    pub(crate) fn window(&self) -> Duration {
        if self.standby_eps.load(Ordering::SeqCst) > 0 {
            // A thread in standby reads nothing itself: it waits for what is steered to it.
            self.all_busy.store(false, Ordering::SeqCst);
            return crate::engine::STANDBY_DEFER.max(self.opts.busy_read_defer);
        }
        self.all_busy.store(true, Ordering::SeqCst);
        let eps = self
            .eps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if eps > 0 && self.busy_eps.load(Ordering::SeqCst) >= eps {
            return Duration::from_nanos(self.all_busy_defer.load(Ordering::Relaxed));
        }
        self.all_busy.store(false, Ordering::SeqCst);
        self.opts.busy_read_defer
    }

    /// Wakes the engine if it last found every endpoint's thread busy ([`Shared::window`]):
    /// one is free now, and arrivals left longer than `busy_read_defer` are due.
    pub(crate) fn wake_busy_engine(&self) {
        if self.all_busy.load(Ordering::SeqCst) {
            #[cfg(test)]
            self.busy_wakes.fetch_add(1, Ordering::Relaxed);
            self.engine.waker.wake();
        }
    }

    /// Whether another endpoint's thread is at work ([`MuxOptions::concentrate`]): busy (it
    /// took messages with a blocking receive, or is inside one) and not waiting. Asked by a
    /// thread about to wait, which counts as both busy and sleeping, so it never counts itself.
    /// A stale answer costs only a wake-up more or less: a thread that goes to standby next to
    /// one that has just gone to wait is still woken by every message steered to it, and by
    /// the engine's reads after [`STANDBY_DEFER`](crate::engine::STANDBY_DEFER).
    pub(crate) fn others_active(&self) -> bool {
        let busy = self.busy_eps.load(Ordering::SeqCst);
        let sleeping = self.sleeping_eps.load(Ordering::SeqCst);
        if busy <= sleeping {
            return false;
        }
        // One at work that keeps up (a thread that is behind wants help, not standby), and
        // came back for messages lately (one that stays away may never come back:
        // `endpoint::recv::AT_WORK_STALE`).
        let now = self.since_epoch();
        let stale = self.at_work_stale.load(Ordering::Relaxed);
        self.eps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|io| {
                let seen = io
                    .left_at
                    .load(Ordering::Relaxed)
                    .max(io.last_poll.load(Ordering::Relaxed));
                io.busy.load(Ordering::SeqCst)
                    && !io.sleeping.load(Ordering::SeqCst)
                    && !io.behind.load(Ordering::SeqCst)
                    && now.saturating_sub(seen) <= stale
            })
    }

    /// Wakes the threads in standby: the thread at work fell behind, and they should wait
    /// for the connections themselves.
    pub(crate) fn wake_standby(&self) {
        if self.standby_eps.load(Ordering::SeqCst) == 0 {
            return;
        }
        for io in self
            .eps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            if io.standby_now.load(Ordering::SeqCst) {
                io.waker.wake();
            }
        }
    }

    /// Whether a thread about to wait may wait in standby: nobody fell behind within
    /// `SPREAD_HOLD`, and another thread is at work and keeping up.
    pub(crate) fn standby_fits(&self) -> bool {
        self.since_epoch() >= self.spread_until.load(Ordering::SeqCst) && self.others_active()
    }

    /// Whether the machine has an idle core ([`sys::idle_core`]; tests may decide instead).
    /// Asked afresh each time: the running count is a moment's, and a cached "no" kept a
    /// CPU-heavy load from spreading (taking 16 messages a call with the default receive
    /// buffer: 1.37–1.42 × `thread` with a 1-ms cache against 1.49–1.51). It is asked only at
    /// a sign of falling behind from a thread that was running, at most once per 200 µs per
    /// thread (a thread at full load, as under W2, asks that often), and costs one `pread`.
    pub(crate) fn idle_core(&self) -> bool {
        #[cfg(test)]
        match self.idle_core_test.load(Ordering::Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        sys::idle_core()
    }

    /// Records a thread going into (or out of) standby ([`MuxOptions::concentrate`]): the
    /// engine's window is then [`STANDBY_DEFER`](crate::engine::STANDBY_DEFER), so that bytes
    /// the thread at work leaves unread reach a standby thread within about a millisecond.
    pub(crate) fn set_standby(&self, io: &EpIo, on: bool) {
        io.standby_now.store(on, Ordering::SeqCst);
        if on {
            self.standby_eps.fetch_add(1, Ordering::SeqCst);
            // The engine may be in its 20-ms window for all-busy threads.
            self.wake_busy_engine();
        } else {
            self.standby_eps.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// An endpoint whose thread waits in standby, if any: the engine steers what it reads to
    /// it, since the thread at work left those bytes unread.
    pub(crate) fn standby_endpoint(&self) -> Option<EndpointId> {
        if self.standby_eps.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let waiting: smallvec::SmallVec<[u32; 8]> = self
            .eps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, io)| io.standby_now.load(Ordering::SeqCst))
            .map(|(&id, _)| id)
            .collect();
        // One that can take a message (not disabled, below its receive buffer): the core
        // ignores a preference it cannot honour, and the message would go to the head of the
        // eligible FIFO, perhaps the thread at work. (The map's guard is gone before the state
        // lock is taken.)
        let st = self.lock();
        waiting.into_iter().map(EndpointId).find(|&ep| {
            st.core.recv_disabled(ep) == Some(false)
                && st
                    .core
                    .rx_queued(ep)
                    .zip(st.core.rcvbuf(ep))
                    .is_some_and(|((_, bytes), cap)| bytes < cap)
        })
    }

    /// Nanoseconds since [`Shared::epoch`].
    pub(crate) fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    pub(crate) fn conn_by_key(&self, k: u64) -> Option<Arc<ConnIo>> {
        self.conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&k)
            .cloned()
    }

    pub(crate) fn conn_io(&self, id: ConnectionId) -> Option<Arc<ConnIo>> {
        self.conn_by_key(key(id))
    }

    pub(crate) fn ep_io(&self, ep: EndpointId) -> Option<Arc<EpIo>> {
        self.eps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ep.0)
            .cloned()
    }

    pub(crate) fn all_conns(&self) -> Vec<Arc<ConnIo>> {
        self.conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn drain(core: &mut MuxCore, out: &mut Events) {
        while let Some(e) = core.poll_event() {
            out.push(e);
        }
    }

    fn log_event(&self, conn: ConnectionId, kind: ConnectionEventKind) {
        let errno = kind.errno();
        if errno != 0 {
            if let Some(io) = self.conn_io(conn) {
                io.post_error(errno);
            }
        }
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ConnectionEvent { conn, kind });
        if self.opts.drop_failed {
            let mut r = self.reaps.lock().unwrap_or_else(PoisonError::into_inner);
            if !r.contains(&conn) {
                r.push(conn);
            }
            drop(r);
            self.engine.waker.wake();
        }
    }

    /// Acts on what the core asked for. `me` is the endpoint whose thread is calling (it
    /// needs no wake-up). Handling an event may produce more (a resumed connection delivers,
    /// a released connection is handed on); they are handled in the same loop.
    pub(crate) fn dispatch(&self, mut events: Events, me: Option<EndpointId>) {
        let mut i = 0;
        while i < events.len() {
            match events[i] {
                Event::Readable(ep) => {
                    if let Some(io) = self.ep_io(ep) {
                        let asleep = io.sleeping.load(Ordering::SeqCst)
                            || io.always_wake.load(Ordering::Relaxed);
                        if Some(ep) != me && asleep {
                            io.waker.wake();
                        }
                        self.sync_pollfd(ep, &io);
                    }
                }
                Event::Writable(ep) => {
                    self.tx_cv.notify_all();
                    if let Some(io) = self.ep_io(ep) {
                        self.sync_pollfd(ep, &io);
                    }
                }
                Event::TxReady(ep) => self.pump_tx(ep, &mut events),
                Event::ConnTxReady(c) => self.pump_conn_tx(c, &mut events),
                Event::ConnResume(c) => {
                    if let Some(io) = self.conn_io(c) {
                        io.paused.store(false, Ordering::Release);
                        self.drive_rx(&io, me, &mut events);
                    }
                }
                Event::ConnError(c, _) => self.log_event(c, ConnectionEventKind::TxAborted),
                Event::ConnReleased(c) => {
                    // kcm's descriptor closes when the last reference drops.
                    self.conns
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&key(c));
                }
            }
            i += 1;
        }
    }

    /// Brings an endpoint's pollable descriptor up to date, if it has one.
    pub(crate) fn sync_pollfd(&self, ep: EndpointId, io: &EpIo) {
        let Some(pfd) = io.pollfd.get() else { return };
        let mut cur = pfd.lock();
        let (readable, writable) = {
            let st = self.lock();
            let queued = st.core.rx_queued(ep).is_some_and(|(n, _)| n > 0);
            let err = st.core.has_endpoint_error(ep);
            (
                queued || err || st.closed,
                st.core.can_send(ep) || st.closed,
            )
        };
        pfd.set(&mut cur, readable, writable);
    }

    /// Writes one transmit of the endpoint, if it has one (any thread may do this for any
    /// endpoint; the core hands out one transmit per endpoint at a time).
    pub(crate) fn pump_tx(&self, ep: EndpointId, events: &mut Events) {
        if let Some(job) = self.poll_job(events, |core| core.poll_transmit(ep)) {
            self.transmit(ep, job, events);
        }
    }

    /// Asks the core for a transmit under the lock (and takes the events that came with it).
    fn poll_job(
        &self,
        events: &mut Events,
        poll: impl FnOnce(&mut MuxCore) -> Option<kcm_core::mux::Transmit>,
    ) -> Option<kcm_core::mux::Transmit> {
        let mut st = self.lock();
        let job = poll(&mut st.core);
        Self::drain(&mut st.core, events);
        job
    }

    /// Takes the endpoint's transmit now if the core just asked for one (`TxReady` among
    /// `events`), so a sender gets its write without locking the mux once more.
    pub(crate) fn take_own_transmit(
        st: &mut State,
        ep: EndpointId,
        events: &mut Events,
    ) -> Option<kcm_core::mux::Transmit> {
        let pos = events.iter().position(|e| *e == Event::TxReady(ep))?;
        events.remove(pos);
        let job = st.core.poll_transmit(ep);
        Self::drain(&mut st.core, events);
        job
    }

    /// Writes a transmit the core handed out and reports the result back.
    pub(crate) fn transmit(
        &self,
        ep: EndpointId,
        job: kcm_core::mux::Transmit,
        events: &mut Events,
    ) {
        self.write_and_report(job, events, |core, conn, result| {
            core.handle_transmit(ep, conn, result)
        });
    }

    /// Writes one transmit of a connection's backlog, if it has one (`Event::ConnTxReady`).
    pub(crate) fn pump_conn_tx(&self, conn: ConnectionId, events: &mut Events) {
        let Some(job) = self.poll_job(events, |core| core.poll_conn_transmit(conn)) else {
            return;
        };
        self.write_and_report(job, events, |core, conn, result| {
            core.handle_conn_transmit(conn, result)
        });
        // Senders may be waiting for room in this connection's backlog.
        self.tx_cv.notify_all();
    }

    /// Writes `job`, lets its slices go before taking the lock (a written run's buffer then
    /// serves the next run), reports the result with `report` and gives the transmit back.
    fn write_and_report(
        &self,
        mut job: kcm_core::mux::Transmit,
        events: &mut Events,
        report: impl FnOnce(&mut MuxCore, ConnectionId, TxResult),
    ) {
        let result = self.write_job(&job);
        job.bufs.clear();
        let mut st = self.lock();
        report(&mut st.core, job.conn, result);
        st.core.recycle(job);
        Self::drain(&mut st.core, events);
    }

    /// One vectored write of a transmit on its connection.
    fn write_job(&self, job: &kcm_core::mux::Transmit) -> TxResult {
        let Some(io) = self.conn_io(job.conn) else {
            return TxResult::Failed;
        };
        loop {
            break match sys::send_vectored(io.fd(), &job.bufs) {
                Ok(0) if job.len > 0 => TxResult::Failed,
                Ok(n) => TxResult::Written(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => TxResult::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => TxResult::Failed,
            };
        }
    }

    /// The engine saw write space on a connection.
    pub(crate) fn write_space(&self, io: &ConnIo, events: &mut Events) {
        let mut st = self.lock();
        st.core.write_space(io.id);
        Self::drain(&mut st.core, events);
    }

    /// Reads and parses a connection until it would block, is paused or fails, delivering each
    /// read pass's messages in one go. Several threads may be woken for one connection; one
    /// drives it, the others leave a note (`notified`) that makes the driver go round again, so
    /// no readiness is ever lost.
    pub(crate) fn drive_rx(&self, io: &ConnIo, prefer: Option<EndpointId>, events: &mut Events) {
        let prefer = if self.opts.prefer_local { prefer } else { None };
        io.notified.store(true, Ordering::SeqCst);
        while io.notified.load(Ordering::SeqCst) {
            let mut rx = match io.rx.try_lock() {
                Ok(rx) => rx,
                // A reader holds it: it goes round again for our note.
                Err(TryLockError::WouldBlock) if io.reading.load(Ordering::SeqCst) => return,
                // Someone who only looks (statistics, /proc, a timer check) holds it for a
                // moment and will not act on the note: wait for them, or the edge-triggered
                // wake-up is lost (tests/recvmsg.rs and tests/steering.rs poll statistics
                // while the engine reads).
                Err(TryLockError::WouldBlock) => io.lock_rx(),
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            io.reading.store(true, Ordering::SeqCst);
            while io.notified.swap(false, Ordering::SeqCst) {
                self.read_passes(io, &mut rx, prefer, events);
            }
            io.reading.store(false, Ordering::SeqCst);
        }
    }

    fn read_passes(
        &self,
        io: &ConnIo,
        rx: &mut crate::conn::RxState,
        prefer: Option<EndpointId>,
        events: &mut Events,
    ) {
        // A pass is a run or two: on the stack, no allocation per read.
        let mut runs = smallvec::SmallVec::<[MsgRun; 4]>::new();
        loop {
            if rx.done || io.is_paused() || io.unattaching.load(Ordering::Acquire) {
                return;
            }
            let buf = rx.strp.recv_buf();
            let want = buf.capacity() - buf.len();
            io.reads.fetch_add(1, Ordering::Relaxed);
            let n = match sys::recv_into(io.fd(), buf, want) {
                Ok(0) => {
                    if !rx.eof {
                        rx.eof = true;
                        self.log_event(io.id, ConnectionEventKind::PeerClosed);
                    }
                    self.stop_rx(io, rx);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rx.check_eof = false;
                    // The read buffer's spare room serves the next passes; an idle connection
                    // gives it back at the engine's next sweep.
                    if rx.strp.buffered() > 0 {
                        self.request_sweep();
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stop_rx(io, rx);
                    self.log_event(
                        io.id,
                        ConnectionEventKind::ReadError(e.raw_os_error().unwrap_or(err::EPIPE)),
                    );
                    return;
                }
            };
            rx.busy = true;
            rx.strp.handle_recv(n, Instant::now());
            // The messages before a failure in the stream are delivered all the same (as the
            // kernel does), after the connection is stopped.
            if let Err(e) = rx.strp.next_runs(&mut runs) {
                self.stop_rx(io, rx);
                self.log_event(io.id, ConnectionEventKind::ParserError(e));
            }
            if !runs.is_empty() {
                let mut st = self.lock();
                let out = st.core.rx_pass_runs(io.id, runs.drain(..), prefer);
                if out.parked > 0 {
                    io.paused.store(true, Ordering::Release);
                }
                Self::drain(&mut st.core, events);
            }
            self.arm_timer(io, rx);
            if n < want {
                // A short read drained the socket, and with edge-triggered epoll the next
                // arrival brings a new wake-up. One thing may hide behind the last bytes: a
                // FIN or RST that arrived with them shares their wake-up and is not reported by
                // a read that returns data (tests/receive.rs,
                // peer_close_mid_message_posts_epipe_and_delivers_nothing_partial). Rather
                // than pay one more read per pass, the engine's sweep checks connections that
                // went quiet after a short read.
                rx.check_eof = true;
                self.request_sweep();
                return;
            }
        }
    }

    /// Asks the engine for a sweep soon (waking it if it sleeps without a timeout).
    pub(crate) fn request_sweep(&self) {
        if !self.sweep_pending.swap(true, Ordering::AcqRel) {
            self.engine.waker.wake();
        }
    }

    fn arm_timer(&self, io: &ConnIo, rx: &mut crate::conn::RxState) {
        let d = rx.strp.poll_timeout();
        if d != rx.armed {
            rx.armed = d;
            if let Some(d) = d {
                self.engine.add_timer(d, io.key());
            }
        }
    }

    /// The engine's timer for this connection fired (maybe for an old deadline).
    pub(crate) fn check_timeout(&self, io: &ConnIo) {
        let mut rx = io.lock_rx();
        if rx.done {
            return;
        }
        if io.is_paused() {
            // Backpressure, not the peer, is holding the message back: the bytes of the next
            // message cannot arrive while kcm does not read. Restart its clock.
            rx.strp.restart_timer(Instant::now());
            rx.armed = None;
            self.arm_timer(io, &mut rx);
            return;
        }
        match rx.strp.handle_timeout(Instant::now()) {
            Err(e) => {
                self.stop_rx(io, &mut rx);
                self.log_event(io.id, ConnectionEventKind::ParserError(e));
            }
            Ok(()) => {
                rx.armed = None;
                self.arm_timer(io, &mut rx);
            }
        }
    }

    /// Stops receiving on a connection for good: nobody is woken for it any more (its
    /// transmit side, registered with the engine, keeps working).
    fn stop_rx(&self, io: &ConnIo, rx: &mut crate::conn::RxState) {
        rx.done = true;
        rx.armed = None;
        // Nothing is read any more: there is no end of stream left to look for, and the
        // sweep must not keep coming back for it.
        rx.check_eof = false;
        self.remove_from_endpoints(io);
    }

    /// Takes a connection out of every endpoint epoll (nobody is woken for its bytes).
    fn remove_from_endpoints(&self, io: &ConnIo) {
        for ep in self
            .eps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            let _ = ep.epoll.delete(io.fd());
        }
        let _ = self.engine.rx_epoll.delete(io.fd());
    }

    /// Registers a connection in every endpoint epoll, then in the engine's (last, so that
    /// endpoint threads are woken first; see the engine docs).
    ///
    /// The endpoints come in a different order for each connection (rotated by its index):
    /// the first one waiting is woken, so each endpoint thread is the first choice for its
    /// share of the connections, as each worker owns its share in a thread-per-connection
    /// server, and the others take over only while it is busy.
    pub(crate) fn register_conn(&self, io: &ConnIo) -> io::Result<()> {
        let eps = self.eps.read().unwrap_or_else(PoisonError::into_inner);
        let mut order: Vec<(&u32, &Arc<EpIo>)> = eps.iter().collect();
        order.sort_unstable_by_key(|(id, _)| **id);
        if !order.is_empty() {
            let first = io.id.index as usize % order.len();
            order.rotate_left(first);
        }
        for (_, ep) in order {
            ep.epoll.add(io.fd(), io.key(), EP_CONN_FLAGS)?;
        }
        drop(eps);
        self.engine.rx_epoll.add(io.fd(), io.key(), EP_CONN_FLAGS)?;
        self.engine.epoll.add(io.fd(), io.key(), ENGINE_CONN_FLAGS)
    }

    pub(crate) fn deregister_conn(&self, io: &ConnIo) {
        self.remove_from_endpoints(io);
        let _ = self.engine.epoll.delete(io.fd());
    }

    /// A new endpoint's epoll: its waker plus every connection still receiving; the engine's
    /// registrations are renewed so that it stays last in each wait queue.
    pub(crate) fn new_ep_io(&self) -> io::Result<EpIo> {
        let epoll = Epoll::new()?;
        let waker = Waker::new()?;
        epoll.add(waker.as_fd(), WAKER_KEY, EventFlags::IN)?;
        let standby = Epoll::new()?;
        standby.add(waker.as_fd(), WAKER_KEY, EventFlags::IN)?;
        for io in self.all_conns() {
            if io.rx.try_lock().map(|rx| rx.done).unwrap_or(false) {
                continue;
            }
            epoll.add(io.fd(), io.key(), EP_CONN_FLAGS)?;
            let _ = self.engine.rx_epoll.delete(io.fd());
            self.engine.rx_epoll.add(io.fd(), io.key(), EP_CONN_FLAGS)?;
        }
        Ok(EpIo {
            epoll,
            standby,
            waker,
            pollfd: std::sync::OnceLock::new(),
            sleeping: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            always_wake: AtomicBool::new(false),
            last_poll: std::sync::atomic::AtomicU64::new(0),
            left_at: std::sync::atomic::AtomicU64::new(0),
            standby_now: AtomicBool::new(false),
            drained_at: std::sync::atomic::AtomicU64::new(0),
            sign_wall: std::sync::atomic::AtomicU64::new(0),
            sign_cpu: std::sync::atomic::AtomicU64::new(0),
            behind: AtomicBool::new(false),
        })
    }

    /// Gives back the read buffers of connections that received nothing since the last sweep,
    /// so an idle connection holds no buffer (`bench.md`: idle ≤ 4 KiB) while a busy one keeps
    /// reading into the spare room of its current buffer instead of allocating per read.
    pub(crate) fn sweep_buffers(&self) {
        if !self.sweep_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut held = false;
        let mut events = Events::new();
        for io in self.all_conns() {
            let Ok(mut rx) = io.rx.try_lock() else {
                held = true;
                continue;
            };
            let quiet = !rx.busy;
            if quiet {
                rx.strp.shrink();
            }
            rx.busy = false;
            // A paused connection is not read until an endpoint takes its parked messages;
            // checking it now would only find the data it is being held back from.
            let check = quiet && rx.check_eof && !rx.done && !io.is_paused();
            held |= rx.strp.buffered() > 0 || (rx.check_eof && !check);
            drop(rx);
            if check {
                // Went quiet after a short read: is an end of stream (or data) waiting?
                match sys::peek(io.fd()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Ok(mut rx) = io.rx.try_lock() {
                            rx.check_eof = false;
                        }
                    }
                    _ => self.drive_rx(&io, None, &mut events),
                }
            }
        }
        if held {
            self.sweep_pending.store(true, Ordering::Release);
        }
        self.dispatch(events, None);
    }

    pub(crate) fn has_reaps(&self) -> bool {
        !self
            .reaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Unattaches the failed connections whose transmit side is idle ([`MuxOptions::drop_failed`]).
    pub(crate) fn run_reaps(&self) {
        let pending: Vec<ConnectionId> =
            std::mem::take(&mut *self.reaps.lock().unwrap_or_else(PoisonError::into_inner));
        let mut keep = Vec::new();
        for c in pending {
            let busy = {
                let st = self.lock();
                st.core.tx_reserved_by(c).is_some()
            };
            if busy {
                keep.push(c);
                continue;
            }
            if self.unattach(c).is_ok() {
                self.log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(ConnectionEvent {
                        conn: c,
                        kind: ConnectionEventKind::Dropped,
                    });
            }
        }
        if !keep.is_empty() {
            self.reaps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(keep);
        }
    }

    /// Unattaches a connection (`kcm-spec.md` §3.2); returns the bytes it had received but not
    /// delivered.
    pub(crate) fn unattach(&self, id: ConnectionId) -> io::Result<bytes::Bytes> {
        let io = self.conn_io(id).ok_or_else(|| sys::os_err(err::ENOENT))?;
        if io.unattaching.swap(true, Ordering::AcqRel) {
            return Err(sys::os_err(err::EALREADY));
        }
        self.deregister_conn(&io);
        // Wait for a thread that may be reading it right now.
        let mut rx = io.lock_rx();
        rx.done = true;
        let leftover = rx.strp.take_unparsed();
        let pstats = *rx.strp.stats();
        drop(rx);
        let mut events = Events::new();
        {
            let mut st = self.lock();
            st.core
                .unattach(id, pstats)
                .map_err(|e| sys::os_err(e.errno()))?;
            Self::drain(&mut st.core, &mut events);
        }
        crate::registry::lock().attached.remove(&io.sock);
        self.dispatch(events, None);
        Ok(leftover)
    }
}

/// Tears a mux down after its last endpoint closed (§3.4 step 5): every connection is
/// unattached, the counters are folded into the process totals, the engine stops.
pub(crate) fn teardown(shared: &Arc<Shared>) {
    for io in shared.all_conns() {
        if !io.unattaching.load(Ordering::Acquire) {
            let _ = shared.unattach(io.id);
        }
    }
    // Whatever is still there was released by the core already or is being unattached.
    for io in shared.all_conns() {
        crate::registry::lock().attached.remove(&io.sock);
        shared.deregister_conn(&io);
    }
    shared
        .conns
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let (mux, conn) = {
        let st = shared.lock();
        (*st.core.stats(), *st.core.aggregate_conn_stats())
    };
    let mut reg = crate::registry::lock();
    reg.dead_mux += mux;
    reg.dead_conn += conn;
    reg.muxes
        .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)));
    drop(reg);
    shared.engine.shutdown();
}
