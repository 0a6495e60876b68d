//! [`BpfParser`]: a socket-filter program as a [`kcm_core::Parser`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// EFAULT is the answer for a run that faulted (which a verified program cannot do).
use kcm_core::errno::EFAULT;
use kcm_core::{Parse, Parser};

use crate::elf::{load_elf, LoadError};
use crate::insn::{Insn, RawInsnsError};
use crate::native::NativeLength;
use crate::verifier::VerifyError;
use crate::vm::{Fault, Program};

/// Why a [`BpfParser`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// The object file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No program could be taken out of the ELF object.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The raw instruction array is malformed.
    #[error(transparent)]
    Raw(#[from] RawInsnsError),
    /// The verifier refused the program.
    #[error("verifier: {0}")]
    Verify(#[from] VerifyError),
}

/// A KCM parser program: runs the verified program on each message view and reads its return
/// value as KCM does ([`Parse::from_raw`]).
///
/// If the program is recognised as a plain length field plus a constant, [`parse`] runs the
/// native [`NativeLength`] instead of the interpreter; both answer the same for every view.
///
/// [`parse`]: Parser::parse
///
/// ```
/// use kcm_bpf::{asm, BpfParser};
/// use kcm_core::{errno, Parse, Parser};
///
/// // MQTT-style: a 1-byte length at offset 1 and an error for 0xff, which needs a branch on
/// // the data, so it stays interpreted.
/// let parser = BpfParser::from_insns(vec![
///     asm::mov64_reg(6, 1),
///     asm::ld_abs(1, 1),
///     asm::jmp_imm(asm::JEQ, 0, 0xff, 2),
///     asm::alu64_imm(asm::ADD, 0, 2),
///     asm::exit(),
///     asm::mov64_imm(0, -errno::EBADMSG),
///     asm::exit(),
/// ])?;
/// assert!(!parser.is_native());
/// assert_eq!(parser.parse(&[0x30]), Parse::NeedMore);
/// assert_eq!(parser.parse(&[0x30, 3]), Parse::Length(5));
/// assert_eq!(parser.parse(&[0x30, 0xff]), Parse::Error(errno::EBADMSG));
/// # Ok::<(), kcm_bpf::BpfError>(())
/// ```
#[derive(Clone)]
pub struct BpfParser {
    program: Program,
    native: Option<NativeLength>,
}

impl BpfParser {
    /// Loads, verifies and (if it is trivial) recognises the program in one section of an ELF
    /// object; `section` as for [`load_elf`].
    pub fn from_elf(bytes: &[u8], section: Option<&str>) -> Result<BpfParser, BpfError> {
        BpfParser::from_insns(load_elf(bytes, section)?)
    }

    /// Like [`from_elf`](Self::from_elf), reading the object from a file.
    pub fn from_elf_file(path: &Path, section: Option<&str>) -> Result<BpfParser, BpfError> {
        let bytes = std::fs::read(path).map_err(|source| BpfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        BpfParser::from_elf(&bytes, section)
    }

    /// From a raw `struct bpf_insn` array (8-byte little-endian slots).
    pub fn from_raw(bytes: &[u8]) -> Result<BpfParser, BpfError> {
        BpfParser::from_insns(Insn::parse_all(bytes)?)
    }

    /// From decoded instructions.
    pub fn from_insns(insns: Vec<Insn>) -> Result<BpfParser, BpfError> {
        let program = Program::new(insns)?;
        let native = crate::lower::recognise(program.insns());
        Ok(BpfParser { program, native })
    }

    /// Whether the program was recognised and runs as a native length-field parser.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// The native parser the program was recognised as, if any.
    pub fn native(&self) -> Option<&NativeLength> {
        self.native.as_ref()
    }

    /// The verified program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The disassembly, one numbered line per instruction.
    pub fn disassembly(&self) -> String {
        self.program.disassembly()
    }

    /// Runs the interpreter (even for a recognised program) and returns the raw 32-bit value.
    pub fn run_interpreter(&self, view: &[u8]) -> Result<u32, Fault> {
        self.program.run(view)
    }

    /// The cheapest parser with this program's answers: the native one when recognised (a
    /// bare [`kcm_core::LengthField`] where that alone is exact), else the interpreter.
    pub fn into_parser(self) -> Arc<dyn Parser> {
        match self.native {
            Some(n) => n.into_parser(),
            None => Arc::new(self),
        }
    }
}

impl Parser for BpfParser {
    #[inline]
    fn parse(&self, view: &[u8]) -> Parse {
        if let Some(n) = &self.native {
            return n.parse(view);
        }
        match self.program.run(view) {
            Ok(ret) => Parse::from_raw(i64::from(ret as i32)),
            Err(_) => Parse::Error(EFAULT),
        }
    }

    fn min_view(&self) -> usize {
        self.native.as_ref().map_or(1, Parser::min_view)
    }
}

impl fmt::Debug for BpfParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BpfParser")
            .field("program", &self.program)
            .field("native", &self.native)
            .finish()
    }
}
