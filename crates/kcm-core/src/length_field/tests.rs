//! Unit tests for the length-field parser: boundaries of every option.

use super::*;
use crate::parser::errno::{EMSGSIZE, EPROTO};

fn lf(b: LengthFieldBuilder) -> LengthField {
    b.build().unwrap()
}

#[test]
fn need_more_at_every_prefix_shorter_than_the_header() {
    for offset in [0, 1, 5] {
        for width in 1..=8 {
            let p = lf(LengthField::builder().offset(offset).width(width));
            let mut msg = vec![0u8; offset + width];
            // Value 1: total = 1 + header, a valid length.
            p.encode_length(offset + width + 1, &mut msg).unwrap();
            for n in 0..msg.len() {
                assert_eq!(p.parse(&msg[..n]), Parse::NeedMore, "{offset}/{width}/{n}");
            }
            assert_eq!(p.parse(&msg), Parse::Length(offset + width + 1));
            assert_eq!(p.min_view(), offset + width);
        }
    }
}

#[test]
fn reads_each_width_in_both_orders() {
    let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
    for width in 1..=8 {
        let field = &bytes[..width];
        let be = field.iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        let le = field.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
        for (order, want) in [(ByteOrder::Big, be), (ByteOrder::Little, le)] {
            let p = lf(LengthField::builder().width(width).order(order));
            let total = want as i128 + width as i128;
            assert_eq!(p.declared_total(field), Some(total), "{width} {order:?}");
            let expect = if total <= isize::MAX as i128 {
                Parse::Length(total as usize)
            } else {
                Parse::Error(EMSGSIZE)
            };
            assert_eq!(p.parse(field), expect, "{width} {order:?}");
        }
    }
}

#[test]
fn unsigned_all_ones_is_the_largest_value() {
    for width in 1..=7 {
        let p = lf(LengthField::builder().width(width));
        let max = (1u64 << (8 * width)) - 1;
        assert_eq!(
            p.parse(&[0xff; 8][..width]),
            Parse::Length(max as usize + width)
        );
    }
    // Width 8: u64::MAX + 8 does not fit a usize in either policy.
    let p = lf(LengthField::builder().width(8));
    assert_eq!(p.parse(&[0xff; 8]), Parse::Error(EMSGSIZE));
    let p = lf(LengthField::builder().width(8).too_long(TooLong::Discard));
    assert_eq!(p.parse(&[0xff; 8]), Parse::Error(EMSGSIZE));
}

#[test]
fn isize_max_is_the_implicit_ceiling() {
    let p = lf(LengthField::builder().width(8).includes_header(true));
    let at = (isize::MAX as u64).to_be_bytes();
    assert_eq!(p.parse(&at), Parse::Length(isize::MAX as usize));
    let over = (isize::MAX as u64 + 1).to_be_bytes();
    assert_eq!(p.parse(&over), Parse::Error(EMSGSIZE));
    let p = lf(p.to_builder().too_long(TooLong::Discard));
    assert_eq!(p.parse(&over), Parse::Skip(isize::MAX as usize + 1));
    assert_eq!(p.parse(&u64::MAX.to_be_bytes()), Parse::Skip(usize::MAX));
}

#[test]
fn signed_extremes_for_every_width() {
    for width in 1..=8u32 {
        let w = width as usize;
        let p = lf(LengthField::builder().width(w).signed(true));
        let min = -(1i128 << (8 * width - 1));
        let max = (1i128 << (8 * width - 1)) - 1;
        let mut min_bytes = [0u8; 8];
        min_bytes[0] = 0x80;
        let mut max_bytes = [0xffu8; 8];
        max_bytes[0] = 0x7f;
        assert_eq!(
            p.declared_total(&min_bytes[..w]),
            Some(min + w as i128),
            "{w}"
        );
        assert_eq!(
            p.declared_total(&max_bytes[..w]),
            Some(max + w as i128),
            "{w}"
        );
        assert_eq!(p.parse(&min_bytes[..w]), Parse::Error(EPROTO), "{w}");
        assert_eq!(p.parse(&[0xff; 8][..w]), Parse::Error(EPROTO), "-1, {w}");
        let expect = if max + (w as i128) <= isize::MAX as i128 {
            Parse::Length((max + w as i128) as usize)
        } else {
            Parse::Error(EMSGSIZE)
        };
        assert_eq!(p.parse(&max_bytes[..w]), expect, "{w}");
    }
}

#[test]
fn signed_value_with_positive_adjust_can_be_negative() {
    // -128 + 200 + 1 = 73.
    let p = lf(LengthField::builder().width(1).signed(true).adjust(200));
    assert_eq!(p.parse(&[0x80]), Parse::Length(73));
    // The same byte unsigned is 128 + 200 + 1.
    let p = lf(p.to_builder().signed(false));
    assert_eq!(p.parse(&[0x80]), Parse::Length(329));
}

