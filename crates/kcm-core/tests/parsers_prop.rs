//! Property tests for the native parsers: encode-then-parse round trips, no panics on arbitrary
//! bytes, answers that do not change once known, and `LengthField`'s own `scan` answering
//! exactly as the trait's default walk (one `parse` per message) for every configuration the
//! builder accepts and every buffer: the same count, the same lengths, the same stop.

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
    cfg_in(0usize..12, 1usize..=8)
}

/// Options with the offset and width drawn from the given strategies.
fn cfg_in(
    offset: impl Strategy<Value = usize>,
    width: impl Strategy<Value = usize>,
) -> impl Strategy<Value = Cfg> {
    (
        offset,
        width,
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

/// Forwards `parse`, `min_view` and `strip_prefix` only, so its `scan` is the trait's default
/// walk over the very same answers.
#[derive(Debug)]
struct Generic<'a>(&'a LengthField);

impl Parser for Generic<'_> {
    fn parse(&self, view: &[u8]) -> Parse {
        self.0.parse(view)
    }
    fn min_view(&self) -> usize {
        self.0.min_view()
    }
    fn strip_prefix(&self) -> usize {
        self.0.strip_prefix()
    }
}

/// A length field for the `scan` property: `Cfg`'s options plus the adjustment and the
/// maximum, every builder option.
#[derive(Debug, Clone)]
struct ScanCfg {
    lf: Cfg,
    adjust: i64,
    /// Added to the header length, so the maximum is always one the builder accepts.
    max_over_header: Option<usize>,
}

impl ScanCfg {
    fn header(&self) -> usize {
        self.lf.header()
    }

    fn build(&self) -> LengthField {
        let mut b = self.lf.builder(self.adjust);
        if let Some(extra) = self.max_over_header {
            b = b.max_length(self.header().saturating_add(extra));
        }
        b.build().expect("generated options are valid")
    }

    /// What the field can hold: `(min, max)`.
    fn domain(&self) -> (i128, i128) {
        let bits = 8 * self.lf.width as u32;
        if self.lf.signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        }
    }

    /// The longest body a message within the parser's maximum can have.
    fn max_body(&self) -> usize {
        self.max_over_header.unwrap_or(usize::MAX)
    }

    /// What the total adds to the field's value.
    fn base(&self) -> i128 {
        i128::from(self.adjust)
            + if self.lf.incl {
                0
            } else {
                self.header() as i128
            }
    }

    /// A field value and the total it describes for a well-formed message of about `body`
    /// bytes after the header: exactly that if the field can say so, else the value `body`
    /// itself if that describes a message at least as long as the header.
    fn frame_for(&self, body: usize) -> Option<(i128, usize)> {
        let (lo, hi) = self.domain();
        let total = self.header() + body;
        let value = total as i128 - self.base();
        if (lo..=hi).contains(&value) {
            return Some((value, total));
        }
        let total = usize::try_from(body as i128 + self.base()).ok()?;
        (total >= self.header() && body as i128 <= hi).then_some((body as i128, total))
    }

    /// The header for `value`: `fill` bytes around the field.
    fn header_bytes(&self, value: i128, fill: u8) -> Vec<u8> {
        let mut h = vec![fill; self.lf.offset];
        h.extend(self.lf.field_bytes(value));
        h
    }
}

/// Options for the `scan` property: offsets mostly small, the fixed-width loads more often.
fn scan_cfg() -> impl Strategy<Value = ScanCfg> {
    (
        cfg_in(
            prop_oneof![4 => 0usize..6, 1 => 6usize..40],
            prop_oneof![3 => prop::sample::select(vec![1usize, 2, 4, 8]), 1 => 1usize..=8],
        ),
        prop_oneof![
            8 => -40i64..40,
            1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, -1 << 32, 1 << 32, i64::MAX]),
            1 => any::<i64>(),
        ],
        prop::option::of(prop_oneof![3 => 0usize..120, 1 => any::<usize>()]),
    )
        .prop_map(|(lf, adjust, max_over_header)| ScanCfg {
            lf,
            adjust,
            max_over_header,
        })
}

