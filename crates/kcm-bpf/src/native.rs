//! [`NativeLength`]: a recognised trivial program, run as a native [`LengthField`].

use std::fmt;
use std::sync::Arc;

use kcm_core::{presets, ByteOrder, LengthField, Parse, Parser};

/// A program recognised as "unsigned length field at a fixed offset, plus a constant",
/// answering exactly what the kernel would for every view, at native speed.
///
/// The kernel turns the program's 32-bit result into a signed `int` (`kcm-spec.md` §4.1): with
/// a 4-byte field, `value + constant` wraps modulo 2^32 and lengths of 2^31 and above become
/// negative, i.e. errors whose errno is whatever the wrapped number says. A plain
/// [`LengthField`] answers `EPROTO`/`EMSGSIZE` there instead. So the `LengthField` here counts
/// the whole message (`includes_header` when the constant is smaller than the header), has a
/// maximum of `i32::MAX`, and whenever it answers an error this type recomputes the kernel's
/// value from the field — a cold path that only a corrupt or hostile stream reaches. When no
/// input can reach it (1- to 3-byte fields whose total always fits an `int` and covers the
/// header), the `LengthField` alone is exact: [`is_plain`](Self::is_plain).
///
/// ```
/// use kcm_bpf::BpfParser;
/// use kcm_core::{errno, Parse, Parser};
///
/// let obj = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bpf/kcm_doc.o"))?;
/// let parser = BpfParser::from_elf(&obj, None)?;
/// let native = parser.native().expect("load_word(skb, 0) + 4 is recognised");
/// assert_eq!(native.length_field().offset(), 0);
/// assert_eq!(native.length_field().width(), 4);
/// assert!(!native.is_plain());
/// assert_eq!(native.parse(&[0, 0, 0, 1]), Parse::Length(5));
/// // 0xfffffff0 + 4 = -12 as an int: the kernel reports errno 12, and so does kcm.
/// assert_eq!(native.parse(&[0xff, 0xff, 0xff, 0xf0]), Parse::Error(12));
/// // 0xfffffffc + 4 wraps to 0: "need more", forever.
/// assert_eq!(native.parse(&[0xff, 0xff, 0xff, 0xfc]), Parse::NeedMore);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeLength {
    lf: LengthField,
    plain: bool,
    add: u32,
}

impl NativeLength {
    /// The parser for `(field + add) as i32`, the field being `width` (1 to 4) bytes at
    /// `offset`, unsigned, in `order`.
    pub(crate) fn new(
        offset: usize,
        width: usize,
        order: ByteOrder,
        add: u32,
    ) -> Option<NativeLength> {
        let header = offset.checked_add(width)?;
        let max_value = (1u64 << (8 * width)) - 1;
        let add64 = u64::from(add);
        let plain = add64 >= header as u64 && add64 + max_value <= i32::MAX as u64;
        let mut b = LengthField::builder()
            .offset(offset)
            .width(width)
            .order(order);
        b = if add64 >= header as u64 {
            b.adjust(add64 as i64 - header as i64)
        } else {
            b.includes_header(true).adjust(add64 as i64)
        };
        if !plain {
            b = b.max_length(i32::MAX as usize);
        }
        Some(NativeLength {
            lf: b.build().ok()?,
            plain,
            add,
        })
    }

    /// The length-field parser that does the work.
    pub fn length_field(&self) -> &LengthField {
        &self.lf
    }

    /// Whether [`length_field`](Self::length_field) alone answers like the kernel for every
    /// input (no total can overflow an `int` or fall short of the header).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// The constant the program adds to the field (modulo 2^32).
    pub fn constant(&self) -> u32 {
        self.add
    }

