//! [`LengthField`]: the native length-prefix parser.
//!
//! Most framed protocols put the message length in a fixed-size integer near the start of each
//! message. [`LengthField`] covers them with one configurable parser whose options are a
//! superset of tokio-util's `LengthDelimitedCodec` and Netty's `LengthFieldBasedFrameDecoder`;
//! the [`presets`](crate::presets) module names the common layouts. The BPF crate also lowers
//! trivial parser programs (such as KCM's documented `load_word(skb, 0) + 4`) to this type, so
//! the fast native path runs instead of the interpreter.
//!
//! All option checks happen once in [`LengthFieldBuilder::build`]; `parse` then does one bounds
//! check, one fixed-width load and two comparisons per message, and `scan` (the stream
//! parser's batch walk) turns the limits into a range of field values once per call, so a run
//! of messages costs a load, an add and a few comparisons each (header and body present,
//! value in range).

mod builder;
mod encode;
mod scan;

pub use builder::{LengthFieldBuilder, LengthFieldError};
pub use encode::LengthEncodeError;

use std::fmt;

use crate::parser::{errno, Parse, Parser};

/// Byte order of a length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Most significant byte first (network byte order).
    Big,
    /// Least significant byte first.
    Little,
}

/// What a [`LengthField`] answers for a message longer than its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TooLong {
    /// Fail the stream with `EMSGSIZE`, as KCM does for a message over its limit
    /// (`kcm-spec.md` §4.3) and as tokio-util's codec does.
    #[default]
    Fail,
    /// Drop the message's bytes and carry on with the next one ([`Parse::Skip`]), as Netty's
    /// decoder does. The bytes are skipped as they arrive, never buffered.
    Discard,
}

/// A length-prefix [`Parser`] configured by a [`LengthFieldBuilder`].
///
/// # How the length is computed
///
/// The field is `width` bytes at byte `offset` of the message, read in `order` as an unsigned
/// or (with `signed`) two's complement integer `value`. Then, with `header = offset + width`:
///
/// ```text
/// total = value + adjust + (if includes_header { 0 } else { header })
/// ```
///
/// computed in 128 bits so no combination of options overflows. `parse` answers:
///
/// | condition                                   | answer                                       |
/// |---------------------------------------------|----------------------------------------------|
/// | fewer than `header` bytes seen              | [`Parse::NeedMore`]                          |
/// | `total < header` (negative values included) | [`Parse::Error`]`(EPROTO)`                   |
/// | `total > max_length`, or `total > isize::MAX` | `Error(EMSGSIZE)`, or `Skip(total)` with [`TooLong::Discard`] |
/// | otherwise                                   | [`Parse::Length`]`(total)`                   |
///
/// A message is never shorter than its header, so it is never empty (KCM has no empty
/// messages). After a message is complete, the stream parser removes the first `strip` bytes
/// before delivery ([`Parser::strip_prefix`]).
///
/// # Worked example
///
/// The memcached binary protocol has a 24-byte header whose bytes 8..12 hold the body length
/// (big-endian), not counting the header. So `offset = 8`, `width = 4`, and the header that
/// must be added is 24 bytes, of which `offset + width = 12` are added automatically; the
/// remaining 12 go into `adjust`. A header claiming a 5-byte body gives
/// `total = 5 + 12 + 12 = 29`:
///
/// ```
/// use kcm_core::{LengthField, Parse, Parser};
///
/// let lf = LengthField::builder().offset(8).width(4).adjust(12).build()?;
/// let mut msg = vec![0x80, 0x00, 0x00, 0x05, 0, 0, 0, 0];
/// msg.extend_from_slice(&5u32.to_be_bytes()); // total body length
/// msg.resize(29, 0);
/// assert_eq!(lf.parse(&msg[..11]), Parse::NeedMore); // the field is not complete yet
/// assert_eq!(lf.parse(&msg[..12]), Parse::Length(29));
/// assert_eq!(lf.min_view(), 12);
/// # Ok::<(), kcm_core::length_field::LengthFieldError>(())
/// ```
///
/// The same kind of length, but counting the whole message and signed (a value below 12, or
/// negative, cannot be a message):
///
/// ```
/// use kcm_core::{errno, LengthField, Parse, Parser};
///
/// let lf = LengthField::builder()
///     .width(2)
///     .little_endian()
///     .signed(true)
///     .includes_header(true)
///     .max_length(1000)
///     .build()?;
/// assert_eq!(lf.parse(&[10, 0]), Parse::Length(10));
/// assert_eq!(lf.parse(&[1, 0]), Parse::Error(errno::EPROTO)); // shorter than the header
/// assert_eq!(lf.parse(&[0xff, 0xff]), Parse::Error(errno::EPROTO)); // -1
/// assert_eq!(lf.parse(&[0xe9, 0x03]), Parse::Error(errno::EMSGSIZE)); // 1001
/// # Ok::<(), kcm_core::length_field::LengthFieldError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LengthField {
    /// The options as given; kept for the accessors, `to_builder` and `Display`.
    opts: LengthFieldBuilder,
    // Everything below is derived from `opts` by `build`, so the hot path never branches on an
    // option that could be decided once.
    /// `offset + width`: bytes needed before the length is known, and the shortest message.
    header_len: usize,
    reader: Reader,
    /// Shift that sign-extends a `width`-byte value held in a u64; 0 when unsigned.
    sign_shift: u32,
    /// `adjust` plus the header length when the field does not count it.
    base: i128,
    /// `header_len`, widened once.
    min_total: i128,
    /// The largest accepted total: `min(max_length, isize::MAX)`.
    limit: i128,
    /// The field values (after sign extension) that `parse` answers with a length: those with
    /// `min_total <= value + base <= limit`. Empty when the first exceeds the second.
    values: (i128, i128),
}

