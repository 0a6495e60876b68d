//! An endpoint's receive queue: whole messages in arrival order, kept as the runs they
//! arrived in ([`MsgRun`]) until a receiver takes them one by one.
//!
//! A run is queued as one entry and each message's `Bytes` is cut from it only when it is
//! taken, so a read pass of dozens of small messages costs one queue entry rather than one per
//! message (and no move of each message on the way in). Everything that looks at the queue
//! message by message (a partial seqpacket read, peeking, requeuing on `KCM_RECV_DISABLE`)
//! sees the same messages in the same order as a queue of single messages would hold.

use std::collections::VecDeque;

use super::{ConnectionId, RxMsg};
use crate::run::{Cursor, MsgRun};

/// What a batch receive counts what it takes against ([`RxQueue::take_runs`]): the
/// endpoint's queued bytes and its low-water mark (§5.1).
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) mem: usize,
    pub(crate) lowat: usize,
    /// The memory went below the mark: the call takes no more.
    pub(crate) low: bool,
}

impl Budget {
    fn take(&mut self, size: usize) {
        self.mem -= size;
        self.low = self.mem < self.lowat;
    }
}

/// Messages queued on an endpoint.
#[derive(Debug, Default)]
pub(crate) struct RxQueue {
    entries: VecDeque<Entry>,
    /// Messages in `entries` (a run holds several).
    msgs: usize,
}

#[derive(Debug)]
enum Entry {
    One(RxMsg),
    /// The messages of a run not taken yet. Boxed: a lone message is the common entry of a
    /// request-reply load, and every push and pop moves a whole entry (48 bytes with the box,
    /// over 100 without).
    Run(Box<RunEntry>),
}

#[derive(Debug)]
struct RunEntry {
    conn: ConnectionId,
    at: Cursor,
}

impl RxQueue {
    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.msgs
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.msgs == 0
    }

    /// Queues one message at the back.
    pub(crate) fn push(&mut self, m: RxMsg) {
        self.msgs += 1;
        self.entries.push_back(Entry::One(m));
    }

    /// Queues the messages of `run` at the back (a run of one as a lone message).
    pub(crate) fn push_run(&mut self, conn: ConnectionId, run: MsgRun) {
        match run.len() {
            0 => {}
            1 => self.push(RxMsg {
                data: run.into_only(),
                conn,
            }),
            n => {
                self.msgs += n;
                self.entries.push_back(Entry::Run(Box::new(RunEntry {
                    conn,
                    at: Cursor::new(run),
                })));
            }
        }
    }

    /// Takes the message at the front.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<RxMsg> {
        let m = match self.entries.front_mut()? {
            Entry::One(_) => match self.entries.pop_front() {
                Some(Entry::One(m)) => m,
                _ => return None,
            },
            Entry::Run(r) => {
                let m = RxMsg {
                    data: r.at.next_message()?,
                    conn: r.conn,
                };
                if r.at.is_done() {
                    self.entries.pop_front();
                }
                m
            }
        };
        self.msgs -= 1;
        Some(m)
    }

    /// Takes up to `max` messages off the front, in order, handing them to `out` as runs (one
    /// per queue entry, or per part of one), and counts them against `budget`: the call ends
    /// after the message that leaves the queue's memory below the low-water mark. No message's
    /// `Bytes` is cut; a run taken whole moves out as it is, and only a run taken in part is
    /// copied (its lengths, once). Returns how many it took.
    pub(crate) fn take_runs(
        &mut self,
        max: usize,
        budget: &mut Budget,
        mut out: impl FnMut(ConnectionId, MsgRun),
    ) -> usize {
        let mut n = 0;
        while n < max && !budget.low {
            let Some(front) = self.entries.front_mut() else {
                break;
            };
            match front {
                Entry::One(m) => {
                    budget.take(m.data.len());
                    let Some(Entry::One(m)) = self.entries.pop_front() else {
                        break;
                    };
                    n += 1;
                    self.msgs -= 1;
                    out(m.conn, MsgRun::one(m.data));
                }
                Entry::Run(r) => {
                    let RunEntry { conn, at: cur } = &mut **r;
                    let conn = *conn;
                    let (run, lens, first) = (&cur.run, cur.run.lens(), cur.next);
                    let end = lens.len().min(first.saturating_add(max - n));
                    let (mut i, mut at) = (first, cur.off);
                    // Whole when the mark is not crossed before the last message (the memory
                    // only falls, and the call ends after the message that crosses it: with
                    // the default mark of 1 always, even when the run empties the queue); else
                    // message by message, to stop where it is crossed. (`end > first`: the
                    // entry is not done and `n < max`.)
                    let (raw, size) = run.sizes(&lens[first..end - 1]);
                    if budget
                        .mem
                        .checked_sub(size)
                        .is_some_and(|m| m >= budget.lowat)
                    {
                        let last = lens[end - 1];
                        budget.take(size + run.size(last));
                        (i, at) = (end, at + raw + last);
                    } else {
                        while i < end && !budget.low {
                            budget.take(run.size(lens[i]));
                            (i, at) = (i + 1, at + lens[i]);
                        }
                    }
                    n += i - first;
                    self.msgs -= i - first;
                    if i == lens.len() && first == 0 {
                        if let Some(Entry::Run(r)) = self.entries.pop_front() {
                            out(conn, r.at.run);
                        }
                    } else {
                        out(conn, run.part(first, i, cur.off));
                        (cur.next, cur.off) = (i, at);
                        if i == lens.len() {
                            self.entries.pop_front();
                        }
                    }
                }
            }
        }
        n
    }

    /// The size of the message at the front and its connection, without taking it.
    pub(crate) fn front_len(&self) -> Option<(usize, ConnectionId)> {
        match self.entries.front()? {
            Entry::One(m) => Some((m.data.len(), m.conn)),
            Entry::Run(r) => Some((r.at.next_size()?, r.conn)),
        }
    }

    /// The message at the front, made a lone entry so that it can be read in place (peeked
    /// at, or read in part by a seqpacket receiver).
    pub(crate) fn front_mut(&mut self) -> Option<&mut RxMsg> {
        if let Some(Entry::Run(_)) = self.entries.front() {
            let m = self.pop()?;
            self.msgs += 1;
            self.entries.push_front(Entry::One(m));
        }
        match self.entries.front_mut() {
            Some(Entry::One(m)) => Some(m),
            _ => None,
        }
    }

    /// Every message, in order, leaving the queue empty.
    pub(crate) fn take_all(&mut self) -> VecDeque<RxMsg> {
        let mut out = VecDeque::with_capacity(self.msgs);
        while let Some(m) = self.pop() {
            out.push_back(m);
        }
        out
    }

    /// Copies of the messages, in order (for inspection).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (bytes::Bytes, ConnectionId)> + '_ {
        self.entries
            .iter()
            .flat_map(|e| -> Vec<(bytes::Bytes, ConnectionId)> {
                match e {
                    Entry::One(m) => vec![(m.data.clone(), m.conn)],
                    Entry::Run(r) => r.at.clone().into_rest().map(|m| (m, r.conn)).collect(),
                }
            })
    }
}
