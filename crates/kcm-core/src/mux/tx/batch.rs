//! `sendmmsg`: many whole messages in one call, with the per-call work done once.
//!
//! [`MuxCore::send`] checks the endpoint, its pending error and open message, the addressed
//! connection and the send buffer on every call. A server answering a batch of pipelined
//! requests sends dozens of small whole messages at a time, mostly to the same connection, and
//! for it those checks were a good part of the cost of a reply; here each is done once per
//! batch, or once per change of destination.

use bytes::Bytes;

use super::send_batch::{Iter, Outgoing, SendBatch};
use super::{Parts, SendError, SendFlags, COALESCE_MAX};
use crate::mux::{ConnectionId, EndpointId, MuxCore};

/// The bytes of one message for [`MuxCore::send_batch`]: [`Bytes`] are queued without a copy
/// (small ones are still copied together into one buffer), a borrowed slice is copied, as the
/// kernel's `sendmsg` copies what it is given. A small reply built on the stack costs no
/// allocation and no reference count this way.
pub trait MsgData: AsRef<[u8]> {
    /// Whether the bytes can be shared rather than copied.
    fn is_shared(&self) -> bool;
    /// The message as [`Bytes`] (a copy unless [`MsgData::is_shared`]).
    fn into_bytes(self) -> Bytes;
}

