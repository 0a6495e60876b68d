//! The N×M multiplexor as a sans-IO state machine (`kcm-spec.md` §1–§7).
//!
//! [`MuxCore`] holds everything the kernel's `struct kcm_mux` holds: the endpoints (KCM
//! sockets) with their receive and transmit queues, the attached connections (psocks), the FIFO
//! of receive-eligible endpoints, the FIFO of connections holding a parked message, the hold
//! queue, the FIFO of connections available for transmit and the FIFO of endpoints waiting for
//! one. It performs no I/O: the runtime feeds it parsed messages ([`MuxCore::rx_pass`]), asks
//! it what to write ([`MuxCore::poll_transmit`]) and reports what the socket accepted
//! ([`MuxCore::handle_transmit`]). Whatever the runtime must act on afterwards (wake an
//! endpoint, resume reading a connection, post an error) comes out of [`MuxCore::poll_event`].
//!
//! Every method is meant to be called under one lock; none blocks. Blocking (a full send
//! buffer, an empty receive queue) is the runtime's business: the core answers
//! [`SendError::WouldBlock`] or `None` and later emits [`Event::Writable`] /
//! [`Event::Readable`].
//!
//! ```
//! use bytes::Bytes;
//! use kcm_core::mux::{Kind, MuxCore, SendFlags, Event};
//!
//! let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
//! let conn = mux.attach();
//! // A message from the connection goes to the only endpoint.
//! mux.rx_pass(conn, [Bytes::from_static(b"\0\0\0\x01x")], None);
//! let read = mux.recv(ep, usize::MAX, false).unwrap();
//! assert_eq!(&read.data[..], b"\0\0\0\x01x");
//! assert_eq!(read.conn, conn);
//! // A message sent on the endpoint is written on the connection.
//! mux.send(ep, Bytes::from_static(b"\0\0\0\x01y"), SendFlags::default(), None).unwrap();
//! let tx = mux.poll_transmit(ep).unwrap();
//! assert_eq!(tx.conn, conn);
//! mux.handle_transmit(ep, tx.conn, kcm_core::mux::TxResult::Written(5));
//! assert_eq!(mux.stats().tx_msgs, 1);
//! # let _ = std::iter::from_fn(|| mux.poll_event()).count();
//! ```

mod index_fifo;
mod rx;
mod rx_batch;
mod rx_queue;
mod snapshot;
#[cfg(test)]
mod tests;
mod tx;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

use bytes::Bytes;

use crate::errno;
use crate::stats::{ConnStats, EndpointStats, MuxStats};

pub use rx::{PassOutcome, RecvRead};
pub use tx::{MsgData, Refused, SendBatch, SendError, SendFlags, Transmit, TxResult};

/// The kernel's default `net.core.rmem_default` / `wmem_default`: the receive and send buffer
/// limits a new endpoint starts with.
pub const DEFAULT_BUF: usize = 212_992;

/// Whether endpoints behave like `SOCK_DGRAM` or `SOCK_SEQPACKET` KCM sockets (§2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A send completes a message unless "more" is set; a short read truncates.
    Datagram,
    /// A send completes a message only with end-of-record; a short read continues next time.
    SeqPacket,
}

/// An endpoint of a mux (a KCM socket). Its number is the lowest unused one, as the kernel's
/// socket index (`kcm-<n>` in `/proc/net/kcm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u32);

/// An attached connection. `index` is the lowest unused psock index at attach time (what
/// `/proc/net/kcm` shows); `gen` makes the id unique for the mux's lifetime, so a stale id can
/// never address a later connection that reused the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    /// The psock index.
    pub index: u32,
    /// Attach generation, unique per mux.
    pub gen: u32,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "psock-{}.{}", self.index, self.gen)
    }
}

