//! `next_messages` and `next_runs` against `next_message` on random streams, arrivals and
//! interventions: the batch must be indistinguishable from draining one message at a time
//! (messages, counters, timer, buffers, errors, the views the parser is shown).

use proptest::prelude::*;

use super::*;

/// Wraps a parser and records the length of every view it is shown.
#[derive(Debug)]
struct Recorded<P> {
    inner: P,
    views: Mutex<Vec<usize>>,
}

impl<P: Parser> Recorded<P> {
    fn new(inner: P) -> Arc<Self> {
        Arc::new(Recorded {
            inner,
            views: Mutex::default(),
        })
    }
    fn views(&self) -> Vec<usize> {
        self.views.lock().unwrap().clone()
    }
}

impl<P: Parser> Parser for Recorded<P> {
    fn parse(&self, v: &[u8]) -> Parse {
        self.views.lock().unwrap().push(v.len());
        self.inner.parse(v)
    }
    fn min_view(&self) -> usize {
        self.inner.min_view()
    }
    fn strip_prefix(&self) -> usize {
        self.inner.strip_prefix()
    }
}

/// A pure parser that can answer everything, chosen by a message's first byte (`kind`) with
/// its second (`n`) as a parameter: plain lengths mostly, and skips, zero and tiny lengths,
/// lengths that depend on the view (so on how the bytes arrived), "need more" before a
/// length, huge lengths, errors of every errno including ESTRPIPE.
#[derive(Debug)]
struct Mixed {
    min_view: usize,
    strip: usize,
}

/// First bytes of each kind of message `Mixed` knows.
mod kind {
    pub const PLAIN: u8 = 0; // ..100: Length(2 + n)
    pub const SKIP: u8 = 100; // ..120: Skip(2 + n)
    pub const LATE: u8 = 120; // ..140: "need more" until 2 + n / 4 bytes, then Length(2 + n)
    pub const TINY: u8 = 140; // ..150: Length(n % 3): 0 is EPROTO
    pub const ERROR: u8 = 150; // ..160: Error(n - 128)
    pub const VIEW: u8 = 160; // ..170: "need more" below 4 bytes, then Length(view - 1 + n % 3)
    pub const HUGE: u8 = 170; // ..180: Length(1000 + 100 n)
    pub const STRPIPE: u8 = 180; // ..190: Error(ESTRPIPE)
    pub const END: u8 = 190; // ..: plain again
}

impl Parser for Mixed {
    fn parse(&self, v: &[u8]) -> Parse {
        let (Some(&k), Some(&n)) = (v.first(), v.get(1)) else {
            return Parse::NeedMore;
        };
        let n = n as usize;
        match k {
            kind::SKIP..kind::LATE => Parse::Skip(2 + n),
            kind::LATE..kind::TINY if v.len() < 2 + n / 4 => Parse::NeedMore,
            kind::TINY..kind::ERROR => Parse::Length(n % 3),
            kind::ERROR..kind::VIEW => Parse::Error(n as i32 - 128),
            kind::VIEW..kind::HUGE if v.len() < 4 => Parse::NeedMore,
            kind::VIEW..kind::HUGE => Parse::Length(v.len() - 1 + n % 3),
            kind::HUGE..kind::STRPIPE => Parse::Length(1000 + 100 * n),
            kind::STRPIPE..kind::END => Parse::Error(errno::ESTRPIPE),
            kind::PLAIN..kind::SKIP | kind::LATE..kind::TINY | kind::END.. => Parse::Length(2 + n),
        }
    }
    fn min_view(&self) -> usize {
        self.min_view
    }
    fn strip_prefix(&self) -> usize {
        self.strip
    }
}

/// One step of a test run, applied identically to both parsers.
#[derive(Debug, Clone)]
enum Op {
    /// Receive the next `n` bytes of the stream (at most the spare capacity), `ms` later.
    Feed {
        n: usize,
        ms: u64,
    },
    /// The timer fires `ms` after the latest receive.
    Timeout(u64),
    SetMax(usize),
    Shrink,
    TakeUnparsed,
    /// Drop the messages delivered so far (a buffer can be reclaimed only once they are).
    DropDelivered,
}

/// A parser drained one way or the other, with what it delivered and answered.
struct Side {
    sp: StrParser,
    msgs: Vec<Bytes>,
    delivered: usize,
    results: Vec<Result<usize, StrError>>,
}

