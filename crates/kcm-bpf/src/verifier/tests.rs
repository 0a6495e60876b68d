//! One test per rule: the program is refused, at the right instruction, for the right reason.

use super::*;
use crate::asm::{self, *};
use crate::insn::{op, Insn};

fn rejects(prog: &[Insn]) -> (Option<usize>, Rule) {
    match verify(prog) {
        Ok(()) => panic!("accepted:\n{}", crate::disassemble(prog)),
        Err(e) => (e.insn, e.rule),
    }
}

fn ret(imm: i32) -> [Insn; 2] {
    [mov64_imm(0, imm), exit()]
}

#[test]
fn structure_rules() {
    assert_eq!(rejects(&[]), (None, Rule::Empty));
    assert_eq!(
        rejects(&[Insn::new(0xe7, 0, 0, 0, 0), exit()]),
        (Some(0), Rule::UnknownOpcode(0xe7))
    );
    assert_eq!(rejects(&[mov64_imm(0, 1)]), (Some(0), Rule::LastNotExit));
    let [a, _] = asm::lddw(0, 5);
    assert_eq!(rejects(&[a, exit()]), (Some(0), Rule::BadLddw));
    let [a, b] = asm::lddw(0, 5);
    let pseudo = Insn { src: 1, ..a };
    assert_eq!(
        rejects(&[pseudo, b, exit()]),
        (Some(0), Rule::PseudoLddw(1))
    );
    assert_eq!(
        rejects(&[ja(5), exit()]),
        (Some(0), Rule::JumpOutOfRange { to: 6 })
    );
    let [a, b] = asm::lddw(0, 5);
    assert_eq!(
        rejects(&[ja(1), a, b, exit()]),
        (Some(0), Rule::JumpIntoLddw { to: 1 })
    );
    assert_eq!(
        rejects(&[mov64_imm(0, 0), ja(1), exit(), exit()]),
        (Some(2), Rule::Unreachable)
    );
    let back = [mov64_imm(0, 0), jmp_imm(JEQ, 0, 1, -2), exit()];
    assert_eq!(rejects(&back), (Some(1), Rule::BackEdge { to: 0 }));
    assert_eq!(rejects(&[ja(-1), exit()]).1, Rule::BackEdge { to: 0 });
    let may_goto = Insn::new(0xe5, 0, 0, 0, 0);
    assert_eq!(
        rejects(&[may_goto, ret(0)[0], exit()]),
        (Some(0), Rule::MayGoto)
    );
    let pcall = Insn::new(op::JMP | op::CALL, 0, 1, 0, 1);
    assert_eq!(
        rejects(&[pcall, exit(), exit()]),
        (Some(0), Rule::FunctionCall)
    );
}

#[test]
fn field_rules() {
    assert_eq!(
        rejects(&[mov64_imm(10, 0), exit()]),
        (Some(0), Rule::FramePointerWrite)
    );
    assert_eq!(
        rejects(&[mov64_imm(11, 0), exit()]),
        (Some(0), Rule::InvalidReg(11))
    );
    let r0 = mov64_imm(0, 9);
    assert_eq!(
        rejects(&[r0, alu64_imm(DIV, 0, 0), exit()]),
        (Some(1), Rule::DivByZero)
    );
    assert_eq!(
        rejects(&[r0, alu32_imm(LSH, 0, 32), exit()]),
        (Some(1), Rule::InvalidShift(32))
    );
    assert!(verify(&[r0, alu64_imm(LSH, 0, 32), exit()]).is_ok());
    let neg_x = Insn::new(op::ALU64 | op::NEG | op::K, 0, 1, 0, 0);
    assert_eq!(
        rejects(&[r0, neg_x, exit()]).1,
        Rule::ReservedFields("BPF_NEG")
    );
    let end = Insn::new(op::ALU | op::END, 0, 0, 0, 24);
    assert_eq!(
        rejects(&[r0, end, exit()]).1,
        Rule::ReservedFields("BPF_END")
    );
    let exit_imm = Insn::new(op::JMP | op::EXIT, 0, 0, 0, 1);
    assert_eq!(rejects(&[r0, exit_imm]).1, Rule::ReservedFields("BPF_EXIT"));
    let atomic = Insn::new(op::STX | op::ATOMIC | op::DW, 10, 0, -8, 0);
    assert_eq!(rejects(&[r0, atomic, exit()]), (Some(1), Rule::Atomic));
}

#[test]
fn malformed_dead_code_is_accepted_like_the_kernel() {
    // r0 = 1; if r0 == 1 goto +1; r10 = 0 (never reached); exit
    let prog = [
        mov64_imm(0, 1),
        jmp_imm(JEQ, 0, 1, 1),
        mov64_imm(10, 0),
        exit(),
    ];
    assert!(verify(&prog).is_ok());
    let p = crate::Program::new(prog.to_vec()).unwrap();
    assert_eq!(p.run(&[]), Ok(1));
}