/// Something the runtime must act on after a call into the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The endpoint's receive queue went from empty to non-empty: wake its readers.
    Readable(EndpointId),
    /// The endpoint may accept a new message again (queued bytes fell below its send buffer),
    /// or its pending error was set: wake its senders.
    Writable(EndpointId),
    /// The endpoint holds a transmit reservation and has bytes to write: call
    /// [`MuxCore::poll_transmit`] for it (any thread may).
    TxReady(EndpointId),
    /// The connection's parked messages were all taken: resume reading it.
    ConnResume(ConnectionId),
    /// The connection's backlog (addressed messages that moved off their endpoints' queues
    /// while it was full) has bytes to write: call [`MuxCore::poll_conn_transmit`] for it.
    ConnTxReady(ConnectionId),
    /// Post this errno on the connection (KCM posts EPIPE on transmit aborts, §3.6).
    ConnError(ConnectionId, i32),
    /// An unattached connection is no longer used by the core: the runtime may now release
    /// the socket. Emitted exactly once per successful [`MuxCore::unattach`]: at once if no
    /// endpoint held the connection for transmit, else when the holder lets go of it — which,
    /// if a [`Transmit`] on it is being written, is when that write is reported with
    /// [`MuxCore::handle_transmit`] (§3.2 step 5).
    ConnReleased(ConnectionId),
}

/// Why an endpoint or connection operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The connection is not attached to this mux (ENOENT).
    #[error("connection is not attached to this mux")]
    NotAttached,
    /// An unattach of this connection is already in progress (EALREADY).
    #[error("connection is already being unattached")]
    AlreadyUnattaching,
    /// The endpoint does not exist (closed).
    #[error("no such endpoint")]
    NoEndpoint,
    /// Too many endpoints or connections (index space exhausted).
    #[error("too many endpoints or connections")]
    TooMany,
}

impl MuxError {
    /// The errno the kernel gives for this condition.
    pub fn errno(&self) -> i32 {
        match self {
            MuxError::NotAttached => errno::ENOENT,
            MuxError::AlreadyUnattaching => errno::EALREADY,
            MuxError::NoEndpoint => errno::EBADF,
            MuxError::TooMany => errno::EMFILE,
        }
    }
}

/// One received message as queued on an endpoint.
#[derive(Debug, Clone)]
pub(crate) struct RxMsg {
    pub(crate) data: Bytes,
    pub(crate) conn: ConnectionId,
}

pub(crate) struct Ep {
    // Receive side (§5.1).
    pub(crate) rx: rx_queue::RxQueue,
    pub(crate) rx_mem: usize,
    pub(crate) rcvbuf: usize,
    pub(crate) rcvlowat: usize,
    pub(crate) disabled: bool,
    /// On the eligible FIFO (the kernel's `rx_wait`).
    pub(crate) rx_wait: bool,
    // Transmit side (§2.2, §5.3).
    pub(crate) tx: tx::EpTx,
    pub(crate) pending_err: Option<i32>,
    pub(crate) stats: EndpointStats,
}

pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    /// Messages parsed but not yet taken by any endpoint; non-empty means paused (§5.2).
    pub(crate) parked: VecDeque<Bytes>,
    /// On the ready-connections FIFO.
    pub(crate) ready: bool,
    pub(crate) tx_reserved_by: Option<u32>,
    pub(crate) tx_stopped: bool,
    /// On the available-for-transmit FIFO.
    pub(crate) tx_avail: bool,
    /// Endpoints waiting for this very connection (addressed sends).
    pub(crate) addr_waiters: VecDeque<u32>,
    /// Unattached while reserved: freed when the reserving endpoint lets go (§3.2 step 5).
    pub(crate) done: bool,
    pub(crate) stats: ConnStats,
    /// Addressed messages waiting for this connection's write space; while there is one, it
    /// holds the connection as a reservation would (tx/backlog.rs).
    pub(crate) backlog: Option<tx::Backlog>,
}

impl Conn {
    /// Its backlog is full: new sends to it are refused, and only those (tx/backlog.rs).
    pub(crate) fn backlog_full(&self) -> bool {
        self.backlog.as_ref().is_some_and(tx::Backlog::is_full)
    }
}

/// The multiplexor state machine. See the [module docs](self).
pub struct MuxCore {
    kind: Kind,
    eps: Vec<Option<Ep>>,
    conns: Vec<Option<Conn>>,
    next_gen: u32,
    rx_eligible: VecDeque<u32>,
    ready_conns: index_fifo::IndexFifo,
    hold: VecDeque<RxMsg>,
    tx_avail: index_fifo::IndexFifo,
    /// Free slots of `conns`, lowest first: an attach takes the lowest in O(log n). (It
    /// scanned the slots, which made attaching the n-th connection O(n): 11 µs an attach on
    /// average for 30,000 connections.)
    free_conns: BinaryHeap<Reverse<u32>>,
    tx_waiting: VecDeque<u32>,
    stats: MuxStats,
    /// Aggregates of unattached connections (kernel: `aggregate_psock_stats` and
    /// `aggregate_strp_stats` of the mux).
    agg_conn: ConnStats,
    events: VecDeque<Event>,
    /// Slice lists of written transmits, cleared, for the next ones ([`MuxCore::recycle`]).
    spare_bufs: Vec<Vec<Bytes>>,
}

