//! A pipelined request/ack load on one worker endpoint, for profiling the receive → reply path
//! (`valgrind --tool=callgrind target/release/examples/pipeline`).
//!
//! 8 connections, 64 requests of 32 bytes in flight on each (a closed loop, as `kcm bench`'s
//! W3), 16-byte acks; prints messages/s. `pipeline TOTAL SIZE DEPTH` changes the request size
//! and the requests in flight per connection (`pipeline 20000 5000 1` is W1's shape).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kcm::{Endpoint, Kind};

const CONNS: usize = 8;

fn main() -> std::io::Result<()> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (total, size, depth) = (arg(1, 400_000), arg(2, 32).max(16), arg(3, 64).max(1));
    let l = TcpListener::bind("127.0.0.1:0")?;
    let ep = Endpoint::new(Kind::Datagram)?;
    let mut clients = Vec::new();
    for _ in 0..CONNS {
        let c = TcpStream::connect(l.local_addr()?)?;
        let (s, _) = l.accept()?;
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        ep.attach(&s, kcm::presets::by_name("thrift").expect("preset"))?;
        clients.push(c);
    }
    ep.set_read_timeout(Some(Duration::from_millis(200)));
    let per_conn = total / CONNS;
    let total = per_conn * CONNS;
    let worker = std::thread::spawn(move || {
        let mut batch = kcm::RecvBatch::new();
        let mut out = kcm::SendBatch::new();
        let mut done = 0usize;
        let mut batches = 0usize;
        while done < total {
            if ep.recv_runs(&mut batch, 256).is_err() {
                continue;
            }
            batches += 1;
            for m in batch.iter() {
                // A 16-byte ack written in place, back to back with the others.
                let ack = out.slot_to(m.conn, 16);
                ack[3] = 12;
                ack[4..].copy_from_slice(&m.data[4..16]);
                done += 1;
            }
            batch.clear();
            // `send_runs` stops early when a connection's queue is full (the rest stay in
            // `out`): send again (a lost ack would stall its client's closed loop for good).
            // The clients never leave early, so an error here is a bug.
            while !out.is_empty() {
                ep.send_runs(&mut out).expect("send_runs");
            }
        }
        eprintln!(
            "{batches} batches, {:.1} messages per batch",
            done as f64 / batches as f64
        );
    });
    let t0 = Instant::now();
    let mut threads = Vec::new();
    for mut c in clients {
        // Closed loop, as `kcm bench`'s W3: `depth` requests in flight, a new one for each ack.
        threads.push(std::thread::spawn(move || {
            // A Thrift frame: 4-byte length, then 12 bytes the ack echoes, then padding.
            let mut req = vec![0u8; size];
            req[..4].copy_from_slice(&((size - 4) as u32).to_be_bytes());
            for (i, b) in req[4..16].iter_mut().enumerate() {
                *b = i as u8 + 1;
            }
            let batch: Vec<u8> = req.iter().copied().cycle().take(depth * size).collect();
            let mut buf = vec![0u8; 16 * 256];
            let (mut sent, mut acked, mut partial) = (depth.min(per_conn), 0, 0);
            c.write_all(&batch[..sent * size]).expect("write");
            while acked < per_conn {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => partial += n,
                }
                let got = partial / 16;
                partial %= 16;
                acked += got;
                let more = got.min(per_conn - sent);
                if more > 0 {
                    c.write_all(&batch[..more * size]).expect("write");
                    sent += more;
                }
            }
        }));
    }
    for t in threads {
        t.join().expect("client");
    }
    let el = t0.elapsed();
    println!("{:.0} msgs/s", total as f64 / el.as_secs_f64());
    let _ = worker.join();
    Ok(())
}
