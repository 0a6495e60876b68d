//! Checklist "Transmit scheduling" (`kcm-spec.md` §11; semantics in §5.3, §5.5, §3.2, §3.4),
//! plus the send-side lines about failures after a message was queued and addressed mode, over
//! real loopback TCP connections.
//!
//! A connection "whose peer does not read" is made with small kernel buffers on both sides, so
//! a message of a megabyte is always left half written; the engine thread then finishes it on
//! write space once the peer reads (or something aborts it).

mod common;

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{
    assert_errno, assert_silent, attach_narrow, attach_pair, endpoint, errno, frame, read_frame,
    set_linger_zero, wait_for, wait_for_event, TIMEOUT,
};
use kcm::{ConnectionEventKind, ConnectionId, Endpoint, Kind};

const ENOTCONN: i32 = rustix::io::Errno::NOTCONN.raw_os_error();

/// A framed message of `len` body bytes that says who sent it and is filled with a byte
/// derived from that, so a truncated or mixed-up message shows.
fn msg(tag: u8, seq: u8, len: usize) -> Vec<u8> {
    let mut body = vec![tag, seq];
    body.resize(len.max(2), tag.wrapping_mul(7) ^ seq);
    frame(&body)
}

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// Reads whatever arrives until the stream stays quiet, and returns how many bytes that was.
fn drain_bytes(peer: &mut TcpStream) -> usize {
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set_read_timeout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            // A connection aborted under a half-written message may be reset.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    peer.set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    total
}

fn tx_of(ep: &Endpoint, c: ConnectionId) -> kcm::ConnStats {
    ep.connection_stats(c).expect("connection still attached")
}

/// Resets the peer of a connection (RST, not FIN) and waits until kcm has seen it on the
/// receive side, so that the next write on the connection fails for certain.
fn reset_peer(ep: &Endpoint, peer: TcpStream, conn: ConnectionId) {
    set_linger_zero(&peer);
    drop(peer);
    wait_for_event(ep, conn, "the reset seen by the receive side", |k| {
        matches!(
            k,
            ConnectionEventKind::ReadError(_) | ConnectionEventKind::PeerClosed
        )
    });
}

#[test]
fn connections_are_handed_out_fifo_so_bursts_go_round_robin() {
    let ep = endpoint(Kind::Datagram);
    let mut pairs: Vec<(TcpStream, ConnectionId)> = (0..3).map(|_| attach_pair(&ep)).collect();
    // One burst (here one message) at a time: each takes the head of the available FIFO and
    // puts it back at the tail, so the connections take turns in attach order.
    for i in 0..9u8 {
        let m = msg(1, i, 10 + usize::from(i));
        ep.send(b(&m)).unwrap();
        wait_for("the message is written", || {
            ep.mux_stats().tx_msgs == u64::from(i) + 1
        });
        let k = usize::from(i) % 3;
        assert_eq!(
            read_frame(&mut pairs[k].0).unwrap(),
            m,
            "message {i} not on connection {k}"
        );
    }
    for (peer, c) in &mut pairs {
        assert_silent(peer, Duration::from_millis(20));
        let s = tx_of(&ep, *c).tx;
        assert_eq!((s.tx_msgs, s.reserved, s.unreserved), (3, 3, 3), "{c}");
    }
}

#[test]
fn endpoints_waiting_for_a_connection_are_served_in_fifo_order() {
    let a = endpoint(Kind::Datagram);
    let others: Vec<Endpoint> = (0..3).map(|_| a.clone_endpoint().unwrap()).collect();
    // Start waiting in the order 2, 0, 1 (not creation order).
    let order = [2usize, 0, 1];
    for (n, &k) in order.iter().enumerate() {
        others[k].send(b(&msg(k as u8, 0, 20))).unwrap();
        assert_eq!(
            a.mux_stats().tx_msgs,
            0,
            "sent {n} with no connection attached"
        );
    }
    // One connection: it serves the first waiter, which hands it to the next, and so on.
    let (mut peer, _) = attach_pair(&a);
    for &k in &order {
        assert_eq!(
            read_frame(&mut peer).unwrap(),
            msg(k as u8, 0, 20),
            "endpoint {k} out of turn"
        );
    }
}

