//! [`LengthField`]'s own [`Parser::scan`](crate::Parser::scan): the stream parser's batch walk
//! without a full `parse` per message.
//!
//! The trait's default walk asks `parse` about each message, and `parse` works the total out in
//! 128 bits and then judges it against the header length and the limit. Within one scan all of
//! that judging can be done up front: the total grows with the field's value, so the values
//! that give a length the walk takes (at least the header, at most the parser's limit and the
//! stream's maximum) form one interval. Per message the fast walk then loads the field, checks
//! it against that interval with one unsigned comparison, adds the base in 64 bits (exact for a
//! value in the interval, whose total is at most `isize::MAX`) and checks that the message is
//! all there.
//!
//! The first message that fails either check is handed, with the rest of the buffer and of
//! `lens`, to the default walk, which answers for it and whatever follows exactly as it would
//! have had it walked from the start (its only state is where it is). So the fast walk need
//! only be right about the messages it takes, and it takes one exactly when `parse` would
//! answer a length the default walk takes.

use super::{ByteOrder, LengthField};
use crate::parser::{scan_with, Parse};

/// The field values a scan takes as messages, and what turns one into its length. Values are
/// in the 64-bit two's complement form of the (sign-extended) field.
#[derive(Debug, Clone, Copy)]
struct Accept {
    /// The smallest value taken.
    first: u64,
    /// How many values after `first` are taken too, so that one wrapping subtraction and one
    /// unsigned comparison test a value, negative or not.
    span: u64,
    /// The base modulo 2^64: added to a taken value it gives the exact total, since that total
    /// is below 2^63.
    base: u64,
}

/// The last `N` bytes of a message's header, where a field of width `N` lies (the header is
/// `offset + N` bytes); `None` only if the header were shorter than that.
#[inline(always)]
fn field<const N: usize>(head: &[u8]) -> Option<[u8; N]> {
    head.last_chunk().copied()
}

impl LengthField {
    /// The values taken by a scan whose stream maximum is `max`; `None` if there are none
    /// (then every complete header stops the walk, and the default walk says how).
    fn accept(&self, max: usize) -> Option<Accept> {
        let (first, last) = self.values;
        let last = last.min(max as i128 - self.base);
        (first <= last).then(|| Accept {
            // Both lie within what the field can hold, so 64 bits represent them exactly.
            first: first as u64,
            span: (last - first) as u64,
            base: self.base as u64,
        })
    }

    /// The field in a message's header as a sign-extended 64-bit value, for the widths
    /// without a fixed-size load.
    #[inline(always)]
    fn field_bits(&self, head: &[u8]) -> Option<u64> {
        Some(self.extend(self.reader.read(head.get(self.opts.offset..)?)?))
    }

    /// [`Parser::scan`](crate::Parser::scan) for a length field: picks the walk whose load
    /// matches the field's width, byte order and signedness.
    pub(super) fn scan_fast(
        &self,
        buf: &[u8],
        max: usize,
        lens: &mut [usize],
    ) -> (usize, Option<Parse>) {
        let Some(acc) = self.accept(max) else {
            return scan_with(self, buf, max, lens);
        };
        // One monomorphised walk per fixed-width load; `as u64` on a signed integer
        // sign-extends, which is the two's complement form `Accept` works in.
        macro_rules! walk {
            ($load:expr) => {
                self.walk(buf, max, lens, acc, |head| field(head).map($load))
            };
        }
        use ByteOrder::{Big, Little};
        match (self.opts.width, self.opts.order, self.opts.signed) {
            (1, _, false) => walk!(|f: [u8; 1]| u64::from(f[0])),
            (1, _, true) => walk!(|f| i8::from_be_bytes(f) as u64),
            (2, Big, false) => walk!(|f| u64::from(u16::from_be_bytes(f))),
            (2, Little, false) => walk!(|f| u64::from(u16::from_le_bytes(f))),
            (2, Big, true) => walk!(|f| i16::from_be_bytes(f) as u64),
            (2, Little, true) => walk!(|f| i16::from_le_bytes(f) as u64),
            (4, Big, false) => walk!(|f| u64::from(u32::from_be_bytes(f))),
            (4, Little, false) => walk!(|f| u64::from(u32::from_le_bytes(f))),
            (4, Big, true) => walk!(|f| i32::from_be_bytes(f) as u64),
            (4, Little, true) => walk!(|f| i32::from_le_bytes(f) as u64),
            (8, Big, false) => walk!(u64::from_be_bytes),
            (8, Little, false) => walk!(u64::from_le_bytes),
            (8, Big, true) => walk!(|f| i64::from_be_bytes(f) as u64),
            (8, Little, true) => walk!(|f| i64::from_le_bytes(f) as u64),
            // Widths 3, 5, 6 and 7: the byte-loop reader and a run-time sign extension.
            _ => self.walk(buf, max, lens, acc, |head| self.field_bits(head)),
        }
    }

