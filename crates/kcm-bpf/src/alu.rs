//! Arithmetic and comparison semantics, shared by the verifier (constant folding), the
//! interpreter and the recogniser so all three agree bit for bit.
//!
//! These are the kernel's rules, not C's or Rust's: a 32-bit operation zero-extends its result
//! into the 64-bit register; shift counts are masked to the operand width (the x86 JIT and the
//! interpreter both do this); division by zero yields 0 and modulo by zero leaves the dividend
//! (the kernel verifier patches every register division with exactly these fix-ups, and for a
//! 32-bit modulo the "unchanged" dividend is its low half, zero-extended); signed division of
//! the minimum value by -1 wraps (the verifier rewrites it as a negation).

use std::ops::BitAnd;

use crate::insn::op;

/// An arithmetic operation, decoded once from `code` and `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    SDiv,
    Or,
    And,
    Lsh,
    Rsh,
    Neg,
    Mod,
    SMod,
    Xor,
    Mov,
    /// `mov` sign-extending the low 8, 16 or 32 bits of the source (ISA v4 `movsx`).
    MovSx(u8),
    Arsh,
}

impl AluOp {
    /// The operation of an ALU/ALU64 instruction other than `END`; `None` for unknown ones.
    /// Field validity (which `off` values are allowed) is the verifier's business.
    pub(crate) fn decode(code: u8, off: i16) -> Option<AluOp> {
        Some(match code & op::OP_MASK {
            op::ADD => AluOp::Add,
            op::SUB => AluOp::Sub,
            op::MUL => AluOp::Mul,
            op::DIV if off == 1 => AluOp::SDiv,
            op::DIV => AluOp::Div,
            op::OR => AluOp::Or,
            op::AND => AluOp::And,
            op::LSH => AluOp::Lsh,
            op::RSH => AluOp::Rsh,
            op::NEG => AluOp::Neg,
            op::MOD if off == 1 => AluOp::SMod,
            op::MOD => AluOp::Mod,
            op::XOR => AluOp::Xor,
            op::MOV if off != 0 && code & op::SRC_MASK == op::X => AluOp::MovSx(off as u8),
            op::MOV => AluOp::Mov,
            op::ARSH => AluOp::Arsh,
            _ => return None,
        })
    }
}

/// Sign-extends the low `bits` (8, 16 or 32) of `v` to 64 bits.
#[inline(always)]
pub(crate) fn sext(v: u64, bits: u8) -> u64 {
    match bits {
        8 => v as u8 as i8 as i64 as u64,
        16 => v as u16 as i16 as i64 as u64,
        _ => v as u32 as i32 as i64 as u64,
    }
}

/// One table of the ALU rules above, written once and instantiated for each operand width
/// (`$u`/`$i`: the unsigned and signed types, `$mask`: the shift-count mask) so that the
/// 64-bit and 32-bit operations cannot drift apart.
macro_rules! alu_rules {
    ($op:expr, $a:expr, $b:expr, $u:ty, $i:ty, $mask:expr) => {{
        let (a, b): ($u, $u) = ($a, $b);
        match $op {
            AluOp::Add => a.wrapping_add(b),
            AluOp::Sub => a.wrapping_sub(b),
            AluOp::Mul => a.wrapping_mul(b),
            AluOp::Div => a.checked_div(b).unwrap_or(0),
            AluOp::SDiv => match b {
                0 => 0,
                _ => (a as $i).wrapping_div(b as $i) as $u,
            },
            AluOp::Or => a | b,
            AluOp::And => a & b,
            AluOp::Lsh => a << (b & $mask),
            AluOp::Rsh => a >> (b & $mask),
            AluOp::Neg => a.wrapping_neg(),
            AluOp::Mod => a.checked_rem(b).unwrap_or(a),
            AluOp::SMod => match b {
                0 => a,
                _ => (a as $i).wrapping_rem(b as $i) as $u,
            },
            AluOp::Xor => a ^ b,
            AluOp::Mov => b,
            // Sign-extend to 64 bits, then keep the operand width.
            AluOp::MovSx(bits) => sext(b as u64, bits) as $u,
            AluOp::Arsh => ((a as $i) >> (b & $mask)) as $u,
        }
    }};
}

/// `dst op src` on 64 bits.
#[inline(always)]
pub(crate) fn alu64(op: AluOp, a: u64, b: u64) -> u64 {
    alu_rules!(op, a, b, u64, i64, 63)
}

/// `dst op src` on the low 32 bits, zero-extended.
#[inline(always)]
pub(crate) fn alu32(op: AluOp, a: u64, b: u64) -> u64 {
    u64::from(alu_rules!(op, a as u32, b as u32, u32, i32, 31))
}

