//! Parser spec strings: the `--parser SPEC` syntax of the command line.
//!
//! A spec names a preset (`thrift`, `mqtt`, ...) or describes a length field (`lf:width=2,le`),
//! optionally with options; [`SPEC_HELP`] is the user-facing reference. `bpf:` specs are
//! recognised but not handled here: the BPF engine lives in another crate, so [`parse_spec`]
//! answers [`SpecError::NotNative`] and the caller loads the program.
//!
//! [`LengthField`] and [`Mqtt`] print themselves in this syntax (`Display`), and a printed
//! `LengthField` parses back to an equal one (`FromStr`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::length_field::{ByteOrder, LengthField, LengthFieldBuilder, LengthFieldError, TooLong};
use crate::mqtt::Mqtt;
use crate::parser::Parser;
use crate::presets;

/// The help text for parser specs, for a command line's `--help`.
pub const SPEC_HELP: &str = "\
Parser specs (--parser SPEC):
  NAME[,OPTIONS]       a preset:
                         thrift    u32 BE length of the rest (total = 4 + value)
                         memcache  memcached binary protocol (24-byte header, body length at 8)
                         http2     HTTP/2 frames (u24 BE payload length, 9-byte header)
                         dns       DNS over TCP (u16 BE length of the rest)
                         kafka     Kafka (i32 BE size of the rest; negative sizes fail)
                         mqtt      MQTT control packets (variable-length remaining length)
  lf[:OPTIONS]         a length field; alone, a u32 BE length of the rest
  bpf:PATH[:SECTION]   a BPF socket-filter program, as given to kernel KCM
OPTIONS are comma-separated. Presets other than mqtt take every option below as an override of
their own layout; mqtt takes only max, discard and fail.
  offset=N    byte offset of the length field                             (default 0)
  width=N     width of the length field in bytes, 1 to 8                  (default 4)
  be | le     byte order of the field                                     (default be)
  signed      the field is a two's complement signed integer              (default unsigned)
  adjust=N    number added to the field value, may be negative            (default 0)
  incl        the value counts the header (offset + width bytes) too      (default: it does not)
  strip=N     bytes removed from the front of each message, <= offset+width (default 0)
  max=N       largest total message length; N may end in K (KiB) or M (MiB) (default none)
  discard     skip messages longer than max and go on with the next one
  fail        fail the connection (EMSGSIZE) on a message longer than max  (default)
The message length is value + adjust + (offset + width unless incl); a length shorter than
offset + width fails the connection (EPROTO).
Examples: thrift,max=1M   lf:offset=8,width=4,adjust=12   lf:width=2,le,incl,strip=2";

/// Why a parser spec string was refused. Every variant that concerns one option carries the
/// option as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec is empty or blank.
    #[error("empty parser spec")]
    Empty,
    /// A `bpf:` spec: the caller must load the program with the BPF engine.
    #[error("`bpf:` parser specs are loaded by the BPF engine, not parsed natively")]
    NotNative,
    /// The name before the options is neither a preset nor `lf`.
    #[error(
        "unknown parser `{0}` (expected thrift, memcache, http2, dns, kafka, mqtt, \
         lf:OPTIONS or bpf:PATH)"
    )]
    UnknownParser(String),
    /// A spec that is valid but does not describe a [`LengthField`] (for `FromStr`).
    #[error("parser `{0}` is not a length field")]
    NotLengthField(String),
    /// An option name that does not exist.
    #[error("unknown parser option `{0}`")]
    UnknownOption(String),
    /// An option that needs `=VALUE` came without one.
    #[error("parser option `{0}` needs a value (`{0}=N`)")]
    MissingValue(String),
    /// A flag option came with `=VALUE`.
    #[error("parser option `{0}` takes no value")]
    UnexpectedValue(String),
    /// An option's value is not a number in range.
    #[error("parser option `{option}`: `{value}` is not a valid number")]
    BadNumber {
        /// The option's name.
        option: String,
        /// The value as written.
        value: String,
    },
    /// An option was given twice, or together with its opposite (`be` and `le`).
    #[error("parser option `{0}` repeats or contradicts an earlier option")]
    Duplicate(String),
    /// Two commas in a row, or a comma at the end.
    #[error("empty parser option (two commas in a row, or a trailing comma)")]
    EmptyOption,
    /// An option the named parser does not have (`mqtt,width=2`).
    #[error("parser option `{option}` does not apply to `{parser}`")]
    NotApplicable {
        /// The parser's name.
        parser: String,
        /// The option as written.
        option: String,
    },
    /// The options are well formed but describe no valid length field.
    #[error(transparent)]
    Invalid(#[from] LengthFieldError),
}

