//! Send semantics and transmit scheduling (`kcm-spec.md` §2.2, §5.3, §5.5).
//!
//! A completed message is queued on its endpoint. The endpoint reserves one connection — the
//! head of the available FIFO, or for an addressed message that very connection — and keeps it
//! until its queue is empty, so nobody else can interleave bytes on that stream. The runtime
//! writes what [`MuxCore::poll_transmit`] hands out (one vectored write per batch) and reports
//! back with [`MuxCore::handle_transmit`]: bytes written advance the queue, "would block" waits
//! for [`MuxCore::write_space`], a hard failure retires the connection for transmit and retries
//! the message from byte 0 elsewhere. Addressed messages for a connection found full step aside
//! into that connection's backlog when other destinations wait behind them (`backlog.rs`,
//! [`MuxCore::poll_conn_transmit`]).

mod backlog;
mod batch;
mod queue;
mod send_batch;

use bytes::{Bytes, BytesMut};

use super::{ConnectionId, EndpointId, Event, Kind, MuxCore};
use crate::errno;
pub(crate) use backlog::Backlog;
pub use batch::{MsgData, Refused};
#[cfg(test)]
pub(crate) use queue::TxMsg;
use queue::{Entries, COALESCE_MAX};
pub(crate) use queue::{EpTx, Parts};
pub use send_batch::SendBatch;

/// At most this many messages go into one transmit (one `writev`; the kernel's IOV_MAX is
/// 1024 and each message may need two slices).
pub(super) const MAX_TX_MSGS: usize = 256;
/// At most this many bytes go into one transmit.
const MAX_TX_BYTES: usize = 1 << 20;
/// At most this many slices go into one transmit: one `writev` takes no more (IOV_MAX). A
/// message built from many `MSG_MORE` parts has one slice per part; a transmit with more
/// slices would be cut short by the write and look like a full socket, waiting for write
/// space that never comes.
pub(super) const MAX_TX_SLICES: usize = 1024;

/// Slice lists [`MuxCore::recycle`] keeps: about one per thread writing at a time.
const SPARE_LISTS: usize = 4;
/// Longer lists (up to [`MAX_TX_SLICES`]) are let go rather than kept.
const SPARE_LIST_MAX: usize = 64;

/// Flags of one send call (the meaningful `MSG_*` bits, §2.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendFlags {
    /// `MSG_MORE`: on a datagram endpoint, the message continues in the next call.
    pub more: bool,
    /// `MSG_EOR`: on a seqpacket endpoint, this call ends the message.
    pub eor: bool,
    /// `MSG_BATCH`: queue the completed message but do not start transmitting yet.
    pub batch: bool,
}

/// Why a send was refused. Nothing of the call's data was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The endpoint's queued bytes are at or above its send buffer and a new message would
    /// start (EAGAIN); batched messages were flushed. [`Event::Writable`] follows.
    #[error("send buffer full")]
    WouldBlock,
    /// An error was pending on the endpoint (always EPIPE in KCM); it is now cleared.
    #[error("endpoint error (errno {0})")]
    Pending(i32),
    /// The addressed connection is not attached to this mux (ENOTCONN).
    #[error("connection is not attached")]
    NotConnected,
    /// The addressed connection has stopped transmitting after a failure (EPIPE).
    #[error("connection can no longer transmit")]
    ConnectionDead,
    /// The endpoint does not exist.
    #[error("no such endpoint")]
    NoEndpoint,
}

impl SendError {
    /// The errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            SendError::WouldBlock => errno::EAGAIN,
            SendError::Pending(e) => *e,
            SendError::NotConnected => errno::ENOTCONN,
            SendError::ConnectionDead => errno::EPIPE,
            SendError::NoEndpoint => errno::EBADF,
        }
    }
}

/// Bytes to write on a connection, in order, with one vectored write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The reserved connection to write on.
    pub conn: ConnectionId,
    /// The slices to write (zero-copy views of the queued messages).
    pub bufs: Vec<Bytes>,
    /// Total bytes in `bufs`.
    pub len: usize,
}

