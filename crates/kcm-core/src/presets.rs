//! Named parsers for common framed protocols.
//!
//! Each preset is a plain [`LengthField`] (or, for MQTT, the [`Mqtt`] parser) with the layout
//! of one protocol. Presets set no maximum length unless the protocol itself implies one: the
//! stream parser's maximum (by default the connection's receive buffer, `kcm-spec.md` §4.3)
//! bounds them. Derive a capped variant with [`LengthField::to_builder`], or in a parser spec
//! string with `thrift,max=64K` (see [`spec`](crate::spec)).

use std::sync::Arc;

use crate::length_field::LengthField;
use crate::mqtt::Mqtt;
use crate::parser::Parser;

/// Every preset: its name, as accepted by [`by_name`], and a one-line description.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "thrift",
        "Thrift framed transport: u32 big-endian length of the rest (total = 4 + value)",
    ),
    (
        "memcache",
        "memcached binary protocol: 24-byte header, u32 big-endian body length at byte 8",
    ),
    (
        "http2",
        "HTTP/2 frames: 9-byte header starting with a u24 big-endian payload length",
    ),
    (
        "dns",
        "DNS over TCP: u16 big-endian length of the rest (total = 2 + value)",
    ),
    (
        "kafka",
        "Kafka wire protocol: i32 big-endian size of the rest; negative sizes fail",
    ),
    (
        "mqtt",
        "MQTT control packets: type byte, then a 1-4 byte variable-length remaining length",
    ),
];

/// Builds a preset known to hold valid options.
fn known(b: crate::length_field::LengthFieldBuilder) -> LengthField {
    match b.build() {
        Ok(lf) => lf,
        // Unreachable: every preset's options are fixed here and tested below.
        Err(e) => unreachable!("preset options are valid: {e}"),
    }
}

/// Thrift's framed transport (`TFramedTransport`): a 4-byte big-endian length that counts
/// the bytes after it. This is the example in the Linux KCM documentation.
///
/// ```
/// use kcm_core::{presets, Parse, Parser};
/// assert_eq!(presets::thrift().parse(&[0, 0, 0, 12]), Parse::Length(16));
/// ```
pub fn thrift() -> LengthField {
    known(LengthField::builder().width(4).big_endian())
}

/// memcached's binary protocol: a 24-byte header (magic, opcode, key length, extras length,
/// data type, vbucket/status, *total body length* as u32 big-endian at byte 8, opaque, CAS),
/// then extras, key and value. The body length does not count the header, so
/// `total = 24 + value`: offset 8, width 4, adjust 12 (the 12 header bytes after the field).
///
/// ```
/// use kcm_core::{presets, Parse, Parser};
/// let mut hdr = [0u8; 24];
/// hdr[0] = 0x80; // request magic
/// hdr[8..12].copy_from_slice(&5u32.to_be_bytes());
/// assert_eq!(presets::memcache().parse(&hdr), Parse::Length(29));
/// ```
pub fn memcache() -> LengthField {
    known(LengthField::builder().offset(8).width(4).adjust(12))
}

/// HTTP/2 frames (RFC 9113 §4.1): a 24-bit big-endian payload length, then type, flags and
/// stream id, 9 header bytes in all, so `total = 9 + value`.
///
/// The client connection preface (`PRI * HTTP/2.0...`, 24 bytes) is not a frame: consume it
/// before attaching the connection, or it is read as a frame of about 5 MB.
///
/// ```
/// use kcm_core::{presets, Parse, Parser};
/// // A SETTINGS frame with an empty payload.
/// assert_eq!(presets::http2().parse(&[0, 0, 0, 4, 0, 0, 0, 0, 0]), Parse::Length(9));
/// ```
pub fn http2() -> LengthField {
    known(LengthField::builder().width(3).adjust(6))
}

/// DNS over TCP (RFC 1035 §4.2.2): a 2-byte big-endian length of the message that follows.
/// The field itself caps a message at 65,537 bytes, so no maximum is set.
///
/// ```
/// use kcm_core::{presets, Parse, Parser};
/// assert_eq!(presets::dns().parse(&[0xff, 0xff]), Parse::Length(65537));
/// ```
pub fn dns() -> LengthField {
    known(LengthField::builder().width(2))
}

/// Kafka's wire protocol: every request and response starts with an `INT32` size of the rest.
/// The field is signed, so a negative size fails the stream with `EPROTO`.
///
/// ```
/// use kcm_core::{errno, presets, Parse, Parser};
/// assert_eq!(presets::kafka().parse(&[0, 0, 0, 20]), Parse::Length(24));
/// assert_eq!(presets::kafka().parse(&[0x80, 0, 0, 0]), Parse::Error(errno::EPROTO));
/// ```
pub fn kafka() -> LengthField {
    known(LengthField::builder().width(4).signed(true))
}

/// MQTT control packets: see [`Mqtt`].
pub fn mqtt() -> Mqtt {
    Mqtt::new()
}

/// The length-field presets by name (every preset except `mqtt`).
pub fn length_field_by_name(name: &str) -> Option<LengthField> {
    Some(match name {
        "thrift" => thrift(),
        "memcache" => memcache(),
        "http2" => http2(),
        "dns" => dns(),
        "kafka" => kafka(),
        _ => return None,
    })
}