#[test]
fn register_and_return_rules() {
    assert_eq!(rejects(&[exit()]), (Some(0), Rule::NotInit(0)));
    assert_eq!(
        rejects(&[mov64_reg(0, 2), exit()]),
        (Some(0), Rule::NotInit(2))
    );
    assert_eq!(
        rejects(&[mov64_reg(0, 1), exit()]),
        (Some(1), Rule::ReturnsPointer)
    );
    // LD_ABS clobbers r1-r5.
    let prog = [
        mov64_reg(6, 1),
        mov64_imm(2, 0),
        ld_abs(1, 0),
        mov64_reg(0, 2),
        exit(),
    ];
    assert_eq!(rejects(&prog), (Some(3), Rule::NotInit(2)));
    assert_eq!(
        rejects(&[ld_abs(4, 0), exit()]),
        (Some(0), Rule::NotInit(6))
    );
    let prog = [mov64_imm(6, 0), ld_abs(4, 0), exit()];
    assert_eq!(rejects(&prog), (Some(1), Rule::LdAbsWithoutCtx));
    // Only one path leaves r2 unset: still refused.
    let prog = [
        mov64_reg(6, 1),
        ld_abs(1, 0),
        jmp_imm(JEQ, 0, 0, 1),
        mov64_imm(2, 1),
        mov64_reg(0, 2),
        exit(),
    ];
    assert_eq!(rejects(&prog), (Some(4), Rule::NotInit(2)));
}

#[test]
fn context_rules() {
    assert!(verify(&[ldx(4, 0, 1, 0), exit()]).is_ok(), "len");
    assert!(verify(&[ldx(1, 0, 1, 3), exit()]).is_ok(), "narrow len");
    let (at, rule) = rejects(&[ldx(4, 0, 1, 16), exit()]);
    assert_eq!(at, Some(0));
    assert_eq!(
        rule,
        Rule::CtxRead {
            off: 16,
            size: 4,
            field: "protocol"
        }
    );
    assert!(rule.to_string().contains("`protocol`"));
    assert_eq!(
        rejects(&[ldx(8, 0, 1, 0), exit()]).1,
        Rule::CtxRead {
            off: 0,
            size: 8,
            field: "len"
        }
    );
    assert_eq!(
        rejects(&[st(4, 1, 48, 7), mov64_imm(0, 0), exit()]).1,
        Rule::CtxWrite {
            off: 48,
            size: 4,
            field: "cb"
        }
    );
    let moved = [alu64_imm(ADD, 1, 4), ldx(4, 0, 1, -4), exit()];
    assert_eq!(
        rejects(&moved),
        (Some(1), Rule::ModifiedCtx { reg: 1, off: 4 })
    );
}

#[test]
fn stack_rules() {
    let ok = [st(8, 10, -512, 1), ldx(8, 0, 10, -512), exit()];
    assert!(verify(&ok).is_ok());
    assert_eq!(
        rejects(&[st(8, 10, -520, 1), mov64_imm(0, 0), exit()]).1,
        Rule::StackBounds { off: -520, size: 8 }
    );
    assert_eq!(
        rejects(&[st(4, 10, 0, 1), mov64_imm(0, 0), exit()]).1,
        Rule::StackBounds { off: 0, size: 4 }
    );
    assert_eq!(
        rejects(&[st(4, 10, -6, 1), mov64_imm(0, 0), exit()]).1,
        Rule::StackMisaligned { off: -6, size: 4 }
    );
    assert_eq!(
        rejects(&[st(4, 10, -8, 1), ldx(8, 0, 10, -8), exit()]),
        (Some(1), Rule::StackUninit { off: -8, size: 8 })
    );
    // A pointer spilled whole comes back as a pointer; half of it does not.
    let spill = [
        stx(8, 10, -8, 1),
        ldx(8, 2, 10, -8),
        ldx(4, 0, 2, 0),
        exit(),
    ];
    assert!(verify(&spill).is_ok());
    let half = [stx(8, 10, -8, 1), ldx(4, 0, 10, -8), exit()];
    assert_eq!(
        rejects(&half).1,
        Rule::Spill("invalid size of register fill")
    );
    let small = [stx(4, 10, -8, 1), mov64_imm(0, 0), exit()];
    assert_eq!(
        rejects(&small).1,
        Rule::Spill("invalid size of register spill")
    );
    assert_eq!(
        rejects(&[mov64_imm(2, 0), ldx(4, 0, 2, 0), exit()]),
        (
            Some(1),
            Rule::InvalidMem {
                reg: 2,
                kind: "scalar"
            }
        )
    );
}

