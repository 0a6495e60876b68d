//! The verifier's arithmetic and jumps: constant folding with the kernel's precision, pointer
//! arithmetic limited to known offsets, and branch folding.

use super::explore::{err, read, Explorer, State, Step, Val};
use super::{Rule, VerifyError};
use crate::alu::{self, AluOp, Cond};
use crate::insn::{op, Insn};

/// Largest pointer offset allowed (the kernel's `BPF_MAX_VAR_OFF`).
const MAX_PTR_OFF: i64 = 1 << 29;

fn ptr_add(i: usize, reg: u8, v: Val, delta: i64) -> Result<Val, VerifyError> {
    let off = match v {
        Val::Ctx(o) | Val::Stack(o) => o.checked_add(delta),
        _ => None,
    };
    let bad = || {
        err(
            i,
            Rule::PointerArith {
                reg,
                what: "out-of-range offset",
            },
        )
    };
    let off = off.filter(|o| o.abs() <= MAX_PTR_OFF).ok_or_else(bad)?;
    Ok(match v {
        Val::Ctx(_) => Val::Ctx(off),
        _ => Val::Stack(off),
    })
}

fn op_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "addition",
        AluOp::Sub => "subtraction",
        AluOp::Mul => "multiplication",
        AluOp::Div | AluOp::SDiv => "division",
        AluOp::Mod | AluOp::SMod => "modulo",
        AluOp::Or | AluOp::And | AluOp::Xor => "bitwise operator",
        AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => "shift",
        AluOp::Neg => "negation",
        AluOp::Mov | AluOp::MovSx(_) => "sign extension",
    }
}

