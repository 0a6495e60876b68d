//! An endpoint's transmit queue: completed messages waiting for their connection.
//!
//! Small whole messages for the same destination are copied back to back into one entry (a
//! *run*) as they are queued, the way the `thread` server of `kcm bench` appends its replies to
//! one output buffer: a pipelined server answering 32-byte requests would otherwise pay a
//! queue entry, a reference count, an iovec and a completion per reply. A run still knows
//! where each of its messages ends, so a connection that fails half-way through it loses only
//! the message it was writing (the ones it wrote completely are done, as in the kernel), and
//! every counter still counts messages.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::super::{ConnectionId, DEFAULT_BUF};
use super::MsgData;

/// Messages up to this long are copied into a run instead of being queued on their own (the
/// same bound under which a transmit copies slices rather than giving each an iovec).
pub(in crate::mux) const COALESCE_MAX: usize = 256;
/// A run stops growing at this many bytes: its bytes leave the send-buffer accounting only
/// when all of it is written, so it must stay small next to any sensible send buffer.
const RUN_MAX: usize = 4096;
/// A new run reserves room for this many messages like its first, or as much as the run
/// before it came to hold if that is more (then it doubles as it grows): a sender's batches
/// of replies seldom reallocate, and a run that stays short holds at most a few times its
/// bytes, so a queue of many short runs (small replies to destinations that alternate) stays
/// within a small multiple of the send buffer.
const RUN_ROOM: usize = 8;

/// The bytes of one queue entry.
#[derive(Debug)]
pub(crate) enum Parts {
    /// A message given in one call (zero-copy).
    One(Bytes),
    /// A message built from several `MSG_MORE` calls (zero-copy, one slice per call).
    Many(Vec<Bytes>),
    /// Small whole messages, copied back to back.
    Run(Run),
}

/// Small whole messages for one destination, copied into one buffer.
#[derive(Debug)]
pub(crate) struct Run {
    /// Growing while no transmit has taken it; frozen once one has (a transmit holds a
    /// zero-copy view of it, and it must not move).
    data: RunData,
    /// Where each message but the last ends, from the start of `data` (the last ends with
    /// the entry): a run of one message, the lone reply of a request-reply load, allocates
    /// no list.
    ends: Vec<u32>,
}

#[derive(Debug)]
enum RunData {
    Open(BytesMut),
    Frozen(Bytes),
    /// Frozen, and the messages written completely have been cut off its front
    /// ([`TxMsg::trim_written`]). Its buffer would come back without that front, which
    /// neither a later run nor the bound of [`SpareRuns`] would see, so it is not kept. (A
    /// variant, not a flag in `Run`: the flag made every queue entry 8 bytes bigger.)
    Trimmed(Bytes),
}

impl Run {
    /// A run of the messages in `msgs`, copied back to back (the caller keeps it within
    /// [`RUN_MAX`]), with room for more like the first, or for `hint` bytes (what the
    /// previous run came to hold).
    /// Takes its buffer from `spare` when the last one there is big enough, and its list of
    /// ends from there too (see [`SpareRuns`]).
    fn new(msgs: &[&[u8]], hint: usize, spare: &mut SpareRuns) -> Run {
        let first = msgs.first().map_or(1, |m| m.len().max(1));
        let room = (first * RUN_ROOM).max(hint).clamp(first, RUN_MAX);
        let mut buf = match spare.take(room) {
            Some(b) => b,
            None => {
                let mut b = BytesMut::with_capacity(room);
                // Shared from the start: the transmit's view of the run then costs a count,
                // not an allocation, and the buffer comes back whole once it is written.
                drop(b.split_to(0));
                b
            }
        };
        let mut ends = spare.lists.pop().unwrap_or_default();
        for (i, m) in msgs.iter().enumerate() {
            if i > 0 {
                Run::note_end(&mut ends, &buf);
            }
            buf.extend_from_slice(m);
        }
        Run {
            data: RunData::Open(buf),
            ends,
        }
    }

    /// Records that a message ends where `buf` ends now (another follows it). The first time,
    /// makes room for as many ends as messages like the first fit in the buffer, so that a
    /// run growing message by message seldom reallocates its list.
    #[inline]
    fn note_end(ends: &mut Vec<u32>, buf: &BytesMut) {
        if ends.capacity() == 0 {
            ends.reserve(buf.capacity() / buf.len().max(1));
        }
        ends.push(buf.len() as u32);
    }
}

