//! Pre-decoding: verified instructions become a compact [`Op`] array once, at load time, so the
//! interpreter's loop does one `match` per instruction and no field decoding. Memory accesses
//! whose target the verifier proved to be one fixed stack offset become direct indexes into
//! the stack array; context reads become "load the view length".

use crate::alu::{AluOp, Cond};
use crate::insn::{op, Insn};
use crate::verifier::{size_bytes, Analysis, Base};

/// One decoded instruction. Register numbers are below 11 (checked by the verifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    // The most frequent operations in compiled parsers get variants of their own, so the
    // interpreter dispatches once for them instead of twice (operation, then ALU op).
    /// `dst = imm`.
    Mov64K { dst: u8, imm: u64 },
    /// `dst = src`.
    Mov64X { dst: u8, src: u8 },
    /// `dst += imm`.
    Add64K { dst: u8, imm: u64 },
    /// `dst |= src`.
    Or64X { dst: u8, src: u8 },
    /// `dst <<= imm` (imm below 64, checked by the verifier).
    Lsh64K { dst: u8, imm: u8 },
    /// `dst &= imm`.
    And64K { dst: u8, imm: u64 },
    /// `dst = *(u8 *)stack[idx]`.
    LdxStackB { dst: u8, idx: u16 },
    /// `dst = *(u32 *)stack[idx]`.
    LdxStackW { dst: u8, idx: u16 },
    /// `if dst != imm goto target`.
    JneK { dst: u8, imm: u64, target: u32 },
    /// `if dst == imm goto target`.
    JeqK { dst: u8, imm: u64, target: u32 },
    /// `dst = dst op imm` on 64 bits (imm already sign-extended).
    Alu64K { op: AluOp, dst: u8, imm: u64 },
    /// `dst = dst op src` on 64 bits.
    Alu64X { op: AluOp, dst: u8, src: u8 },
    /// `dst = dst op imm` on 32 bits, zero-extended.
    Alu32K { op: AluOp, dst: u8, imm: u64 },
    /// `dst = dst op src` on 32 bits, zero-extended.
    Alu32X { op: AluOp, dst: u8, src: u8 },
    /// Byte-order conversion.
    End { dst: u8, bits: u8, swap: bool },
    /// `dst = imm64`; the next slot is skipped.
    Lddw { dst: u8, imm: u64 },
    /// Packet load at a constant offset.
    LdAbs { size: u8, off: i32 },
    /// Packet load at `src + imm`.
    LdInd { size: u8, src: u8, imm: i32 },
    /// `dst = (len >> shift) & mask`: a context read of `skb->len`.
    LdxLen { dst: u8, shift: u8, mask: u32 },
    /// Stack load at a fixed index of the stack array.
    LdxStack {
        dst: u8,
        size: u8,
        sx: bool,
        idx: u16,
    },
    /// Stack load through a pointer whose offset differs between paths.
    LdxStackDyn {
        dst: u8,
        src: u8,
        size: u8,
        sx: bool,
        off: i16,
    },
    /// Stack store of a register at a fixed index.
    StxStack { src: u8, size: u8, idx: u16 },
    /// Stack store of a register through a pointer.
    StxStackDyn {
        dst: u8,
        src: u8,
        size: u8,
        off: i16,
    },
    /// Stack store of an immediate at a fixed index.
    StStack { size: u8, idx: u16, imm: u64 },
    /// Stack store of an immediate through a pointer.
    StStackDyn {
        dst: u8,
        size: u8,
        off: i16,
        imm: u64,
    },
    /// `bpf_skb_load_bytes` into a fixed stack range.
    LoadBytes { idx: u16, len: u16 },
    /// `bpf_skb_load_bytes` with the destination or size read from r3/r4 at run time.
    LoadBytesDyn,
    /// Unconditional jump to an absolute index.
    Ja { target: u32 },
    /// 64-bit compare with an immediate.
    Jmp64K {
        cond: Cond,
        dst: u8,
        imm: u64,
        target: u32,
    },
    /// 64-bit compare of registers.
    Jmp64X {
        cond: Cond,
        dst: u8,
        src: u8,
        target: u32,
    },
    /// 32-bit compare with an immediate.
    Jmp32K {
        cond: Cond,
        dst: u8,
        imm: u64,
        target: u32,
    },
    /// 32-bit compare of registers.
    Jmp32X {
        cond: Cond,
        dst: u8,
        src: u8,
        target: u32,
    },
    /// Return r0.
    Exit,
    /// Never executed: second half of a `lddw`, or code the verifier found unreachable.
    Dead,
}

/// Why decoding failed: the analysis and the program disagree. Cannot happen for a program the
/// verifier accepted; reported rather than trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeBug(pub(crate) usize);

/// Decodes a verified program for a stack array of `stack_len` bytes.
pub(crate) fn decode(
    insns: &[Insn],
    an: &Analysis,
    stack_len: usize,
) -> Result<Vec<Op>, DecodeBug> {
    let mut ops = Vec::with_capacity(insns.len());
    for (i, insn) in insns.iter().enumerate() {
        let live = an.reached.get(i).copied().unwrap_or(false);
        let op = if live {
            decode_one(i, *insn, insns, an, stack_len).ok_or(DecodeBug(i))?
        } else {
            Op::Dead
        };
        ops.push(op);
    }
    Ok(ops)
}

fn target(i: usize, off: i64) -> Option<u32> {
    let t = i as i64 + 1 + off;
    // Only forward jumps exist after verification; keep that an invariant of the Op array.
    (t > i as i64).then_some(t as u32)
}