impl Explorer<'_> {
    pub(super) fn alu(&mut self, i: usize, insn: Insn, st: &mut State) -> Result<(), VerifyError> {
        let alu64 = insn.class() == op::ALU64;
        let is_x = insn.code & op::SRC_MASK == op::X;
        let (d, s) = (insn.dst, insn.src);
        let fold = |op: AluOp, a: u64, b: u64| {
            if alu64 {
                alu::alu64(op, a, b)
            } else {
                alu::alu32(op, a, b)
            }
        };
        if insn.code & op::OP_MASK == op::END {
            let v = read(i, st, d)?;
            let Val::Scalar(c) = v else {
                return Err(err(
                    i,
                    Rule::PointerArith {
                        reg: d,
                        what: "byte swap",
                    },
                ));
            };
            let swap = alu64 || insn.code & op::SRC_MASK == op::TO_BE;
            st.regs[usize::from(d)] = Val::Scalar(c.map(|c| alu::endian(c, insn.imm as u8, swap)));
            return Ok(());
        }
        let Some(op) = AluOp::decode(insn.code, insn.off) else {
            return Err(err(i, Rule::UnknownOpcode(insn.code)));
        };
        let src = if is_x {
            read(i, st, s)?
        } else {
            Val::Scalar(Some(insn.imm as i64 as u64))
        };
        let out = match op {
            AluOp::Mov if alu64 => src,
            AluOp::Mov | AluOp::MovSx(_) => match src {
                Val::Scalar(c) => Val::Scalar(c.map(|c| fold(op, 0, c))),
                _ => {
                    return Err(err(
                        i,
                        Rule::PointerArith {
                            reg: s,
                            what: "partial copy",
                        },
                    ))
                }
            },
            _ => {
                let dv = read(i, st, d)?;
                match (dv, src) {
                    // Like the kernel, which keeps no value for a quotient or remainder,
                    // so that both walk the same branches.
                    (Val::Scalar(_), Val::Scalar(_))
                        if matches!(op, AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod) =>
                    {
                        Val::Scalar(None)
                    }
                    // Nor for a shift by a register holding the width or more.
                    (Val::Scalar(_), Val::Scalar(Some(n)))
                        if matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh)
                            && (if alu64 { n >= 64 } else { n as u32 >= 32 }) =>
                    {
                        Val::Scalar(None)
                    }
                    (Val::Scalar(a), Val::Scalar(b)) => match (a, b) {
                        (Some(a), Some(b)) => Val::Scalar(Some(fold(op, a, b))),
                        _ => Val::Scalar(None),
                    },
                    _ if !alu64 => {
                        let reg = if dv.is_ptr() { d } else { s };
                        return Err(err(
                            i,
                            Rule::PointerArith {
                                reg,
                                what: "32-bit arithmetic",
                            },
                        ));
                    }
                    (p, Val::Scalar(Some(c))) if p.is_ptr() && op == AluOp::Add => {
                        ptr_add(i, d, p, c as i64)?
                    }
                    (p, Val::Scalar(Some(c))) if p.is_ptr() && op == AluOp::Sub => {
                        ptr_add(i, d, p, (c as i64).wrapping_neg())?
                    }
                    (Val::Scalar(Some(c)), p) if p.is_ptr() && op == AluOp::Add => {
                        ptr_add(i, d, p, c as i64)?
                    }
                    (Val::Stack(a), Val::Stack(b)) | (Val::Ctx(a), Val::Ctx(b))
                        if op == AluOp::Sub =>
                    {
                        Val::Scalar(Some(a.wrapping_sub(b) as u64))
                    }
                    (Val::Scalar(None), _) | (_, Val::Scalar(None))
                        if matches!(op, AluOp::Add | AluOp::Sub) =>
                    {
                        let reg = if dv.is_ptr() { d } else { s };
                        let what = "variable offset arithmetic";
                        return Err(err(i, Rule::PointerArith { reg, what }));
                    }
                    _ => {
                        let reg = if dv.is_ptr() { d } else { s };
                        return Err(err(
                            i,
                            Rule::PointerArith {
                                reg,
                                what: op_name(op),
                            },
                        ));
                    }
                }
            }
        };
        st.regs[usize::from(d)] = out;
        Ok(())
    }

    pub(super) fn jmp(
        &mut self,
        i: usize,
        insn: Insn,
        st: &mut State,
    ) -> Result<Step, VerifyError> {
        let jmp32 = insn.class() == op::JMP32;
        match insn.code & op::OP_MASK {
            op::JA => {
                let off = if jmp32 {
                    i64::from(insn.imm)
                } else {
                    i64::from(insn.off)
                };
                Ok(Step::Next((i as i64 + 1 + off) as usize))
            }
            op::EXIT => match read(i, st, 0)? {
                Val::Scalar(_) => Ok(Step::Exit),
                _ => Err(err(i, Rule::ReturnsPointer)),
            },
            op::CALL => {
                self.call(i, insn, st)?;
                Ok(Step::Next(i + 1))
            }
            _ => {
                let Some(cond) = Cond::decode(insn.code) else {
                    return Err(err(i, Rule::UnknownOpcode(insn.code)));
                };
                let taken = (i as i64 + 1 + i64::from(insn.off)) as usize;
                let is_x = insn.code & op::SRC_MASK == op::X;
                let a = read(i, st, insn.dst)?;
                let b = if is_x {
                    read(i, st, insn.src)?
                } else {
                    Val::Scalar(Some(insn.imm as i64 as u64))
                };
                let outcome = match (a, b) {
                    (Val::Scalar(Some(x)), Val::Scalar(Some(y))) => Some(if jmp32 {
                        alu::cmp32(cond, x, y)
                    } else {
                        alu::cmp64(cond, x, y)
                    }),
                    (Val::Scalar(_), Val::Scalar(_)) => None,
                    // A pointer is never null: only `== 0` / `!= 0` tests are allowed.
                    (p, Val::Scalar(Some(0))) | (Val::Scalar(Some(0)), p)
                        if p.is_ptr() && !jmp32 && matches!(cond, Cond::Eq | Cond::Ne) =>
                    {
                        Some(cond == Cond::Ne)
                    }
                    _ => {
                        let reg = if a.is_ptr() { insn.dst } else { insn.src };
                        return Err(err(i, Rule::PointerCompare { reg }));
                    }
                };
                match outcome {
                    Some(true) => Ok(Step::Next(taken)),
                    Some(false) => Ok(Step::Next(i + 1)),
                    None => {
                        let mut taken_state = Box::new(st.clone());
                        // Learn the value on the side where equality holds.
                        if !jmp32 {
                            if let (Val::Scalar(None), Val::Scalar(Some(c))) = (a, b) {
                                let known = Val::Scalar(Some(c));
                                match cond {
                                    Cond::Eq => taken_state.regs[usize::from(insn.dst)] = known,
                                    Cond::Ne => st.regs[usize::from(insn.dst)] = known,
                                    _ => {}
                                }
                            }
                        }
                        Ok(Step::Branch {
                            taken,
                            taken_state,
                            fall: i + 1,
                        })
                    }
                }
            }
        }
    }
}
