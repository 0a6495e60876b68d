//! Checklist `kcm-spec.md` §11, "Receive / parsing" (§4.3–§4.4, §5.5 receive side), plus the
//! connection options SO_RCVBUF and SO_RCVTIMEO of "Options and errors" (§6.3), over real
//! loopback sockets.
//!
//! Every parser failure is checked to stop that connection only: another connection keeps
//! delivering, the failed one's bytes stay unread in its socket, and transmitting on it still
//! works (§4.4).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kcm::{
    AttachOptions, ConnectionEventKind, ConnectionId, Endpoint, Kind, MuxOptions, Parse, Parser,
};
use kcm_core::LengthField;

/// Checks that the failed connection `bad` stopped receiving and nothing else changed: a
/// message on `good` is delivered, `bad`'s new bytes stay in its socket unread, and a message
/// sent on `bad` reaches its peer.
#[track_caller]
fn assert_only_this_connection_stopped(
    ep: &Endpoint,
    (bad, bad_client): (ConnectionId, &mut TcpStream),
    (good, good_client): (ConnectionId, &mut TcpStream),
) {
    let msgs_before = ep
        .connection_stats(bad)
        .expect("connection still attached")
        .parser
        .msgs;
    let unread = || -> usize {
        let text = ep.proc_kcm();
        proc_conn_row(&text, bad.index).expect("psock row")[5]
            .parse()
            .expect("Recv-Q")
    };
    let unread_before = unread();
    let ignored = frame(b"ignored");
    bad_client
        .write_all(&ignored)
        .expect("write on the failed connection");
    good_client
        .write_all(&frame(b"healthy"))
        .expect("write on the healthy connection");
    let m = ep.recv().expect("message from the healthy connection");
    assert_eq!((&m.data[..], m.conn), (&frame(b"healthy")[..], good));
    // The failed connection is not read any more: its new bytes wait in the socket.
    wait_for("the failed connection's bytes to sit unread", || {
        unread() == unread_before + ignored.len()
    });
    assert_eq!(
        ep.connection_stats(bad)
            .expect("connection still attached")
            .parser
            .msgs,
        msgs_before
    );
    assert!(try_recv(ep).is_none());
    assert!(
        ep.connections().contains(&bad),
        "a parser error detached the connection"
    );
    ep.send_to(bad, Bytes::from(frame(b"tx still works")))
        .expect("send on the failed connection");
    assert_eq!(
        read_frame(bad_client).expect("reply on the failed connection"),
        frame(b"tx still works")
    );
}

/// One endpoint with a connection attached with `parser`/`opts` (the one tests break) and a
/// healthy Thrift one: `(ep, (bad, bad_client, bad_server), (good, good_client, good_server))`.
#[allow(clippy::type_complexity)]
fn two_connections(
    parser: Arc<dyn Parser>,
    opts: AttachOptions,
) -> (
    Endpoint,
    (ConnectionId, TcpStream, TcpStream),
    (ConnectionId, TcpStream, TcpStream),
) {
    let ep = endpoint(Kind::Datagram);
    let (bc, bs) = tcp_pair();
    let (gc, gs) = tcp_pair();
    let bad = ep
        .attach_with(&bs, parser, opts)
        .expect("attach the connection under test");
    let good = ep
        .attach(&gs, thrift())
        .expect("attach the healthy connection");
    (ep, (bad, bc, bs), (good, gc, gs))
}

/// The parser error recorded as a connection event.
fn parser_event_errno(ep: &Endpoint, conn: ConnectionId) -> Option<i32> {
    ep.take_events().into_iter().find_map(|e| match e.kind {
        ConnectionEventKind::ParserError(ref s) if e.conn == conn => Some(s.errno()),
        _ => None,
    })
}

/// Thrift framing, recording every view it is shown and its answer.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<(Vec<u8>, Parse)>>);

impl Parser for Recording {
    fn parse(&self, view: &[u8]) -> Parse {
        let answer = thrift().parse(view);
        self.0
            .lock()
            .expect("recording lock")
            .push((view.to_vec(), answer));
        answer
    }
}

