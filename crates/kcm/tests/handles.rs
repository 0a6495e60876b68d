//! Checklist `kcm-spec.md` §11, "Creation and handles" and "Options and errors", over real
//! loopback sockets.
//!
//! Lines with no test here, and why:
//! - *Reject unknown kind (ESOCKTNOSUPPORT) before unknown protocol (EPROTONOSUPPORT)*:
//!   [`Kind`] is a closed enum and there is no protocol argument, so neither error can be
//!   expressed; the compiler rejects what the kernel checks at run time.
//! - *clone is not close-on-exec / non-blocking*: an endpoint is not a file descriptor.
//!   Non-blocking mode is a per-endpoint setting and its non-inheritance is tested below.
//! - *bind/connect/listen/accept/shutdown/getname/mmap → EOPNOTSUPP; no addresses*: an
//!   [`Endpoint`] has no such methods, so there is nothing to call.
//! - *KCM_RECV_DISABLE as an `int` option (optlen < 4 → EINVAL, negative len → EINVAL,
//!   unknown option → ENOPROTOOPT)*: the setter takes a `bool`; there are no option levels,
//!   names or lengths to get wrong. The set/get round trip is tested below.
//! - *Endpoint errors are always EPIPE*: the kernel posts one only on internal-consistency
//!   failures of its transmit routine (§2.6), which have no trigger from outside the crate.
//!   That parser errors never reach endpoints is tested below.
//! - *Endpoint SO_SNDBUF / SO_SNDTIMEO*: tested with the send path (`tests/send.rs`);
//!   SO_RCVBUF and SO_RCVLOWAT in `tests/steering.rs`, SO_RCVTIMEO in `tests/recvmsg.rs`,
//!   and the connection's SO_RCVBUF / SO_RCVTIMEO in `tests/receive.rs`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kcm::{AttachOptions, EndpointId, Kind};

/// `socket(AF_KCM, …)`: every call makes a new mux, with one endpoint (index 0) of that kind.
#[test]
fn new_creates_a_separate_mux_with_its_first_endpoint() {
    let a = endpoint(Kind::Datagram);
    let b = endpoint(Kind::SeqPacket);
    assert_eq!((a.id(), b.id()), (EndpointId(0), EndpointId(0)));
    assert_eq!((a.kind(), b.kind()), (Kind::Datagram, Kind::SeqPacket));

    let (mut client, server) = tcp_pair();
    let conn = a.attach(&server, thrift()).unwrap();
    assert_eq!(a.connections(), vec![conn]);
    assert!(
        b.connections().is_empty(),
        "a connection of one mux showed up in another"
    );

    client.write_all(&frame(b"for a")).unwrap();
    assert_eq!(&a.recv().unwrap().data[..], &frame(b"for a")[..]);
    assert!(try_recv(&b).is_none());
    assert_eq!(b.mux_stats().rx_msgs, 0);
}

/// `SIOCKCMCLONE`: same mux, same kind, and none of the original's options.
#[test]
fn clone_joins_the_same_mux_with_the_same_kind_and_default_options() {
    let ep = endpoint(Kind::SeqPacket);
    ep.set_nonblocking(true);
    ep.set_recv_disable(true).unwrap();
    ep.set_recv_buffer_size(1).unwrap();

    let c = clone_of(&ep);
    assert_eq!(c.kind(), Kind::SeqPacket);
    assert_eq!(c.id(), EndpointId(1));
    assert!(!c.is_nonblocking(), "non-blocking mode was inherited");
    assert!(!c.recv_disable(), "KCM_RECV_DISABLE was inherited");

    // Same mux: a connection attached through one is seen through the other, and its
    // messages reach the clone (the original is disabled).
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).unwrap();
    assert_eq!(c.connections(), vec![conn]);
    // Two messages in one write are one read pass; with the original's 1-byte receive
    // buffer the clone would take the first and the second would be parked.
    let mut both = frame(b"one");
    both.extend_from_slice(&frame(b"two"));
    client.write_all(&both).unwrap();
    wait_for("both messages queued on the clone", || queued(&c) == 2);
    assert_eq!(&c.recv().unwrap().data[..], &frame(b"one")[..]);
    assert_eq!(&c.recv().unwrap().data[..], &frame(b"two")[..]);
}

