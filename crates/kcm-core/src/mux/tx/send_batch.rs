//! [`SendBatch`]: small messages written back to back, grouped by destination, for
//! [`MuxCore::send_runs`](crate::mux::MuxCore::send_runs).
//!
//! A pipelining server answers dozens of requests per read pass, and its replies for one
//! connection end up copied back to back into one run of the send queue anyway. Handed over
//! one by one ([`MuxCore::send_batch`](crate::mux::MuxCore::send_batch)) each reply still
//! costs an iterator step, its own size checks and a small copy; written into a batch that
//! already holds them back to back, a connection's replies are checked with a few
//! comparisons each and copied into the queue in one piece. It is the sending counterpart of
//! a receive that keeps its runs (`kcm`'s `RecvBatch`).

use super::queue::EpTx;
use super::queue::COALESCE_MAX;
use super::{ConnectionId, MsgData};

/// Whole messages to send, in order, written back to back into one buffer and grouped by
/// destination as they come (consecutive messages for the same connection form one group).
///
/// Reuse one batch across calls: once every message it holds was accepted it is emptied,
/// keeping its capacity. A send that accepts only some of them (a full send buffer, a
/// connection gone) leaves the rest at the front, in order, for the next call.
///
/// ```
/// use kcm_core::mux::{Kind, MuxCore, SendBatch};
///
/// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
/// let conn = mux.attach();
/// let mut batch = SendBatch::new();
/// batch.push_to(conn, b"\0\0\0\x01a");
/// batch.slot_to(conn, 5).copy_from_slice(b"\0\0\0\x01b");
/// assert_eq!(batch.len(), 2);
/// assert_eq!(mux.send_runs(ep, &mut batch), (2, None));
/// assert!(batch.is_empty());
/// assert_eq!(mux.poll_transmit(ep).unwrap().len, 10);
/// ```
#[derive(Debug, Default, Clone)]
pub struct SendBatch {
    /// Every message, back to back.
    bytes: Vec<u8>,
    /// Where message `i` ends in `bytes`.
    ends: Vec<usize>,
    /// The groups, in order.
    groups: Vec<Group>,
    /// Messages at the front already accepted (or skipped).
    done: usize,
    /// The group that holds message `done`.
    group: usize,
}

impl SendBatch {
    /// An empty batch.
    ///
    /// ```
    /// assert!(kcm_core::mux::SendBatch::new().is_empty());
    /// ```
    pub fn new() -> SendBatch {
        SendBatch::default()
    }

    /// Adds a whole message for any connection (connected mode: the mux picks one, as for an
    /// unaddressed send).
    #[inline]
    pub fn push(&mut self, msg: &[u8]) {
        self.push_for(None, msg);
    }

    /// Adds a whole message for `conn` (addressed mode).
    #[inline]
    pub fn push_to(&mut self, conn: ConnectionId, msg: &[u8]) {
        self.push_for(Some(conn), msg);
    }

    /// (Copied in, not through a zeroed slot: the bytes are written once.)
    #[inline]
    fn push_for(&mut self, target: Option<ConnectionId>, msg: &[u8]) {
        self.bytes.extend_from_slice(msg);
        self.close(target, msg.len());
    }

    /// Adds a message of `len` zero bytes for `conn` and returns it to be filled in: a reply
    /// written in place, with no buffer of its own to copy from.
    #[inline]
    pub fn slot_to(&mut self, conn: ConnectionId, len: usize) -> &mut [u8] {
        self.slot_for(Some(conn), len)
    }

    /// [`SendBatch::slot_to`] for a message to any connection.
    #[inline]
    pub fn slot(&mut self, len: usize) -> &mut [u8] {
        self.slot_for(None, len)
    }

    #[inline]
    fn slot_for(&mut self, target: Option<ConnectionId>, len: usize) -> &mut [u8] {
        let start = self.bytes.len();
        self.bytes.resize(start + len, 0);
        self.close(target, len);
        &mut self.bytes[start..]
    }

    /// Ends the message of `len` bytes just appended.
    #[inline]
    fn close(&mut self, target: Option<ConnectionId>, len: usize) {
        self.ends.push(self.bytes.len());
        let end = self.ends.len();
        let small = len.wrapping_sub(1) < COALESCE_MAX;
        match self.groups.last_mut() {
            Some(g) if g.target == target => {
                g.end = end;
                g.small &= small;
            }
            _ => self.groups.push(Group { target, end, small }),
        }
    }

