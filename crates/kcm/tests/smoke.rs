//! End-to-end smoke test: an echo server on two endpoints over one real TCP connection.
#![allow(clippy::unwrap_used)] // test code: a failed setup should panic

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use kcm::{Endpoint, Kind};

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn echo_roundtrip_many_messages_two_workers() {
    let ep = Endpoint::new(Kind::Datagram).unwrap();
    let ep2 = ep.clone_endpoint().unwrap();
    let (mut client, server) = pair();
    ep.attach(&server, kcm::presets::by_name("thrift").unwrap())
        .unwrap();
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
            let body = vec![(i % 251) as u8; i % 300];
            client.write_all(&frame(&body)).unwrap();
        }
        client
    });
    for i in 0..n {
        let mut hdr = [0u8; 4];
        reader.read_exact(&mut hdr).unwrap();
        let len = u32::from_be_bytes(hdr) as usize;
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        // Replies may be reordered across workers; check framing and content shape.
        assert!(len < 300, "message {i}: len {len}");
        assert!(body
            .iter()
            .all(|&b| b == body.first().copied().unwrap_or(0)));
    }
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
    eprintln!("{}", eps[0].proc_kcm());
    eprintln!("{}", eps[0].proc_kcm_stats());
}