/// What writing a [`Transmit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxResult {
    /// The socket accepted this many bytes (fewer than `len` means it is full: wait for
    /// write space).
    Written(usize),
    /// The socket accepted nothing (EAGAIN): wait for write space.
    WouldBlock,
    /// A hard error (anything but EAGAIN, or a write of 0): retire the connection for
    /// transmit and retry elsewhere.
    Failed,
}

/// Replaces the run of small slices at the end of `bufs`, from `start`, by one buffer of
/// exactly their size when there are two or more: for a few dozen bytes a copy is cheaper than
/// an iovec entry of its own, in the write and in the kernel. Large slices stay zero-copy.
fn join_small_run(bufs: &mut Vec<Bytes>, start: usize) {
    if bufs.len() - start < 2 {
        return;
    }
    let mut joined = BytesMut::with_capacity(bufs[start..].iter().map(Bytes::len).sum());
    for b in bufs.drain(start..) {
        joined.extend_from_slice(&b);
    }
    bufs.push(joined.freeze());
}

/// The slices of the next transmit on `conn` from the front of a queue: the entries that may
/// go there, within one vectored write's limits, from where the first one stopped.
fn gather<'a>(
    queue: impl Iterator<Item = &'a mut queue::TxMsg>,
    conn: ConnectionId,
    mut bufs: Vec<Bytes>,
) -> (Vec<Bytes>, usize) {
    // Spare lists are kept empty (`MuxCore::keep_list`).
    debug_assert!(bufs.is_empty());
    // Where the current run of small slices starts in `bufs`.
    let mut run = 0;
    let mut len = 0;
    'msgs: for m in queue.take(MAX_TX_MSGS) {
        if !m.compatible(conn) || (len > 0 && len + m.len - m.sent > MAX_TX_BYTES) {
            break;
        }
        let mut skip = m.sent;
        for b in m.slices() {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            if bufs.len() == MAX_TX_SLICES {
                // The rest (possibly of this very message) goes in the next transmit.
                break 'msgs;
            }
            let part = b.slice(skip..);
            len += part.len();
            if part.len() > COALESCE_MAX {
                join_small_run(&mut bufs, run);
                bufs.push(part);
                run = bufs.len();
            } else {
                bufs.push(part);
            }
            skip = 0;
        }
    }
    join_small_run(&mut bufs, run);
    (bufs, len)
}

