//! BPF parser programs on the command line: `--parser bpf:PATH[:SECTION]`, `kcm bpf check`
//! and `kcm bpf run`.
//!
//! The program is the same object file a kernel-KCM user loads (`clang -O2 -target bpf -c`);
//! `kcm-bpf` verifies it with the kernel's rules, runs it with the kernel's semantics, and runs
//! trivial length-field programs natively. `check` shows what the verifier and the
//! recogniser made of a program; `run` shows what it answers for given bytes.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use kcm_bpf::{BpfError, BpfParser};
use kcm_core::{Parse, Parser};

/// Loads a BPF parser program for `--parser bpf:PATH[:SECTION]`: the native length-field
/// parser when the program is recognised as one, the interpreter otherwise.
pub fn load_parser(path: &Path, section: Option<&str>) -> anyhow::Result<Arc<dyn Parser>> {
    let parser = BpfParser::from_elf_file(path, section)
        .with_context(|| format!("cannot load BPF parser {}", path.display()))?;
    Ok(parser.into_parser())
}

/// `kcm bpf check PATH [--section S]`: prints the disassembly, the verifier's verdict and
/// whether (and as what) the program runs natively. Fails if the program is refused.
pub fn check(path: &Path, section: Option<&str>) -> anyhow::Result<()> {
    let (report, verdict) = check_report(path, section)?;
    print!("{report}");
    verdict
}

/// The text `check` prints, and its verdict.
fn check_report(
    path: &Path,
    section: Option<&str>,
) -> anyhow::Result<(String, anyhow::Result<()>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (name, insns) = kcm_bpf::load_elf_section(&bytes, section)
        .with_context(|| format!("cannot load a program from {}", path.display()))?;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "program: {} section {name}: {} instructions",
        path.display(),
        insns.len()
    );
    out.push_str(&kcm_bpf::disassemble(&insns));
    // Verified once: the parser holds the program the verifier accepted.
    let parser = match BpfParser::from_insns(insns) {
        Ok(p) => p,
        Err(BpfError::Verify(e)) => {
            let _ = writeln!(out, "verdict: rejected: {e}");
            let verdict = Err(anyhow::anyhow!("the verifier rejected the program: {e}"));
            return Ok((out, verdict));
        }
        Err(e) => return Err(e.into()),
    };
    let _ = writeln!(
        out,
        "verdict: accepted (stack: {} bytes)",
        parser.program().stack_depth()
    );
    match parser.native() {
        Some(n) => {
            let _ = writeln!(out, "native: yes, runs as a {n}");
        }
        None => {
            let _ = writeln!(out, "native: no, runs in the interpreter");
        }
    }
    Ok((out, Ok(())))
}

/// `kcm bpf run PATH [--section S] --hex HEX`: runs the program on the bytes `HEX` as the
/// message view and prints what it answers; the last line is the return value as a signed
/// decimal integer.
pub fn run(path: &Path, section: Option<&str>, hex: &str) -> anyhow::Result<()> {
    let view = parse_hex(hex)?;
    let parser = BpfParser::from_elf_file(path, section)
        .with_context(|| format!("cannot load BPF parser {}", path.display()))?;
    print!("{}", run_report(&parser, &view)?);
    Ok(())
}

/// The text `run` prints.
fn run_report(parser: &BpfParser, view: &[u8]) -> anyhow::Result<String> {
    let raw = parser.run_interpreter(view)?;
    let ret = raw as i32;
    let mut out = String::new();
    let _ = writeln!(out, "view: {} bytes", view.len());
    let meaning = match Parse::from_raw(i64::from(ret)) {
        Parse::Length(n) => format!("message of {n} bytes"),
        Parse::NeedMore => "need more bytes".to_string(),
        Parse::Error(e) => format!("error, errno {e}"),
        Parse::Skip(n) => format!("skip {n} bytes"),
    };
    let _ = writeln!(out, "answer: {meaning}");
    if parser.is_native() {
        // The native path must agree with the interpreter; show that it does.
        let native = parser.parse(view);
        let agrees = native == Parse::from_raw(i64::from(ret));
        let _ = writeln!(out, "native parser: {native:?} (agrees: {agrees})");
    }
    let _ = writeln!(out, "{ret}");
    Ok(out)
}

