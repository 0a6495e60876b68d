//! Parser calls per second of the native parsers (`bench.md` W5, function level).
//!
//! Each benchmark walks a buffer of 65,536 framed messages (bodies of 8–64 bytes, pseudo-random)
//! and calls the parser once per message at the message's first byte, as the stream parser
//! does when a read holds many whole messages. Throughput is in messages (parser calls).
//!
//! Cases: the `thrift` preset (4-byte big-endian), the same preset behind `Arc<dyn Parser>`
//! (the stream parser's indirect call), a 3-byte little-endian field (the byte-loop reader),
//! a signed 8-byte big-endian field (sign extension), and the MQTT varint parser.
//!
//! The `*_scan` cases walk the same buffers with [`Parser::scan`] in runs of 64 messages, as the
//! stream parser's batch path does: `thrift_scan` with `LengthField`'s own `scan`,
//! `thrift_scan_generic` with the trait's default walk (one `parse` per message), so the two
//! figures compare the fast walk with what it replaces.
//!
//! Run: `cargo bench -p kcm-core --bench length_field`.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::Throughput;
use kcm_core::{presets, LengthField, Mqtt, Parse, Parser};

/// Messages per benchmark iteration.
const MESSAGES: usize = 1 << 16;

/// `MESSAGES` messages whose headers are written by `header(total, &mut frame)`; the rest of
/// each frame is filler.
fn framed(header_len: impl Fn(usize) -> usize, header: impl Fn(usize, &mut [u8])) -> Vec<u8> {
    let mut buf = Vec::new();
    for body in common::sizes(42, 8, 64).take(MESSAGES) {
        let total = header_len(body) + body;
        let start = buf.len();
        buf.resize(start + total, 0x5a);
        header(total, &mut buf[start..]);
    }
    buf
}

/// Frames for a `LengthField`, written with its own encoder (so the bench cannot drift from
/// what the parser reads).
fn framed_lf(lf: &LengthField) -> Vec<u8> {
    framed(
        |_| lf.header_len(),
        |total, frame| {
            lf.encode_length(total, frame)
                .expect("bench lengths are representable");
        },
    )
}

/// The MQTT remaining length as a varint: 7 bits a byte, least significant group first.
fn mqtt_varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// MQTT PUBLISH packets; every third one uses a longer-than-needed (but valid) two-byte
/// length so the parser's loop takes both paths.
fn framed_mqtt() -> Vec<u8> {
    let mut buf = Vec::new();
    for (i, body) in common::sizes(42, 8, 64).take(MESSAGES).enumerate() {
        buf.push(0x30);
        if i % 3 == 0 {
            buf.extend([0x80 | body as u8, 0]);
        } else {
            mqtt_varint(body, &mut buf);
        }
        buf.resize(buf.len() + body, 0x5a);
    }
    buf
}

/// Walks `buf`, one parser call per message; returns the number of messages.
#[inline(always)]
fn walk(buf: &[u8], p: &impl Parser) -> usize {
    let (mut pos, mut n) = (0, 0);
    while let Some(view) = buf.get(pos..).filter(|v| !v.is_empty()) {
        match p.parse(view) {
            Parse::Length(len) => pos += len,
            other => panic!("unexpected {other:?} at byte {pos}"),
        }
        n += 1;
    }
    n
}

/// Messages one `scan` call records, as in the stream parser's batch path.
const RUN: usize = 64;

/// Walks `buf` with `scan`, `RUN` messages a call; returns the number of messages.
#[inline(always)]
fn walk_scan(buf: &[u8], p: &impl Parser) -> usize {
    let mut lens = [0; RUN];
    let (mut pos, mut total) = (0, 0);
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let (n, stop) = p.scan(rest, usize::MAX, &mut lens);
        pos += lens[..n].iter().sum::<usize>();
        total += n;
        if n < RUN {
            assert!(
                stop.is_none() && pos == buf.len(),
                "unexpected {stop:?} at byte {pos}"
            );
            return total;
        }
    }
}

/// Forwards only `parse` and `min_view`, so `scan` is the trait's default walk.
#[derive(Debug)]
struct Generic<P>(P);

impl<P: Parser> Parser for Generic<P> {
    fn parse(&self, view: &[u8]) -> Parse {
        self.0.parse(view)
    }
    fn min_view(&self) -> usize {
        self.0.min_view()
    }
}

fn main() {
    let mut c = common::criterion();
    let thrift = presets::thrift();
    let le24 = LengthField::builder()
        .width(3)
        .little_endian()
        .build()
        .expect("valid options");
    let signed64 = LengthField::builder()
        .width(8)
        .signed(true)
        .build()
        .expect("valid options");
    let dyn_thrift: Arc<dyn Parser> = Arc::new(presets::thrift());
    let mqtt = Mqtt::new();

    let thrift_buf = framed_lf(&thrift);
    let le24_buf = framed_lf(&le24);
    let signed64_buf = framed_lf(&signed64);
    let mqtt_buf = framed_mqtt();
    // Every buffer must frame exactly MESSAGES messages, or the figures would be wrong.
    assert_eq!(walk(&thrift_buf, &thrift), MESSAGES);
    assert_eq!(walk(&thrift_buf, &dyn_thrift), MESSAGES);
    assert_eq!(walk(&le24_buf, &le24), MESSAGES);
    assert_eq!(walk(&signed64_buf, &signed64), MESSAGES);
    assert_eq!(walk(&mqtt_buf, &mqtt), MESSAGES);
    let generic_thrift = Generic(presets::thrift());
    assert_eq!(walk_scan(&thrift_buf, &thrift), MESSAGES);
    assert_eq!(walk_scan(&thrift_buf, &generic_thrift), MESSAGES);
    assert_eq!(walk_scan(&le24_buf, &le24), MESSAGES);
    assert_eq!(walk_scan(&signed64_buf, &signed64), MESSAGES);

    let mut g = c.benchmark_group("length_field");
    common::short(&mut g);
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("thrift", |b| {
        b.iter(|| walk(black_box(&thrift_buf), &thrift))
    });
    g.bench_function("thrift_dyn", |b| {
        b.iter(|| walk(black_box(&thrift_buf), &dyn_thrift))
    });
    g.bench_function("le24", |b| b.iter(|| walk(black_box(&le24_buf), &le24)));
    g.bench_function("signed64", |b| {
        b.iter(|| walk(black_box(&signed64_buf), &signed64))
    });
    g.bench_function("mqtt", |b| b.iter(|| walk(black_box(&mqtt_buf), &mqtt)));
    g.bench_function("thrift_scan", |b| {
        b.iter(|| walk_scan(black_box(&thrift_buf), &thrift))
    });
    g.bench_function("thrift_scan_generic", |b| {
        b.iter(|| walk_scan(black_box(&thrift_buf), &generic_thrift))
    });
    g.bench_function("le24_scan", |b| {
        b.iter(|| walk_scan(black_box(&le24_buf), &le24))
    });
    g.bench_function("signed64_scan", |b| {
        b.iter(|| walk_scan(black_box(&signed64_buf), &signed64))
    });
    g.finish();
    c.final_summary();
}
