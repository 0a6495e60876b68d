//! Checklist `kcm-spec.md` §11, "recvmsg" (§2.3–§2.4), the endpoint option SO_RCVTIMEO
//! (§6.2), and the endpoint's pollable descriptor (§1.5), over real loopback sockets.
//!
//! Parts with no test here, and why:
//! - *pending error returned when the queue is empty*: KCM posts an endpoint error only on
//!   internal-consistency failures of its transmit routine (§2.6); nothing outside the crate
//!   can cause one.
//! - *MSG_PEEK reports no EOR/TRUNC flags*: [`kcm::Endpoint::peek`] returns a whole
//!   [`kcm::Message`], which has no flags; that it consumes nothing and counts nothing is
//!   tested.

mod common;

use std::io::{self, ErrorKind, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kcm::{Endpoint, Kind, RecvMeta};
use rustix::event::epoll;

/// An endpoint of `kind` with one Thrift connection; `msgs` are sent through it and the
/// call returns once all are queued on the endpoint.
fn with_messages(kind: Kind, msgs: &[&[u8]]) -> (Endpoint, std::net::TcpStream) {
    let ep = endpoint(kind);
    let (mut client, _) = attach_pair(&ep);
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
    client.write_all(&bytes).expect("write the messages");
    wait_for("the messages to be queued", || {
        queued(&ep) == msgs.len() as u64
    });
    (ep, client)
}

/// §2.3: a blocking receive waits for a message, up to SO_RCVTIMEO, then fails with
/// EAGAIN (`WouldBlock`); a message arriving while it waits is returned.
#[test]
fn blocking_recv_waits_until_the_read_timeout_then_would_block() {
    let (ep, mut client, _server, _conn) = attached();
    let timeout = Duration::from_millis(200);
    ep.set_read_timeout(Some(timeout));
    let start = Instant::now();
    let e = ep.recv().unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(took < TIMEOUT, "took {took:?}");

    ep.set_read_timeout(Some(TIMEOUT));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| ep.recv());
        // Whether or not the waiter is already blocked, the message must reach it.
        client.write_all(&frame(b"worth the wait")).unwrap();
        let m = waiter.join().unwrap().unwrap();
        assert_eq!(&m.data[..], &frame(b"worth the wait")[..]);
    });
}

/// §2.3: a non-blocking endpoint fails at once with EAGAIN when nothing is queued.
#[test]
fn nonblocking_recv_fails_at_once_with_would_block() {
    let (ep, _client, _server, _conn) = attached();
    ep.set_read_timeout(None); // would block forever if non-blocking mode were ignored
    ep.set_nonblocking(true);
    let start = Instant::now();
    let e = ep.recv().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    assert!(start.elapsed() < Duration::from_secs(1));
    let mut out = Vec::new();
    assert_eq!(
        ep.recv_batch(&mut out, 4).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(
        ep.recv_into(&mut [0u8; 8]).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
}

/// §2.3: reading a whole message sets MSG_EOR and no MSG_TRUNC.
#[test]
fn full_read_sets_eor() {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let (ep, _client) = with_messages(kind, &[b"whole"]);
        let mut buf = [0u8; 64];
        let meta = ep.recv_into(&mut buf).unwrap();
        assert_eq!(
            (meta.len, meta.eor, meta.trunc),
            (9, true, false),
            "{kind:?}"
        );
        assert_eq!(&buf[..9], &frame(b"whole")[..]);
    }
}

/// §2.3: on a datagram endpoint a short buffer gets the prefix with MSG_TRUNC and MSG_EOR;
/// the rest of the message is gone (only the copied bytes are counted).
#[test]
fn datagram_short_buffer_truncates_and_discards_the_rest() {
    let (ep, _client) = with_messages(Kind::Datagram, &[b"0123456789abcdef", b"next"]);
    let mut buf = [0u8; 8];
    let meta = ep.recv_into(&mut buf).unwrap();
    assert_eq!((meta.len, meta.eor, meta.trunc), (8, true, true));
    assert_eq!(&buf, &frame(b"0123456789abcdef")[..8]);
    let mut big = [0u8; 64];
    let meta = ep.recv_into(&mut big).unwrap();
    assert_eq!(
        &big[..meta.len],
        &frame(b"next")[..],
        "the rest of the first message was kept"
    );
    let s = ep.stats();
    assert_eq!((s.rx_msgs, s.rx_bytes), (2, 8 + 8));
}

/// §2.4 and decision 2: on a seqpacket endpoint a short buffer gets the prefix without
/// MSG_EOR and the rest stays for the next reads, MSG_EOR marking the last piece.
#[test]
fn seqpacket_short_buffer_keeps_the_rest_for_the_next_read() {
    let (ep, _client) = with_messages(Kind::SeqPacket, &[b"0123456789abcdef", b"next"]);
    let whole = frame(b"0123456789abcdef"); // 20 bytes
    let mut got = Vec::new();
    let mut metas: Vec<RecvMeta> = Vec::new();
    for _ in 0..3 {
        let mut buf = [0u8; 8];
        let meta = ep.recv_into(&mut buf).unwrap();
        got.extend_from_slice(&buf[..meta.len]);
        metas.push(meta);
    }
    let flags: Vec<_> = metas.iter().map(|m| (m.len, m.eor, m.trunc)).collect();
    assert_eq!(
        flags,
        vec![(8, false, false), (8, false, false), (4, true, false)]
    );
    assert_eq!(got, whole);
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"next")[..]);
    let s = ep.stats();
    assert_eq!((s.rx_msgs, s.rx_bytes), (2, 20 + 8));
}

