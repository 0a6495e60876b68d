//! First verifier pass: each instruction on its own (known opcode, reserved fields, register
//! numbers, immediates), then the control-flow graph (jump targets, `lddw` pairs, the last
//! instruction, unreachable code, back-edges). Mirrors the kernel's `resolve_pseudo_ldimm64`,
//! `check_subprogs` and `check_cfg`, plus the per-opcode field checks of `do_check`.

use super::{Rule, VerifyError};
use crate::insn::{op, Insn, NUM_REGS};

/// The most instruction slots a program may have (the kernel's limit for privileged loads).
pub(crate) const MAX_INSNS: usize = 1_000_000;

fn err(i: usize, rule: Rule) -> VerifyError {
    VerifyError {
        insn: Some(i),
        rule,
    }
}

/// Checks that register `r` exists.
fn reg(i: usize, r: u8) -> Result<(), VerifyError> {
    if r >= NUM_REGS {
        return Err(err(i, Rule::InvalidReg(r)));
    }
    Ok(())
}

/// Checks that register `r` exists and may be written.
fn dst_reg(i: usize, r: u8) -> Result<(), VerifyError> {
    reg(i, r)?;
    if r == 10 {
        return Err(err(i, Rule::FramePointerWrite));
    }
    Ok(())
}

fn reserved(i: usize, what: &'static str) -> VerifyError {
    err(i, Rule::ReservedFields(what))
}

/// Where control may go after instruction `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Falls through to the next instruction (`skip` slots on).
    Next(usize),
    /// Jumps unconditionally.
    Goto(usize),
    /// Either falls through or jumps.
    Branch(usize),
    /// Leaves the program.
    Exit,
}

/// Checks one instruction's fields; returns its control flow (targets not yet checked).
pub(crate) fn check_insn(i: usize, insn: Insn, next: Option<Insn>) -> Result<Flow, VerifyError> {
    let code = insn.code;
    let unknown = || err(i, Rule::UnknownOpcode(code));
    let is_x = code & op::SRC_MASK == op::X;
    match insn.class() {
        op::LD => match code & op::MODE_MASK {
            op::IMM if code & op::SIZE_MASK == op::DW => {
                let ok =
                    next.is_some_and(|n| n.code == 0 && n.dst == 0 && n.src == 0 && n.off == 0);
                if !ok {
                    return Err(err(i, Rule::BadLddw));
                }
                if insn.off != 0 {
                    return Err(reserved(i, "BPF_LD_IMM64"));
                }
                if insn.src != 0 {
                    return Err(err(i, Rule::PseudoLddw(insn.src)));
                }
                dst_reg(i, insn.dst)?;
                Ok(Flow::Next(2))
            }
            op::ABS | op::IND if code & op::SIZE_MASK != op::DW => {
                let abs = code & op::MODE_MASK == op::ABS;
                if insn.dst != 0 || insn.off != 0 || (abs && insn.src != 0) {
                    return Err(reserved(i, "BPF_LD_[ABS|IND]"));
                }
                reg(i, insn.src)?;
                Ok(Flow::Next(1))
            }
            _ => Err(unknown()),
        },
        op::LDX => {
            match (code & op::MODE_MASK, code & op::SIZE_MASK) {
                (op::MEM, _) => {}
                (op::MEMSX, s) if s != op::DW => {}
                _ => return Err(unknown()),
            }
            if insn.imm != 0 {
                return Err(reserved(i, "BPF_LDX"));
            }
            reg(i, insn.src)?;
            dst_reg(i, insn.dst)?;
            Ok(Flow::Next(1))
        }
        op::ST => {
            if code & op::MODE_MASK != op::MEM {
                return Err(unknown());
            }
            if insn.src != 0 {
                return Err(reserved(i, "BPF_ST"));
            }
            reg(i, insn.dst)?;
            Ok(Flow::Next(1))
        }
        op::STX => match code & op::MODE_MASK {
            op::MEM => {
                if insn.imm != 0 {
                    return Err(reserved(i, "BPF_STX"));
                }
                reg(i, insn.dst)?;
                reg(i, insn.src)?;
                Ok(Flow::Next(1))
            }
            op::ATOMIC => Err(err(i, Rule::Atomic)),
            _ => Err(unknown()),
        },
        op::ALU | op::ALU64 => check_alu(i, insn, is_x).map(|()| Flow::Next(1)),
        _ => check_jmp(i, insn, is_x),
    }
}