/// Buffers of written runs, emptied, for the next runs of an endpoint: a request-reply load
/// writes a run or a few per pass, and each cost an allocation and a free of its buffer and
/// another of the count that shares it with the transmit (buffers are made shared from the
/// start, so both come back). At most [`SPARE_RUNS`] buffers and [`RUN_MAX`] bytes in all
/// (whole allocations: a run written in parts is not kept, see [`RunData::Trimmed`]). The
/// lists of message ends of runs of several messages are kept the same way: at most
/// [`SPARE_RUNS`] of at most [`SPARE_LIST_ENDS`] ends.
#[derive(Debug, Default)]
pub(crate) struct SpareRuns {
    bufs: Vec<BytesMut>,
    lists: Vec<Vec<u32>>,
}

/// Most ends a kept list may have room for (1 KiB).
const SPARE_LIST_ENDS: usize = 256;

/// Most buffers [`SpareRuns`] keeps: as many runs as one pass of replies to different
/// connections commonly makes.
const SPARE_RUNS: usize = 8;

impl SpareRuns {
    /// The last buffer kept, if it has room for `room` bytes. One too small is let go, so
    /// that the list follows the sizes runs come to need instead of filling with buffers
    /// none of them can take.
    fn take(&mut self, room: usize) -> Option<BytesMut> {
        self.bufs.pop().filter(|b| b.capacity() >= room)
    }

    /// Keeps `b`'s buffer, emptied, if nothing else holds a view of it and it fits.
    fn keep(&mut self, b: Bytes) {
        if self.bufs.len() == SPARE_RUNS {
            return;
        }
        if let Ok(mut b) = b.try_into_mut() {
            if self.bytes() + b.capacity() <= RUN_MAX {
                b.clear();
                self.bufs.push(b);
            }
        }
    }

    /// Keeps a run's list of ends, emptied, if it has any room and not too much.
    fn keep_list(&mut self, mut ends: Vec<u32>) {
        let room = ends.capacity();
        if self.lists.len() < SPARE_RUNS && room > 0 && room <= SPARE_LIST_ENDS {
            ends.clear();
            self.lists.push(ends);
        }
    }

    /// Bytes of buffer kept (a sum over at most [`SPARE_RUNS`], taken once per run kept).
    fn bytes(&self) -> usize {
        self.bufs.iter().map(BytesMut::capacity).sum()
    }
}

/// One queue entry: a message, or a run of messages with the same destination.
#[derive(Debug)]
pub(crate) struct TxMsg {
    pub(crate) parts: Parts,
    /// Bytes in the entry.
    pub(crate) len: usize,
    /// Bytes already written on the currently reserved connection.
    pub(crate) sent: usize,
    pub(crate) target: Option<ConnectionId>,
}

impl TxMsg {
    /// Whether the entry may be written on `conn`.
    pub(super) fn compatible(&self, conn: ConnectionId) -> bool {
        // (`Option::is_none_or` would need Rust 1.82; the MSRV is 1.80.)
        self.target.is_none() || self.target == Some(conn)
    }

    /// Messages in the entry.
    pub(crate) fn msgs(&self) -> usize {
        match &self.parts {
            Parts::Run(r) => r.ends.len() + 1,
            _ => 1,
        }
    }

    /// The entry's slices, in order. A run is frozen first: a transmit is about to hold a
    /// view of it.
    pub(super) fn slices(&mut self) -> &[Bytes] {
        match &mut self.parts {
            Parts::One(b) => std::slice::from_ref(b),
            Parts::Many(v) => v,
            Parts::Run(r) => {
                if let RunData::Open(buf) = &mut r.data {
                    r.data = RunData::Frozen(std::mem::take(buf).freeze());
                }
                match &r.data {
                    RunData::Frozen(b) | RunData::Trimmed(b) => std::slice::from_ref(b),
                    RunData::Open(_) => &[],
                }
            }
        }
    }