impl MuxCore {
    /// Sends (part of) a message on an endpoint (§2.2). Returns the bytes accepted — all of
    /// `data`, or an error with nothing accepted. `target` addresses a connection (an
    /// extension); `None` lets the mux pick one, as the kernel does. A message's target is the
    /// one given with its first part.
    ///
    /// On a datagram endpoint an error discards the whole message under construction; on a
    /// seqpacket endpoint the open message is kept (§2.2).
    pub fn send(
        &mut self,
        ep: EndpointId,
        data: Bytes,
        flags: SendFlags,
        target: Option<ConnectionId>,
    ) -> Result<usize, SendError> {
        let kind = self.kind;
        // Refused for its connection's full backlog, not for this endpoint's send buffer.
        let mut conn_full = false;
        let check = match self.ep(ep) {
            None => return Err(SendError::NoEndpoint),
            Some(&super::Ep {
                pending_err: Some(err),
                ..
            }) => Err(SendError::Pending(err)),
            Some(e) if e.tx.open.is_none() => match target.map(|t| self.conn(t)) {
                Some(None) => Err(SendError::NotConnected),
                Some(Some(c)) if c.done => Err(SendError::NotConnected),
                Some(Some(c)) if c.tx_stopped => Err(SendError::ConnectionDead),
                Some(Some(c)) if c.backlog_full() => {
                    conn_full = true;
                    Err(SendError::WouldBlock)
                }
                _ if e.tx.queued_bytes >= e.tx.sndbuf => Err(SendError::WouldBlock),
                _ => Ok(()),
            },
            Some(_) => Ok(()),
        };
        let check = match check {
            // The send buffer is full of messages for a connection that is full too: they
            // step aside for this one (backlog.rs).
            Err(SendError::WouldBlock) if !conn_full && self.make_room(ep.0, target) => Ok(()),
            other => other,
        };
        let e = self.ep_mut(ep).ok_or(SendError::NoEndpoint)?;
        if let Err(err) = check {
            if let SendError::Pending(_) = err {
                e.pending_err = None;
            }
            if kind == Kind::Datagram {
                e.tx.open = None;
            }
            if err == SendError::WouldBlock {
                // Flush batched messages before blocking so batching cannot deadlock (§2.2).
                // (A full backlog is waited for on its connection: the endpoint has room.)
                e.tx.blocked |= !conn_full;
                e.tx.wait_more = false;
                self.kick_tx(ep.0);
            }
            return Err(err);
        }
        let len = data.len();
        let ends = match kind {
            Kind::Datagram => !flags.more,
            Kind::SeqPacket => flags.eor,
        };
        e.stats.tx_bytes += len as u64;
        if ends && len > 0 && e.tx.open.is_none() {
            // The common case, a whole message in one call, needs no parts list.
            e.tx.enqueue(Parts::One(data), len, target);
            e.stats.tx_msgs += 1;
        } else {
            // An empty call that does not end a message opens none (the kernel allocates the
            // message with its first byte), so the target is the one given with the first
            // data.
            if len > 0 || e.tx.open.is_some() {
                let (parts, _) = e.tx.open.get_or_insert_with(|| (Vec::new(), target));
                if len > 0 {
                    parts.push(data);
                }
            }
            if !ends {
                return Ok(len);
            }
            if let Some((mut parts, target)) = e.tx.open.take() {
                let total: usize = parts.iter().map(Bytes::len).sum();
                // A zero-length ending send completes the open message; there are no empty
                // messages (§2.2).
                if total > 0 {
                    let parts = if parts.len() == 1 {
                        Parts::One(parts.pop().unwrap_or_default())
                    } else {
                        Parts::Many(parts)
                    };
                    e.tx.enqueue(parts, total, target);
                    e.stats.tx_msgs += 1;
                }
            }
        }
        if flags.batch {
            e.tx.wait_more = true;
        } else {
            e.tx.wait_more = false;
            self.kick_tx(ep.0);
        }
        Ok(len)
    }

    /// The next bytes the endpoint must write, if it holds a reservation, has queued bytes and
    /// is not already writing. Until [`MuxCore::handle_transmit`] is called for it, no other
    /// transmit is handed out for this endpoint.
    pub fn poll_transmit(&mut self, ep: EndpointId) -> Option<Transmit> {
        let ei = ep.0;
        let e = self.ep(ep)?;
        if e.tx.writing.is_some() {
            return None;
        }
        let ci = e.tx.reserved?;
        let c = self.conns.get(ci as usize)?.as_ref()?;
        let conn = c.id;
        if c.tx_stopped || c.done {
            // Aborted under us while no write was outstanding: retry elsewhere (§5.5).
            self.retry_elsewhere(ei);
            return None;
        }
        let head_ok = e.tx.queue.front().map(|m| m.compatible(conn));
        match head_ok {
            None => return None,
            Some(false) => {
                // The next message is addressed elsewhere: let this connection go.
                self.release_reservation(ei);
                self.kick_tx(ei);
                return None;
            }
            Some(true) => {}
        }
        let spare = self.spare_bufs.pop().unwrap_or_default();
        let e = self.ep_mut(ep)?;
        let (bufs, len) = gather(e.tx.queue.iter_mut(), conn, spare);
        e.tx.writing = Some(len);
        e.tx.space_while_writing = false;
        e.tx.space_wait = false;
        // Any write flushes batched messages too (the kernel's kcm_write_msgs clears
        // tx_wait_more).
        e.tx.wait_more = false;
        Some(Transmit { conn, bufs, len })
    }