    /// The fast walk: `load` reads the field from a message's header (its first
    /// `header_len` bytes). Never inlined, so each load gets a loop of its own: inlined into
    /// the dispatch, the compiler merges the loops into one that switches on the width for
    /// every message.
    #[inline(never)]
    fn walk(
        &self,
        buf: &[u8],
        max: usize,
        lens: &mut [usize],
        acc: Accept,
        load: impl Fn(&[u8]) -> Option<u64>,
    ) -> (usize, Option<Parse>) {
        let mut rest = buf;
        for n in 0..lens.len() {
            let Some(head) = rest.get(..self.header_len) else {
                // Shorter than `min_view`: the default walk stops here with nothing to say.
                return (n, None);
            };
            // `load` cannot fail on a whole header; if it did, the default walk would answer.
            let Some(value) = load(head) else {
                return self.hand_over(rest, max, lens, n);
            };
            // Exact once the value is known to be taken (see `Accept::base`).
            let total = value.wrapping_add(acc.base) as usize;
            if value.wrapping_sub(acc.first) > acc.span {
                return self.hand_over(rest, max, lens, n);
            }
            let Some(next) = rest.get(total..) else {
                // Not all here yet.
                return self.hand_over(rest, max, lens, n);
            };
            lens[n] = total;
            rest = next;
        }
        (lens.len(), None)
    }

