//! [`StrParser`]: one connection's stream parser, the sans-IO counterpart of the kernel's
//! strparser in receive-callback mode (`kcm-spec.md` §4.3–§4.4).
//!
//! The runtime reads from the connection straight into [`StrParser::recv_buf`], reports the
//! bytes with [`StrParser::handle_recv`], then calls [`StrParser::next_message`] until it
//! answers `Ok(None)`, or [`StrParser::next_messages`] once, which takes them all in one go at
//! a lower cost per message. Messages come out as zero-copy [`Bytes`] slices of the receive
//! buffer.
//! Time is an input: the assembly deadline is read with [`StrParser::poll_timeout`] and
//! enforced by [`StrParser::handle_timeout`].
//!
//! Deviations from the kernel, on purpose:
//! - The parser's view starts at the message's first byte (`design.md` §2, decision 1).
//! - While the length of a message is unknown, its buffered bytes are bounded by
//!   `max_msg_size` (the kernel has no bound there); see [`StrConfig::max_msg_size`].
//! - [`Parse::Skip`] (drop one message and carry on) has no kernel counterpart; its bytes are
//!   dropped as they arrive, so it is not bounded by `max_msg_size`.
//! - `aborts` is counted for every failure; the kernel's /proc always shows 0
//!   (`design.md` §2, decision 3).

mod answer;
mod batch;
mod buffer;
mod error;
#[cfg(test)]
mod tests;
mod timer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::parser::{Parse, Parser};
use crate::stats::ParserStats;
use answer::Looked;
use buffer::Need;
pub use error::StrError;

/// Limits and sizes of one [`StrParser`].
///
/// ```
/// use kcm_core::StrConfig;
/// use std::time::Duration;
///
/// let cfg = StrConfig { timeout: Some(Duration::from_secs(5)), ..StrConfig::default() };
/// assert_eq!(cfg.read_size, 64 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrConfig {
    /// Largest message accepted, header included; a longer one fails the connection with
    /// EMSGSIZE. The kernel uses the connection's `SO_RCVBUF` (`kcm-spec.md` §4.3 "Limits").
    /// It also bounds a message whose length is still unknown: once more than this many of
    /// its bytes are buffered and the parser still needs more, that is EMSGSIZE too, so a
    /// connection never holds more than `max_msg_size + read_size` bytes of buffers.
    /// Default 128 KiB, the initial TCP receive buffer (`tcp_rmem[1]`) of current Linux.
    pub max_msg_size: usize,
    /// Message assembly timeout (the kernel uses the connection's `SO_RCVTIMEO`); `None` or
    /// zero means no timeout, as in the kernel. Default `None`.
    pub timeout: Option<Duration>,
    /// Size of a receive buffer for messages whose length is unknown or smaller than this.
    /// Default 64 KiB.
    pub read_size: usize,
}

impl Default for StrConfig {
    fn default() -> Self {
        StrConfig {
            max_msg_size: 128 * 1024,
            timeout: None,
            read_size: 64 * 1024,
        }
    }
}

/// What is known about the message at the head of the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MsgState {
    /// Total length, once the parser answered it.
    len: Option<usize>,
    /// View length of the parser's latest "need more" answer (0: none yet). A length must
    /// reach past it (`kcm-spec.md` §4.3 step 4), and a non-zero value means part of the
    /// message counts as consumed (§4.4, ESTRPIPE vs ENODATA).
    need_more_view: usize,
    /// View length of the latest parser call: the parser is called again only once the
    /// view has grown.
    looked: usize,
}