    /// The number of messages not yet sent.
    pub fn len(&self) -> usize {
        self.ends.len() - self.done
    }

    /// Whether every message was sent (or none was added).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next message not yet sent (the one a send refused, after a refusal).
    ///
    /// ```
    /// let mut batch = kcm_core::mux::SendBatch::new();
    /// batch.push(b"first");
    /// batch.push(b"second");
    /// assert_eq!(batch.front(), Some(&b"first"[..]));
    /// ```
    pub fn front(&self) -> Option<&[u8]> {
        self.msg(self.done)
    }

    /// Bytes of the messages not yet sent.
    pub fn pending_bytes(&self) -> usize {
        self.bytes.len() - self.start(self.done)
    }

    /// Drops every message, sent or not, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.groups.clear();
        self.done = 0;
        self.group = 0;
    }

    /// Drops the next `n` unsent messages (all that are left if fewer): for instance one that
    /// a send refused because its connection is gone, to go on with the others.
    ///
    /// ```
    /// let mut batch = kcm_core::mux::SendBatch::new();
    /// batch.push(b"a");
    /// batch.push(b"b");
    /// batch.skip(1);
    /// assert_eq!((batch.len(), batch.pending_bytes()), (1, 1));
    /// ```
    pub fn skip(&mut self, n: usize) {
        self.advance(self.done + n.min(self.len()));
    }

    /// Marks the messages before `done` as taken; empties the batch once all are. Once the
    /// taken ones hold half its bytes they are dropped, the rest moved to the front: a batch
    /// that is never sent whole (a connection that keeps refusing while more are added) holds
    /// at most twice what is unsent, not everything it ever held.
    pub(crate) fn advance(&mut self, done: usize) {
        if done >= self.ends.len() {
            self.clear();
            return;
        }
        self.done = done;
        self.group = self.group_of(done, self.group);
        let cut = self.start(done);
        // (Counted in messages too: taken empty messages hold no bytes but an end each.)
        if done > 0 && (cut >= self.bytes.len() / 2 || done >= self.ends.len() / 2) {
            self.bytes.drain(..cut);
            self.ends.drain(..done);
            for end in &mut self.ends {
                *end -= cut;
            }
            self.groups.drain(..self.group);
            for g in &mut self.groups {
                g.end -= done;
            }
            self.done = 0;
            self.group = 0;
        }
    }

    /// The group that holds message `i`, looking from group `from` on.
    fn group_of(&self, i: usize, mut from: usize) -> usize {
        while self.groups[from].end <= i {
            from += 1;
        }
        from
    }

    /// Message `i`, if there is one.
    fn msg(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        Some(&self.bytes[self.start(i)..end])
    }

    /// Where message `i` starts in `bytes`.
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.ends[i - 1],
        }
    }

    /// A reader of the unsent messages, for one send call.
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor {
            b: self,
            next: self.done,
            group: self.group,
        }
    }
}

/// Consecutive messages for one destination.
#[derive(Debug, Clone, Copy)]
struct Group {
    target: Option<ConnectionId>,
    /// The index just past its last message.
    end: usize,
    /// Every message of it is small enough to be copied into a run (1 to `COALESCE_MAX`
    /// bytes): then whether all of them fit in one is a question of their total.
    small: bool,
}

/// The messages a send call takes: an iterator of (destination, data), or a [`SendBatch`].
pub(crate) trait Outgoing {
    type Data: MsgData;
    /// The next message, taken.
    fn next_msg(&mut self) -> Option<(Option<ConnectionId>, Self::Data)>;
    /// Copies the messages that come next for `target` onto the run at `tx`'s tail while
    /// they fit (`EpTx::extend_tail_run`); returns how many, their bytes, and a message taken
    /// that did not fit, if one was.
    #[allow(clippy::type_complexity)]
    fn extend_tail(
        &mut self,
        tx: &mut EpTx,
        target: Option<ConnectionId>,
    ) -> (usize, usize, Option<(Option<ConnectionId>, Self::Data)>);
}

/// An iterator of messages as an [`Outgoing`].
pub(crate) struct Iter<'a, I>(pub(crate) &'a mut I);