    /// Takes a written transmit back once its result is reported ([`MuxCore::handle_transmit`]
    /// or [`MuxCore::handle_conn_transmit`]) and keeps its list of slices, emptied, for a later
    /// one: a runtime that gives its transmits back saves an allocation per write. Optional; a
    /// transmit dropped instead costs only that allocation. A runtime that also empties
    /// `bufs` before reporting lets the buffers of the runs it wrote serve the next runs (a
    /// buffer still viewed when its run leaves the queue is dropped instead, which costs
    /// more: criterion `mux/send_runs_transmit` 0.40 µs per 64 replies when the slices are
    /// let go first, 0.49–0.51 µs when they are held through the report).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kcm_core::mux::{Kind, MuxCore, SendFlags, TxResult};
    ///
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// mux.attach();
    /// let end = SendFlags { eor: true, ..SendFlags::default() };
    /// mux.send(ep, Bytes::from_static(b"one"), end, None).unwrap();
    /// let mut tx = mux.poll_transmit(ep).unwrap();
    /// // ... written; the slices are let go before the report ...
    /// tx.bufs.clear();
    /// mux.handle_transmit(ep, tx.conn, TxResult::Written(tx.len));
    /// mux.recycle(tx);
    /// mux.send(ep, Bytes::from_static(b"two"), end, None).unwrap();
    /// let tx = mux.poll_transmit(ep).unwrap();
    /// assert_eq!(&tx.bufs[..], [Bytes::from_static(b"two")]);
    /// ```
    pub fn recycle(&mut self, tx: Transmit) {
        self.keep_list(tx.bufs);
    }

    /// Keeps a transmit's list of slices, emptied, for a later transmit, within
    /// [`SPARE_LISTS`] lists of at most [`SPARE_LIST_MAX`] slices. The slices' buffers are
    /// let go now, not when the list is next used.
    pub(super) fn keep_list(&mut self, mut bufs: Vec<Bytes>) {
        bufs.clear();
        if self.spare_bufs.len() < SPARE_LISTS && bufs.capacity() <= SPARE_LIST_MAX {
            self.spare_bufs.push(bufs);
        }
    }

    /// Reports what writing the endpoint's last [`Transmit`] on `conn` did. A report with no
    /// transmit outstanding on `conn` for this endpoint is ignored; a written count larger than
    /// the transmit is taken as all of it.
    pub fn handle_transmit(&mut self, ep: EndpointId, conn: ConnectionId, result: TxResult) {
        let ei = ep.0;
        let Some(e) = self.ep(ep) else { return };
        let (Some(asked), Some(ci)) = (e.tx.writing, e.tx.reserved) else {
            return;
        };
        let Some(c) = self.conns.get(ci as usize).and_then(Option::as_ref) else {
            return;
        };
        if c.id != conn {
            return;
        }
        let aborted = c.tx_stopped || c.done;
        if let Some(e) = self.ep_mut(ep) {
            e.tx.writing = None;
        }
        if aborted {
            // Unattached while we wrote (§3.2 step 5): whatever was written is lost with that
            // connection; now that the runtime is done with it, let go and retry elsewhere.
            self.retry_elsewhere(ei);
            return;
        }
        match result {
            TxResult::Written(n) => {
                let n = n.min(asked);
                self.advance(ei, conn, n);
                let e = match self.ep_mut(ep) {
                    Some(e) => e,
                    None => return,
                };
                let drained = !e.tx.queue.front().is_some_and(|m| m.compatible(conn));
                if drained {
                    self.release_reservation(ei);
                    self.kick_tx(ei);
                } else if n >= asked || std::mem::take(&mut e.tx.space_while_writing) {
                    self.events.push_back(Event::TxReady(ep));
                } else {
                    // The socket is full; the runtime calls write_space() later.
                    self.socket_full(ei);
                }
            }
            TxResult::WouldBlock => {
                if let Some(e) = self.ep_mut(ep) {
                    if std::mem::take(&mut e.tx.space_while_writing) {
                        self.events.push_back(Event::TxReady(ep));
                    } else {
                        self.socket_full(ei);
                    }
                }
            }
            TxResult::Failed => self.tx_failed(ei, conn),
        }
    }

