//! Property tests for the native parsers: encode-then-parse round trips, no panics on arbitrary
//! bytes, and answers that do not change once known.

use kcm_core::mqtt::MAX_REMAINING_LENGTH;
use kcm_core::{errno, ByteOrder, LengthField, Mqtt, Parse, Parser, TooLong};
use proptest::prelude::*;

/// The options of a length field, generated independently of the builder.
#[derive(Debug, Clone)]
struct Cfg {
    offset: usize,
    width: usize,
    little: bool,
    signed: bool,
    incl: bool,
    strip_seed: usize,
    discard: bool,
}

impl Cfg {
    fn header(&self) -> usize {
        self.offset + self.width
    }

    fn builder(&self, adjust: i64) -> kcm_core::LengthFieldBuilder {
        LengthField::builder()
            .offset(self.offset)
            .width(self.width)
            .order(if self.little {
                ByteOrder::Little
            } else {
                ByteOrder::Big
            })
            .signed(self.signed)
            .includes_header(self.incl)
            .adjust(adjust)
            .strip(self.strip_seed % (self.header() + 1))
            .too_long(if self.discard {
                TooLong::Discard
            } else {
                TooLong::Fail
            })
    }

    /// Maps an arbitrary number onto the values the field can hold.
    fn value_in_range(&self, seed: i64) -> i128 {
        let bits = 8 * self.width as u32;
        let raw = (seed as u64) & (u64::MAX >> (64 - bits));
        if self.signed {
            // Sign-extend from `bits`.
            let shift = 64 - bits;
            i128::from(((raw << shift) as i64) >> shift)
        } else {
            i128::from(raw)
        }
    }

    /// The field bytes for `value`: the low `width` bytes of its two's complement form.
    fn field_bytes(&self, value: i128) -> Vec<u8> {
        let all = (value as u64).to_le_bytes();
        let mut field = all[..self.width].to_vec();
        if !self.little {
            field.reverse();
        }
        field
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        0usize..12,
        1usize..=8,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<usize>(),
        any::<bool>(),
    )
        .prop_map(
            |(offset, width, little, signed, incl, strip_seed, discard)| Cfg {
                offset,
                width,
                little,
                signed,
                incl,
                strip_seed,
                discard,
            },
        )
}