/// One stretch of the generated stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-formed message with about this many bytes after the header (see
    /// `ScanCfg::frame_for`), or `fill` bytes of that length if the field cannot describe one.
    Frame { body: usize, fill: u8 },
    /// A header holding any value at all (negative, zero, huge), then a few bytes.
    Value { seed: u64, body: usize },
    /// A header whose value is `delta` away from one describing a message of exactly the
    /// header length (`edge` 0), the parser's maximum (1) or the stream's maximum (2): the
    /// values on either side of what a scan takes.
    Edge { edge: u8, delta: i8 },
    /// Arbitrary bytes.
    Garbage(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        8 => (0usize..48, any::<u8>()).prop_map(|(body, fill)| Piece::Frame { body, fill }),
        1 => (any::<u64>(), 0usize..8).prop_map(|(seed, body)| Piece::Value { seed, body }),
        1 => (0u8..3, -2i8..=2).prop_map(|(edge, delta)| Piece::Edge { edge, delta }),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Piece::Garbage),
    ]
}

/// The bytes of `pieces` for the parser `c` describes, scanned with the stream maximum `max`.
fn stream(c: &ScanCfg, pieces: &[Piece], max: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for p in pieces {
        match p {
            // Mostly within the parser's maximum, so that runs of several messages are common.
            Piece::Frame { body, fill } => match c.frame_for(*body.min(&c.max_body())) {
                // Bodies stay small here; a huge total is the `Value` pieces' job.
                Some((value, total)) if total - c.header() <= 1024 => {
                    buf.extend(c.header_bytes(value, *fill));
                    buf.resize(buf.len() + total - c.header(), *fill);
                }
                _ => buf.resize(buf.len() + c.header() + body, *fill),
            },
            Piece::Value { seed, body } => {
                buf.extend(c.header_bytes(c.lf.value_in_range(*seed as i64), 0x5a));
                buf.resize(buf.len() + body, 0xa5);
            }
            Piece::Edge { edge, delta } => {
                let limit = c
                    .max_over_header
                    .map_or(usize::MAX, |m| c.header().saturating_add(m))
                    .min(isize::MAX as usize);
                let total = match edge {
                    0 => c.header(),
                    1 => limit,
                    _ => max,
                } as i128
                    + i128::from(*delta);
                let value = total - c.base();
                let (lo, hi) = c.domain();
                if (lo..=hi).contains(&value) {
                    buf.extend(c.header_bytes(value, 0x3c));
                    // The body too when it is short enough to write.
                    let body = total - c.header() as i128;
                    if (0..=1024).contains(&body) {
                        buf.resize(buf.len() + body as usize, 0xc3);
                    }
                }
            }
            Piece::Garbage(bytes) => buf.extend(bytes),
        }
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// The override and the default walk agree on count, lengths (and untouched slots) and stop.
    #[test]
    fn length_field_scan_matches_the_default_walk(
        c in scan_cfg(),
        pieces in prop::collection::vec(piece(), 0..12),
        cut in any::<prop::sample::Index>(),
        whole in any::<bool>(),
        max in prop_oneof![
            3 => Just(usize::MAX),
            2 => 0usize..160,
            1 => Just(isize::MAX as usize),
            1 => any::<usize>(),
        ],
        room in prop_oneof![1 => 0usize..3, 3 => 0usize..16, 2 => Just(64usize)],
    ) {
        let lf = c.build();
        let mut buf = stream(&c, &pieces, max);
        if !whole {
            // End the buffer anywhere: inside a header, a body or at a boundary.
            buf.truncate(cut.index(buf.len() + 1));
        }
        let mut fast = vec![usize::MAX; room];
        let mut slow = vec![usize::MAX; room];
        let got = lf.scan(&buf, max, &mut fast);
        let want = Generic(&lf).scan(&buf, max, &mut slow);
        prop_assert_eq!(got, want, "{:?} max {} room {} buf {:?}", lf, max, room, buf);
        prop_assert_eq!(fast, slow);
    }
}
