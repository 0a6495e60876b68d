//! Kernel-exact BPF socket-filter parser programs for kcm.
//!
//! Kernel-KCM users write their message parser in C, compile it with
//! `clang -O2 -target bpf -c`, and load it as a `BPF_PROG_TYPE_SOCKET_FILTER` program
//! (`kcm-spec.md` §4.1). This crate runs the same object file unchanged and returns exactly
//! what the kernel would:
//!
//! - [`load_elf`] / [`load_raw`]: instructions out of an ELF object (section `socket_kcm`, any
//!   `socket*` section, or one the caller names) or a raw `struct bpf_insn` array;
//! - [`verify`]: the kernel verifier's rules that matter for socket filters, each rejection
//!   naming the instruction and the rule ([`VerifyError`]);
//! - [`Program`]: the interpreter, with kernel semantics (big-endian LD_ABS/LD_IND that end the
//!   program with 0 when they run past the data, 32-bit ALU results zero-extended, division by
//!   zero giving 0, and so on), pre-decoded at load time;
//! - [`BpfParser`]: a [`kcm_core::Parser`] around a program. Trivial programs — a length field
//!   at a fixed offset plus a constant, such as the KCM documentation's
//!   `load_word(skb, 0) + 4` — are recognised and run as a native [`kcm_core::LengthField`]
//!   ([`NativeLength`]), with the kernel's answer for every input.
//!
//! The program's packet is the message view (`design.md` §2, decision 1): `skb->len` is the
//! view's length and packet offsets count from the message's first byte.
//!
//! # Where kcm differs from the kernel
//!
//! Every difference makes kcm *refuse* a program the kernel would load; no program runs
//! differently. The test suite checks this against the running kernel (`tests/kernel_diff.rs`).
//!
//! - Loops: any backward jump is refused (kernels before 5.3 did the same); unroll loops.
//! - Context: only `skb->len` can be read; other `__sk_buff` fields are refused by name.
//! - Helpers: only `bpf_skb_load_bytes` (26); no maps, global data, tail calls, BPF-to-BPF
//!   calls or atomics.
//! - Value ranges: the verifier tracks constants, not ranges. A program whose safety depends on
//!   the kernel proving a path impossible from a range (a register written under one condition
//!   and read under a correlated one) is refused; initialise the register instead.
//! - Privileged leniencies are not granted: reading uninitialised stack, comparing pointers
//!   with anything but 0, returning or partly copying a pointer.
//! - Negative packet offsets: `SKF_NET_OFF` counts from the message start, and `SKF_LL_OFF`
//!   from a 14-byte all-zero link-layer header before it, exactly as in the kernel's
//!   `BPF_PROG_TEST_RUN` (a real KCM socket would show the TCP segment's headers there).
//!
//! ```
//! use kcm_bpf::BpfParser;
//! use kcm_core::{Parse, Parser};
//!
//! let obj = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bpf/kcm_doc.o"))?;
//! let parser = BpfParser::from_elf(&obj, None)?;
//! assert!(parser.is_native());
//! assert_eq!(parser.parse(&[0, 0, 0, 5]), Parse::Length(9));
//! assert_eq!(parser.parse(&[0, 0]), Parse::NeedMore);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alu;
pub mod asm;
mod disasm;
mod elf;
pub mod insn;
mod lower;
mod native;
mod parser;
mod verifier;
mod vm;

pub use disasm::disassemble;
pub use elf::{load_elf, load_elf_section, load_raw, LoadError};
pub use insn::{Insn, RawInsnsError};
pub use native::NativeLength;
pub use parser::{BpfError, BpfParser};
pub use verifier::{verify, Rule, VerifyError};
pub use vm::{Fault, Program};