    /// Continues a scan with the default walk from the message at `rest[0]`, `n` messages in:
    /// at most once per scan, so out of the loop.
    #[cold]
    #[inline(never)]
    fn hand_over(
        &self,
        rest: &[u8],
        max: usize,
        lens: &mut [usize],
        n: usize,
    ) -> (usize, Option<Parse>) {
        #[cfg(test)]
        tests::HAND_OVERS.with(|h| h.set(h.get() + 1));
        let (more, stop) = scan_with(self, rest, max, lens.get_mut(n..).unwrap_or_default());
        (n + more, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::errno::{EMSGSIZE, EPROTO};
    use crate::parser::Parser;
    use crate::TooLong;

    thread_local! {
        /// Hand-overs to the default walk on this thread, so a test can tell that the fast
        /// walk took messages itself: a misread field mostly falls outside the taken values
        /// and is then handed over and answered right, which hides the bug from a comparison.
        pub(super) static HAND_OVERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Scans `buf` both ways with room for `room` lengths, asserts they agree and returns the
    /// lengths found and the stop.
    fn both(lf: &LengthField, buf: &[u8], max: usize, room: usize) -> (Vec<usize>, Option<Parse>) {
        let mut fast = vec![usize::MAX; room];
        let mut slow = vec![usize::MAX; room];
        let (n, stop) = lf.scan(buf, max, &mut fast);
        // The trait's default walk, which the override must answer exactly as.
        let want = scan_with(lf, buf, max, &mut slow);
        assert_eq!((n, stop), want, "{lf:?} max {max} room {room} on {buf:?}");
        assert_eq!(fast, slow, "{lf:?} max {max} room {room} on {buf:?}");
        (fast[..n].to_vec(), stop)
    }

    fn thrift_frames(bodies: &[u32]) -> Vec<u8> {
        let mut buf = Vec::new();
        for &b in bodies {
            buf.extend(b.to_be_bytes());
            buf.resize(buf.len() + b as usize, 0xee);
        }
        buf
    }

    #[test]
    fn thrift_run_ends_at_a_partial_message_or_header() {
        let lf = crate::presets::thrift();
        let mut buf = thrift_frames(&[1, 0, 28]);
        assert_eq!(both(&lf, &buf, 1 << 20, 8), (vec![5, 4, 32], None));
        buf.extend([0, 0, 0]); // a partial header
        assert_eq!(both(&lf, &buf, 1 << 20, 8), (vec![5, 4, 32], None));
        buf.extend([9, 1]); // header complete, body not
        let stop = Some(Parse::Length(13));
        assert_eq!(both(&lf, &buf, 1 << 20, 8), (vec![5, 4, 32], stop));
    }

    #[test]
    fn room_for_lengths_bounds_the_run() {
        let lf = crate::presets::thrift();
        let buf = thrift_frames(&[1, 2, 3]);
        assert_eq!(both(&lf, &buf, 1 << 20, 0), (vec![], None));
        assert_eq!(both(&lf, &buf, 1 << 20, 1), (vec![5], None));
        assert_eq!(both(&lf, &buf, 1 << 20, 3), (vec![5, 6, 7], None));
        assert_eq!(both(&lf, &[], 1 << 20, 3), (vec![], None));
    }

    #[test]
    fn stream_maximum_stops_with_the_length() {
        let lf = crate::presets::thrift();
        let buf = thrift_frames(&[1, 2, 3]);
        assert_eq!(both(&lf, &buf, 6, 8), (vec![5, 6], Some(Parse::Length(7))));
        assert_eq!(both(&lf, &buf, 7, 8), (vec![5, 6, 7], None));
        // No length at all is taken: the first header answers.
        assert_eq!(both(&lf, &buf, 4, 8), (vec![], Some(Parse::Length(5))));
        assert_eq!(both(&lf, &buf, 0, 8), (vec![], Some(Parse::Length(5))));
    }

    #[test]
    fn bad_lengths_stop_with_the_parsers_answer() {
        // Includes the header, so values below 4 are too short.
        let lf = crate::presets::thrift()
            .to_builder()
            .includes_header(true)
            .max_length(10)
            .build()
            .unwrap();
        // The header and at most 12 bytes of the body: enough for every check below.
        let frame = |v: u32| {
            let mut f = v.to_be_bytes().to_vec();
            f.resize(v.clamp(4, 16) as usize, 0);
            f
        };
        let ok = frame(6);
        for (bad, stop) in [
            (0, Parse::Error(EPROTO)),
            (3, Parse::Error(EPROTO)),
            (11, Parse::Error(EMSGSIZE)),
            (u32::MAX, Parse::Error(EMSGSIZE)),
        ] {
            let buf = [ok.clone(), frame(bad)].concat();
            assert_eq!(both(&lf, &buf, 100, 8), (vec![6], Some(stop)));
        }
        let lf = lf.to_builder().too_long(TooLong::Discard).build().unwrap();
        let buf = [ok.clone(), frame(11)].concat();
        assert_eq!(both(&lf, &buf, 100, 8), (vec![6], Some(Parse::Skip(11))));
    }

    #[test]
    fn signed_fields_take_only_lengths_that_cover_the_header() {
        for width in [1, 2, 3, 4, 8] {
            for order in [ByteOrder::Big, ByteOrder::Little] {
                let lf = LengthField::builder()
                    .offset(1)
                    .width(width)
                    .order(order)
                    .signed(true)
                    .adjust(-2)
                    .build()
                    .unwrap();
                let header = 1 + width;
                let frame = |v: i64| {
                    let mut f = vec![0xaa; header];
                    let mut bytes = v.to_le_bytes()[..width].to_vec();
                    if order == ByteOrder::Big {
                        bytes.reverse();
                    }
                    f[1..].copy_from_slice(&bytes);
                    f.resize((header as i64 + v - 2).max(header as i64) as usize, 0);
                    f
                };
                // 2 and 3 make messages of the header and header + 1; 1 and -1 are too short.
                let buf = [frame(2), frame(3), frame(1)].concat();
                let stop = Some(Parse::Error(EPROTO));
                assert_eq!(
                    both(&lf, &buf, 1 << 20, 8),
                    (vec![header, header + 1], stop)
                );
                let buf = [frame(3), frame(-1)].concat();
                assert_eq!(both(&lf, &buf, 1 << 20, 8), (vec![header + 1], stop));
            }
        }
    }

    /// A field whose value `anchor + k` describes a message of `header + k` bytes, where
    /// `anchor` is the field's reading of the bit pattern `raw` (its low `8 × width` bits,
    /// sign-extended if `signed`), and a run of such messages, one for each `k` of `steps`
    /// the field can hold: the parser, the bytes and the lengths it must find. `None` when
    /// the adjustment cannot be `-anchor` (the unsigned 64-bit values above `i64::MAX`).
    fn anchored_run(
        width: usize,
        order: ByteOrder,
        signed: bool,
        offset: usize,
        raw: u64,
        steps: impl IntoIterator<Item = u64>,
    ) -> Option<(LengthField, Vec<u8>, Vec<usize>)> {
        let bits = 8 * width as u32;
        let ones = u64::MAX >> (64 - bits);
        let shift = 64 - bits;
        let raw = raw & ones;
        let (anchor, top) = if signed {
            (
                i128::from(((raw << shift) as i64) >> shift),
                i128::from(ones >> 1),
            )
        } else {
            (i128::from(raw), i128::from(ones))
        };
        let adjust = i64::try_from(-anchor).ok()?;
        let lf = LengthField::builder()
            .offset(offset)
            .width(width)
            .order(order)
            .signed(signed)
            .adjust(adjust)
            .build()
            .unwrap();
        let (mut buf, mut want) = (Vec::new(), Vec::new());
        for k in steps
            .into_iter()
            .map(i128::from)
            .filter(|&k| anchor + k <= top)
        {
            let mut field = (((anchor + k) as u64) & ones).to_le_bytes();
            let field = &mut field[..width];
            if order == ByteOrder::Big {
                field.reverse();
            }
            buf.extend(vec![0xcc; offset]);
            buf.extend_from_slice(field);
            buf.extend(vec![0xdd; k as usize]);
            want.push(offset + width + k as usize);
        }
        Some((lf, buf, want))
    }

    /// Asserts that the fast walk takes the whole of `buf` as `want` itself: the same
    /// answer as the default walk, and no hand-over to it.
    fn assert_fast_walk_takes(lf: &LengthField, buf: &[u8], want: Vec<usize>, what: &str) {
        let before = HAND_OVERS.with(|h| h.get());
        assert_eq!(both(lf, buf, usize::MAX, 16), (want, None), "{what}");
        assert_eq!(HAND_OVERS.with(|h| h.get()), before, "{what}: handed over");
    }

    /// Every load (width, byte order, sign, offset) reads the field exactly: runs of messages
    /// whose values sit anywhere in the field's range, negative and high-bit values and
    /// values of distinct bytes included, are all taken by the fast walk.
    #[test]
    fn fast_walk_takes_well_formed_runs_itself() {
        for width in 1..=8usize {
            let bits = 8 * width as u32;
            for order in [ByteOrder::Big, ByteOrder::Little] {
                for signed in [false, true] {
                    // Bit patterns, most significant byte first: 0, 1, all ones, the sign bit
                    // alone and with 1, all but the sign bit, and two with bytes 1, 2, 3, ...
                    let distinct = (1..=width as u64).fold(0, |v, b| v << 8 | b);
                    let sign = 1u64 << (bits - 1);
                    let ones = u64::MAX >> (64 - bits);
                    let patterns = [0, 1, ones, sign, sign | 1, ones ^ sign, distinct];
                    for pattern in patterns.into_iter().chain([distinct | sign]) {
                        let offset = width % 3;
                        let Some((lf, buf, want)) =
                            anchored_run(width, order, signed, offset, pattern, 0..4)
                        else {
                            continue;
                        };
                        assert_fast_walk_takes(&lf, &buf, want, &format!("{lf:?} {pattern:#x}"));
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// [`fast_walk_takes_well_formed_runs_itself`] with the values drawn at random: for
        /// any load and any value the field holds, a run of well-formed messages is taken
        /// whole by the fast walk, with no hand-over. The property test in
        /// `tests/parsers_prop.rs` compares the result only, and a misread field mostly falls
        /// outside the taken values and is handed over and answered right: it passed with
        /// little-endian 16-bit fields read as big-endian.
        #[test]
        fn fast_walk_reads_any_value_it_takes(
            width in 1usize..=8,
            little in proptest::prelude::any::<bool>(),
            signed in proptest::prelude::any::<bool>(),
            offset in 0usize..6,
            seed in proptest::prelude::any::<u64>(),
            steps in proptest::collection::vec(0u64..6, 1..10),
        ) {
            let order = if little { ByteOrder::Little } else { ByteOrder::Big };
            // Anchors the adjustment cannot cancel are the unit test's edge cases.
            if let Some((lf, buf, want)) = anchored_run(width, order, signed, offset, seed, steps)
            {
                assert_fast_walk_takes(&lf, &buf, want, &format!("{lf:?}"));
            }
        }
    }

    #[test]
    fn extreme_bases_still_agree() {
        let values = [
            0u64,
            1,
            7,
            8,
            9,
            1 << 62,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ];
        for adjust in [i64::MIN, i64::MIN + 8, -8, 0, i64::MAX] {
            for signed in [false, true] {
                for incl in [false, true] {
                    let lf = LengthField::builder()
                        .width(8)
                        .signed(signed)
                        .adjust(adjust)
                        .includes_header(incl)
                        .build()
                        .unwrap();
                    for v in values {
                        let mut buf = v.to_be_bytes().to_vec();
                        buf.resize(64, 0);
                        for max in [0, 8, 63, 64, usize::MAX] {
                            both(&lf, &buf, max, 4);
                        }
                    }
                }
            }
        }
    }
}
