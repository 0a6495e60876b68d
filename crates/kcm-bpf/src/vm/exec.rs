//! The interpreter loop.
//!
//! Registers are a `[u64; 16]` indexed with `& 15`, so no register access needs a bounds check;
//! the stack is an array on the Rust stack sized to what the program uses. Pointers are
//! virtual addresses (the context and the top of the stack have fixed, made-up values): the
//! verifier only lets them be moved, offset by constants, spilled whole, compared with 0 and
//! subtracted from each other, so a program cannot tell them from the kernel's. Every access
//! to the view or the stack goes through `get`, so even a verifier bug could not read outside
//! a buffer: it would end the run with a [`Fault`](super::Fault).

use super::decode::Op;
use super::Fault;
use crate::alu;

/// Virtual address of the context (`struct __sk_buff`).
pub(crate) const CTX_ADDR: u64 = 0x0000_4000_0000_0000;
/// Virtual address of the top of the stack (the value of r10).
pub(crate) const STACK_TOP: u64 = 0x0000_7fff_0000_0000;
/// `SKF_NET_OFF`: negative LD_ABS/LD_IND offsets from here up count from the network header,
/// which in kcm (as in the kernel's test runs) is the start of the view.
const SKF_NET_OFF: i32 = -0x10_0000;
/// `SKF_LL_OFF`: offsets from here to `SKF_NET_OFF` count from the link-layer header.
const SKF_LL_OFF: i32 = -0x20_0000;
/// A KCM message has no link-layer header; kcm presents the one the kernel's
/// `BPF_PROG_TEST_RUN` gives a socket filter: 14 bytes (an Ethernet header), here all zero.
const LL_HEADER: usize = 14;
/// `-EFAULT`, what `bpf_skb_load_bytes` returns when the bytes are not there (the recogniser
/// uses the same value, so both fold the program's `ret < 0` test alike).
pub(crate) const NEG_EFAULT: u64 = -(kcm_core::errno::EFAULT as i64) as u64;

/// Reads `size` (1, 2 or 4) bytes big-endian at `off` of the view, as the kernel's LD_ABS /
/// LD_IND do: `None` unless all of them are present.
#[inline(always)]
pub(crate) fn packet_load(view: &[u8], off: i32, size: u8) -> Option<u64> {
    let start = if off >= 0 {
        off as usize
    } else if off >= SKF_NET_OFF {
        (off - SKF_NET_OFF) as usize
    } else {
        return link_layer_load(view, off, size);
    };
    let rest = view.get(start..)?;
    match size {
        1 => rest.first().map(|&b| u64::from(b)),
        2 => rest
            .first_chunk::<2>()
            .map(|c| u64::from(u16::from_be_bytes(*c))),
        _ => rest
            .first_chunk::<4>()
            .map(|c| u64::from(u32::from_be_bytes(*c))),
    }
}

/// A load relative to the (all-zero) link-layer header that precedes the view.
#[cold]
fn link_layer_load(view: &[u8], off: i32, size: u8) -> Option<u64> {
    if off < SKF_LL_OFF {
        return None;
    }
    let start = (off - SKF_LL_OFF) as usize;
    if start + usize::from(size) > LL_HEADER + view.len() {
        return None;
    }
    let byte = |k: usize| {
        k.checked_sub(LL_HEADER)
            .map_or(Some(0), |k| view.get(k).copied())
    };
    (start..start + usize::from(size)).try_fold(0u64, |v, k| Some(v << 8 | u64::from(byte(k)?)))
}

/// `bpf_skb_load_bytes(skb, offset, to, len)`: copies or, if short, zeroes `to`; returns 0 or
/// -EFAULT. The offset is the helper's `u32` argument; above `INT_MAX` it fails.
#[inline(always)]
fn load_bytes(view: &[u8], offset: u64, to: &mut [u8]) -> u64 {
    let offset = offset as u32;
    let src = (offset <= i32::MAX as u32)
        .then(|| {
            let start = offset as usize;
            view.get(start..start.checked_add(to.len())?)
        })
        .flatten();
    match src {
        Some(src) => {
            to.copy_from_slice(src);
            0
        }
        None => {
            to.fill(0);
            NEG_EFAULT
        }
    }
}