/// Field values: mostly small (the realistic case), sometimes anything.
fn value_seed() -> impl Strategy<Value = i64> {
    prop_oneof![3 => -300i64..300, 1 => any::<i64>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A message built with the described header parses as exactly its length, from the moment
    /// the header is complete, and as NeedMore before.
    #[test]
    fn encoded_messages_parse_to_their_length(
        c in cfg(),
        seed in value_seed(),
        body_len in 0usize..200,
        fill in any::<u8>(),
        slack in prop::option::of(0usize..4),
        trailing in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let header = c.header();
        let total = header + body_len;
        let value = c.value_in_range(seed);
        // Choose the adjust that makes this value describe this total.
        let base = if c.incl { 0 } else { header as i128 };
        let adjust = total as i128 - value - base;
        prop_assume!(i64::try_from(adjust).is_ok());
        let mut b = c.builder(adjust as i64);
        if let Some(extra) = slack {
            b = b.max_length(total + extra);
        }
        let lf = b.build().expect("generated options are valid");

        let mut msg = vec![fill; total];
        msg[c.offset..header].copy_from_slice(&c.field_bytes(value));
        for n in 0..header {
            prop_assert_eq!(lf.parse(&msg[..n]), Parse::NeedMore, "prefix {}", n);
        }
        for n in header..=total {
            prop_assert_eq!(lf.parse(&msg[..n]), Parse::Length(total), "prefix {}", n);
        }
        msg.extend(&trailing);
        prop_assert_eq!(lf.parse(&msg), Parse::Length(total));
        prop_assert_eq!(lf.min_view(), header);

        // The library's own encoder agrees with the independent one.
        let mut again = vec![fill; header];
        lf.encode_length(total, &mut again).expect("encodable");
        prop_assert_eq!(&again[..], &msg[..header]);

        // One byte under the total as the maximum: the message becomes too long.
        if total > header {
            let capped = lf.to_builder().max_length(total - 1).build().expect("valid");
            let want = if c.discard { Parse::Skip(total) } else { Parse::Error(errno::EMSGSIZE) };
            prop_assert_eq!(capped.parse(&msg), want);
        }
    }

    /// Whatever the bytes, `parse` answers without panicking and its answer obeys the documented
    /// rules.
    #[test]
    fn length_field_never_panics(
        c in cfg(),
        adjust in prop_oneof![-300i64..300, any::<i64>()],
        max in prop::option::of(1usize..100_000),
        bytes in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut b = c.builder(adjust);
        if let Some(m) = max {
            b = b.max_length(m);
        }
        let Ok(lf) = b.build() else {
            // Only a max below the header is refused among generated options.
            prop_assert!(max.is_some_and(|m| m < c.header()));
            return Ok(());
        };
        let header = c.header();
        let limit = max.unwrap_or(isize::MAX as usize);
        match lf.parse(&bytes) {
            Parse::NeedMore => prop_assert!(bytes.len() < header),
            Parse::Length(n) => {
                prop_assert!(n >= header && n <= limit);
                prop_assert_eq!(lf.declared_total(&bytes), Some(n as i128));
            }
            Parse::Skip(n) => {
                prop_assert!(c.discard && n > limit);
                prop_assert_eq!(lf.declared_total(&bytes), Some(n as i128));
            }
            Parse::Error(e) => {
                let total = lf.declared_total(&bytes).expect("header present");
                if e == errno::EPROTO {
                    prop_assert!(total < header as i128);
                } else {
                    prop_assert_eq!(e, errno::EMSGSIZE);
                    prop_assert!(total > limit as i128);
                }
            }
        }
        assert_stable(&lf, &bytes)?;
    }

    /// MQTT packets with any type, flags and remaining length frame exactly.
    #[test]
    fn mqtt_round_trip(
        ty in 1u8..16,
        flags in 0u8..16,
        remaining in prop_oneof![0usize..300, 0usize..=MAX_REMAINING_LENGTH],
    ) {
        let mut hdr = vec![ty << 4 | flags];
        let mut n = remaining;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            hdr.push(if n > 0 { byte | 0x80 } else { byte });
            if n == 0 {
                break;
            }
        }
        let total = hdr.len() + remaining;
        for k in 0..hdr.len() {
            prop_assert_eq!(Mqtt::new().parse(&hdr[..k]), Parse::NeedMore);
        }
        prop_assert_eq!(Mqtt::new().parse(&hdr), Parse::Length(total));
        hdr.extend_from_slice(&[0xff; 6]);
        prop_assert_eq!(Mqtt::new().parse(&hdr), Parse::Length(total));
    }

    /// Arbitrary bytes never panic the MQTT parser, and its answers obey the documented rules.
    #[test]
    fn mqtt_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..12),
        max in prop::option::of(0usize..1000),
        discard in any::<bool>(),
    ) {
        let policy = if discard { TooLong::Discard } else { TooLong::Fail };
        let p = match max {
            Some(m) => Mqtt::with_max(m, policy),
            None => Mqtt::new(),
        };
        match p.parse(&bytes) {
            Parse::NeedMore => prop_assert!(bytes.len() < 5),
            Parse::Length(n) => {
                prop_assert!((2..=5 + MAX_REMAINING_LENGTH).contains(&n));
                prop_assert!(!matches!(max, Some(m) if n > m));
            }
            Parse::Skip(n) => prop_assert!(discard && max.is_some_and(|m| n > m)),
            Parse::Error(e) => prop_assert!(e == errno::EPROTO || e == errno::EMSGSIZE),
        }
        assert_stable(&p, &bytes)?;
    }

    /// A printed length field parses back to an equal one.
    #[test]
    fn display_round_trips(c in cfg(), adjust in any::<i64>(), max in prop::option::of(64usize..)) {
        let mut b = c.builder(adjust);
        if let Some(m) = max {
            b = b.max_length(m);
        }
        let lf = b.build().expect("valid");
        let text = lf.to_string();
        prop_assert_eq!(text.parse::<LengthField>(), Ok(lf));
    }
}

/// Once a parser answers anything but NeedMore for a prefix, every longer prefix gets the same
/// answer: the stream parser may call it again with more bytes (`Parser` contract).
fn assert_stable(p: &dyn Parser, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut known = None;
    for n in 0..=bytes.len() {
        let got = p.parse(&bytes[..n]);
        match known {
            Some(k) => prop_assert_eq!(got, k, "prefix {}", n),
            None if got != Parse::NeedMore => known = Some(got),
            None => {}
        }
    }
    Ok(())
}