    /// The connection has write space again: its reserving endpoint may continue.
    pub fn write_space(&mut self, conn: ConnectionId) {
        self.backlog_write_space(conn);
        if let Some(owner) = self.conn(conn).and_then(|c| c.tx_reserved_by) {
            if let Some(e) = self.eps.get_mut(owner as usize).and_then(Option::as_mut) {
                e.tx.space_wait = false;
                // A write under way may already have failed to find this space (see
                // `space_while_writing`); its report then asks for another try.
                e.tx.space_while_writing |= e.tx.writing.is_some();
            }
            self.events.push_back(Event::TxReady(EndpointId(owner)));
        }
    }

    /// The endpoint holding the connection's transmit reservation.
    pub fn tx_reserved_by(&self, conn: ConnectionId) -> Option<EndpointId> {
        self.conn(conn)
            .and_then(|c| c.tx_reserved_by)
            .map(EndpointId)
    }

    /// Messages and bytes queued for transmit on the endpoint.
    pub fn tx_queued(&self, ep: EndpointId) -> Option<(usize, usize)> {
        self.ep(ep).map(|e| (e.tx.queued_msgs, e.tx.queued_bytes))
    }

    /// Whether a new message could be queued on the endpoint now without blocking.
    pub fn can_send(&self, ep: EndpointId) -> bool {
        self.ep(ep).is_some_and(|e| {
            e.pending_err.is_some() || e.tx.open.is_some() || e.tx.queued_bytes < e.tx.sndbuf
        })
    }