/// Endpoint and connection indices are the lowest integer not in use on the mux (§1.3).
#[test]
fn endpoint_and_connection_indices_are_the_lowest_unused() {
    let e0 = endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    let e2 = clone_of(&e0);
    assert_eq!(
        (e0.id(), e1.id(), e2.id()),
        (EndpointId(0), EndpointId(1), EndpointId(2))
    );
    drop(e1);
    assert_eq!(clone_of(&e0).id(), EndpointId(1), "index 1 was free");
    let e3 = clone_of(&e0);
    // The clone made in the assertion above is gone again, so 1 is free once more.
    assert_eq!(e3.id(), EndpointId(1));
    assert_eq!(clone_of(&e2).id(), EndpointId(3));

    let pairs: Vec<_> = (0..3).map(|_| tcp_pair()).collect();
    let ids: Vec<_> = pairs
        .iter()
        .map(|(_, s)| e0.attach(s, thrift()).unwrap())
        .collect();
    assert_eq!(
        ids.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    e0.unattach(&pairs[1].1).unwrap();
    let (_c, s) = tcp_pair();
    let again = e0.attach(&s, thrift()).unwrap();
    assert_eq!(again.index, 1, "psock index 1 was free");
    assert_ne!(
        again, ids[1],
        "a reused index must not make an equal connection id"
    );
}

/// §3.4 step 5: closing the last endpoint destroys the mux, and every connection goes back
/// to plain TCP — readable and writable by the application, attachable again, and closed
/// for good once the application closes its descriptor (kcm's own is gone).
#[test]
fn closing_the_last_endpoint_unattaches_every_connection() {
    let ep = endpoint(Kind::Datagram);
    let other = clone_of(&ep);
    let (mut c1, mut s1) = tcp_pair();
    let (mut c2, s2) = tcp_pair();
    ep.attach(&s1, thrift()).unwrap();
    ep.attach(&s2, thrift()).unwrap();
    c1.write_all(&frame(b"while attached")).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"while attached")[..]);

    drop(other);
    assert_eq!(
        ep.connections().len(),
        2,
        "closing a non-last endpoint unattached something"
    );
    drop(ep);

    // Plain TCP again, both ways, and nobody else reads the bytes.
    s1.set_read_timeout(Some(TIMEOUT)).unwrap();
    c1.write_all(b"plain bytes").unwrap();
    let mut got = [0u8; 11];
    s1.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"plain bytes");
    s1.write_all(b"back").unwrap();
    let mut back = [0u8; 4];
    c1.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back");

    // The process-wide "attached" mark is gone: another mux may take the socket.
    let next = endpoint(Kind::Datagram);
    next.attach(&s2, thrift()).unwrap();
    drop(next);

    // kcm closed its duplicate descriptors: closing ours ends the connections.
    drop(s1);
    drop(s2);
    let mut buf = [0u8; 1];
    assert_eq!(
        c1.read(&mut buf).unwrap(),
        0,
        "connection 1 stayed open after the mux died"
    );
    assert_eq!(
        c2.read(&mut buf).unwrap(),
        0,
        "connection 2 stayed open after the mux died"
    );
}

/// `KCM_RECV_DISABLE` reads back 0/1 as set; setting the same value twice is harmless.
#[test]
fn recv_disable_option_reads_back_what_was_set() {
    let ep = endpoint(Kind::Datagram);
    assert!(!ep.recv_disable());
    ep.set_recv_disable(true).unwrap();
    ep.set_recv_disable(true).unwrap();
    assert!(ep.recv_disable());
    ep.set_recv_disable(false).unwrap();
    assert!(!ep.recv_disable());
}

/// §2.6, §3.6: a parser error is posted on the connection; the endpoints carry no error,
/// keep sending, and a receive just finds nothing.
#[test]
fn parser_errors_go_to_the_connection_never_to_endpoints() {
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let conn = ep
        .attach_with(
            &server,
            thrift(),
            AttachOptions::default().max_message_size(16),
        )
        .unwrap();
    client.write_all(&frame(&[7u8; 100])).unwrap();
    let mut posted = None;
    wait_for("the connection's error", || {
        posted = ep.connection_error(conn);
        posted.is_some()
    });
    assert_eq!(posted.as_ref().map(errno_of), Some(errno::EMSGSIZE));

    assert!(
        ep.take_error().is_none(),
        "a parser error reached the endpoint"
    );
    ep.set_read_timeout(Some(Duration::from_millis(50)));
    let e = ep.recv().unwrap_err();
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::WouldBlock,
        "recv reported {e}"
    );
    ep.send(Bytes::from(frame(b"still sends"))).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), frame(b"still sends"));
}
