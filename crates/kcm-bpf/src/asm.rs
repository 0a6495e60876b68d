//! Instruction constructors, for building programs in code (tests, generated programs).
//!
//! Each function returns one [`Insn`] (two for [`lddw`]); sizes are 1, 2, 4 or 8 bytes.
//!
//! ```
//! use kcm_bpf::{asm, Program};
//!
//! // return load_half(skb, 0) + 2   (DNS over TCP)
//! let prog = Program::new(vec![
//!     asm::mov64_reg(6, 1),
//!     asm::ld_abs(2, 0),
//!     asm::alu64_imm(asm::ADD, 0, 2),
//!     asm::exit(),
//! ])?;
//! assert_eq!(prog.run(&[0, 10])?, 12);
//! assert_eq!(prog.run(&[0])?, 0); // too short: "need more"
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::insn::{op, Insn};

pub use crate::insn::op::{
    ADD, AND, ARSH, DIV, JEQ, JGE, JGT, JLE, JLT, JNE, JSET, JSGE, JSGT, JSLE, JSLT, LSH, MOD, MOV,
    MUL, NEG, OR, RSH, SUB, XOR,
};

/// The size bits of a load or store of `bytes` bytes (1, 2, 4, anything else is 8).
pub fn size(bytes: u8) -> u8 {
    match bytes {
        1 => op::B,
        2 => op::H,
        4 => op::W,
        _ => op::DW,
    }
}

/// `dst op= imm` on 64 bits (`op` is one of [`ADD`], [`SUB`], ... [`ARSH`]).
pub fn alu64_imm(alu: u8, dst: u8, imm: i32) -> Insn {
    Insn::new(op::ALU64 | alu | op::K, dst, 0, 0, imm)
}

/// `dst op= src` on 64 bits.
pub fn alu64_reg(alu: u8, dst: u8, src: u8) -> Insn {
    Insn::new(op::ALU64 | alu | op::X, dst, src, 0, 0)
}

/// `wdst op= imm` on 32 bits.
pub fn alu32_imm(alu: u8, dst: u8, imm: i32) -> Insn {
    Insn::new(op::ALU | alu | op::K, dst, 0, 0, imm)
}

/// `wdst op= wsrc` on 32 bits.
pub fn alu32_reg(alu: u8, dst: u8, src: u8) -> Insn {
    Insn::new(op::ALU | alu | op::X, dst, src, 0, 0)
}

/// `dst = imm` (sign-extended).
pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
    alu64_imm(op::MOV, dst, imm)
}

/// `dst = src`.
pub fn mov64_reg(dst: u8, src: u8) -> Insn {
    alu64_reg(op::MOV, dst, src)
}

/// `dst = be<bits> dst` (a byte swap on this little-endian machine).
pub fn to_be(dst: u8, bits: i32) -> Insn {
    Insn::new(op::ALU | op::END | op::TO_BE, dst, 0, 0, bits)
}

/// `dst = le<bits> dst` (a truncation on this little-endian machine).
pub fn to_le(dst: u8, bits: i32) -> Insn {
    Insn::new(op::ALU | op::END | op::TO_LE, dst, 0, 0, bits)
}

/// `dst = imm64` (two slots).
pub fn lddw(dst: u8, imm: u64) -> [Insn; 2] {
    [
        Insn::new(op::LD | op::IMM | op::DW, dst, 0, 0, imm as u32 as i32),
        Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
    ]
}

/// `r0 = *(uN *)skb[off]`: big-endian packet load; the program returns 0 if it runs past the
/// end. Needs the context in r6.
pub fn ld_abs(bytes: u8, off: i32) -> Insn {
    Insn::new(op::LD | op::ABS | size(bytes), 0, 0, 0, off)
}

/// `r0 = *(uN *)skb[src + off]`.
pub fn ld_ind(bytes: u8, src: u8, off: i32) -> Insn {
    Insn::new(op::LD | op::IND | size(bytes), 0, src, 0, off)
}

/// `dst = *(uN *)(src + off)`.
pub fn ldx(bytes: u8, dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(op::LDX | op::MEM | size(bytes), dst, src, off, 0)
}

/// `*(uN *)(dst + off) = src`.
pub fn stx(bytes: u8, dst: u8, off: i16, src: u8) -> Insn {
    Insn::new(op::STX | op::MEM | size(bytes), dst, src, off, 0)
}

/// `*(uN *)(dst + off) = imm`.
pub fn st(bytes: u8, dst: u8, off: i16, imm: i32) -> Insn {
    Insn::new(op::ST | op::MEM | size(bytes), dst, 0, off, imm)
}

/// `if dst op imm goto pc+off` (`op` is one of [`JEQ`] ... [`JSLE`]).
pub fn jmp_imm(cond: u8, dst: u8, imm: i32, off: i16) -> Insn {
    Insn::new(op::JMP | cond | op::K, dst, 0, off, imm)
}

/// `if dst op src goto pc+off`.
pub fn jmp_reg(cond: u8, dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(op::JMP | cond | op::X, dst, src, off, 0)
}

/// `if wdst op imm goto pc+off` (compares the low 32 bits).
pub fn jmp32_imm(cond: u8, dst: u8, imm: i32, off: i16) -> Insn {
    Insn::new(op::JMP32 | cond | op::K, dst, 0, off, imm)
}

/// `goto pc+off`.
pub fn ja(off: i16) -> Insn {
    Insn::new(op::JMP | op::JA, 0, 0, off, 0)
}

/// `call helper#id`.
pub fn call(id: i32) -> Insn {
    Insn::new(op::JMP | op::CALL, 0, 0, 0, id)
}

/// `exit` (returns r0).
pub fn exit() -> Insn {
    Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0)
}
