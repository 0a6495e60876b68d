//! Property tests of `StrParser`: any segmentation of a framed stream yields the same
//! messages, and arbitrary bytes never panic nor grow memory past the documented bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kcm_core::{Parse, Parser, StrConfig, StrError, StrParser};
use proptest::prelude::*;

/// 4-byte big-endian body length, then the body (the Thrift framed transport).
#[derive(Debug)]
struct Be32 {
    strip: usize,
}

impl Parser for Be32 {
    fn parse(&self, v: &[u8]) -> Parse {
        match v.get(..4) {
            Some(h) => Parse::Length(4 + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize),
            None => Parse::NeedMore,
        }
    }
    fn strip_prefix(&self) -> usize {
        self.strip
    }
}

/// Answers anything at all (any length, skip or errno), as a pure function of the view.
#[derive(Debug)]
struct Chaos;

impl Parser for Chaos {
    fn parse(&self, v: &[u8]) -> Parse {
        let n = |i: usize| v.get(i).copied().unwrap_or(0) as usize;
        match n(0) % 6 {
            0 | 1 => Parse::NeedMore,
            2 => Parse::Length(n(1) * 256 + n(2)),
            3 => Parse::Skip(n(1) * 1000 + n(2)),
            4 => Parse::Length(v.len().wrapping_add(n(1)).wrapping_sub(4)),
            _ => Parse::Error(n(1) as i32 - 100),
        }
    }
}

/// Feeds `stream` in reads of the given sizes (cycled, and capped by the buffer's spare
/// capacity), draining messages after each read, checking the memory bound throughout.
/// Returns the messages and the first error.
fn run(
    sp: &mut StrParser,
    stream: &[u8],
    chunks: &[usize],
) -> Result<(Vec<Bytes>, Option<StrError>), TestCaseError> {
    let cfg = sp.config().clone();
    let bound = cfg.max_msg_size + cfg.read_size;
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let buf = sp.recv_buf();
        let spare = buf.capacity() - buf.len();
        prop_assert!(spare >= 1);
        let n = chunks[i % chunks.len()].min(spare).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        prop_assert!(sp.buffered() <= bound, "{} > {}", sp.buffered(), bound);
        sp.handle_recv(n, t0 + Duration::from_millis(i as u64));
        pos += n;
        i += 1;
        loop {
            match sp.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => {
                    prop_assert_eq!(sp.failed(), Some(&e));
                    prop_assert_eq!(sp.next_message(), Err(e.clone()));
                    return Ok((out, Some(e)));
                }
            }
        }
        prop_assert!(sp.buffered() <= bound, "{} > {}", sp.buffered(), bound);
        if i % 3 == 0 {
            sp.shrink();
        }
    }
    Ok((out, None))
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        prop::collection::vec(1usize..8, 1..20),
        prop::collection::vec(1usize..5000, 1..20),
    ]
}

proptest! {
    #[test]
    fn any_segmentation_yields_the_same_messages(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 0..12),
        chunks in chunk_sizes(),
        read_size in 1usize..5000,
        strip in prop_oneof![Just(0usize), Just(4usize)],
    ) {
        let mut stream = Vec::new();
        for b in &bodies {
            stream.extend_from_slice(&(b.len() as u32).to_be_bytes());
            stream.extend_from_slice(b);
        }
        let cfg = StrConfig { max_msg_size: 2004, timeout: None, read_size };
        let mut sp = StrParser::new(Arc::new(Be32 { strip }), cfg);
        let (msgs, err) = run(&mut sp, &stream, &chunks)?;
        prop_assert_eq!(err, None);
        prop_assert_eq!(msgs.len(), bodies.len());
        for (m, b) in msgs.iter().zip(&bodies) {
            let want = if strip == 4 {
                b.clone()
            } else {
                let mut f = (b.len() as u32).to_be_bytes().to_vec();
                f.extend_from_slice(b);
                f
            };
            prop_assert_eq!(&m[..], &want[..]);
        }
        let s = sp.stats();
        prop_assert_eq!(s.msgs, bodies.len() as u64);
        prop_assert_eq!(s.bytes, stream.len() as u64);
        prop_assert_eq!((s.aborts, s.msg_too_big, s.bad_hdr_len), (0, 0, 0));
        prop_assert_eq!(sp.need_bytes(), 0);
        prop_assert_eq!(sp.take_unparsed().len(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_memory_stays_bounded(
        stream in prop::collection::vec(any::<u8>(), 0..6000),
        chunks in chunk_sizes(),
        max_msg_size in 0usize..3000,
        read_size in 1usize..2000,
        chaos in any::<bool>(),
    ) {
        let cfg = StrConfig { max_msg_size, timeout: Some(Duration::from_secs(1)), read_size };
        let parser: Arc<dyn Parser> = if chaos { Arc::new(Chaos) } else { Arc::new(Be32 { strip: 0 }) };
        let mut sp = StrParser::new(parser, cfg);
        let (msgs, err) = run(&mut sp, &stream, &chunks)?;
        let s = *sp.stats();
        prop_assert_eq!(s.msgs, msgs.len() as u64);
        prop_assert!(msgs.iter().all(|m| m.len() <= max_msg_size));
        prop_assert_eq!(s.aborts, u64::from(err.is_some()));
        // Every byte fed is either delivered, skipped, or still held.
        let delivered: usize = msgs.iter().map(|m| m.len()).sum();
        let held = sp.take_unparsed().len();
        prop_assert!(delivered as u64 + s.skipped_bytes + held as u64 >= s.bytes);
        prop_assert!(delivered + held <= s.bytes as usize);
        // A timer firing after the failure (or long after the last byte) never panics.
        let late = Instant::now() + Duration::from_secs(3600);
        let _ = sp.handle_timeout(late);
    }
}
