//! W5: parser calls per second, with no I/O at all.
//!
//! A buffer holds many framed 32-byte messages back to back; a pass walks it the way the stream
//! parser does (ask the parser for the length at the current message start, step over it) and
//! checks that it lands exactly on the end. Passes repeat until the measured time is spent.
//! The BPF rows load the KCM documentation's parser (`bpf/kcm_doc.o`, `load_word(skb, 0) + 4`)
//! with `kcm-bpf`, once as it would run in a mux and once forced onto the interpreter.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use kcm_bpf::BpfParser;
use kcm_core::{Parse, Parser};

use crate::wire::{Op, Request};

/// Size of each message in the buffer.
pub const MESSAGE_SIZE: usize = 32;

/// A buffer of `n` framed messages of [`MESSAGE_SIZE`] bytes.
pub fn buffer(n: usize) -> Vec<u8> {
    let mut one = Vec::with_capacity(MESSAGE_SIZE);
    Request {
        conn: 0,
        op: Op::None,
        seq: 0,
        work_ns: 0,
    }
    .write(MESSAGE_SIZE, &mut one);
    one.repeat(n)
}

/// One pass over `buf`: the number of parser calls, after checking every answer.
pub fn pass(parser: &dyn Parser, buf: &[u8]) -> anyhow::Result<u64> {
    let mut off = 0;
    let mut calls = 0u64;
    while off < buf.len() {
        calls += 1;
        match parser.parse(black_box(&buf[off..])) {
            Parse::Length(n) if n > 0 && off + n <= buf.len() => off += n,
            other => bail!("parser answered {other:?} at offset {off}"),
        }
    }
    Ok(calls)
}

/// Calls per second of `parser` over `buf`, measured for at least `min_time` (and one pass).
pub fn calls_per_s(parser: &dyn Parser, buf: &[u8], min_time: Duration) -> anyhow::Result<f64> {
    let expected = (buf.len() / MESSAGE_SIZE) as u64;
    // One untimed pass warms the caches and checks the answers.
    if pass(parser, buf)? != expected {
        bail!("parser framed the buffer into the wrong number of messages");
    }
    let start = Instant::now();
    let mut calls = 0;
    loop {
        calls += pass(parser, buf)?;
        let e = start.elapsed();
        if e >= min_time {
            return Ok(calls as f64 / e.as_secs_f64());
        }
    }
}

/// A parser to measure, or why it cannot be.
pub type Candidate = (&'static str, Result<Arc<dyn Parser>, String>);

/// The BPF interpreter forced on every call, even for a program that [`BpfParser`] recognises
/// and would run natively: W5's "BPF interpreter" figure.
#[derive(Debug)]
pub struct Interpreted(pub BpfParser);

impl Parser for Interpreted {
    fn parse(&self, view: &[u8]) -> Parse {
        match self.0.run_interpreter(view) {
            Ok(ret) => Parse::from_raw(i64::from(ret as i32)),
            // A verified program cannot fault; answer as the kernel would (EFAULT).
            Err(_) => Parse::Error(14),
        }
    }
}

/// Where the documentation's parser object is looked for when no path is given: `bpf/` under
/// the working directory, then the workspace this crate was built from.
pub fn default_bpf_object() -> PathBuf {
    let here = PathBuf::from("bpf/kcm_doc.o");
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/kcm_doc.o")
}

/// The parsers W5 measures: the native Thrift preset; the documentation's BPF parser object
/// through [`BpfParser::into_parser`], which is what a mux runs (recognised as a length field,
/// so it should run at native speed); and the same program forced onto the interpreter.
pub fn parsers(bpf_object: &Path) -> Vec<Candidate> {
    let native: Arc<dyn Parser> = Arc::new(kcm_core::presets::thrift());
    let mut out: Vec<Candidate> = vec![("native", Ok(native))];
    match BpfParser::from_elf_file(bpf_object, None) {
        Ok(p) => {
            let interp: Arc<dyn Parser> = Arc::new(Interpreted(p.clone()));
            // What a mux runs for this program: the native parser when recognised.
            out.push(("bpf", Ok(p.into_parser())));
            out.push(("bpf-interpreter", Ok(interp)));
        }
        Err(e) => {
            let why = format!("unavailable: {e}");
            out.push(("bpf", Err(why.clone())));
            out.push(("bpf-interpreter", Err(why)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_parser_walks_the_buffer() {
        let buf = buffer(1000);
        assert_eq!(buf.len(), 32_000);
        let p = kcm_core::presets::thrift();
        assert_eq!(pass(&p, &buf).unwrap(), 1000);
        assert!(calls_per_s(&p, &buf, Duration::from_millis(5)).unwrap() > 0.0);
    }

    #[test]
    fn bpf_rows_frame_like_the_native_parser() {
        let buf = buffer(100);
        let rows = parsers(&default_bpf_object());
        assert_eq!(rows.len(), 3);
        for (name, p) in rows {
            let p = p.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pass(&*p, &buf).unwrap(), 100, "{name}");
        }
    }

    #[test]
    fn a_missing_object_is_reported_not_fatal() {
        let rows = parsers(Path::new("/nonexistent/kcm_doc.o"));
        assert!(rows[0].1.is_ok());
        assert!(rows[1]
            .1
            .as_ref()
            .is_err_and(|e| e.starts_with("unavailable")));
    }

    #[test]
    fn a_wrong_parser_is_caught() {
        #[derive(Debug)]
        struct Short;
        impl Parser for Short {
            fn parse(&self, _: &[u8]) -> Parse {
                Parse::Length(33)
            }
        }
        assert!(calls_per_s(&Short, &buffer(10), Duration::ZERO).is_err());
    }
}