/// Builds the parser a spec string describes.
///
/// ```
/// use kcm_core::spec::{parse_spec, SpecError};
/// use kcm_core::Parse;
///
/// let thrift = parse_spec("thrift,max=64K")?;
/// assert_eq!(thrift.parse(&[0, 0, 0, 8]), Parse::Length(12));
/// assert_eq!(thrift.parse(&[0, 1, 0, 0]), Parse::Error(kcm_core::errno::EMSGSIZE));
///
/// let le16 = parse_spec("lf:width=2,le,incl,strip=2")?;
/// assert_eq!(le16.parse(&[10, 0]), Parse::Length(10));
/// assert_eq!(le16.strip_prefix(), 2);
///
/// assert_eq!(parse_spec("bpf:parser.o").unwrap_err(), SpecError::NotNative);
/// assert_eq!(
///     parse_spec("lf:width=9").unwrap_err().to_string(),
///     "length field width must be 1 to 8 bytes, got 9"
/// );
/// # Ok::<(), SpecError>(())
/// ```
pub fn parse_spec(s: &str) -> Result<Arc<dyn Parser>, SpecError> {
    let (name, opts) = split(s)?;
    if name == "mqtt" {
        return Ok(Arc::new(mqtt_with(opts)?));
    }
    Ok(Arc::new(length_field_with(name, opts)?))
}

/// Splits a spec into its name and its option list (`None` when there is none).
fn split(s: &str) -> Result<(&str, Option<&str>), SpecError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(SpecError::Empty);
    }
    if s == "bpf" || s.starts_with("bpf:") {
        return Err(SpecError::NotNative);
    }
    Ok(match s.find([':', ',']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    })
}

/// One parsed option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Offset(usize),
    Width(usize),
    Order(ByteOrder),
    Signed,
    Adjust(i64),
    Incl,
    Strip(usize),
    Max(usize),
    Policy(TooLong),
}

impl Opt {
    /// Options that set the same thing share a slot, so `be,le` counts as a repeat.
    fn slot(self) -> usize {
        match self {
            Opt::Offset(_) => 0,
            Opt::Width(_) => 1,
            Opt::Order(_) => 2,
            Opt::Signed => 3,
            Opt::Adjust(_) => 4,
            Opt::Incl => 5,
            Opt::Strip(_) => 6,
            Opt::Max(_) => 7,
            Opt::Policy(_) => 8,
        }
    }
}

/// Parses the comma-separated options, refusing empty, unknown and repeated ones.
fn options(opts: Option<&str>) -> Result<Vec<(Opt, &str)>, SpecError> {
    let Some(opts) = opts else {
        return Ok(Vec::new());
    };
    let mut seen = [false; 9];
    let mut out = Vec::new();
    for tok in opts.split(',').map(str::trim) {
        if tok.is_empty() {
            // `lf:` or `thrift,` alone: an empty list, no options at all.
            if opts.trim().is_empty() {
                break;
            }
            return Err(SpecError::EmptyOption);
        }
        let opt = option(tok)?;
        if std::mem::replace(&mut seen[opt.slot()], true) {
            return Err(SpecError::Duplicate(tok.to_owned()));
        }
        out.push((opt, tok));
    }
    Ok(out)
}

/// Parses one `key` or `key=value` option.
fn option(tok: &str) -> Result<Opt, SpecError> {
    let (key, value) = match tok.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (tok, None),
    };
    let flag = |opt: Opt| match value {
        None => Ok(opt),
        Some(_) => Err(SpecError::UnexpectedValue(key.to_owned())),
    };
    let need_value = || value.ok_or_else(|| SpecError::MissingValue(key.to_owned()));
    let bad = |v: &str| SpecError::BadNumber {
        option: key.to_owned(),
        value: v.to_owned(),
    };
    let number = |v: &str| v.parse::<usize>().map_err(|_| bad(v));
    match key {
        "be" => flag(Opt::Order(ByteOrder::Big)),
        "le" => flag(Opt::Order(ByteOrder::Little)),
        "signed" => flag(Opt::Signed),
        "incl" => flag(Opt::Incl),
        "discard" => flag(Opt::Policy(TooLong::Discard)),
        "fail" => flag(Opt::Policy(TooLong::Fail)),
        "offset" => Ok(Opt::Offset(number(need_value()?)?)),
        "width" => Ok(Opt::Width(number(need_value()?)?)),
        "strip" => Ok(Opt::Strip(number(need_value()?)?)),
        "adjust" => {
            let v = need_value()?;
            v.parse::<i64>().map(Opt::Adjust).map_err(|_| bad(v))
        }
        "max" => {
            let v = need_value()?;
            let (digits, unit) = match v.as_bytes().last() {
                Some(b'K' | b'k') => (&v[..v.len() - 1], 1usize << 10),
                Some(b'M' | b'm') => (&v[..v.len() - 1], 1usize << 20),
                _ => (v, 1),
            };
            let n = digits.parse::<usize>().map_err(|_| bad(v))?;
            n.checked_mul(unit).map(Opt::Max).ok_or_else(|| bad(v))
        }
        _ => Err(SpecError::UnknownOption(tok.to_owned())),
    }
}

