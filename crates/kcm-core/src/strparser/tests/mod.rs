//! Deterministic tests of every rule of the stream parser, on a virtual clock: test parsers
//! and helpers here, with the basic assembly tests; the limits and failures, the timer, the
//! buffers and batch extraction each in their own file, and batch extraction compared with
//! one message at a time on random input.

mod batch;
mod batch_prop;
mod buffers;
mod limits;
mod timer;

use super::*;
use crate::parser::{errno, Parse};
use std::collections::VecDeque;
use std::sync::Mutex;

/// The Thrift framed transport: 4-byte big-endian body length, then the body.
#[derive(Debug)]
pub(super) struct Be32 {
    min_view: usize,
    strip: usize,
}

const BE32: Be32 = Be32 {
    min_view: 1,
    strip: 0,
};

impl Parser for Be32 {
    fn parse(&self, v: &[u8]) -> Parse {
        match v.get(..4) {
            Some(h) => Parse::Length(4 + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize),
            None => Parse::NeedMore,
        }
    }
    fn min_view(&self) -> usize {
        self.min_view
    }
    fn strip_prefix(&self) -> usize {
        self.strip
    }
}

/// Answers from a script, in order (then "need more"), and records each view's length.
#[derive(Debug, Default)]
pub(super) struct Script {
    answers: Mutex<VecDeque<Parse>>,
    views: Mutex<Vec<usize>>,
}

impl Script {
    fn new(answers: &[Parse]) -> Arc<Script> {
        Arc::new(Script {
            answers: Mutex::new(answers.iter().copied().collect()),
            views: Mutex::default(),
        })
    }
    fn views(&self) -> Vec<usize> {
        self.views.lock().unwrap().clone()
    }
}

impl Parser for Script {
    fn parse(&self, v: &[u8]) -> Parse {
        self.views.lock().unwrap().push(v.len());
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Parse::NeedMore)
    }
}

/// Two-byte header: kind (0 = deliver, 1 = skip), body length; then the body.
#[derive(Debug)]
pub(super) struct Tlv;

impl Parser for Tlv {
    fn parse(&self, v: &[u8]) -> Parse {
        match v {
            [0, n, ..] => Parse::Length(2 + *n as usize),
            [1, n, ..] => Parse::Skip(2 + *n as usize),
            [_, _, ..] => Parse::Error(errno::EBADMSG),
            _ => Parse::NeedMore,
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn sp(parser: Arc<dyn Parser>) -> StrParser {
    StrParser::new(parser, StrConfig::default())
}

fn sp_cfg(parser: Arc<dyn Parser>, max: usize, timeout: Option<u64>, read: usize) -> StrParser {
    let cfg = StrConfig {
        max_msg_size: max,
        timeout: timeout.map(Duration::from_secs),
        read_size: read,
    };
    StrParser::new(parser, cfg)
}

/// Appends `bytes` the way a runtime would: into the spare capacity only, one "read" per
/// `recv_buf` call, each reported with `handle_recv`.
fn feed(sp: &mut StrParser, mut bytes: &[u8], now: Instant) {
    while !bytes.is_empty() {
        let buf = sp.recv_buf();
        let n = (buf.capacity() - buf.len()).min(bytes.len());
        assert!(n >= 1, "recv_buf must have spare capacity");
        buf.extend_from_slice(&bytes[..n]);
        sp.handle_recv(n, now);
        bytes = &bytes[n..];
    }
}

fn drain(sp: &mut StrParser) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(m) = sp.next_message().unwrap() {
        out.push(m);
    }
    out
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

#[test]
fn several_messages_in_one_read_are_zero_copy_slices() {
    let mut p = sp(Arc::new(BE32));
    let mut input = frame(b"hello");
    input.extend(frame(b""));
    input.extend(frame(b"world!"));
    let base = p.recv_buf().as_ptr();
    feed(&mut p, &input, Instant::now());
    let msgs = drain(&mut p);
    assert_eq!(msgs, vec![frame(b"hello"), frame(b""), frame(b"world!")]);
    assert_eq!(msgs[0].as_ptr(), base, "delivered in place, not copied");
    assert_eq!(msgs[1].as_ptr(), base.wrapping_add(9));
    assert_eq!(p.stats().msgs, 3);
    assert_eq!(p.stats().bytes, input.len() as u64);
    assert_eq!(p.next_message(), Ok(None));
}

#[test]
fn byte_at_a_time_counts_need_more_and_need_bytes() {
    let mut p = sp(Arc::new(BE32));
    let input = frame(b"abcdef");
    let t0 = Instant::now();
    for (i, b) in input.iter().enumerate() {
        feed(&mut p, &[*b], t0);
        let m = p.next_message().unwrap();
        if i + 1 < input.len() {
            assert_eq!(m, None);
        } else {
            assert_eq!(m.as_deref(), Some(&input[..]));
        }
        if i == 4 {
            assert_eq!(
                p.need_bytes(),
                5,
                "length known after 4 bytes; 5 of 10 missing"
            );
        }
    }
    assert_eq!(p.stats().need_more_hdr, 3, "views of 1, 2 and 3 bytes");
    assert_eq!(p.need_bytes(), 0);
}

#[test]
fn parser_is_called_lazily_once_per_growth() {
    let s = Script::new(&[Parse::NeedMore, Parse::Length(5)]);
    let mut p = sp(s.clone());
    let t0 = Instant::now();
    feed(&mut p, b"ab", t0);
    feed(&mut p, b"c", t0); // two receives before the parser looks: one call
    assert_eq!(p.next_message(), Ok(None));
    assert_eq!(p.next_message(), Ok(None)); // nothing new: no call
    feed(&mut p, b"d", t0);
    assert_eq!(p.next_message(), Ok(None)); // length 5 known now, 4 here
    feed(&mut p, b"e", t0);
    assert_eq!(p.next_message().unwrap().as_deref(), Some(&b"abcde"[..]));
    assert_eq!(
        s.views(),
        vec![3, 4],
        "never called again once the length is known"
    );
}

#[test]
fn short_views_are_need_more_without_a_call() {
    let be = Be32 {
        min_view: 4,
        strip: 0,
    };
    let mut p = sp(Arc::new(be));
    let t0 = Instant::now();
    feed(&mut p, &[0, 0], t0);
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, &[0], t0);
    assert_eq!(p.next_message(), Ok(None));
    assert_eq!(
        p.stats().need_more_hdr,
        2,
        "counted as if the parser had answered"
    );
    feed(&mut p, &[1, b'x'], t0);
    assert_eq!(
        p.next_message().unwrap().as_deref(),
        Some(&[0, 0, 0, 1, b'x'][..])
    );
}

#[test]
fn parser_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<StrParser>();
}
