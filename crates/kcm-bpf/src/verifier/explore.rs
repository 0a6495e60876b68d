//! Second verifier pass: walks every path with an abstract state (what each register and stack
//! slot holds), as the kernel's `do_check` does, and records per instruction what the
//! interpreter needs to run without re-checking (which memory a load or store touches).
//!
//! Register kinds: not initialised, scalar (with its value when known), pointer to the
//! context, pointer into the stack at a known offset from r10. Pointers only move by known
//! constants, so every memory access has a known target on each path. Branches whose outcome
//! is known from constants are folded (only the taken side is walked, like the kernel);
//! states are remembered at jump targets so a path that arrives in a state already seen there
//! is not walked twice.

use std::collections::HashSet;

use super::ctx::{self, CtxRead};
use super::stack::{mark_byte, read_stack, write_stack, Slot};
use super::{Rule, VerifyError};

use crate::insn::{op, Insn, HELPER_SKB_LOAD_BYTES};

/// Stack size in bytes (`MAX_BPF_STACK`).
pub(crate) const STACK_SIZE: i64 = 512;
/// Instructions walked before the program is declared too complex (the kernel's limit).
const PROCESSED_LIMIT: usize = 1_000_000;
/// States remembered before the program is declared too complex.
const STATES_LIMIT: usize = 100_000;

/// What a register holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Val {
    Uninit,
    Scalar(Option<u64>),
    Ctx(i64),
    Stack(i64),
}

impl Val {
    pub(super) fn kind(self) -> &'static str {
        match self {
            Val::Uninit => "?",
            Val::Scalar(_) => "scalar",
            Val::Ctx(_) => "ctx",
            Val::Stack(_) => "fp",
        }
    }
    pub(super) fn is_ptr(self) -> bool {
        matches!(self, Val::Ctx(_) | Val::Stack(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub(super) regs: [Val; 11],
    pub(super) stack: [Slot; (STACK_SIZE / 8) as usize],
}

/// Which memory a load, store or helper call touches, over all paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    /// Not reached (or not a memory instruction).
    Unseen,
    /// The context, with the read it performs.
    Ctx(CtxRead),
    /// The stack at this offset from r10 on every path.
    Stack(i64),
    /// The stack at offsets that differ between paths.
    StackVaries,
}

/// What the interpreter needs to know about each instruction.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    /// Per slot: memory touched.
    pub(crate) base: Vec<Base>,
    /// Per slot: the `bpf_skb_load_bytes` size, if the same on every path.
    pub(crate) call_len: Vec<Option<u16>>,
    /// Per slot: reached on some path (others are dead code behind folded branches).
    pub(crate) reached: Vec<bool>,
    /// Deepest stack byte used, in bytes below r10.
    pub(crate) stack_depth: i64,
}

pub(super) enum Step {
    Next(usize),
    Branch {
        taken: usize,
        taken_state: Box<State>,
        fall: usize,
    },
    Exit,
}

pub(super) fn err(i: usize, rule: Rule) -> VerifyError {
    VerifyError {
        insn: Some(i),
        rule,
    }
}

/// Runs the second pass over a program that passed the first one.
pub(crate) fn explore(insns: &[Insn], is_target: &[bool]) -> Result<Analysis, VerifyError> {
    let len = insns.len();
    let mut ex = Explorer {
        insns,
        an: Analysis {
            base: vec![Base::Unseen; len],
            call_len: vec![None; len],
            reached: vec![false; len],
            stack_depth: 0,
        },
        len_seen: vec![false; len],
    };
    let mut entry = State {
        regs: [Val::Uninit; 11],
        stack: [Slot::Bytes(0); (STACK_SIZE / 8) as usize],
    };
    entry.regs[1] = Val::Ctx(0);
    entry.regs[10] = Val::Stack(0);
    let mut seen: Vec<HashSet<State>> = vec![HashSet::new(); len];
    let (mut processed, mut stored) = (0usize, 0usize);
    let mut work = vec![(0usize, entry)];
    while let Some((mut pc, mut st)) = work.pop() {
        loop {
            if is_target[pc] {
                if seen[pc].contains(&st) {
                    break;
                }
                stored += 1;
                if stored > STATES_LIMIT {
                    return Err(err(pc, Rule::TooComplex(processed)));
                }
                seen[pc].insert(st.clone());
            }
            processed += 1;
            if processed > PROCESSED_LIMIT {
                return Err(err(pc, Rule::TooComplex(processed)));
            }
            ex.an.reached[pc] = true;
            match ex.step(pc, &mut st)? {
                Step::Next(n) => pc = n,
                Step::Branch {
                    taken,
                    taken_state,
                    fall,
                } => {
                    work.push((taken, *taken_state));
                    pc = fall;
                }
                Step::Exit => break,
            }
        }
    }
    Ok(ex.an)
}