    fn advance(&mut self, ei: u32, conn: ConnectionId, n: usize) {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return;
        };
        let (msgs, bytes) = queue::advance(&mut e.tx, n);
        if e.tx.unblock() {
            self.events.push_back(Event::Writable(EndpointId(ei)));
        }
        self.count_written(conn, msgs, bytes);
    }

    /// Counts messages and bytes written on a connection, for it and for the mux.
    fn count_written(&mut self, conn: ConnectionId, msgs: u64, bytes: u64) {
        self.stats.tx_msgs += msgs;
        self.stats.tx_bytes += bytes;
        if let Some(c) = self.conn_mut(conn) {
            c.stats.tx.tx_msgs += msgs;
            c.stats.tx.tx_bytes += bytes;
        }
    }

    /// A hard write failure (§5.5): the connection stops transmitting for good, the message is
    /// retried from byte 0 on another connection.
    fn tx_failed(&mut self, ei: u32, conn: ConnectionId) {
        self.abort_conn_tx(conn.index);
        self.retry_elsewhere(ei);
    }

    /// Marks a connection transmit-dead: EPIPE posted, `tx_aborts` counted, no more
    /// reservations; endpoints waiting for it specifically are re-scheduled.
    pub(super) fn abort_conn_tx(&mut self, ci: u32) {
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return;
        };
        if !c.tx_stopped {
            c.tx_stopped = true;
            c.stats.tx.tx_aborts += 1;
            self.events.push_back(Event::ConnError(c.id, errno::EPIPE));
        }
        c.tx_avail = false;
        let writing = c.backlog.as_ref().is_some_and(|b| b.writing.is_some());
        self.tx_avail.remove(ci);
        self.abort_waiters(ci);
        // A backlog being written goes when the write is reported (handle_conn_transmit).
        if !writing {
            self.drop_backlog(ci);
        }
    }

    /// Re-schedules the endpoints waiting for this connection specifically; their addressed
    /// messages are dropped by [`MuxCore::kick_tx`].
    pub(super) fn abort_waiters(&mut self, ci: u32) {
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return;
        };
        let waiters = std::mem::take(&mut c.addr_waiters);
        for w in waiters {
            if let Some(e) = self.eps.get_mut(w as usize).and_then(Option::as_mut) {
                e.tx.waiting = false;
            }
            self.kick_tx(w);
        }
    }

    /// The endpoint lost its reservation under it: rewind its head message, count a retry
    /// and look for another connection. (A head message addressed to the lost connection is
    /// not retried but dropped by [`MuxCore::kick_tx`], counted in `tx_addr_drops`.)
    pub(super) fn retry_elsewhere(&mut self, ei: u32) {
        let Some(e) = self.eps.get(ei as usize).and_then(Option::as_ref) else {
            return;
        };
        let lost =
            e.tx.reserved
                .and_then(|ci| self.conns.get(ci as usize)?.as_ref())
                .map(|c| c.id);
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(m) = e.tx.queue.front_mut() {
            // (Messages of a run that were written completely left it as they were written.)
            m.sent = 0;
            if m.target.is_none() || m.target != lost {
                self.stats.tx_retries += 1;
            }
        }
        self.release_reservation(ei);
        self.kick_tx(ei);
    }

    fn release_reservation(&mut self, ei: u32) {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return;
        };
        e.tx.space_wait = false;
        if let Some(ci) = e.tx.reserved.take() {
            if let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) {
                c.stats.tx.unreserved += 1;
            }
            self.release_conn(ci);
        }
    }

    /// A connection nobody holds any more: freed if unattached, else handed to the first
    /// endpoint waiting for it (addressed first, then any), else appended to the available
    /// FIFO (§5.3).
    pub(super) fn release_conn(&mut self, ci: u32) {
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return;
        };
        c.tx_reserved_by = None;
        if c.done {
            self.free_conn(ci);
            return;
        }
        if c.tx_stopped {
            return;
        }
        let next = c
            .addr_waiters
            .pop_front()
            .or_else(|| self.tx_waiting.pop_front());
        match next {
            Some(w) => self.reserve_conn(w, ci),
            None => {
                let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
                    return;
                };
                if !c.tx_avail {
                    c.tx_avail = true;
                    self.tx_avail.push_back(ci);
                }
            }
        }
    }

    fn reserve_conn(&mut self, ei: u32, ci: u32) {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            // The waiter is gone; give the connection to the next one.
            self.release_conn(ci);
            return;
        };
        e.tx.reserved = Some(ci);
        e.tx.space_wait = false;
        // A waiting endpoint is on one waiter list, the one its head message's destination
        // names (`kick_tx` puts it there and nowhere else; the mux tests check it), and only
        // `release_conn` reserves for a waiting endpoint, after taking it off that list. (The
        // lists were scanned here for it, every connection's: O(connections) per wait.)
        let was_waiting = std::mem::replace(&mut e.tx.waiting, false);
        debug_assert!(
            !was_waiting || !self.on_a_waiter_list(ei),
            "endpoint {ei} reserved a connection while still on a waiter list"
        );
        let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            return;
        };
        c.tx_reserved_by = Some(ei);
        c.stats.tx.reserved += 1;
        if std::mem::replace(&mut c.tx_avail, false) {
            // Out of the middle of the FIFO in O(1), however many connections wait in it.
            self.tx_avail.remove(ci);
        }
        self.events.push_back(Event::TxReady(EndpointId(ei)));
    }

    /// Whether endpoint `ei` is on the waiter list its head message's destination names
    /// (debug checks only: it looks through that list).
    fn on_a_waiter_list(&self, ei: u32) -> bool {
        let head = self
            .eps
            .get(ei as usize)
            .and_then(Option::as_ref)
            .and_then(|e| e.tx.queue.front());
        match head.and_then(|m| m.target) {
            Some(t) => self.conn(t).is_some_and(|c| c.addr_waiters.contains(&ei)),
            None => self.tx_waiting.contains(&ei),
        }
    }

    /// Makes sure an endpoint with queued messages is transmitting or waiting for a
    /// connection (the kernel's `kcm_write_msgs` entry / `reserve_psock`).
    pub(super) fn kick_tx(&mut self, ei: u32) {
        loop {
            let Some(e) = self.eps.get(ei as usize).and_then(Option::as_ref) else {
                return;
            };
            if e.tx.wait_more {
                return;
            }
            let Some(head) = e.tx.queue.front() else {
                return;
            };
            if e.tx.reserved.is_some() {
                if e.tx.writing.is_none() {
                    self.events.push_back(Event::TxReady(EndpointId(ei)));
                }
                return;
            }
            if e.tx.waiting {
                return;
            }
            match head.target {
                None => {
                    while let Some(ci) = self.tx_avail.pop_front() {
                        let ok = self
                            .conns
                            .get_mut(ci as usize)
                            .and_then(Option::as_mut)
                            .is_some_and(|c| {
                                c.tx_avail = false;
                                !c.tx_stopped && !c.done
                            });
                        if ok {
                            self.reserve_conn(ei, ci);
                            return;
                        }
                    }
                    // No connection: wait (messages queue until one is attached, §5.3).
                    if let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) {
                        e.tx.waiting = true;
                    }
                    self.tx_waiting.push_back(ei);
                    return;
                }
                Some(t) => {
                    let Some(c) = self.conn(t).filter(|c| !c.done && !c.tx_stopped) else {
                        // Its connection failed or went away: the message cannot be delivered.
                        self.drop_head(ei);
                        continue;
                    };
                    if c.backlog.is_some() {
                        // The connection is full and others' messages wait for it there:
                        // this one joins them and the endpoint goes on (backlog.rs).
                        self.join_backlog(ei, t);
                        continue;
                    }
                    if c.tx_avail {
                        self.reserve_conn(ei, t.index);
                    } else {
                        if let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) {
                            e.tx.waiting = true;
                        }
                        if let Some(c) = self.conn_mut(t) {
                            c.addr_waiters.push_back(ei);
                        }
                    }
                    return;
                }
            }
        }
    }

    fn drop_head(&mut self, ei: u32) {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return;
        };
        let dropped = e.tx.pop_head();
        if dropped > 0 {
            self.stats.tx_addr_drops += dropped as u64;
            if e.tx.unblock() {
                self.events.push_back(Event::Writable(EndpointId(ei)));
            }
        }
    }
}