    /// All the entry's bytes, in order (for tests and inspection).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> Vec<u8> {
        match &self.parts {
            Parts::One(b) => b.to_vec(),
            Parts::Many(v) => v.iter().flat_map(|b| b.iter().copied()).collect(),
            Parts::Run(r) => match &r.data {
                RunData::Open(b) => b.to_vec(),
                RunData::Frozen(b) | RunData::Trimmed(b) => b.to_vec(),
            },
        }
    }

    /// Bytes of buffer the entry holds for its run (0 for zero-copy entries).
    #[cfg(test)]
    fn run_capacity(&self) -> usize {
        match &self.parts {
            Parts::Run(r) => match &r.data {
                RunData::Open(b) => b.capacity(),
                RunData::Frozen(b) | RunData::Trimmed(b) => b.len(),
            },
            _ => 0,
        }
    }

    /// Appends a small whole message to this entry if it can hold it: same destination, this
    /// entry a small message or a run still growing, the result within [`RUN_MAX`]. A lone
    /// message becomes a run only when a second one joins it, so a message sent on its own
    /// stays zero-copy. Appending behind bytes that a transmit may already be writing is
    /// safe: the entry's bytes before the new ones do not change. A run made here reserves
    /// room for `hint` bytes (what the last run came to hold) or more: sized for two small
    /// messages, a run of sends one by one grew by doubling, six reallocations per 64. Always
    /// inlined: it is most of the cost of queuing a small reply, and a call costs a third more.
    #[inline(always)]
    fn try_append(
        &mut self,
        data: &[u8],
        target: Option<ConnectionId>,
        hint: usize,
        spare: &mut SpareRuns,
    ) -> bool {
        if self.target != target || self.len + data.len() > RUN_MAX {
            return false;
        }
        let len = self.len;
        match &mut self.parts {
            // The common case first: a run still growing.
            Parts::Run(Run {
                data: RunData::Open(buf),
                ends,
            }) => {
                Run::note_end(ends, buf);
                buf.extend_from_slice(data);
            }
            Parts::One(first) if len <= COALESCE_MAX => {
                self.parts = Parts::Run(Run::new(&[first, data], hint, spare));
            }
            _ => return false,
        }
        self.len += data.len();
        true
    }

    /// Removes the messages written completely (`sent` bytes are written) and returns how
    /// many and their bytes. Only a run can hold such messages; a lone message has none.
    pub(super) fn trim_written(&mut self) -> (usize, usize) {
        let Parts::Run(r) = &mut self.parts else {
            return (0, 0);
        };
        // The last message is never among them: a fully written entry has left the queue.
        let done = r.ends.partition_point(|&end| end as usize <= self.sent);
        if done == 0 {
            return (0, 0);
        }
        let cut = r.ends[done - 1] as usize;
        // Only a run a transmit has taken (frozen) can have been written in part.
        let mut b = match std::mem::replace(&mut r.data, RunData::Trimmed(Bytes::new())) {
            RunData::Open(b) => b.freeze(),
            RunData::Frozen(b) | RunData::Trimmed(b) => b,
        };
        b.advance(cut);
        r.data = RunData::Trimmed(b);
        r.ends.drain(..done);
        for end in &mut r.ends {
            *end -= cut as u32;
        }
        self.len -= cut;
        self.sent -= cut;
        (done, cut)
    }
}

/// The run at the tail of `queue` if it is for `target` and still growing: its buffer, its
/// list of ends and the entry's length (a free function, so that the caller keeps the rest of
/// the queue's fields).
fn open_tail(
    queue: &mut VecDeque<TxMsg>,
    target: Option<ConnectionId>,
) -> Option<(&mut BytesMut, &mut Vec<u32>, &mut usize)> {
    let tail = queue.back_mut().filter(|t| t.target == target)?;
    match &mut tail.parts {
        Parts::Run(Run {
            data: RunData::Open(buf),
            ends,
        }) => Some((buf, ends, &mut tail.len)),
        _ => None,
    }
}

/// How many entries at the front of `queue` come before its first unaddressed one: the part
/// whose messages for one connection may move to that connection's backlog.
pub(super) fn movable_prefix(queue: &VecDeque<TxMsg>) -> usize {
    queue
        .iter()
        .position(|m| m.target.is_none())
        .unwrap_or(queue.len())
}

/// A FIFO of entries that counts what it holds: an endpoint's queue ([`EpTx`]) or a
/// connection's backlog. Written bytes leave both the same way ([`advance`]).
pub(super) trait Entries {
    fn head(&mut self) -> Option<&mut TxMsg>;
    /// Takes the head entry off (written or dropped); returns its message count.
    fn pop_head(&mut self) -> usize;
    /// After a partial write of the head entry: removes the messages of a run that are now
    /// written completely (they are done, and a retry on another connection must not send
    /// them again) and returns how many.
    fn trim_head(&mut self) -> usize;
}