    /// The name of the `kcm_core` preset with the same layout (ignoring the maximum), if any.
    pub fn preset(&self) -> Option<&'static str> {
        let unbounded = self.lf.to_builder().no_max_length().build().ok()?;
        presets::PRESETS
            .iter()
            .map(|(name, _)| *name)
            .find(|name| presets::length_field_by_name(name).is_some_and(|p| p == unbounded))
    }

    /// The parser to hand to a stream: the bare [`LengthField`] when it is exact on its own,
    /// otherwise this wrapper.
    pub fn into_parser(self) -> Arc<dyn Parser> {
        if self.plain {
            Arc::new(self.lf)
        } else {
            Arc::new(self)
        }
    }

    /// What the kernel answers when the length field's own answer is an error.
    #[cold]
    #[inline(never)]
    fn kernel_answer(&self, view: &[u8]) -> Parse {
        match self.lf.declared_total(view) {
            // `total` is `field + add` exactly; the kernel keeps its low 32 bits as an int.
            Some(total) => Parse::from_raw(i64::from(total as u32 as i32)),
            None => Parse::NeedMore,
        }
    }
}

impl Parser for NativeLength {
    #[inline]
    fn parse(&self, view: &[u8]) -> Parse {
        match self.lf.parse(view) {
            Parse::Error(_) => self.kernel_answer(view),
            answer => answer,
        }
    }

    fn min_view(&self) -> usize {
        self.lf.header_len()
    }
}

impl fmt::Display for NativeLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lf = &self.lf;
        let order = match lf.order() {
            ByteOrder::Big => "big-endian",
            ByteOrder::Little => "little-endian",
        };
        write!(
            f,
            "length field: {} bytes {order} unsigned at offset {}, total = value + {}",
            lf.width(),
            lf.offset(),
            self.add
        )?;
        if let Some(p) = self.preset() {
            write!(f, " (layout of preset `{p}`)")?;
        }
        if !self.plain {
            write!(
                f,
                "; totals above i32::MAX or below the header get the kernel's int answer"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcm_core::errno;

    #[test]
    fn small_fields_are_plain_length_fields() {
        let dns = NativeLength::new(0, 2, ByteOrder::Big, 2).unwrap();
        assert!(dns.is_plain());
        assert_eq!(dns.preset(), Some("dns"));
        assert_eq!(dns.length_field(), &presets::dns());
        let http2 = NativeLength::new(0, 3, ByteOrder::Big, 9).unwrap();
        assert_eq!(http2.preset(), Some("http2"));
        // A constant below the header (here 0) cannot be plain: a zero field means "need
        // more" to the kernel, an error to LengthField.
        let zero = NativeLength::new(0, 2, ByteOrder::Little, 0).unwrap();
        assert!(!zero.is_plain());
        assert_eq!(zero.parse(&[0, 0]), Parse::NeedMore);
        assert_eq!(zero.parse(&[1, 0]), Parse::Length(1));
        assert_eq!(zero.parse(&[1]), Parse::NeedMore);
    }

    #[test]
    fn four_byte_fields_follow_the_kernel_int_conversion() {
        let thrift = NativeLength::new(0, 4, ByteOrder::Big, 4).unwrap();
        assert!(!thrift.is_plain());
        assert_eq!(thrift.preset(), Some("thrift"));
        assert_eq!(
            thrift.parse(&[0x7f, 0xff, 0xff, 0xfb]),
            Parse::Length(i32::MAX as usize)
        );
        // 0x7ffffffc + 4 = 2^31: i32::MIN, which from_raw maps to EPROTO.
        assert_eq!(
            thrift.parse(&[0x7f, 0xff, 0xff, 0xfc]),
            Parse::Error(errno::EPROTO)
        );
        assert_eq!(thrift.parse(&[0xff, 0xff, 0xff, 0xfe]), Parse::Length(2));
        let memcache = NativeLength::new(8, 4, ByteOrder::Big, 24).unwrap();
        assert_eq!(memcache.preset(), Some("memcache"));
        assert!(memcache.to_string().contains("offset 8"), "{memcache}");
    }
}
