//! Disassembly in the notation of the kernel verifier log and `bpftool prog dump xlated`
//! (`r0 = *(u32 *)skb[0]`, `if r0 s> 0x5 goto pc+3`), so a rejection message can be read beside
//! the program text.

use std::fmt::Write as _;

use crate::insn::{helper_name, op, Insn};

/// Disassembles a whole program, one numbered line per instruction (the second slot of a
/// `lddw` gets no line of its own, as in the kernel's log).
///
/// ```
/// use kcm_bpf::insn::{op, Insn};
/// let prog = [
///     Insn::new(op::LD | op::ABS | op::W, 0, 0, 0, 0),
///     Insn::new(op::ALU64 | op::ADD | op::K, 0, 0, 0, 4),
///     Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0),
/// ];
/// let text = kcm_bpf::disassemble(&prog);
/// assert_eq!(text.lines().nth(1), Some("   1: (07) r0 += 4"));
/// ```
pub fn disassemble(insns: &[Insn]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(insn) = insns.get(i) {
        let next = insns.get(i + 1);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{i:4}: ({:02x}) {}", insn.code, insn_text(insn, next));
        i += if insn.is_lddw() { 2 } else { 1 };
    }
    out
}

fn size_name(code: u8) -> &'static str {
    match code & op::SIZE_MASK {
        op::W => "u32",
        op::H => "u16",
        op::B => "u8",
        _ => "u64",
    }
}

fn alu_sym(code: u8) -> Option<&'static str> {
    Some(match code & op::OP_MASK {
        op::ADD => "+=",
        op::SUB => "-=",
        op::MUL => "*=",
        op::DIV => "/=",
        op::OR => "|=",
        op::AND => "&=",
        op::LSH => "<<=",
        op::RSH => ">>=",
        op::MOD => "%=",
        op::XOR => "^=",
        op::MOV => "=",
        op::ARSH => "s>>=",
        _ => return None,
    })
}

fn jmp_sym(code: u8) -> Option<&'static str> {
    Some(match code & op::OP_MASK {
        op::JEQ => "==",
        op::JGT => ">",
        op::JGE => ">=",
        op::JSET => "&",
        op::JNE => "!=",
        op::JSGT => "s>",
        op::JSGE => "s>=",
        op::JLT => "<",
        op::JLE => "<=",
        op::JSLT => "s<",
        op::JSLE => "s<=",
        _ => return None,
    })
}

fn mem(code: u8, reg: u8, off: i16) -> String {
    format!("*({} *)(r{reg} {off:+})", size_name(code))
}