/// One connection's stream parser: assembles messages from received bytes using a
/// [`Parser`], with the kernel's limits, timeout and counters (`kcm-spec.md` §4.3).
///
/// Contract with the driver: after each [`handle_recv`](Self::handle_recv), call
/// [`next_message`](Self::next_message) until it answers `Ok(None)` or `Err` (or
/// [`next_messages`](Self::next_messages) once), and only then read again; only then is
/// memory bounded by `max_msg_size + read_size` (the buffered bytes are checked against the
/// limit when the parser looks at them).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use kcm_core::{Parse, Parser, StrConfig, StrParser};
///
/// /// One length byte, then that many bytes of body.
/// #[derive(Debug)]
/// struct ByteLen;
/// impl Parser for ByteLen {
///     fn parse(&self, view: &[u8]) -> Parse {
///         view.first().map_or(Parse::NeedMore, |&n| Parse::Length(1 + n as usize))
///     }
/// }
///
/// let mut sp = StrParser::new(Arc::new(ByteLen), StrConfig::default());
/// let now = Instant::now();
/// // What the runtime does with a socket read: append into the spare capacity.
/// let input = [2, b'h', b'i', 3, b'a'];
/// sp.recv_buf().extend_from_slice(&input);
/// sp.handle_recv(input.len(), now);
/// assert_eq!(sp.next_message().unwrap().as_deref(), Some(&[2, b'h', b'i'][..]));
/// assert_eq!(sp.next_message().unwrap(), None); // the second message needs 2 more bytes
/// assert_eq!(sp.need_bytes(), 2);
/// assert_eq!(sp.stats().msgs, 1);
/// ```
#[derive(Debug)]
pub struct StrParser {
    parser: Arc<dyn Parser>,
    /// `parser.min_view()` and `parser.strip_prefix()`, asked once (they are constants of
    /// the parser, and the data path should not pay a virtual call per message for them).
    min_view: usize,
    strip_prefix: usize,
    cfg: StrConfig,
    /// Received bytes not yet delivered; `buf[0]` is the first byte of the current message
    /// (or, while skipping, the buffer is empty).
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    start: u64,
    /// Stream offset of the current message's first byte (below `start` while skipping).
    msg_start: u64,
    /// Bytes of a skipped message still to drop as they arrive.
    skip: usize,
    msg: MsgState,
    deadline: Option<Instant>,
    /// The timeout that armed `deadline`, for the error report.
    armed_timeout: Duration,
    last_recv: Option<Instant>,
    failed: Option<StrError>,
    stats: ParserStats,
}

impl StrParser {
    /// Creates a stream parser for a connection positioned at a message boundary.
    pub fn new(parser: Arc<dyn Parser>, cfg: StrConfig) -> Self {
        StrParser {
            min_view: parser.min_view(),
            strip_prefix: parser.strip_prefix(),
            parser,
            cfg,
            buf: BytesMut::new(),
            start: 0,
            msg_start: 0,
            skip: 0,
            msg: MsgState::default(),
            deadline: None,
            armed_timeout: Duration::ZERO,
            last_recv: None,
            failed: None,
            stats: ParserStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &StrConfig {
        &self.cfg
    }

    /// Changes the maximum message size; it applies from the parser's next answer on (like
    /// the kernel, which reads `sk_rcvbuf` at each check).
    pub fn set_max_msg_size(&mut self, n: usize) {
        self.cfg.max_msg_size = n;
    }

    /// Changes the assembly timeout; it applies to timers armed from now on (the kernel
    /// reads `SO_RCVTIMEO` when it arms the timer), not to one already running.
    pub fn set_timeout(&mut self, t: Option<Duration>) {
        self.cfg.timeout = t;
    }

    /// The buffer to append received bytes to, with at least 1 byte of spare capacity.
    ///
    /// Write only into the spare capacity (e.g. `read` into `spare_capacity_mut()` then
    /// `set_len`, or `extend_from_slice` of at most that many bytes), then report the count
    /// with [`handle_recv`](Self::handle_recv). Sizing: with the message length unknown, at
    /// least `min(read_size, 4 KiB)` spare, and a fresh buffer has `read_size` spare; with a
    /// known length larger than `read_size`, the partial message is moved into a buffer of
    /// exactly that length, so the spare capacity is exactly the missing remainder.
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        let need = match self.msg.len {
            Some(len) if self.skip == 0 && len > self.buf.len() => Need::Length(len),
            _ => Need::Read,
        };
        buffer::prepare(&mut self.buf, need, self.cfg.read_size);
        &mut self.buf
    }

    /// Reports that `n` bytes were appended to [`recv_buf`](Self::recv_buf) at `now`.
    ///
    /// Counts them in `bytes`, drops those that belong to a skipped message, and arms the
    /// assembly timer if they start a message.
    pub fn handle_recv(&mut self, n: usize, now: Instant) {
        self.stats.bytes += n as u64;
        self.last_recv = Some(now);
        if self.failed.is_some() {
            return;
        }
        if self.skip > 0 {
            // Skipped bytes are dropped as they arrive, never accumulated.
            let drop = self.skip.min(self.buf.len());
            self.buf.advance(drop);
            self.start += drop as u64;
            self.skip -= drop;
            if self.skip == 0 {
                self.end_message();
            }
            return;
        }
        // §4.3 "Limits": armed by the first bytes of a message, never re-armed per chunk.
        if self.deadline.is_none() && !self.buf.is_empty() {
            self.arm(now);
        }
    }

    /// The next complete message, without its first `Parser::strip_prefix` bytes.
    ///
    /// `Ok(None)`: more bytes are needed. `Err`: the stream failed (`kcm-spec.md` §4.4); this
    /// and every later call return the same error and no more messages come out. The parser
    /// is called here, lazily, once per growth of the current message's bytes.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, StrError> {
        self.next_message_answered(None)
    }

