//! Batch extraction: every complete message of a read at once, the receive buffer split once
//! per run of messages instead of once per message (splitting a `BytesMut` is most of a small
//! message's parsing cost).

use bytes::Bytes;

use super::{MsgState, StrError, StrParser};
use crate::parser::Parse;
use crate::run::{cut, MsgRun};

/// Most messages one scan records before the buffer is split. The record lives on the stack,
/// so a connection keeps no memory for it whatever the message sizes; a longer run of
/// messages just takes several scans.
pub(super) const RUN: usize = 64;

impl StrParser {
    /// Appends every complete message available now to `out`, each without its first
    /// `Parser::strip_prefix` bytes, and returns how many it appended: the same messages, in
    /// the same order and with the same effects (counters, timer, [`need_bytes`]) as calling
    /// [`next_message`](Self::next_message) until it answers `Ok(None)`, at a lower cost per
    /// message.
    ///
    /// `Err`: the stream failed (`kcm-spec.md` §4.4). The messages that came before the
    /// failure in the stream have been appended to `out` all the same (deliver them, as the
    /// kernel does); no message comes out after it, and every later call returns the same
    /// error. Contract with the driver as for `next_message`: call this after each
    /// [`handle_recv`](Self::handle_recv), before reading again.
    ///
    /// [`need_bytes`]: Self::need_bytes
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use kcm_core::{Parse, Parser, StrConfig, StrError, StrParser};
    ///
    /// /// One length byte, then that many bytes of body; a length byte of 255 is corrupt.
    /// #[derive(Debug)]
    /// struct ByteLen;
    /// impl Parser for ByteLen {
    ///     fn parse(&self, view: &[u8]) -> Parse {
    ///         match view.first() {
    ///             Some(255) => Parse::Error(kcm_core::errno::EBADMSG),
    ///             Some(&n) => Parse::Length(1 + n as usize),
    ///             None => Parse::NeedMore,
    ///         }
    ///     }
    /// }
    ///
    /// let mut sp = StrParser::new(Arc::new(ByteLen), StrConfig::default());
    /// let now = Instant::now();
    /// let input = [2, b'h', b'i', 0, 3, b'a'];
    /// sp.recv_buf().extend_from_slice(&input);
    /// sp.handle_recv(input.len(), now);
    /// let mut out = Vec::new();
    /// assert_eq!(sp.next_messages(&mut out), Ok(2));
    /// assert_eq!(out, [&[2, b'h', b'i'][..], &[0][..]]);
    /// assert_eq!(sp.need_bytes(), 2); // the third message needs 2 more bytes
    ///
    /// // A corrupt header after one more complete message: that message still comes out.
    /// let input = [b'b', b'c', 255];
    /// sp.recv_buf().extend_from_slice(&input);
    /// sp.handle_recv(input.len(), now);
    /// out.clear();
    /// let err = sp.next_messages(&mut out).unwrap_err();
    /// assert!(matches!(err, StrError::Parser { offset: 8, .. }));
    /// assert_eq!(out, [&[3, b'a', b'b', b'c'][..]]);
    /// assert_eq!(sp.stats().msgs, 3);
    /// ```
    pub fn next_messages(&mut self, out: &mut Vec<Bytes>) -> Result<usize, StrError> {
        self.drain_into(out)
    }

    /// [`next_messages`](Self::next_messages), with the messages appended as runs: each run of
    /// whole messages found at the head of the buffer as one [`MsgRun`] (one buffer and its
    /// message lengths, no `Bytes` per message yet), anything the general path delivers (the
    /// end of a message that straddled reads, a message found after a skip) as a run of one.
    /// The same messages, in the same order, with the same effects; returns how many.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use kcm_core::{presets, StrConfig, StrParser};
    ///
    /// let mut sp = StrParser::new(Arc::new(presets::thrift()), StrConfig::default());
    /// let input = [0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c', 0, 0];
    /// sp.recv_buf().extend_from_slice(&input);
    /// sp.handle_recv(input.len(), Instant::now());
    /// let mut runs = Vec::new();
    /// assert_eq!(sp.next_runs(&mut runs), Ok(2));
    /// assert_eq!(runs.len(), 1, "both messages in one run");
    /// let msgs: Vec<_> = runs.pop().unwrap().into_messages().collect();
    /// assert_eq!(msgs, [&[0, 0, 0, 1, b'a'][..], &[0, 0, 0, 2, b'b', b'c'][..]]);
    /// ```
    pub fn next_runs(&mut self, out: &mut impl Extend<MsgRun>) -> Result<usize, StrError> {
        self.drain_into(&mut Runs(out))
    }

