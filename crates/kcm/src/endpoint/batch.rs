//! [`RecvBatch`]: messages received in the runs they arrived in ([`Endpoint::recv_runs`]).
//!
//! A pipelined read pass brings dozens of small messages back to back in one buffer. Handing
//! each over as its own `Bytes` ([`Endpoint::recv_batch`]) costs an atomic reference count
//! taken and dropped, and a 40-byte move, per message; for a server that only reads each
//! request and answers it, that is a large part of its user-space work. A batch keeps the
//! runs (one buffer and the messages' lengths each) and lends the messages out as slices.

use bytes::Bytes;
use kcm_core::mux::{ConnectionId, EndpointId, MuxCore};
use kcm_core::{MsgRun, RunMessage};

use super::Message;

/// Messages taken by [`Endpoint::recv_runs`](super::Endpoint::recv_runs), in the order they
/// were received, kept as the runs they arrived in.
///
/// Reuse one batch across calls ([`RecvBatch::clear`] keeps its capacity). Its messages hold
/// their read buffers until the batch is cleared or dropped; take a message's
/// [`BatchMessage::to_bytes`] to keep it longer without a copy.
#[derive(Debug, Default)]
pub struct RecvBatch {
    runs: Vec<(ConnectionId, MsgRun)>,
    msgs: usize,
}

/// One message of a [`RecvBatch`], borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct BatchMessage<'a> {
    /// The whole message, as [`Message::data`] would hold it (with its framing header, unless
    /// the parser strips a prefix).
    pub data: &'a [u8],
    /// The connection it arrived on.
    pub conn: ConnectionId,
    msg: RunMessage<'a>,
}

impl BatchMessage<'_> {
    /// The message as its own `Bytes`: a zero-copy slice of its read buffer, the same one
    /// [`Endpoint::recv_batch`](super::Endpoint::recv_batch) would have given.
    pub fn to_bytes(&self) -> Bytes {
        self.msg.to_bytes()
    }

    /// The message as a [`Message`] of its own (see [`BatchMessage::to_bytes`]).
    pub fn to_message(&self) -> Message {
        Message {
            data: self.to_bytes(),
            conn: self.conn,
        }
    }
}

impl RecvBatch {
    /// An empty batch.
    ///
    /// ```
    /// let batch = kcm::RecvBatch::new();
    /// assert!(batch.is_empty());
    /// ```
    pub fn new() -> RecvBatch {
        RecvBatch::default()
    }

    /// The number of messages held.
    pub fn len(&self) -> usize {
        self.msgs
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.msgs == 0
    }

    /// Drops every message (and with the last reference, their read buffers), keeping the
    /// batch's own capacity for the next call.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.msgs = 0;
    }

    /// The messages, in the order they were received, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = BatchMessage<'_>> + '_ {
        self.runs.iter().flat_map(|(conn, run)| {
            run.iter().map(move |msg| BatchMessage {
                data: msg.data(),
                conn: *conn,
                msg,
            })
        })
    }

    /// Every message as a [`Message`] of its own, in order, leaving the batch empty.
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.msgs = 0;
        self.runs
            .drain(..)
            .flat_map(|(conn, run)| run.into_messages().map(move |data| Message { data, conn }))
    }
}

/// Where a batch receive puts what it takes: a `Vec` of messages, or a [`RecvBatch`].
pub(crate) trait BatchSink {
    /// The first message, which the caller waited for.
    fn push_one(&mut self, m: Message);
    /// Up to `max` more, off the endpoint's queue (the lock is held).
    fn take(&mut self, core: &mut MuxCore, ep: EndpointId, max: usize) -> usize;
}

impl BatchSink for Vec<Message> {
    fn push_one(&mut self, m: Message) {
        self.push(m);
    }

    fn take(&mut self, core: &mut MuxCore, ep: EndpointId, max: usize) -> usize {
        core.recv_many(ep, max, |data, conn| self.push(Message { data, conn }))
    }
}

impl BatchSink for RecvBatch {
    fn push_one(&mut self, m: Message) {
        self.msgs += 1;
        self.runs.push((m.conn, MsgRun::one(m.data)));
    }

    fn take(&mut self, core: &mut MuxCore, ep: EndpointId, max: usize) -> usize {
        let n = core.recv_runs(ep, max, |conn, run| self.runs.push((conn, run)));
        self.msgs += n;
        n
    }
}