impl fmt::Debug for MuxCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxCore")
            .field("kind", &self.kind)
            .field("endpoints", &self.endpoint_count())
            .field("connections", &self.connection_count())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn lowest_free<T>(v: &mut Vec<Option<T>>) -> usize {
    match v.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            v.push(None);
            v.len() - 1
        }
    }
}

impl MuxCore {
    /// Creates a mux with its first endpoint, like `socket(AF_KCM, kind, 0)` (§1.3).
    pub fn new(kind: Kind) -> Result<(MuxCore, EndpointId), MuxError> {
        let mut mux = MuxCore {
            kind,
            eps: Vec::new(),
            conns: Vec::new(),
            next_gen: 0,
            rx_eligible: VecDeque::new(),
            ready_conns: index_fifo::IndexFifo::default(),
            hold: VecDeque::new(),
            tx_avail: index_fifo::IndexFifo::default(),
            free_conns: BinaryHeap::new(),
            tx_waiting: VecDeque::new(),
            stats: MuxStats::default(),
            agg_conn: ConnStats::default(),
            events: VecDeque::new(),
            spare_bufs: Vec::new(),
        };
        let ep = mux.add_endpoint()?;
        Ok((mux, ep))
    }

    /// The endpoints' kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Adds an endpoint (`SIOCKCMCLONE`, §3.3): default options, immediately receive-eligible
    /// (after taking held and parked messages).
    pub fn add_endpoint(&mut self) -> Result<EndpointId, MuxError> {
        let i = lowest_free(&mut self.eps);
        let idx = u32::try_from(i).map_err(|_| MuxError::TooMany)?;
        self.eps[i] = Some(Ep {
            rx: rx_queue::RxQueue::default(),
            rx_mem: 0,
            rcvbuf: DEFAULT_BUF,
            rcvlowat: 1,
            disabled: false,
            rx_wait: false,
            tx: tx::EpTx::new(),
            pending_err: None,
            stats: EndpointStats::default(),
        });
        self.rcv_ready(idx);
        Ok(EndpointId(idx))
    }