/// Little-endian stack load (the machine is little-endian, as the kernel's would be here);
/// `sx` sign-extends a 1-, 2- or 4-byte value (the verifier refuses 8-byte `MEMSX`).
#[inline(always)]
fn stack_load(stack: &[u8], idx: usize, size: u8, sx: bool) -> Option<u64> {
    let b = stack.get(idx..)?;
    let v = match size {
        1 => u64::from(*b.first()?),
        2 => u64::from(u16::from_le_bytes(*b.first_chunk()?)),
        4 => u64::from(u32::from_le_bytes(*b.first_chunk()?)),
        _ => return b.first_chunk().map(|c| u64::from_le_bytes(*c)),
    };
    Some(if sx { alu::sext(v, size * 8) } else { v })
}

#[inline(always)]
fn stack_store(stack: &mut [u8], idx: usize, size: u8, v: u64) -> Option<()> {
    let dst = stack.get_mut(idx..idx.checked_add(usize::from(size))?)?;
    dst.copy_from_slice(v.to_le_bytes().get(..usize::from(size))?);
    Some(())
}

/// The stack-array index of a virtual stack address, for an access of `size` bytes.
#[inline(always)]
fn dyn_idx<const N: usize>(addr: u64, size: u64) -> Option<usize> {
    let idx = addr.wrapping_sub(STACK_TOP - N as u64);
    (idx.checked_add(size)? <= N as u64).then_some(idx as usize)
}