    /// The walk of `next_messages` and `next_runs`, appending to either.
    fn drain_into(&mut self, out: &mut impl Sink) -> Result<usize, StrError> {
        let mut count = 0;
        // The scans' record of message lengths, filled in place (returned by value with its
        // count, it was copied once per read pass: 512 bytes).
        let mut lens = [0; RUN];
        loop {
            // Fast path: whole messages at the head of the buffer, found without splitting it.
            let mut answered = None;
            while self.at_boundary() {
                let (n, stop) = self.scan(&mut lens);
                self.take_run(&lens[..n], out);
                count += n;
                if n < RUN {
                    answered = stop;
                    break;
                }
            }
            // Anything else (the end of a message in progress, a partial message, a skip, a
            // limit, an error) the general way, which does all of its accounting. It starts
            // from the answer that stopped the scan, if any, so the parser is shown each view
            // exactly as often as `next_message` shows it. After a message, back to the scan.
            match self.next_message_answered(answered) {
                Ok(Some(m)) => {
                    out.one(m);
                    count += 1;
                }
                Ok(None) => return Ok(count),
                Err(e) => return Err(e),
            }
        }
    }

    /// No message in progress: not failed, not skipping, nothing known about the message at
    /// `buf[0]` (the parser has not looked at it).
    fn at_boundary(&self) -> bool {
        self.failed.is_none() && self.skip == 0 && self.msg == MsgState::default()
    }

    /// Asks the parser about the messages at the head of the buffer, one after the other,
    /// changing nothing. A message is taken only when `next_message` would deliver it with no
    /// other effect than counting it: a first answer that is a length of at least 1 (a first
    /// look has no earlier "need more" to reach past), within `max_msg_size`, all of it here.
    /// Any other answer ends the scan and is left to the general path, which counts it.
    /// Returns how many complete messages it found (their lengths are the first entries of
    /// `lens`) and the parser's answer that ended the scan, if one did.
    fn scan(&self, lens: &mut [usize; RUN]) -> (usize, Option<Parse>) {
        // As `next_message`: no call on an empty view; below the parser's minimum the general
        // path answers "need more" (and counts it). One virtual call for the whole walk.
        self.parser.scan(&self.buf, self.cfg.max_msg_size, lens)
    }

    /// Delivers the messages of a scan: one split of the buffer, handed to `out` whole.
    /// Ending the last message is all that ending each in turn would leave behind (the next
    /// message's start and its timer, armed at the latest receive if its bytes are here).
    fn take_run(&mut self, lens: &[usize], out: &mut impl Sink) {
        if lens.is_empty() {
            return;
        }
        let end: usize = lens.iter().sum();
        let chunk = self.buf.split_to(end).freeze();
        self.start += end as u64;
        self.stats.msgs += lens.len() as u64;
        out.run(chunk, lens, self.strip_prefix);
        self.end_message();
    }
}

/// Where a drain of the stream parser puts what it finds.
trait Sink {
    /// Whole messages back to back in `chunk`, of the lengths `lens`, each to be stripped of
    /// its first `strip` bytes.
    fn run(&mut self, chunk: Bytes, lens: &[usize], strip: usize);
    /// One message, as it is.
    fn one(&mut self, m: Bytes);
}

/// A message each.
impl Sink for Vec<Bytes> {
    fn run(&mut self, chunk: Bytes, lens: &[usize], strip: usize) {
        // Room for the run at once, not a doubling per push.
        self.reserve(lens.len());
        let mut off = 0;
        for &len in lens {
            // As `next_message` cuts a message, and as a receiver's cut from a run.
            self.push(cut(&chunk, off, len, strip));
            off += len;
        }
    }

    fn one(&mut self, m: Bytes) {
        self.push(m);
    }
}

/// A run each, into any collection (the runtime's lives on the stack).
struct Runs<'a, E>(&'a mut E);

impl<E: Extend<MsgRun>> Sink for Runs<'_, E> {
    fn run(&mut self, chunk: Bytes, lens: &[usize], strip: usize) {
        self.0.extend([MsgRun::from_scan(chunk, lens, strip)]);
    }

    fn one(&mut self, m: Bytes) {
        self.0.extend([MsgRun::one(m)]);
    }
}