#[test]
fn endpoint_keeps_its_connection_until_its_queue_is_empty_then_returns_it_to_the_tail() {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(8 << 20).unwrap();
    let (mut slow, c0) = attach_narrow(&ep);
    let (mut fast, c1) = attach_pair(&ep);

    let big = msg(2, 0, 1 << 20);
    ep.send(b(&big)).unwrap();
    assert_eq!(
        ep.mux_stats().tx_msgs,
        0,
        "a megabyte cannot fit the narrow connection"
    );
    // Queued behind the half-written message: they must follow it on the same connection,
    // although the other one is idle.
    let small: Vec<Vec<u8>> = (1..4).map(|i| msg(2, i, 100)).collect();
    for m in &small {
        ep.send(b(m)).unwrap();
    }
    assert_silent(&mut fast, Duration::from_millis(50));
    assert_eq!(tx_of(&ep, c1).tx.reserved, 0);

    for want in std::iter::once(&big).chain(&small) {
        assert_eq!(&read_frame(&mut slow).unwrap(), want);
    }
    wait_for("the queue drained", || tx_of(&ep, c0).tx.unreserved == 1);
    let s = tx_of(&ep, c0).tx;
    assert_eq!(
        (s.tx_msgs, s.reserved),
        (4, 1),
        "one reservation for the whole queue"
    );

    // c0 went back to the tail of the available FIFO, behind c1.
    let next = msg(3, 0, 10);
    ep.send(b(&next)).unwrap();
    assert_eq!(read_frame(&mut fast).unwrap(), next);
    let after = msg(3, 1, 10);
    ep.send(b(&after)).unwrap();
    assert_eq!(read_frame(&mut slow).unwrap(), after);
}

#[test]
fn partial_write_keeps_the_reservation_and_resumes_on_write_space_without_the_sender() {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(8 << 20).unwrap();
    let (mut peer, conn) = attach_narrow(&ep);
    let msgs: Vec<Vec<u8>> = (0..40)
        .map(|i| msg(5, i, 50_000 + usize::from(i) * 97))
        .collect();
    for m in &msgs {
        ep.send(b(m)).unwrap();
    }
    assert!(
        ep.mux_stats().tx_msgs < 10,
        "the socket should be full by now"
    );
    // Until the socket filled, each message went out at once and gave the connection back;
    // from here on the endpoint must keep holding it.
    let reserved = tx_of(&ep, conn).tx.reserved;
    // From here on nobody calls the endpoint: the engine must finish on write space alone.
    for (i, want) in msgs.iter().enumerate() {
        assert_eq!(&read_frame(&mut peer).unwrap(), want, "message {i}");
    }
    wait_for("all written", || ep.mux_stats().tx_msgs == 40);
    let s = tx_of(&ep, conn).tx;
    assert_eq!(
        s.reserved, reserved,
        "the reservation must survive every full socket"
    );
    assert_eq!(s.tx_aborts, 0);
}

#[test]
fn hard_write_error_makes_the_connection_tx_dead_and_retries_the_whole_message_elsewhere() {
    let ep = endpoint(Kind::Datagram);
    let (dead_peer, dead) = attach_pair(&ep); // first in the available FIFO
    let (mut peer, live) = attach_pair(&ep);
    reset_peer(&ep, dead_peer, dead);

    let m = msg(6, 0, 3000);
    assert_eq!(ep.send(b(&m)).unwrap(), m.len());
    assert_eq!(
        read_frame(&mut peer).unwrap(),
        m,
        "retried whole on the other connection"
    );
    let seen = wait_for_event(&ep, dead, "the transmit abort", |k| {
        *k == ConnectionEventKind::TxAborted
    });
    let abort = seen
        .iter()
        .find(|e| e.conn == dead && e.kind == ConnectionEventKind::TxAborted);
    assert_eq!(abort.map(|e| e.kind.errno()), Some(errno::EPIPE));
    assert_eq!(
        ep.connection_error(dead).map(|e| e.raw_os_error()),
        Some(Some(errno::EPIPE))
    );
    assert_eq!(tx_of(&ep, dead).tx.tx_aborts, 1);
    assert_eq!(ep.mux_stats().tx_retries, 1);

    // Dead for good: never chosen again, and addressing it fails with EPIPE.
    for i in 1..5 {
        let m = msg(6, i, 100);
        ep.send(b(&m)).unwrap();
        assert_eq!(read_frame(&mut peer).unwrap(), m);
    }
    assert_errno(ep.send_to(dead, b(&msg(6, 9, 1))), errno::EPIPE);
    let s = tx_of(&ep, dead).tx;
    assert_eq!((s.tx_msgs, s.tx_aborts), (0, 1));
    assert_eq!(ep.mux_stats().tx_retries, 1);
    assert_eq!(tx_of(&ep, live).tx.tx_msgs, 5);
}