impl Side {
    fn new(parser: Arc<dyn Parser>, cfg: StrConfig) -> Side {
        Side {
            sp: StrParser::new(parser, cfg),
            msgs: Vec::new(),
            delivered: 0,
            results: Vec::new(),
        }
    }

    fn drain_one_by_one(&mut self) {
        let before = self.msgs.len();
        let r = loop {
            match self.sp.next_message() {
                Ok(Some(m)) => self.msgs.push(m),
                Ok(None) => break Ok(self.msgs.len() - before),
                Err(e) => break Err(e),
            }
        };
        self.delivered += self.msgs.len() - before;
        self.results.push(r);
    }

    /// Drains with `next_messages`, or every other time with `next_runs` (whose runs are then
    /// cut into their messages at once).
    fn drain_batch(&mut self) {
        let before = self.msgs.len();
        let r = if self.results.len() % 2 == 0 {
            self.sp.next_messages(&mut self.msgs)
        } else {
            let mut runs = Vec::new();
            let r = self.sp.next_runs(&mut runs);
            let n: usize = runs.iter().map(|r| r.len()).sum();
            assert!(
                r.as_ref().map_or(true, |&got| got == n),
                "runs hold the count"
            );
            self.msgs
                .extend(runs.into_iter().flat_map(|r| r.into_messages()));
            r
        };
        if let Ok(n) = r {
            assert_eq!(n, self.msgs.len() - before, "the count returned");
        }
        self.delivered += self.msgs.len() - before;
        self.results.push(r);
    }
}

/// Asserts that two parsers are in the same observable (and internal) state.
fn assert_same(a: &Side, b: &Side) {
    assert_eq!(a.results, b.results, "answers");
    assert_eq!(a.delivered, b.delivered, "messages delivered");
    assert_eq!(a.msgs, b.msgs, "messages");
    let (x, y) = (&a.sp, &b.sp);
    assert_eq!(x.stats(), y.stats(), "counters");
    assert_eq!(x.poll_timeout(), y.poll_timeout(), "deadline");
    if x.poll_timeout().is_some() {
        assert_eq!(x.armed_timeout, y.armed_timeout, "armed timeout");
    }
    assert_eq!(x.need_bytes(), y.need_bytes(), "need_bytes");
    assert_eq!(x.buffered(), y.buffered(), "buffered");
    assert_eq!(x.failed(), y.failed(), "failure");
    assert_eq!(&x.buf[..], &y.buf[..], "buffered bytes");
    assert_eq!(
        (x.start, x.msg_start, x.skip, x.msg),
        (y.start, y.msg_start, y.skip, y.msg),
        "stream position and message state"
    );
    assert_eq!(x.last_recv, y.last_recv);
}

/// Runs `ops` on `stream` against two parsers built by `make`, one drained with
/// `next_message`, the other with `next_messages`, comparing them after every step, and the
/// views their parsers were shown at the end.
fn compare<P: Parser + 'static>(make: impl Fn() -> P, cfg: &StrConfig, stream: &[u8], ops: &[Op]) {
    let (pa, pb) = (Recorded::new(make()), Recorded::new(make()));
    let mut a = Side::new(pa.clone(), cfg.clone());
    let mut b = Side::new(pb.clone(), cfg.clone());
    let mut now = Instant::now();
    let mut pos = 0;
    for op in ops {
        match *op {
            Op::Feed { n, ms } => {
                now += Duration::from_millis(ms);
                let (ba, bb) = (a.sp.recv_buf(), b.sp.recv_buf());
                let spare = ba.capacity() - ba.len();
                assert_eq!(spare, bb.capacity() - bb.len(), "spare capacity");
                let n = n.min(spare).min(stream.len() - pos);
                ba.extend_from_slice(&stream[pos..pos + n]);
                bb.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                // A runtime never reports an empty read (that is the end of the stream), but
                // it may drain again with nothing new.
                if n > 0 {
                    a.sp.handle_recv(n, now);
                    b.sp.handle_recv(n, now);
                }
                a.drain_one_by_one();
                b.drain_batch();
            }
            Op::Timeout(ms) => {
                let at = now + Duration::from_millis(ms);
                assert_eq!(a.sp.handle_timeout(at), b.sp.handle_timeout(at));
            }
            Op::SetMax(max) => {
                a.sp.set_max_msg_size(max);
                b.sp.set_max_msg_size(max);
            }
            Op::Shrink => {
                a.sp.shrink();
                b.sp.shrink();
            }
            Op::TakeUnparsed => assert_eq!(a.sp.take_unparsed(), b.sp.take_unparsed()),
            Op::DropDelivered => {
                a.msgs.clear();
                b.msgs.clear();
            }
        }
        assert_same(&a, &b);
    }
    assert_eq!(pa.views(), pb.views(), "the parser saw the same views");
}