pub(super) struct Explorer<'a> {
    pub(super) insns: &'a [Insn],
    an: Analysis,
    /// Per slot: a call size was recorded (to tell "one size" from "sizes differ").
    len_seen: Vec<bool>,
}

pub(super) fn read(i: usize, st: &State, r: u8) -> Result<Val, VerifyError> {
    match st.regs[usize::from(r)] {
        Val::Uninit => Err(err(i, Rule::NotInit(r))),
        v => Ok(v),
    }
}

impl Explorer<'_> {
    fn step(&mut self, i: usize, st: &mut State) -> Result<Step, VerifyError> {
        let insn = self.insns[i];
        super::structure::check_insn(i, insn, self.insns.get(i + 1).copied())?;
        match insn.class() {
            op::ALU | op::ALU64 => {
                self.alu(i, insn, st)?;
                Ok(Step::Next(i + 1))
            }
            op::JMP | op::JMP32 => self.jmp(i, insn, st),
            op::LD if insn.is_lddw() => {
                let hi = self.insns.get(i + 1).map_or(0, |n| n.imm as u32);
                let v = u64::from(hi) << 32 | u64::from(insn.imm as u32);
                st.regs[usize::from(insn.dst)] = Val::Scalar(Some(v));
                Ok(Step::Next(i + 2))
            }
            op::LD => {
                // LD_ABS / LD_IND: the context must be in r6; r1-r5 are clobbered (the kernel
                // turns these loads into helper calls).
                match read(i, st, 6)? {
                    Val::Ctx(0) => {}
                    _ => return Err(err(i, Rule::LdAbsWithoutCtx)),
                }
                if insn.code & op::MODE_MASK == op::IND {
                    let v = read(i, st, insn.src)?;
                    if v.is_ptr() {
                        return Err(err(
                            i,
                            Rule::PointerArith {
                                reg: insn.src,
                                what: "packet offset",
                            },
                        ));
                    }
                }
                clobber_call(st);
                Ok(Step::Next(i + 1))
            }
            op::LDX => {
                self.ldx(i, insn, st)?;
                Ok(Step::Next(i + 1))
            }
            _ => {
                self.store(i, insn, st)?;
                Ok(Step::Next(i + 1))
            }
        }
    }

    pub(super) fn call(&mut self, i: usize, insn: Insn, st: &mut State) -> Result<(), VerifyError> {
        if insn.imm != HELPER_SKB_LOAD_BYTES {
            let name = crate::insn::helper_name(insn.imm);
            return Err(err(i, Rule::UnknownHelper { id: insn.imm, name }));
        }
        let arg = |r: u8, want: &'static str, v: Val| {
            err(
                i,
                Rule::HelperArg {
                    reg: r,
                    found: v.kind(),
                    expected: want,
                },
            )
        };
        match read(i, st, 1)? {
            Val::Ctx(0) => {}
            Val::Ctx(off) => return Err(err(i, Rule::ModifiedCtx { reg: 1, off })),
            v => return Err(arg(1, "ctx", v)),
        }
        match read(i, st, 2)? {
            Val::Scalar(_) => {}
            v => return Err(arg(2, "scalar", v)),
        }
        let to = match read(i, st, 3)? {
            Val::Stack(o) => o,
            v => return Err(arg(3, "fp", v)),
        };
        let len = match read(i, st, 4)? {
            Val::Scalar(Some(n)) if (1..=STACK_SIZE as u64).contains(&n) => n as i64,
            _ => return Err(err(i, Rule::HelperSize)),
        };
        if to < -STACK_SIZE || to + len > 0 {
            return Err(err(i, Rule::StackBounds { off: to, size: len }));
        }
        for a in to..to + len {
            mark_byte(st, a);
        }
        self.note_stack(i, to)?;
        if !self.len_seen[i] {
            self.len_seen[i] = true;
            self.an.call_len[i] = Some(len as u16);
        } else if self.an.call_len[i] != Some(len as u16) {
            self.an.call_len[i] = None;
        }
        clobber_call(st);
        Ok(())
    }

    fn note(&mut self, i: usize, b: Base) -> Result<(), VerifyError> {
        let merged = match (self.an.base[i], b) {
            (Base::Unseen, b) => b,
            (a, b) if a == b => a,
            (Base::Stack(_) | Base::StackVaries, Base::Stack(_)) => Base::StackVaries,
            _ => return Err(err(i, Rule::DifferentPointers)),
        };
        self.an.base[i] = merged;
        Ok(())
    }

    fn note_stack(&mut self, i: usize, a: i64) -> Result<(), VerifyError> {
        self.an.stack_depth = self.an.stack_depth.max(-a);
        self.note(i, Base::Stack(a))
    }

    /// Checks a stack access of `size` bytes at `a` (offset from r10).
    fn stack_access(i: usize, a: i64, size: i64) -> Result<(), VerifyError> {
        if a < -STACK_SIZE || a + size > 0 {
            return Err(err(i, Rule::StackBounds { off: a, size }));
        }
        if a % size != 0 {
            return Err(err(i, Rule::StackMisaligned { off: a, size }));
        }
        Ok(())
    }

    fn ldx(&mut self, i: usize, insn: Insn, st: &mut State) -> Result<(), VerifyError> {
        let size = size_bytes(insn.code);
        let sx = insn.code & op::MODE_MASK == op::MEMSX;
        let out = match read(i, st, insn.src)? {
            Val::Ctx(o) => {
                if o != 0 {
                    return Err(err(
                        i,
                        Rule::ModifiedCtx {
                            reg: insn.src,
                            off: o,
                        },
                    ));
                }
                let off = i64::from(insn.off);
                let field = ctx::field_name(off);
                let read = ctx::read_access(off, size)
                    .filter(|_| !sx)
                    .ok_or(err(i, Rule::CtxRead { off, size, field }))?;
                self.note(i, Base::Ctx(read))?;
                Val::Scalar(None)
            }
            Val::Stack(o) => {
                let a = o + i64::from(insn.off);
                Self::stack_access(i, a, size)?;
                let v = read_stack(i, st, a, size)?;
                self.note_stack(i, a)?;
                v
            }
            v => {
                return Err(err(
                    i,
                    Rule::InvalidMem {
                        reg: insn.src,
                        kind: v.kind(),
                    },
                ));
            }
        };
        st.regs[usize::from(insn.dst)] = out;
        Ok(())
    }

    fn store(&mut self, i: usize, insn: Insn, st: &mut State) -> Result<(), VerifyError> {
        let size = size_bytes(insn.code);
        let value = if insn.class() == op::ST {
            Val::Scalar(Some(insn.imm as i64 as u64))
        } else {
            read(i, st, insn.src)?
        };
        match read(i, st, insn.dst)? {
            Val::Ctx(o) => {
                let off = o + i64::from(insn.off);
                let field = ctx::field_name(off);
                Err(err(i, Rule::CtxWrite { off, size, field }))
            }
            Val::Stack(o) => {
                let a = o + i64::from(insn.off);
                Self::stack_access(i, a, size)?;
                write_stack(i, st, a, size, value)?;
                self.note_stack(i, a)
            }
            v => Err(err(
                i,
                Rule::InvalidMem {
                    reg: insn.dst,
                    kind: v.kind(),
                },
            )),
        }
    }
}

pub(crate) fn size_bytes(code: u8) -> i64 {
    match code & op::SIZE_MASK {
        op::B => 1,
        op::H => 2,
        op::W => 4,
        _ => 8,
    }
}

/// After a helper call or LD_ABS/LD_IND: r0 is an unknown scalar, r1-r5 are not readable.
pub(super) fn clobber_call(st: &mut State) {
    st.regs[0] = Val::Scalar(None);
    for r in &mut st.regs[1..=5] {
        *r = Val::Uninit;
    }
}
