//! The [`Parser`] contract: KCM's message-boundary callback, as a Rust trait.
//!
//! Linux KCM runs a BPF program on the bytes of the message being assembled and reads its
//! return value as "total length", "need more" or "error" (`kcm-spec.md` §4.1). This trait is
//! that contract. One difference, chosen on purpose (`design.md` §2, decision 1): the view a
//! parser is shown always begins at the first byte of the current message, never at the start
//! of some earlier TCP segment, so a parser that reads its header at offset 0 is always right.

use std::fmt;

/// Linux errno values used by the core (x86-64/arm64 numbering, which is the generic one).
///
/// The core has no libc dependency; these are the numbers the kernel's KCM and strparser post.
pub mod errno {
    /// Connection reset / broken pipe: what KCM posts on connections and endpoints.
    pub const EPIPE: i32 = 32;
    /// "Try again": the operation would block.
    pub const EAGAIN: i32 = 11;
    /// Message longer than the connection's maximum message size.
    pub const EMSGSIZE: i32 = 90;
    /// Length does not extend past the bytes already seen (bad header length).
    pub const EPROTO: i32 = 71;
    /// Message assembly took longer than the connection's receive timeout.
    pub const ETIMEDOUT: i32 = 110;
    /// Parser asked to give the stream back to user space (strparser "interrupted").
    pub const ESTRPIPE: i32 = 86;
    /// `-ESTRPIPE` after part of the message was consumed: the stream is unrecoverable.
    pub const ENODATA: i32 = 61;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Bad message (used by parsers for malformed headers).
    pub const EBADMSG: i32 = 74;
    /// No such entry: the connection is not attached to this mux.
    pub const ENOENT: i32 = 2;
    /// Bad descriptor: the endpoint is closed.
    pub const EBADF: i32 = 9;
    /// Bad address: a parser program faulted.
    pub const EFAULT: i32 = 14;
    /// Too many open descriptors: no index left for another endpoint or connection.
    pub const EMFILE: i32 = 24;
    /// Connection reset by the peer.
    pub const ECONNRESET: i32 = 104;
    /// Not connected: an addressed send names a connection that is not attached.
    pub const ENOTCONN: i32 = 107;
    /// Operation already in progress: the connection is already being unattached.
    pub const EALREADY: i32 = 114;
    /// Operation not supported: the socket cannot be attached (not a connected stream).
    pub const EOPNOTSUPP: i32 = 95;
}

/// What a [`Parser`] answers about the bytes of the current message seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parse {
    /// The current message is this many bytes long in total, header included (KCM: a
    /// positive return value). Must be at least 1.
    Length(usize),
    /// Not enough bytes yet to know the length (KCM: return value 0).
    NeedMore,
    /// The current message is this many bytes long but must be dropped, not delivered: the
    /// stream parser skips the bytes, counts the drop and carries on (Netty's
    /// `discardingTooLongFrame` policy). Kernel parsers cannot express this.
    Skip(usize),
    /// The stream is corrupt: the connection stops receiving and fails with this errno,
    /// a positive number (KCM: a negative return value `-errno`).
    Error(i32),
}

impl Parse {
    /// Converts a KCM/BPF parser's raw `int` return value: `> 0` is a length, `0` is
    /// "need more", `< 0` is `-errno`.
    ///
    /// ```
    /// use kcm_core::{Parse, errno};
    /// assert_eq!(Parse::from_raw(8), Parse::Length(8));
    /// assert_eq!(Parse::from_raw(0), Parse::NeedMore);
    /// assert_eq!(Parse::from_raw(-errno::EPROTO as i64), Parse::Error(errno::EPROTO));
    /// ```
    pub fn from_raw(ret: i64) -> Parse {
        // The kernel converts the program's return value to a signed int (`kcm-spec.md` §4.1).
        let ret = ret as i32;
        match ret {
            0 => Parse::NeedMore,
            n if n > 0 => Parse::Length(n as usize),
            // i32::MIN cannot be negated; treat it as a generic protocol error.
            i32::MIN => Parse::Error(errno::EPROTO),
            n => Parse::Error(-n),
        }
    }
}

/// Finds message boundaries in a byte stream (KCM's parser program).
///
/// `parse` is called with the bytes of the current message received so far, starting at the
/// message's first byte (and possibly followed by bytes of later messages), each time more bytes
/// arrive, until it answers something other than [`Parse::NeedMore`]. It must be a pure
/// function of `view`: it may be called again with a longer view of the same message.
///
/// Implementations must never panic on any input: the bytes come from a peer that
/// could represent an attacker.
///
/// ```
/// use kcm_core::{Parse, Parser};
///
/// /// One length byte, then that many bytes of body.
/// #[derive(Debug)]
/// struct ByteLen;
///
/// impl Parser for ByteLen {
///     fn parse(&self, view: &[u8]) -> Parse {
///         match view.first() {
///             Some(&n) => Parse::Length(1 + n as usize),
///             None => Parse::NeedMore,
///         }
///     }
/// }
///
/// assert_eq!(ByteLen.parse(&[3, b'a']), Parse::Length(4));
/// assert_eq!(ByteLen.parse(&[]), Parse::NeedMore);
/// ```
pub trait Parser: Send + Sync + fmt::Debug {
    /// Answers the total length of the message starting at `view[0]`, or that more bytes are
    /// needed, or that the stream is corrupt.
    fn parse(&self, view: &[u8]) -> Parse;

