//! Bad input from a peer costs only that peer's connection (`design.md` §3: "every bad input
//! gets a typed error, a counter, and the connection — not the process — pays for it";
//! `kcm-spec.md` §4.4, §5.5).
//!
//! Each test attaches a misbehaving connection next to a well-behaved one, makes the bad peer
//! misbehave, and then checks: the bad connection gets an event with the right errno and the
//! matching counter moves; the good connection still delivers and transmits; and the bad
//! connection's transmit side still works where the peer is still there to read.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{
    endpoint, errno, frame, read_frame, set_linger_zero, shrink_recv_buffer, shrink_send_buffer,
    tcp_pair, thrift, wait_for, wait_for_event, TIMEOUT,
};
use kcm::{AttachOptions, ConnectionEventKind, ConnectionId, Endpoint, Kind, Parser};
use kcm_core::{LengthField, StrError};

const ECONNRESET: i32 = rustix::io::Errno::CONNRESET.raw_os_error();

struct Setup {
    ep: Endpoint,
    good_peer: TcpStream,
    good: ConnectionId,
    bad_peer: TcpStream,
    bad: ConnectionId,
}

/// A mux with the misbehaving connection attached first (so it is also first in line for
/// transmit) and a well-behaved one second.
fn setup(bad_parser: Arc<dyn Parser>, bad_opts: AttachOptions) -> Setup {
    let ep = endpoint(Kind::Datagram);
    let (bad_peer, bad_server) = tcp_pair();
    let bad = ep
        .attach_with(&bad_server, bad_parser, bad_opts)
        .expect("attach");
    let (good_peer, good_server) = tcp_pair();
    let good = ep.attach(&good_server, thrift()).expect("attach");
    Setup {
        ep,
        good_peer,
        good,
        bad_peer,
        bad,
    }
}

/// Waits for the parser error on `conn` and returns it.
fn parser_error(ep: &Endpoint, conn: ConnectionId) -> StrError {
    let seen = wait_for_event(ep, conn, "a parser error", |k| {
        matches!(k, ConnectionEventKind::ParserError(_))
    });
    seen.into_iter()
        .find_map(|e| match e.kind {
            ConnectionEventKind::ParserError(err) if e.conn == conn => Some(err),
            _ => None,
        })
        .expect("the event waited for")
}

/// The good connection still delivers (and only its message arrives), and still transmits.
fn good_connection_still_works(ep: &Endpoint, good_peer: &mut TcpStream, good: ConnectionId) {
    let m = frame(b"still fine");
    good_peer.write_all(&m).expect("the good peer writes");
    let got = ep.recv().expect("the good connection delivers");
    assert_eq!((&got.data[..], got.conn), (&m[..], good));
    let reply = frame(b"reply");
    ep.send_to(good, Bytes::from(reply.clone()))
        .expect("a reply on the good connection");
    assert_eq!(read_frame(good_peer).expect("the reply arrives"), reply);
}

/// The failed connection reads nothing more, yet still transmits (§4.4: a parser error stops
/// only the receive side).
fn bad_connection_receives_nothing_but_still_transmits(s: &mut Setup) {
    let valid = frame(b"too late");
    // The peer is still connected (it must read the send below), so the write succeeds.
    s.bad_peer
        .write_all(&valid)
        .expect("the bad peer can still write");
    s.ep.set_read_timeout(Some(Duration::from_millis(100)));
    let r = s.ep.recv();
    s.ep.set_read_timeout(Some(TIMEOUT));
    // Only the receive timeout may end the wait: any other error is a failure of its own.
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a stopped connection delivered {other:?}"),
    }
    let m = frame(b"the send side still works");
    s.ep.send_to(s.bad, Bytes::from(m.clone()))
        .expect("a send on the failed connection");
    assert_eq!(
        read_frame(&mut s.bad_peer).expect("the failed connection still transmits"),
        m
    );
}

#[test]
fn oversized_length_fails_only_that_connection_with_emsgsize() {
    let mut s = setup(thrift(), AttachOptions::default().max_message_size(1024));
    s.bad_peer.write_all(&5000u32.to_be_bytes()).unwrap();
    s.bad_peer.write_all(&[0u8; 100]).unwrap();

    let e = parser_error(&s.ep, s.bad);
    assert_eq!(e.errno(), errno::EMSGSIZE, "{e}");
    assert!(
        matches!(
            e,
            StrError::TooBig {
                length: Some(5004),
                max: 1024,
                offset: 0,
                ..
            }
        ),
        "{e:?}"
    );
    let p = s.ep.connection_stats(s.bad).unwrap().parser;
    assert_eq!((p.msg_too_big, p.aborts, p.msgs), (1, 1, 0));
    assert_eq!(
        s.ep.connection_error(s.bad).and_then(|e| e.raw_os_error()),
        Some(errno::EMSGSIZE)
    );
    good_connection_still_works(&s.ep, &mut s.good_peer, s.good);
    bad_connection_receives_nothing_but_still_transmits(&mut s);
}

