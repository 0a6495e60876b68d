//! Raw eBPF instructions (`struct bpf_insn`) and the opcode constants.
//!
//! An instruction is 8 bytes, little-endian: `code` (class | size/op | mode/source), one byte
//! holding `dst_reg` (low nibble) and `src_reg` (high nibble), a signed 16-bit `off` and a signed
//! 32-bit `imm`. A 64-bit immediate load (`lddw`) takes two slots; the second carries the upper
//! 32 bits in its `imm`.

use std::fmt;

/// Opcode fields, with the kernel's UAPI values (`linux/bpf_common.h`, `linux/bpf.h`).
pub mod op {
    /// Mask of the instruction class (low three bits).
    pub const CLASS_MASK: u8 = 0x07;
    /// Legacy loads: `lddw`, and the socket-filter packet loads LD_ABS / LD_IND.
    pub const LD: u8 = 0x00;
    /// Load from memory into a register.
    pub const LDX: u8 = 0x01;
    /// Store an immediate to memory.
    pub const ST: u8 = 0x02;
    /// Store a register to memory (and atomic operations).
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls and exit.
    pub const JMP: u8 = 0x05;
    /// Jumps that compare the low 32 bits.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;

    /// Mask of the access size of a load or store.
    pub const SIZE_MASK: u8 = 0x18;
    /// 4 bytes.
    pub const W: u8 = 0x00;
    /// 2 bytes.
    pub const H: u8 = 0x08;
    /// 1 byte.
    pub const B: u8 = 0x10;
    /// 8 bytes.
    pub const DW: u8 = 0x18;

    /// Mask of the addressing mode of a load or store.
    pub const MODE_MASK: u8 = 0xe0;
    /// Immediate (`lddw`).
    pub const IMM: u8 = 0x00;
    /// Packet load at a constant offset (socket filters).
    pub const ABS: u8 = 0x20;
    /// Packet load at a register plus constant offset (socket filters).
    pub const IND: u8 = 0x40;
    /// Ordinary memory access.
    pub const MEM: u8 = 0x60;
    /// Sign-extending memory load (ISA v4).
    pub const MEMSX: u8 = 0x80;
    /// Atomic memory operation.
    pub const ATOMIC: u8 = 0xc0;

    /// Mask of the operand source bit.
    pub const SRC_MASK: u8 = 0x08;
    /// Operand is the immediate.
    pub const K: u8 = 0x00;
    /// Operand is `src_reg`.
    pub const X: u8 = 0x08;

    /// Mask of the operation of an ALU or jump instruction.
    pub const OP_MASK: u8 = 0xf0;
    /// `dst += src`.
    pub const ADD: u8 = 0x00;
    /// `dst -= src`.
    pub const SUB: u8 = 0x10;
    /// `dst *= src`.
    pub const MUL: u8 = 0x20;
    /// `dst /= src` (signed with `off == 1`).
    pub const DIV: u8 = 0x30;
    /// `dst |= src`.
    pub const OR: u8 = 0x40;
    /// `dst &= src`.
    pub const AND: u8 = 0x50;
    /// `dst <<= src`.
    pub const LSH: u8 = 0x60;
    /// `dst >>= src` (logical).
    pub const RSH: u8 = 0x70;
    /// `dst = -dst`.
    pub const NEG: u8 = 0x80;
    /// `dst %= src` (signed with `off == 1`).
    pub const MOD: u8 = 0x90;
    /// `dst ^= src`.
    pub const XOR: u8 = 0xa0;
    /// `dst = src` (sign-extending with `off` 8, 16 or 32).
    pub const MOV: u8 = 0xb0;
    /// `dst >>= src` (arithmetic).
    pub const ARSH: u8 = 0xc0;
    /// Byte-order conversion.
    pub const END: u8 = 0xd0;
    /// With END in class ALU: convert to little endian (a truncation on this host).
    pub const TO_LE: u8 = 0x00;
    /// With END in class ALU: convert to big endian (a byte swap on this host).
    pub const TO_BE: u8 = 0x08;

    /// Unconditional jump.
    pub const JA: u8 = 0x00;
    /// Jump if equal.
    pub const JEQ: u8 = 0x10;
    /// Jump if greater (unsigned).
    pub const JGT: u8 = 0x20;
    /// Jump if greater or equal (unsigned).
    pub const JGE: u8 = 0x30;
    /// Jump if `dst & src != 0`.
    pub const JSET: u8 = 0x40;
    /// Jump if not equal.
    pub const JNE: u8 = 0x50;
    /// Jump if greater (signed).
    pub const JSGT: u8 = 0x60;
    /// Jump if greater or equal (signed).
    pub const JSGE: u8 = 0x70;
    /// Helper call.
    pub const CALL: u8 = 0x80;
    /// Return `r0`.
    pub const EXIT: u8 = 0x90;
    /// Jump if less (unsigned).
    pub const JLT: u8 = 0xa0;
    /// Jump if less or equal (unsigned).
    pub const JLE: u8 = 0xb0;
    /// Jump if less (signed).
    pub const JSLT: u8 = 0xc0;
    /// Jump if less or equal (signed).
    pub const JSLE: u8 = 0xd0;
}

/// Number of registers: r0 to r10 (r10 is the read-only frame pointer).
pub const NUM_REGS: u8 = 11;

