//! Loading programs from ELF relocatable objects (what `clang -O2 -target bpf -c` and
//! `llvm-mc -triple bpfel -filetype=obj` write) and from raw instruction arrays.
//!
//! The program is the contents of one section. Without a name, the loader takes `socket_kcm`
//! (the section the KCM documentation uses), else the only section whose name starts with
//! `socket` (libbpf's convention for socket filters).

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolKind};

use crate::insn::{Insn, RawInsnsError};

/// Why a program could not be taken out of an object file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not an ELF object the `object` crate can read.
    #[error("not a valid ELF object: {0}")]
    Elf(String),
    /// The object is for another architecture.
    #[error("ELF object is for {0}, not BPF (compile with clang -target bpf)")]
    NotBpf(String),
    /// A big-endian BPF object.
    #[error("big-endian BPF objects (-target bpfeb) are not supported; use -target bpf or bpfel")]
    BigEndian,
    /// The named section does not exist, or no section could be picked.
    #[error("{}; sections found: {}", missing(.wanted), list(.found))]
    NoSection {
        /// The section asked for, if any.
        wanted: Option<String>,
        /// The sections in the object (code sections first).
        found: Vec<String>,
    },
    /// Several `socket*` sections and none named `socket_kcm`.
    #[error("several socket* sections ({}): name the one to load", list(.0))]
    Ambiguous(Vec<String>),
    /// The section holds more than one function.
    #[error("section `{section}` holds {} programs ({}): kcm loads one program per section", .names.len(), list(.names))]
    MultiplePrograms {
        /// The section.
        section: String,
        /// The functions in it.
        names: Vec<String>,
    },
    /// The section's code is relocated against a symbol (a map, global data or a function).
    #[error("section `{section}` insn {insn} refers to `{symbol}` through a relocation: maps, global data and calls are not supported")]
    Relocation {
        /// The section.
        section: String,
        /// The instruction slot.
        insn: u64,
        /// The symbol referred to.
        symbol: String,
    },
    /// The section's size is not a whole number of instructions.
    #[error("section `{section}`: {source}")]
    Raw {
        /// The section.
        section: String,
        /// The decoding error.
        source: RawInsnsError,
    },
}

fn missing(wanted: &Option<String>) -> String {
    match wanted {
        Some(w) => format!("no section named `{w}`"),
        None => "no `socket_kcm` or `socket*` section".to_string(),
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// Decodes a raw array of `struct bpf_insn` (8-byte little-endian slots).
///
/// ```
/// let insns = kcm_bpf::load_raw(&[0xb7, 0, 0, 0, 7, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])?;
/// assert_eq!(insns.len(), 2);
/// # Ok::<(), kcm_bpf::RawInsnsError>(())
/// ```
pub fn load_raw(bytes: &[u8]) -> Result<Vec<Insn>, RawInsnsError> {
    Insn::parse_all(bytes)
}

/// Takes the instructions of one section out of an ELF BPF object.
///
/// `section` names the section; `None` picks `socket_kcm`, else the only `socket*` section.
/// Relocated code (maps, global data, calls to other functions) is refused, and so is a
/// section with several functions in it.
///
/// ```
/// let obj = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bpf/kcm_doc.o"))?;
/// let insns = kcm_bpf::load_elf(&obj, None)?;
/// assert_eq!(insns.len(), 4);
/// let err = kcm_bpf::load_elf(&obj, Some("kprobe/x")).unwrap_err();
/// assert!(err.to_string().contains("sections found: socket_kcm"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_elf(bytes: &[u8], section: Option<&str>) -> Result<Vec<Insn>, LoadError> {
    load_elf_section(bytes, section).map(|(_, insns)| insns)
}

/// Like [`load_elf`], also returning the name of the section the program came from.
///
/// ```
/// let obj = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bpf/asm_dns.o"))?;
/// let (section, insns) = kcm_bpf::load_elf_section(&obj, None)?;
/// assert_eq!((section.as_str(), insns.len()), ("socket", 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_elf_section(
    bytes: &[u8],
    section: Option<&str>,
) -> Result<(String, Vec<Insn>), LoadError> {
    let file = object::File::parse(bytes).map_err(|e| LoadError::Elf(e.to_string()))?;
    if file.architecture() != object::Architecture::Bpf {
        return Err(LoadError::NotBpf(format!("{:?}", file.architecture())));
    }
    if !file.is_little_endian() {
        return Err(LoadError::BigEndian);
    }
    let named = |s: &object::Section<'_, '_>| s.name().ok().map(str::to_string);
    let code: Vec<String> = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text && s.size() > 0)
        .filter_map(|s| named(&s))
        .collect();
    let found = || {
        let mut all = code.clone();
        let others = file
            .sections()
            .filter_map(|s| named(&s))
            .filter(|n| !n.is_empty());
        for n in others {
            if !all.contains(&n) {
                all.push(n);
            }
        }
        all
    };
    let chosen = match section {
        Some(name) => name.to_string(),
        None if code.iter().any(|n| n == "socket_kcm") => "socket_kcm".to_string(),
        None => {
            let sockets: Vec<String> = code
                .iter()
                .filter(|n| n.starts_with("socket"))
                .cloned()
                .collect();
            match sockets.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(LoadError::NoSection {
                        wanted: None,
                        found: found(),
                    })
                }
                _ => return Err(LoadError::Ambiguous(sockets)),
            }
        }
    };
    let Some(sec) = file.section_by_name(&chosen).filter(|s| s.size() > 0) else {
        return Err(LoadError::NoSection {
            wanted: Some(chosen),
            found: found(),
        });
    };
    let functions: Vec<String> = file
        .symbols()
        .filter(|s| s.section_index() == Some(sec.index()) && s.kind() == SymbolKind::Text)
        .filter(|s| s.is_global() || s.size() > 0)
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect();
    if functions.len() > 1 {
        return Err(LoadError::MultiplePrograms {
            section: chosen,
            names: functions,
        });
    }
    if let Some((offset, reloc)) = sec.relocations().next() {
        let symbol = match reloc.target() {
            RelocationTarget::Symbol(idx) => file
                .symbol_by_index(idx)
                .ok()
                .and_then(|s| s.name().ok().map(str::to_string))
                .unwrap_or_else(|| format!("symbol #{}", idx.0)),
            other => format!("{other:?}"),
        };
        return Err(LoadError::Relocation {
            section: chosen,
            insn: offset / Insn::SIZE as u64,
            symbol,
        });
    }
    let data = sec.data().map_err(|e| LoadError::Elf(e.to_string()))?;
    match Insn::parse_all(data) {
        Ok(insns) => Ok((chosen, insns)),
        Err(source) => Err(LoadError::Raw {
            section: chosen,
            source,
        }),
    }
}