/// §4.3 and decision 1: the parser is shown the current message from its first byte (even
/// when it shares a segment with the previous one), again each time more arrives, until it
/// answers; once it has answered, it is not called again for that message.
#[test]
fn parser_sees_the_current_message_from_its_first_byte_until_it_answers() {
    let ep = endpoint(Kind::Datagram);
    let rec = Arc::new(Recording::default());
    let (mut client, server) = tcp_pair();
    let conn = ep.attach(&server, rec.clone()).unwrap();
    let a = frame(b"first!");
    let b = frame(b"second message");

    client.write_all(&[&a[..], &b[..2]].concat()).unwrap();
    wait_for("the parser to look at B's first two bytes", || {
        ep.connection_stats(conn).unwrap().parser.need_more_hdr >= 1
    });
    client.write_all(&b[2..5]).unwrap();
    wait_for("B's length to be known", || {
        rec.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, p)| *p == Parse::Length(b.len()))
    });
    client.write_all(&b[5..]).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &a[..]);
    assert_eq!(&ep.recv().unwrap().data[..], &b[..]);

    let calls = rec.0.lock().unwrap().clone();
    // A: shown from its first byte (possibly followed by B's first bytes), answered at once.
    assert!(calls[0].0.starts_with(&a), "first view {:?}", calls[0].0);
    assert_eq!(calls[0].1, Parse::Length(a.len()));
    // B: every view starts at B's first byte (never at the segment start, which is A's),
    // grows with each call, and the calls stop once the length is answered, before the
    // body arrived.
    let b_calls = &calls[1..];
    assert!(!b_calls.is_empty());
    for (i, (view, answer)) in b_calls.iter().enumerate() {
        assert!(
            b.starts_with(view),
            "call {i} was shown {view:?}, not a prefix of B"
        );
        let last = i == b_calls.len() - 1;
        assert_eq!(
            *answer == Parse::NeedMore,
            !last,
            "call {i} answered {answer:?}"
        );
        if i > 0 {
            assert!(
                view.len() > b_calls[i - 1].0.len(),
                "call {i} was shown no new bytes"
            );
        }
    }
    assert!(
        b_calls.last().unwrap().0.len() <= 5,
        "called again after answering"
    );
}

/// A parser with the kernel's raw `int` contract: one length byte counting itself, `0xff`
/// is a corrupt stream (`-EBADMSG`).
#[derive(Debug)]
struct RawByteLength;

impl Parser for RawByteLength {
    fn parse(&self, view: &[u8]) -> Parse {
        let raw: i64 = match view.first() {
            None => 0,
            Some(0xff) => -i64::from(errno::EBADMSG),
            Some(&n) => i64::from(n),
        };
        Parse::from_raw(raw)
    }
}

