//! The recogniser: what it accepts, what it must refuse, and (property test) that a
//! recognised program's native parser answers exactly like the interpreter on every input.

use proptest::prelude::*;

use super::*;
use crate::asm::*;
use crate::BpfParser;
use kcm_core::{Parse, Parser};

/// How a test program reads its length field.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// LD_ABS loads (big-endian); width 3 is a byte and a half-word.
    Abs,
    /// `bpf_skb_load_bytes` into the stack, read back in host (little-endian) order.
    BytesLe,
    /// `bpf_skb_load_bytes`, then a byte swap (big-endian).
    BytesSwap,
    /// `bpf_skb_load_bytes`, then each byte shifted into place (big-endian).
    BytesShifts,
}

/// `return field + add` in the given style (the helper styles return 0 when short).
fn program(style: Style, off: i32, width: i32, add: u32, alu32_add: bool) -> Vec<Insn> {
    let mut p = vec![mov64_reg(6, 1)];
    match style {
        Style::Abs if width == 3 => p.extend([
            ld_abs(1, off),
            mov64_reg(7, 0),
            alu64_imm(LSH, 7, 16),
            ld_abs(2, off + 1),
            alu64_reg(OR, 0, 7),
        ]),
        Style::Abs => p.push(ld_abs(width as u8, off)),
        _ => {
            p.extend([
                mov64_reg(1, 6),
                mov64_imm(2, off),
                mov64_reg(3, 10),
                alu64_imm(ADD, 3, -8),
                mov64_imm(4, width),
                call(26),
                jmp_imm(JEQ, 0, 0, 2),
                mov64_imm(0, 0),
                exit(),
            ]);
            match (style, width) {
                (Style::BytesLe, 3) => p.extend([
                    ldx(2, 0, 10, -8),
                    ldx(1, 7, 10, -6),
                    alu64_imm(LSH, 7, 16),
                    alu64_reg(OR, 0, 7),
                ]),
                (Style::BytesLe, w) => p.push(ldx(w as u8, 0, 10, -8)),
                (Style::BytesSwap, w) => p.extend([ldx(w as u8, 0, 10, -8), to_be(0, 8 * w)]),
                _ => {
                    p.push(mov64_imm(0, 0));
                    for j in 0..width {
                        p.extend([
                            ldx(1, 7, 10, (-8 + j) as i16),
                            alu64_imm(LSH, 7, 8 * (width - 1 - j)),
                            alu64_reg(OR, 0, 7),
                        ]);
                    }
                }
            }
        }
    }
    p.push(if alu32_add {
        alu32_imm(ADD, 0, add as i32)
    } else {
        alu64_imm(ADD, 0, add as i32)
    });
    p.push(exit());
    p
}

fn recognised(p: &[Insn]) -> Option<NativeLength> {
    crate::Program::new(p.to_vec()).unwrap_or_else(|e| panic!("{e}"));
    recognise(p)
}

#[test]
fn every_style_is_recognised_with_its_layout() {
    let cases = [
        (Style::Abs, 4, ByteOrder::Big),
        (Style::Abs, 3, ByteOrder::Big),
        (Style::Abs, 1, ByteOrder::Big),
        (Style::BytesLe, 4, ByteOrder::Little),
        (Style::BytesLe, 3, ByteOrder::Little),
        (Style::BytesSwap, 2, ByteOrder::Big),
        (Style::BytesShifts, 4, ByteOrder::Big),
    ];
    for (style, width, order) in cases {
        let n = recognised(&program(style, 5, width, 7, false))
            .unwrap_or_else(|| panic!("{style:?} width {width}"));
        let lf = n.length_field();
        assert_eq!(
            (lf.offset(), lf.width(), lf.order()),
            (5, width as usize, order),
            "{style:?}"
        );
        assert_eq!(n.constant(), 7);
    }
}

