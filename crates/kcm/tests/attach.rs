//! Checklist `kcm-spec.md` §11, "Attach / unattach", over real loopback sockets (§3.1, §3.2).
//!
//! Lines and parts with no test here, and why:
//! - *non-parser program → BPF-style error (EINVAL/EBADF)*: attach takes an
//!   `Arc<dyn Parser>`, so anything that is not a parser is rejected by the compiler. (BPF
//!   programs become parsers in `kcm-bpf`, which has its own tests.)
//! - *State change EPIPE "even on establishment"*: only connected sockets can be attached
//!   (a socket still in SYN_SENT has no peer and is refused as closed), so no attached
//!   connection is ever established later. The peer-close case is tested.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kcm::{ConnectionEventKind, Endpoint, Kind, Parse, Parser};

#[test]
fn attach_rejects_udp_socket_with_eopnotsupp() {
    let ep = endpoint(Kind::Datagram);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(udp.local_addr().unwrap()).unwrap();
    assert_errno(ep.attach(&udp, thrift()), errno::EOPNOTSUPP);
    // Unix datagram sockets are not byte streams either (Unix *stream* is an extension).
    let (u, _peer) = UnixDatagram::pair().unwrap();
    assert_errno(ep.attach(&u, thrift()), errno::EOPNOTSUPP);
    assert!(ep.connections().is_empty());
}

#[test]
fn attach_rejects_listening_socket_with_eopnotsupp() {
    let ep = endpoint(Kind::Datagram);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_errno(ep.attach(&listener, thrift()), errno::EOPNOTSUPP);
    assert!(ep.connections().is_empty());
}

/// TCP_CLOSE: a socket never connected, and one whose connection was reset.
#[test]
fn attach_rejects_closed_socket_with_eopnotsupp() {
    let ep = endpoint(Kind::Datagram);
    let fresh = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    assert_errno(ep.attach(&fresh, thrift()), errno::EOPNOTSUPP);

    let (client, mut server) = tcp_pair();
    rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO)).unwrap();
    drop(client); // linger 0: the peer sends RST
    server.set_read_timeout(Some(TIMEOUT)).unwrap();
    let e = server.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert_errno(ep.attach(&server, thrift()), errno::EOPNOTSUPP);
    assert!(ep.connections().is_empty());
}

/// A descriptor that is not a socket: ENOENT on attach and on unattach (§3.1 step 2, §3.2).
#[test]
fn attach_and_unattach_of_non_socket_descriptor_is_enoent() {
    let ep = endpoint(Kind::Datagram);
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    assert_errno(ep.attach(&rd, thrift()), errno::ENOENT);
    assert_errno(ep.attach(&wr, thrift()), errno::ENOENT);
    assert_errno(ep.attach(&file, thrift()), errno::ENOENT);
    assert_errno(ep.unattach(&rd), errno::ENOENT);
    assert_errno(ep.unattach(&file), errno::ENOENT);
}

/// EALREADY for a second attach of the same socket: through the same endpoint, another
/// endpoint of the same mux (the case reported on netdev), another mux, or another
/// descriptor of the same socket. The first attachment keeps working.
#[test]
fn attach_rejects_already_attached_socket_with_ealready() {
    let ep = endpoint(Kind::Datagram);
    let sibling = clone_of(&ep);
    let other_mux = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();

    assert_errno(ep.attach(&server, thrift()), errno::EALREADY);
    assert_errno(sibling.attach(&server, thrift()), errno::EALREADY);
    assert_errno(other_mux.attach(&server, thrift()), errno::EALREADY);
    let dup = server.try_clone().unwrap();
    assert_errno(other_mux.attach(&dup, thrift()), errno::EALREADY);

    assert_eq!(ep.connections(), vec![conn]);
    assert!(other_mux.connections().is_empty());
    ep.set_recv_disable(true).unwrap(); // so the message must reach the sibling
    client.write_all(&frame(b"still attached")).unwrap();
    let m = sibling.recv().unwrap();
    assert_eq!((&m.data[..], m.conn), (&frame(b"still attached")[..], conn));
}