/// How to load the field: a fixed-size array load for the common widths, a byte loop otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    U8,
    U16Be,
    U16Le,
    U32Be,
    U32Le,
    U64Be,
    U64Le,
    AnyBe,
    AnyLe,
}

impl Reader {
    fn new(width: usize, order: ByteOrder) -> Reader {
        match (width, order) {
            (1, _) => Reader::U8,
            (2, ByteOrder::Big) => Reader::U16Be,
            (2, ByteOrder::Little) => Reader::U16Le,
            (4, ByteOrder::Big) => Reader::U32Be,
            (4, ByteOrder::Little) => Reader::U32Le,
            (8, ByteOrder::Big) => Reader::U64Be,
            (8, ByteOrder::Little) => Reader::U64Le,
            (_, ByteOrder::Big) => Reader::AnyBe,
            (_, ByteOrder::Little) => Reader::AnyLe,
        }
    }

    /// Reads `field` (exactly `width` bytes long) as an unsigned integer. The `?`s cannot fire
    /// for a field of the right width; they keep the code free of indexing panics.
    #[inline(always)]
    fn read(self, field: &[u8]) -> Option<u64> {
        Some(match self {
            Reader::U8 => u64::from(*field.first()?),
            Reader::U16Be => u64::from(u16::from_be_bytes(*field.first_chunk()?)),
            Reader::U16Le => u64::from(u16::from_le_bytes(*field.first_chunk()?)),
            Reader::U32Be => u64::from(u32::from_be_bytes(*field.first_chunk()?)),
            Reader::U32Le => u64::from(u32::from_le_bytes(*field.first_chunk()?)),
            Reader::U64Be => u64::from_be_bytes(*field.first_chunk()?),
            Reader::U64Le => u64::from_le_bytes(*field.first_chunk()?),
            Reader::AnyBe => field.iter().fold(0, |v, &b| (v << 8) | u64::from(b)),
            Reader::AnyLe => field.iter().rev().fold(0, |v, &b| (v << 8) | u64::from(b)),
        })
    }
}

impl LengthField {
    /// Starts a configuration with the defaults (a 4-byte big-endian unsigned length at
    /// offset 0 that does not count the header).
    pub fn builder() -> LengthFieldBuilder {
        LengthFieldBuilder::default()
    }

    /// A builder holding this parser's options, to derive a variant of it.
    ///
    /// ```
    /// use kcm_core::presets;
    /// let capped = presets::thrift().to_builder().max_length(65536).build()?;
    /// assert_eq!(capped.max_length(), Some(65536));
    /// # Ok::<(), kcm_core::length_field::LengthFieldError>(())
    /// ```
    pub fn to_builder(&self) -> LengthFieldBuilder {
        self.opts.clone()
    }

    /// Byte offset of the length field.
    pub fn offset(&self) -> usize {
        self.opts.offset
    }

    /// Width of the length field in bytes (1 to 8).
    pub fn width(&self) -> usize {
        self.opts.width
    }