impl<I, D> Outgoing for Iter<'_, I>
where
    I: Iterator<Item = (Option<ConnectionId>, D)>,
    D: MsgData,
{
    type Data = D;

    #[inline]
    fn next_msg(&mut self) -> Option<(Option<ConnectionId>, D)> {
        self.0.next()
    }

    #[inline]
    fn extend_tail(
        &mut self,
        tx: &mut EpTx,
        target: Option<ConnectionId>,
    ) -> (usize, usize, Option<(Option<ConnectionId>, D)>) {
        tx.extend_tail_run(target, self.0)
    }
}

/// The unsent messages of a [`SendBatch`], read from the front.
pub(crate) struct Cursor<'a> {
    b: &'a SendBatch,
    /// The next message.
    pub(crate) next: usize,
    /// The group that holds it.
    group: usize,
}

impl<'a> Outgoing for Cursor<'a> {
    type Data = &'a [u8];

    fn next_msg(&mut self) -> Option<(Option<ConnectionId>, &'a [u8])> {
        let b = self.b;
        let data = b.msg(self.next)?;
        self.group = b.group_of(self.next, self.group);
        self.next += 1;
        Some((b.groups[self.group].target, data))
    }

    fn extend_tail(
        &mut self,
        tx: &mut EpTx,
        target: Option<ConnectionId>,
    ) -> (usize, usize, Option<(Option<ConnectionId>, &'a [u8])>) {
        // Only the rest of the group of the message just taken has the same destination
        // (`target` is that message's: the group's).
        let g = self.b.groups[self.group];
        debug_assert_eq!(g.target, target);
        if self.next >= g.end {
            return (0, 0, None);
        }
        let b = self.b;
        let (n, bytes) = tx.extend_tail_bulk(
            target,
            &b.bytes,
            b.start(self.next),
            &b.ends[self.next..g.end],
            g.small,
        );
        self.next += n;
        (n, bytes, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(index: u32) -> ConnectionId {
        ConnectionId { index, gen: 1 }
    }

    /// The unsent messages, with their destinations, as a cursor reads them.
    fn unsent(b: &SendBatch) -> Vec<(Option<ConnectionId>, Vec<u8>)> {
        let mut c = b.cursor();
        std::iter::from_fn(|| c.next_msg().map(|(t, d)| (t, d.to_vec()))).collect()
    }

    #[test]
    fn taken_messages_are_dropped_once_they_hold_half_the_bytes() {
        let mut b = SendBatch::new();
        let mut want = std::collections::VecDeque::new();
        for i in 0..10_000u32 {
            // Two added a round and two taken, but one every 100 rounds: the batch never
            // empties, and 200 kB pass through it.
            for k in 0..2 {
                let m = [(i % 251) as u8; 10];
                b.push_to(conn(k), &m);
                want.push_back((Some(conn(k)), m.to_vec()));
            }
            let n = if i % 100 == 0 { 1 } else { 2 };
            b.skip(n);
            want.drain(..n);
            assert!(b.bytes.len() <= 2 * b.pending_bytes(), "round {i}");
        }
        assert_eq!(b.len(), 100);
        assert_eq!(unsent(&b), Vec::from(want));
    }

    #[test]
    fn skipping_past_the_end_empties_the_batch() {
        let mut b = SendBatch::new();
        b.skip(3);
        assert!(b.is_empty());
        b.push(b"a");
        b.slot(2).copy_from_slice(b"bc");
        b.skip(5);
        assert_eq!((b.len(), b.pending_bytes(), b.front()), (0, 0, None));
        b.push(b"d");
        assert_eq!(unsent(&b), [(None, b"d".to_vec())]);
    }

    #[test]
    fn taken_empty_messages_do_not_pile_up() {
        let mut b = SendBatch::new();
        for _ in 0..10_000 {
            b.push(b"");
            b.push(b"");
            b.skip(1);
        }
        assert_eq!(b.len(), 10_000);
        assert!(b.ends.len() <= 2 * b.len(), "{} ends kept", b.ends.len());
    }

    #[test]
    fn groups_follow_the_destinations_across_compaction() {
        let mut b = SendBatch::new();
        b.push_to(conn(1), b"aa");
        b.push_to(conn(1), b"bb");
        b.push_to(conn(2), b"cc");
        b.push(b"dd");
        b.skip(3);
        b.push(b"ee");
        b.push_to(conn(2), b"ff");
        assert_eq!(b.front(), Some(&b"dd"[..]));
        assert_eq!(
            unsent(&b),
            [
                (None, b"dd".to_vec()),
                (None, b"ee".to_vec()),
                (Some(conn(2)), b"ff".to_vec())
            ]
        );
    }
}