#[test]
fn transmit_failure_after_queueing_never_changes_the_send_result() {
    let ep = endpoint(Kind::Datagram);
    let (dead_peer, dead) = attach_pair(&ep);
    reset_peer(&ep, dead_peer, dead);

    // The only connection fails under the message: send() still reports it accepted...
    let m = msg(7, 0, 500);
    assert_eq!(ep.send(b(&m)).unwrap(), m.len());
    wait_for_event(&ep, dead, "the transmit abort", |k| {
        *k == ConnectionEventKind::TxAborted
    });
    assert_eq!(
        ep.take_error().map(|e| e.to_string()),
        None,
        "nothing is posted on the endpoint"
    );
    // ... and it is retried whole on the next connection attached.
    let (mut peer, _) = attach_pair(&ep);
    assert_eq!(read_frame(&mut peer).unwrap(), m);
    assert_eq!(ep.mux_stats().tx_retries, 1);
    assert_eq!(ep.mux_stats().tx_msgs, 1);
}

#[test]
fn messages_queue_while_no_connection_is_attached_and_go_out_once_one_is() {
    let ep = endpoint(Kind::Datagram);
    let msgs: Vec<Vec<u8>> = (0..10).map(|i| msg(8, i, 50 * usize::from(i))).collect();
    for m in &msgs {
        assert_eq!(ep.send(b(m)).unwrap(), m.len());
    }
    assert_eq!(ep.stats().tx_msgs, 10);
    assert_eq!(ep.mux_stats().tx_msgs, 0);
    let (mut peer, _) = attach_pair(&ep);
    for want in &msgs {
        assert_eq!(&read_frame(&mut peer).unwrap(), want);
    }
}

#[test]
fn closing_an_endpoint_drops_its_unsent_messages() {
    let ep = endpoint(Kind::Datagram);
    let doomed = ep.clone_endpoint().unwrap();
    for i in 0..3 {
        doomed.send(b(&msg(9, i, 100))).unwrap();
    }
    let kept = msg(10, 0, 100);
    ep.send(b(&kept)).unwrap();
    drop(doomed);
    let (mut peer, _) = attach_pair(&ep);
    assert_eq!(read_frame(&mut peer).unwrap(), kept);
    assert_silent(&mut peer, Duration::from_millis(100));
    assert_eq!(ep.mux_stats().tx_msgs, 1);
}

#[test]
fn closing_an_endpoint_aborts_transmit_on_its_reserved_connection() {
    let ep = endpoint(Kind::Datagram);
    let doomed = ep.clone_endpoint().unwrap();
    let (mut slow, c0) = attach_narrow(&ep);
    let (mut fast, _) = attach_pair(&ep);
    let big = msg(11, 0, 1 << 20);
    doomed.send(b(&big)).unwrap();
    assert_eq!(ep.mux_stats().tx_msgs, 0, "half written");
    drop(doomed);

    wait_for_event(&ep, c0, "the transmit abort", |k| {
        *k == ConnectionEventKind::TxAborted
    });
    assert_eq!(tx_of(&ep, c0).tx.tx_aborts, 1);
    // The half-written message is not finished (the stream is unusable now) ...
    let got = drain_bytes(&mut slow);
    assert!(
        got < big.len(),
        "the dropped message was still sent in full ({got} bytes)"
    );
    // ... and the connection never carries anything again.
    let m = msg(12, 0, 100);
    ep.send(b(&m)).unwrap();
    assert_eq!(read_frame(&mut fast).unwrap(), m);
    assert_eq!(tx_of(&ep, c0).tx.tx_msgs, 0);
    assert_eq!(
        ep.mux_stats().tx_retries,
        0,
        "a closed endpoint's message is not retried"
    );
}