/// Parses hex bytes: pairs of hex digits, optionally prefixed by `0x`, with any spaces,
/// colons, dashes or underscores between bytes.
pub fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let digits: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| !matches!(c, ' ' | ':' | '-' | '_' | '\t'))
        .collect();
    if let Some((at, c)) = digits.iter().find(|(_, c)| !c.is_ascii_hexdigit()) {
        bail!("not a hex digit: {c:?} at position {at} of the hex bytes");
    }
    if digits.len() % 2 != 0 {
        bail!(
            "odd number of hex digits ({}): each byte needs two",
            digits.len()
        );
    }
    Ok(digits
        .chunks_exact(2)
        .map(|pair| {
            let hi = pair[0].1.to_digit(16).unwrap_or(0);
            let lo = pair[1].1.to_digit(16).unwrap_or(0);
            (hi * 16 + lo) as u8
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/{name}.o"))
    }

    #[test]
    fn hex_forms() {
        assert_eq!(parse_hex("0000000c").unwrap(), [0, 0, 0, 12]);
        assert_eq!(
            parse_hex(" 0x00 ff:7F-80_01 ").unwrap(),
            [0, 0xff, 0x7f, 0x80, 1]
        );
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_hex("0x").unwrap(), Vec::<u8>::new());
        let odd = parse_hex("abc").unwrap_err().to_string();
        assert!(odd.contains("odd number"), "{odd}");
        let bad = parse_hex("00zz").unwrap_err().to_string();
        assert!(bad.contains("'z'") && bad.contains("position 2"), "{bad}");
        assert!(parse_hex("é0").is_err());
    }

    #[test]
    fn load_parser_prefers_the_native_parser() {
        let dns = load_parser(&corpus("dns"), None).unwrap();
        assert!(format!("{dns:?}").starts_with("LengthField"), "{dns:?}");
        assert_eq!(dns.parse(&[0, 3]), Parse::Length(5));
        let doc = load_parser(&corpus("kcm_doc"), Some("socket_kcm")).unwrap();
        assert!(format!("{doc:?}").starts_with("NativeLength"), "{doc:?}");
        let mqtt = load_parser(&corpus("mqtt"), None).unwrap();
        assert!(format!("{mqtt:?}").starts_with("BpfParser"), "{mqtt:?}");
        let err = load_parser(&corpus("dns"), Some("nope")).unwrap_err();
        assert!(
            format!("{err:#}").contains("sections found: socket_kcm"),
            "{err:#}"
        );
    }

    #[test]
    fn check_reports_verdict_and_recognition() {
        let (text, verdict) = check_report(&corpus("kcm_doc"), None).unwrap();
        assert!(verdict.is_ok());
        assert!(
            text.contains("section socket_kcm: 4 instructions"),
            "{text}"
        );
        assert!(text.contains("   1: (20) r0 = *(u32 *)skb[0]"), "{text}");
        assert!(
            text.contains("native: yes") && text.contains("preset `thrift`"),
            "{text}"
        );
        let (text, verdict) = check_report(&corpus("mqtt"), None).unwrap();
        assert!(verdict.is_ok());
        assert!(text.contains("native: no"), "{text}");
    }

    #[test]
    fn check_fails_on_a_rejected_program() {
        // An ELF object whose only instruction reads r2 before writing it.
        let dir = std::env::temp_dir().join(format!("kcm-bpf-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.o");
        let mut obj = std::fs::read(corpus("dns")).unwrap();
        // dns.o's code is `r6 = r1` first: make it `r6 = r2` (src nibble 1 -> 2).
        let at = obj
            .windows(8)
            .position(|w| w == [0xbf, 0x16, 0, 0, 0, 0, 0, 0])
            .unwrap();
        obj[at + 1] = 0x26;
        std::fs::write(&path, obj).unwrap();
        let (text, verdict) = check_report(&path, None).unwrap();
        assert!(
            text.contains("verdict: rejected: insn 0: R2 !read_ok"),
            "{text}"
        );
        assert!(verdict.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_prints_the_signed_return_value_last() {
        let doc = BpfParser::from_elf_file(&corpus("kcm_doc"), None).unwrap();
        let text = run_report(&doc, &[0, 0, 0, 12]).unwrap();
        assert_eq!(text.lines().last(), Some("16"));
        assert!(text.contains("message of 16 bytes"), "{text}");
        assert!(text.contains("agrees: true"), "{text}");
        let text = run_report(&doc, &[0xff, 0xff, 0xff, 0xf0]).unwrap();
        assert_eq!(text.lines().last(), Some("-12"));
        let text = run_report(&doc, &[0]).unwrap();
        assert_eq!(text.lines().last(), Some("0"));
        assert!(text.contains("need more"), "{text}");
    }
}
