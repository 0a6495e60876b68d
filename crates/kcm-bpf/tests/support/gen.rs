//! Random programs for differential testing: straight-line ALU code with forward jumps,
//! LD_ABS/LD_IND of every width at edge offsets, stack stores and loads, `skb->len` reads and
//! `bpf_skb_load_bytes` calls. Every program is valid by construction (registers are read only
//! when written on every path, stack bytes likewise), so both verifiers must accept it and
//! both runtimes must agree on every input.
#![allow(dead_code)]

use kcm_bpf::asm;
use kcm_bpf::insn::{op, Insn};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Immediates that sit on edges of arithmetic.
const IMMS: &[i32] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    255,
    256,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    i32::MIN,
    -2,
    -8,
];
/// Packet offsets around typical view lengths, the `int` limits and `SKF_NET_OFF`.
const OFFS: &[i32] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    12,
    15,
    16,
    17,
    30,
    31,
    32,
    33,
    63,
    64,
    -1,
    -4,
    -0x10_0000,
    -0x10_0000 + 1,
    -0x10_0000 + 6,
    -0x0f_ffff,
    -0x20_0000,
    -0x20_0000 + 3,
    -0x20_0000 + 13,
    -0x20_0000 + 16,
    -0x20_0001,
    i32::MAX,
    i32::MAX - 3,
    i32::MIN,
];
/// 64-bit values for registers used as offsets or operands.
const WIDE: &[u64] = &[
    0,
    1,
    4,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0003,
    0x8000_0000,
    0x7fff_ffff,
    u64::MAX,
    0x8000_0000_0000_0000,
    0xfff0_0000,
    0xffff_ffff_fff0_0000,
    0xffe0_0000,
    0xffff_ffff_ffe0_0002,
];

const ALU_OPS: &[u8] = &[
    op::ADD,
    op::SUB,
    op::MUL,
    op::DIV,
    op::OR,
    op::AND,
    op::LSH,
    op::RSH,
    op::NEG,
    op::MOD,
    op::XOR,
    op::MOV,
    op::ARSH,
];
const CONDS: &[u8] = &[
    op::JEQ,
    op::JGT,
    op::JGE,
    op::JSET,
    op::JNE,
    op::JSGT,
    op::JSGE,
    op::JLT,
    op::JLE,
    op::JSLT,
    op::JSLE,
];
/// Registers a generated program may write (r6 holds the context, r10 is the frame pointer).
const WRITABLE: &[u8] = &[0, 1, 2, 3, 4, 5, 7, 8, 9];

#[derive(Clone, Copy)]
struct Known {
    /// Registers holding an initialised scalar.
    regs: u16,
    /// Initialised bytes of the 64 stack bytes below r10 (bit k = byte at r10 - 64 + k).
    stack: u64,
}

struct Gen<'a> {
    rng: &'a mut Rng,
    out: Vec<Insn>,
    k: Known,
    /// Pending forward jumps: (target slot, state at the jump).
    pending: Vec<(usize, Known)>,
}

