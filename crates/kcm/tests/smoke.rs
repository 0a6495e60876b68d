//! End-to-end smoke test: an echo server on two endpoints over one real TCP connection.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{clone_of, endpoint, frame, read_frame, tcp_pair, thrift};
use kcm::Kind;

/// The body of request `i`: its length and filler byte (every 300th body is empty).
fn body(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; i % 300]
}

#[test]
fn echo_roundtrip_many_messages_two_workers() {
    let ep = endpoint(Kind::Datagram);
    let ep2 = clone_of(&ep);
    let (mut client, server) = tcp_pair();
    ep.attach(&server, thrift()).unwrap();
    drop(server);
    let n = 2000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for e in [ep, ep2] {
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            e.set_read_timeout(Some(Duration::from_millis(50)));
            let mut count = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match e.recv() {
                    Ok(m) => {
                        e.send_to(m.conn, m.data).unwrap();
                        count += 1;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(err) => panic!("{err}"),
                }
            }
            (count, e)
        }));
    }
    let mut reader = client.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..n {
            client.write_all(&frame(&body(i))).unwrap();
        }
        client
    });
    // Replies may be reordered across workers, so compare them sorted: every request is
    // echoed exactly once, whole.
    let mut got: Vec<Vec<u8>> = (0..n)
        .map(|i| read_frame(&mut reader).unwrap_or_else(|e| panic!("reply {i}: {e}")))
        .collect();
    let mut want: Vec<Vec<u8>> = (0..n).map(|i| frame(&body(i))).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert!(got == want, "the replies are not the requests, each once");
    let _client = writer.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut eps = Vec::new();
    for w in workers {
        let (c, e) = w.join().unwrap();
        total += c;
        eps.push(e);
    }
    assert_eq!(total, n);
    let s = eps[0].mux_stats();
    assert_eq!(s.rx_msgs, n as u64);
    assert_eq!(s.tx_msgs, n as u64);
}