/// One raw eBPF instruction slot, as laid out in `struct bpf_insn`.
///
/// ```
/// use kcm_bpf::insn::{op, Insn};
///
/// // r0 = *(u32 *)skb[0], the legacy absolute load of the KCM documentation's parser.
/// let ld = Insn::new(op::LD | op::ABS | op::W, 0, 0, 0, 0);
/// assert_eq!(Insn::from_bytes(ld.to_bytes()), ld);
/// assert_eq!(ld.class(), op::LD);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    /// Opcode: class, size or operation, mode or source.
    pub code: u8,
    /// Destination register number (0 to 15 as encoded; 0 to 10 are valid).
    pub dst: u8,
    /// Source register number (0 to 15 as encoded; 0 to 10 are valid).
    pub src: u8,
    /// Signed offset (memory accesses, jumps).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// Size of one instruction slot in bytes.
    pub const SIZE: usize = 8;

    /// An instruction from its fields (register numbers are masked to 4 bits, as encoded).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst: dst & 0x0f,
            src: src & 0x0f,
            off,
            imm,
        }
    }

    /// Decodes one little-endian slot.
    pub fn from_bytes(b: [u8; 8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes the slot as 8 little-endian bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    /// Decodes a raw array of `struct bpf_insn` (8-byte little-endian slots).
    ///
    /// ```
    /// use kcm_bpf::insn::Insn;
    /// assert_eq!(Insn::parse_all(&[0x95, 0, 0, 0, 0, 0, 0, 0])?.len(), 1);
    /// assert!(Insn::parse_all(&[0x95, 0, 0]).is_err());
    /// # Ok::<(), kcm_bpf::RawInsnsError>(())
    /// ```
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<Insn>, RawInsnsError> {
        if bytes.len() % Insn::SIZE != 0 {
            return Err(RawInsnsError::Length(bytes.len()));
        }
        Ok(bytes
            .chunks_exact(Insn::SIZE)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                Insn::from_bytes(a)
            })
            .collect())
    }

    /// Encodes instructions as the raw byte array the kernel's `BPF_PROG_LOAD` takes.
    pub fn encode_all(insns: &[Insn]) -> Vec<u8> {
        insns.iter().flat_map(|i| i.to_bytes()).collect()
    }

    /// The instruction class (`code & 0x07`).
    pub fn class(self) -> u8 {
        self.code & op::CLASS_MASK
    }

    /// Whether this is the first slot of a 64-bit immediate load (`lddw`).
    pub fn is_lddw(self) -> bool {
        self.code == op::LD | op::IMM | op::DW
    }
}

/// Why a raw instruction array could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawInsnsError {
    /// The byte count is not a multiple of the 8-byte instruction size.
    #[error("raw program is {0} bytes long, not a multiple of the 8-byte instruction size")]
    Length(usize),
}

/// Name of a helper function by id, for messages and disassembly (ids from `linux/bpf.h`).
pub fn helper_name(id: i32) -> &'static str {
    match id {
        1 => "map_lookup_elem",
        2 => "map_update_elem",
        3 => "map_delete_elem",
        4 => "probe_read",
        5 => "ktime_get_ns",
        6 => "trace_printk",
        7 => "get_prandom_u32",
        8 => "get_smp_processor_id",
        9 => "skb_store_bytes",
        10 => "l3_csum_replace",
        11 => "l4_csum_replace",
        12 => "tail_call",
        13 => "clone_redirect",
        14 => "get_current_pid_tgid",
        15 => "get_current_uid_gid",
        16 => "get_current_comm",
        17 => "get_cgroup_classid",
        18 => "skb_vlan_push",
        19 => "skb_vlan_pop",
        20 => "skb_get_tunnel_key",
        21 => "skb_set_tunnel_key",
        22 => "perf_event_read",
        23 => "redirect",
        24 => "get_route_realm",
        25 => "perf_event_output",
        26 => "skb_load_bytes",
        27 => "get_stackid",
        28 => "csum_diff",
        44 => "get_socket_cookie",
        45 => "get_socket_uid",
        68 => "skb_load_bytes_relative",
        _ => "unknown",
    }
}

/// Helper id of `bpf_skb_load_bytes`, the one helper kcm implements.
pub const HELPER_SKB_LOAD_BYTES: i32 = 26;

impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::disasm::insn_text(self, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_nibbles() {
        let i = Insn::new(op::STX | op::MEM | op::DW, 10, 6, -8, 0);
        let b = i.to_bytes();
        assert_eq!(b[1], 0x6a, "dst in the low nibble, src in the high one");
        assert_eq!(Insn::from_bytes(b), i);
        let j = Insn::from_bytes([0xb7, 0x01, 0xff, 0xff, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!((j.dst, j.src, j.off, j.imm), (1, 0, -1, 0x1234_5678));
    }

    #[test]
    fn parse_all_rejects_partial_slots() {
        assert_eq!(Insn::parse_all(&[0; 12]), Err(RawInsnsError::Length(12)));
        assert_eq!(Insn::parse_all(&[]).map(|v| v.len()), Ok(0));
        let prog = [Insn::new(op::ALU64 | op::MOV | op::K, 0, 0, 0, 7); 3];
        assert_eq!(Insn::parse_all(&Insn::encode_all(&prog)), Ok(prog.to_vec()));
    }

    #[test]
    fn helper_names() {
        assert_eq!(helper_name(HELPER_SKB_LOAD_BYTES), "skb_load_bytes");
        assert_eq!(helper_name(-3), "unknown");
    }
}