/// Takes `n` written bytes off the front of `q`; returns the messages and bytes done.
pub(super) fn advance(q: &mut impl Entries, mut n: usize) -> (u64, u64) {
    let (mut msgs, mut bytes) = (0u64, 0u64);
    while n > 0 {
        let Some(m) = q.head() else { break };
        let left = m.len - m.sent;
        if n < left {
            m.sent += n;
            bytes += n as u64;
            // Messages of a run written completely are done now, as lone ones would be.
            msgs += q.trim_head() as u64;
            break;
        }
        n -= left;
        bytes += left as u64;
        msgs += q.pop_head() as u64;
    }
    (msgs, bytes)
}

impl Entries for EpTx {
    fn head(&mut self) -> Option<&mut TxMsg> {
        self.queue.front_mut()
    }

    fn pop_head(&mut self) -> usize {
        let Some(m) = self.take_head() else { return 0 };
        let msgs = m.msgs();
        if let Parts::Run(r) = m.parts {
            self.last_run = m.len;
            self.keep_run_buffer(r);
        }
        msgs
    }

    fn trim_head(&mut self) -> usize {
        let Some(m) = self.queue.front_mut() else {
            return 0;
        };
        let (msgs, bytes) = m.trim_written();
        self.queued_bytes -= bytes;
        self.queued_msgs -= msgs;
        msgs
    }
}

/// An endpoint's transmit side (§2.2, §5.3).
pub(crate) struct EpTx {
    pub(crate) queue: VecDeque<TxMsg>,
    pub(crate) queued_bytes: usize,
    /// Messages in `queue` (runs hold several).
    pub(crate) queued_msgs: usize,
    /// Bytes of the last run taken off the queue (sizes the next one, see [`RUN_ROOM`]).
    last_run: usize,
    /// Buffers of written runs, for the next runs.
    spare_run: SpareRuns,
    pub(crate) sndbuf: usize,
    pub(crate) open: Option<(Vec<Bytes>, Option<ConnectionId>)>,
    pub(crate) wait_more: bool,
    pub(crate) reserved: Option<u32>,
    pub(crate) writing: Option<usize>,
    pub(crate) waiting: bool,
    pub(crate) blocked: bool,
    /// Write space was reported while a transmit was being written. The write may have found
    /// the socket full before that space appeared, and an edge-triggered readiness report
    /// comes only once: the next full write must try again instead of waiting for another.
    pub(crate) space_while_writing: bool,
    /// The reserved connection was found full and write space has not been reported since:
    /// the endpoint is waiting for it (see `MuxCore::make_room`).
    pub(crate) space_wait: bool,
}

impl EpTx {
    pub(crate) fn new() -> EpTx {
        EpTx {
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_msgs: 0,
            last_run: 0,
            spare_run: SpareRuns::default(),
            sndbuf: DEFAULT_BUF,
            open: None,
            wait_more: false,
            reserved: None,
            writing: None,
            waiting: false,
            blocked: false,
            space_while_writing: false,
            space_wait: false,
        }
    }

    /// Queues a completed message (joining the run at the tail when it is small enough).
    pub(super) fn enqueue(&mut self, parts: Parts, len: usize, target: Option<ConnectionId>) {
        let hint = self.last_run;
        let joined = match (&parts, self.queue.back_mut()) {
            (Parts::One(data), Some(tail)) if len <= COALESCE_MAX => {
                tail.try_append(data, target, hint, &mut self.spare_run)
            }
            _ => false,
        };
        if !joined {
            self.push(parts, len, target);
        }
        self.count(len);
    }

    /// Queues a small completed message given as a borrowed slice: copied into the run at the
    /// tail, or into a new run (there is no buffer of the caller's to share).
    #[inline]
    pub(super) fn enqueue_copy(&mut self, data: &[u8], target: Option<ConnectionId>) {
        let hint = self.last_run;
        let joined = self
            .queue
            .back_mut()
            .is_some_and(|tail| tail.try_append(data, target, hint, &mut self.spare_run));
        if !joined {
            // The run before (to another destination, full, or already written) says how big
            // runs get.
            let hint = match self.queue.back() {
                Some(
                    tail @ TxMsg {
                        parts: Parts::Run(_),
                        ..
                    },
                ) => tail.len,
                Some(_) => 0,
                None => self.last_run,
            };
            let run = Run::new(&[data], hint, &mut self.spare_run);
            self.push(Parts::Run(run), data.len(), target);
        }
        self.count(data.len());
    }

