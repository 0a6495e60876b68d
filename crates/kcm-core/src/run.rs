//! [`MsgRun`]: whole messages back to back in one buffer, the unit in which a read pass travels
//! from the stream parser ([`StrParser::next_runs`](crate::StrParser::next_runs)) to the
//! multiplexor ([`MuxCore::rx_pass_runs`](crate::mux::MuxCore::rx_pass_runs)) and waits on an
//! endpoint's queue.
//!
//! A pipelined read pass holds dozens of small messages. Handing each over as its own `Bytes`
//! cost a reference count, a queue entry and several moves per message on the way in and again
//! on the way out; a run is one buffer and a list of lengths, and a message's own `Bytes` is cut
//! from it only when a receiver takes it.

use bytes::{Buf, Bytes};

/// The message of `len` bytes that starts `off` bytes into `data`, without its first `strip`
/// bytes. Sliced whole, then stripped: a message stripped to nothing still holds its share of
/// the buffer (an empty slice would not), so the buffer is reclaimed when the last message cut
/// from it goes, however they were stripped; an empty message (a run of one already stripped
/// to nothing) holds it too.
#[inline]
pub(crate) fn cut(data: &Bytes, off: usize, len: usize, strip: usize) -> Bytes {
    if len == 0 {
        let mut m = data.clone();
        m.advance(m.len());
        return m;
    }
    let mut m = data.slice(off..off + len);
    m.advance(strip.min(len));
    m
}

/// A run being handed out in order: its messages from the `next`-th on, which starts `off`
/// bytes into its buffer.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    pub(crate) run: MsgRun,
    pub(crate) next: usize,
    pub(crate) off: usize,
}

impl Cursor {
    pub(crate) fn new(run: MsgRun) -> Cursor {
        Cursor {
            run,
            next: 0,
            off: 0,
        }
    }

    /// Every message has been handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.next >= self.run.len()
    }

    /// The size of the next message, once stripped.
    pub(crate) fn next_size(&self) -> Option<usize> {
        self.run.lens().get(self.next).map(|&l| self.run.size(l))
    }

    /// Hands out the next message.
    #[inline]
    pub(crate) fn next_message(&mut self) -> Option<Bytes> {
        let len = *self.run.lens().get(self.next)?;
        let m = self.run.message(self.off, len);
        (self.next, self.off) = (self.next + 1, self.off + len);
        Some(m)
    }

    /// The messages not handed out yet, in order. A run of one not started gives its own
    /// `Bytes` ([`MsgRun::into_only`]: no new reference to the buffer).
    pub(crate) fn into_rest(self) -> impl Iterator<Item = Bytes> {
        // Decided once, not per message (a check in the loop made `recv_many` 1.9 × slower).
        let (only, rest) = if self.next == 0 && self.run.len() == 1 {
            (Some(self.run.into_only()), None)
        } else {
            (None, Some(self))
        };
        only.into_iter().chain(rest.into_iter().flatten())
    }
}

impl Iterator for Cursor {
    type Item = Bytes;

    #[inline]
    fn next(&mut self) -> Option<Bytes> {
        self.next_message()
    }
}

/// Whole messages back to back in one buffer.
///
/// Message `i` is the `lens[i]` bytes that follow the messages before it in the buffer, minus
/// its first `strip` bytes ([`Parser::strip_prefix`](crate::Parser::strip_prefix); a message
/// shorter than that is stripped to nothing). A run of one message costs no allocation.
///
/// ```
/// use bytes::Bytes;
/// use kcm_core::MsgRun;
///
/// let run = MsgRun::new(Bytes::from_static(b"\x02ab\x01c"), vec![3, 2], 1);
/// assert_eq!(run.len(), 2);
/// assert_eq!(run.message_bytes(), 3);
/// let msgs: Vec<Bytes> = run.into_messages().collect();
/// assert_eq!(msgs, [&b"ab"[..], b"c"]);
/// assert_eq!(MsgRun::one(Bytes::from_static(b"xyz")).len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct MsgRun {
    data: Bytes,
    lens: Lens,
    strip: usize,
}

/// The lengths of a run's messages: one without an allocation.
#[derive(Debug, Clone)]
enum Lens {
    One(usize),
    Many(Vec<usize>),
}

impl MsgRun {
    /// A run of the messages of `lens` laid back to back in `data`, each stripped of its first
    /// `strip` bytes when it is taken.
    ///
    /// # Panics
    /// If the lengths add up to more than `data` holds.
    pub fn new(data: Bytes, lens: Vec<usize>, strip: usize) -> MsgRun {
        let total = lens.iter().try_fold(0usize, |a, &l| a.checked_add(l));
        assert!(
            total.is_some_and(|t| t <= data.len()),
            "message lengths beyond the run's buffer"
        );
        MsgRun {
            data,
            lens: Lens::Many(lens),
            strip,
        }
    }

    /// A run of one message, as it is (nothing to strip).
    pub fn one(msg: Bytes) -> MsgRun {
        MsgRun {
            lens: Lens::One(msg.len()),
            data: msg,
            strip: 0,
        }
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.lens().len()
    }