fn check_alu(i: usize, insn: Insn, is_x: bool) -> Result<(), VerifyError> {
    let (code, off, imm) = (insn.code, insn.off, insn.imm);
    let alu64 = insn.class() == op::ALU64;
    let unknown = || err(i, Rule::UnknownOpcode(code));
    match code & op::OP_MASK {
        op::END => {
            if alu64 && is_x {
                return Err(unknown());
            }
            if insn.src != 0 || off != 0 || !matches!(imm, 16 | 32 | 64) {
                return Err(reserved(i, "BPF_END"));
            }
        }
        op::NEG => {
            if is_x {
                return Err(unknown());
            }
            if insn.src != 0 || off != 0 || imm != 0 {
                return Err(reserved(i, "BPF_NEG"));
            }
        }
        op::MOV => {
            let sx_ok = match off {
                0 | 8 | 16 => true,
                32 => alu64,
                _ => false,
            };
            if (is_x && (imm != 0 || !sx_ok)) || (!is_x && (insn.src != 0 || off != 0)) {
                return Err(reserved(i, "BPF_MOV"));
            }
        }
        0xe0 | 0xf0 => return Err(unknown()),
        opcode => {
            let signed_ok = off == 1 && matches!(opcode, op::DIV | op::MOD);
            if (off != 0 && !signed_ok) || (is_x && imm != 0) || (!is_x && insn.src != 0) {
                return Err(reserved(i, "BPF_ALU"));
            }
            if !is_x && imm == 0 && matches!(opcode, op::DIV | op::MOD) {
                return Err(err(i, Rule::DivByZero));
            }
            let width = if alu64 { 64 } else { 32 };
            if !is_x && matches!(opcode, op::LSH | op::RSH | op::ARSH) && !(0..width).contains(&imm)
            {
                return Err(err(i, Rule::InvalidShift(imm)));
            }
        }
    }
    if is_x {
        reg(i, insn.src)?;
    }
    dst_reg(i, insn.dst)
}

fn check_jmp(i: usize, insn: Insn, is_x: bool) -> Result<Flow, VerifyError> {
    let code = insn.code;
    let jmp32 = insn.class() == op::JMP32;
    let unknown = || err(i, Rule::UnknownOpcode(code));
    let target = |off: i64| (i as i64) + 1 + off;
    match code & op::OP_MASK {
        op::JA => {
            if is_x {
                return Err(unknown());
            }
            let (fields_ok, off) = if jmp32 {
                (insn.off == 0, i64::from(insn.imm))
            } else {
                (insn.imm == 0, i64::from(insn.off))
            };
            if !fields_ok || insn.src != 0 || insn.dst != 0 {
                return Err(reserved(i, "BPF_JA"));
            }
            Ok(Flow::Goto(checked_target(i, target(off))?))
        }
        op::CALL | op::EXIT if jmp32 || is_x => Err(unknown()),
        op::CALL => {
            if insn.off != 0 || insn.dst != 0 {
                return Err(reserved(i, "BPF_CALL"));
            }
            match insn.src {
                0 => Ok(Flow::Next(1)),
                1 | 2 => Err(err(i, Rule::FunctionCall)),
                _ => Err(reserved(i, "BPF_CALL")),
            }
        }
        op::EXIT => {
            // The kernel does not check `off` of an exit.
            if insn.src != 0 || insn.dst != 0 || insn.imm != 0 {
                return Err(reserved(i, "BPF_EXIT"));
            }
            Ok(Flow::Exit)
        }
        0xe0 if !jmp32 && !is_x => Err(err(i, Rule::MayGoto)),
        0xe0 | 0xf0 => Err(unknown()),
        _ => {
            if (is_x && insn.imm != 0) || (!is_x && insn.src != 0) {
                return Err(reserved(i, "BPF_JMP/JMP32"));
            }
            reg(i, insn.dst)?;
            if is_x {
                reg(i, insn.src)?;
            }
            Ok(Flow::Branch(checked_target(
                i,
                target(i64::from(insn.off)),
            )?))
        }
    }
}

/// Field errors that the kernel reports only for instructions a path reaches.
fn deferred(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::ReservedFields(_)
            | Rule::InvalidReg(_)
            | Rule::FramePointerWrite
            | Rule::DivByZero
            | Rule::InvalidShift(_)
            | Rule::Atomic
    )
}