/// Attach accepts TCP over IPv6 too.
#[test]
fn attach_accepts_ipv6_tcp() {
    let Some((mut client, server)) = tcp_pair_v6() else {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    };
    assert_round_trip(&server, &mut client, b"over v6");
}

/// Extension: a Unix stream socket is a byte stream like TCP and may be attached.
#[test]
fn attach_accepts_unix_stream_socket() {
    let (mut peer, ours) = UnixStream::pair().unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_round_trip(&ours, &mut peer, b"over unix");
}

/// Attaches `ours` to a new endpoint, then passes a message each way between it and `peer`:
/// `body` in, framed, from `peer`; a reply out, whole, to `peer`.
fn assert_round_trip(ours: &impl AsFd, peer: &mut (impl Read + Write), body: &[u8]) {
    let ep = endpoint(Kind::Datagram);
    let conn = ep.attach(ours, thrift()).expect("attach");
    peer.write_all(&frame(body)).expect("the peer writes");
    let m = ep.recv().expect("the message arrives");
    assert_eq!((&m.data[..], m.conn), (&frame(body)[..], conn));
    ep.send(Bytes::from(frame(b"reply"))).expect("send");
    assert_eq!(
        read_frame(peer).expect("the reply arrives"),
        frame(b"reply")
    );
}

/// §3.1: kcm holds its own reference, so the application may close its descriptor.
#[test]
fn attach_keeps_connection_alive_after_the_user_closes_its_descriptor() {
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();
    drop(server);
    for i in 0..3u8 {
        client.write_all(&frame(&[i; 10])).unwrap();
        let m = ep.recv().unwrap();
        assert_eq!((&m.data[..], m.conn), (&frame(&[i; 10])[..], conn));
        ep.send(m.data).unwrap();
        assert_eq!(read_frame(&mut client).unwrap(), frame(&[i; 10]));
    }
    assert_eq!(ep.connections(), vec![conn]);
}

/// §3.1: bytes that arrived before attach are parsed at once, from the first byte.
#[test]
fn attach_parses_bytes_already_buffered_on_the_connection() {
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let msgs: Vec<Vec<u8>> = (0..3u8).map(|i| frame(&vec![i; 5 + i as usize])).collect();
    let all = msgs.concat();
    client.write_all(&all).unwrap();
    // Wait until every byte sits in the server's receive queue.
    let mut peek = vec![0u8; all.len()];
    wait_for("the bytes to arrive before attach", || {
        server.peek(&mut peek).unwrap() == all.len()
    });

    let conn = ep.attach(&server, thrift()).unwrap();
    for m in &msgs {
        let got = ep.recv().unwrap();
        assert_eq!((&got.data[..], got.conn), (&m[..], conn));
    }
    let stats = ep.connection_stats(conn).unwrap();
    assert_eq!(
        (stats.parser.msgs, stats.parser.bytes),
        (3, all.len() as u64)
    );
}

/// §3.1, §5.3: attach makes the connection available for transmit, and endpoints that
/// queued messages while no connection existed are served in the order they started to wait.
#[test]
fn attach_makes_connection_available_to_waiting_senders_first_come_first_served() {
    let e0 = endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    // e1 starts waiting first, so it must be served first although its index is higher.
    e1.send(Bytes::from(frame(b"from e1"))).unwrap();
    e0.send(Bytes::from(frame(b"from e0"))).unwrap();
    let text = e0.proc_kcm();
    for i in [0, 1] {
        let row = proc_endpoint_row(&text, i).unwrap();
        assert!(
            row.contains(&"TxWait".to_owned()),
            "kcm-{i} should wait for a connection:\n{text}"
        );
    }

    let (mut client, server) = tcp_pair();
    e0.attach(&server, thrift()).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), frame(b"from e1"));
    assert_eq!(read_frame(&mut client).unwrap(), frame(b"from e0"));
}