    /// How many leading bytes of each message to remove before delivery (a length-field
    /// parser's "strip prefix" option). KCM delivers whole messages, so the default is 0.
    fn strip_prefix(&self) -> usize {
        0
    }

    /// The fewest bytes with which `parse` can answer anything but `NeedMore` (a hint that
    /// saves calls; 1 is always correct).
    fn min_view(&self) -> usize {
        1
    }

    /// The messages that follow one another from `buf[0]`, found the way the stream parser
    /// walks a read pass: `parse` at each message's first byte while the answer is a length
    /// in `1..=max` that `buf` holds entirely. Stores the lengths in `lens` (at most its
    /// length) and returns how many, with the answer that stopped the walk, if one did (none
    /// when `lens` is full, `buf` is used up or the rest is shorter than
    /// [`min_view`](Parser::min_view)).
    ///
    /// Only an optimisation: the default is monomorphised for each parser type, so the stream
    /// parser pays one virtual call per read pass instead of one per message. Overriding it
    /// is never necessary, and an override must answer exactly as the default does.
    ///
    /// ```
    /// use kcm_core::{presets, Parse, Parser};
    /// let mut lens = [0; 8];
    /// let buf = [0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c', 0, 0, 0, 9, b'd'];
    /// let (n, stop) = presets::thrift().scan(&buf, 1 << 20, &mut lens);
    /// assert_eq!(&lens[..n], &[5, 6]);
    /// assert_eq!(stop, Some(Parse::Length(13))); // the third is not all here
    /// ```
    fn scan(&self, buf: &[u8], max: usize, lens: &mut [usize]) -> (usize, Option<Parse>) {
        scan_with(self, buf, max, lens)
    }
}

/// [`Parser::scan`]'s walk, for any parser (see there). Crate-visible so that an override can
/// hand what it does not cover to the very walk it must agree with.
pub(crate) fn scan_with<P: Parser + ?Sized>(
    p: &P,
    buf: &[u8],
    max: usize,
    lens: &mut [usize],
) -> (usize, Option<Parse>) {
    let min_view = p.min_view();
    let (mut n, mut end) = (0, 0);
    while n < lens.len() {
        let Some(view) = buf.get(end..) else {
            break;
        };
        if view.is_empty() || view.len() < min_view {
            break;
        }
        match p.parse(view) {
            Parse::Length(len) if len > 0 && len <= max => {
                if len > view.len() {
                    return (n, Some(Parse::Length(len)));
                }
                lens[n] = len;
                n += 1;
                end += len;
            }
            other => return (n, Some(other)),
        }
    }
    (n, None)
}

/// A shared or boxed parser is a parser. Every method forwards, those with a default too,
/// so a wrapped parser strips and hints exactly like the one it wraps; one list of methods
/// serves every pointer type, so none can miss a method added later.
macro_rules! forward_parser {
    ($($ptr:ty),*) => {$(
        impl<P: Parser + ?Sized> Parser for $ptr {
            fn parse(&self, view: &[u8]) -> Parse {
                (**self).parse(view)
            }
            fn strip_prefix(&self) -> usize {
                (**self).strip_prefix()
            }
            fn min_view(&self) -> usize {
                (**self).min_view()
            }
            fn scan(&self, buf: &[u8], max: usize, lens: &mut [usize]) -> (usize, Option<Parse>) {
                (**self).scan(buf, max, lens)
            }
        }
    )*};
}

forward_parser!(std::sync::Arc<P>, Box<P>);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Overrides every defaulted method, so a pointer that fell back to a default shows.
    #[derive(Debug)]
    struct Custom;

    impl Parser for Custom {
        fn parse(&self, view: &[u8]) -> Parse {
            Parse::Length(view.len() + 1)
        }
        fn strip_prefix(&self) -> usize {
            3
        }
        fn min_view(&self) -> usize {
            5
        }
    }

    fn answers(p: &dyn Parser) -> (Parse, usize, usize) {
        (p.parse(b"ab"), p.strip_prefix(), p.min_view())
    }

    #[test]
    fn shared_and_boxed_parsers_forward_every_method() {
        let want = (Parse::Length(3), 3, 5);
        assert_eq!(answers(&Arc::new(Custom)), want);
        assert_eq!(answers(&Box::new(Custom)), want);
        let shared: Arc<dyn Parser> = Arc::new(Custom);
        let boxed: Box<dyn Parser> = Box::new(Custom);
        assert_eq!(answers(&shared), want);
        assert_eq!(answers(&boxed), want);
    }
}