/// §4.1: a positive result is the total length (header included), 0 means "need more",
/// a negative one is fatal for the connection.
#[test]
fn parser_result_is_total_length_or_need_more_or_fatal_error() {
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(Arc::new(RawByteLength), AttachOptions::default());
    bc.write_all(&[3, b'a', b'b', 5, b'x']).unwrap();
    let m = ep.recv().unwrap();
    assert_eq!((&m.data[..], m.conn), (&[3, b'a', b'b'][..], bad));
    wait_for("the rest to be asked for", || {
        ep.connection_stats(bad).unwrap().parser.bytes == 5
    });
    assert!(
        try_recv(&ep).is_none(),
        "an incomplete message was delivered"
    );
    bc.write_all(&[b'y', b'z', b'w', 0xff]).unwrap();
    assert_eq!(
        &ep.recv().unwrap().data[..],
        &[5, b'x', b'y', b'z', b'w'][..]
    );
    assert_eq!(wait_conn_error(&ep, bad), errno::EBADMSG);
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// §4.3 step 4: a length above the maximum fails the connection with EMSGSIZE
/// (`msg_too_big`).
#[test]
fn message_longer_than_the_maximum_fails_the_connection_with_emsgsize() {
    let opts = AttachOptions::default().max_message_size(64);
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) = two_connections(thrift(), opts);
    bc.write_all(&frame(&[1u8; 60])).unwrap(); // 64 bytes: fits exactly
    assert_eq!(ep.recv().unwrap().data.len(), 64);
    bc.write_all(&frame(&[2u8; 61])).unwrap();
    assert_eq!(wait_conn_error(&ep, bad), errno::EMSGSIZE);
    assert_eq!(parser_event_errno(&ep, bad), Some(errno::EMSGSIZE));
    let s = ep.connection_stats(bad).unwrap().parser;
    assert_eq!((s.msgs, s.msg_too_big), (1, 1));
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// §6.3: without an explicit maximum, the connection's SO_RCVBUF is the maximum message size.
#[test]
fn connection_rcvbuf_is_the_default_maximum_message_size() {
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    rustix::net::sockopt::set_socket_recv_buffer_size(&server, 4096).unwrap();
    let max = rustix::net::sockopt::socket_recv_buffer_size(&server).unwrap();
    let conn = ep.attach(&server, thrift()).unwrap();
    client.write_all(&frame(&vec![1u8; max - 4])).unwrap();
    assert_eq!(ep.recv().unwrap().data.len(), max);
    client.write_all(&frame(&vec![2u8; max - 3])).unwrap();
    assert_eq!(wait_conn_error(&ep, conn), errno::EMSGSIZE);
}

/// Needs 6 bytes before it answers, then claims a 3-byte message.
#[derive(Debug)]
struct ShortAfterMore;

impl Parser for ShortAfterMore {
    fn parse(&self, view: &[u8]) -> Parse {
        if view.len() < 6 {
            Parse::NeedMore
        } else {
            Parse::Length(3)
        }
    }
}

/// §4.3 step 4: a length that does not reach past the bytes already seen before the newest
/// chunk is EPROTO (`bad_hdr_len`); with everything in the first chunk any length passes.
#[test]
fn length_not_reaching_past_bytes_already_seen_is_eproto() {
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(Arc::new(ShortAfterMore), AttachOptions::default());
    bc.write_all(b"abcd").unwrap();
    wait_for("the parser to ask for more", || {
        ep.connection_stats(bad).unwrap().parser.need_more_hdr >= 1
    });
    bc.write_all(b"efgh").unwrap();
    assert_eq!(wait_conn_error(&ep, bad), errno::EPROTO);
    let s = ep.connection_stats(bad).unwrap().parser;
    assert_eq!((s.msgs, s.bad_hdr_len), (0, 1));
    assert!(try_recv(&ep).is_none());

    // The same answer for a first chunk that holds all of it is fine.
    let (mut c2, s2) = tcp_pair();
    let whole = ep.attach(&s2, Arc::new(ShortAfterMore)).unwrap();
    c2.write_all(b"abcdefgh").unwrap();
    let m = ep.recv().unwrap();
    assert_eq!((&m.data[..], m.conn), (&b"abc"[..], whole));
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// A length field shorter than its own header is a corrupt stream: EPROTO.
#[test]
fn length_field_shorter_than_its_header_fails_with_eproto() {
    let lf = LengthField::builder()
        .width(4)
        .includes_header(true)
        .build()
        .unwrap();
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(Arc::new(lf), AttachOptions::default());
    bc.write_all(&[0, 0, 0, 6, b'o', b'k']).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &[0, 0, 0, 6, b'o', b'k'][..]);
    bc.write_all(&[0, 0, 0, 2, b'x', b'x']).unwrap();
    assert_eq!(wait_conn_error(&ep, bad), errno::EPROTO);
    assert_eq!(parser_event_errno(&ep, bad), Some(errno::EPROTO));
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// Thrift framing, but a message starting with `X` is refused with `errno`, and with
/// `after` set only once at least that many bytes were seen ("need more" before).
#[derive(Debug)]
struct Refuse {
    errno: i32,
    after: usize,
}

impl Parser for Refuse {
    fn parse(&self, view: &[u8]) -> Parse {
        match view.first() {
            Some(b'X') if view.len() < self.after => Parse::NeedMore,
            Some(b'X') => Parse::Error(self.errno),
            _ => thrift().parse(view),
        }
    }
}

/// §4.4: a parser's `Error(e)` (a BPF program's `-e`) posts `e` on the connection
/// (`interrupted`), and stops that connection only.
#[test]
fn parser_error_posts_its_errno_on_the_connection() {
    let parser = Arc::new(Refuse {
        errno: errno::EBADMSG,
        after: 0,
    });
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(parser, AttachOptions::default());
    bc.write_all(b"Xjunk").unwrap();
    assert_eq!(wait_conn_error(&ep, bad), errno::EBADMSG);
    assert_eq!(parser_event_errno(&ep, bad), Some(errno::EBADMSG));
    let s = ep.connection_stats(bad).unwrap().parser;
    assert_eq!((s.interrupted, s.unrecov_intr), (1, 0));
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// §4.4: the general rule — after any parser error the connection receives nothing more,
/// the others carry on, and its transmit side keeps working until it fails or is
/// unattached.
#[test]
fn parser_error_stops_only_that_connection_and_its_transmit_continues() {
    let parser = Arc::new(Refuse {
        errno: errno::EPROTO,
        after: 0,
    });
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(parser, AttachOptions::default());
    bc.write_all(&[&frame(b"before")[..], b"X"].concat())
        .unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"before")[..]);
    assert_eq!(wait_conn_error(&ep, bad), errno::EPROTO);
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
    assert_conn_flag(&ep, bad, "RxStop", true);
    assert_conn_flag(&ep, good, "RxStop", false);
}

/// §4.4: `ESTRPIPE` on the first look at a message hands the stream back exactly at that
/// message (`interrupted`): kcm returns the bytes it had read from there on at unattach,
/// and the rest is still in the socket.
#[test]
fn estrpipe_at_message_start_hands_the_stream_back_at_that_message() {
    let parser = Arc::new(Refuse {
        errno: errno::ESTRPIPE,
        after: 0,
    });
    let (ep, (bad, mut bc, mut bs), (good, mut gc, _gs)) =
        two_connections(parser, AttachOptions::default());
    bc.write_all(&[&frame(b"kcm's")[..], b"X: yours from here"].concat())
        .unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"kcm's")[..]);
    assert_eq!(wait_conn_error(&ep, bad), errno::ESTRPIPE);
    let s = ep.connection_stats(bad).unwrap().parser;
    assert_eq!((s.interrupted, s.unrecov_intr), (1, 0));
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));

    let taken = ep.unattach(&bs).unwrap();
    bs.set_read_timeout(Some(TIMEOUT)).unwrap();
    let ignored = frame(b"ignored"); // written by the check above, never read by kcm
    let mut rest = vec![0u8; b"X: yours from here".len() + ignored.len() - taken.len()];
    std::io::Read::read_exact(&mut bs, &mut rest).unwrap();
    assert_eq!(
        [&taken[..], &rest[..]].concat(),
        [&b"X: yours from here"[..], &ignored[..]].concat()
    );
}