    /// Copies the messages that come next in `msgs` onto the run at the tail while each is a
    /// small whole message for `target` given to be copied, the run has room for it and the
    /// send buffer is not full; counts them. Returns how many and their bytes, and the first
    /// message it did not take. The caller has just queued a message for `target` by copy, so
    /// the tail is that message's run; one lookup of it serves the whole loop.
    pub(super) fn extend_tail_run<I, D>(
        &mut self,
        target: Option<ConnectionId>,
        msgs: &mut I,
    ) -> (usize, usize, Option<(Option<ConnectionId>, D)>)
    where
        I: Iterator<Item = (Option<ConnectionId>, D)>,
        D: MsgData,
    {
        let Some((buf, ends, tail_len)) = open_tail(&mut self.queue, target) else {
            return (0, 0, None);
        };
        let (mut n, mut bytes, mut rest) = (0, 0, None);
        let mut end = *tail_len;
        for (next, data) in msgs.by_ref() {
            let d = data.as_ref();
            let fits = next == target
                && !d.is_empty()
                && d.len() <= COALESCE_MAX
                && !data.is_shared()
                && self.queued_bytes + bytes < self.sndbuf
                && end + d.len() <= RUN_MAX;
            if !fits {
                rest = Some((next, data));
                break;
            }
            Run::note_end(ends, buf);
            buf.extend_from_slice(d);
            end += d.len();
            n += 1;
            bytes += d.len();
        }
        *tail_len = end;
        self.count_appended(n, bytes);
        (n, bytes, rest)
    }

    /// [`EpTx::extend_tail_run`] for messages written back to back: those ending at `ends`
    /// in `bytes`, the first starting at `from`. Takes them while each fits as there, then
    /// copies them onto the run in one piece; returns how many and their bytes. `small` says
    /// that each is 1 to [`COALESCE_MAX`] bytes long: then they all fit if the last does.
    pub(super) fn extend_tail_bulk(
        &mut self,
        target: Option<ConnectionId>,
        bytes: &[u8],
        from: usize,
        ends: &[usize],
        small: bool,
    ) -> (usize, usize) {
        let Some((buf, run_ends, tail_len)) = open_tail(&mut self.queue, target) else {
            return (0, 0);
        };
        // The same admission as `extend_tail_run`, message by message, in a few comparisons:
        // not empty and at most COALESCE_MAX (one unsigned comparison), the send buffer not
        // full before it (it starts before `stop`), the run within RUN_MAX after it.
        // First how many, then their ends in one go (pushed one by one, each end cost a
        // reload and store of the vector's length).
        let stop = from.saturating_add(self.sndbuf.saturating_sub(self.queued_bytes));
        let (mut n, mut start) = (0, from);
        let limit = (RUN_MAX + from).saturating_sub(*tail_len);
        // The other two conditions only grow harder message by message.
        let last_start = match ends.len() {
            0 | 1 => from,
            k => ends[k - 2],
        };
        let all = small && last_start < stop && ends.last().is_some_and(|&e| e <= limit);
        if all {
            n = ends.len();
            start = ends[n - 1];
        }
        for &next in &ends[n..] {
            let len = next - start;
            if len.wrapping_sub(1) >= COALESCE_MAX || start >= stop || next > limit {
                break;
            }
            start = next;
            n += 1;
        }
        // The run's last message now has others after it; new message `i` ends
        // `ends[i] - from` bytes after the run's old end (the last of them with the entry).
        let base = *tail_len;
        if n > 0 {
            Run::note_end(run_ends, buf);
            run_ends.extend(ends[..n - 1].iter().map(|&e| (e - from + base) as u32));
        }
        let taken = start - from;
        buf.extend_from_slice(&bytes[from..start]);
        *tail_len = base + taken;
        self.count_appended(n, taken);
        (n, taken)
    }

