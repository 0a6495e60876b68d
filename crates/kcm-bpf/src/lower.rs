//! Recognition of trivial programs: "a length field at a fixed offset, plus a constant".
//!
//! The recogniser runs the program symbolically. Packet bytes are symbols (`byte[k]`); a value
//! is a constant, a pointer, or a *field* `Σ byte[k] << shift + add` (shifted bytes never
//! overlap, so `|` and `+` agree). LD_ABS, LD_IND at a constant offset and
//! `bpf_skb_load_bytes` at a constant offset produce field bytes; shifts, ors, masks, byte
//! swaps, stack round trips and adding constants keep a field a field; anything else (a branch
//! on packet data, a read of `skb->len`, multiplication...) gives up.
//!
//! A load that can fail splits the walk: LD_ABS failing ends the program with 0; the helper
//! failing zeroes its buffer and returns -EFAULT, and the walk goes on with that concrete
//! value, so the usual `if (ret < 0) return 0;` folds. The program is recognised when
//! every path on which some load failed returns 0, and the one path on which all loads
//! succeeded returns `field + constant` where the field is 1 to 4 consecutive bytes in big- or
//! little-endian order and the loads need exactly the bytes up to the field's end. Then, for
//! every view: shorter than the field's end means some load fails and the answer is 0
//! ("need more"), exactly like the length field; otherwise the answer is
//! `(field + constant) mod 2^32` read as an `int`, which [`NativeLength`] reproduces.

use kcm_core::ByteOrder;

mod sym;

use sym::{alu, endian, field, Field, Sym};

use crate::alu::{self, AluOp, Cond};
use crate::insn::{op, Insn, HELPER_SKB_LOAD_BYTES};
use crate::native::NativeLength;
use crate::verifier::{size_bytes, STACK_SIZE};
use crate::vm::NEG_EFAULT;

/// Programs longer than this are not examined.
const MAX_LEN: usize = 4096;
/// Walk budget (instructions over all paths).
const MAX_STEPS: usize = 100_000;

/// One stack byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Byte {
    Const(u8),
    Packet(u32),
    Unknown,
}

#[derive(Debug, Clone)]
struct Path {
    pc: usize,
    regs: Vec<Sym>,
    stack: Vec<Byte>,
    /// Whole-slot spills of values that cannot be split into bytes (pointers, non-pure fields).
    spills: Vec<Option<Sym>>,
    /// Bytes the loads so far needed (all succeeded).
    need: u64,
    /// Some load failed on this path.
    failed: bool,
}

/// What the walk found on the path where every load succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Success {
    field: Field,
    need: u64,
}

/// Recognises `program` as a length field plus a constant.
pub(crate) fn recognise(insns: &[Insn]) -> Option<NativeLength> {
    if insns.len() > MAX_LEN {
        return None;
    }
    let mut entry = Path {
        pc: 0,
        regs: vec![Sym::Unknown; 11],
        stack: vec![Byte::Unknown; STACK_SIZE as usize],
        spills: vec![None; (STACK_SIZE / 8) as usize],
        need: 0,
        failed: false,
    };
    entry.regs[1] = Sym::Ctx;
    entry.regs[10] = Sym::Stack(0);
    let mut work = vec![entry];
    let mut success: Option<Success> = None;
    let mut steps = 0;
    while let Some(mut p) = work.pop() {
        loop {
            steps += 1;
            if steps > MAX_STEPS {
                return None;
            }
            match step(insns, &mut p, &mut work)? {
                Flow::Continue => {}
                Flow::Exit(r0) => {
                    if p.failed {
                        // Some load failed: the answer must be "need more".
                        match r0 {
                            Sym::Const(c) if c as u32 == 0 => break,
                            _ => return None,
                        }
                    }
                    let Sym::Field(f) = r0 else {
                        return None;
                    };
                    let s = Success {
                        field: f,
                        need: p.need,
                    };
                    if success.as_ref().is_some_and(|prev| *prev != s) {
                        return None;
                    }
                    success = Some(s);
                    break;
                }
            }
        }
    }
    let s = success?;
    layout(&s)
}

