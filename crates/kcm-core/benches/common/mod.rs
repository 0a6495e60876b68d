//! Helpers shared by the kcm-core benches: one criterion configuration for all of them, a
//! deterministic size sequence and Thrift framing.
// Each bench binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion};

/// Applies the short settings every kcm-core bench uses (20 samples, 0.5 s warm-up, 2 s of
/// measurement) so that the whole set runs in about two minutes on a shared 2-core machine.
pub fn short<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
}

/// A criterion instance configured from the command line (so `cargo bench -- <filter>` works).
pub fn criterion() -> Criterion {
    Criterion::default().configure_from_args()
}

/// A deterministic pseudo-random sequence (xorshift64) of body sizes in `lo..=hi`: parsers see
/// varied lengths, so the branch predictor cannot learn a single one.
pub fn sizes(seed: u64, lo: usize, hi: usize) -> impl Iterator<Item = usize> {
    let mut s = seed | 1;
    let span = (hi - lo + 1) as u64;
    std::iter::repeat_with(move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        lo + (s % span) as usize
    })
}

/// `count` Thrift frames (4-byte big-endian length of the body, then the body) of exactly
/// `total` bytes each, header included, concatenated into one stream.
pub fn thrift_stream(total: usize, count: usize) -> Vec<u8> {
    assert!(total >= 4, "a Thrift frame has a 4-byte header");
    let body = u32::try_from(total - 4).expect("bench frames fit a u32 length");
    let mut frame = body.to_be_bytes().to_vec();
    frame.resize(total, 0x5a);
    frame.repeat(count)
}