#[test]
fn unattach_while_a_big_message_is_half_written_retries_it_whole_elsewhere() {
    let ep = endpoint(Kind::Datagram);
    let (mut slow, c0) = attach_narrow(&ep);
    let (mut fast, _) = attach_pair(&ep);
    let big = msg(13, 0, 1 << 20);
    ep.send(b(&big)).unwrap();
    assert_eq!(ep.mux_stats().tx_msgs, 0, "half written");

    ep.unattach_id(c0).unwrap();
    assert_eq!(
        read_frame(&mut fast).unwrap(),
        big,
        "retried whole on the other connection"
    );
    let s = ep.mux_stats();
    assert_eq!((s.tx_retries, s.psock_unattach_rsvd, s.tx_msgs), (1, 1, 1));
    assert!(ep
        .take_events()
        .iter()
        .any(|e| e.conn == c0 && e.kind == ConnectionEventKind::TxAborted));
    let got = drain_bytes(&mut slow);
    assert!(
        got < big.len(),
        "the aborted copy was completed ({got} bytes)"
    );
}

#[test]
fn addressed_send_to_reaches_exactly_that_connection() {
    let ep = endpoint(Kind::Datagram);
    let mut pairs: Vec<(TcpStream, ConnectionId)> = (0..3).map(|_| attach_pair(&ep)).collect();
    let plan = [2usize, 0, 2, 1, 0, 2, 2, 1];
    let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    for (i, &k) in plan.iter().enumerate() {
        let m = msg(k as u8, i as u8, 10 * i + 1);
        ep.send_to(pairs[k].1, b(&m)).unwrap();
        want[k].push(m);
    }
    for (k, (peer, conn)) in pairs.iter_mut().enumerate() {
        for m in &want[k] {
            assert_eq!(&read_frame(peer).unwrap(), m, "connection {k}");
        }
        assert_silent(peer, Duration::from_millis(20));
        assert_eq!(tx_of(&ep, *conn).tx.tx_msgs, want[k].len() as u64);
    }
}

#[test]
fn send_to_a_connection_that_is_not_attached_fails_with_enotconn() {
    let ep = endpoint(Kind::Datagram);
    let (_peer, gone) = attach_pair(&ep);
    ep.unattach_id(gone).unwrap();
    assert_errno(ep.send_to(gone, b(&msg(14, 0, 10))), ENOTCONN);

    // A new connection reuses the index but not the identity: the stale id stays invalid.
    let (mut peer, fresh) = attach_pair(&ep);
    assert_eq!(fresh.index, gone.index);
    assert_errno(ep.send_to(gone, b(&msg(14, 1, 10))), ENOTCONN);
    let m = msg(14, 2, 10);
    ep.send_to(fresh, b(&m)).unwrap();
    assert_eq!(read_frame(&mut peer).unwrap(), m);
    assert_eq!(ep.stats().tx_msgs, 1, "refused sends queue nothing");
}