/// §4.4: `ESTRPIPE` after the parser asked for more of the message is unrecoverable:
/// ENODATA (`unrecov_intr`).
#[test]
fn estrpipe_in_the_middle_of_a_message_is_enodata() {
    let parser = Arc::new(Refuse {
        errno: errno::ESTRPIPE,
        after: 4,
    });
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(parser, AttachOptions::default());
    bc.write_all(b"X1").unwrap();
    wait_for("the parser to ask for more", || {
        ep.connection_stats(bad).unwrap().parser.need_more_hdr >= 1
    });
    bc.write_all(b"23").unwrap();
    assert_eq!(wait_conn_error(&ep, bad), errno::ENODATA);
    let s = ep.connection_stats(bad).unwrap().parser;
    assert_eq!((s.interrupted, s.unrecov_intr), (0, 1));
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// §4.3 "Limits": the assembly timer starts with the first byte of a message and is not
/// restarted by later chunks; expiry is ETIMEDOUT (`msg_timeouts`).
#[test]
fn assembly_timeout_is_armed_at_the_first_byte_and_not_rearmed_per_chunk() {
    let timeout = Duration::from_millis(300);
    let opts = AttachOptions::default().timeout(timeout);
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) = two_connections(thrift(), opts);
    let mut dribble = bc.try_clone().unwrap();
    let start = Instant::now();
    dribble.write_all(&[0, 0, 1]).unwrap(); // a 256+ byte message, never finished in time
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = stop.clone();
    let writer = std::thread::spawn(move || {
        // A new byte every 50 ms for 2 s: a timer restarted per chunk would never fire.
        for _ in 0..40 {
            if stopper.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            dribble.write_all(&[0]).unwrap();
        }
    });
    let errno = wait_conn_error(&ep, bad);
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(errno, errno::ETIMEDOUT);
    assert!(took >= timeout, "fired after {took:?}, before the timeout");
    assert!(
        took < Duration::from_millis(1900),
        "fired after {took:?}: re-armed by chunks?"
    );
    assert_eq!(ep.connection_stats(bad).unwrap().parser.msg_timeouts, 1);
    assert_only_this_connection_stopped(&ep, (bad, &mut bc), (good, &mut gc));
}

