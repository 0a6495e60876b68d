//! [`Program`]: a verified, pre-decoded program and its interpreter.

mod decode;
mod exec;

use std::fmt;

use crate::insn::Insn;
use crate::verifier::{self, VerifyError};
use decode::Op;
pub(crate) use exec::NEG_EFAULT;

/// A run ended at an instruction that a verified program can never reach or execute.
///
/// This cannot happen for a program [`Program::new`] accepted; it exists so that a bug in the
/// verifier ends one run with an error instead of reading outside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("internal fault at insn {insn} (a verifier bug: please report it with the program)")]
pub struct Fault {
    /// The decoded instruction index where the run stopped.
    pub insn: usize,
}

/// Stack arrays the interpreter picks from: the smallest that holds what the program uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StackSize {
    None,
    Small,
    Full,
}

const SMALL_STACK: usize = 64;
const FULL_STACK: usize = verifier::STACK_SIZE as usize;

/// A socket-filter program that passed the verifier, ready to run on message views.
///
/// `Program` is immutable and `Send + Sync`; each [`run`](Self::run) uses its own registers
/// and stack, so one program can serve any number of threads.
///
/// ```
/// use kcm_bpf::{asm, Program};
///
/// // The KCM documentation's parser: return load_word(skb, 0) + 4.
/// let prog = Program::new(vec![
///     asm::mov64_reg(6, 1),
///     asm::ld_abs(4, 0),
///     asm::alu64_imm(asm::ADD, 0, 4),
///     asm::exit(),
/// ])?;
/// assert_eq!(prog.run(&[0, 0, 0, 12, 0xaa])?, 16);
/// assert_eq!(prog.run(&[0, 0, 0])?, 0); // the load runs past the end: "need more"
/// // The kernel returns a 32-bit value; as an int, a huge length is negative.
/// assert_eq!(prog.run(&[0xff, 0xff, 0xff, 0xf0])? as i32, -12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Program {
    insns: Vec<Insn>,
    ops: Box<[Op]>,
    stack: StackSize,
    stack_depth: usize,
}

impl Program {
    /// Verifies `insns` and decodes them for the interpreter.
    pub fn new(insns: Vec<Insn>) -> Result<Program, VerifyError> {
        let an = verifier::analyze(&insns)?;
        let depth = an.stack_depth.max(0) as usize;
        let (stack, len) = match depth {
            0 => (StackSize::None, 0),
            1..=SMALL_STACK => (StackSize::Small, SMALL_STACK),
            _ => (StackSize::Full, FULL_STACK),
        };
        let ops = decode::decode(&insns, &an, len).map_err(|bug| VerifyError {
            insn: Some(bug.0),
            rule: verifier::Rule::Internal,
        })?;
        Ok(Program {
            insns,
            ops: ops.into_boxed_slice(),
            stack,
            stack_depth: depth,
        })
    }

    /// Runs the program with `view` as the packet: `skb->len` is `view.len()` and packet
    /// offsets count from `view[0]`. Returns the low 32 bits of r0, as the kernel does; KCM
    /// reads them as a signed `int` (see [`kcm_core::Parse::from_raw`]).
    #[inline]
    pub fn run(&self, view: &[u8]) -> Result<u32, Fault> {
        match self.stack {
            StackSize::None => exec::run::<0>(&self.ops, view),
            StackSize::Small => exec::run::<SMALL_STACK>(&self.ops, view),
            StackSize::Full => exec::run::<FULL_STACK>(&self.ops, view),
        }
    }

    /// The program's instructions, as loaded.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// How many bytes of stack below r10 the program uses.
    pub fn stack_depth(&self) -> usize {
        self.stack_depth
    }

    /// The disassembly, one numbered line per instruction.
    pub fn disassembly(&self) -> String {
        crate::disasm::disassemble(&self.insns)
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("insns", &self.insns.len())
            .field("stack_depth", &self.stack_depth)
            .finish()
    }
}

#[cfg(test)]
mod tests;
