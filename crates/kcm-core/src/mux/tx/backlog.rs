//! Per-connection backlogs: addressed messages that wait for one connection's write space
//! without holding up the endpoint that sent them (an extension; the kernel has no addressed
//! sends).
//!
//! An endpoint's send queue is one FIFO, as a kernel KCM socket's is, and the endpoint keeps the
//! connection it writes on until its head message is out. When that connection fills up (its peer
//! does not read) while the endpoint has messages for other destinations queued behind, the
//! messages addressed to the full connection leave the endpoint's queue, in order, for the
//! connection's *backlog* (a partly written one keeps its offset), and the endpoint goes on with
//! the others. Only those before the endpoint's first unaddressed message move: that one may yet be
//! written on the same connection, and the endpoint's messages must reach a connection in the order
//! they were sent. The backlog holds the connection as a reservation would — nobody else may
//! interleave bytes on it — and is written out by whichever thread sees the connection's write
//! space ([`Event::ConnTxReady`]). Messages addressed to a connection that has a backlog join it
//! instead of waiting for the connection, from any endpoint; new sends to it are refused
//! (`WouldBlock`) while it holds [`BACKLOG_MAX`] bytes, and only those. So a peer that stops
//! reading costs its own connection, not the endpoint's other peers.
//!
//! Unaddressed messages never move: one that is partly written must finish on its connection
//! (§5.3), so an endpoint sending unaddressed still waits for that connection, as in the
//! kernel.

use std::collections::VecDeque;

use super::super::{ConnectionId, EndpointId, Event, MuxCore, DEFAULT_BUF};
use super::queue::{self, Entries, TxMsg};
use super::{gather, Transmit, TxResult};

/// New sends addressed to a connection are refused while its backlog holds this many bytes
/// (the default send buffer: what one endpoint could have queued for it anyway).
const BACKLOG_MAX: usize = DEFAULT_BUF;

/// Addressed messages waiting for one connection's write space (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    pub(crate) queue: VecDeque<TxMsg>,
    /// Bytes of the entries in `queue`, written or not (as an endpoint counts its queue).
    pub(crate) bytes: usize,
    /// A transmit of the backlog is being written: its length.
    pub(crate) writing: Option<usize>,
    /// Write space was reported while a transmit was being written (see
    /// `EpTx::space_while_writing`).
    pub(crate) space_while_writing: bool,
}

impl Backlog {
    /// New sends to its connection are refused (`WouldBlock`) while this holds.
    pub(crate) fn is_full(&self) -> bool {
        self.bytes >= BACKLOG_MAX
    }

    fn msgs(&self) -> usize {
        self.queue.iter().map(TxMsg::msgs).sum()
    }

    fn push(&mut self, m: TxMsg) {
        self.bytes += m.len;
        self.queue.push_back(m);
    }
}

impl Entries for Backlog {
    fn head(&mut self) -> Option<&mut TxMsg> {
        self.queue.front_mut()
    }

    fn pop_head(&mut self) -> usize {
        let Some(m) = self.queue.pop_front() else {
            return 0;
        };
        self.bytes -= m.len;
        m.msgs()
    }

    fn trim_head(&mut self) -> usize {
        let Some(m) = self.queue.front_mut() else {
            return 0;
        };
        let (msgs, bytes) = m.trim_written();
        self.bytes -= bytes;
        msgs
    }
}

impl MuxCore {
    /// Messages and bytes in the connection's backlog, if it has one.
    pub fn tx_backlog(&self, conn: ConnectionId) -> Option<(usize, usize)> {
        let b = self.conn(conn)?.backlog.as_ref()?;
        Some((b.msgs(), b.bytes))
    }