/// Runs decoded `ops` on `view` with an `N`-byte stack; returns the low 32 bits of r0, as
/// `bpf_prog_run` does.
pub(crate) fn run<const N: usize>(ops: &[Op], view: &[u8]) -> Result<u32, Fault> {
    let mut stack = [0u8; N];
    let mut r = [0u64; 16];
    r[1] = CTX_ADDR;
    r[10] = STACK_TOP;
    let mut pc = 0usize;
    macro_rules! reg {
        ($n:expr) => {
            r[usize::from($n) & 15]
        };
    }
    loop {
        let fault = Fault { insn: pc };
        let Some(&op) = ops.get(pc) else {
            return Err(fault);
        };
        pc += 1;
        match op {
            Op::Mov64K { dst, imm } => reg!(dst) = imm,
            Op::Mov64X { dst, src } => reg!(dst) = reg!(src),
            Op::Add64K { dst, imm } => reg!(dst) = reg!(dst).wrapping_add(imm),
            Op::Or64X { dst, src } => reg!(dst) |= reg!(src),
            Op::Lsh64K { dst, imm } => reg!(dst) <<= imm & 63,
            Op::And64K { dst, imm } => reg!(dst) &= imm,
            Op::LdxStackB { dst, idx } => {
                reg!(dst) = u64::from(*stack.get(usize::from(idx)).ok_or(fault)?);
            }
            Op::LdxStackW { dst, idx } => {
                let w = stack
                    .get(usize::from(idx)..)
                    .and_then(|s| s.first_chunk::<4>());
                reg!(dst) = u64::from(u32::from_le_bytes(*w.ok_or(fault)?));
            }
            Op::JneK { dst, imm, target } => {
                if reg!(dst) != imm {
                    pc = target as usize;
                }
            }
            Op::JeqK { dst, imm, target } => {
                if reg!(dst) == imm {
                    pc = target as usize;
                }
            }
            Op::Alu64K { op, dst, imm } => reg!(dst) = alu::alu64(op, reg!(dst), imm),
            Op::Alu64X { op, dst, src } => reg!(dst) = alu::alu64(op, reg!(dst), reg!(src)),
            Op::Alu32K { op, dst, imm } => reg!(dst) = alu::alu32(op, reg!(dst), imm),
            Op::Alu32X { op, dst, src } => reg!(dst) = alu::alu32(op, reg!(dst), reg!(src)),
            Op::End { dst, bits, swap } => reg!(dst) = alu::endian(reg!(dst), bits, swap),
            Op::Lddw { dst, imm } => {
                reg!(dst) = imm;
                pc += 1;
            }
            Op::LdAbs { size, off } => match packet_load(view, off, size) {
                Some(v) => r[0] = v,
                None => return Ok(0),
            },
            Op::LdInd { size, src, imm } => {
                // The kernel adds in 64 bits and passes the sum as an `int` offset.
                let off = reg!(src).wrapping_add(imm as i64 as u64) as u32 as i32;
                match packet_load(view, off, size) {
                    Some(v) => r[0] = v,
                    None => return Ok(0),
                }
            }
            Op::LdxLen { dst, shift, mask } => {
                reg!(dst) = u64::from((view.len() as u32 >> shift) & mask);
            }
            Op::LdxStack { dst, size, sx, idx } => {
                reg!(dst) = stack_load(&stack, usize::from(idx), size, sx).ok_or(fault)?;
            }
            Op::LdxStackDyn {
                dst,
                src,
                size,
                sx,
                off,
            } => {
                let addr = reg!(src).wrapping_add(off as i64 as u64);
                let idx = dyn_idx::<N>(addr, u64::from(size)).ok_or(fault)?;
                reg!(dst) = stack_load(&stack, idx, size, sx).ok_or(fault)?;
            }
            Op::StxStack { src, size, idx } => {
                stack_store(&mut stack, usize::from(idx), size, reg!(src)).ok_or(fault)?;
            }
            Op::StxStackDyn {
                dst,
                src,
                size,
                off,
            } => {
                let addr = reg!(dst).wrapping_add(off as i64 as u64);
                let idx = dyn_idx::<N>(addr, u64::from(size)).ok_or(fault)?;
                stack_store(&mut stack, idx, size, reg!(src)).ok_or(fault)?;
            }
            Op::StStack { size, idx, imm } => {
                stack_store(&mut stack, usize::from(idx), size, imm).ok_or(fault)?;
            }
            Op::StStackDyn {
                dst,
                size,
                off,
                imm,
            } => {
                let addr = reg!(dst).wrapping_add(off as i64 as u64);
                let idx = dyn_idx::<N>(addr, u64::from(size)).ok_or(fault)?;
                stack_store(&mut stack, idx, size, imm).ok_or(fault)?;
            }
            Op::LoadBytes { idx, len } => {
                let (idx, len) = (usize::from(idx), usize::from(len));
                let to = stack.get_mut(idx..idx + len).ok_or(fault)?;
                r[0] = load_bytes(view, r[2], to);
            }
            Op::LoadBytesDyn => {
                let len = r[4];
                let idx = dyn_idx::<N>(r[3], len).ok_or(fault)?;
                let to = stack.get_mut(idx..idx + len as usize).ok_or(fault)?;
                r[0] = load_bytes(view, r[2], to);
            }
            Op::Ja { target } => pc = target as usize,
            Op::Jmp64K {
                cond,
                dst,
                imm,
                target,
            } => {
                if alu::cmp64(cond, reg!(dst), imm) {
                    pc = target as usize;
                }
            }
            Op::Jmp64X {
                cond,
                dst,
                src,
                target,
            } => {
                if alu::cmp64(cond, reg!(dst), reg!(src)) {
                    pc = target as usize;
                }
            }
            Op::Jmp32K {
                cond,
                dst,
                imm,
                target,
            } => {
                if alu::cmp32(cond, reg!(dst), imm) {
                    pc = target as usize;
                }
            }
            Op::Jmp32X {
                cond,
                dst,
                src,
                target,
            } => {
                if alu::cmp32(cond, reg!(dst), reg!(src)) {
                    pc = target as usize;
                }
            }
            Op::Exit => return Ok(r[0] as u32),
            Op::Dead => return Err(fault),
        }
    }
}