#[test]
fn extreme_adjusts_do_not_overflow() {
    let p = lf(LengthField::builder()
        .width(8)
        .signed(true)
        .adjust(i64::MAX)
        .too_long(TooLong::Discard));
    // i64::MIN + i64::MAX + 8 = 7, below the 8-byte header.
    assert_eq!(p.parse(&i64::MIN.to_be_bytes()), Parse::Error(EPROTO));
    // i64::MAX + i64::MAX + 8 does not fit a usize.
    assert_eq!(p.parse(&i64::MAX.to_be_bytes()), Parse::Error(EMSGSIZE));
    let p = lf(LengthField::builder().width(8).adjust(i64::MIN));
    // (2^64 - 9) - 2^63 + 8 = 2^63 - 1, exactly isize::MAX; one more is too long.
    assert_eq!(
        p.parse(&(u64::MAX - 8).to_be_bytes()),
        Parse::Length(isize::MAX as usize)
    );
    assert_eq!(
        p.parse(&(u64::MAX - 7).to_be_bytes()),
        Parse::Error(EMSGSIZE)
    );
    assert_eq!(p.parse(&[0; 8]), Parse::Error(EPROTO));
}

#[test]
fn negative_adjust_makes_the_length_count_the_header() {
    // tokio-util's `length_adjustment(-4)` idiom.
    let p = lf(LengthField::builder().adjust(-4));
    assert_eq!(p.parse(&10u32.to_be_bytes()), Parse::Length(10));
    assert_eq!(p.parse(&4u32.to_be_bytes()), Parse::Length(4));
    assert_eq!(p.parse(&3u32.to_be_bytes()), Parse::Error(EPROTO));
    // Equivalent to includes_header.
    let incl = lf(LengthField::builder().includes_header(true));
    for v in [0u32, 3, 4, 10, 1 << 20] {
        assert_eq!(
            p.parse(&v.to_be_bytes()),
            incl.parse(&v.to_be_bytes()),
            "{v}"
        );
    }
}

#[test]
fn a_zero_total_is_an_error() {
    let p = lf(LengthField::builder().width(1).includes_header(true));
    assert_eq!(p.parse(&[0]), Parse::Error(EPROTO));
    assert_eq!(p.parse(&[1]), Parse::Length(1));
    let p = lf(LengthField::builder().width(1).adjust(-1));
    assert_eq!(p.parse(&[0]), Parse::Error(EPROTO)); // total 0
    assert_eq!(p.parse(&[1]), Parse::Length(1));
}

#[test]
fn exact_max_passes_and_max_plus_one_does_not() {
    let p = lf(LengthField::builder().width(2).max_length(1002));
    assert_eq!(p.parse(&1000u16.to_be_bytes()), Parse::Length(1002));
    assert_eq!(p.parse(&1001u16.to_be_bytes()), Parse::Error(EMSGSIZE));
    let p = lf(p.to_builder().too_long(TooLong::Discard));
    assert_eq!(p.parse(&1000u16.to_be_bytes()), Parse::Length(1002));
    assert_eq!(p.parse(&1001u16.to_be_bytes()), Parse::Skip(1003));
    // A too-short length is a protocol error whatever the policy.
    assert_eq!(p.parse(&[0xff, 0xff][..0]), Parse::NeedMore);
    let p = lf(LengthField::builder()
        .width(2)
        .includes_header(true)
        .too_long(TooLong::Discard));
    assert_eq!(p.parse(&1u16.to_be_bytes()), Parse::Error(EPROTO));
}

#[test]
fn field_after_an_offset_ignores_the_bytes_around_it() {
    let p = lf(LengthField::builder().offset(3).width(2).little_endian());
    assert_eq!(p.parse(&[0xff, 0xff, 0xff, 7, 0]), Parse::Length(12));
    assert_eq!(p.parse(&[0, 0, 0, 7, 0, 0xff, 0xff]), Parse::Length(12));
    assert_eq!(p.parse(&[0xff, 0xff, 0xff, 7]), Parse::NeedMore);
}

#[test]
fn strip_is_reported_as_the_strip_prefix() {
    let p = lf(LengthField::builder().offset(2).width(2).strip(4));
    assert_eq!(p.strip_prefix(), 4);
    assert_eq!(lf(LengthField::builder()).strip_prefix(), 0);
}

#[test]
fn works_through_the_trait_object_wrappers() {
    let p: std::sync::Arc<dyn Parser> = std::sync::Arc::new(lf(LengthField::builder().strip(4)));
    assert_eq!(p.parse(&5u32.to_be_bytes()), Parse::Length(9));
    assert_eq!(p.strip_prefix(), 4);
    assert_eq!(p.min_view(), 4);
}

#[test]
fn debug_lists_the_options_only() {
    let s = format!("{:?}", lf(LengthField::builder().offset(1).adjust(-2)));
    assert!(s.starts_with("LengthField {"), "{s}");
    assert!(s.contains("offset: 1") && s.contains("adjust: -2"), "{s}");
    assert!(!s.contains("reader") && !s.contains("base"), "{s}");
}

#[test]
fn equality_follows_the_options() {
    let a = lf(LengthField::builder().width(2));
    assert_eq!(a, lf(LengthField::builder().width(2)));
    assert_ne!(a, lf(LengthField::builder().width(2).strip(1)));
    assert_ne!(a, lf(LengthField::builder().width(2).little_endian()));
}