#[test]
fn length_shorter_than_the_header_fails_only_that_connection_with_eproto() {
    // The length counts the whole message, header included: 2 cannot be right for a 4-byte
    // header.
    let lf = LengthField::builder()
        .width(4)
        .includes_header(true)
        .build()
        .unwrap();
    let mut s = setup(Arc::new(lf), AttachOptions::default());
    // One good message first: the error must not take it back.
    s.bad_peer.write_all(&[0, 0, 0, 6, b'o', b'k']).unwrap();
    let first = s.ep.recv().unwrap();
    assert_eq!(
        (&first.data[..], first.conn),
        (&[0, 0, 0, 6, b'o', b'k'][..], s.bad)
    );
    s.bad_peer.write_all(&[0, 0, 0, 2, 9, 9, 9]).unwrap();

    let e = parser_error(&s.ep, s.bad);
    assert_eq!(e.errno(), errno::EPROTO, "{e}");
    assert_eq!(
        e.offset(),
        6,
        "the failing message starts after the first one"
    );
    let p = s.ep.connection_stats(s.bad).unwrap().parser;
    assert_eq!((p.interrupted, p.aborts, p.msgs), (1, 1, 1));
    good_connection_still_works(&s.ep, &mut s.good_peer, s.good);
    bad_connection_receives_nothing_but_still_transmits(&mut s);
}

#[test]
fn garbage_fails_only_that_connection() {
    // Someone speaks HTTP to a Thrift port: "GET " read as a length is about 1.2 GB.
    let mut s = setup(thrift(), AttachOptions::default());
    s.bad_peer
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .unwrap();

    let e = parser_error(&s.ep, s.bad);
    assert_eq!(e.errno(), errno::EMSGSIZE, "{e}");
    assert!(
        matches!(
            e,
            StrError::TooBig {
                length: Some(0x4745_5424),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.ep.connection_stats(s.bad).unwrap().parser.msg_too_big, 1);
    good_connection_still_works(&s.ep, &mut s.good_peer, s.good);
    bad_connection_receives_nothing_but_still_transmits(&mut s);
}

#[test]
fn peer_reset_mid_message_fails_only_that_connection() {
    let Setup {
        ep,
        mut good_peer,
        good,
        mut bad_peer,
        bad,
    } = setup(thrift(), AttachOptions::default());
    let whole = frame(&[7u8; 1000]);
    let half = &whole[..500];
    bad_peer.write_all(half).unwrap();
    // Make sure kcm holds the half message before the reset arrives.
    wait_for("the half message read", || {
        ep.connection_stats(bad)
            .is_some_and(|c| c.parser.bytes == half.len() as u64)
    });
    set_linger_zero(&bad_peer);
    drop(bad_peer);

    let seen = wait_for_event(&ep, bad, "the read error", |k| {
        matches!(k, ConnectionEventKind::ReadError(_))
    });
    let read_err = seen.iter().find(|e| e.conn == bad).map(|e| e.kind.clone());
    assert_eq!(read_err, Some(ConnectionEventKind::ReadError(ECONNRESET)));
    assert_eq!(
        read_err.map(|k| k.errno()),
        Some(errno::EPIPE),
        "a TCP state change posts EPIPE"
    );
    let p = ep.connection_stats(bad).unwrap().parser;
    assert_eq!(
        (p.msgs, p.bytes),
        (0, half.len() as u64),
        "the half message is not delivered"
    );
    good_connection_still_works(&ep, &mut good_peer, good);
    // The dead connection can still be unattached cleanly.
    ep.unattach_id(bad).unwrap();
    assert_eq!(ep.connections(), vec![good]);
}

#[test]
fn peer_close_while_a_message_is_half_sent_to_it_fails_only_that_connection() {
    let ep = endpoint(Kind::Datagram);
    // The bad connection is first in line for transmit and has small buffers, so a big
    // message stays half written until its peer reads — which it never does.
    let (bad_peer, bad_server) = tcp_pair();
    shrink_recv_buffer(&bad_peer, 64 * 1024);
    shrink_send_buffer(&bad_server, 4096);
    let bad = ep.attach(&bad_server, thrift()).unwrap();
    let (mut good_peer, good_server) = tcp_pair();
    let good = ep.attach(&good_server, thrift()).unwrap();

    let big = frame(&vec![3u8; 1 << 20]);
    ep.send(Bytes::from(big.clone())).unwrap();
    assert_eq!(ep.mux_stats().tx_msgs, 0, "half written");
    // Closing with unread data resets the connection.
    drop(bad_peer);

    let seen = wait_for_event(&ep, bad, "the transmit abort", |k| {
        *k == ConnectionEventKind::TxAborted
    });
    let abort = seen
        .iter()
        .find(|e| e.conn == bad && e.kind == ConnectionEventKind::TxAborted);
    assert_eq!(abort.map(|e| e.kind.errno()), Some(errno::EPIPE));
    assert_eq!(ep.connection_stats(bad).unwrap().tx.tx_aborts, 1);
    // The message is retried from its first byte on the good connection and arrives whole.
    assert_eq!(read_frame(&mut good_peer).unwrap(), big);
    assert_eq!(ep.mux_stats().tx_retries, 1);
    let m = frame(b"after");
    good_peer.write_all(&m).unwrap();
    let got = ep.recv().unwrap();
    assert_eq!((&got.data[..], got.conn), (&m[..], good));
    ep.send(Bytes::from(m.clone())).unwrap();
    assert_eq!(
        read_frame(&mut good_peer).unwrap(),
        m,
        "the dead connection is skipped"
    );
}