    /// Counts `n` messages of `bytes` in all just queued.
    fn count_appended(&mut self, n: usize, bytes: usize) {
        self.queued_bytes += bytes;
        self.queued_msgs += n;
        // Full now: whoever watches writability (the pollable descriptor) needs the Writable
        // event when room returns, even if no send has failed yet.
        if n > 0 && self.queued_bytes >= self.sndbuf {
            self.blocked = true;
        }
    }

    fn push(&mut self, parts: Parts, len: usize, target: Option<ConnectionId>) {
        self.queue.push_back(TxMsg {
            parts,
            len,
            sent: 0,
            target,
        });
    }

    /// Counts a message just queued.
    fn count(&mut self, len: usize) {
        self.count_appended(1, len);
    }

    /// Keeps the buffer of a written run for a later run if nothing else holds it (the
    /// runtime has let the transmit's view go) and there is room among the spares.
    fn keep_run_buffer(&mut self, r: Run) {
        self.spare_run.keep_list(r.ends);
        // A run written in parts (`Trimmed`) is not kept.
        if let RunData::Frozen(b) = r.data {
            self.spare_run.keep(b);
        }
    }

    /// Takes the head entry off the queue whole, to move it elsewhere (a backlog).
    pub(super) fn take_head(&mut self) -> Option<TxMsg> {
        let m = self.queue.pop_front()?;
        self.queued_bytes -= m.len;
        self.queued_msgs -= m.msgs();
        Some(m)
    }

    /// Takes the entries addressed to `conn` that come before the first unaddressed one off
    /// the queue, in order, to move them elsewhere (a backlog); the others keep their order.
    /// An unaddressed message may still be written on `conn`, and what the endpoint sent after
    /// it must not overtake it there: those stay queued behind it.
    pub(super) fn take_addressed(&mut self, conn: ConnectionId) -> VecDeque<TxMsg> {
        let rest = self.queue.split_off(movable_prefix(&self.queue));
        let (out, mut keep): (VecDeque<TxMsg>, VecDeque<TxMsg>) =
            self.queue.drain(..).partition(|m| m.target == Some(conn));
        keep.extend(rest);
        self.queue = keep;
        for m in &out {
            self.queued_bytes -= m.len;
            self.queued_msgs -= m.msgs();
        }
        out
    }

