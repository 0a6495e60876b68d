//! Parser-spec resolution: turns the `SPEC` of `--parser SPEC` into a parser.
//!
//! Native specs (a preset name, `NAME,OPTIONS`, `lf:OPTIONS`) are built by
//! [`kcm_core::parse_spec`]; `bpf:PATH[:SECTION]` names a BPF socket-filter object file and is
//! loaded by the BPF engine. Resolution happens while the command line is parsed (a clap value
//! parser), so a bad spec is a usage error: clap prints it and exits with status 2.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use kcm_core::spec::SpecError;
use kcm_core::Parser;

/// The help text for `SPEC`, shown by `--help` of every subcommand that takes one.
pub const HELP: &str = kcm_core::spec::SPEC_HELP;

/// A parser chosen on the command line, with the spec it was built from (for messages).
#[derive(Clone)]
pub struct ParserSpec {
    /// The spec as the user wrote it.
    pub text: String,
    /// The parser it describes.
    pub parser: Arc<dyn Parser>,
}

impl fmt::Debug for ParserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParserSpec")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ParserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Resolves a spec; the error is the sentence clap shows after "invalid value".
pub fn resolve(text: &str) -> Result<ParserSpec, String> {
    let parser = match kcm_core::parse_spec(text) {
        Ok(p) => p,
        Err(SpecError::NotNative) => {
            let (path, section) = split_bpf(text)?;
            load_bpf(Path::new(path), section)?
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(ParserSpec {
        text: text.trim().to_owned(),
        parser,
    })
}

/// Splits `bpf:PATH[:SECTION]`. A path may itself contain `:`, so the whole rest is taken as
/// the path when such a file exists, and only otherwise is the last `:` read as the section.
fn split_bpf(text: &str) -> Result<(&str, Option<&str>), String> {
    let rest = text.trim().strip_prefix("bpf:").unwrap_or_default();
    if rest.is_empty() {
        return Err("`bpf:` needs a path: bpf:PATH[:SECTION]".to_owned());
    }
    if Path::new(rest).exists() {
        return Ok((rest, None));
    }
    match rest.rsplit_once(':') {
        Some((path, section)) if !path.is_empty() && !section.is_empty() => {
            Ok((path, Some(section)))
        }
        _ => Ok((rest, None)),
    }
}

/// Loads a BPF parser program; the error becomes clap's "invalid value" sentence.
fn load_bpf(path: &Path, section: Option<&str>) -> Result<Arc<dyn Parser>, String> {
    crate::bpf_cmd::load_parser(path, section).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcm_core::Parse;

    #[test]
    fn presets_and_options_resolve() {
        let s = resolve(" thrift,max=1K ").unwrap();
        assert_eq!(s.text, "thrift,max=1K");
        assert_eq!(s.parser.parse(&[0, 0, 0, 8]), Parse::Length(12));
        // 1021 + 4 > 1024: the max option took effect.
        assert!(matches!(s.parser.parse(&[0, 0, 3, 254]), Parse::Error(_)));
        let lf = resolve("lf:width=2,le").unwrap();
        assert_eq!(lf.parser.parse(&[3, 0]), Parse::Length(5));
        assert_eq!(lf.to_string(), "lf:width=2,le");
    }

    #[test]
    fn bad_specs_are_explained() {
        assert!(resolve("nonsense")
            .unwrap_err()
            .contains("unknown parser `nonsense`"));
        assert!(resolve("lf:width=9").unwrap_err().contains("width"));
        assert_eq!(resolve("").unwrap_err(), "empty parser spec");
        assert!(resolve("bpf:").unwrap_err().contains("needs a path"));
    }

    #[test]
    fn bpf_spec_splits_section_unless_the_path_exists() {
        assert_eq!(split_bpf("bpf:a.o").unwrap(), ("a.o", None));
        assert_eq!(
            split_bpf("bpf:a.o:socket_kcm").unwrap(),
            ("a.o", Some("socket_kcm"))
        );
        assert_eq!(split_bpf("bpf:dir/a.o:").unwrap(), ("dir/a.o:", None));
        let dir = std::env::temp_dir().join(format!("kcm-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("x:y.o");
        std::fs::write(&odd, b"").unwrap();
        let spec = format!("bpf:{}", odd.display());
        assert_eq!(split_bpf(&spec).unwrap(), (odd.to_str().unwrap(), None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