#[cfg(test)]
mod transmit_regressions {
    use super::*;

    fn events(mux: &mut MuxCore) -> Vec<Event> {
        std::iter::from_fn(|| mux.poll_event()).collect()
    }

    /// Regression: write space reported while a write was under way was lost when that write
    /// then came back short (found the socket full), so the transmit stalled for good: the
    /// runtime's readiness is edge-triggered and the kernel reports the space only once.
    #[test]
    fn write_space_during_a_write_that_comes_back_short_asks_for_another_try() {
        for short in [TxResult::Written(10), TxResult::WouldBlock] {
            let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("a mux");
            let conn = mux.attach();
            mux.send(ep, Bytes::from(vec![1u8; 100]), SendFlags::default(), None)
                .expect("send");
            let tx = mux.poll_transmit(ep).expect("a transmit");
            events(&mut mux);
            // The socket drains while the runtime is still inside its write call...
            mux.write_space(conn);
            assert!(mux.poll_transmit(ep).is_none(), "one transmit at a time");
            events(&mut mux);
            // ... and that write reports a full socket: nothing else will say "space" again.
            mux.handle_transmit(ep, tx.conn, short);
            assert!(
                events(&mut mux).contains(&Event::TxReady(ep)),
                "{short:?}: stalled"
            );
            assert!(mux.poll_transmit(ep).is_some(), "{short:?}");
        }
    }