impl MsgData for Bytes {
    fn is_shared(&self) -> bool {
        true
    }
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl MsgData for &[u8] {
    fn is_shared(&self) -> bool {
        false
    }
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> MsgData for &[u8; N] {
    fn is_shared(&self) -> bool {
        false
    }
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl MsgData for Vec<u8> {
    fn is_shared(&self) -> bool {
        true
    }
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

/// A message [`MuxCore::send_batch`] did not accept, handed back with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why it was refused (nothing of it was queued).
    pub error: SendError,
    /// The connection it was addressed to.
    pub target: Option<ConnectionId>,
    /// The message itself.
    pub data: Bytes,
}

impl Refused {
    fn new(error: SendError, target: Option<ConnectionId>, data: impl MsgData) -> Refused {
        Refused {
            error,
            target,
            data: data.into_bytes(),
        }
    }
}

impl MuxCore {
    /// Sends whole messages from `msgs` until it is exhausted or one is refused, exactly as
    /// [`MuxCore::send`] with end-of-record would send them one by one, every one but the
    /// last with `MSG_BATCH` (`sendmmsg`). Returns how many were accepted and the refused
    /// message, if one was; the rest stay in `msgs`. Once it returns, the accepted messages
    /// are being transmitted (no `MSG_BATCH` is left pending), unless the only thing that
    /// happened was the refusal of the first message for a reason other than a full buffer.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kcm_core::mux::{Kind, MuxCore, SendError};
    ///
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// let conn = mux.attach();
    /// let gone = mux.attach();
    /// mux.unattach(gone, Default::default()).unwrap();
    /// let mut msgs = vec![
    ///     (Some(conn), Bytes::from_static(b"one")),
    ///     (Some(conn), Bytes::from_static(b"two")),
    ///     (Some(gone), Bytes::from_static(b"lost")),
    ///     (Some(conn), Bytes::from_static(b"left")),
    /// ]
    /// .into_iter();
    /// let (accepted, refused) = mux.send_batch(ep, &mut msgs);
    /// assert_eq!(accepted, 2);
    /// let refused = refused.unwrap();
    /// assert_eq!((refused.error, &refused.data[..]), (SendError::NotConnected, &b"lost"[..]));
    /// assert_eq!(msgs.count(), 1, "the rest is left to the caller");
    /// let tx = mux.poll_transmit(ep).unwrap();
    /// assert_eq!(tx.len, 6);
    /// ```
    pub fn send_batch<I, D>(&mut self, ep: EndpointId, msgs: &mut I) -> (usize, Option<Refused>)
    where
        I: Iterator<Item = (Option<ConnectionId>, D)>,
        D: MsgData,
    {
        self.send_from(ep, &mut Iter(msgs))
    }

    /// [`MuxCore::send_batch`] for the messages of a [`SendBatch`], exactly as if they were
    /// given one by one as borrowed slices, in order: the same acceptance, refusals, counters
    /// and bytes on the wire, but a connection's messages are checked with a few comparisons
    /// each and copied into the queue together. The accepted messages leave the batch; a
    /// refused one stays at its front, and so do the rest ([`Refused`] holds a copy of it,
    /// with the reason and its destination).
    ///
    /// ```
    /// use kcm_core::mux::{Kind, MuxCore, SendBatch, SendError};
    ///
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// let conn = mux.attach();
    /// let gone = mux.attach();
    /// mux.unattach(gone, Default::default()).unwrap();
    /// let mut batch = SendBatch::new();
    /// batch.push_to(conn, b"one");
    /// batch.push_to(gone, b"lost");
    /// batch.push_to(conn, b"two");
    /// let (accepted, refused) = mux.send_runs(ep, &mut batch);
    /// let refused = refused.unwrap();
    /// assert_eq!((accepted, refused.error, refused.target), (1, SendError::NotConnected, Some(gone)));
    /// assert_eq!(batch.front(), Some(&b"lost"[..]), "the refused message is left, and the rest");
    /// batch.skip(1);
    /// assert_eq!(mux.send_runs(ep, &mut batch), (1, None));
    /// ```
    pub fn send_runs(&mut self, ep: EndpointId, batch: &mut SendBatch) -> (usize, Option<Refused>) {
        let mut cursor = batch.cursor();
        let (sent, refused) = self.send_from(ep, &mut cursor);
        // The refused message was taken from the cursor; it stays in the batch.
        let taken = cursor.next - usize::from(refused.is_some());
        batch.advance(taken);
        (sent, refused)
    }

    fn send_from<S: Outgoing>(&mut self, ep: EndpointId, msgs: &mut S) -> (usize, Option<Refused>) {
        let batched = SendFlags {
            eor: true,
            batch: true,
            more: false,
        };
        let mut sent = 0;
        let mut refused = None;
        // The last destination found attached and able to transmit: nothing can change that
        // while this call holds the mux.
        let mut usable: Option<ConnectionId> = None;
        // A message the run loop below took from `msgs` but left to the checks.
        let mut pending = None;
        while let Some((target, data)) = pending.take().or_else(|| msgs.next_msg()) {
            let len = data.as_ref().len();
            // Checked before the endpoint's own state, which the general path reports first.
            let target_err = match target {
                Some(t) if usable != Some(t) => match self.conn(t) {
                    None => Some(SendError::NotConnected),
                    Some(c) if c.done => Some(SendError::NotConnected),
                    Some(c) if c.tx_stopped => Some(SendError::ConnectionDead),
                    // Its backlog is full: only this connection refuses (backlog.rs).
                    Some(c) if c.backlog_full() => Some(SendError::WouldBlock),
                    Some(_) => {
                        usable = Some(t);
                        None
                    }
                },
                _ => None,
            };
            let Some(e) = self.ep_mut(ep) else {
                refused = Some(Refused::new(SendError::NoEndpoint, target, data));
                break;
            };
            if e.pending_err.is_some() || e.tx.open.is_some() || len == 0 {
                // A pending error to report, an open message to complete, an empty send:
                // the general path says what happens.
                let data = data.into_bytes();
                match self.send(ep, data.clone(), batched, target) {
                    Ok(_) => {
                        sent += 1;
                        continue;
                    }
                    Err(error) => {
                        refused = Some(Refused::new(error, target, data));
                        break;
                    }
                }
            }
            let full = target_err.is_none() && e.tx.queued_bytes >= e.tx.sndbuf;
            // A full buffer may be full of messages for a connection that is full too: they
            // step aside for this one (backlog.rs).
            let error = if full && !self.make_room(ep.0, target) {
                if let Some(e) = self.ep_mut(ep) {
                    e.tx.blocked = true;
                }
                Some(SendError::WouldBlock)
            } else {
                target_err
            };
            if let Some(error) = error {
                refused = Some(Refused::new(error, target, data));
                break;
            }
            let Some(e) = self.ep_mut(ep) else {
                refused = Some(Refused::new(SendError::NoEndpoint, target, data));
                break;
            };
            e.stats.tx_bytes += len as u64;
            e.stats.tx_msgs += 1;
            e.tx.wait_more = true;
            sent += 1;
            if len > COALESCE_MAX || data.is_shared() {
                e.tx.enqueue(Parts::One(data.into_bytes()), len, target);
                continue;
            }
            e.tx.enqueue_copy(data.as_ref(), target);
            // A pipelining server's replies come in runs for one destination. What the checks
            // above found cannot change while this call holds the mux, except the buffer
            // filling: the messages after this one for the same destination only need room
            // there and in the run at the tail (about a third of the cost of a small reply).
            let (n, bytes, rest) = msgs.extend_tail(&mut e.tx, target);
            e.stats.tx_bytes += bytes as u64;
            e.stats.tx_msgs += n as u64;
            sent += n;
            pending = rest;
        }
        // The last message went without MSG_BATCH, or a full buffer flushes the batch before
        // the caller blocks (§2.2); after another refusal, what was accepted goes out too.
        let flush = match &refused {
            None => true,
            Some(r) => sent > 0 || r.error == SendError::WouldBlock,
        };
        if flush {
            if let Some(e) = self.ep_mut(ep) {
                e.tx.wait_more = false;
                self.kick_tx(ep.0);
            }
        }
        (sent, refused)
    }
}
