//! Checklist `kcm-spec.md` §11, "Steering" (§5.1–§5.4, §3.4 step 4), plus the endpoint
//! options SO_RCVBUF and SO_RCVLOWAT of "Options and errors" (§6.2), over real loopback
//! sockets.
//!
//! The muxes here steer strictly by the eligible FIFO, as the kernel does
//! ([`kcm::MuxOptions::prefer_local`] off), and no thread waits in `recv` while messages
//! arrive: the engine thread reads the connections, so which endpoint gets a message depends
//! only on the steering rules. A "read pass" is one write by the peer (one loopback segment,
//! read by one `recv`); each test waits for a pass to be delivered before starting the next.
//!
//! Lines with no test here, and why:
//! - *Mux destruction loses the hold queue*: nothing outlives the mux to observe it with.
//! - *No ordering guarantee across endpoints; no way to learn a message's connection*: an
//!   absence of guarantees cannot fail a test, and kcm deliberately adds the connection to
//!   every message ([`kcm::Message::conn`], an extension tested throughout).
//! - *"not reserved" part of eligibility*: an endpoint is reserved only for the duration of
//!   one read pass, inside the runtime; the resulting one-endpoint-per-pass rule is tested.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use kcm::{ConnectionId, Endpoint, Kind};

/// Writes one read pass of the given messages (one `write`) and waits until the mux has
/// queued them all on endpoints.
fn pass(ep: &Endpoint, client: &mut impl Write, msgs: &[&[u8]]) {
    let before = ep.mux_stats().rx_msgs;
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
    client.write_all(&bytes).expect("write a read pass");
    let want = before + msgs.len() as u64;
    wait_for("the read pass to be delivered", || {
        ep.mux_stats().rx_msgs == want
    });
}

/// Writes messages that no endpoint can take and waits until the connection parked them.
fn park(ep: &Endpoint, conn: ConnectionId, client: &mut impl Write, msgs: &[&[u8]]) {
    let before = ep
        .connection_stats(conn)
        .expect("connection attached")
        .parser
        .msgs;
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
    client.write_all(&bytes).expect("write the messages");
    let want = before + msgs.len() as u64;
    wait_for("the messages to be parsed", || {
        ep.connection_stats(conn)
            .expect("connection attached")
            .parser
            .msgs
            == want
    });
    assert!(is_parked(ep, conn), "not parked:\n{}", ep.proc_kcm());
}

/// The connection holds a parsed message no endpoint took (`RdyRx`) and is not read (`RxPause`).
fn is_parked(ep: &Endpoint, conn: ConnectionId) -> bool {
    let text = ep.proc_kcm();
    let row = proc_conn_row(&text, conn.index).expect("connection attached");
    row.contains(&"RdyRx".to_owned()) && row.contains(&"RxPause".to_owned())
}

/// The bodies of every message queued on `ep`, in order (frames are 4 bytes + body).
fn bodies(ep: &Endpoint) -> Vec<Vec<u8>> {
    drain(ep)
        .into_iter()
        .map(|m| m.data[4..].to_vec())
        .collect()
}

fn queued_all(eps: &[&Endpoint]) -> Vec<u64> {
    eps.iter().map(|e| queued(e)).collect()
}

/// §5.1: eligible endpoints form a FIFO; a disabled endpoint is not on it, and a full one
/// leaves it.
#[test]
fn eligible_endpoints_form_a_fifo_of_enabled_endpoints_with_room() {
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    let e2 = clone_of(&e0);
    let e3 = clone_of(&e0);
    let (mut client, server) = tcp_pair();
    e0.attach(&server, thrift()).unwrap();
    e1.set_recv_disable(true).unwrap();
    e2.set_recv_buffer_size(1).unwrap(); // full after one message
    let eps = [&e0, &e1, &e2, &e3];

    // FIFO after creation: e0 e1 e2 e3; e1 left it; each pass's endpoint rejoins the tail
    // unless it is full (e2).
    let expected = [
        [1, 0, 0, 0],
        [1, 0, 1, 0],
        [1, 0, 1, 1],
        [2, 0, 1, 1],
        [2, 0, 1, 2],
        [3, 0, 1, 2],
    ];
    for (i, want) in expected.iter().enumerate() {
        pass(&e0, &mut client, &[&[i as u8]]);
        assert_eq!(queued_all(&eps), want, "after pass {i}");
    }
    assert_eq!(bodies(&e0), vec![vec![0], vec![3], vec![5]]);
    assert_eq!(bodies(&e2), vec![vec![1]]);
    assert_eq!(bodies(&e3), vec![vec![2], vec![4]]);
}

