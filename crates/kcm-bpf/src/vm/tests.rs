//! Interpreter semantics, instruction by instruction (the kernel differential tests in
//! `tests/kernel_diff.rs` check the same against the real kernel where it is available).

use super::*;
use crate::asm::{self, *};
use crate::insn::op;

fn run(prog: Vec<Insn>, view: &[u8]) -> u32 {
    Program::new(prog.clone())
        .unwrap_or_else(|e| panic!("{e}\n{}", crate::disassemble(&prog)))
        .run(view)
        .expect("no fault")
}

/// `r6 = r1; <load>; exit`
fn load(insn: Insn, view: &[u8]) -> u32 {
    run(vec![mov64_reg(6, 1), insn, exit()], view)
}

#[test]
fn ld_abs_is_big_endian_and_checks_exactly_its_width() {
    let v = [0x11, 0x22, 0x33, 0x44, 0x55];
    assert_eq!(load(ld_abs(4, 1), &v), 0x2233_4455);
    assert_eq!(load(ld_abs(2, 3), &v), 0x4455);
    assert_eq!(load(ld_abs(1, 4), &v), 0x55);
    // One byte short: the program ends with 0 at once.
    assert_eq!(load(ld_abs(4, 2), &v), 0);
    assert_eq!(load(ld_abs(2, 4), &v), 0);
    assert_eq!(load(ld_abs(1, 5), &v), 0);
    assert_eq!(load(ld_abs(1, i32::MAX), &v), 0);
    assert_eq!(load(ld_abs(1, -1), &v), 0);
    // The 0 return is immediate: later instructions do not run.
    let prog = vec![mov64_reg(6, 1), ld_abs(1, 9), mov64_imm(0, 7), exit()];
    assert_eq!(run(prog, &v), 0);
}

#[test]
fn negative_offsets_address_the_network_and_link_layer_headers() {
    let v = [0xaa, 0xbb];
    // SKF_NET_OFF: the view itself.
    assert_eq!(load(ld_abs(2, -0x10_0000), &v), 0xaabb);
    assert_eq!(load(ld_abs(1, -0x10_0000 + 1), &v), 0xbb);
    // SKF_LL_OFF: a 14-byte all-zero link-layer header, then the view.
    assert_eq!(load(ld_abs(4, -0x20_0000), &v), 0);
    assert_eq!(load(ld_abs(4, -0x20_0000 + 12), &v), 0xaabb);
    assert_eq!(
        load(ld_abs(4, -0x20_0000 + 13), &v),
        0,
        "runs past the view"
    );
    assert_eq!(load(ld_abs(1, -0x20_0001), &v), 0);
}

#[test]
fn ld_ind_offset_is_the_low_32_bits_of_the_sum_as_an_int() {
    let v = [1, 2, 3, 4];
    let ind = |r3: u64, imm: i32| {
        let mut p = vec![mov64_reg(6, 1)];
        p.extend(asm::lddw(3, r3));
        p.extend([ld_ind(1, 3, imm), exit()]);
        run(p, &v)
    };
    assert_eq!(ind(2, 1), 4);
    assert_eq!(ind(0x1_0000_0002, 0), 3, "upper half ignored");
    assert_eq!(ind(0xffff_ffff, 1), 1, "-1 + 1 = 0");
    assert_eq!(ind(0xffff_ffff, 0), 0, "-1: out of range");
}

#[test]
fn skb_load_bytes_copies_or_zeroes() {
    // Fill fp-8 with ones, then load 4 bytes at `off` into fp-8; return r0 << 32 | word.
    let prog = |off: i32| {
        vec![
            mov64_reg(6, 1),
            st(8, 10, -8, -1),
            mov64_imm(2, off),
            mov64_reg(3, 10),
            alu64_imm(ADD, 3, -8),
            mov64_imm(4, 4),
            mov64_reg(1, 6),
            call(26),
            mov64_reg(7, 0),
            ldx(8, 0, 10, -8),
            jmp_imm(JEQ, 7, 0, 1),
            alu64_imm(ADD, 0, 1),
            exit(),
        ]
    };
    let v = [1, 2, 3, 4, 5];
    assert_eq!(
        run(prog(1), &v),
        0x0504_0302,
        "little-endian stack word, upper bytes kept"
    );
    // Short: the 4 bytes are zeroed (the upper ones keep 0xff), r0 = -EFAULT, so +1.
    assert_eq!(run(prog(2), &v), 1);
    assert_eq!(run(prog(-1), &v), 1, "offsets above INT_MAX fail");
}

