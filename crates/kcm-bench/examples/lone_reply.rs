//! What a lone reply costs the server that writes it: the CPU time of one 64-byte `write` on
//! loopback TCP to a peer blocked in `read` (the kernel delivers the segment and wakes the
//! peer inside the writer's call) or to a peer that never sleeps (polling: no wake-up), and
//! of the `read` of a lone 64-byte request that arrived while the server was busy. W2's quiet connections (10 % of its requests) cost every server
//! one of each per request; `docs/bench.md` uses the figure to bound W2's ratio.
//!
//! `cargo run --release -p kcm-bench --example lone_reply`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use kcm_bench::work::{spin, thread_cpu_time};

const ROUNDS: u32 = 20_000;

fn main() -> std::io::Result<()> {
    kcm_bench::work::calibrate();
    for polling in [false, true] {
        let (w, r) = measure(polling)?;
        let peer = if polling {
            "a polling peer"
        } else {
            "a blocked peer"
        };
        println!(
            "to {peer}: lone 64 B write {w:.2} µs of CPU, read of a waiting 64 B request {r:.2} µs"
        );
    }
    Ok(())
}

/// (write, read) CPU µs per call.
fn measure(polling: bool) -> std::io::Result<(f64, f64)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let mut peer = TcpStream::connect(l.local_addr()?)?;
    let (mut srv, _) = l.accept()?;
    srv.set_nodelay(true)?;
    peer.set_nodelay(true)?;
    // The peer answers each reply with the next request, as W2's load generator does.
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = [0u8; 64];
        peer.set_nonblocking(polling)?;
        for _ in 0..ROUNDS {
            let mut got = 0;
            while got < b.len() {
                match peer.read(&mut b[got..]) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // (A polling peer's socket is non-blocking: a full buffer is retried, not an error.)
            let mut sent = 0;
            while sent < b.len() {
                match peer.write(&b[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    });
    // What one clock reading costs: each timed span holds about one (the end of its first
    // reading and the start of its second), which is taken off.
    let t0 = thread_cpu_time();
    for _ in 0..1000 {
        let _ = thread_cpu_time();
    }
    let clock = (thread_cpu_time() - t0) / 1000;
    let (mut write_t, mut read_t) = (Duration::ZERO, Duration::ZERO);
    let mut b = [7u8; 64];
    for _ in 0..ROUNDS {
        let t = thread_cpu_time();
        srv.write_all(&b)?;
        write_t += (thread_cpu_time() - t).saturating_sub(clock);
        // Busy meanwhile (W2's work), so the request is waiting when the server reads it.
        spin(40_000);
        let t = thread_cpu_time();
        srv.read_exact(&mut b)?;
        read_t += (thread_cpu_time() - t).saturating_sub(clock);
    }
    echo.join().expect("peer")?;
    let per = |t: Duration| t.as_secs_f64() * 1e6 / f64::from(ROUNDS);
    Ok((per(write_t), per(read_t)))
}