    /// Whether a new message from `ep`, addressed to `target` (`None`: any connection), could
    /// be queued now without blocking: the endpoint's send buffer has room (or would have once
    /// the messages of a full connection it waits for step aside) and the target's backlog is
    /// not full.
    pub fn can_send_to(&self, ep: EndpointId, target: Option<ConnectionId>) -> bool {
        (self.can_send(ep) || self.room_after_stall(ep.0, target))
            && !target.is_some_and(|t| self.backlog_full(t))
    }

    pub(super) fn backlog_full(&self, t: ConnectionId) -> bool {
        self.conn(t).is_some_and(super::super::Conn::backlog_full)
    }

    /// A new message from endpoint `ei` for `target` does not fit its send buffer. If the
    /// endpoint is waiting for write space on a connection other than `target`, its messages
    /// for that connection move to the connection's backlog, and the new message fits if
    /// that made room. Returns whether it fits now.
    pub(super) fn make_room(&mut self, ei: u32, target: Option<ConnectionId>) -> bool {
        self.room_after_stall(ei, target) && self.stall(ei, true)
    }

    /// Endpoint `ei` and the connection A it holds, when it is not writing and its head
    /// message is addressed to A: the case where A's messages may step aside.
    fn held_head_for(&self, ei: u32) -> Option<(&super::super::Ep, ConnectionId)> {
        let e = self.eps.get(ei as usize)?.as_ref()?;
        let ci = e.tx.reserved.filter(|_| e.tx.writing.is_none())?;
        let a = self.conns.get(ci as usize)?.as_ref()?.id;
        (e.tx.queue.front()?.target == Some(a)).then_some((e, a))
    }

    /// Whether [`MuxCore::make_room`] would make room for a message for `target`.
    fn room_after_stall(&self, ei: u32, target: Option<ConnectionId>) -> bool {
        let Some((e, a)) = self.held_head_for(ei) else {
            return false;
        };
        if !e.tx.space_wait || target == Some(a) {
            return false;
        }
        // What `stall` would move (`EpTx::take_addressed`).
        let moved: usize =
            e.tx.queue
                .iter()
                .take(queue::movable_prefix(&e.tx.queue))
                .filter(|m| m.target == Some(a))
                .map(|m| m.len)
                .sum();
        e.tx.queued_bytes - moved < e.tx.sndbuf
    }

