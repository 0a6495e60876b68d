//! [`Mqtt`]: a hand-written parser for MQTT control packets.
//!
//! MQTT's length is not a fixed-width field but a variable-length integer, so no
//! [`LengthField`](crate::LengthField) configuration (and no trivial BPF program) describes it.
//! This parser shows the [`Parser`] trait carrying such a protocol natively.

use crate::length_field::TooLong;
use crate::parser::{errno, Parse, Parser};

/// The largest "remaining length" MQTT can encode: four 7-bit groups.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Frames MQTT control packets (MQTT 3.1, 3.1.1 and 5.0).
///
/// An MQTT packet starts with a fixed header: one byte of packet type (high nibble) and flags,
/// then the *remaining length*, a variable-length integer of 1 to 4 bytes, seven bits per byte,
/// least significant group first, bit 0x80 set on every byte but the last. The packet is
/// `1 + (length bytes) + remaining length` bytes long. `parse` answers:
///
/// - [`Parse::NeedMore`] until the last length byte is seen;
/// - [`Parse::Error`]`(EPROTO)` for packet type 0 (reserved in every MQTT version), or when the
///   fourth length byte still has the continuation bit (the integer would need a fifth);
/// - for a packet over the optional maximum, `Error(EMSGSIZE)` or `Skip(total)` according to
///   the [`TooLong`] policy;
/// - otherwise [`Parse::Length`]`(total)`.
///
/// Framing is all it checks: flag bits per packet type and non-minimal length encodings (which
/// MQTT 5 calls malformed but which still name one length unambiguously) are left to the
/// application, which sees the whole packet. Type 15 is accepted, as it is AUTH in MQTT 5.
///
/// ```
/// use kcm_core::{errno, Mqtt, Parse, Parser};
///
/// let mqtt = Mqtt::new();
/// // PINGREQ: type 12, remaining length 0.
/// assert_eq!(mqtt.parse(&[0xc0, 0x00]), Parse::Length(2));
/// // PUBLISH with a remaining length of 321 = 0x41 + (0x02 << 7): two length bytes.
/// assert_eq!(mqtt.parse(&[0x30, 0xc1]), Parse::NeedMore);
/// assert_eq!(mqtt.parse(&[0x30, 0xc1, 0x02]), Parse::Length(1 + 2 + 321));
/// // Packet type 0 is reserved.
/// assert_eq!(mqtt.parse(&[0x00, 0x00]), Parse::Error(errno::EPROTO));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mqtt {
    max_length: Option<usize>,
    too_long: TooLong,
}

impl Mqtt {
    /// A parser with no maximum of its own (the stream parser's limit still applies; MQTT
    /// itself caps a packet at 5 + [`MAX_REMAINING_LENGTH`] bytes).
    pub const fn new() -> Mqtt {
        Mqtt {
            max_length: None,
            too_long: TooLong::Fail,
        }
    }

    /// A parser that treats packets longer than `max` bytes in total (fixed header included)
    /// according to `policy`. Every packet is at least 2 bytes, so a `max` below 2 refuses
    /// every packet.
    ///
    /// ```
    /// use kcm_core::{Mqtt, Parse, Parser, TooLong};
    ///
    /// let mqtt = Mqtt::with_max(100, TooLong::Discard);
    /// assert_eq!(mqtt.parse(&[0x30, 98]), Parse::Length(100));
    /// assert_eq!(mqtt.parse(&[0x30, 99]), Parse::Skip(101));
    /// ```
    pub const fn with_max(max: usize, policy: TooLong) -> Mqtt {
        Mqtt {
            max_length: Some(max),
            too_long: policy,
        }
    }

    /// The maximum total packet length, if one was set.
    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }

    /// The policy for packets over the maximum.
    pub fn too_long(&self) -> TooLong {
        self.too_long
    }
}