    /// Byte order of the length field.
    pub fn order(&self) -> ByteOrder {
        self.opts.order
    }

    /// Whether the field is read as a two's complement signed integer.
    pub fn signed(&self) -> bool {
        self.opts.signed
    }

    /// The number added to the field's value.
    pub fn adjust(&self) -> i64 {
        self.opts.adjust
    }

    /// Whether the field's value counts the header bytes.
    pub fn includes_header(&self) -> bool {
        self.opts.includes_header
    }

    /// Leading bytes removed from each message before delivery.
    pub fn strip(&self) -> usize {
        self.opts.strip
    }

    /// The largest accepted total length, if one was set.
    pub fn max_length(&self) -> Option<usize> {
        self.opts.max_length
    }

    /// The policy for messages over the maximum.
    pub fn too_long(&self) -> TooLong {
        self.opts.too_long
    }

    /// `offset + width`: the bytes needed to know the length, and the shortest valid message.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The total length (header included) the field describes, or `None` while fewer than
    /// [`header_len`](Self::header_len) bytes are present. Unlike [`Parser::parse`] this does
    /// not judge the value, so it can be negative or huge.
    ///
    /// ```
    /// use kcm_core::presets;
    /// assert_eq!(presets::kafka().declared_total(&[0xff, 0xff, 0xff, 0xff]), Some(3));
    /// assert_eq!(presets::kafka().declared_total(&[0, 0]), None);
    /// ```
    #[inline]
    pub fn declared_total(&self, view: &[u8]) -> Option<i128> {
        let field = view.get(self.opts.offset..self.header_len)?;
        let bits = self.extend(self.reader.read(field)?);
        let value = if self.opts.signed {
            i128::from(bits as i64)
        } else {
            i128::from(bits)
        };
        Some(value + self.base)
    }

    /// The values a field of `width` bytes holds, read as `signed` says.
    fn domain(width: usize, signed: bool) -> (i128, i128) {
        let bits = 8 * width as u32;
        if signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        }
    }

    /// A field read as its 64-bit pattern: a signed field's sign bit moved to bit 63 and
    /// shifted back arithmetically; an unsigned one as it is (its shift is 0).
    #[inline(always)]
    fn extend(&self, raw: u64) -> u64 {
        (((raw << self.sign_shift) as i64) >> self.sign_shift) as u64
    }

    /// The answer for a total over the limit; out of line because it is rare.
    #[cold]
    fn over_limit(&self, total: i128) -> Parse {
        match self.opts.too_long {
            TooLong::Fail => Parse::Error(errno::EMSGSIZE),
            TooLong::Discard => match usize::try_from(total) {
                Ok(n) => Parse::Skip(n),
                // Cannot even be counted down: nothing to do but fail the stream.
                Err(_) => Parse::Error(errno::EMSGSIZE),
            },
        }
    }
}

impl Parser for LengthField {
    #[inline]
    fn parse(&self, view: &[u8]) -> Parse {
        let Some(total) = self.declared_total(view) else {
            return Parse::NeedMore;
        };
        if total < self.min_total {
            // A length that does not even cover the header (kcm-spec.md §4.3 "bad_hdr_len").
            Parse::Error(errno::EPROTO)
        } else if total > self.limit {
            self.over_limit(total)
        } else {
            // min_total <= total <= isize::MAX, so the conversion is exact.
            Parse::Length(total as usize)
        }
    }

    /// A walk that decides once per call which field values are messages, so each message
    /// costs a load, an add and a few comparisons (see the `scan` module). It answers exactly as
    /// the default walk does.
    fn scan(&self, buf: &[u8], max: usize, lens: &mut [usize]) -> (usize, Option<Parse>) {
        self.scan_fast(buf, max, lens)
    }

    fn strip_prefix(&self) -> usize {
        self.opts.strip
    }

    fn min_view(&self) -> usize {
        self.header_len
    }
}

impl fmt::Debug for LengthField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.opts;
        f.debug_struct("LengthField")
            .field("offset", &o.offset)
            .field("width", &o.width)
            .field("order", &o.order)
            .field("signed", &o.signed)
            .field("adjust", &o.adjust)
            .field("includes_header", &o.includes_header)
            .field("strip", &o.strip)
            .field("max_length", &o.max_length)
            .field("too_long", &o.too_long)
            .finish()
    }
}

#[cfg(test)]
mod tests;