    /// Regression: a transmit of more slices than one `writev` takes was cut short by the
    /// runtime, taken for a full socket, and never resumed (`tests/send.rs`,
    /// `a_batch_of_messages_built_from_many_parts_is_written_completely`).
    #[test]
    fn a_transmit_never_has_more_slices_than_one_vectored_write_takes() {
        let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("a mux");
        mux.attach();
        let more = SendFlags {
            more: true,
            ..SendFlags::default()
        };
        // Parts too big to be coalesced: each needs an iovec of its own.
        let part = Bytes::from(vec![7u8; COALESCE_MAX + 1]);
        for _ in 0..1500 {
            mux.send(ep, part.clone(), more, None).expect("send");
        }
        mux.send(ep, Bytes::new(), SendFlags::default(), None)
            .expect("end the message");
        let tx = mux.poll_transmit(ep).expect("a transmit");
        assert_eq!(tx.bufs.len(), MAX_TX_SLICES);
        assert_eq!(tx.len, part.len() * MAX_TX_SLICES);
        events(&mut mux);
        mux.handle_transmit(ep, tx.conn, TxResult::Written(tx.len));
        assert!(
            events(&mut mux).contains(&Event::TxReady(ep)),
            "the rest must follow at once"
        );
        let rest = mux.poll_transmit(ep).expect("the rest");
        assert_eq!(
            (rest.bufs.len(), rest.len),
            (
                1500 - MAX_TX_SLICES,
                (COALESCE_MAX + 1) * (1500 - MAX_TX_SLICES)
            )
        );
    }

    /// Sends `msgs` as one batch of copies and returns the transmit that carries them.
    fn transmit_of(mux: &mut MuxCore, ep: EndpointId, msgs: &[&[u8]]) -> Transmit {
        let mut batch = super::SendBatch::new();
        for m in msgs {
            batch.push(m);
        }
        assert_eq!(mux.send_runs(ep, &mut batch).0, msgs.len());
        let tx = mux.poll_transmit(ep).expect("a transmit");
        assert_eq!(tx.bufs.len(), 1, "one run");
        events(mux);
        tx
    }

    /// A written run's buffer serves a later run (`queue::SpareRuns`), but only once nothing
    /// holds a view of it: a transmit still held elsewhere keeps its bytes.
    #[test]
    fn a_written_runs_buffer_is_reused_only_once_nobody_holds_it() {
        let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("a mux");
        mux.attach();
        let tx = transmit_of(&mut mux, ep, &[b"one", b"two"]);
        let first = tx.bufs[0].as_ptr();
        // Someone still holds the transmit's bytes (a runtime that did not let them go).
        let held = tx.bufs.clone();
        mux.handle_transmit(ep, tx.conn, TxResult::Written(tx.len));
        mux.recycle(tx);
        let tx = transmit_of(&mut mux, ep, &[b"THREE", b"FOUR"]);
        assert_ne!(tx.bufs[0].as_ptr(), first, "a held buffer was reused");
        assert_eq!(&held[0][..], b"onetwo");
        assert_eq!(&tx.bufs[0][..], b"THREEFOUR");
        let second = tx.bufs[0].as_ptr();
        // Let go of as the runtime does, before the report: this buffer comes back for the
        // next run.
        let mut tx = tx;
        tx.bufs.clear();
        mux.handle_transmit(ep, tx.conn, TxResult::Written(tx.len));
        mux.recycle(tx);
        // Were the buffer freed, the allocator would likely hand the same block back and
        // the check below would pass anyway: these take any such freed block first.
        let squat: Vec<Vec<u8>> = (16..=64).map(Vec::with_capacity).collect();
        let tx = transmit_of(&mut mux, ep, &[b"five", b"six"]);
        drop(squat);
        assert_eq!(
            tx.bufs[0].as_ptr(),
            second,
            "the written run's buffer, not a new one"
        );
        assert_eq!(&tx.bufs[0][..], b"fivesix");
        assert_eq!(&held[0][..], b"onetwo");
    }

    #[test]
    fn a_short_write_without_write_space_waits_for_it() {
        let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("a mux");
        let conn = mux.attach();
        mux.send(ep, Bytes::from(vec![1u8; 100]), SendFlags::default(), None)
            .expect("send");
        let tx = mux.poll_transmit(ep).expect("a transmit");
        events(&mut mux);
        mux.handle_transmit(ep, tx.conn, TxResult::Written(10));
        assert!(
            !events(&mut mux).contains(&Event::TxReady(ep)),
            "would spin on a full socket"
        );
        mux.write_space(conn);
        assert!(events(&mut mux).contains(&Event::TxReady(ep)));
    }
}
