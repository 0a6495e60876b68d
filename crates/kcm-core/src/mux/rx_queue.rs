//! An endpoint's receive queue: whole messages in arrival order, kept as the runs they
//! arrived in ([`MsgRun`]) until a receiver takes them one by one.
//!
//! A run is queued as one entry and each message's `Bytes` is cut from it only when it is
//! taken, so a read pass of dozens of small messages costs one queue entry rather than one per
//! message (and no move of each message on the way in). Everything that looks at the queue
//! message by message (a partial seqpacket read, peeking, requeuing on `KCM_RECV_DISABLE`)
//! sees the same messages in the same order as a queue of single messages would hold.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{ConnectionId, RxMsg};
use crate::run::{Cursor, MsgRun};

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
    /// The messages of a run not taken yet.
    Run {
        conn: ConnectionId,
        at: Cursor,
    },
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
                self.entries.push_back(Entry::Run {
                    conn,
                    at: Cursor::new(run),
                });
            }
        }
    }

    /// Takes the message at the front.
    pub(crate) fn pop(&mut self) -> Option<RxMsg> {
        let mut taken = None;
        self.take(1, |data, conn| {
            taken = Some(RxMsg { data, conn });
            false
        });
        taken
    }

    /// Takes up to `max` messages off the front, in order, handing each to `f` until it
    /// answers `false`; returns how many it took (a run's messages are cut in one loop).
    #[inline]
    pub(crate) fn take(
        &mut self,
        max: usize,
        mut f: impl FnMut(Bytes, ConnectionId) -> bool,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(front) = self.entries.front_mut() else {
                break;
            };
            match front {
                Entry::One(_) => {
                    let Some(Entry::One(m)) = self.entries.pop_front() else {
                        break;
                    };
                    n += 1;
                    self.msgs -= 1;
                    if !f(m.data, m.conn) {
                        break;
                    }
                }
                Entry::Run { conn, at: cur } => {
                    // Where the run stands, in locals for the loop: written back once.
                    let (run, lens, first) = (&cur.run, cur.run.lens(), cur.next);
                    let (mut i, mut at) = (first, cur.off);
                    let mut stop = false;
                    while n < max && i < lens.len() {
                        let len = lens[i];
                        let data = run.message(at, len);
                        (i, at, n) = (i + 1, at + len, n + 1);
                        if !f(data, *conn) {
                            stop = true;
                            break;
                        }
                    }
                    self.msgs -= i - first;
                    (cur.next, cur.off) = (i, at);
                    if i == lens.len() {
                        self.entries.pop_front();
                    }
                    if stop {
                        break;
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
            Entry::Run { conn, at } => Some((at.next_size()?, *conn)),
        }
    }

    /// The message at the front, made a lone entry so that it can be read in place (peeked
    /// at, or read in part by a seqpacket receiver).
    pub(crate) fn front_mut(&mut self) -> Option<&mut RxMsg> {
        if let Some(Entry::Run { .. }) = self.entries.front() {
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
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Bytes, ConnectionId)> + '_ {
        self.entries
            .iter()
            .flat_map(|e| -> Vec<(Bytes, ConnectionId)> {
                match e {
                    Entry::One(m) => vec![(m.data.clone(), m.conn)],
                    Entry::Run { conn, at } => at.clone().into_rest().map(|m| (m, *conn)).collect(),
                }
            })
    }
}