/// The fixed stack-array index of stack offset `a` for an access of `size` bytes.
fn stack_idx(a: i64, size: i64, stack_len: usize) -> Option<u16> {
    let idx = stack_len as i64 + a;
    (idx >= 0 && idx + size <= stack_len as i64).then_some(idx as u16)
}

fn decode_one(i: usize, insn: Insn, insns: &[Insn], an: &Analysis, stack_len: usize) -> Option<Op> {
    let (dst, src) = (insn.dst, insn.src);
    let is_x = insn.code & op::SRC_MASK == op::X;
    let size = size_bytes(insn.code);
    let base = an.base.get(i).copied()?;
    Some(match insn.class() {
        op::ALU | op::ALU64 => {
            let alu64 = insn.class() == op::ALU64;
            if insn.code & op::OP_MASK == op::END {
                let swap = alu64 || insn.code & op::SRC_MASK == op::TO_BE;
                return Some(Op::End {
                    dst,
                    bits: insn.imm as u8,
                    swap,
                });
            }
            let op = AluOp::decode(insn.code, insn.off)?;
            let imm = insn.imm as i64 as u64;
            match (alu64, is_x) {
                (true, false) => match op {
                    AluOp::Mov => Op::Mov64K { dst, imm },
                    AluOp::Add => Op::Add64K { dst, imm },
                    AluOp::Lsh => Op::Lsh64K {
                        dst,
                        imm: (imm & 63) as u8,
                    },
                    AluOp::And => Op::And64K { dst, imm },
                    _ => Op::Alu64K { op, dst, imm },
                },
                (true, true) => match op {
                    AluOp::Mov => Op::Mov64X { dst, src },
                    AluOp::Or => Op::Or64X { dst, src },
                    _ => Op::Alu64X { op, dst, src },
                },
                (false, false) => Op::Alu32K { op, dst, imm },
                (false, true) => Op::Alu32X { op, dst, src },
            }
        }
        op::JMP | op::JMP32 => {
            let jmp32 = insn.class() == op::JMP32;
            match insn.code & op::OP_MASK {
                op::EXIT => Op::Exit,
                op::CALL => match (base, an.call_len.get(i).copied()?) {
                    (Base::Stack(a), Some(len)) => Op::LoadBytes {
                        idx: stack_idx(a, i64::from(len), stack_len)?,
                        len,
                    },
                    _ => Op::LoadBytesDyn,
                },
                op::JA => {
                    let off = if jmp32 {
                        i64::from(insn.imm)
                    } else {
                        i64::from(insn.off)
                    };
                    Op::Ja {
                        target: target(i, off)?,
                    }
                }
                _ => {
                    let cond = Cond::decode(insn.code)?;
                    let target = target(i, i64::from(insn.off))?;
                    let imm = insn.imm as i64 as u64;
                    match (jmp32, is_x) {
                        (false, false) if cond == Cond::Ne => Op::JneK { dst, imm, target },
                        (false, false) if cond == Cond::Eq => Op::JeqK { dst, imm, target },
                        (false, false) => Op::Jmp64K {
                            cond,
                            dst,
                            imm,
                            target,
                        },
                        (false, true) => Op::Jmp64X {
                            cond,
                            dst,
                            src,
                            target,
                        },
                        (true, false) => Op::Jmp32K {
                            cond,
                            dst,
                            imm,
                            target,
                        },
                        (true, true) => Op::Jmp32X {
                            cond,
                            dst,
                            src,
                            target,
                        },
                    }
                }
            }
        }
        op::LD if insn.is_lddw() => {
            let hi = insns.get(i + 1)?.imm as u32;
            Op::Lddw {
                dst,
                imm: u64::from(hi) << 32 | u64::from(insn.imm as u32),
            }
        }
        op::LD => {
            let size = size as u8;
            if insn.code & op::MODE_MASK == op::ABS {
                Op::LdAbs {
                    size,
                    off: insn.imm,
                }
            } else {
                Op::LdInd {
                    size,
                    src,
                    imm: insn.imm,
                }
            }
        }
        op::LDX => {
            let sx = insn.code & op::MODE_MASK == op::MEMSX;
            match base {
                Base::Ctx(r) => Op::LdxLen {
                    dst,
                    shift: r.shift,
                    mask: r.mask,
                },
                Base::Stack(a) => {
                    let idx = stack_idx(a, size, stack_len)?;
                    match (size, sx) {
                        (1, false) => Op::LdxStackB { dst, idx },
                        (4, false) => Op::LdxStackW { dst, idx },
                        _ => Op::LdxStack {
                            dst,
                            size: size as u8,
                            sx,
                            idx,
                        },
                    }
                }
                Base::StackVaries => Op::LdxStackDyn {
                    dst,
                    src,
                    size: size as u8,
                    sx,
                    off: insn.off,
                },
                Base::Unseen => return None,
            }
        }
        op::ST => {
            let imm = insn.imm as i64 as u64;
            match base {
                Base::Stack(a) => Op::StStack {
                    size: size as u8,
                    idx: stack_idx(a, size, stack_len)?,
                    imm,
                },
                Base::StackVaries => Op::StStackDyn {
                    dst,
                    size: size as u8,
                    off: insn.off,
                    imm,
                },
                _ => return None,
            }
        }
        _ => match base {
            Base::Stack(a) => Op::StxStack {
                src,
                size: size as u8,
                idx: stack_idx(a, size, stack_len)?,
            },
            Base::StackVaries => Op::StxStackDyn {
                dst,
                src,
                size: size as u8,
                off: insn.off,
            },
            _ => return None,
        },
    })
}