/// The text of one instruction; `next` is the following slot (for `lddw`).
pub(crate) fn insn_text(i: &Insn, next: Option<&Insn>) -> String {
    let unknown = || format!("unknown opcode {:#04x}", i.code);
    let code = i.code;
    match i.class() {
        op::ALU | op::ALU64 => {
            let r = if i.class() == op::ALU64 { 'r' } else { 'w' };
            let (d, s) = (i.dst, i.src);
            match code & op::OP_MASK {
                op::NEG => format!("{r}{d} = -{r}{d}"),
                op::END => {
                    let kind = if i.class() == op::ALU64 {
                        "bswap"
                    } else if code & op::SRC_MASK == op::TO_BE {
                        "be"
                    } else {
                        "le"
                    };
                    format!("r{d} = {kind}{} r{d}", i.imm)
                }
                op::MOV if code & op::SRC_MASK == op::X && i.off != 0 => {
                    format!("{r}{d} = (s{}){r}{s}", i.off)
                }
                _ => {
                    let Some(sym) = alu_sym(code) else {
                        return unknown();
                    };
                    let sym = match (code & op::OP_MASK, i.off) {
                        (op::DIV, 1) => "s/=",
                        (op::MOD, 1) => "s%=",
                        _ => sym,
                    };
                    if code & op::SRC_MASK == op::X {
                        format!("{r}{d} {sym} {r}{s}")
                    } else {
                        format!("{r}{d} {sym} {}", i.imm)
                    }
                }
            }
        }
        op::JMP | op::JMP32 => {
            let r = if i.class() == op::JMP { 'r' } else { 'w' };
            match code & op::OP_MASK {
                op::JA if i.class() == op::JMP32 => format!("gotol pc{:+}", i.imm),
                op::JA => format!("goto pc{:+}", i.off),
                op::CALL if i.src == 1 => format!("call pc{:+}", i.imm),
                op::CALL => format!("call bpf_{}#{}", helper_name(i.imm), i.imm),
                op::EXIT => "exit".to_string(),
                _ => {
                    let Some(sym) = jmp_sym(code) else {
                        return unknown();
                    };
                    let rhs = if code & op::SRC_MASK == op::X {
                        format!("{r}{}", i.src)
                    } else {
                        format!("{:#x}", i.imm)
                    };
                    format!("if {r}{} {sym} {rhs} goto pc{:+}", i.dst, i.off)
                }
            }
        }
        op::LD => match code & op::MODE_MASK {
            op::IMM => {
                let hi = next.map_or(0, |n| n.imm as u32);
                let v = u64::from(hi) << 32 | u64::from(i.imm as u32);
                if i.src != 0 {
                    format!("r{} = {v:#x} ll (pseudo {})", i.dst, i.src)
                } else {
                    format!("r{} = {v:#x} ll", i.dst)
                }
            }
            op::ABS => format!("r0 = *({} *)skb[{}]", size_name(code), i.imm),
            op::IND => format!("r0 = *({} *)skb[r{} {:+}]", size_name(code), i.src, i.imm),
            _ => unknown(),
        },
        op::LDX => {
            let m = mem(code, i.src, i.off);
            match code & op::MODE_MASK {
                op::MEM => format!("r{} = {m}", i.dst),
                op::MEMSX => format!("r{} = {}", i.dst, m.replacen("*(u", "*(s", 1)),
                _ => unknown(),
            }
        }
        op::ST => format!("{} = {}", mem(code, i.dst, i.off), i.imm),
        _ => match code & op::MODE_MASK {
            op::MEM => format!("{} = r{}", mem(code, i.dst, i.off), i.src),
            op::ATOMIC => format!(
                "lock {} op {:#x} r{}",
                mem(code, i.dst, i.off),
                i.imm,
                i.src
            ),
            _ => unknown(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> String {
        insn_text(&Insn::new(code, dst, src, off, imm), None)
    }

    #[test]
    fn kernel_log_notation() {
        assert_eq!(t(op::ALU64 | op::MOV | op::X, 6, 1, 0, 0), "r6 = r1");
        assert_eq!(
            t(op::LD | op::ABS | op::H, 0, 0, 0, 12),
            "r0 = *(u16 *)skb[12]"
        );
        assert_eq!(
            t(op::LD | op::IND | op::B, 0, 3, 0, -1),
            "r0 = *(u8 *)skb[r3 -1]"
        );
        assert_eq!(t(op::ALU | op::ADD | op::K, 2, 0, 0, -7), "w2 += -7");
        assert_eq!(
            t(op::LDX | op::MEM | op::B, 1, 10, -4, 0),
            "r1 = *(u8 *)(r10 -4)"
        );
        assert_eq!(
            t(op::STX | op::MEM | op::DW, 10, 6, -8, 0),
            "*(u64 *)(r10 -8) = r6"
        );
        assert_eq!(
            t(op::ST | op::MEM | op::W, 10, 0, -4, 9),
            "*(u32 *)(r10 -4) = 9"
        );
        assert_eq!(
            t(op::ALU | op::END | op::TO_BE, 6, 0, 0, 32),
            "r6 = be32 r6"
        );
        assert_eq!(t(op::JMP | op::JSGT, 6, 0, 3, 5), "if r6 s> 0x5 goto pc+3");
        assert_eq!(
            t(op::JMP32 | op::JNE | op::X, 1, 2, -1, 0),
            "if w1 != w2 goto pc-1"
        );
        assert_eq!(
            t(op::JMP | op::CALL, 0, 0, 0, 26),
            "call bpf_skb_load_bytes#26"
        );
        assert_eq!(t(op::JMP | op::EXIT, 0, 0, 0, 0), "exit");
        assert_eq!(t(op::ALU64 | op::MOV | op::X, 1, 2, 16, 0), "r1 = (s16)r2");
        assert_eq!(t(0xe4, 0, 0, 0, 0), "unknown opcode 0xe4");
    }

    #[test]
    fn lddw_takes_two_slots() {
        let prog = [
            Insn::new(op::LD | op::IMM | op::DW, 0, 0, 0, -74),
            Insn::new(0, 0, 0, 0, 0),
            Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0),
        ];
        let text = disassemble(&prog);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, ["   0: (18) r0 = 0xffffffb6 ll", "   2: (95) exit"]);
    }
}
