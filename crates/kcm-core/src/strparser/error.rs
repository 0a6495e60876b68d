//! [`StrError`]: why a connection's stream parser stopped for good.

use std::fmt;
use std::time::Duration;

use crate::errno;

/// Why a [`StrParser`](super::StrParser) stopped. Once one of these is returned the connection
/// receives nothing more (`kcm-spec.md` §4.4); its transmit side is unaffected.
///
/// Every variant records `offset`, the byte offset in the connection's receive stream at which
/// the failing message started, so that a report can point at the exact bytes. Peer input can
/// cause every one of these: they are reports about the stream, never bugs in the caller.
///
/// ```
/// use kcm_core::StrError;
///
/// let e = StrError::TooBig { offset: 1234, length: Some(70000), seen: 8, max: 65536 };
/// assert_eq!(e.errno(), kcm_core::errno::EMSGSIZE);
/// assert_eq!(e.offset(), 1234);
/// assert_eq!(
///     e.to_string(),
///     "message of 70000 bytes exceeds the maximum 65536 (EMSGSIZE) at stream offset 1234"
/// );
/// ```
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StrError {
    /// The message is longer than the maximum message size (EMSGSIZE, `msg_too_big`).
    #[error("{}", TooBigDisplay { length: *length, seen: *seen, max: *max, offset: *offset })]
    TooBig {
        /// Stream offset of the message's first byte.
        offset: u64,
        /// The length the parser answered, or `None` when the parser still wanted more bytes
        /// after more than `max` bytes of the message had arrived.
        length: Option<usize>,
        /// Bytes of the message received when the limit was hit.
        seen: usize,
        /// The maximum message size in force.
        max: usize,
    },
    /// The parser answered a length that does not reach past the bytes it had already been
    /// shown and answered "need more" for (EPROTO, `bad_hdr_len`; `kcm-spec.md` §4.3 step 4).
    #[error(
        "parser answered a length of {length} bytes after asking for more than {seen} \
         (EPROTO) at stream offset {offset}"
    )]
    BadLength {
        /// Stream offset of the message's first byte.
        offset: u64,
        /// The length the parser answered (for a skip: the bytes it asked to drop).
        length: usize,
        /// The view length of the parser's previous "need more" answer for this message.
        seen: usize,
    },
    /// The message was not complete within the assembly timeout (ETIMEDOUT, `msg_timeouts`).
    #[error(
        "message assembly exceeded {timeout:?} with {seen} bytes received (ETIMEDOUT) \
         at stream offset {offset}"
    )]
    Timeout {
        /// Stream offset of the message's first byte.
        offset: u64,
        /// Bytes of the message received (or skipped) when the timer fired.
        seen: usize,
        /// The timeout that was in force when the timer was armed.
        timeout: Duration,
    },
    /// The parser reported a corrupt stream with this errno (`interrupted`).
    #[error("parser failed with errno {errno} at stream offset {offset}")]
    Parser {
        /// Stream offset of the message's first byte.
        offset: u64,
        /// The parser's errno (positive).
        errno: i32,
    },
    /// The parser answered `ESTRPIPE` on its first look at a message: it hands the stream
    /// back to the application, whose next byte is this message's first (`interrupted`).
    #[error("parser handed the stream back (ESTRPIPE) at message start, stream offset {offset}")]
    Interrupted {
        /// Stream offset of the message's first byte; the unparsed bytes start here.
        offset: u64,
    },
    /// The parser answered `ESTRPIPE` after it had already answered "need more" for the
    /// message, so part of the message counts as consumed and the stream cannot be handed
    /// back at a boundary (ENODATA, `unrecov_intr`).
    #[error(
        "parser handed the stream back (ESTRPIPE) {seen} bytes into a message: unrecoverable \
         (ENODATA) at stream offset {offset}"
    )]
    Unrecoverable {
        /// Stream offset of the message's first byte.
        offset: u64,
        /// Bytes of the message the parser had already answered "need more" for.
        seen: usize,
    },
}

impl StrError {
    /// The errno the kernel would post on the connection for this failure
    /// (`kcm-spec.md` §3.6, §4.4).
    pub fn errno(&self) -> i32 {
        match self {
            StrError::TooBig { .. } => errno::EMSGSIZE,
            StrError::BadLength { .. } => errno::EPROTO,
            StrError::Timeout { .. } => errno::ETIMEDOUT,
            StrError::Parser { errno, .. } => *errno,
            StrError::Interrupted { .. } => errno::ESTRPIPE,
            StrError::Unrecoverable { .. } => errno::ENODATA,
        }
    }

    /// Stream offset of the first byte of the message that failed.
    pub fn offset(&self) -> u64 {
        match self {
            StrError::TooBig { offset, .. }
            | StrError::BadLength { offset, .. }
            | StrError::Timeout { offset, .. }
            | StrError::Parser { offset, .. }
            | StrError::Interrupted { offset }
            | StrError::Unrecoverable { offset, .. } => *offset,
        }
    }
}

/// Display of [`StrError::TooBig`], which reads differently when no length was known.
struct TooBigDisplay {
    length: Option<usize>,
    seen: usize,
    max: usize,
    offset: u64,
}

impl fmt::Display for TooBigDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.length {
            Some(len) => write!(f, "message of {len} bytes exceeds the maximum {}", self.max)?,
            None => write!(
                f,
                "message header still incomplete after {} bytes exceeds the maximum {}",
                self.seen, self.max
            )?,
        }
        write!(f, " (EMSGSIZE) at stream offset {}", self.offset)
    }
}