/// §4.3: completing a message cancels its timer; an idle connection never times out.
#[test]
fn completed_message_cancels_the_assembly_timer() {
    let timeout = Duration::from_millis(150);
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    let conn = ep
        .attach_with(&server, thrift(), AttachOptions::default().timeout(timeout))
        .unwrap();
    let m = frame(b"in two pieces");
    client.write_all(&m[..6]).unwrap();
    wait_for("the first piece to be read", || {
        ep.connection_stats(conn).unwrap().parser.bytes == 6
    });
    client.write_all(&m[6..]).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &m[..]);
    // Proving an absence takes waiting: three timeouts of silence.
    std::thread::sleep(timeout * 3);
    assert!(
        ep.connection_error(conn).is_none(),
        "an idle connection timed out"
    );
    client.write_all(&frame(b"later")).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"later")[..]);
    assert_eq!(ep.connection_stats(conn).unwrap().parser.msg_timeouts, 0);
}

/// §6.3: without an explicit timeout, the connection's SO_RCVTIMEO is the assembly timeout.
#[test]
fn connection_rcvtimeo_is_the_default_assembly_timeout() {
    let ep = endpoint(Kind::Datagram);
    let (mut client, server) = tcp_pair();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let conn = ep.attach(&server, thrift()).unwrap();
    client.write_all(&[0, 0, 0, 9, b'x']).unwrap();
    assert_eq!(wait_conn_error(&ep, conn), errno::ETIMEDOUT);
    assert_eq!(ep.connection_stats(conn).unwrap().parser.msg_timeouts, 1);
}

/// §4.3 step 5: once the length is known, nothing is delivered until the whole remainder
/// is there (and /proc shows how much is missing as `RxWait=<n>`).
#[test]
fn known_length_waits_for_the_whole_remainder() {
    let (ep, mut client, _server, conn) = attached();
    let m = frame(&[7u8; 1000]);
    client.write_all(&m[..504]).unwrap();
    wait_for("the first half to be read", || {
        ep.connection_stats(conn).unwrap().parser.bytes == 504
    });
    assert!(try_recv(&ep).is_none(), "half a message was delivered");
    assert_conn_flag(&ep, conn, "RxWait=500", true);
    client.write_all(&m[504..]).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &m[..]);
    assert_eq!(ep.connection_stats(conn).unwrap().parser.msgs, 1);
}

