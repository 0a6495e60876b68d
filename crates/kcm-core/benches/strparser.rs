//! Stream-parser throughput: [`StrParser`] driven exactly as the runtime drives it.
//!
//! One iteration feeds a whole stream of Thrift frames through a fresh `StrParser`: take
//! `recv_buf()`, copy in as many bytes as its spare capacity allows, capped at the read size
//! (the runtime's `recv` reads the spare capacity), `handle_recv`, then `next_message` until
//! it answers `Ok(None)`. Delivered messages are dropped at once, as a server that has handled
//! them would, so the receive buffer's space can be reclaimed in place.
//!
//! Cases (throughput in messages; bytes/s is messages/s × the fixed message size):
//! - `read64k/32B`: 32-byte frames (the W3 request) in 64 KiB reads, 2,048 whole messages a read;
//! - `read64k/5000B`: 5,000-byte frames (the W1 request) in 64 KiB reads, so most reads end
//!   inside a message and a message straddles two buffers;
//! - `read1/32B` and `read1/5000B`: the same frames arriving one byte per read, the worst case
//!   of per-read overhead (parser called once per new byte until the header is complete);
//! - `batch/read64k/32B`: the first case drained with `next_messages`, the runtime's batch path
//!   (one `Parser::scan` per run of messages instead of a `parse` per message).
//!
//! Run: `cargo bench -p kcm-core --bench strparser`.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::Throughput;
use kcm_core::{presets, Parser, StrConfig, StrParser};

/// Feeds `stream` through a fresh stream parser in reads of at most `read` bytes, draining
/// each read with `next_message` (or `next_messages`, the runtime's batch path, if `batch`),
/// and returns the number of messages delivered.
fn run(parser: &Arc<dyn Parser>, stream: &[u8], read: usize, now: Instant, batch: bool) -> usize {
    let mut sp = StrParser::new(parser.clone(), StrConfig::default());
    let mut out = Vec::new();
    let mut pos = 0;
    let mut msgs = 0;
    while pos < stream.len() {
        let buf = sp.recv_buf();
        let spare = buf.capacity() - buf.len();
        let n = spare.min(read).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        sp.handle_recv(n, now);
        if batch {
            msgs += sp.next_messages(&mut out).expect("well-formed stream");
            out.clear();
            continue;
        }
        while let Some(m) = sp.next_message().expect("well-formed stream") {
            black_box(m);
            msgs += 1;
        }
    }
    msgs
}

fn main() {
    let mut c = common::criterion();
    let parser: Arc<dyn Parser> = Arc::new(presets::thrift());
    let now = Instant::now();
    // (name, message size, messages per iteration, read size). The 64 KiB cases carry 4 MiB
    // and ~4.9 MiB a pass; the 1-byte cases far less, as each byte is one call.
    let cases = [
        ("read64k/32B", 32, 1 << 17, 64 * 1024),
        ("read64k/5000B", 5000, 1024, 64 * 1024),
        ("read1/32B", 32, 1024, 1),
        ("read1/5000B", 5000, 8, 1),
    ];
    let mut g = c.benchmark_group("strparser");
    common::short(&mut g);
    for (name, size, count, read) in cases {
        let stream = common::thrift_stream(size, count);
        assert_eq!(
            run(&parser, &stream, read, now, false),
            count,
            "{name} frames"
        );
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(name, |b| {
            b.iter(|| run(&parser, black_box(&stream), read, now, false))
        });
    }
    let (size, count, read) = (32, 1 << 17, 64 * 1024);
    let stream = common::thrift_stream(size, count);
    assert_eq!(
        run(&parser, &stream, read, now, true),
        count,
        "batch frames"
    );
    g.throughput(Throughput::Elements(count as u64));
    g.bench_function("batch/read64k/32B", |b| {
        b.iter(|| run(&parser, black_box(&stream), read, now, true))
    });
    g.finish();
    c.final_summary();
}