#[test]
fn programs_that_are_not_a_plain_length_field() {
    // A load past the field changes when "need more" ends.
    let extra = [mov64_reg(6, 1), ld_abs(1, 9), ld_abs(2, 0), exit()];
    assert!(recognised(&extra).is_none());
    // A branch on the data.
    let branch = [
        mov64_reg(6, 1),
        ld_abs(1, 0),
        jmp_imm(JEQ, 0, 5, 1),
        alu64_imm(ADD, 0, 1),
        exit(),
    ];
    assert!(recognised(&branch).is_none());
    // skb->len decides.
    let len = [ldx(4, 0, 1, 0), exit()];
    assert!(recognised(&len).is_none());
    // A constant, not a field.
    assert!(recognised(&[mov64_imm(0, 9), exit()]).is_none());
    // The helper's failure is not turned into "need more": short views return the constant.
    let mut ignores = program(Style::BytesLe, 0, 4, 4, false);
    ignores.drain(7..10); // drop `if r0 == 0 goto +2; r0 = 0; exit`
    assert!(
        recognised(&ignores).is_none(),
        "{}",
        crate::disassemble(&ignores)
    );
    // Multiplying the field.
    let mul = [mov64_reg(6, 1), ld_abs(2, 0), alu64_imm(MUL, 0, 2), exit()];
    assert!(recognised(&mul).is_none());
    // Non-adjacent bytes.
    let gap = [
        mov64_reg(6, 1),
        ld_abs(1, 0),
        mov64_reg(7, 0),
        alu64_imm(LSH, 7, 8),
        ld_abs(1, 2),
        alu64_reg(OR, 0, 7),
        exit(),
    ];
    assert!(recognised(&gap).is_none());
}

#[test]
fn high_bytes_beyond_the_int_are_ignored() {
    // A big-endian u64 built from two word loads: its top half never reaches the 32-bit
    // result, so the answer depends on bytes 4..8 only, and the loads need exactly the bytes
    // up to the field's end (8): a 4-byte field at offset 4.
    let prog = [
        mov64_reg(6, 1),
        ld_abs(4, 0),
        mov64_reg(7, 0),
        alu64_imm(LSH, 7, 32),
        ld_abs(4, 4),
        alu64_reg(OR, 0, 7),
        alu64_imm(ADD, 0, 8),
        exit(),
    ];
    let n = recognised(&prog).expect("recognised");
    assert_eq!(
        (n.length_field().offset(), n.length_field().width()),
        (4, 4)
    );
}

#[test]
fn narrow_byte_swap_of_a_wider_field() {
    // be16 of a big-endian word: the low half's bytes swapped, i.e. bytes 2..4 little-endian.
    // (This once underflowed computing the new shift of the bytes the swap drops.)
    let prog = [mov64_reg(6, 1), ld_abs(4, 0), to_be(0, 16), exit()];
    let n = recognised(&prog).expect("recognised");
    let lf = n.length_field();
    assert_eq!(
        (lf.offset(), lf.width(), lf.order()),
        (2, 2, ByteOrder::Little)
    );
    let parser = BpfParser::from_insns(prog.to_vec()).unwrap();
    for v in [&[9, 9, 5, 1][..], &[0, 0, 0, 0], &[1, 2, 3]] {
        let raw = parser.run_interpreter(v).unwrap();
        assert_eq!(
            parser.parse(v),
            Parse::from_raw(i64::from(raw as i32)),
            "{v:?}"
        );
    }
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()]
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        Just(Style::Abs),
        Just(Style::BytesLe),
        Just(Style::BytesSwap),
        Just(Style::BytesShifts)
    ]
}

fn constant() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..64,
        Just(0x7fff_fffc),
        Just(0x8000_0000),
        Just(0xffff_fffc),
        Just(0xffff_ff00),
        any::<u32>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The recognised native parser and the interpreter give the same answer on every view.
    #[test]
    fn lowered_parser_equals_interpreter(
        style in style(),
        off in 0i32..20,
        width in 1i32..=4,
        add in constant(),
        alu32_add: bool,
        views in proptest::collection::vec(proptest::collection::vec(byte(), 0..30), 1..20),
    ) {
        let width = match style {
            Style::BytesSwap if width == 1 || width == 3 => 2,
            _ => width,
        };
        let prog = program(style, off, width, add, alu32_add);
        let parser = BpfParser::from_insns(prog.clone()).unwrap();
        prop_assert!(parser.is_native(), "{}", crate::disassemble(&prog));
        let native = parser.clone().into_parser();
        for v in &views {
            let raw = parser.run_interpreter(v).unwrap();
            let want = Parse::from_raw(i64::from(raw as i32));
            prop_assert_eq!(parser.parse(v), want, "view {:02x?}", v);
            prop_assert_eq!(native.parse(v), want, "into_parser, view {:02x?}", v);
            if v.len() < native.min_view() {
                prop_assert_eq!(want, Parse::NeedMore);
            }
        }
    }
}