    /// After bytes left the queue: whether a blocked sender must now be told it may send
    /// again (one `Writable` per block).
    pub(super) fn unblock(&mut self) -> bool {
        let writable = self.blocked && self.queued_bytes < self.sndbuf;
        if writable {
            self.blocked = false;
        }
        writable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(index: u32) -> Option<ConnectionId> {
        Some(ConnectionId { index, gen: index })
    }

    fn one(b: &'static [u8]) -> Parts {
        Parts::One(Bytes::from_static(b))
    }

    /// Unique buffers of `cap` bytes, as written runs leave them.
    fn written(n: usize, cap: usize) -> impl Iterator<Item = Bytes> {
        (0..n).map(move |_| {
            let mut b = BytesMut::with_capacity(cap);
            b.extend_from_slice(b"x");
            b.freeze()
        })
    }

    #[test]
    fn spare_run_buffers_stay_within_their_bounds() {
        let mut spare = SpareRuns::default();
        written(10, RUN_MAX / 4).for_each(|b| spare.keep(b));
        assert_eq!(spare.bufs.len(), 4, "RUN_MAX bytes in all");
        assert!(spare.bytes() <= RUN_MAX);
        let mut spare = SpareRuns::default();
        written(10, 100).for_each(|b| spare.keep(b));
        assert_eq!(spare.bufs.len(), SPARE_RUNS);
        // Kept empty, and taken only when big enough; one too small is let go.
        assert!(spare.bufs.iter().all(BytesMut::is_empty));
        assert!(spare.take(RUN_MAX).is_none());
        assert_eq!(spare.bufs.len(), SPARE_RUNS - 1);
        assert!(spare.take(100).is_some_and(|b| b.capacity() >= 100));
        assert_eq!(spare.bufs.len(), SPARE_RUNS - 2);
        // A buffer someone else still holds is not kept.
        let b = written(1, 100).next().unwrap();
        let view = b.clone();
        spare.keep(b);
        assert_eq!(spare.bufs.len(), SPARE_RUNS - 2);
        assert_eq!(&view[..], b"x");
        // The bound is on capacity, not on the bytes a buffer held.
        let mut spare = SpareRuns::default();
        written(1, RUN_MAX - 96).for_each(|b| spare.keep(b));
        written(1, 1024).for_each(|b| spare.keep(b));
        assert_eq!(spare.bufs.len(), 1);
        assert!(spare.bytes() <= RUN_MAX);
    }

    /// Over many runs of varied sizes, some written in two parts and some still viewed by
    /// someone when written, the spare buffers are empty and within bounds, every run holds
    /// exactly what was queued, and buffers keep being reused. (From a review: the property
    /// tests reach reuse only a few times in thousands of cases.)
    #[test]
    fn spare_run_buffers_account_and_serve_over_many_runs() {
        let mut q = EpTx::new();
        let mut reused = 0;
        for i in 0..500usize {
            let before = q.spare_run.bufs.len();
            for k in 0..1 + i % 7 {
                q.enqueue_copy(&vec![k as u8; 10 + (i * 13) % 200], None);
            }
            reused += usize::from(q.spare_run.bufs.len() < before);
            assert_eq!(q.queue.len(), 1);
            let want = q.queue[0].bytes();
            let view = q.queue[0].slices()[0].clone();
            assert_eq!(
                &view[..],
                &want[..],
                "round {i}: a reused buffer starts empty"
            );
            if i % 5 == 0 {
                // A holder that never lets go: that buffer is never kept.
                std::mem::forget(view);
            } else {
                drop(view);
            }
            if i % 3 == 0 {
                let half = q.queue[0].len / 2;
                advance(&mut q, half);
            }
            let rest = q.queue[0].len - q.queue[0].sent;
            advance(&mut q, rest);
            assert!(q.queue.is_empty());
            assert!(q.spare_run.bufs.iter().all(BytesMut::is_empty));
            let spare = &q.spare_run;
            assert!(
                spare.bytes() <= RUN_MAX && spare.bufs.len() <= SPARE_RUNS,
                "round {i}"
            );
            assert!(spare.lists.len() <= SPARE_RUNS);
            let ok = |l: &Vec<u32>| l.is_empty() && (1..=SPARE_LIST_ENDS).contains(&l.capacity());
            assert!(spare.lists.iter().all(ok), "round {i}");
        }
        assert!(reused > 100, "reused {reused} times in 500 runs");
    }

    /// A run's list of message ends serves a later run too, within bounds.
    #[test]
    fn lists_of_ends_are_kept_and_reused_within_bounds() {
        let mut spare = SpareRuns::default();
        for cap in [0, 8, SPARE_LIST_ENDS + 1] {
            spare.keep_list(Vec::with_capacity(cap));
        }
        assert_eq!(spare.lists.len(), 1, "neither an empty nor a large list");
        (0..20).for_each(|_| spare.keep_list(vec![1, 2, 3]));
        assert_eq!(spare.lists.len(), SPARE_RUNS);
        assert!(spare.lists.iter().all(Vec::is_empty));
        // Through a queue: the second run's list is the first one's.
        let mut q = EpTx::new();
        q.enqueue_copy(b"ab", None);
        q.enqueue_copy(b"cd", None);
        let Parts::Run(r) = &q.queue[0].parts else {
            panic!("a run")
        };
        let list = r.ends.as_ptr();
        drop(q.queue[0].slices()[0].clone());
        advance(&mut q, 4);
        // Were the list freed, the allocator would likely hand the same block back: these
        // take any such freed block first.
        let squat: Vec<Vec<u32>> = (1..=16).map(Vec::with_capacity).collect();
        q.enqueue_copy(b"ef", None);
        q.enqueue_copy(b"gh", None);
        drop(squat);
        let Parts::Run(r) = &q.queue[0].parts else {
            panic!("a run")
        };
        assert_eq!(
            r.ends.as_ptr(),
            list,
            "the written run's list, not a new one"
        );
        assert_eq!(q.queue[0].bytes(), b"efgh");
    }

    /// A run written in parts comes back without its written front (its capacity then says
    /// less than it holds): it is not kept, and later runs still find buffers to reuse.
    #[test]
    fn runs_written_in_parts_are_not_kept() {
        let mut q = EpTx::new();
        for round in 0..8u8 {
            for _ in 0..60 {
                q.enqueue_copy(&[round; 64], None);
            }
            drop(q.queue[0].slices()[0].clone());
            advance(&mut q, 59 * 64 + 1);
            let rest = q.queue[0].len - q.queue[0].sent;
            advance(&mut q, rest);
            assert!(q.queue.is_empty());
        }
        assert!(q.spare_run.bufs.is_empty(), "{:?}", q.spare_run);
        let mut reused = 0;
        for _ in 0..100 {
            let before = q.spare_run.bufs.len();
            q.enqueue_copy(&[1; 64], None);
            q.enqueue_copy(&[2; 64], None);
            reused += usize::from(q.spare_run.bufs.len() < before);
            drop(q.queue[0].slices()[0].clone());
            let rest = q.queue[0].len;
            advance(&mut q, rest);
        }
        assert!(reused >= 99, "reused {reused} of 100");
    }

    #[test]
    fn small_messages_for_one_destination_share_an_entry() {
        let mut q = EpTx::new();
        q.enqueue(one(b"ab"), 2, conn(1));
        assert!(
            matches!(q.queue[0].parts, Parts::One(_)),
            "alone: zero-copy"
        );
        q.enqueue(one(b"cde"), 3, conn(1));
        q.enqueue(one(b"f"), 1, conn(1));
        // Another destination starts a new entry.
        q.enqueue(one(b"gh"), 2, conn(2));
        assert_eq!(q.queue.len(), 2);
        assert_eq!(q.queue[0].bytes(), b"abcdef");
        assert_eq!((q.queue[0].msgs(), q.queue[0].len), (3, 6));
        assert_eq!((q.queued_msgs, q.queued_bytes), (4, 8));
    }

    #[test]
    fn large_messages_and_frozen_runs_are_not_joined() {
        let mut q = EpTx::new();
        let big = Bytes::from(vec![1u8; COALESCE_MAX + 1]);
        q.enqueue(Parts::One(big.clone()), big.len(), None);
        q.enqueue(one(b"x"), 1, None);
        assert_eq!(q.queue.len(), 2, "a large message is never copied");
        q.enqueue(one(b"y"), 1, None);
        assert_eq!(q.queue.len(), 2);
        // A transmit takes a view of the run: it stops growing.
        assert_eq!(q.queue[1].slices().len(), 1);
        q.enqueue(one(b"z"), 1, None);
        assert_eq!(q.queue.len(), 3);
        assert_eq!(q.queued_msgs, 4);
    }

    #[test]
    fn short_runs_hold_memory_in_proportion_to_their_bytes() {
        // Tiny messages to two destinations in turn: every message starts a run of its own.
        let mut q = EpTx::new();
        for i in 0..1000u32 {
            q.enqueue_copy(&[1], conn(i % 2));
        }
        assert_eq!(q.queue.len(), 1000);
        let held: usize = q.queue.iter().map(TxMsg::run_capacity).sum();
        assert!(
            held <= RUN_ROOM * q.queued_bytes,
            "{held} B for {} B",
            q.queued_bytes
        );
    }

    #[test]
    fn runs_stop_at_their_size_limit() {
        let mut q = EpTx::new();
        let m = Bytes::from(vec![0u8; 200]);
        for _ in 0..100 {
            q.enqueue(Parts::One(m.clone()), 200, None);
        }
        assert!(q.queue.iter().all(|e| e.len <= RUN_MAX));
        assert_eq!(q.queue.iter().map(TxMsg::msgs).sum::<usize>(), 100);
        assert_eq!(q.queued_bytes, 20_000);
    }

    #[test]
    fn a_partly_written_run_drops_the_messages_written_completely() {
        let mut q = EpTx::new();
        for m in [&b"aaaa"[..], b"bbbb", b"cccc"] {
            q.enqueue(Parts::One(Bytes::from_static(m)), 4, None);
        }
        let _ = q.queue[0].slices();
        // The connection took the first message and half of the second.
        q.queue[0].sent = 6;
        assert_eq!(q.trim_head(), 1);
        assert_eq!(q.queue[0].bytes(), b"bbbbcccc");
        assert_eq!((q.queue[0].sent, q.queue[0].msgs()), (2, 2));
        assert_eq!((q.queued_msgs, q.queued_bytes), (2, 8));
        // Nothing more written completely: nothing removed.
        q.queue[0].sent = 3;
        assert_eq!(q.trim_head(), 0);
        assert_eq!(q.queue[0].len, 8);
        assert_eq!(q.pop_head(), 2);
        assert_eq!((q.queued_msgs, q.queued_bytes), (0, 0));
    }
}