/// §3.6: the peer closing its side posts EPIPE on the connection; it stays attached and
/// its transmit side keeps working.
#[test]
fn connection_state_change_posts_epipe_and_does_not_detach() {
    let (ep, mut client, _server, conn) = attached();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut posted = None;
    wait_for("EPIPE on the connection", || {
        posted = ep.connection_error(conn);
        posted.is_some()
    });
    assert_eq!(posted.as_ref().map(errno_of), Some(errno::EPIPE));
    assert!(ep
        .take_events()
        .iter()
        .any(|e| e.conn == conn && e.kind == ConnectionEventKind::PeerClosed));

    assert_eq!(
        ep.connections(),
        vec![conn],
        "a state change detached the connection"
    );
    ep.send(Bytes::from(frame(b"after FIN"))).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), frame(b"after FIN"));
}

/// §3.2: ENOENT for a socket attached to another mux, a socket never attached, and one
/// already unattached.
#[test]
fn unattach_of_connection_not_on_this_mux_is_enoent() {
    let ep = endpoint(Kind::Datagram);
    let other = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let conn = other.attach(&server, thrift()).unwrap();
    assert_errno(ep.unattach(&server), errno::ENOENT);
    assert_errno(ep.unattach_id(conn), errno::ENOENT);

    let (_c2, never) = tcp_pair();
    assert_errno(ep.unattach(&never), errno::ENOENT);

    // Still attached to its own mux.
    client.write_all(&frame(b"still there")).unwrap();
    assert_eq!(&other.recv().unwrap().data[..], &frame(b"still there")[..]);
    other.unattach(&server).unwrap();
    assert_errno(other.unattach(&server), errno::ENOENT);
}

/// A parser that blocks (holding the connection's receive side) until the gate opens.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (entered, open)
    cv: Condvar,
}

#[derive(Debug)]
struct GatedParser(Arc<Gate>);

impl Parser for GatedParser {
    fn parse(&self, view: &[u8]) -> Parse {
        let mut st = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.0 = true;
        self.0.cv.notify_all();
        // Bounded, so a bug cannot hang the suite.
        let (st, _) = self
            .0
            .cv
            .wait_timeout_while(st, TIMEOUT, |s| !s.1)
            .unwrap_or_else(PoisonError::into_inner);
        drop(st);
        thrift().parse(view)
    }
}

/// §3.2: while one unattach is under way (here: waiting for a thread that is in the middle
/// of reading the connection), a second one fails with EALREADY; the first then succeeds.
#[test]
fn concurrent_second_unattach_is_ealready() {
    let ep = endpoint(Kind::Datagram);
    let gate = Arc::new(Gate::default());
    let (mut client, server) = tcp_pair();
    let conn = ep
        .attach(&server, Arc::new(GatedParser(gate.clone())))
        .unwrap();
    client.write_all(&frame(b"x")).unwrap();
    {
        let st = gate.state.lock().unwrap();
        let (st, _) = gate.cv.wait_timeout_while(st, TIMEOUT, |s| !s.0).unwrap();
        assert!(st.0, "the parser was never called");
    }

    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let tx = tx.clone();
            let ep: &Endpoint = &ep;
            s.spawn(move || tx.send(ep.unattach_id(conn)).unwrap());
        }
        // Only the second caller can return while the reader is stuck in the parser.
        let first = rx.recv_timeout(TIMEOUT).expect("one unattach returned");
        assert_errno(first, errno::EALREADY);
        gate.state.lock().unwrap().1 = true;
        gate.cv.notify_all();
        let second = rx
            .recv_timeout(TIMEOUT)
            .expect("the other unattach returned");
        assert!(second.is_ok(), "{second:?}");
    });
    assert!(ep.connections().is_empty());
}

/// §3.2 steps 2–3: unattach drops the parked message (`rx_ready_drops` +1) and the
/// partially assembled one. (kcm hands the bytes it had read but not delivered back to the
/// caller, an extension; the kernel loses them.)
#[test]
fn unattach_drops_the_parked_message_and_the_partial_one() {
    let ep = endpoint(Kind::Datagram);
    ep.set_recv_disable(true).unwrap(); // no eligible endpoint: the message gets parked
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();
    let parked = frame(b"parked");
    let partial = &frame(b"0123456789")[..7];
    client.write_all(&[&parked[..], partial].concat()).unwrap();
    let total = (parked.len() + partial.len()) as u64;
    wait_for("both messages' bytes read", || {
        let s = ep.connection_stats(conn).unwrap();
        s.parser.msgs == 1 && s.parser.bytes == total
    });
    assert_conn_flag(&ep, conn, "RdyRx", true);

    let leftover = ep.unattach(&server).unwrap();
    assert_eq!(&leftover[..], partial);
    let stats = ep.mux_stats();
    assert_eq!(
        (stats.rx_ready_drops, stats.rx_msgs, stats.psock_unattach),
        (1, 0, 1)
    );
    ep.set_recv_disable(false).unwrap();
    assert!(try_recv(&ep).is_none(), "a dropped message was delivered");
}