#[test]
fn pointer_rules() {
    let mul = [mov64_reg(2, 10), alu64_imm(MUL, 2, 2), ret(0)[0], exit()];
    assert_eq!(
        rejects(&mul).1,
        Rule::PointerArith {
            reg: 2,
            what: "multiplication"
        }
    );
    let w = [mov64_reg(2, 10), alu32_imm(ADD, 2, 2), ret(0)[0], exit()];
    assert_eq!(
        rejects(&w).1,
        Rule::PointerArith {
            reg: 2,
            what: "32-bit arithmetic"
        }
    );
    let var = [
        mov64_reg(6, 1),
        ld_abs(1, 0),
        mov64_reg(2, 10),
        alu64_reg(ADD, 2, 0),
        exit(),
    ];
    assert_eq!(
        rejects(&var).1,
        Rule::PointerArith {
            reg: 2,
            what: "variable offset arithmetic"
        }
    );
    let cmp = [mov64_imm(0, 0), jmp_imm(JGT, 1, 5, 0), exit()];
    assert_eq!(rejects(&cmp), (Some(1), Rule::PointerCompare { reg: 1 }));
    // A pointer is never null, so `== 0` folds and the r9 read is dead.
    let null = [
        mov64_imm(0, 0),
        jmp_imm(JNE, 1, 0, 1),
        mov64_reg(0, 9),
        exit(),
    ];
    assert!(verify(&null).is_ok());
    // Stack pointer minus stack pointer is a known scalar.
    let diff = [
        mov64_reg(0, 10),
        alu64_imm(ADD, 0, -8),
        alu64_reg(SUB, 0, 10),
        exit(),
    ];
    let p = crate::Program::new(diff.to_vec()).unwrap();
    assert_eq!(p.run(&[]).map(|v| v as i32), Ok(-8));
}

fn load_bytes(off: i32, to: i32, len: i32) -> Vec<Insn> {
    vec![
        mov64_imm(2, off),
        mov64_reg(3, 10),
        alu64_imm(ADD, 3, to),
        mov64_imm(4, len),
        call(26),
    ]
}

#[test]
fn helper_rules() {
    let mut ok = load_bytes(0, -8, 8);
    ok.extend([ldx(8, 0, 10, -8), exit()]);
    assert!(verify(&ok).is_ok());
    assert_eq!(
        rejects(&[call(7), exit()]),
        (
            Some(0),
            Rule::UnknownHelper {
                id: 7,
                name: "get_prandom_u32"
            }
        )
    );
    let mut big = load_bytes(0, -8, 16);
    big.push(exit());
    assert_eq!(rejects(&big).1, Rule::StackBounds { off: -8, size: 16 });
    let mut zero = load_bytes(0, -8, 0);
    zero.push(exit());
    assert_eq!(rejects(&zero).1, Rule::HelperSize);
    let mut no_ctx = vec![mov64_imm(1, 0)];
    no_ctx.extend(load_bytes(0, -8, 8));
    no_ctx.push(exit());
    assert_eq!(
        rejects(&no_ctx).1,
        Rule::HelperArg {
            reg: 1,
            found: "scalar",
            expected: "ctx"
        }
    );
    // r1-r5 are clobbered by the call.
    let mut clobber = load_bytes(0, -8, 8);
    clobber.extend([mov64_reg(0, 3), exit()]);
    assert_eq!(rejects(&clobber), (Some(5), Rule::NotInit(3)));
}

#[test]
fn same_insn_with_ctx_and_stack_is_refused() {
    // r2 = len ? ctx : fp-8 ; r0 = *(u32 *)(r2 + 0)
    let prog = [
        st(4, 10, -8, 0),
        ldx(4, 3, 1, 0),
        mov64_reg(2, 1),
        jmp_imm(JEQ, 3, 0, 2),
        mov64_reg(2, 10),
        alu64_imm(ADD, 2, -8),
        ldx(4, 0, 2, 0),
        exit(),
    ];
    assert_eq!(rejects(&prog), (Some(6), Rule::DifferentPointers));
}

#[test]
fn path_explosion_is_bounded() {
    // 40 independent two-way branches on unknown data, each changing a constant, would be
    // 2^40 paths without state pruning; with it the verifier finishes (or says too complex).
    let mut prog = vec![
        mov64_reg(6, 1),
        ld_abs(4, 0),
        mov64_reg(7, 0),
        mov64_imm(8, 0),
    ];
    for k in 0..40 {
        prog.push(jmp_imm(JSET, 7, 1 << (k % 31), 1));
        prog.push(alu64_imm(ADD, 8, 1));
    }
    prog.extend([mov64_reg(0, 8), exit()]);
    match verify(&prog) {
        Ok(()) => {}
        Err(e) => assert!(matches!(e.rule, Rule::TooComplex(_)), "{e}"),
    }
}

#[test]
fn messages_read_like_the_kernel_log() {
    let e = verify(&[mov64_reg(0, 3), exit()]).unwrap_err();
    assert_eq!(e.to_string(), "insn 0: R3 !read_ok");
    let e = verify(&[ja(-1), exit()]).unwrap_err();
    assert!(
        e.to_string().starts_with("insn 0: back-edge to insn 0"),
        "{e}"
    );
}