    /// [`next_message`](Self::next_message), where `answered` (if any) is the parser's
    /// answer for the current message's bytes as they are now, from a caller that already
    /// asked (see `look`); such an answer is only valid while nothing is known yet about the
    /// message at the head of the buffer.
    fn next_message_answered(
        &mut self,
        mut answered: Option<Parse>,
    ) -> Result<Option<Bytes>, StrError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            if self.skip > 0 || self.buf.is_empty() {
                return Ok(None);
            }
            let len = match self.msg.len {
                Some(len) => len,
                None if self.buf.len() <= self.msg.looked => return Ok(None),
                None => match self.look(answered.take())? {
                    Looked::Length(len) => len,
                    Looked::NeedMore => return Ok(None),
                    // The loop waits out the rest of the skip, or looks at the next message
                    // if the skipped one ended inside the buffer.
                    Looked::Skipped => continue,
                },
            };
            if self.buf.len() < len {
                return Ok(None);
            }
            let mut msg = self.buf.split_to(len).freeze();
            self.start += len as u64;
            self.stats.msgs += 1;
            self.end_message();
            msg.advance(self.strip_prefix.min(msg.len()));
            return Ok(Some(msg));
        }
    }

    /// Bytes still missing of the current message when its length is known (or of a
    /// skipped message), else 0; /proc's `RxWait=<n>` (`kcm-spec.md` §7.2).
    pub fn need_bytes(&self) -> usize {
        if self.skip > 0 {
            return self.skip;
        }
        match self.msg.len {
            Some(len) => len.saturating_sub(self.buf.len()),
            None => 0,
        }
    }

    /// The failure that stopped this parser, if any.
    pub fn failed(&self) -> Option<&StrError> {
        self.failed.as_ref()
    }

    /// The counters.
    pub fn stats(&self) -> &ParserStats {
        &self.stats
    }

    /// Bytes of receive buffer this parser holds (its buffer's capacity): the connection's
    /// memory figure. Delivered messages are not included; they share the allocation they
    /// were read into only as long as the application keeps them.
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Releases the receive buffer if it holds no bytes, so that an idle connection holds
    /// no buffer memory; the next [`recv_buf`](Self::recv_buf) allocates again.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Removes and returns every byte received but not delivered, starting at the current
    /// message's first byte (for unattach: the application continues the stream there).
    ///
    /// After [`StrError::Interrupted`] these are exactly the bytes from the interrupted
    /// message on. After other failures the failed message is included, but the stream
    /// cannot be trusted to be at a message boundary. The current message is abandoned:
    /// parsing (if not failed) would continue at the next byte received, except that the
    /// rest of a skipped message is still dropped.
    pub fn take_unparsed(&mut self) -> Bytes {
        let out = self.buf.split().freeze();
        self.start += out.len() as u64;
        if self.skip == 0 {
            self.end_message();
        }
        out
    }
}