/// §2.3: MSG_PEEK copies the next message without consuming it or counting it.
#[test]
fn peek_copies_without_consuming_or_counting() {
    let (ep, _client) = with_messages(Kind::Datagram, &[b"look", b"then"]);
    for _ in 0..2 {
        assert_eq!(&ep.peek().unwrap().data[..], &frame(b"look")[..]);
    }
    assert_eq!(ep.stats().rx_msgs, 0);
    assert_eq!(ep.stats().rx_bytes, 0);
    assert_eq!(queued(&ep), 2);
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"look")[..]);
    assert_eq!(&ep.peek().unwrap().data[..], &frame(b"then")[..]);
    assert_eq!(ep.stats().rx_msgs, 1);
}

/// A datagram endpoint with seven messages of different sizes queued for the batch receive
/// tests: `(endpoint, client, the messages' frames)`.
fn queued_batch() -> (Endpoint, std::net::TcpStream, Vec<Vec<u8>>) {
    let bodies: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; usize::from(i) * 3]).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let (ep, client) = with_messages(Kind::Datagram, &refs);
    (ep, client, bodies.iter().map(|b| frame(b)).collect())
}

/// §2.3: `recvmmsg` with MSG_WAITFORONE, for a batch receive `take` (one call, returning the
/// messages it took): up to the maximum, waiting only for the first — a call with messages
/// queued returns at once with what is there — counted like single reads; an empty queue
/// fails with `WouldBlock` once the read timeout passes, and a message arriving while a call
/// waits is returned.
fn check_waits_only_for_the_first(
    take: impl Fn(&Endpoint, usize) -> io::Result<Vec<Vec<u8>>> + Sync,
) {
    let (ep, mut client, frames) = queued_batch();
    // Long enough that a call waiting for more than its first message would show.
    ep.set_read_timeout(Some(TIMEOUT));
    let mut got = take(&ep, 3).expect("the first three");
    assert_eq!(got.len(), 3);
    let start = Instant::now();
    let rest = take(&ep, 10).expect("the rest");
    assert!(start.elapsed() < TIMEOUT / 2, "waited for more than one");
    assert_eq!(rest.len(), 4, "should not wait for more than one");
    got.extend(rest);
    assert_eq!(got, frames);
    assert_eq!(ep.stats().rx_msgs, 7);
    let total: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(ep.stats().rx_bytes, total as u64);

    ep.set_read_timeout(Some(Duration::from_millis(50)));
    let e = take(&ep, 4).expect_err("an empty queue past the timeout");
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    ep.set_read_timeout(Some(TIMEOUT));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| take(&ep, 4));
        client.write_all(&frame(b"late")).expect("write");
        let got = waiter
            .join()
            .expect("the waiter")
            .expect("the late message");
        assert_eq!(got, [frame(b"late")]);
    });
}

#[test]
fn recv_batch_takes_up_to_max_waiting_only_for_the_first() {
    check_waits_only_for_the_first(|ep, max| {
        let mut out = Vec::new();
        let n = ep.recv_batch(&mut out, max)?;
        assert_eq!(n, out.len());
        Ok(out.iter().map(|m| m.data.to_vec()).collect())
    });
}