    /// Closes an endpoint (§3.4): its open and unsent messages are dropped, a transmit
    /// reservation is aborted (the connection stops transmitting for good), and its unread
    /// messages move to other endpoints or the hold queue. Returns `true` when it was the last
    /// endpoint: the mux is then finished and the runtime unattaches every connection.
    pub fn close_endpoint(&mut self, ep: EndpointId) -> Result<bool, MuxError> {
        let e = self
            .eps
            .get_mut(ep.0 as usize)
            .and_then(Option::take)
            .ok_or(MuxError::NoEndpoint)?;
        self.rx_eligible.retain(|&x| x != ep.0);
        self.tx_waiting.retain(|&x| x != ep.0);
        for c in self.conns.iter_mut().flatten() {
            c.addr_waiters.retain(|&x| x != ep.0);
        }
        if let Some(ci) = e.tx.reserved {
            // Bytes of a message may be on the wire: the stream can never carry another
            // message (§3.4 step 3). A transmit the runtime is still writing is abandoned.
            self.abort_conn_tx(ci);
            if let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) {
                c.stats.tx.unreserved += 1;
            }
            self.release_conn(ci);
        }
        let last = self.endpoint_count() == 0;
        if last {
            // Mux destruction loses the hold queue (§3.4 step 5).
            self.hold.clear();
        } else {
            let mut e = e;
            self.requeue(e.rx.take_all());
        }
        Ok(last)
    }

    /// Number of open endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.eps.iter().flatten().count()
    }

    /// Number of attached connections (including ones unattached but still reserved).
    pub fn connection_count(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// The ids of the open endpoints, in index order.
    pub fn endpoints(&self) -> Vec<EndpointId> {
        (0..self.eps.len())
            .filter(|&i| self.eps[i].is_some())
            .map(|i| EndpointId(i as u32))
            .collect()
    }

    /// The ids of the attached connections, in index order (ones already unattached but still
    /// reserved for transmit are left out).
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.conns
            .iter()
            .flatten()
            .filter(|c| !c.done)
            .map(|c| c.id)
            .collect()
    }

    /// Attaches a connection (`SIOCKCMATTACH`, §3.1): it gets the lowest free index and becomes
    /// available for transmit, handed straight to a waiting endpoint if there is one.
    pub fn attach(&mut self) -> ConnectionId {
        let i = match self.free_conns.pop() {
            Some(Reverse(i)) => i as usize,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.next_gen = self.next_gen.wrapping_add(1);
        let id = ConnectionId {
            index: i as u32,
            gen: self.next_gen,
        };
        self.conns[i] = Some(Conn {
            id,
            parked: VecDeque::new(),
            ready: false,
            tx_reserved_by: None,
            tx_stopped: false,
            tx_avail: false,
            addr_waiters: VecDeque::new(),
            done: false,
            stats: ConnStats::default(),
            backlog: None,
        });
        self.stats.psock_attach += 1;
        self.release_conn(i as u32);
        id
    }

    /// Unattaches a connection (`SIOCKCMUNATTACH`, §3.2). Parked messages are dropped
    /// (`rx_ready_drops`); a transmit reservation is aborted and its owner retries elsewhere;
    /// a backlog's messages are dropped (`tx_addr_drops`). `parser` is the connection's final
    /// stream-parser statistics, folded into the mux aggregates when the connection is
    /// released. Returns whether the connection was held for transmit (reserved, or by its
    /// backlog). Either way the runtime keeps the socket until [`Event::ConnReleased`]
    /// (already queued when nobody held it, or when the holder was not writing on it); until
    /// then a second unattach fails with [`MuxError::AlreadyUnattaching`] and receive passes
    /// on it deliver nothing.
    pub fn unattach(
        &mut self,
        conn: ConnectionId,
        parser: crate::stats::ParserStats,
    ) -> Result<bool, MuxError> {
        let ci = conn.index;
        let c = self.conn_mut(conn).ok_or(MuxError::NotAttached)?;
        if c.done {
            return Err(MuxError::AlreadyUnattaching);
        }
        c.done = true;
        c.stats.parser = parser;
        let dropped = c.parked.len() as u64;
        c.parked.clear();
        c.ready = false;
        let reserved = c.tx_reserved_by;
        let backlog = c.backlog.is_some();
        self.stats.rx_ready_drops += dropped;
        self.ready_conns.remove(ci);
        self.tx_avail.remove(ci);
        self.stats.psock_unattach += 1;
        if backlog {
            // Held by its backlog: the messages are dropped (and the connection released)
            // now, or when a write of them under way is reported.
            self.stats.psock_unattach_rsvd += 1;
            self.abort_conn_tx(ci);
            return Ok(true);
        }
        match reserved {
            Some(owner) => {
                self.stats.psock_unattach_rsvd += 1;
                // Bytes of a message may be on the wire: abort and retry elsewhere (§3.2).
                self.abort_conn_tx(ci);
                // If the runtime is writing on the socket right now, the holder keeps the
                // connection until that write is reported (`handle_transmit` then retries);
                // releasing it here would let the runtime close a socket still in use.
                let writing = self
                    .eps
                    .get(owner as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| e.tx.writing.is_some());
                if !writing {
                    self.retry_elsewhere(owner);
                }
            }
            None => {
                // Endpoints waiting for this very connection must give up their message.
                self.abort_waiters(ci);
                self.free_conn(ci);
            }
        }
        Ok(reserved.is_some())
    }

    /// Mux counters (live; aggregates of unattached connections are in
    /// [`MuxCore::aggregate_conn_stats`]).
    pub fn stats(&self) -> &MuxStats {
        &self.stats
    }

    /// Sum of the counters of connections already unattached.
    pub fn aggregate_conn_stats(&self) -> &ConnStats {
        &self.agg_conn
    }

    /// The counters of a connection not yet released (see [`Event::ConnReleased`]).
    pub fn conn_stats(&self, conn: ConnectionId) -> Option<ConnStats> {
        self.conn(conn).map(|c| c.stats)
    }

    /// An endpoint's counters.
    pub fn endpoint_stats(&self, ep: EndpointId) -> Option<EndpointStats> {
        self.ep(ep).map(|e| e.stats)
    }

    /// Whether the connection has stopped transmitting for good (a hard write error or an
    /// abort).
    pub fn is_tx_stopped(&self, conn: ConnectionId) -> Option<bool> {
        self.conn(conn).map(|c| c.tx_stopped)
    }

    /// Whether the connection holds parked messages and must not be read (§5.2).
    pub fn is_paused(&self, conn: ConnectionId) -> bool {
        self.conn(conn).is_some_and(|c| !c.parked.is_empty())
    }

    /// An endpoint's receive-buffer limit (SO_RCVBUF, §5.1).
    ///
    /// ```
    /// use kcm_core::mux::{Kind, MuxCore};
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// assert_eq!(mux.rcvbuf(ep), Some(kcm_core::mux::DEFAULT_BUF));
    /// mux.set_rcvbuf(ep, 1).unwrap();
    /// assert_eq!(mux.rcvbuf(ep), Some(1));
    /// ```
    pub fn rcvbuf(&self, ep: EndpointId) -> Option<usize> {
        self.ep(ep).map(|e| e.rcvbuf)
    }

    /// Sets an endpoint's receive-buffer limit (SO_RCVBUF, §5.1).
    pub fn set_rcvbuf(&mut self, ep: EndpointId, bytes: usize) -> Result<(), MuxError> {
        self.ep_mut(ep).ok_or(MuxError::NoEndpoint)?.rcvbuf = bytes.max(1);
        self.rcv_ready(ep.0);
        Ok(())
    }

    /// Sets an endpoint's low-water mark (SO_RCVLOWAT): it becomes eligible again once its
    /// receive memory drops below this (default 1: only when empty).
    pub fn set_rcvlowat(&mut self, ep: EndpointId, bytes: usize) -> Result<(), MuxError> {
        self.ep_mut(ep).ok_or(MuxError::NoEndpoint)?.rcvlowat = bytes.max(1);
        self.rcv_ready(ep.0);
        Ok(())
    }

    /// Sets an endpoint's send-buffer limit (SO_SNDBUF, §2.2).
    pub fn set_sndbuf(&mut self, ep: EndpointId, bytes: usize) -> Result<(), MuxError> {
        let e = self.ep_mut(ep).ok_or(MuxError::NoEndpoint)?;
        e.tx.sndbuf = bytes.max(1);
        if e.tx.queued_bytes < e.tx.sndbuf {
            // The sender is told now: no second wake-up when the queue drains.
            e.tx.blocked = false;
            self.events.push_back(Event::Writable(ep));
        }
        Ok(())
    }

    /// An endpoint's (receive, send) buffer limits.
    pub fn buffers(&self, ep: EndpointId) -> Option<(usize, usize)> {
        self.ep(ep).map(|e| (e.rcvbuf, e.tx.sndbuf))
    }

    /// Posts an error on an endpoint (KCM only ever posts EPIPE there, §2.6); the next send
    /// fails with it, and a receive with an empty queue returns it.
    pub fn set_endpoint_error(&mut self, ep: EndpointId, errno: i32) {
        if let Some(e) = self.ep_mut(ep) {
            e.pending_err = Some(errno);
            self.events.push_back(Event::Readable(ep));
            self.events.push_back(Event::Writable(ep));
        }
    }

    /// Takes the endpoint's pending error, if any (SO_ERROR).
    pub fn take_endpoint_error(&mut self, ep: EndpointId) -> Option<i32> {
        self.ep_mut(ep).and_then(|e| e.pending_err.take())
    }

    /// Whether an error is pending on the endpoint.
    pub fn has_endpoint_error(&self, ep: EndpointId) -> bool {
        self.ep(ep).is_some_and(|e| e.pending_err.is_some())
    }

    /// The next thing the runtime must act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn ep(&self, ep: EndpointId) -> Option<&Ep> {
        self.eps.get(ep.0 as usize).and_then(Option::as_ref)
    }

    pub(crate) fn ep_mut(&mut self, ep: EndpointId) -> Option<&mut Ep> {
        self.eps.get_mut(ep.0 as usize).and_then(Option::as_mut)
    }

    pub(crate) fn conn(&self, id: ConnectionId) -> Option<&Conn> {
        self.conns
            .get(id.index as usize)
            .and_then(Option::as_ref)
            .filter(|c| c.id == id)
    }

    pub(crate) fn conn_mut(&mut self, id: ConnectionId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    fn free_conn(&mut self, ci: u32) {
        if let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::take) {
            self.free_conns.push(Reverse(ci));
            self.agg_conn += c.stats;
            self.events.push_back(Event::ConnReleased(c.id));
        }
    }
}