/// A stream of `Mixed` messages: (kind, n, body length) each, bodies of `fill`.
fn mixed_stream(msgs: &[(u8, u8, usize)], garbage: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(k, n, body)) in msgs.iter().enumerate() {
        out.push(k);
        out.push(n);
        out.extend(std::iter::repeat_n(i as u8, body));
    }
    out.extend_from_slice(garbage);
    out
}

/// A `Mixed` message: mostly plain (its body as long as the header says), some of every
/// other kind, with bodies that may or may not match.
fn mixed_msg() -> impl Strategy<Value = (u8, u8, usize)> {
    let plain = (0u8..100, any::<u8>()).prop_map(|(k, n)| (k, n, n as usize));
    let other = (100u8..=255, any::<u8>(), 0usize..300).prop_map(|(k, n, b)| (k, n, b));
    prop_oneof![12 => plain, 1 => other]
}

fn op(stream_len: usize) -> impl Strategy<Value = Op> {
    let n = prop_oneof![
        2 => 1usize..8,
        3 => 1usize..600,
        2 => Just(stream_len.max(1)),
    ];
    prop_oneof![
        12 => (n, 0u64..3).prop_map(|(n, ms)| Op::Feed { n, ms }),
        1 => (0u64..5).prop_map(Op::Timeout),
        1 => prop_oneof![0usize..50, 50usize..1500, Just(1 << 20)].prop_map(Op::SetMax),
        1 => Just(Op::Shrink),
        1 => Just(Op::TakeUnparsed),
        2 => Just(Op::DropDelivered),
    ]
}

fn config() -> impl Strategy<Value = StrConfig> {
    (
        prop_oneof![0usize..40, 40usize..2000, Just(128 * 1024)],
        prop::option::of(0u64..4),
        prop_oneof![1usize..64, 64usize..2000, Just(64 * 1024)],
    )
        .prop_map(|(max_msg_size, timeout, read_size)| StrConfig {
            max_msg_size,
            timeout: timeout.map(Duration::from_millis),
            read_size,
        })
}

/// Many feeds of a whole stream, so that every byte arrives.
fn feeds_only(n: usize) -> Vec<Op> {
    vec![Op::Feed { n, ms: 1 }; 64]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mixed_streams_batch_like_one_at_a_time(
        (msgs, garbage, ops) in (
            prop::collection::vec(mixed_msg(), 0..120),
            prop::collection::vec(any::<u8>(), 0..40),
        ).prop_flat_map(|(msgs, garbage)| {
            let len = mixed_stream(&msgs, &garbage).len();
            (Just(msgs), Just(garbage), prop::collection::vec(op(len), 1..60))
        }),
        cfg in config(),
        min_view in 1usize..4,
        strip in 0usize..4,
    ) {
        let stream = mixed_stream(&msgs, &garbage);
        compare(|| Mixed { min_view, strip }, &cfg, &stream, &ops);
    }

    #[test]
    fn framed_streams_batch_like_one_at_a_time(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..300),
        chunks in prop::collection::vec(1usize..3000, 1..20),
        max in prop_oneof![Just(60usize), Just(128 * 1024)],
        min_view in prop_oneof![Just(1usize), Just(4usize)],
        strip in prop_oneof![Just(0usize), Just(4usize), Just(9usize)],
        timeout in prop::option::of(1u64..3),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        let cfg = StrConfig {
            max_msg_size: max,
            timeout: timeout.map(Duration::from_millis),
            ..StrConfig::default()
        };
        let ops: Vec<Op> = chunks.iter().map(|&n| Op::Feed { n, ms: 1 }).collect();
        compare(|| Be32 { min_view, strip }, &cfg, &stream, &ops);
        compare(|| Be32 { min_view, strip }, &cfg, &stream, &feeds_only(stream.len()));
    }
}
