//! Parser calls per second (`bench.md` W5): the interpreter on the KCM documentation's parser
//! and on each preset's C program, and the recognised (native) path.
//!
//! Each benchmark walks a buffer of framed messages of mixed sizes, calling the parser once per
//! message at the message's start (as the stream parser does), so branch predictors see real
//! variety. Throughput is reported in messages (parser calls) per second.
//!
//! Run: `cargo bench -p kcm-bpf --bench interp`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use kcm_bpf::BpfParser;
use kcm_core::{Parse, Parser};

/// Messages per benchmark iteration.
const MESSAGES: usize = 1 << 16;

fn corpus(name: &str) -> BpfParser {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/{name}.o"));
    BpfParser::from_elf_file(&path, None).expect("corpus object loads")
}

/// A deterministic pseudo-random sequence (xorshift).
fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut s = seed | 1;
    std::iter::repeat_with(move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        8 + (s % 57) as usize
    })
}

/// `MESSAGES` messages framed by `header(body_len) -> header bytes`.
fn framed(header: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut buf = Vec::new();
    for body in sizes(42).take(MESSAGES) {
        buf.extend(header(body));
        buf.resize(buf.len() + body, 0x5a);
    }
    buf
}

fn mqtt_header(body: usize) -> Vec<u8> {
    // Bodies here are < 128: a one-byte remaining length; make some two-byte ones too.
    if body % 3 == 0 {
        vec![0x30, 0x80 | body as u8, 0]
    } else {
        vec![0x30, body as u8]
    }
}

/// Walks `buf`, one call per message; returns the number of messages (checked).
#[inline(always)]
fn walk(buf: &[u8], mut call: impl FnMut(&[u8]) -> usize) -> usize {
    let (mut pos, mut n) = (0, 0);
    while pos < buf.len() {
        pos += call(&buf[pos..]);
        n += 1;
    }
    n
}

fn length(p: Parse) -> usize {
    match p {
        Parse::Length(n) => n,
        other => panic!("unexpected {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("kcm_doc", framed(|b| (b as u32).to_be_bytes().to_vec())),
        ("thrift", framed(|b| (b as u32).to_be_bytes().to_vec())),
        ("kafka", framed(|b| (b as u32).to_be_bytes().to_vec())),
        ("dns", framed(|b| (b as u16).to_be_bytes().to_vec())),
        (
            "http2",
            framed(|b| {
                let mut h = (b as u32).to_be_bytes()[1..].to_vec();
                h.extend([0; 6]);
                h
            }),
        ),
        (
            "memcache",
            framed(|b| {
                let mut h = vec![0x80; 8];
                h.extend((b as u32).to_be_bytes());
                h.extend([0; 12]);
                h
            }),
        ),
        (
            "le_u32",
            framed(|b| ((b + 4) as u32).to_le_bytes().to_vec()),
        ),
        ("mqtt", framed(mqtt_header)),
    ];
    let mut g = c.benchmark_group("bpf");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for (name, buf) in &cases {
        let p = corpus(name);
        assert_eq!(
            walk(buf, |v| length(p.parse(v))),
            MESSAGES,
            "{name} frames the buffer"
        );
        g.bench_function(format!("interpreter/{name}"), |b| {
            b.iter(|| {
                walk(black_box(buf), |v| {
                    let raw = p.run_interpreter(v).expect("no fault");
                    raw as i32 as usize
                })
            })
        });
        if p.is_native() {
            let native = p.clone().into_parser();
            g.bench_function(format!("native/{name}"), |b| {
                b.iter(|| walk(black_box(buf), |v| length(native.parse(v))))
            });
        }
    }
    let thrift = kcm_core::presets::thrift();
    let buf = &cases[0].1;
    g.bench_function("baseline/LengthField-thrift", |b| {
        b.iter(|| walk(black_box(buf), |v| length(thrift.parse(v))))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