/// Turns the success path's `field + add` into a [`NativeLength`], if the field is 1 to 4
/// consecutive bytes and the loads needed exactly the bytes up to its end.
fn layout(s: &Success) -> Option<NativeLength> {
    // Only the low 32 bits reach the kernel; terms at bit 32 and above vanish.
    let mut terms: Vec<(u32, u32)> = Vec::new();
    for &(k, sh) in &s.field.terms {
        if sh + 8 <= 32 {
            terms.push((k, sh));
        } else if sh < 32 {
            return None;
        }
    }
    terms.sort_by_key(|&(_, sh)| sh);
    let width = terms.len();
    if width == 0
        || terms
            .iter()
            .enumerate()
            .any(|(j, &(_, sh))| sh != 8 * j as u32)
    {
        return None;
    }
    let lowest = terms.iter().map(|t| t.0).min()?;
    let little = terms
        .iter()
        .enumerate()
        .all(|(j, &(k, _))| k == lowest + j as u32);
    let big = terms
        .iter()
        .enumerate()
        .all(|(j, &(k, _))| k + j as u32 == lowest + width as u32 - 1);
    let order = match (big, little) {
        (true, _) => ByteOrder::Big,
        (false, true) => ByteOrder::Little,
        _ => return None,
    };
    if s.need != u64::from(lowest) + width as u64 {
        return None;
    }
    NativeLength::new(lowest as usize, width, order, s.field.add as u32)
}

enum Flow {
    Continue,
    Exit(Sym),
}

fn reg(p: &Path, r: u8) -> Sym {
    p.regs.get(usize::from(r)).cloned().unwrap_or(Sym::Unknown)
}

fn set(p: &mut Path, r: u8, v: Sym) {
    if let Some(slot) = p.regs.get_mut(usize::from(r)) {
        *slot = v;
    }
}

fn clobber(p: &mut Path, r0: Sym) {
    p.regs[0] = r0;
    for r in &mut p.regs[1..=5] {
        *r = Sym::Unknown;
    }
}

/// Stack index of offset `a` for `size` bytes.
fn sidx(a: i64, size: i64) -> Option<usize> {
    let i = STACK_SIZE + a;
    (i >= 0 && i + size <= STACK_SIZE).then_some(i as usize)
}

/// A packet load of `size` bytes at `off`, big-endian: `None` gives up.
fn packet_load(p: &mut Path, off: i64, size: i64) -> Option<Sym> {
    if off < 0 {
        return None;
    }
    p.need = p.need.max((off + size) as u64);
    let terms = (0..size)
        .map(|j| ((off + j) as u32, 8 * (size - 1 - j) as u32))
        .collect();
    Some(field(terms, 0, false))
}

fn store(p: &mut Path, a: i64, size: i64, v: Sym) -> Option<()> {
    let i = sidx(a, size)?;
    for s in i / 8..(i + size as usize).div_ceil(8) {
        p.spills[s] = None;
    }
    let mut bytes = vec![Byte::Unknown; size as usize];
    match &v {
        Sym::Const(c) => {
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = Byte::Const((c >> (8 * j)) as u8);
            }
        }
        Sym::Field(f)
            if f.pure()
                && f.terms
                    .iter()
                    .all(|&(_, s)| s % 8 == 0 && s < 8 * size as u32) =>
        {
            bytes.fill(Byte::Const(0));
            for &(k, s) in &f.terms {
                bytes[(s / 8) as usize] = Byte::Packet(k);
            }
        }
        _ if size == 8 => p.spills[i / 8] = Some(v),
        _ => {}
    }
    p.stack[i..i + size as usize].copy_from_slice(&bytes);
    Some(())
}

fn load(p: &Path, a: i64, size: i64) -> Option<Sym> {
    let i = sidx(a, size)?;
    if size == 8 {
        if let Some(v) = &p.spills[i / 8] {
            return Some(v.clone());
        }
    }
    let (mut terms, mut c) = (Vec::new(), 0u64);
    for (j, b) in p.stack[i..i + size as usize].iter().enumerate() {
        match *b {
            Byte::Const(x) => c |= u64::from(x) << (8 * j),
            Byte::Packet(k) => terms.push((k, 8 * j as u32)),
            Byte::Unknown => return Some(Sym::Unknown),
        }
    }
    // Constant bits are disjoint from the packet bytes, so they add without carries.
    Some(field(terms, c, false))
}