/// `recv_runs` keeps the same contract as `recv_batch`, and its batch: is added to until
/// cleared, tells each message's connection, and lends messages that `to_message` (a
/// zero-copy `Bytes`) keeps past `clear`; a failed call adds nothing.
#[test]
fn recv_runs_takes_what_recv_batch_would() {
    check_waits_only_for_the_first(|ep, max| {
        let mut batch = kcm::RecvBatch::new();
        let n = ep.recv_runs(&mut batch, max)?;
        assert_eq!(n, batch.len());
        Ok(batch.drain().map(|m| m.data.to_vec()).collect())
    });

    let (ep, _client, frames) = queued_batch();
    let mut batch = kcm::RecvBatch::new();
    assert_eq!(ep.recv_runs(&mut batch, 3).unwrap(), 3);
    assert_eq!(batch.len(), 3);
    let kept = batch.iter().nth(1).unwrap().to_message();
    assert_eq!(ep.recv_runs(&mut batch, 10).unwrap(), 4);
    let got: Vec<Vec<u8>> = batch.iter().map(|m| m.data.to_vec()).collect();
    assert_eq!(got, frames);
    let conn = batch.iter().next().unwrap().conn;
    assert!(batch.iter().all(|m| m.conn == conn));
    // A call that fails adds nothing and takes nothing away.
    ep.set_read_timeout(Some(Duration::from_millis(50)));
    assert_eq!(
        ep.recv_runs(&mut batch, 4).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(batch.len(), frames.len());
    batch.clear();
    assert!(batch.is_empty() && batch.iter().next().is_none());
    assert_eq!((&kept.data[..], kept.conn), (&frames[1][..], conn));
}

/// Many connections' pipelined passes taken as runs: every message arrives once, and in
/// order per connection.
#[test]
fn recv_runs_keeps_each_connections_order_across_many_passes() {
    const CONNS: usize = 4;
    const PER_CONN: u32 = 2_000;
    let ep = endpoint(Kind::Datagram);
    let mut clients = Vec::new();
    for _ in 0..CONNS {
        clients.push(attach_pair(&ep).0);
    }
    std::thread::scope(|s| {
        for mut c in clients.drain(..) {
            s.spawn(move || {
                // Small messages written in uneven chunks, so passes end mid-message.
                let wire: Vec<u8> = (0..PER_CONN)
                    .flat_map(|i| frame(&i.to_be_bytes()))
                    .collect();
                for chunk in wire.chunks(997) {
                    c.write_all(chunk).unwrap();
                }
            });
        }
        let mut next = std::collections::HashMap::new();
        let mut batch = kcm::RecvBatch::new();
        let mut total = 0;
        while total < CONNS * PER_CONN as usize {
            total += ep.recv_runs(&mut batch, 100).unwrap();
            for m in batch.iter() {
                let i = u32::from_be_bytes(m.data[4..8].try_into().unwrap());
                let want = next.entry(m.conn).or_insert(0u32);
                assert_eq!(i, *want, "order on {:?}", m.conn);
                *want += 1;
            }
            batch.clear();
        }
        assert_eq!(next.len(), CONNS);
        assert!(next.values().all(|&n| n == PER_CONN));
    });
}

/// §6.2: a read timeout below a millisecond is kept, not rounded up to one, where the
/// runtime can (`kcm::sub_millisecond_timeouts`; Linux 5.11 and later): of 15 receives with a
/// 200 µs timeout, each waits at least that long and the median well under a millisecond
/// (30 runs next to 4–6 busy loops on 2 CPUs stayed under it). Elsewhere only the lower bound
/// is checked.
#[test]
fn a_sub_millisecond_read_timeout_is_kept() {
    let (ep, _client, _server, _conn) = attached();
    ep.set_read_timeout(Some(Duration::from_micros(200)));
    let mut took: Vec<Duration> = (0..15)
        .map(|_| {
            let start = Instant::now();
            let e = ep.recv().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
            start.elapsed()
        })
        .collect();
    took.sort();
    assert!(took[0] >= Duration::from_micros(200), "{took:?}");
    if kcm::sub_millisecond_timeouts() {
        assert!(took[7] < Duration::from_micros(900), "{took:?}");
    }
}

/// The readiness an epoll instance reports for one descriptor within `timeout`.
fn readiness(ep_fd: &impl AsFd, timeout: Duration) -> epoll::EventFlags {
    let mut evs: Vec<epoll::Event> = Vec::with_capacity(4);
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    epoll::wait(ep_fd, rustix::buffer::spare_capacity(&mut evs), Some(&ts)).expect("epoll_wait");
    evs.iter()
        .fold(epoll::EventFlags::empty(), |acc, e| acc | e.flags)
}

fn epoll_on(ep: &Endpoint, flags: epoll::EventFlags) -> std::os::fd::OwnedFd {
    let epfd = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
    epoll::add(&epfd, ep.as_fd(), epoll::EventData::new_u64(1), flags).expect("epoll_ctl");
    epfd
}

/// §1.5: the endpoint's descriptor is readable in an application's own (level-triggered)
/// epoll exactly while a message is queued; the engine thread reads the connection.
#[test]
fn poll_fd_is_readable_only_while_a_message_is_queued() {
    let (ep, mut client, _server, _conn) = attached();
    let epfd = epoll_on(&ep, epoll::EventFlags::IN);
    assert!(!readiness(&epfd, Duration::ZERO).contains(epoll::EventFlags::IN));

    client
        .write_all(&[frame(b"one"), frame(b"two")].concat())
        .unwrap();
    assert!(
        readiness(&epfd, TIMEOUT).contains(epoll::EventFlags::IN),
        "no readiness for a message"
    );
    assert_eq!(queued(&ep), 2, "readable before both messages were queued?");
    ep.set_nonblocking(true); // readiness promises a message: recv must not need to wait
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"one")[..]);
    assert!(
        readiness(&epfd, Duration::ZERO).contains(epoll::EventFlags::IN),
        "one is still queued"
    );
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"two")[..]);
    assert!(
        !readiness(&epfd, Duration::ZERO).contains(epoll::EventFlags::IN),
        "readable while empty"
    );
}