    /// Whether the run holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages' bytes once stripped (what a receiver gets, and what a receive queue
    /// counts).
    pub fn message_bytes(&self) -> usize {
        self.sizes(self.lens()).1
    }

    /// The messages, in order.
    pub fn into_messages(self) -> impl Iterator<Item = Bytes> {
        Cursor::new(self).into_rest()
    }

    /// The messages, in order, borrowed: no reference count and no allocation per message.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kcm_core::MsgRun;
    ///
    /// let run = MsgRun::new(Bytes::from_static(b"\x02ab\x01c\x00"), vec![3, 2, 1], 1);
    /// let msgs: Vec<&[u8]> = run.iter().map(|m| m.data()).collect();
    /// assert_eq!(msgs, [&b"ab"[..], b"c", b""]);
    /// // A message can still be kept as its own zero-copy `Bytes`.
    /// assert_eq!(run.iter().nth(1).unwrap().to_bytes(), &b"c"[..]);
    /// ```
    pub fn iter(&self) -> RunIter<'_> {
        RunIter {
            run: self,
            next: 0,
            off: 0,
        }
    }

    /// The run of the `lens` messages a scan found back to back in `chunk`, which holds
    /// exactly them (so no check of their sum, as [`MsgRun::new`] makes).
    pub(crate) fn from_scan(chunk: Bytes, lens: &[usize], strip: usize) -> MsgRun {
        debug_assert_eq!(lens.iter().sum::<usize>(), chunk.len());
        if let [len] = lens {
            // One message: the chunk itself, no list of lengths to allocate.
            let mut msg = chunk;
            msg.advance(strip.min(*len));
            return MsgRun::one(msg);
        }
        MsgRun {
            data: chunk,
            lens: Lens::Many(lens.to_vec()),
            strip,
        }
    }

    /// Each message's length in the buffer, before stripping.
    pub(crate) fn lens(&self) -> &[usize] {
        match &self.lens {
            Lens::One(l) => std::slice::from_ref(l),
            Lens::Many(v) => v,
        }
    }

    /// A message of `len` bytes in the buffer once stripped.
    #[inline]
    pub(crate) fn size(&self, len: usize) -> usize {
        len - self.strip.min(len)
    }

    /// The bytes in the buffer of messages of `lens`, and their sizes once stripped. With
    /// nothing to strip (most parsers) it is one sum, which the compiler vectorises.
    #[inline]
    pub(crate) fn sizes(&self, lens: &[usize]) -> (usize, usize) {
        if self.strip == 0 {
            let raw = lens.iter().sum();
            return (raw, raw);
        }
        lens.iter()
            .fold((0, 0), |(r, s), &l| (r + l, s + self.size(l)))
    }

    /// The message that starts `off` bytes into the buffer and is `len` bytes long there.
    #[inline]
    pub(crate) fn message(&self, off: usize, len: usize) -> Bytes {
        cut(&self.data, off, len, self.strip)
    }

    /// The first message: for a run made by [`MsgRun::one`], the very `Bytes` it was given
    /// (no new reference to the buffer).
    #[inline(always)]
    pub(crate) fn into_only(self) -> Bytes {
        match self.lens {
            Lens::One(len) if self.strip == 0 && len == self.data.len() => self.data,
            _ => {
                let len = self.lens().first().copied().unwrap_or(0);
                self.message(0, len)
            }
        }
    }

    /// The messages `from..to` of this run (starting `off` bytes in) as a run of their own.
    pub(crate) fn part(&self, from: usize, to: usize, off: usize) -> MsgRun {
        let lens = &self.lens()[from..to];
        if let [len] = lens {
            return MsgRun::one(self.message(off, *len));
        }
        let end = off + self.sizes(lens).0;
        MsgRun {
            data: self.data.slice(off..end),
            lens: Lens::Many(lens.to_vec()),
            strip: self.strip,
        }
    }
}

/// The messages of a [`MsgRun`], borrowed, in order ([`MsgRun::iter`]).
#[derive(Debug, Clone)]
pub struct RunIter<'a> {
    run: &'a MsgRun,
    next: usize,
    off: usize,
}

impl<'a> Iterator for RunIter<'a> {
    type Item = RunMessage<'a>;

    #[inline]
    fn next(&mut self) -> Option<RunMessage<'a>> {
        let len = *self.run.lens().get(self.next)?;
        let m = RunMessage {
            run: self.run,
            off: self.off,
            len,
        };
        self.next += 1;
        self.off += len;
        Some(m)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.run.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for RunIter<'_> {}

/// One message of a [`MsgRun`], borrowed from its buffer.
#[derive(Debug, Clone, Copy)]
pub struct RunMessage<'a> {
    run: &'a MsgRun,
    off: usize,
    len: usize,
}

impl<'a> RunMessage<'a> {
    /// The message's bytes (stripped as the run says).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        let strip = self.run.strip.min(self.len);
        &self.run.data[self.off + strip..self.off + self.len]
    }

    /// The message as its own `Bytes`: a zero-copy slice of the run's buffer, as
    /// [`MsgRun::into_messages`] would give it.
    pub fn to_bytes(&self) -> Bytes {
        self.run.message(self.off, self.len)
    }
}