/// §5.1: every message of one read pass goes to the same endpoint, which then rejoins the
/// tail of the FIFO (round robin per pass).
#[test]
fn connection_delivers_a_whole_read_pass_to_one_endpoint_then_moves_on() {
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    let e2 = clone_of(&e0);
    let (mut client, server) = tcp_pair();
    e0.attach(&server, thrift()).unwrap();
    pass(&e0, &mut client, &[b"p0"]);
    pass(&e0, &mut client, &[b"p1"]);
    pass(&e0, &mut client, &[b"p2"]);
    pass(&e0, &mut client, &[b"p3a", b"p3b", b"p3c"]);
    pass(&e0, &mut client, &[b"p4a", b"p4b"]);
    assert_eq!(queued_all(&[&e0, &e1, &e2]), vec![4, 3, 1]);
    assert_eq!(
        bodies(&e0),
        vec![
            b"p0".to_vec(),
            b"p3a".to_vec(),
            b"p3b".to_vec(),
            b"p3c".to_vec()
        ]
    );
    assert_eq!(
        bodies(&e1),
        vec![b"p1".to_vec(), b"p4a".to_vec(), b"p4b".to_vec()]
    );
    assert_eq!(bodies(&e2), vec![b"p2".to_vec()]);
}

/// §5.1: admission is "below SO_RCVBUF before adding": a message far bigger than the
/// endpoint's buffer is accepted by an empty endpoint; the next one is not.
#[test]
fn admission_is_checked_before_adding_so_one_message_may_overshoot() {
    let ep = fifo_endpoint(Kind::Datagram);
    ep.set_recv_buffer_size(10).unwrap();
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();
    let big = [9u8; 1000];
    pass(&ep, &mut client, &[&big]);
    assert_eq!(queued(&ep), 1);
    park(&ep, conn, &mut client, &[b"next"]);
    assert_eq!(queued(&ep), 1, "a full endpoint accepted another message");
    assert_eq!(ep.recv().unwrap().data.len(), 1004);
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"next")[..]);
}

/// §5.1: when the endpoint a pass is going to fills up, it drops out and the rest of the
/// pass goes to the next eligible endpoint; it stays out until drained.
#[test]
fn full_endpoint_drops_out_and_the_next_eligible_one_is_tried() {
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    e0.set_recv_buffer_size(10).unwrap();
    let (mut client, server) = tcp_pair();
    e0.attach(&server, thrift()).unwrap();
    pass(&e0, &mut client, &[&[1u8; 20], &[2u8; 20], &[3u8; 20]]);
    assert_eq!(queued_all(&[&e0, &e1]), vec![1, 2]);
    pass(&e0, &mut client, &[&[4u8; 20]]);
    assert_eq!(
        queued_all(&[&e0, &e1]),
        vec![1, 3],
        "a full endpoint was chosen"
    );
    assert_eq!(bodies(&e0), vec![vec![1u8; 20]]);
    // Drained, e0 is back (behind e1).
    pass(&e0, &mut client, &[&[5u8; 20]]);
    pass(&e0, &mut client, &[&[6u8; 20]]);
    assert_eq!(queued_all(&[&e0, &e1]), vec![1, 4]);
}

