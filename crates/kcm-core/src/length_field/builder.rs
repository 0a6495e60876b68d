//! [`LengthFieldBuilder`] and the checks that turn options into a [`LengthField`].

use super::{ByteOrder, LengthField, Reader, TooLong};

/// Why [`LengthFieldBuilder::build`] refused a configuration.
///
/// Each variant is a configuration mistake that would make the parser useless or ambiguous; a
/// configuration that builds never panics on any input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LengthFieldError {
    /// The length field must be 1 to 8 bytes wide (the value is read into 64 bits).
    #[error("length field width must be 1 to 8 bytes, got {0}")]
    Width(usize),
    /// `offset + width` does not fit in a `usize`.
    #[error("length field offset {offset} is too large (offset + width overflows)")]
    Offset {
        /// The offset that was asked for.
        offset: usize,
    },
    /// The strip prefix is longer than the header (`offset + width`), so it would remove body
    /// bytes whose presence the parser never checked.
    #[error("strip={strip} is longer than the header ({header_len} bytes = offset + width)")]
    StripBeyondHeader {
        /// The strip prefix that was asked for.
        strip: usize,
        /// `offset + width`.
        header_len: usize,
    },
    /// A maximum length of zero rejects every message (KCM has no empty messages).
    #[error("max length must be at least 1")]
    ZeroMaxLength,
    /// The maximum is shorter than the header, so no message could ever be accepted.
    #[error("max length {max_length} is shorter than the header ({header_len} bytes)")]
    MaxBelowHeader {
        /// The maximum that was asked for.
        max_length: usize,
        /// `offset + width`.
        header_len: usize,
    },
}

/// Collects the options of a [`LengthField`]; made by [`LengthField::builder`].
///
/// Every setter takes and returns the builder by value, so a configuration reads as one
/// expression; nothing is checked until [`build`](Self::build).
///
/// ```
/// use kcm_core::length_field::{LengthField, TooLong};
///
/// // Netty's classic "2-byte length at offset 0, strip it" frame decoder.
/// let lf = LengthField::builder()
///     .width(2)
///     .strip(2)
///     .max_length(1 << 16)
///     .too_long(TooLong::Discard)
///     .build()?;
/// assert_eq!(lf.strip(), 2);
/// # Ok::<(), kcm_core::length_field::LengthFieldError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthFieldBuilder {
    pub(super) offset: usize,
    pub(super) width: usize,
    pub(super) order: ByteOrder,
    pub(super) signed: bool,
    pub(super) adjust: i64,
    pub(super) includes_header: bool,
    pub(super) strip: usize,
    pub(super) max_length: Option<usize>,
    pub(super) too_long: TooLong,
}

impl Default for LengthFieldBuilder {
    /// A 4-byte unsigned big-endian length at offset 0 that counts only the body (the Thrift
    /// framed-transport layout), no maximum, too-long messages fail the stream.
    fn default() -> Self {
        LengthFieldBuilder {
            offset: 0,
            width: 4,
            order: ByteOrder::Big,
            signed: false,
            adjust: 0,
            includes_header: false,
            strip: 0,
            max_length: None,
            too_long: TooLong::Fail,
        }
    }
}

impl LengthFieldBuilder {
    /// Byte offset of the length field from the start of the message (default 0).
    pub fn offset(mut self, n: usize) -> Self {
        self.offset = n;
        self
    }

    /// Width of the length field in bytes, 1 to 8 (default 4).
    pub fn width(mut self, bytes: usize) -> Self {
        self.width = bytes;
        self
    }

    /// Byte order of the length field (default [`ByteOrder::Big`]).
    pub fn order(mut self, o: ByteOrder) -> Self {
        self.order = o;
        self
    }

    /// Shorthand for `order(ByteOrder::Big)` (network byte order).
    pub fn big_endian(self) -> Self {
        self.order(ByteOrder::Big)
    }

    /// Shorthand for `order(ByteOrder::Little)`.
    pub fn little_endian(self) -> Self {
        self.order(ByteOrder::Little)
    }

    /// Reads the field as a two's complement signed integer (default false). A negative value
    /// normally makes the total shorter than the header, which fails with `EPROTO`.
    pub fn signed(mut self, yes: bool) -> Self {
        self.signed = yes;
        self
    }

    /// A number added to the field's value, possibly negative (default 0): Netty's
    /// `lengthAdjustment`.
    pub fn adjust(mut self, n: i64) -> Self {
        self.adjust = n;
        self
    }

    /// Whether the field's value already counts the header bytes `0..offset + width`
    /// (default false: the value counts what follows the field).
    pub fn includes_header(mut self, yes: bool) -> Self {
        self.includes_header = yes;
        self
    }

    /// How many leading bytes of each message to remove before delivery (default 0); at most
    /// the header length `offset + width`.
    pub fn strip(mut self, n: usize) -> Self {
        self.strip = n;
        self
    }

    /// The largest total message length accepted, header included (default: none, so only the
    /// stream parser's own limit applies).
    pub fn max_length(mut self, n: usize) -> Self {
        self.max_length = Some(n);
        self
    }

    /// Removes a maximum set earlier with [`max_length`](Self::max_length).
    pub fn no_max_length(mut self) -> Self {
        self.max_length = None;
        self
    }

    /// What to do with a message longer than the maximum (default [`TooLong::Fail`]).
    pub fn too_long(mut self, policy: TooLong) -> Self {
        self.too_long = policy;
        self
    }

