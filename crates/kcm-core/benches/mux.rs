//! Cost of the multiplexor core ([`MuxCore`]) per message, with no sockets and no lock.
//!
//! - `rx_recv`: two connections each hand a 64-message read pass to the mux (`rx_pass`); the
//!   passes are steered to the two endpoints of the eligible FIFO in turn; then both endpoints
//!   `recv` every message. 128 messages an iteration.
//! - `rx_run_recv_many` / `rx_run_recv_runs`: the same, with each pass handed over as one run
//!   (`rx_pass_runs`, as the runtime does) and taken in one call per endpoint: as a `Bytes`
//!   per message (`recv_many`, behind `Endpoint::recv_batch`), or as runs whose messages are
//!   read in place (`recv_runs`, behind `Endpoint::recv_runs`).
//! - `send_transmit` / `send_to_transmit`: one endpoint sends 64 messages (unaddressed, or
//!   addressed to the connection as `Endpoint::send_to` does), then one `poll_transmit` takes
//!   them all as one vectored write and `handle_transmit(Written(len))` reports it complete.
//!   64 messages an iteration.
//! - `send_batch_transmit` / `send_runs_transmit`: the same 64 messages addressed to the
//!   connection in one call, as borrowed slices (`send_batch`, behind `Endpoint::send_batch_to`)
//!   or written back to back into a `SendBatch` (`send_runs`, behind `Endpoint::send_runs`);
//!   both copy them into one run.
//! - `request_reply`: a server's whole path through the core for one request, 64 times an
//!   iteration: `rx_pass` of one message (preferring the endpoint, as the thread driving the
//!   connection does), `recv`, `send` of the reply addressed to the request's connection,
//!   `poll_transmit`, `handle_transmit`. Its time per element is the core's ns per request.
//! - `request_reply_10k_conns`: the same with 10,000 connections attached and each request on
//!   one drawn at random: the core's cost per request must not grow with the connections.
//! - `attach_unattach_10k_conns`: 10,000 connections attached to a new mux, then unattached;
//!   its time per element is the cost of one attach and one unattach.
//!
//! Every iteration also drains `poll_event`, as the runtime does after each call under the
//! lock. Messages are 32-byte Thrift frames (W3); they are `Bytes` clones, so no copying.
//!
//! Run: `cargo bench -p kcm-core --bench mux`.

mod common;

use std::hint::black_box;

use bytes::Bytes;
use criterion::Throughput;
use kcm_core::mux::{ConnectionId, EndpointId, Kind, MuxCore, SendBatch, SendFlags, TxResult};
use kcm_core::MsgRun;

/// Messages in one read pass or one send burst.
const PASS: usize = 64;

/// Connections attached for `request_reply_10k_conns`.
const MANY_CONNS: usize = 10_000;

/// Takes every pending event, as `Shared::drain` does in the runtime.
fn drain(mux: &mut MuxCore) -> usize {
    std::iter::from_fn(|| mux.poll_event()).count()
}

/// Receives everything queued on `ep`; returns the message count.
fn recv_all(mux: &mut MuxCore, ep: EndpointId) -> usize {
    std::iter::from_fn(|| mux.recv(ep, usize::MAX, false))
        .map(black_box)
        .count()
}

/// Sends `PASS` messages on `ep`, optionally addressed, then writes them as one transmit.
fn send_burst(mux: &mut MuxCore, ep: EndpointId, msg: &Bytes, to: Option<ConnectionId>) {
    for _ in 0..PASS {
        mux.send(ep, msg.clone(), SendFlags::default(), to)
            .expect("room in the send buffer");
    }
    let len = write_next(mux, ep);
    debug_assert_eq!(len, PASS * msg.len());
}

/// Takes the endpoint's next transmit and reports it written whole, as the runtime does: the
/// written slices let go before the report, the transmit given back after it. Returns its
/// length.
fn write_next(mux: &mut MuxCore, ep: EndpointId) -> usize {
    let mut tx = mux.poll_transmit(ep).expect("a transmit");
    let len = tx.len;
    tx.bufs.clear();
    mux.handle_transmit(ep, tx.conn, TxResult::Written(len));
    mux.recycle(tx);
    drain(mux);
    len
}

