//! Receive calls: whole reads, truncation, continuation, peek (`kcm-spec.md` §2.3, §2.4).

use super::*;

/// A mux of `kind` whose only endpoint has `msgs` queued, events drained.
fn queued(kind: Kind, msgs: &[Bytes]) -> (MuxCore, EndpointId, ConnectionId) {
    let (mut mux, ep) = mux(kind);
    let c = mux.attach();
    mux.rx_pass(c, msgs.iter().cloned(), None);
    events(&mut mux);
    (mux, ep, c)
}

#[test]
fn a_whole_read_sets_eor_and_counts() {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let (mut mux, ep, c) = queued(kind, &[m(1, 10)]);
        let r = mux.recv(ep, 10, false).unwrap();
        assert_eq!(
            r,
            RecvRead {
                data: m(1, 10),
                conn: c,
                eor: true,
                trunc: false,
                full_len: 10
            }
        );
        assert_eq!(rx_counts(&mux, ep), (1, 10));
        assert_eq!(mux.rx_queued(ep), Some((0, 0)));
        assert_eq!(mux.recv(ep, 10, false), None, "empty queue");
        check_invariants(&mux);
    }
}

#[test]
fn datagram_short_read_truncates_and_drops_the_rest() {
    let (mut mux, ep, c) = queued(
        Kind::Datagram,
        &[Bytes::from_static(b"0123456789"), m(2, 3)],
    );
    let r = mux.recv(ep, 4, false).unwrap();
    let want = RecvRead {
        data: Bytes::from_static(b"0123"),
        conn: c,
        eor: true,
        trunc: true,
        full_len: 10,
    };
    assert_eq!(r, want);
    assert_eq!(
        mux.rx_queued(ep),
        Some((1, 3)),
        "the rest of the message is gone"
    );
    assert_eq!(
        mux.recv(ep, 4, false).unwrap().data,
        m(2, 3),
        "next read: next message"
    );
    assert_eq!(rx_counts(&mux, ep), (2, 7), "bytes as copied");
    check_invariants(&mux);
}

#[test]
fn datagram_zero_length_read_drops_the_whole_message() {
    let (mut mux, ep, _) = queued(Kind::Datagram, &[m(1, 5)]);
    let r = mux.recv(ep, 0, false).unwrap();
    assert!(r.data.is_empty() && r.trunc && r.eor);
    assert_eq!(mux.rx_queued(ep), Some((0, 0)));
    check_invariants(&mux);
}

#[test]
fn seqpacket_short_read_continues_with_the_next_read() {
    let (mut mux, ep, c) = queued(
        Kind::SeqPacket,
        &[Bytes::from_static(b"0123456789"), m(2, 3)],
    );
    let r = mux.recv(ep, 4, false).unwrap();
    let want = RecvRead {
        data: Bytes::from_static(b"0123"),
        conn: c,
        eor: false,
        trunc: false,
        full_len: 10,
    };
    assert_eq!(r, want);
    assert_eq!(
        mux.rx_queued(ep),
        Some((2, 9)),
        "the remainder stays at the head"
    );
    check_invariants(&mux);
    let r = mux.recv(ep, 4, false).unwrap();
    assert_eq!((&r.data[..], r.eor, r.full_len), (&b"4567"[..], false, 6));
    let r = mux.recv(ep, 4, false).unwrap();
    assert_eq!(
        (&r.data[..], r.eor, r.trunc, r.full_len),
        (&b"89"[..], true, false, 2)
    );
    assert_eq!(mux.recv(ep, 4, false).unwrap().data, m(2, 3));
    assert_eq!(
        rx_counts(&mux, ep),
        (2, 13),
        "a message counts once, on its last piece"
    );
    check_invariants(&mux);
}

#[test]
fn seqpacket_continuation_can_be_peeked() {
    let (mut mux, ep, _) = queued(Kind::SeqPacket, &[Bytes::from_static(b"abcdef")]);
    mux.recv(ep, 2, false).unwrap();
    let p = mux.recv(ep, 100, true).unwrap();
    assert_eq!((&p.data[..], p.eor, p.full_len), (&b"cdef"[..], false, 4));
    assert_eq!(
        mux.recv(ep, 100, false).unwrap().data,
        Bytes::from_static(b"cdef")
    );
}

#[test]
fn peek_copies_without_consuming_flags_or_counters() {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let (mut mux, ep, c) = queued(kind, &[m(1, 10)]);
        for max in [3, 10, 100] {
            let p = mux.recv(ep, max, true).unwrap();
            let want = RecvRead {
                data: m(1, max.min(10)),
                conn: c,
                eor: false,
                trunc: false,
                full_len: 10,
            };
            assert_eq!(p, want);
        }
        assert_eq!(mux.rx_queued(ep), Some((1, 10)));
        assert_eq!(mux.endpoint_stats(ep).unwrap(), EndpointStats::default());
        assert_eq!(mux.recv(ep, 100, false).unwrap().data, m(1, 10));
        assert_eq!(events(&mut mux), vec![]);
        check_invariants(&mux);
    }
}

#[test]
fn readable_fires_when_the_queue_becomes_non_empty() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let c = mux.attach();
    mux.rx_pass(c, [m(1, 1)], None);
    mux.rx_pass(c, [m(2, 1)], None);
    assert_eq!(
        events(&mut mux),
        vec![Event::Readable(ep)],
        "not again while non-empty"
    );
    recv_all(&mut mux, ep);
    mux.rx_pass(c, [m(3, 1)], None);
    assert_eq!(events(&mut mux), vec![Event::Readable(ep)]);
}

#[test]
fn endpoint_errors_are_posted_taken_and_wake_both_sides() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.set_endpoint_error(ep, errno::EPIPE);
    assert!(mux.has_endpoint_error(ep));
    assert_eq!(
        events(&mut mux),
        vec![Event::Readable(ep), Event::Writable(ep)]
    );
    assert!(mux.can_send(ep), "a send would not block: it fails at once");
    assert_eq!(mux.take_endpoint_error(ep), Some(errno::EPIPE));
    assert_eq!(mux.take_endpoint_error(ep), None);
    mux.set_endpoint_error(EndpointId(7), errno::EPIPE);
    assert_eq!(events(&mut mux), vec![], "unknown endpoint: nothing");
}