impl Gen<'_> {
    fn scalar(&mut self) -> Option<u8> {
        let regs: Vec<u8> = (0..10u8).filter(|r| self.k.regs & (1 << r) != 0).collect();
        (!regs.is_empty()).then(|| self.rng.pick(&regs))
    }
    fn set(&mut self, r: u8) {
        self.k.regs |= 1 << r;
    }
    fn clobber(&mut self) {
        self.k.regs &= !0b11_1110;
        self.set(0);
    }
    fn imm(&mut self) -> i32 {
        if self.rng.chance(70) {
            self.rng.pick(IMMS)
        } else {
            self.rng.next() as i32
        }
    }
    /// Merges the states of the jumps that land on the next slot.
    fn merge(&mut self) {
        let pos = self.out.len();
        for (t, k) in &self.pending {
            if *t == pos {
                self.k.regs &= k.regs;
                self.k.stack &= k.stack;
            }
        }
        self.pending.retain(|(t, _)| *t != pos);
    }
    /// Appends a sequence unless a pending jump lands inside it (its state would be wrong).
    fn commit(&mut self, insns: &[Insn]) -> bool {
        let pos = self.out.len();
        if self
            .pending
            .iter()
            .any(|(t, _)| *t > pos && *t < pos + insns.len())
        {
            return false;
        }
        self.out.extend_from_slice(insns);
        true
    }

    fn alu(&mut self) {
        let alu64 = self.rng.chance(60);
        let mut o = self.rng.pick(ALU_OPS);
        let dst = self.rng.pick(WRITABLE);
        let dst_known = self.k.regs & (1 << dst) != 0;
        if o != op::MOV && !dst_known {
            o = op::MOV;
        }
        let class = if alu64 { op::ALU64 } else { op::ALU };
        let width = if alu64 { 64 } else { 32 };
        let src = self.scalar();
        let use_x = o != op::NEG && src.is_some() && self.rng.chance(50);
        let mut off = 0i16;
        if matches!(o, op::DIV | op::MOD) && self.rng.chance(30) {
            off = 1; // signed division / modulo
        }
        if use_x && o == op::MOV && self.rng.chance(25) {
            off = self.rng.pick(if alu64 {
                &[8i16, 16, 32][..]
            } else {
                &[8i16, 16][..]
            });
        }
        let insn = if use_x {
            Insn::new(class | o | op::X, dst, src.unwrap_or(0), off, 0)
        } else {
            let imm = match o {
                op::LSH | op::RSH | op::ARSH => self.rng.below(width) as i32,
                op::NEG => 0,
                op::DIV | op::MOD => match self.imm() {
                    0 => 3,
                    v => v,
                },
                _ => self.imm(),
            };
            Insn::new(class | o | op::K, dst, 0, off, imm)
        };
        if self.commit(&[insn]) {
            self.set(dst);
        }
    }

    fn endian(&mut self) {
        let Some(dst) = self.scalar().filter(|r| WRITABLE.contains(r)) else {
            return;
        };
        let bits = self.rng.pick(&[16, 32, 64]);
        let code = match self.rng.below(3) {
            0 => op::ALU | op::END | op::TO_LE,
            1 => op::ALU | op::END | op::TO_BE,
            _ => op::ALU64 | op::END | op::TO_LE, // unconditional byte swap (ISA v4)
        };
        self.commit(&[Insn::new(code, dst, 0, 0, bits)]);
    }

    fn lddw(&mut self) {
        let dst = self.rng.pick(WRITABLE);
        let v = if self.rng.chance(50) {
            self.rng.pick(WIDE)
        } else {
            self.rng.next()
        };
        if self.commit(&asm::lddw(dst, v)) {
            self.set(dst);
        }
    }

    fn packet(&mut self) {
        let size = self.rng.pick(&[1u8, 2, 4]);
        let off = if self.rng.chance(80) {
            self.rng.pick(OFFS)
        } else {
            self.rng.below(40) as i32
        };
        let mut seq = Vec::new();
        if self.rng.chance(40) {
            // LD_IND: set the index register to an edge value first.
            let src = self.rng.pick(&[2u8, 3, 7, 8, 9]);
            let v = if self.rng.chance(50) {
                self.rng.pick(WIDE)
            } else {
                self.rng.below(40)
            };
            if v <= i32::MAX as u64 {
                seq.push(asm::mov64_imm(src, v as i32));
            } else {
                seq.extend(asm::lddw(src, v));
            }
            let off = if self.rng.chance(50) { 0 } else { off };
            seq.push(asm::ld_ind(size, src, off));
        } else {
            seq.push(asm::ld_abs(size, off));
        }
        if self.commit(&seq) {
            self.clobber();
        }
    }

    fn stack_store(&mut self) {
        let size = self.rng.pick(&[1u8, 2, 4, 8]);
        let slots = 64 / i64::from(size);
        let off = -(i64::from(size) * (1 + self.rng.below(slots as u64) as i64));
        let insn = match self.scalar() {
            Some(src) if self.rng.chance(70) => asm::stx(size, 10, off as i16, src),
            _ => asm::st(size, 10, off as i16, self.imm()),
        };
        if self.commit(&[insn]) {
            let first = (64 + off) as u32;
            for b in first..first + u32::from(size) {
                self.k.stack |= 1 << b;
            }
        }
    }

    fn stack_load(&mut self) {
        let size = self.rng.pick(&[1u8, 2, 4, 8]);
        let slots = 64 / i64::from(size);
        let off = -(i64::from(size) * (1 + self.rng.below(slots as u64) as i64));
        let first = (64 + off) as u32;
        let all = (first..first + u32::from(size)).all(|b| self.k.stack & (1 << b) != 0);
        if !all {
            return;
        }
        let dst = self.rng.pick(WRITABLE);
        let sx = size != 8 && self.rng.chance(30);
        let mode = if sx { op::MEMSX } else { op::MEM };
        if self.commit(&[Insn::new(
            op::LDX | mode | asm::size(size),
            dst,
            10,
            off as i16,
            0,
        )]) {
            self.set(dst);
        }
    }

    fn ctx_len(&mut self) {
        let (size, off) =
            self.rng
                .pick(&[(4u8, 0i16), (2, 0), (2, 2), (1, 0), (1, 1), (1, 2), (1, 3)]);
        let dst = self.rng.pick(WRITABLE);
        if self.commit(&[asm::ldx(size, dst, 6, off)]) {
            self.set(dst);
        }
    }

    fn helper(&mut self) {
        let len = 1 + self.rng.below(16) as i32;
        let depth = len + self.rng.below((64 - len) as u64 + 1) as i32;
        let off = if self.rng.chance(70) {
            self.rng.pick(OFFS)
        } else {
            self.rng.below(40) as i32
        };
        let seq = [
            asm::mov64_reg(1, 6),
            asm::mov64_imm(2, off),
            asm::mov64_reg(3, 10),
            asm::alu64_imm(op::ADD, 3, -depth),
            asm::mov64_imm(4, len),
            asm::call(26),
        ];
        if self.commit(&seq) {
            self.clobber();
            let first = (64 - depth) as u32;
            for b in first..first + len as u32 {
                self.k.stack |= 1 << b;
            }
        }
    }

    fn branch(&mut self) {
        let Some(dst) = self.scalar() else { return };
        let jmp32 = self.rng.chance(35);
        let cond = self.rng.pick(CONDS);
        let class = if jmp32 { op::JMP32 } else { op::JMP };
        let src = self.scalar();
        let pair = self.rng.chance(20);
        let off = if pair { 1 } else { self.rng.below(7) as i16 };
        let insn = match src {
            Some(s) if self.rng.chance(50) => Insn::new(class | cond | op::X, dst, s, off, 0),
            _ => Insn::new(class | cond | op::K, dst, 0, off, self.imm()),
        };
        let pos = self.out.len();
        if pair {
            // `if .. goto +1; goto +k`: an unconditional jump whose fallthrough is still reached.
            let k = self.rng.below(5) as i16;
            if self.commit(&[insn, asm::ja(k)]) {
                self.pending.push((pos + 2, self.k));
                self.pending.push((pos + 2 + k as usize, self.k));
            }
        } else if self.commit(&[insn]) {
            self.pending.push((pos + 1 + off as usize, self.k));
        }
    }
}