/// Byte-order conversion (`END`): `swap` reverses the low `bits` bytes, otherwise they are
/// only kept (to-little-endian on a little-endian machine is a truncation).
#[inline(always)]
pub(crate) fn endian(v: u64, bits: u8, swap: bool) -> u64 {
    match (bits, swap) {
        (16, false) => u64::from(v as u16),
        (32, false) => u64::from(v as u32),
        (16, true) => u64::from((v as u16).swap_bytes()),
        (32, true) => u64::from((v as u32).swap_bytes()),
        (_, false) => v,
        (_, true) => v.swap_bytes(),
    }
}

/// A jump condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl Cond {
    /// The condition of a conditional jump; `None` for JA, CALL, EXIT and unknown codes.
    pub(crate) fn decode(code: u8) -> Option<Cond> {
        Some(match code & op::OP_MASK {
            op::JEQ => Cond::Eq,
            op::JGT => Cond::Gt,
            op::JGE => Cond::Ge,
            op::JSET => Cond::Set,
            op::JNE => Cond::Ne,
            op::JSGT => Cond::Sgt,
            op::JSGE => Cond::Sge,
            op::JLT => Cond::Lt,
            op::JLE => Cond::Le,
            op::JSLT => Cond::Slt,
            op::JSLE => Cond::Sle,
            _ => return None,
        })
    }
}

/// Evaluates `c` on operands of one width: `a`, `b` unsigned, `sa`, `sb` the same bits signed.
#[inline(always)]
fn cmp<U, S>(c: Cond, a: U, b: U, sa: S, sb: S) -> bool
where
    U: Ord + Default + BitAnd<Output = U>,
    S: Ord,
{
    match c {
        Cond::Eq => a == b,
        Cond::Gt => a > b,
        Cond::Ge => a >= b,
        Cond::Set => a & b != U::default(),
        Cond::Ne => a != b,
        Cond::Sgt => sa > sb,
        Cond::Sge => sa >= sb,
        Cond::Lt => a < b,
        Cond::Le => a <= b,
        Cond::Slt => sa < sb,
        Cond::Sle => sa <= sb,
    }
}

/// Evaluates a 64-bit comparison.
#[inline(always)]
pub(crate) fn cmp64(c: Cond, a: u64, b: u64) -> bool {
    cmp(c, a, b, a as i64, b as i64)
}

/// Evaluates a comparison of the low 32 bits (JMP32).
#[inline(always)]
pub(crate) fn cmp32(c: Cond, a: u64, b: u64) -> bool {
    let (a, b) = (a as u32, b as u32);
    cmp(c, a, b, a as i32, b as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_and_modulo_by_zero() {
        assert_eq!(alu64(AluOp::Div, 7, 0), 0);
        assert_eq!(alu64(AluOp::Mod, 7, 0), 7);
        assert_eq!(alu64(AluOp::SDiv, 7, 0), 0);
        assert_eq!(alu64(AluOp::SMod, u64::MAX, 0), u64::MAX);
        // 32-bit modulo by zero keeps the low half only.
        assert_eq!(alu32(AluOp::Mod, 0x1_0000_0007, 0), 7);
        // A 32-bit divisor of zero counts even if the upper half is not zero.
        assert_eq!(alu32(AluOp::Div, 9, 0x1_0000_0000), 0);
    }

    #[test]
    fn signed_overflow_wraps() {
        let min = i64::MIN as u64;
        assert_eq!(alu64(AluOp::SDiv, min, u64::MAX), min);
        assert_eq!(alu64(AluOp::SMod, min, u64::MAX), 0);
        assert_eq!(alu64(AluOp::SMod, (-7i64) as u64, 2), (-1i64) as u64);
        assert_eq!(alu32(AluOp::SDiv, 0x8000_0000, 0xffff_ffff), 0x8000_0000);
    }

    #[test]
    fn thirty_two_bit_results_are_zero_extended_and_shifts_masked() {
        assert_eq!(alu32(AluOp::Add, 0xffff_ffff, 1), 0);
        assert_eq!(alu32(AluOp::Mov, 0, u64::MAX), 0xffff_ffff);
        assert_eq!(alu32(AluOp::Arsh, 0x8000_0000, 31), 0xffff_ffff);
        assert_eq!(alu64(AluOp::Lsh, 1, 65), 2);
        assert_eq!(alu32(AluOp::Lsh, 1, 33), 2);
        assert_eq!(alu32(AluOp::Neg, 1, 0), 0xffff_ffff);
        assert_eq!(alu64(AluOp::MovSx(8), 0, 0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(alu32(AluOp::MovSx(16), 0, 0x8000), 0xffff_8000);
    }

    #[test]
    fn endian_and_compares() {
        assert_eq!(endian(0x1122_3344_5566_7788, 16, true), 0x8877);
        assert_eq!(endian(0x1122_3344_5566_7788, 32, false), 0x5566_7788);
        assert!(cmp64(Cond::Slt, u64::MAX, 0));
        assert!(!cmp64(Cond::Lt, u64::MAX, 0));
        assert!(cmp32(Cond::Eq, 0x1_0000_0005, 5));
        assert!(cmp32(Cond::Sgt, 1, 0xffff_ffff));
        assert!(cmp64(Cond::Set, 6, 2));
    }
}
