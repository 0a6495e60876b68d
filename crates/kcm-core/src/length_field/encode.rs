//! Writing a length field: the inverse of [`LengthField`]'s parse, for senders and tests.

use super::{ByteOrder, LengthField};

/// Why [`LengthField::encode_length`] could not describe a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LengthEncodeError {
    /// The buffer is shorter than the header (`offset + width`).
    #[error("header buffer has {got} bytes, the length field ends at byte {need}")]
    HeaderTooShort {
        /// `offset + width`.
        need: usize,
        /// Length of the buffer given.
        got: usize,
    },
    /// The message would be shorter than its header; the parser rejects it with `EPROTO`.
    #[error("a {total}-byte message is shorter than its {header_len}-byte header")]
    BelowHeader {
        /// The total asked for.
        total: usize,
        /// `offset + width`.
        header_len: usize,
    },
    /// The message is over the parser's maximum; the parser would not deliver it.
    #[error("a {total}-byte message is over the maximum of {max}")]
    TooLong {
        /// The total asked for.
        total: usize,
        /// The largest total the parser accepts.
        max: usize,
    },
    /// The field value that would describe this total does not fit in the field.
    #[error("a {total}-byte message needs field value {value}, which does not fit the field")]
    Unrepresentable {
        /// The total asked for.
        total: usize,
        /// `total - adjust - (header unless includes_header)`.
        value: i128,
    },
}

impl LengthField {
    /// Writes into `header[offset..offset + width]` the field value that makes `parse` answer
    /// `Parse::Length(total)`; the other header bytes are left alone.
    ///
    /// ```
    /// use kcm_core::{presets, Parse, Parser};
    ///
    /// let http2 = presets::http2();
    /// let mut frame = [0u8; 9 + 5]; // 9-byte frame header, 5-byte payload
    /// http2.encode_length(frame.len(), &mut frame)?;
    /// assert_eq!(&frame[..3], &[0, 0, 5]);
    /// assert_eq!(http2.parse(&frame), Parse::Length(14));
    /// # Ok::<(), kcm_core::length_field::LengthEncodeError>(())
    /// ```
    pub fn encode_length(&self, total: usize, header: &mut [u8]) -> Result<(), LengthEncodeError> {
        let header_len = self.header_len;
        if total < header_len {
            return Err(LengthEncodeError::BelowHeader { total, header_len });
        }
        if total as i128 > self.limit {
            return Err(LengthEncodeError::TooLong {
                total,
                max: self.limit as usize,
            });
        }
        let value = total as i128 - self.base;
        let (lo, hi) = LengthField::domain(self.opts.width, self.opts.signed);
        if value < lo || value > hi {
            return Err(LengthEncodeError::Unrepresentable { total, value });
        }
        let got = header.len();
        let field = header.get_mut(self.opts.offset..header_len).ok_or(
            LengthEncodeError::HeaderTooShort {
                need: header_len,
                got,
            },
        )?;
        // Truncating to 64 bits keeps the two's complement pattern of a negative value.
        let v = value as u64;
        let width = field.len();
        for (i, b) in field.iter_mut().enumerate() {
            let shift = match self.opts.order {
                ByteOrder::Big => 8 * (width - 1 - i),
                ByteOrder::Little => 8 * i,
            };
            *b = (v >> shift) as u8;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Parse, Parser};

    #[test]
    fn encodes_then_parses_for_every_width_and_order() {
        for width in 1..=8 {
            for order in [ByteOrder::Big, ByteOrder::Little] {
                let lf = LengthField::builder()
                    .width(width)
                    .order(order)
                    .offset(1)
                    .build()
                    .unwrap();
                let mut buf = [0xaau8; 16];
                lf.encode_length(width + 1 + 200, &mut buf).unwrap();
                assert_eq!(buf[0], 0xaa, "byte before the field untouched");
                assert_eq!(buf[width + 1], 0xaa, "byte after the field untouched");
                assert_eq!(lf.parse(&buf), Parse::Length(width + 1 + 200));
            }
        }
    }

    #[test]
    fn negative_field_values_encode_in_twos_complement() {
        let lf = LengthField::builder()
            .width(2)
            .signed(true)
            .adjust(100)
            .build()
            .unwrap();
        let mut buf = [0u8; 2];
        // total 2 = value + 100 + 2, so value = -100.
        lf.encode_length(2, &mut buf).unwrap();
        assert_eq!(i16::from_be_bytes(buf), -100);
        assert_eq!(lf.parse(&buf), Parse::Length(2));
    }

    #[test]
    fn refuses_what_parse_would_refuse() {
        let lf = LengthField::builder()
            .width(1)
            .max_length(200)
            .build()
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            lf.encode_length(0, &mut buf),
            Err(LengthEncodeError::BelowHeader {
                total: 0,
                header_len: 1
            })
        );
        assert_eq!(
            lf.encode_length(201, &mut buf),
            Err(LengthEncodeError::TooLong {
                total: 201,
                max: 200
            })
        );
        let lf = LengthField::builder().width(1).build().unwrap();
        assert_eq!(
            lf.encode_length(257, &mut buf),
            Err(LengthEncodeError::Unrepresentable {
                total: 257,
                value: 256
            })
        );
        assert!(lf.encode_length(256, &mut buf).is_ok());
        assert_eq!(buf, [255]);
        assert_eq!(
            lf.encode_length(10, &mut []),
            Err(LengthEncodeError::HeaderTooShort { need: 1, got: 0 })
        );
    }
}