/// A random valid program with about `len` body instructions.
pub fn program(rng: &mut Rng, len: usize) -> Vec<Insn> {
    let mut g = Gen {
        rng,
        out: Vec::new(),
        k: Known { regs: 0, stack: 0 },
        pending: Vec::new(),
    };
    g.out.push(asm::mov64_reg(6, 1));
    for r in [0u8, 2, 7] {
        if g.rng.chance(70) {
            let v = g.imm();
            g.out.push(asm::mov64_imm(r, v));
            g.set(r);
        }
    }
    loop {
        g.merge();
        let pos = g.out.len();
        let furthest = g.pending.iter().map(|p| p.0).max().unwrap_or(0);
        if pos >= len && pos >= furthest {
            break;
        }
        match g.rng.below(100) {
            0..=39 => g.alu(),
            40..=44 => g.endian(),
            45..=49 => g.lddw(),
            50..=64 => g.packet(),
            65..=71 => g.stack_store(),
            72..=77 => g.stack_load(),
            78..=80 => g.ctx_len(),
            81..=84 => g.helper(),
            _ => g.branch(),
        }
    }
    if g.k.regs & 1 == 0 {
        match g.scalar() {
            Some(r) => g.out.push(asm::mov64_reg(0, r)),
            None => g.out.push(asm::mov64_imm(0, 1)),
        }
    }
    g.out.push(asm::exit());
    g.out
}

/// A random view: mostly short, with bytes biased to edge values.
pub fn view(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0..=6 => rng.below(36) as usize,
        7 | 8 => rng.below(80) as usize,
        _ => rng.below(300) as usize,
    };
    (0..len)
        .map(|_| match rng.below(6) {
            0 => 0,
            1 => 0xff,
            2 => 0x80,
            3 => 0x7f,
            _ => rng.next() as u8,
        })
        .collect()
}