/// §3.2 step 5, §5.5: unattaching a connection in the middle of a transmit aborts it
/// there (EPIPE event, `tx_aborts`, `psock_unattach_rsvd`) and the message is sent again,
/// from its first byte, on another connection (`tx_retries`).
#[test]
fn unattach_of_transmit_reserved_connection_aborts_and_retries_elsewhere() {
    let ep = endpoint(Kind::Datagram);
    let pairs: Vec<_> = (0..2).map(|_| tcp_pair()).collect();
    // The first connection attached is the first handed out (§5.3). Small buffers there,
    // and a peer that does not read: the transmit stalls part-way.
    rustix::net::sockopt::set_socket_send_buffer_size(&pairs[0].1, 4096).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&pairs[0].0, 4096).unwrap();
    let conns: Vec<_> = pairs
        .iter()
        .map(|(_, s)| ep.attach(s, thrift()).unwrap())
        .collect();
    let body: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let big = frame(&body);
    ep.send(Bytes::from(big.clone())).unwrap();

    wait_for("the first connection reserved and stalled", || {
        let s = ep.connection_stats(conns[0]).unwrap();
        s.tx.reserved == 1 && s.tx.unreserved == 0 && s.tx.tx_bytes > 0
    });
    let (stalled, other) = (0, 1);
    ep.unattach(&pairs[stalled].1).unwrap();

    let mut reader = pairs[other].0.try_clone().unwrap();
    assert!(
        read_frame(&mut reader).unwrap() == big,
        "the retried message arrived damaged"
    );
    let m = ep.mux_stats();
    assert_eq!(
        (m.psock_unattach, m.psock_unattach_rsvd, m.tx_retries),
        (1, 1, 1)
    );
    assert!(ep
        .take_events()
        .iter()
        .any(|e| e.conn == conns[stalled] && e.kind == ConnectionEventKind::TxAborted));
    wait_for("the message counted as sent", || {
        ep.connection_stats(conns[other]).unwrap().tx.tx_msgs == 1
    });

    // The counters of the unattached connection live on in the mux aggregate, and the
    // /proc columns are in header order (the kernel swaps the two unattach columns).
    ep.unattach(&pairs[other].1).unwrap();
    let v = kcm_stats_values(&ep.proc_kcm_stats());
    assert_eq!(v["Mux Unattach"], 2);
    assert_eq!(v["Mux UnattchRsvd"], 1);
    assert_eq!(v["Mux TX-Retries"], 1);
    assert_eq!(v["Psock TX-Aborts"], 1);
    assert_eq!(v["Psock TX-Msgs"], 1);
}

/// §3.2: after unattach the socket is plain TCP again (here at a message boundary, since
/// nothing was in flight), and it can be attached again.
#[test]
fn unattach_restores_the_connection_to_plain_tcp() {
    let (ep, mut client, mut server, conn) = attached();
    client.write_all(&frame(b"kcm")).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"kcm")[..]);
    let leftover = ep.unattach(&server).unwrap();
    assert!(leftover.is_empty());
    assert!(!ep.connections().contains(&conn));

    server.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.write_all(&frame(b"plain")).unwrap();
    assert_eq!(
        read_frame(&mut server).unwrap(),
        frame(b"plain"),
        "kcm still read the socket"
    );
    server.write_all(b"raw").unwrap();
    let mut raw = [0u8; 3];
    client.read_exact(&mut raw).unwrap();
    assert_eq!(&raw, b"raw");

    ep.attach(&server, thrift()).unwrap();
    client.write_all(&frame(b"again")).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"again")[..]);
}