/// §2.1: KCM neither adds nor strips framing; messages arrive with their header.
#[test]
fn delivered_messages_include_their_framing_header() {
    let ep = endpoint(Kind::Datagram);
    let (mut c1, s1) = tcp_pair();
    let (mut c2, s2) = tcp_pair();
    ep.attach(&s1, thrift()).unwrap();
    ep.attach(&s2, kcm::presets::by_name("dns").unwrap())
        .unwrap();
    c1.write_all(&frame(b"thrift body")).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"thrift body")[..]);
    c2.write_all(&[0, 3, b'd', b'n', b's']).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &[0, 3, b'd', b'n', b's'][..]);
}

/// §3.6, §5.5: a peer reset in the middle of a message posts EPIPE on the connection (the
/// state change overwrites TCP's own ECONNRESET in the kernel), the partial message is never
/// delivered, and the other connections are unaffected.
#[test]
fn peer_reset_mid_message_posts_epipe_and_delivers_nothing_partial() {
    let (ep, (bad, bc, bs), (good, mut gc, _gs)) =
        two_connections(thrift(), AttachOptions::default());
    let mut bc = bc;
    bc.write_all(&frame(b"whole")).unwrap();
    assert_eq!(&ep.recv().unwrap().data[..], &frame(b"whole")[..]);
    bc.write_all(&frame(b"cut short")[..6]).unwrap();
    wait_for("the partial message to be read", || {
        ep.connection_stats(bad).unwrap().parser.bytes == 15
    });
    rustix::net::sockopt::set_socket_linger(&bc, Some(Duration::ZERO)).unwrap();
    drop(bc); // RST
    assert_eq!(wait_conn_error(&ep, bad), errno::EPIPE);

    gc.write_all(&frame(b"unaffected")).unwrap();
    let m = ep.recv().unwrap();
    assert_eq!((&m.data[..], m.conn), (&frame(b"unaffected")[..], good));
    assert!(try_recv(&ep).is_none(), "a partial message was delivered");
    assert_eq!(ep.connection_stats(bad).unwrap().parser.msgs, 1);
    let leftover = ep.unattach(&bs).unwrap();
    assert_eq!(&leftover[..], &frame(b"cut short")[..6]);
}

/// §5.5: the peer closing in the middle of a message posts EPIPE; the partial message is
/// never delivered; transmit on the connection still works (the peer only closed its
/// sending side).
#[test]
fn peer_close_mid_message_posts_epipe_and_delivers_nothing_partial() {
    let (ep, (bad, mut bc, _bs), (good, mut gc, _gs)) =
        two_connections(thrift(), AttachOptions::default());
    bc.write_all(&frame(b"cut short")[..6]).unwrap();
    bc.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(wait_conn_error(&ep, bad), errno::EPIPE);
    assert!(ep
        .take_events()
        .iter()
        .any(|e| e.conn == bad && e.kind == ConnectionEventKind::PeerClosed));

    gc.write_all(&frame(b"unaffected")).unwrap();
    let m = ep.recv().unwrap();
    assert_eq!((&m.data[..], m.conn), (&frame(b"unaffected")[..], good));
    assert!(try_recv(&ep).is_none(), "a partial message was delivered");
    ep.send_to(bad, Bytes::from(frame(b"reply"))).unwrap();
    assert_eq!(read_frame(&mut bc).unwrap(), frame(b"reply"));
}

/// Messages are parsed and queued as they arrive even while the only receiving thread is
/// busy with a message it took (the engine leaves new bytes to that thread for a moment,
/// then reads them itself).
#[test]
fn messages_are_queued_while_the_receiving_thread_is_busy() {
    let (ep, mut client, _server, conn) = attached();
    client.write_all(&frame(b"first")).expect("write");
    let m = ep.recv().expect("the first message");
    assert_eq!((&m.data[4..], m.conn), (&b"first"[..], conn));
    // The thread that took it now "works" on it and does not come back for a while.
    client.write_all(&frame(b"second")).expect("write");
    wait_for("the second message queued with nobody receiving", || {
        queued(&ep) == 1
    });
    let m = ep.recv().expect("the second message");
    assert_eq!(&m.data[4..], b"second");
}