/// One request through the core, as the thread driving its connection handles it: `rx_pass`
/// of the request preferring the endpoint, `recv`, `send` of the reply addressed to the
/// request's connection, and the reply's write.
fn request_reply(
    mux: &mut MuxCore,
    ep: EndpointId,
    conn: ConnectionId,
    request: &Bytes,
    reply: &Bytes,
) {
    mux.rx_pass(conn, [request.clone()], Some(ep));
    let read = mux.recv(ep, usize::MAX, false).expect("the request");
    black_box(&read.data);
    mux.send(ep, reply.clone(), SendFlags::default(), Some(read.conn))
        .expect("room in the send buffer");
    write_next(mux, ep);
}

fn main() {
    let mut c = common::criterion();
    let request = Bytes::from(common::thrift_stream(32, 1));
    let reply = Bytes::from(common::thrift_stream(16, 1));
    let mut g = c.benchmark_group("mux");
    common::short(&mut g);

    // Receive: 2 connections, 2 endpoints.
    let (mut mux, ep0) = MuxCore::new(Kind::Datagram).expect("new mux");
    let ep1 = mux.add_endpoint().expect("second endpoint");
    let conns = [mux.attach(), mux.attach()];
    drain(&mut mux);
    let rx_iter = |mux: &mut MuxCore| {
        for conn in conns {
            let out = mux.rx_pass(conn, std::iter::repeat_n(request.clone(), PASS), None);
            debug_assert_eq!(out.delivered, PASS);
        }
        let n = recv_all(mux, ep0) + recv_all(mux, ep1);
        drain(mux);
        n
    };
    // Both endpoints must get one pass each, and nothing may be parked.
    assert_eq!(rx_iter(&mut mux), 2 * PASS);
    assert_eq!(
        mux.endpoint_stats(ep0).map(|s| s.rx_msgs),
        Some(PASS as u64)
    );
    assert_eq!(
        mux.endpoint_stats(ep1).map(|s| s.rx_msgs),
        Some(PASS as u64)
    );
    g.throughput(Throughput::Elements(2 * PASS as u64));
    g.bench_function("rx_recv", |b| b.iter(|| rx_iter(&mut mux)));

    // Receive in runs: the same passes as one run each, taken in one call per endpoint.
    let pass_buf = Bytes::from(common::thrift_stream(32, PASS));
    let run = MsgRun::new(pass_buf, vec![request.len(); PASS], 0);
    let run_iter = |mux: &mut MuxCore, by_runs: bool| {
        for conn in conns {
            let out = mux.rx_pass_runs(conn, [run.clone()], None);
            debug_assert_eq!(out.delivered, PASS);
        }
        let mut n = 0;
        for ep in [ep0, ep1] {
            if by_runs {
                mux.recv_runs(ep, usize::MAX, |_, run| {
                    for m in run.iter() {
                        black_box(m.data());
                        n += 1;
                    }
                });
            } else {
                mux.recv_many(ep, usize::MAX, |data, _| {
                    black_box(data);
                    n += 1;
                });
            }
        }
        drain(mux);
        n
    };
    let taken = |mux: &MuxCore| [ep0, ep1].map(|ep| mux.endpoint_stats(ep).map(|s| s.rx_msgs));
    for (name, by_runs) in [("rx_run_recv_many", false), ("rx_run_recv_runs", true)] {
        // Again one pass for each endpoint, nothing parked.
        let before = taken(&mux);
        assert_eq!(run_iter(&mut mux, by_runs), 2 * PASS, "{name}");
        let after = taken(&mux);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.zip(*b).map(|(a, b)| a - b), Some(PASS as u64), "{name}");
        }
        g.bench_function(name, |b| b.iter(|| run_iter(&mut mux, by_runs)));
    }

    // Transmit: 1 endpoint, 1 connection.
    g.throughput(Throughput::Elements(PASS as u64));
    for (name, addressed) in [("send_transmit", false), ("send_to_transmit", true)] {
        let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("new mux");
        let conn = mux.attach();
        drain(&mut mux);
        let to = addressed.then_some(conn);
        send_burst(&mut mux, ep, &reply, to);
        assert_eq!(mux.stats().tx_msgs, PASS as u64);
        assert_eq!(mux.tx_queued(ep), Some((0, 0)), "{name} drains its queue");
        g.bench_function(name, |b| {
            b.iter(|| send_burst(&mut mux, ep, black_box(&reply), to))
        });
    }

    // The same 64 addressed replies as one batch: borrowed slices (`send_batch`, behind
    // `Endpoint::send_batch_to`), or written back to back into a `SendBatch` (`send_runs`).
    for (name, runs) in [("send_batch_transmit", false), ("send_runs_transmit", true)] {
        let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("new mux");
        let conn = mux.attach();
        drain(&mut mux);
        let mut batch = SendBatch::new();
        let mut burst = |mux: &mut MuxCore, reply: &[u8]| {
            let sent = if runs {
                for _ in 0..PASS {
                    batch.push_to(conn, reply);
                }
                mux.send_runs(ep, &mut batch).0
            } else {
                let mut msgs = (0..PASS).map(|_| (Some(conn), reply));
                mux.send_batch(ep, &mut msgs).0
            };
            debug_assert_eq!(sent, PASS);
            write_next(mux, ep);
        };
        burst(&mut mux, &reply);
        assert_eq!(mux.stats().tx_msgs, PASS as u64);
        assert_eq!(mux.tx_queued(ep), Some((0, 0)), "{name} drains its queue");
        g.bench_function(name, |b| b.iter(|| burst(&mut mux, black_box(&reply))));
    }

    // Request -> reply through the core, one message at a time.
    let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("new mux");
    let conn = mux.attach();
    drain(&mut mux);
    let cycle = |mux: &mut MuxCore| {
        for _ in 0..PASS {
            request_reply(mux, ep, conn, &request, &reply);
        }
    };
    cycle(&mut mux);
    assert_eq!(mux.stats().tx_msgs, PASS as u64);
    assert_eq!(mux.endpoint_stats(ep).map(|s| s.rx_msgs), Some(PASS as u64));
    g.bench_function("request_reply", |b| b.iter(|| cycle(&mut mux)));

    // The same with many connections attached, each request on a connection drawn at random
    // (a server answers its connections in the order their requests come, not in the order
    // they became free to write).
    let (mut mux, ep) = MuxCore::new(Kind::Datagram).expect("new mux");
    let conns: Vec<ConnectionId> = (0..MANY_CONNS).map(|_| mux.attach()).collect();
    drain(&mut mux);
    let mut seed = 0x9e37_79b9_u64;
    let mut cycle_many = |mux: &mut MuxCore| {
        for _ in 0..PASS {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let conn = conns[(seed >> 33) as usize % conns.len()];
            request_reply(mux, ep, conn, &request, &reply);
        }
    };
    cycle_many(&mut mux);
    g.bench_function("request_reply_10k_conns", |b| {
        b.iter(|| cycle_many(&mut mux))
    });

    // Attaching and unattaching many connections: each must cost the same, not grow with the
    // connections already attached.
    g.throughput(Throughput::Elements(MANY_CONNS as u64));
    g.bench_function("attach_unattach_10k_conns", |b| {
        b.iter(|| {
            let (mut mux, _) = MuxCore::new(Kind::Datagram).expect("new mux");
            let ids: Vec<ConnectionId> = (0..MANY_CONNS).map(|_| mux.attach()).collect();
            for id in ids {
                let _ = mux.unattach(id, Default::default());
            }
            drain(&mut mux)
        })
    });
    g.finish();
    c.final_summary();
}