impl Parser for Mqtt {
    fn parse(&self, view: &[u8]) -> Parse {
        let Some(&first) = view.first() else {
            return Parse::NeedMore;
        };
        if first >> 4 == 0 {
            return Parse::Error(errno::EPROTO);
        }
        let mut remaining = 0usize;
        // At most four length bytes, at view[1..5].
        for (i, &b) in view.iter().skip(1).take(4).enumerate() {
            remaining |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                // At most 5 + 268,435,455: no overflow even on 32-bit targets.
                let total = 1 + (i + 1) + remaining;
                return match self.max_length {
                    Some(max) if total > max => match self.too_long {
                        TooLong::Fail => Parse::Error(errno::EMSGSIZE),
                        TooLong::Discard => Parse::Skip(total),
                    },
                    _ => Parse::Length(total),
                };
            }
        }
        if view.len() >= 5 {
            // Four bytes, all with the continuation bit: no valid fifth byte exists.
            Parse::Error(errno::EPROTO)
        } else {
            Parse::NeedMore
        }
    }

    fn min_view(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::errno::{EMSGSIZE, EPROTO};

    /// Encodes `n` the way MQTT does (test-side, written independently of the parser).
    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }

    #[test]
    fn length_byte_count_boundaries() {
        // The edges of the 1-, 2-, 3- and 4-byte encodings (MQTT 3.1.1 table 2.4).
        let cases = [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (MAX_REMAINING_LENGTH, 4),
        ];
        for (rem, nbytes) in cases {
            let mut hdr = vec![0x30];
            hdr.extend(varint(rem));
            assert_eq!(hdr.len(), 1 + nbytes, "{rem}");
            for n in 0..hdr.len() {
                assert_eq!(Mqtt::new().parse(&hdr[..n]), Parse::NeedMore, "{rem} {n}");
            }
            assert_eq!(Mqtt::new().parse(&hdr), Parse::Length(1 + nbytes + rem));
        }
    }

    #[test]
    fn max_encoding_is_ff_ff_ff_7f() {
        assert_eq!(
            Mqtt::new().parse(&[0x10, 0xff, 0xff, 0xff, 0x7f]),
            Parse::Length(5 + MAX_REMAINING_LENGTH)
        );
    }

    #[test]
    fn a_fifth_length_byte_is_a_protocol_error() {
        let hdr = [0x10, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(Mqtt::new().parse(&hdr[..4]), Parse::NeedMore);
        assert_eq!(Mqtt::new().parse(&hdr), Parse::Error(EPROTO));
        // Whatever follows does not matter.
        assert_eq!(
            Mqtt::new().parse(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Parse::Error(EPROTO)
        );
    }

    #[test]
    fn reserved_type_zero_fails_at_once_other_types_pass() {
        for flags in 0..16u8 {
            assert_eq!(Mqtt::new().parse(&[flags]), Parse::Error(EPROTO));
        }
        for ty in 1..16u8 {
            assert_eq!(
                Mqtt::new().parse(&[ty << 4, 2]),
                Parse::Length(4),
                "type {ty}"
            );
        }
    }

    #[test]
    fn non_minimal_encoding_is_accepted() {
        // 0 encoded in two bytes.
        assert_eq!(Mqtt::new().parse(&[0xe0, 0x80, 0x00]), Parse::Length(3));
    }

    #[test]
    fn real_connect_packet() {
        // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "kcm".
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 3];
        body.extend_from_slice(b"kcm");
        let mut pkt = vec![0x10, body.len() as u8];
        pkt.extend(&body);
        assert_eq!(Mqtt::new().parse(&pkt), Parse::Length(pkt.len()));
        assert_eq!(pkt.len(), 17);
    }

    #[test]
    fn max_with_both_policies() {
        let fail = Mqtt::with_max(130, TooLong::Fail);
        // 127 remaining: 1 + 1 + 127 = 129; 128 remaining: 1 + 2 + 128 = 131.
        assert_eq!(fail.parse(&[0x30, 127]), Parse::Length(129));
        assert_eq!(fail.parse(&[0x30, 0x80, 0x01]), Parse::Error(EMSGSIZE));
        let exact = Mqtt::with_max(129, TooLong::Fail);
        assert_eq!(exact.parse(&[0x30, 127]), Parse::Length(129));
        let discard = Mqtt::with_max(128, TooLong::Discard);
        assert_eq!(discard.parse(&[0x30, 127]), Parse::Skip(129));
        assert_eq!(discard.max_length(), Some(128));
        assert_eq!(discard.too_long(), TooLong::Discard);
        assert_eq!(Mqtt::new().max_length(), None);
        assert_eq!(
            Mqtt::with_max(0, TooLong::Fail).parse(&[0xc0, 0]),
            Parse::Error(EMSGSIZE)
        );
    }

    #[test]
    fn min_view_is_two_and_nothing_is_stripped() {
        assert_eq!(Mqtt::new().min_view(), 2);
        assert_eq!(Mqtt::new().strip_prefix(), 0);
    }
}