/// A peer that stops reading costs only its own connection: the endpoint's replies to other
/// peers go out while the stuck connection's messages wait in its backlog, and the stuck
/// peer still gets all of its messages, whole and in order, once it reads again. (Before
/// backlogs, the endpoint's one FIFO send queue held every later reply behind the full
/// connection.)
#[test]
fn a_peer_that_stops_reading_does_not_hold_up_replies_to_the_others() {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(4 << 20).unwrap();
    let (mut slow, slow_conn) = attach_narrow(&ep);
    let (mut fast, fast_conn) = attach_pair(&ep);
    // A megabyte: far more than the slow connection's kernel buffers hold.
    let stuck: Vec<Vec<u8>> = (0..64u8).map(|i| msg(20, i, 16 * 1024)).collect();
    for m in &stuck {
        ep.send_to(slow_conn, b(m)).unwrap();
    }
    wait_for("the slow connection to fill up", || {
        ep.connection_stats(slow_conn).unwrap().tx.tx_bytes > 0
    });
    for i in 0..20u8 {
        let m = msg(21, i, 100);
        ep.send_to(fast_conn, b(&m)).unwrap();
        assert_eq!(
            read_frame(&mut fast).unwrap(),
            m,
            "reply {i} to the fast peer"
        );
    }
    // New sends to the stuck connection wait for room in its backlog (non-blocking: refused),
    // and only those.
    ep.set_nonblocking(true);
    let refused = ep.send_to(slow_conn, b(&msg(20, 99, 100)));
    assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let m = msg(21, 20, 100);
    ep.send_to(fast_conn, b(&m)).unwrap();
    assert_eq!(read_frame(&mut fast).unwrap(), m);
    ep.set_nonblocking(false);
    let (msgs, bytes) = ep.connection_backlog(slow_conn).expect("a backlog");
    assert!(
        msgs > 0 && bytes >= 208 * 1024,
        "{msgs} messages, {bytes} bytes"
    );
    assert_eq!(ep.connection_backlog(fast_conn), None);
    // Everything arrives, whole and in order, once the slow peer reads.
    for m in &stuck {
        assert_eq!(&read_frame(&mut slow).unwrap(), m);
    }
    let late = msg(20, 64, 100);
    ep.send_to(slow_conn, b(&late)).unwrap();
    assert_eq!(read_frame(&mut slow).unwrap(), late);
    assert_silent(&mut slow, Duration::from_millis(20));
    // The last backlog write may still be being reported (by the engine) when `late` joins
    // or follows it: wait for the count rather than assume it is done.
    // (At least: a count that went past 65 fails below, not as a timeout.)
    wait_for("every message to the slow peer counted", || {
        tx_of(&ep, slow_conn).tx.tx_msgs >= 65
    });
    wait_for("the slow peer's backlog to go", || {
        ep.connection_backlog(slow_conn).is_none()
    });
    assert_eq!(tx_of(&ep, slow_conn).tx.tx_msgs, 65);
    assert_eq!(ep.connection_backlog(slow_conn), None);
    assert_eq!(tx_of(&ep, fast_conn).tx.tx_msgs, 21);
    assert_eq!(ep.mux_stats().tx_addr_drops, 0);
}

/// A stuck peer that resets its connection: the messages in its backlog cannot be delivered
/// and are counted (`tx_addr_drops`), the connection reports its failure, and the other peers
/// never notice.
#[test]
fn a_backlog_on_a_peer_that_resets_is_dropped_and_counted() {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(4 << 20).unwrap();
    let (slow, slow_conn) = attach_narrow(&ep);
    let (mut fast, fast_conn) = attach_pair(&ep);
    for i in 0..64u8 {
        ep.send_to(slow_conn, b(&msg(22, i, 16 * 1024))).unwrap();
    }
    // A reply to the fast peer makes the slow one's messages step aside.
    let m = msg(23, 0, 100);
    ep.send_to(fast_conn, b(&m)).unwrap();
    assert_eq!(read_frame(&mut fast).unwrap(), m);
    let (queued, _) = ep.connection_backlog(slow_conn).expect("a backlog");
    reset_peer(&ep, slow, slow_conn);
    // The next write of the backlog fails (or the reset was seen first): all of it is gone,
    // counted, and the connection can transmit no more.
    wait_for("the backlog dropped", || {
        ep.connection_backlog(slow_conn).is_none()
    });
    let drops = ep.mux_stats().tx_addr_drops;
    assert!(drops > 0 && drops <= queued as u64, "{drops} of {queued}");
    assert!(ep.send_to(slow_conn, b(&msg(22, 99, 10))).is_err());
    let m = msg(23, 1, 100);
    ep.send_to(fast_conn, b(&m)).unwrap();
    assert_eq!(read_frame(&mut fast).unwrap(), m);
}
