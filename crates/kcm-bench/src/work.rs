//! CPU work for W2, and CPU-time accounting for the load generator.
//!
//! W2's server work must burn CPU in the receiving thread (`bench.md`: "CPU work per request …
//! done in the receiving thread"), not sleep, or a thread holding a hot connection would not
//! actually be busy. The loop runs until the thread has used the requested CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), so a request asking for 20 µs costs 20 µs of CPU on every
//! server, in every run, whatever the shared host's speed; the loop's speed, calibrated once
//! per process, only sets how often the clock is read.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::Rng;

/// Loop iterations per microsecond of the spin loop, measured once.
fn iters_per_us() -> f64 {
    static CAL: OnceLock<f64> = OnceLock::new();
    *CAL.get_or_init(|| {
        // Spin for a while first so the core leaves any low-power state, then time short
        // rounds and keep the fastest: anything that disturbs a round (preemption, the
        // hypervisor, a sibling hyperthread) only makes it slower, so the fastest round is the
        // loop's own speed. A rate measured too low would make every request's work short.
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(20) {
            spin_iters(10_000);
        }
        let n: u64 = 200_000;
        (0..25)
            .map(|_| {
                let t = Instant::now();
                spin_iters(n);
                n as f64 / (t.elapsed().as_secs_f64() * 1e6).max(1e-3)
            })
            .fold(0.0, f64::max)
    })
}

fn spin_iters(n: u64) {
    let mut x = 0u64;
    for i in 0..n {
        // black_box keeps the loop from being folded away or vectorised.
        x = black_box(x.wrapping_add(i));
    }
    black_box(x);
}

/// CPU time burnt by [`spin`] so far, every thread of the process together, ns.
static WORK_NS: AtomicU64 = AtomicU64::new(0);

/// Burns about `ns` nanoseconds of CPU in the calling thread, and adds what it used to
/// [`work_cpu_time`].
///
/// ```
/// let before = kcm_bench::work::work_cpu_time();
/// let t = std::time::Instant::now();
/// kcm_bench::work::spin(200_000);
/// assert!(t.elapsed() >= std::time::Duration::from_micros(100));
/// let used = kcm_bench::work::work_cpu_time() - before;
/// assert!(used >= std::time::Duration::from_micros(200));
/// ```
pub fn spin(ns: u32) {
    if ns == 0 {
        return;
    }
    // Loop until the thread has used `ns` of CPU time: a loop count alone would burn more or
    // less time as the shared host's speed changes after the calibration (seen: `thread`'s W2
    // QPS moving between 42 k and 73 k from one process to the next). The clock is read every
    // ~2 µs of loop (reading it is a system call; its cost counts as part of the work), so a
    // request uses a little more than it asks: about 21.9 µs for W2's mean of 20 here.
    let target = Duration::from_nanos(u64::from(ns));
    let start = thread_cpu_time();
    let chunk = ((2.0 * iters_per_us()) as u64).max(1);
    let first = ((f64::from(ns) / 1000.0 * iters_per_us()) as u64).min(chunk);
    spin_iters(first);
    loop {
        let used = thread_cpu_time().saturating_sub(start);
        if used >= target {
            // One shared counter per request: at W2's ≈ 20 µs a request it costs nothing
            // measurable, and every system pays it alike.
            let used = u64::try_from(used.as_nanos()).unwrap_or(u64::MAX);
            WORK_NS.fetch_add(used, Ordering::Relaxed);
            return;
        }
        spin_iters(chunk);
    }
}

/// The CPU time [`spin`] has burnt in this process so far (all threads): the requests' own
/// work, which the bench subtracts from a server's CPU time to show what the server itself
/// costs per request.
pub fn work_cpu_time() -> Duration {
    Duration::from_nanos(WORK_NS.load(Ordering::Relaxed))
}

/// Calibrates the busy loop now (so the first measured request does not pay for it).
pub fn calibrate() {
    let _ = iters_per_us();
}

/// Draws an exponentially distributed duration with the given mean, in nanoseconds.
pub fn exponential_ns<R: Rng>(rng: &mut R, mean_ns: f64) -> u32 {
    // Inverse transform: -mean·ln(U) with U in (0, 1].
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v = -mean_ns * u.ln();
    // Cap the tail at 50× the mean (p ≈ 2e-22): keeps one draw from stalling a run.
    v.min(mean_ns * 50.0) as u32
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    cpu_time(rustix::time::ClockId::ThreadCPUTime)
}

/// CPU time every thread of the process has used (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_time() -> Duration {
    cpu_time(rustix::time::ClockId::ProcessCPUTime)
}

fn cpu_time(clock: rustix::time::ClockId) -> Duration {
    let ts = rustix::time::clock_gettime(clock);
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn spin_takes_roughly_what_it_is_asked() {
        calibrate();
        // Not a performance figure: a guard against a calibration that is off by a large
        // factor (a unit mix-up, a loop folded away). Only the lower bound is meaningful (a
        // busy machine makes it slower), and it is loose: the CPU's speed during calibration
        // and during the test may differ (frequency, a sibling hyperthread).
        let t = Instant::now();
        spin(2_000_000);
        let e = t.elapsed();
        assert!(e >= Duration::from_micros(500), "{e:?}");
    }

    #[test]
    fn exponential_mean_is_close() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 100_000;
        let sum: f64 = (0..n)
            .map(|_| f64::from(exponential_ns(&mut rng, 20_000.0)))
            .sum();
        let mean = sum / n as f64;
        assert!((19_500.0..20_500.0).contains(&mean), "{mean}");
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let a = thread_cpu_time();
        spin(5_000_000);
        assert!(thread_cpu_time() > a);
    }
}