/// §1.5, decision of §13 question 4: the descriptor is writable exactly while a send would
/// not block (queued bytes below SO_SNDBUF).
#[test]
fn poll_fd_is_writable_only_while_a_send_would_not_block() {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(16).unwrap();
    let epfd = epoll_on(&ep, epoll::EventFlags::OUT);
    assert!(readiness(&epfd, Duration::ZERO).contains(epoll::EventFlags::OUT));

    // No connection: the message stays queued, and 24 bytes ≥ 16 fill the buffer.
    ep.send(Bytes::from(frame(&[5u8; 20]))).unwrap();
    assert!(
        !readiness(&epfd, Duration::ZERO).contains(epoll::EventFlags::OUT),
        "writable while full"
    );

    // A connection takes the message out: writable again, although no send ever failed.
    let (mut client, server) = tcp_pair();
    ep.attach(&server, thrift()).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), frame(&[5u8; 20]));
    assert!(
        readiness(&epfd, TIMEOUT).contains(epoll::EventFlags::OUT),
        "not writable after the queue drained"
    );
    ep.send(Bytes::from(frame(b"x"))).unwrap();

    // Not writable means a non-blocking send fails, and it stays not writable.
    let full = endpoint(Kind::Datagram);
    full.set_send_buffer_size(16).unwrap();
    let epfd = epoll_on(&full, epoll::EventFlags::OUT);
    full.send(Bytes::from(frame(&[5u8; 20]))).unwrap();
    full.set_nonblocking(true);
    assert_eq!(
        full.send(Bytes::from(frame(b"x"))).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert!(!readiness(&epfd, Duration::ZERO).contains(epoll::EventFlags::OUT));
}

/// §1.5: an application that waits in its own epoll on the endpoint's descriptor and takes
/// what is queued with a batch receive (which stops at the queue's end, without the
/// `WouldBlock` that a loop of single receives ends on) reads no connection while it waits:
/// the engine must read the next arrival promptly, not after the long window it leaves to
/// threads that are all busy (20 ms). Not a performance figure: the bound is half that window,
/// on the median of 8 (the engine reads within a few hundred microseconds).
#[test]
fn a_poll_driven_batch_receiver_is_not_left_waiting_for_the_long_window() {
    let (ep, mut client, _server, _conn) = attached();
    ep.set_nonblocking(true);
    let epfd = epoll_on(&ep, epoll::EventFlags::IN);
    let mut took = Vec::new();
    for i in 0..8u8 {
        client.write_all(&frame(&[i])).unwrap();
        let start = Instant::now();
        assert!(
            readiness(&epfd, TIMEOUT).contains(epoll::EventFlags::IN),
            "no readiness for message {i}"
        );
        took.push(start.elapsed());
        let mut got = Vec::new();
        assert_eq!(ep.recv_batch(&mut got, 16).unwrap(), 1);
    }
    took.sort();
    assert!(took[4] < Duration::from_millis(10), "{took:?}");
}