/// The control flow of an instruction whose opcode is known, ignoring its other fields.
fn flow_of(i: usize, insn: Insn) -> Result<Flow, VerifyError> {
    let class = insn.class();
    if class != op::JMP && class != op::JMP32 {
        return Ok(Flow::Next(if insn.is_lddw() { 2 } else { 1 }));
    }
    Ok(match insn.code & op::OP_MASK {
        op::JA if class == op::JMP32 => {
            Flow::Goto(checked_target(i, i as i64 + 1 + i64::from(insn.imm))?)
        }
        op::JA => Flow::Goto(checked_target(i, i as i64 + 1 + i64::from(insn.off))?),
        op::CALL => Flow::Next(1),
        op::EXIT => Flow::Exit,
        _ => Flow::Branch(checked_target(i, i as i64 + 1 + i64::from(insn.off))?),
    })
}

fn checked_target(i: usize, to: i64) -> Result<usize, VerifyError> {
    if to < 0 || to > MAX_INSNS as i64 {
        return Err(err(i, Rule::JumpOutOfRange { to }));
    }
    Ok(to as usize)
}

/// Runs the first pass. On success returns, per slot, whether it is a jump target (where the
/// second pass stores states to prune repeated paths).
pub(crate) fn check(insns: &[Insn]) -> Result<Vec<bool>, VerifyError> {
    let len = insns.len();
    if len == 0 {
        return Err(VerifyError {
            insn: None,
            rule: Rule::Empty,
        });
    }
    if len > MAX_INSNS {
        return Err(VerifyError {
            insn: None,
            rule: Rule::TooLong {
                len,
                max: MAX_INSNS,
            },
        });
    }
    // Decode every instruction's flow; mark lddw second halves.
    let mut flows = vec![Flow::Exit; len];
    let mut second_half = vec![false; len];
    let mut last = 0;
    let mut i = 0;
    while let Some(&insn) = insns.get(i) {
        let flow = match check_insn(i, insn, insns.get(i + 1).copied()) {
            Ok(flow) => flow,
            // Like the kernel, field checks wait until a path reaches the instruction (the
            // second pass repeats them there), so dead code behind a folded branch may hold
            // malformed instructions; the control flow is still needed for the graph.
            // (The kernel's first pass does check LDX's reserved `imm` everywhere.)
            Err(e) if deferred(&e.rule) && e.rule != Rule::ReservedFields("BPF_LDX") => {
                flow_of(i, insn)?
            }
            Err(e) => return Err(e),
        };
        flows[i] = flow;
        last = i;
        if let Flow::Next(2) = flow {
            second_half[i + 1] = true;
            i += 2;
        } else {
            i += 1;
        }
    }
    let last_code = insns[last].code;
    let ends = [op::JMP | op::EXIT, op::JMP | op::JA, op::JMP32 | op::JA];
    if !ends.contains(&last_code) {
        return Err(err(last, Rule::LastNotExit));
    }
    // Targets: inside the program, not into a lddw, strictly forward.
    let mut is_target = vec![false; len];
    for (i, flow) in flows.iter().enumerate() {
        if second_half[i] {
            continue;
        }
        if let Flow::Goto(t) | Flow::Branch(t) = *flow {
            if t >= len {
                return Err(err(i, Rule::JumpOutOfRange { to: t as i64 }));
            }
            if second_half[t] {
                return Err(err(i, Rule::JumpIntoLddw { to: t - 1 }));
            }
            if t <= i {
                return Err(err(i, Rule::BackEdge { to: t }));
            }
            is_target[t] = true;
        }
    }
    // Reachability: every edge goes forward, so one sweep in index order suffices.
    let mut reached = vec![false; len];
    reached[0] = true;
    for i in 0..len {
        if second_half[i] {
            continue;
        }
        if !reached[i] {
            return Err(err(i, Rule::Unreachable));
        }
        match flows[i] {
            Flow::Next(n) => mark(&mut reached, i + n),
            Flow::Goto(t) => mark(&mut reached, t),
            Flow::Branch(t) => {
                mark(&mut reached, i + 1);
                mark(&mut reached, t);
            }
            Flow::Exit => {}
        }
    }
    Ok(is_target)
}

fn mark(reached: &mut [bool], i: usize) {
    // Falling off the end is impossible after the last-instruction check.
    if let Some(r) = reached.get_mut(i) {
        *r = true;
    }
}