/// §5.1: a full endpoint becomes eligible again only once its queued bytes drop below its
/// SO_RCVLOWAT (default 1: only when empty); it then takes the parked message at once.
#[test]
fn full_endpoint_rejoins_when_drained_below_its_rcvlowat() {
    for lowat in [None, Some(100)] {
        let ep = fifo_endpoint(Kind::Datagram);
        ep.set_recv_buffer_size(150).unwrap();
        if let Some(l) = lowat {
            ep.set_recv_lowat(l).unwrap();
        }
        let (mut client, server) = tcp_pair();
        let conn = ep.attach(&server, thrift()).unwrap();
        let body = [7u8; 76]; // 80-byte messages: two fill the 150-byte buffer
        pass(&ep, &mut client, &[&body]);
        pass(&ep, &mut client, &[&body]);
        park(&ep, conn, &mut client, &[&body]);

        ep.recv().unwrap(); // 80 bytes left: below 100, not below 1
        let rejoined = ep.mux_stats().rx_msgs == 3;
        assert_eq!(
            rejoined,
            lowat.is_some(),
            "lowat {lowat:?}: rejoined after one read: {rejoined}"
        );
        ep.recv().unwrap();
        assert_eq!(
            ep.mux_stats().rx_msgs,
            3,
            "lowat {lowat:?}: an empty endpoint did not rejoin"
        );
        assert_eq!(ep.recv().unwrap().data.len(), 80);
    }
}