    /// Endpoint `ei` found the connection it holds full: other destinations queued behind
    /// need not wait for it (see [`MuxCore::stall`]); if there are none, the endpoint waits
    /// for the connection's write space (which [`MuxCore::make_room`] looks for).
    pub(super) fn socket_full(&mut self, ei: u32) {
        if !self.stall(ei, false) {
            if let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) {
                e.tx.space_wait = true;
            }
        }
    }

    /// Endpoint `ei` holds connection A, which it found full, and is not writing. If its head
    /// is addressed to A and something for another destination waits behind it (or, with
    /// `force`, is about to be sent), A's messages move to A's backlog and the endpoint lets go
    /// of A. Returns whether they moved.
    pub(super) fn stall(&mut self, ei: u32, force: bool) -> bool {
        let Some((e, a)) = self.held_head_for(ei) else {
            return false;
        };
        if !force && e.tx.queue.iter().all(|m| m.target == Some(a)) {
            return false;
        }
        let ci = a.index;
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return false;
        };
        let moved = e.tx.take_addressed(a);
        e.tx.reserved = None;
        e.tx.space_wait = false;
        if e.tx.unblock() {
            self.events.push_back(Event::Writable(EndpointId(ei)));
        }
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return true;
        };
        c.tx_reserved_by = None;
        c.stats.tx.unreserved += 1;
        let b = c.backlog.get_or_insert_with(Backlog::default);
        moved.into_iter().for_each(|m| b.push(m));
        // The connection is full: the backlog waits for its write space. Endpoints waiting
        // for this connection join the backlog instead.
        self.rekick_waiters(ci);
        self.kick_tx(ei);
        true
    }

    /// Moves endpoint `ei`'s head message (addressed to `t`, which has a backlog) to the
    /// backlog.
    pub(super) fn join_backlog(&mut self, ei: u32, t: ConnectionId) {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(m) = e.tx.take_head() else { return };
        if e.tx.unblock() {
            self.events.push_back(Event::Writable(EndpointId(ei)));
        }
        if let Some(b) = self.conn_mut(t).and_then(|c| c.backlog.as_mut()) {
            b.push(m);
        }
    }

    /// Endpoints waiting for connection `ci` to be released look again (they join its
    /// backlog).
    fn rekick_waiters(&mut self, ci: u32) {
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return;
        };
        for w in std::mem::take(&mut c.addr_waiters) {
            if let Some(e) = self.eps.get_mut(w as usize).and_then(Option::as_mut) {
                e.tx.waiting = false;
            }
            self.kick_tx(w);
        }
    }

    /// The next bytes of the connection's backlog to write, if it has some and is not being
    /// written ([`Event::ConnTxReady`]). Report with [`MuxCore::handle_conn_transmit`].
    pub fn poll_conn_transmit(&mut self, conn: ConnectionId) -> Option<Transmit> {
        let c = self.conn(conn)?;
        if c.done || c.tx_stopped || c.backlog.as_ref()?.writing.is_some() {
            return None;
        }
        let spare = self.spare_bufs.pop().unwrap_or_default();
        let b = self.conn_mut(conn)?.backlog.as_mut()?;
        let (bufs, len) = gather(b.queue.iter_mut(), conn, spare);
        if len > 0 {
            b.writing = Some(len);
            b.space_while_writing = false;
            return Some(Transmit { conn, bufs, len });
        }
        self.keep_list(bufs);
        None
    }

    /// Reports what writing the connection's last backlog [`Transmit`] did (as
    /// [`MuxCore::handle_transmit`] does for an endpoint's).
    pub fn handle_conn_transmit(&mut self, conn: ConnectionId, result: TxResult) {
        let ci = conn.index;
        let Some(c) = self.conn_mut(conn) else { return };
        let aborted = c.done || c.tx_stopped;
        let Some(b) = c.backlog.as_mut() else { return };
        let Some(asked) = b.writing.take() else {
            return;
        };
        if aborted {
            self.drop_backlog(ci);
            return;
        }
        match result {
            TxResult::Written(n) => {
                let n = n.min(asked);
                let (msgs, bytes) = queue::advance(b, n);
                self.count_written(conn, msgs, bytes);
                let Some(c) = self.conn_mut(conn) else { return };
                let Some(b) = c.backlog.as_mut() else { return };
                if b.queue.is_empty() {
                    c.backlog = None;
                    self.release_conn(ci);
                } else if n >= asked || std::mem::take(&mut b.space_while_writing) {
                    self.events.push_back(Event::ConnTxReady(conn));
                }
            }
            TxResult::WouldBlock => {
                if std::mem::take(&mut b.space_while_writing) {
                    self.events.push_back(Event::ConnTxReady(conn));
                }
            }
            TxResult::Failed => self.abort_conn_tx(ci),
        }
    }

    /// The connection reported write space: its backlog may continue.
    pub(super) fn backlog_write_space(&mut self, conn: ConnectionId) {
        let Some(b) = self.conn_mut(conn).and_then(|c| c.backlog.as_mut()) else {
            return;
        };
        if b.writing.is_some() {
            b.space_while_writing = true;
        } else {
            self.events.push_back(Event::ConnTxReady(conn));
        }
    }

    /// Drops the connection's backlog (it failed or was unattached): its messages cannot be
    /// delivered (`tx_addr_drops`, as for addressed messages still in an endpoint's queue),
    /// and the connection is let go of.
    pub(super) fn drop_backlog(&mut self, ci: u32) {
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(b) = c.backlog.take() else { return };
        self.stats.tx_addr_drops += b.msgs() as u64;
        self.release_conn(ci);
    }
}