fn step(insns: &[Insn], p: &mut Path, work: &mut Vec<Path>) -> Option<Flow> {
    let i = p.pc;
    let insn = *insns.get(i)?;
    p.pc += 1;
    let is_x = insn.code & op::SRC_MASK == op::X;
    match insn.class() {
        op::ALU | op::ALU64 => {
            let alu64 = insn.class() == op::ALU64;
            let d = reg(p, insn.dst);
            let v = if insn.code & op::OP_MASK == op::END {
                endian(&d, insn.imm as u32, alu64 || is_x)
            } else {
                let aop = AluOp::decode(insn.code, insn.off)?;
                let s = if is_x {
                    reg(p, insn.src)
                } else {
                    Sym::Const(insn.imm as i64 as u64)
                };
                alu(aop, &d, &s, alu64)
            };
            set(p, insn.dst, v);
        }
        op::LD if insn.is_lddw() => {
            let hi = insns.get(i + 1)?.imm as u32;
            set(
                p,
                insn.dst,
                Sym::Const(u64::from(hi) << 32 | u64::from(insn.imm as u32)),
            );
            p.pc += 1;
        }
        op::LD => {
            let off = if insn.code & op::MODE_MASK == op::ABS {
                i64::from(insn.imm)
            } else {
                let Sym::Const(c) = reg(p, insn.src) else {
                    return None;
                };
                i64::from(c.wrapping_add(insn.imm as i64 as u64) as u32 as i32)
            };
            let v = packet_load(p, off, size_bytes(insn.code))?;
            clobber(p, v);
        }
        op::LDX => {
            let Sym::Stack(o) = reg(p, insn.src) else {
                return None;
            };
            let size = size_bytes(insn.code);
            let v = load(p, o + i64::from(insn.off), size)?;
            let v = if insn.code & op::MODE_MASK == op::MEMSX {
                match v {
                    Sym::Const(c) => Sym::Const(alu::alu64(AluOp::MovSx(8 * size as u8), 0, c)),
                    _ => Sym::Unknown,
                }
            } else {
                v
            };
            set(p, insn.dst, v);
        }
        op::ST | op::STX => {
            let Sym::Stack(o) = reg(p, insn.dst) else {
                return None;
            };
            let v = if insn.class() == op::ST {
                Sym::Const(insn.imm as i64 as u64)
            } else {
                reg(p, insn.src)
            };
            store(p, o + i64::from(insn.off), size_bytes(insn.code), v)?;
        }
        _ => return jump(insn, i, p, work),
    }
    Some(Flow::Continue)
}

fn jump(insn: Insn, i: usize, p: &mut Path, work: &mut Vec<Path>) -> Option<Flow> {
    let jmp32 = insn.class() == op::JMP32;
    match insn.code & op::OP_MASK {
        op::EXIT => Some(Flow::Exit(reg(p, 0))),
        op::JA => {
            let off = if jmp32 {
                i64::from(insn.imm)
            } else {
                i64::from(insn.off)
            };
            p.pc = (i as i64 + 1 + off) as usize;
            Some(Flow::Continue)
        }
        op::CALL => {
            if insn.imm != HELPER_SKB_LOAD_BYTES || reg(p, 1) != Sym::Ctx {
                return None;
            }
            let (Sym::Const(k), Sym::Stack(o), Sym::Const(n)) = (reg(p, 2), reg(p, 3), reg(p, 4))
            else {
                return None;
            };
            let n = i64::try_from(n)
                .ok()
                .filter(|n| (1..=STACK_SIZE).contains(n))?;
            let k = k as u32;
            // Failure: the buffer is zeroed and -EFAULT returned.
            let mut fail = p.clone();
            for a in o..o + n {
                store(&mut fail, a, 1, Sym::Const(0))?;
            }
            fail.failed = true;
            clobber(&mut fail, Sym::Const(NEG_EFAULT));
            if k > i32::MAX as u32 {
                *p = fail;
                return Some(Flow::Continue);
            }
            work.push(fail);
            p.need = p.need.max(u64::from(k) + n as u64);
            for j in 0..n {
                let a = o + j;
                store(p, a, 1, Sym::Const(0))?;
                let idx = sidx(a, 1)?;
                p.stack[idx] = Byte::Packet(k + j as u32);
            }
            clobber(p, Sym::Const(0));
            Some(Flow::Continue)
        }
        _ => {
            let cond = Cond::decode(insn.code)?;
            let a = reg(p, insn.dst);
            let b = if insn.code & op::SRC_MASK == op::X {
                reg(p, insn.src)
            } else {
                Sym::Const(insn.imm as i64 as u64)
            };
            let (Sym::Const(x), Sym::Const(y)) = (a, b) else {
                return None;
            };
            let taken = if jmp32 {
                alu::cmp32(cond, x, y)
            } else {
                alu::cmp64(cond, x, y)
            };
            if taken {
                p.pc = (i as i64 + 1 + i64::from(insn.off)) as usize;
            }
            Some(Flow::Continue)
        }
    }
}

#[cfg(test)]
mod tests;