#[test]
fn alu_results_follow_the_kernel() {
    let r0 = |p: Vec<Insn>| {
        let mut prog = p;
        prog.push(exit());
        run(prog, &[])
    };
    assert_eq!(r0(vec![mov64_imm(0, -1), alu32_imm(ADD, 0, 1)]), 0);
    assert_eq!(
        r0(vec![mov64_imm(0, 7), mov64_imm(1, 0), alu64_reg(DIV, 0, 1)]),
        0
    );
    assert_eq!(
        r0(vec![mov64_imm(0, 7), mov64_imm(1, 0), alu64_reg(MOD, 0, 1)]),
        7
    );
    assert_eq!(
        r0(vec![
            mov64_imm(0, 1),
            mov64_imm(1, 65),
            alu64_reg(LSH, 0, 1)
        ]),
        2
    );
    assert_eq!(r0(vec![mov64_imm(0, 0x1234), asm::to_be(0, 16)]), 0x3412);
    let sdiv = Insn::new(op::ALU64 | op::DIV | op::K, 0, 0, 1, -2);
    assert_eq!(r0(vec![mov64_imm(0, -7), sdiv]), 3);
    let movsx = Insn::new(op::ALU64 | op::MOV | op::X, 0, 1, 8, 0);
    assert_eq!(r0(vec![mov64_imm(1, 0x80), movsx]), 0xffff_ff80);
    let [a, b] = asm::lddw(0, 0x1_0000_0005);
    assert_eq!(r0(vec![a, b]), 5, "only the low 32 bits are returned");
}

#[test]
fn jumps_signed_unsigned_and_32_bit() {
    // r0 = 1; if <cond> goto +1; r0 = 2; exit
    let branch = |setup: Vec<Insn>, j: Insn| {
        let mut p = setup;
        p.extend([mov64_imm(0, 1), j, mov64_imm(0, 2), exit()]);
        run(p, &[])
    };
    let m1 = vec![mov64_imm(1, -1)];
    assert_eq!(
        branch(m1.clone(), jmp_imm(JGT, 1, 5, 1)),
        1,
        "unsigned: huge > 5"
    );
    assert_eq!(
        branch(m1.clone(), jmp_imm(JSGT, 1, 5, 1)),
        2,
        "signed: -1 < 5"
    );
    let [a, b] = asm::lddw(1, 0x1_0000_0000);
    assert_eq!(branch(vec![a, b], jmp32_imm(JEQ, 1, 0, 1)), 1, "w1 == 0");
    assert_eq!(branch(vec![a, b], jmp_imm(JEQ, 1, 0, 1)), 2, "r1 != 0");
}

#[test]
fn stack_is_little_endian_with_sign_extending_loads() {
    let memsx = Insn::new(op::LDX | op::MEMSX | op::B, 0, 10, -1, 0);
    let prog = vec![st(4, 10, -4, 0x8081_8283u32 as i32), memsx, exit()];
    assert_eq!(run(prog, &[]), 0xffff_ff80);
    let prog = vec![st(4, 10, -4, 0x0102_0304), ldx(2, 0, 10, -2), exit()];
    assert_eq!(run(prog, &[]), 0x0102);
}

#[test]
fn len_reads_including_narrow_ones() {
    let view = vec![0u8; 0x1234];
    assert_eq!(run(vec![ldx(4, 0, 1, 0), exit()], &view), 0x1234);
    assert_eq!(run(vec![ldx(1, 0, 1, 1), exit()], &view), 0x12);
    assert_eq!(run(vec![ldx(2, 0, 1, 2), exit()], &view), 0);
}

#[test]
fn stack_pointer_that_differs_between_paths() {
    // r2 = len ? fp-16 : fp-8; *(u64 *)r2 = 9; r0 = *(u64 *)r2
    let prog = vec![
        ldx(4, 3, 1, 0),
        mov64_reg(2, 10),
        alu64_imm(ADD, 2, -8),
        jmp_imm(JEQ, 3, 0, 1),
        alu64_imm(ADD, 2, -8),
        st(8, 2, 0, 9),
        ldx(8, 0, 2, 0),
        exit(),
    ];
    let p = Program::new(prog).unwrap();
    assert_eq!(p.run(&[]), Ok(9));
    assert_eq!(p.run(&[1]), Ok(9));
    assert_eq!(p.stack_depth(), 16);
}

#[test]
fn deep_stack_uses_the_full_array() {
    let prog = vec![st(8, 10, -512, 3), ldx(8, 0, 10, -512), exit()];
    let p = Program::new(prog).unwrap();
    assert_eq!(p.stack_depth(), 512);
    assert_eq!(p.run(&[]), Ok(3));
}

#[test]
fn program_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Program>();
    assert_send_sync::<crate::BpfParser>();
}
