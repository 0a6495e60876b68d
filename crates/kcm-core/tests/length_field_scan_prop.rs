//! Property test for `LengthField`'s own `Parser::scan`: for every configuration the builder
//! accepts and every buffer, it answers exactly as the trait's default walk (one `parse` per
//! message) does: the same count, the same lengths, the same stop.

use kcm_core::{ByteOrder, LengthField, Parse, Parser, TooLong};
use proptest::prelude::*;

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

/// Every builder option, generated independently of the builder.
#[derive(Debug, Clone)]
struct Cfg {
    offset: usize,
    width: usize,
    little: bool,
    signed: bool,
    adjust: i64,
    incl: bool,
    strip_seed: usize,
    /// Added to the header length, so the maximum is always one the builder accepts.
    max_over_header: Option<usize>,
    discard: bool,
}

impl Cfg {
    fn header(&self) -> usize {
        self.offset + self.width
    }

    fn build(&self) -> LengthField {
        let mut b = LengthField::builder()
            .offset(self.offset)
            .width(self.width)
            .order(if self.little {
                ByteOrder::Little
            } else {
                ByteOrder::Big
            })
            .signed(self.signed)
            .adjust(self.adjust)
            .includes_header(self.incl)
            .strip(self.strip_seed % (self.header() + 1))
            .too_long(if self.discard {
                TooLong::Discard
            } else {
                TooLong::Fail
            });
        if let Some(extra) = self.max_over_header {
            b = b.max_length(self.header().saturating_add(extra));
        }
        b.build().expect("generated options are valid")
    }

    /// What the field can hold: `(min, max)`.
    fn domain(&self) -> (i128, i128) {
        let bits = 8 * self.width as u32;
        if self.signed {
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
        i128::from(self.adjust) + if self.incl { 0 } else { self.header() as i128 }
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

    /// Any value the field can hold, from an arbitrary seed.
    fn value_from_seed(&self, seed: u64) -> i128 {
        let bits = 8 * self.width as u32;
        let raw = seed & (u64::MAX >> (64 - bits));
        if self.signed {
            let shift = 64 - bits;
            i128::from(((raw << shift) as i64) >> shift)
        } else {
            i128::from(raw)
        }
    }

    /// The header for `value`: `fill` bytes around the field.
    fn header_bytes(&self, value: i128, fill: u8) -> Vec<u8> {
        let mut field = (value as u64).to_le_bytes()[..self.width].to_vec();
        if !self.little {
            field.reverse();
        }
        let mut h = vec![fill; self.offset];
        h.extend(field);
        h
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![4 => 0usize..6, 1 => 6usize..40],
        prop_oneof![3 => prop::sample::select(vec![1usize, 2, 4, 8]), 1 => 1usize..=8],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            8 => -40i64..40,
            1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, -1 << 32, 1 << 32, i64::MAX]),
            1 => any::<i64>(),
        ],
        any::<bool>(),
        any::<usize>(),
        prop::option::of(prop_oneof![3 => 0usize..120, 1 => any::<usize>()]),
        any::<bool>(),
    )
        .prop_map(
            |(
                offset,
                width,
                little,
                signed,
                adjust,
                incl,
                strip_seed,
                max_over_header,
                discard,
            )| {
                Cfg {
                    offset,
                    width,
                    little,
                    signed,
                    adjust,
                    incl,
                    strip_seed,
                    max_over_header,
                    discard,
                }
            },
        )
}

/// One stretch of the generated stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-formed message with about this many bytes after the header (see
    /// `Cfg::frame_for`), or `fill` bytes of that length if the field cannot describe one.
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
fn stream(c: &Cfg, pieces: &[Piece], max: usize) -> Vec<u8> {
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
                buf.extend(c.header_bytes(c.value_from_seed(*seed), 0x5a));
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
        c in cfg(),
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