/// Each endpoint is the first choice for its share of the connections (it is woken first for
/// their bytes). An endpoint whose thread never comes back must not keep its share unread in
/// the sockets: every message is received by the thread that is there or queued (by the
/// steering rules) on the absent endpoint, where it can be seen.
#[test]
fn an_absent_endpoint_does_not_keep_its_share_of_the_connections_unread() {
    let a = endpoint(Kind::Datagram);
    let b = clone_of(&a); // never receives
    let pairs: Vec<(TcpStream, TcpStream)> = (0..4).map(|_| tcp_pair()).collect();
    for (_, server) in &pairs {
        a.attach(server, thrift()).expect("attach");
    }
    // Every connection at once, enough that `a` has plenty of its own share to work on.
    for (i, (client, _)) in pairs.iter().enumerate() {
        let mut burst = Vec::new();
        for k in 0..40u8 {
            burst.extend_from_slice(&frame(&[i as u8, k]));
        }
        (&*client).write_all(&burst).expect("write");
    }
    let mut got = vec![Vec::new(); 4];
    let deadline = Instant::now() + Duration::from_secs(10);
    a.set_read_timeout(Some(Duration::from_millis(50)));
    while got.iter().map(Vec::len).sum::<usize>() + queued(&b) as usize != 160 {
        assert!(Instant::now() < deadline, "messages left unread: {got:?}");
        match a.recv() {
            Ok(m) => got[usize::from(m.data[4])].push(m.data[5]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    // What `a` got of each connection is in order (a prefix, the rest went to `b` in passes).
    for per_conn in &got {
        assert!(per_conn.windows(2).all(|w| w[0] < w[1]), "{per_conn:?}");
    }
}

/// A thread that always has a message waiting never blocks in its epoll, so it is not woken for
/// a quiet connection's bytes. It still reads them when it comes back for its next message
/// (while the engine leaves them to it), and the quiet connection's message then takes its
/// turn among the parked ones instead of waiting behind the busy connection's whole backlog.
/// Here the engine would leave them for a minute, so only the receiving thread can read them.
#[test]
fn a_busy_thread_reads_a_quiet_connection_without_draining_the_busy_one_first() {
    let opts = MuxOptions::default().busy_read_defer(Duration::from_secs(60));
    let ep = guard(Endpoint::with_options(Kind::Datagram, opts).expect("new endpoint"));
    ep.set_recv_buffer_size(1).expect("SO_RCVBUF");
    let (busy_client, busy_server) = tcp_pair();
    let (mut quiet_client, quiet_server) = tcp_pair();
    let busy = ep.attach(&busy_server, thrift()).expect("attach");
    let quiet = ep.attach(&quiet_server, thrift()).expect("attach");
    // A backlog far longer than the test needs: the writer blocks on flow control and
    // fails once the test is over and the connection closes.
    let writer = std::thread::spawn(move || {
        let burst: Vec<u8> = (0..1000u32).flat_map(|i| frame(&i.to_be_bytes())).collect();
        for _ in 0..20 {
            if (&busy_client).write_all(&burst).is_err() {
                return;
            }
        }
    });
    let mut from_busy = 0;
    let mut before_quiet = None;
    while before_quiet.is_none() {
        let m = ep.recv().expect("a message");
        if m.conn == busy {
            from_busy += 1;
            if from_busy == 10 {
                quiet_client.write_all(&frame(b"quiet")).expect("write");
            }
        } else {
            assert_eq!((m.conn, &m.data[4..]), (quiet, &b"quiet"[..]));
            before_quiet = Some(from_busy);
        }
        // The "work" on each message: the thread is away from its epoll.
        std::thread::sleep(Duration::from_micros(300));
    }
    let waited = before_quiet.unwrap() - 10;
    assert!(
        waited < 100,
        "the quiet message waited for {waited} of the busy connection's 20,000"
    );
    drop((ep, busy_server, quiet_server));
    writer.join().expect("writer");
}
