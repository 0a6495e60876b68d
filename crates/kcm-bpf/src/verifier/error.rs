//! [`VerifyError`]: why a program was refused, worded like the kernel verifier's log.

use std::fmt;

/// A program refused by the verifier: the instruction index (when the rule concerns one
/// instruction) and the rule it broke.
///
/// ```
/// use kcm_bpf::insn::{op, Insn};
/// use kcm_bpf::{verify, Rule};
///
/// // r10 = 0; exit
/// let prog = [
///     Insn::new(op::ALU64 | op::MOV | op::K, 10, 0, 0, 0),
///     Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0),
/// ];
/// let err = verify(&prog).unwrap_err();
/// assert_eq!(err.insn, Some(0));
/// assert_eq!(err.rule, Rule::FramePointerWrite);
/// assert_eq!(err.to_string(), "insn 0: frame pointer is read only");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VerifyError {
    /// Index of the offending instruction slot, if the rule concerns one.
    pub insn: Option<usize>,
    /// The rule that was broken.
    pub rule: Rule,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.insn {
            Some(i) => write!(f, "insn {i}: {}", self.rule),
            None => write!(f, "{}", self.rule),
        }
    }
}

/// The verifier's rules. Messages follow the kernel verifier log where the kernel has the
/// same rule; rules that are kcm's own say what kcm does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// The program has no instructions.
    #[error("program is empty")]
    Empty,
    /// More instructions than the limit.
    #[error("program has {len} insns, more than the limit of {max}")]
    TooLong {
        /// Instruction slots in the program.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An opcode the BPF instruction set does not have.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A field that must be zero (or one of a few values) for this opcode is not.
    #[error("{0} uses reserved fields")]
    ReservedFields(&'static str),
    /// A register number above r10.
    #[error("R{0} is invalid")]
    InvalidReg(u8),
    /// r10, the frame pointer, is written.
    #[error("frame pointer is read only")]
    FramePointerWrite,
    /// Division or modulo by the immediate 0.
    #[error("div by zero")]
    DivByZero,
    /// A shift by an immediate outside `0..width`.
    #[error("invalid shift {0}")]
    InvalidShift(i32),
    /// A `lddw` whose second slot is missing or malformed.
    #[error("invalid bpf_ld_imm64 insn")]
    BadLddw,
    /// A `lddw` that refers to a map, BTF object or subprogram.
    #[error("ld_imm64 with src_reg={0} refers to a map or other kernel object: kcm programs may not use maps or global data")]
    PseudoLddw(u8),
    /// A jump whose target is outside the program.
    #[error("jump out of range to insn {to}")]
    JumpOutOfRange {
        /// The target.
        to: i64,
    },
    /// A jump to the second slot of a `lddw`.
    #[error("jump into the middle of ldimm64 insn {to}")]
    JumpIntoLddw {
        /// The target.
        to: usize,
    },
    /// The last instruction can fall off the end of the program.
    #[error("last insn is not an exit or jmp")]
    LastNotExit,
    /// An instruction no path reaches.
    #[error("unreachable insn")]
    Unreachable,
    /// A jump backwards: kcm refuses loops, so every program terminates within its length.
    #[error("back-edge to insn {to}: loops are not supported (unroll them, e.g. #pragma unroll)")]
    BackEdge {
        /// The target.
        to: usize,
    },
    /// A call of another BPF function (`call pc+N`) or of a kernel function.
    #[error("calls of BPF or kernel functions are not supported (mark them static inline)")]
    FunctionCall,
    /// `may_goto` (`BPF_JCOND`), the kernel's escape hatch for open-ended loops.
    #[error("may_goto is not supported (kcm refuses loops)")]
    MayGoto,
    /// A helper kcm does not implement.
    #[error("unknown func bpf_{name}#{id}: kcm implements bpf_skb_load_bytes#26 only")]
    UnknownHelper {
        /// Helper id.
        id: i32,
        /// Helper name, or `unknown`.
        name: &'static str,
    },
    /// An atomic memory operation.
    #[error("atomic operations are not supported")]
    Atomic,
    /// LD_ABS / LD_IND while r6 does not hold the context.
    #[error("at the time of BPF_LD_ABS|IND R6 != pointer to skb")]
    LdAbsWithoutCtx,
    /// A register read before it was written (on some path).
    #[error("R{0} !read_ok")]
    NotInit(u8),
    /// A read of a context field kcm does not provide.
    #[error("invalid bpf_context access off={off} size={size}: field `{field}` is not available (kcm provides only `len`)")]
    CtxRead {
        /// Offset in `struct __sk_buff`.
        off: i64,
        /// Access size.
        size: i64,
        /// Field name.
        field: &'static str,
    },
    /// A write to the context.
    #[error(
        "invalid bpf_context access off={off} size={size}: field `{field}` is read-only in kcm"
    )]
    CtxWrite {
        /// Offset in `struct __sk_buff`.
        off: i64,
        /// Access size.
        size: i64,
        /// Field name.
        field: &'static str,
    },
    /// A context access through a pointer moved off the start of the context.
    #[error("dereference of modified ctx ptr R{reg} off={off} disallowed")]
    ModifiedCtx {
        /// Register.
        reg: u8,
        /// Its offset from the context start.
        off: i64,
    },
    /// A stack access outside the 512 bytes below r10.
    #[error("invalid stack access off={off} size={size} (the stack is the 512 bytes below r10)")]
    StackBounds {
        /// Offset from r10.
        off: i64,
        /// Access size.
        size: i64,
    },
    /// A stack access not aligned to its size.
    #[error("misaligned stack access off {off} size {size}")]
    StackMisaligned {
        /// Offset from r10.
        off: i64,
        /// Access size.
        size: i64,
    },
    /// A read of stack bytes never written.
    #[error("invalid read from stack off {off} size {size}")]
    StackUninit {
        /// Offset from r10.
        off: i64,
        /// Access size.
        size: i64,
    },
    /// A memory access through a register that is not a pointer.
    #[error("R{reg} invalid mem access '{kind}'")]
    InvalidMem {
        /// Register.
        reg: u8,
        /// What the register holds.
        kind: &'static str,
    },
    /// Arithmetic on a pointer other than adding or subtracting a known constant.
    #[error("R{reg} {what} on pointer prohibited")]
    PointerArith {
        /// Register.
        reg: u8,
        /// The operation.
        what: &'static str,
    },
    /// A pointer compared with something other than 0.
    #[error("R{reg} pointer comparison prohibited")]
    PointerCompare {
        /// Register.
        reg: u8,
    },
    /// A pointer stored with fewer than 8 bytes, read back partly, or partly overwritten.
    #[error("{0}")]
    Spill(&'static str),
    /// One memory instruction used with the context on one path and the stack on another.
    #[error("same insn cannot be used with different pointers")]
    DifferentPointers,
    /// A helper argument of the wrong kind.
    #[error("R{reg} type={found} expected={expected}")]
    HelperArg {
        /// Argument register.
        reg: u8,
        /// What the register holds.
        found: &'static str,
        /// What the helper needs.
        expected: &'static str,
    },
    /// The size argument of `bpf_skb_load_bytes` is not a known constant in 1..=512.
    #[error("R4 must be a known constant from 1 to 512 (kcm does not track value ranges)")]
    HelperSize,
    /// The program returns a pointer.
    #[error("R0 leaks addr as return value")]
    ReturnsPointer,
    /// Verification would take too long.
    #[error("BPF program is too large. Processed {0} insn")]
    TooComplex(usize),
    /// The verifier's findings could not be turned into interpreter instructions. Cannot
    /// happen; reported instead of running a program that was not fully understood.
    #[error("internal error: the verified instruction could not be decoded (please report this program)")]
    Internal,
}