/// `mqtt` with its options: only the maximum and the too-long policy apply.
fn mqtt_with(opts: Option<&str>) -> Result<Mqtt, SpecError> {
    let mut max = None;
    let mut policy = TooLong::Fail;
    for (opt, tok) in options(opts)? {
        match opt {
            Opt::Max(n) => max = Some(n),
            Opt::Policy(p) => policy = p,
            _ => {
                return Err(SpecError::NotApplicable {
                    parser: "mqtt".to_owned(),
                    option: tok.to_owned(),
                })
            }
        }
    }
    Ok(match max {
        Some(n) => Mqtt::with_max(n, policy),
        // A policy without a maximum has nothing to act on; accept it, as `lf:discard` does.
        None => Mqtt::new(),
    })
}

/// `lf` or a length-field preset, with its options applied on top.
fn length_field_with(name: &str, opts: Option<&str>) -> Result<LengthField, SpecError> {
    let mut b: LengthFieldBuilder = match name {
        "lf" => LengthField::builder(),
        _ => match presets::length_field_by_name(name) {
            Some(lf) => lf.to_builder(),
            None if name == "mqtt" => return Err(SpecError::NotLengthField(name.to_owned())),
            None => return Err(SpecError::UnknownParser(name.to_owned())),
        },
    };
    for (opt, _) in options(opts)? {
        b = match opt {
            Opt::Offset(n) => b.offset(n),
            Opt::Width(n) => b.width(n),
            Opt::Order(o) => b.order(o),
            Opt::Signed => b.signed(true),
            Opt::Adjust(n) => b.adjust(n),
            Opt::Incl => b.includes_header(true),
            Opt::Strip(n) => b.strip(n),
            Opt::Max(n) => b.max_length(n),
            Opt::Policy(p) => b.too_long(p),
        };
    }
    Ok(b.build()?)
}

impl FromStr for LengthField {
    type Err = SpecError;

    /// Parses `lf[:OPTIONS]` or a length-field preset with options (see [`SPEC_HELP`]).
    ///
    /// ```
    /// use kcm_core::LengthField;
    /// let lf: LengthField = "kafka,max=1M".parse()?;
    /// assert!(lf.signed());
    /// assert_eq!(lf.max_length(), Some(1 << 20));
    /// # Ok::<(), kcm_core::spec::SpecError>(())
    /// ```
    fn from_str(s: &str) -> Result<LengthField, SpecError> {
        let (name, opts) = split(s)?;
        length_field_with(name, opts)
    }
}

impl fmt::Display for LengthField {
    /// Prints the spec that builds this parser, e.g. `lf:offset=8,width=4,be,adjust=12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = match self.order() {
            ByteOrder::Big => "be",
            ByteOrder::Little => "le",
        };
        write!(
            f,
            "lf:offset={},width={},{order}",
            self.offset(),
            self.width()
        )?;
        if self.signed() {
            f.write_str(",signed")?;
        }
        if self.adjust() != 0 {
            write!(f, ",adjust={}", self.adjust())?;
        }
        if self.includes_header() {
            f.write_str(",incl")?;
        }
        if self.strip() != 0 {
            write!(f, ",strip={}", self.strip())?;
        }
        if let Some(max) = self.max_length() {
            write!(f, ",max={max}")?;
        }
        if self.too_long() == TooLong::Discard {
            f.write_str(",discard")?;
        }
        Ok(())
    }
}

impl fmt::Display for Mqtt {
    /// Prints the spec that builds this parser: `mqtt`, `mqtt,max=N` or `mqtt,max=N,discard`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mqtt")?;
        if let Some(max) = self.max_length() {
            write!(f, ",max={max}")?;
            if self.too_long() == TooLong::Discard {
                f.write_str(",discard")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