/// §5.2, §5.7: with no endpoint able to take a message, the connection parks it and stops
/// reading, so TCP flow control stops the peer; reading again drains everything, in order.
#[test]
fn no_eligible_endpoint_parks_a_message_and_tcp_flow_control_stops_the_peer() {
    let ep = fifo_endpoint(Kind::Datagram);
    ep.set_recv_buffer_size(1).unwrap();
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();
    let msg = |i: u32| {
        let mut body = vec![(i % 251) as u8; 4096];
        body[..4].copy_from_slice(&i.to_be_bytes());
        frame(&body)
    };

    client.set_nonblocking(true).unwrap();
    let (mut next, mut pending, mut off, mut total) = (0u32, Vec::new(), 0usize, 0usize);
    loop {
        if off == pending.len() {
            pending = msg(next);
            next += 1;
            off = 0;
        }
        match client.write(&pending[off..]) {
            Ok(n) => {
                off += n;
                total += n;
                assert!(
                    total < 256 << 20,
                    "wrote {total} bytes without being pushed back"
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Blocked for good only once kcm stopped reading and the socket stays full.
                if is_parked(&ep, conn) && !writable_within(&client, Duration::from_millis(200)) {
                    break;
                }
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert_eq!(
        queued(&ep),
        1,
        "the endpoint should hold exactly one message"
    );

    client.set_nonblocking(false).unwrap();
    let extra = 50;
    let writer = std::thread::spawn(move || {
        client.write_all(&pending[off..]).unwrap();
        for i in next..next + extra {
            client.write_all(&msg(i)).unwrap();
        }
        client
    });
    for i in 0..next + extra {
        let m = ep.recv().unwrap();
        assert!(
            m.data == msg(i),
            "message {i} arrived out of order or damaged"
        );
    }
    let _client = writer.join().unwrap();
    assert!(try_recv(&ep).is_none());
}

/// `poll(POLLOUT)` on a socket with a timeout: whether it became writable in time.
fn writable_within(s: &std::net::TcpStream, t: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(s, PollFlags::OUT)];
    let ts = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(t.subsec_nanos()),
    };
    poll(&mut fds, Some(&ts)).expect("poll") > 0
}

/// §5.2: an endpoint that becomes eligible (here: a new clone) first takes the hold queue,
/// then the parked messages of the waiting connections in the order they parked, resuming
/// those connections.
#[test]
fn newly_eligible_endpoint_takes_the_hold_queue_then_parked_messages_in_fifo_order() {
    let e0 = fifo_endpoint(Kind::Datagram);
    let (mut c1, s1) = tcp_pair();
    let (mut c2, s2) = tcp_pair();
    let k1 = e0.attach(&s1, thrift()).unwrap();
    let k2 = e0.attach(&s2, thrift()).unwrap();
    pass(&e0, &mut c1, &[b"held 1", b"held 2"]);
    e0.set_recv_disable(true).unwrap(); // no other endpoint: both go to the hold queue
    park(&e0, k2, &mut c2, &[b"parked on 2"]);
    park(&e0, k1, &mut c1, &[b"parked on 1"]);

    let e1 = clone_of(&e0);
    let want: Vec<Vec<u8>> = ["held 1", "held 2", "parked on 2", "parked on 1"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(bodies(&e1), want);
    // Both connections were resumed.
    pass(&e0, &mut c1, &[b"more on 1"]);
    pass(&e0, &mut c2, &[b"more on 2"]);
    assert_eq!(
        bodies(&e1),
        vec![b"more on 1".to_vec(), b"more on 2".to_vec()]
    );
}

/// §5.4: setting KCM_RECV_DISABLE moves the endpoint's queued messages to the eligible
/// endpoints, or to the hold queue when there is none, and it gets no new ones.
#[test]
fn recv_disable_moves_queued_messages_to_other_endpoints_else_to_the_hold_queue() {
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    let (mut client, server) = tcp_pair();
    let conn = e0.attach(&server, thrift()).unwrap();
    pass(&e0, &mut client, &[b"m1", b"m2"]);
    assert_eq!(queued_all(&[&e0, &e1]), vec![2, 0]);

    e0.set_recv_disable(true).unwrap();
    assert_eq!(queued_all(&[&e0, &e1]), vec![0, 2]);
    assert!(try_recv(&e0).is_none());
    pass(&e0, &mut client, &[b"m3"]);
    assert_eq!(
        queued_all(&[&e0, &e1]),
        vec![0, 3],
        "a disabled endpoint got a message"
    );

    e1.set_recv_disable(true).unwrap(); // nowhere to go: the hold queue
    assert_eq!(queued_all(&[&e0, &e1]), vec![0, 0]);
    park(&e0, conn, &mut client, &[b"m4"]);
    // Nothing was lost: a third endpoint receives all of it, held messages first.
    let e2 = clone_of(&e0);
    assert_eq!(
        bodies(&e2),
        vec![
            b"m1".to_vec(),
            b"m2".to_vec(),
            b"m3".to_vec(),
            b"m4".to_vec()
        ]
    );
}

/// §5.4: clearing KCM_RECV_DISABLE makes the endpoint eligible again, after it takes the
/// hold queue and the parked messages.
#[test]
fn clearing_recv_disable_makes_the_endpoint_eligible_after_held_and_parked_messages() {
    let ep = fifo_endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();
    pass(&ep, &mut client, &[b"held"]);
    ep.set_recv_disable(true).unwrap();
    park(&ep, conn, &mut client, &[b"parked"]);
    assert!(try_recv(&ep).is_none());

    ep.set_recv_disable(false).unwrap();
    assert_eq!(bodies(&ep), vec![b"held".to_vec(), b"parked".to_vec()]);
    pass(&ep, &mut client, &[b"after"]);
    assert_eq!(bodies(&ep), vec![b"after".to_vec()]);
}

/// §3.4 step 4: closing an endpoint moves its unread messages to the other endpoints.
#[test]
fn closing_an_endpoint_moves_its_unread_messages_to_the_others() {
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    let (mut client, server) = tcp_pair();
    e1.attach(&server, thrift()).unwrap();
    pass(&e1, &mut client, &[b"u1", b"u2"]);
    assert_eq!(queued_all(&[&e0, &e1]), vec![2, 0]);
    drop(e0);
    assert_eq!(bodies(&e1), vec![b"u1".to_vec(), b"u2".to_vec()]);
}
