//! The verifier: the kernel's load-time rules for socket filters, as far as kcm needs them.
//!
//! A program is accepted only if every path through it is safe to interpret: known opcodes,
//! valid registers, no write to r10, jumps that stay inside the program, land on an
//! instruction start and go forward (so every run ends within the program's length), a last
//! instruction that cannot fall off the end, LD_ABS/LD_IND only with the context in r6, context
//! reads only of `len`, stack accesses inside the 512 bytes below r10 and only of initialised
//! bytes, and only the `bpf_skb_load_bytes` helper. Each rejection names the instruction and the
//! rule ([`VerifyError`]).
//!
//! Where the kernel accepts more (bounded loops, variable-offset stack accesses, reads of
//! uninitialised stack by privileged users, pointer leaks), kcm is stricter on purpose: each
//! such program would behave differently from the kernel or could not be proven safe cheaply.

mod arith;
mod ctx;
mod error;
mod explore;
mod stack;
mod structure;

pub use error::{Rule, VerifyError};

pub(crate) use explore::{size_bytes, Analysis, Base, STACK_SIZE};

use crate::insn::Insn;

/// Checks a program against the verifier's rules.
///
/// ```
/// use kcm_bpf::insn::{op, Insn};
/// use kcm_bpf::verify;
///
/// // The KCM documentation's parser: r6 = r1; r0 = *(u32 *)skb[0]; r0 += 4; exit
/// let doc = [
///     Insn::new(op::ALU64 | op::MOV | op::X, 6, 1, 0, 0),
///     Insn::new(op::LD | op::ABS | op::W, 0, 0, 0, 0),
///     Insn::new(op::ALU64 | op::ADD | op::K, 0, 0, 0, 4),
///     Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0),
/// ];
/// assert!(verify(&doc).is_ok());
/// // Without `r6 = r1` the legacy load has no context to read from.
/// let err = verify(&doc[1..]).unwrap_err();
/// assert_eq!(err.to_string(), "insn 0: R6 !read_ok");
/// ```
pub fn verify(insns: &[Insn]) -> Result<(), VerifyError> {
    analyze(insns).map(|_| ())
}

/// Verifies and returns what the interpreter needs.
pub(crate) fn analyze(insns: &[Insn]) -> Result<Analysis, VerifyError> {
    let is_target = structure::check(insns)?;
    explore::explore(insns, &is_target)
}

#[cfg(test)]
mod tests;
