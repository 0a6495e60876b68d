//! Differential tests against the running kernel: the same programs are loaded with
//! `bpf(BPF_PROG_LOAD)` and run with `BPF_PROG_TEST_RUN`, and must give the same return value
//! for every input as kcm's interpreter (or both sides must refuse the program).
//!
//! Without root (or without bpf()) each test prints `SKIPPED: ...` and passes; with `CI` set
//! that is a failure, since CI runs as root.

mod support;

use std::path::PathBuf;

use kcm_bpf::insn::{op, Insn};
use kcm_bpf::{asm, BpfParser, Program, Rule};
use kcm_core::{Parse, Parser};
use support::gen::{self, Rng};

/// Interesting view lengths for the corpus (around every header size used).
const LENGTHS: &[usize] = &[0, 1, 2, 3, 4, 5, 8, 9, 11, 12, 13, 23, 24, 25, 40];

fn corpus_names() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("bpf/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".o").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Runs one accepted program on `views` on both sides; panics with a report on a mismatch.
fn compare(what: &str, insns: &[Insn], views: &[Vec<u8>]) -> usize {
    let ours = Program::new(insns.to_vec()).unwrap_or_else(|e| panic!("{what}: kcm rejects: {e}"));
    let theirs = support::load(insns)
        .unwrap_or_else(|e| panic!("{what}: kernel rejects: {e}\n{}", ours.disassembly()));
    for v in views {
        let k = theirs.run(v);
        let o = ours.run(v).expect("no fault");
        assert_eq!(
            o,
            k,
            "{what}: view {v:02x?}: kcm {o:#x} kernel {k:#x}\n{}",
            ours.disassembly()
        );
    }
    views.len()
}

#[test]
fn test_run_data_starts_14_bytes_in() {
    if !support::available("test_run_data_starts_14_bytes_in") {
        return;
    }
    // r0 = skb->len
    let len = [asm::ldx(4, 0, 1, 0), asm::exit()];
    let prog = support::load(&len).expect("loads");
    for n in [0usize, 1, 7, 100] {
        assert_eq!(prog.run(&vec![0xaa; n]), n as u32, "len of a {n}-byte view");
    }
    // r0 = *(u8 *)skb[0] reads the first byte after the 14-byte pad.
    let first = [asm::mov64_reg(6, 1), asm::ld_abs(1, 0), asm::exit()];
    let prog = support::load(&first).expect("loads");
    assert_eq!(prog.run(&[0x5a, 1, 2]), 0x5a);
    assert_eq!(prog.run(&[]), 0, "past the end: 0");
}

#[test]
fn corpus_matches_kernel() {
    if !support::available("corpus_matches_kernel") {
        return;
    }
    let mut rng = Rng::new(7);
    let mut cases = 0;
    for name in corpus_names() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/{name}.o"));
        let parser = BpfParser::from_elf_file(&path, None).expect("corpus loads");
        let mut views: Vec<Vec<u8>> = Vec::new();
        for &n in LENGTHS {
            for fill in [0x00, 0xff, 0x80, 0x7f] {
                views.push(vec![fill; n]);
            }
        }
        for _ in 0..400 {
            views.push(gen::view(&mut rng));
        }
        cases += compare(&name, parser.program().insns(), &views);
        // The parser (native when recognised) gives the kernel's answer, read as an int.
        let kernel = support::load(parser.program().insns()).expect("kernel loads");
        for v in &views {
            let want = Parse::from_raw(i64::from(kernel.run(v) as i32));
            assert_eq!(parser.parse(v), want, "{name}: parse of {v:02x?}");
        }
    }
    eprintln!("corpus: {cases} (program, view) cases matched the kernel");
}

#[test]
fn packet_loads_at_edge_offsets() {
    if !support::available("packet_loads_at_edge_offsets") {
        return;
    }
    let offs = [
        0i32,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        -1,
        -2,
        -4,
        i32::MAX,
        i32::MAX - 1,
        i32::MIN,
        -0x10_0000,
        -0x10_0000 + 3,
        -0x0f_fffc,
        -0x10_0001,
        -0x20_0000,
        -0x20_0000 + 12,
        -0x20_0000 + 14,
        -0x20_0000 + 20,
        -0x20_0001,
    ];
    let index_regs: [u64; 7] = [
        0,
        3,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0002,
        0x7fff_ffff,
        u64::MAX - 1,
    ];
    let views: Vec<Vec<u8>> = (0..10).map(|n| (1..=n as u8).collect()).collect();
    let mut cases = 0;
    for size in [1u8, 2, 4] {
        for off in offs {
            let abs = [asm::mov64_reg(6, 1), asm::ld_abs(size, off), asm::exit()];
            cases += compare(&format!("ld_abs size {size} off {off}"), &abs, &views);
            for idx in index_regs {
                let mut ind = vec![asm::mov64_reg(6, 1)];
                ind.extend(asm::lddw(3, idx));
                ind.extend([asm::ld_ind(size, 3, off), asm::exit()]);
                cases += compare(
                    &format!("ld_ind size {size} r3 {idx:#x} off {off}"),
                    &ind,
                    &views,
                );
            }
        }
    }
    eprintln!("packet loads: {cases} cases matched the kernel");
}

#[test]
fn generated_programs_match_kernel() {
    if !support::available("generated_programs_match_kernel") {
        return;
    }
    let (mut programs, mut cases) = (0, 0);
    let seeds: u64 = std::env::var("KCM_BPF_GENERATED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        let len = 4 + rng.below(40) as usize;
        let prog = gen::program(&mut rng, len);
        let views: Vec<Vec<u8>> = (0..24).map(|_| gen::view(&mut rng)).collect();
        cases += compare(&format!("generated program, seed {seed}"), &prog, &views);
        programs += 1;
    }
    eprintln!("generated: {programs} programs, {cases} (program, view) cases matched the kernel");
}