/// The preset called `name` (exactly as listed in [`PRESETS`]), ready to share between
/// connections.
///
/// ```
/// use kcm_core::{presets, Parse};
///
/// let p = presets::by_name("dns").expect("a preset");
/// assert_eq!(p.parse(&[0, 12]), Parse::Length(14));
/// assert!(presets::by_name("gopher").is_none());
/// ```
pub fn by_name(name: &str) -> Option<Arc<dyn Parser>> {
    if name == "mqtt" {
        return Some(Arc::new(mqtt()));
    }
    length_field_by_name(name).map(|lf| Arc::new(lf) as Arc<dyn Parser>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{errno, Parse};

    #[test]
    fn every_listed_preset_resolves_and_nothing_else() {
        for (name, desc) in PRESETS {
            assert!(by_name(name).is_some(), "{name}");
            assert!(!desc.is_empty());
        }
        assert_eq!(PRESETS.len(), 6);
        for bad in ["", "Thrift", "lf", "thrift ", "bpf:x.o"] {
            assert!(by_name(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn presets_have_no_max_and_no_strip() {
        for lf in [thrift(), memcache(), http2(), dns(), kafka()] {
            assert_eq!(lf.max_length(), None, "{lf:?}");
            assert_eq!(lf.strip(), 0, "{lf:?}");
        }
        assert_eq!(mqtt().max_length(), None);
    }

    #[test]
    fn thrift_matches_the_kcm_documentation_example() {
        // load_word(skb, 0) + 4
        let p = thrift();
        for v in [0u32, 1, 1000, u32::MAX] {
            assert_eq!(p.declared_total(&v.to_be_bytes()), Some(i128::from(v) + 4));
        }
        assert_eq!(p.parse(&[0, 0, 0]), Parse::NeedMore);
        assert_eq!(p.min_view(), 4);
    }

    #[test]
    fn memcache_frames_a_real_get_request_and_response() {
        // GET "Hello" (the example in the memcached binary protocol description).
        let mut req = vec![
            0x80, // magic: request
            0x00, // opcode: get
            0x00, 0x05, // key length
            0x00, // extras length
            0x00, // data type
            0x00, 0x00, // vbucket id
            0x00, 0x00, 0x00, 0x05, // total body length
            0xde, 0xad, 0xbe, 0xef, // opaque
            0, 0, 0, 0, 0, 0, 0, 0, // cas
        ];
        assert_eq!(req.len(), 24);
        req.extend_from_slice(b"Hello");
        // A second request right behind it must not change the answer.
        let mut stream = req.clone();
        stream.extend_from_slice(&req);
        let p = memcache();
        for n in 0..12 {
            assert_eq!(p.parse(&stream[..n]), Parse::NeedMore, "{n}");
        }
        assert_eq!(p.parse(&stream[..12]), Parse::Length(29));
        assert_eq!(p.parse(&stream), Parse::Length(29));
        assert_eq!(p.parse(&stream[29..]), Parse::Length(29));

        // Response: 4 bytes of flags (extras) + value "World".
        let mut resp = vec![0x81, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00];
        resp.extend_from_slice(&9u32.to_be_bytes());
        resp.extend_from_slice(&[0; 12]);
        resp.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        resp.extend_from_slice(b"World");
        assert_eq!(p.parse(&resp), Parse::Length(resp.len()));
        assert_eq!(resp.len(), 33);
    }

    #[test]
    fn http2_settings_and_data_frames() {
        let p = http2();
        // SETTINGS with one 6-byte setting.
        let settings = [0, 0, 6, 0x04, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert_eq!(p.parse(&settings), Parse::Length(15));
        // Largest possible frame: 2^24 - 1 payload bytes.
        assert_eq!(
            p.parse(&[0xff, 0xff, 0xff]),
            Parse::Length((1 << 24) - 1 + 9)
        );
        assert_eq!(p.parse(&[0, 0]), Parse::NeedMore);
        // The client preface read as a frame: "PRI" = 0x505249.
        assert_eq!(p.parse(b"PRI * HTTP/2.0"), Parse::Length(0x50_5249 + 9));
    }

    #[test]
    fn dns_query_length() {
        // A 29-byte query for example.com: 2-byte prefix + 29.
        assert_eq!(dns().parse(&[0x00, 0x1d, 0x12, 0x34]), Parse::Length(31));
        assert_eq!(dns().parse(&[0x00]), Parse::NeedMore);
        assert_eq!(dns().parse(&[0, 0]), Parse::Length(2));
    }

    #[test]
    fn kafka_sizes_are_signed() {
        let p = kafka();
        assert_eq!(
            p.parse(&i32::MAX.to_be_bytes()),
            Parse::Length(i32::MAX as usize + 4)
        );
        assert_eq!(p.parse(&(-1i32).to_be_bytes()), Parse::Error(errno::EPROTO));
        assert_eq!(
            p.parse(&i32::MIN.to_be_bytes()),
            Parse::Error(errno::EPROTO)
        );
        assert_eq!(p.parse(&0i32.to_be_bytes()), Parse::Length(4));
    }

    #[test]
    fn by_name_shares_the_constructors_behaviour() {
        let msg = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        for name in ["thrift", "memcache", "http2", "dns", "kafka"] {
            let named = by_name(name).unwrap();
            let direct = length_field_by_name(name).unwrap();
            assert_eq!(named.parse(&msg), direct.parse(&msg), "{name}");
            assert_eq!(named.min_view(), direct.min_view(), "{name}");
        }
        let m = by_name("mqtt").unwrap();
        assert_eq!(m.parse(&[0xc0, 0]), Parse::Length(2));
        assert!(length_field_by_name("mqtt").is_none());
    }
}