    /// Checks the options and precomputes what `parse` needs.
    pub fn build(self) -> Result<LengthField, LengthFieldError> {
        if !(1..=8).contains(&self.width) {
            return Err(LengthFieldError::Width(self.width));
        }
        let header_len = self
            .offset
            .checked_add(self.width)
            .ok_or(LengthFieldError::Offset {
                offset: self.offset,
            })?;
        if self.strip > header_len {
            return Err(LengthFieldError::StripBeyondHeader {
                strip: self.strip,
                header_len,
            });
        }
        match self.max_length {
            Some(0) => return Err(LengthFieldError::ZeroMaxLength),
            Some(max_length) if max_length < header_len => {
                return Err(LengthFieldError::MaxBelowHeader {
                    max_length,
                    header_len,
                })
            }
            _ => {}
        }
        // Lengths are handed to the stream parser as usize and turned into buffer sizes, which
        // Rust caps at isize::MAX; anything above is "too long" whatever the configured max.
        let cap = self
            .max_length
            .unwrap_or(usize::MAX)
            .min(isize::MAX as usize);
        let base = i128::from(self.adjust)
            + if self.includes_header {
                0
            } else {
                header_len as i128
            };
        let sign_shift = if self.signed {
            64 - 8 * self.width as u32
        } else {
            0
        };
        let (min_value, max_value) = LengthField::domain(self.width, self.signed);
        // The field values `parse` turns into a length: `header_len <= value + base <= cap`.
        let values = (
            (header_len as i128 - base).max(min_value),
            (cap as i128 - base).min(max_value),
        );
        Ok(LengthField {
            reader: Reader::new(self.width, self.order),
            sign_shift,
            base,
            min_total: header_len as i128,
            limit: cap as i128,
            values,
            opts: self,
            header_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_thrift_framing() {
        let lf = LengthField::builder().build().unwrap();
        assert_eq!(lf.offset(), 0);
        assert_eq!(lf.width(), 4);
        assert_eq!(lf.order(), ByteOrder::Big);
        assert!(!lf.signed());
        assert_eq!(lf.adjust(), 0);
        assert!(!lf.includes_header());
        assert_eq!(lf.strip(), 0);
        assert_eq!(lf.max_length(), None);
        assert_eq!(lf.too_long(), TooLong::Fail);
        assert_eq!(lf.header_len(), 4);
    }

    #[test]
    fn every_setter_is_kept() {
        let lf = LengthField::builder()
            .offset(3)
            .width(2)
            .little_endian()
            .signed(true)
            .adjust(-7)
            .includes_header(true)
            .strip(5)
            .max_length(100)
            .too_long(TooLong::Discard)
            .build()
            .unwrap();
        assert_eq!(lf.offset(), 3);
        assert_eq!(lf.width(), 2);
        assert_eq!(lf.order(), ByteOrder::Little);
        assert!(lf.signed());
        assert_eq!(lf.adjust(), -7);
        assert!(lf.includes_header());
        assert_eq!(lf.strip(), 5);
        assert_eq!(lf.max_length(), Some(100));
        assert_eq!(lf.too_long(), TooLong::Discard);
        assert_eq!(lf.header_len(), 5);
        // to_builder round-trips every option.
        assert_eq!(lf.to_builder().build().unwrap(), lf);
        let big = lf
            .to_builder()
            .big_endian()
            .no_max_length()
            .build()
            .unwrap();
        assert_eq!(big.order(), ByteOrder::Big);
        assert_eq!(big.max_length(), None);
    }

    #[test]
    fn width_outside_1_to_8_is_refused() {
        for w in [0, 9, 16, usize::MAX] {
            assert_eq!(
                LengthField::builder().width(w).build(),
                Err(LengthFieldError::Width(w))
            );
        }
        for w in 1..=8 {
            assert!(LengthField::builder().width(w).build().is_ok(), "width {w}");
        }
    }

    #[test]
    fn offset_overflow_is_refused() {
        let err = LengthField::builder()
            .offset(usize::MAX - 1)
            .width(2)
            .build();
        assert_eq!(
            err,
            Err(LengthFieldError::Offset {
                offset: usize::MAX - 1
            })
        );
        // Exactly usize::MAX fits and builds.
        assert!(LengthField::builder()
            .offset(usize::MAX - 2)
            .width(2)
            .build()
            .is_ok());
    }

    #[test]
    fn strip_up_to_the_header_only() {
        let b = LengthField::builder().offset(2).width(2);
        assert!(b.clone().strip(4).build().is_ok());
        assert_eq!(
            b.strip(5).build(),
            Err(LengthFieldError::StripBeyondHeader {
                strip: 5,
                header_len: 4
            })
        );
    }

    #[test]
    fn max_length_must_hold_a_header() {
        let b = LengthField::builder().offset(4).width(4);
        assert_eq!(
            b.clone().max_length(0).build(),
            Err(LengthFieldError::ZeroMaxLength)
        );
        assert_eq!(
            b.clone().max_length(7).build(),
            Err(LengthFieldError::MaxBelowHeader {
                max_length: 7,
                header_len: 8
            })
        );
        assert!(b.max_length(8).build().is_ok());
    }

    #[test]
    fn errors_name_the_option() {
        let msg = LengthFieldError::Width(9).to_string();
        assert!(msg.contains("width") && msg.contains('9'), "{msg}");
        let msg = LengthFieldError::StripBeyondHeader {
            strip: 5,
            header_len: 4,
        }
        .to_string();
        assert!(msg.contains("strip=5"), "{msg}");
    }
}