/// Rules where kcm refuses on purpose what a privileged kernel load accepts.
fn kcm_is_stricter(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::BackEdge { .. }
            | Rule::CtxRead { .. }
            | Rule::CtxWrite { .. }
            | Rule::UnknownHelper { .. }
            | Rule::Atomic
            | Rule::StackUninit { .. }
            | Rule::PointerArith { .. }
            | Rule::PointerCompare { .. }
            | Rule::Spill(_)
            | Rule::HelperSize
            | Rule::ReturnsPointer
            | Rule::FunctionCall
            | Rule::PseudoLddw(_)
            | Rule::MayGoto
    )
}

/// Rules whose verdict depends on which paths are feasible: the kernel's value ranges rule out
/// more paths than kcm's constants do.
fn depends_on_path(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::NotInit(_)
            | Rule::StackUninit { .. }
            | Rule::InvalidMem { .. }
            | Rule::HelperArg { .. }
            | Rule::LdAbsWithoutCtx
            | Rule::DifferentPointers
    )
}

/// Valid programs with one or two random field changes. kcm must never accept what the kernel
/// refuses; where kcm refuses what the kernel accepts, the reason must be one of kcm's
/// documented stricter rules, or the kernel's range analysis pruning what kcm checks.
/// `KCM_BPF_MUTATIONS=N` runs N programs (150,000 agreed when this was written).
#[test]
fn mutated_programs_agree_on_acceptance() {
    if !support::available("mutated_programs_agree_on_acceptance") {
        return;
    }
    let (mut both_reject, mut both_accept, mut stricter, mut dead, mut ranges, mut cases) =
        (0, 0, 0, 0, 0, 0);
    let seeds: u64 = std::env::var("KCM_BPF_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    for seed in 0..seeds {
        let mut rng = Rng::new(seed ^ 0xdead_beef);
        let len = 4 + rng.below(20) as usize;
        let mut prog = gen::program(&mut rng, len);
        for _ in 0..1 + rng.below(2) {
            let i = rng.below(prog.len() as u64) as usize;
            let insn = &mut prog[i];
            match rng.below(5) {
                0 => insn.code = rng.next() as u8,
                1 => insn.dst = rng.below(16) as u8,
                2 => insn.src = rng.below(16) as u8,
                3 => insn.off = rng.pick(&[0i16, 1, -1, 2, 8, 16, 32, -8, -600, 100]),
                _ => insn.imm = rng.pick(&[0, 1, -1, 16, 32, 33, 64, 26, 6, 7, -14]),
            }
        }
        let ours = Program::new(prog.clone());
        let theirs = support::load(&prog);
        match (&ours, &theirs) {
            (Ok(_), Ok(_)) => {
                let views: Vec<Vec<u8>> = (0..8).map(|_| gen::view(&mut rng)).collect();
                cases += compare(&format!("mutated program, seed {seed}"), &prog, &views);
                both_accept += 1;
            }
            (Err(_), Err(_)) => both_reject += 1,
            (Err(e), Ok(_)) if kcm_is_stricter(&e.rule) => stricter += 1,
            // The kernel tracks value ranges and skips branches it proves never taken; kcm
            // folds only constants, so it also checks (and here refuses) that dead code...
            (Err(e), Ok(_)) if e.insn.is_some_and(|i| !support::kernel_walks(&prog, i)) => {
                dead += 1
            }
            // ...or a path through it that the kernel's ranges rule out.
            (Err(e), Ok(_)) if depends_on_path(&e.rule) => ranges += 1,
            (Err(e), Ok(_)) => panic!(
                "seed {seed}: kcm rejects ({e}) what the kernel accepts\n{}",
                kcm_bpf::disassemble(&prog)
            ),
            (Ok(_), Err(k)) => panic!(
                "seed {seed}: kcm accepts what the kernel rejects: {k}\n{}",
                kcm_bpf::disassemble(&prog)
            ),
        }
    }
    eprintln!(
        "mutated: {both_accept} accepted by both ({cases} cases matched), {both_reject} rejected by both, \
         {stricter} rejected by kcm's stricter rules only, {dead} rejected by kcm in code the kernel \
         proved dead, {ranges} rejected by kcm on a path the kernel's value ranges rule out"
    );
}

#[test]
fn documented_deviations_are_only_stricter() {
    if !support::available("documented_deviations_are_only_stricter") {
        return;
    }
    // Each of these loads in the kernel (as root) and is refused by kcm with the rule named.
    let exit = asm::exit();
    let cases: Vec<(Vec<Insn>, &str)> = vec![
        // A bounded loop: for (r0 = 0; r0 < 3; r0++);
        (
            vec![
                asm::mov64_imm(0, 0),
                asm::alu64_imm(op::ADD, 0, 1),
                asm::jmp_imm(op::JLT, 0, 3, -2),
                exit,
            ],
            "back-edge",
        ),
        // skb->pkt_type
        (vec![asm::ldx(4, 0, 1, 4), exit], "pkt_type"),
        // bpf_get_prandom_u32()
        (vec![asm::call(7), exit], "get_prandom_u32"),
    ];
    for (prog, what) in cases {
        assert!(
            support::load(&prog).is_ok(),
            "kernel accepts the {what} case"
        );
        let err = Program::new(prog).expect_err(what);
        assert!(err.to_string().contains(what), "{err}");
    }
}
