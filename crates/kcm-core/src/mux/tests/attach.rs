//! Attaching and unattaching connections (`kcm-spec.md` §3.1, §3.2).

use super::*;
use crate::stats::ParserStats;

/// A datagram mux with connections `a` and `b`, attached in that order, and `data` sent from
/// its endpoint: the runtime is now writing the transmit, on `a` (the first one handed out).
fn writing_on_a(data: &[u8]) -> (MuxCore, EndpointId, [ConnectionId; 2], Transmit) {
    let (mut mux, ep) = mux(Kind::Datagram);
    let a = mux.attach();
    let b = mux.attach();
    send(&mut mux, ep, data);
    let tx = mux.poll_transmit(ep).unwrap();
    assert_eq!(
        tx.conn, a,
        "the first connection attached is the first handed out"
    );
    (mux, ep, [a, b], tx)
}

#[test]
fn connection_indices_are_the_lowest_free_and_ids_never_repeat() {
    let (mut mux, _) = mux(Kind::Datagram);
    let a = mux.attach();
    let b = mux.attach();
    let c = mux.attach();
    assert_eq!((a.index, b.index, c.index), (0, 1, 2));
    assert_eq!(mux.unattach(b, ParserStats::default()), Ok(false));
    let d = mux.attach();
    assert_eq!(d.index, 1, "the hole at 1 is reused");
    assert_ne!(d, b, "but the id is new");
    assert_eq!(mux.connections(), vec![a, d, c]);
    // The stale id addresses nothing, not the connection that reused its index.
    assert_eq!(
        mux.unattach(b, ParserStats::default()),
        Err(MuxError::NotAttached)
    );
    assert_eq!(mux.conn_stats(b), None);
    assert_eq!(
        mux.send(EndpointId(0), m(1, 3), END, Some(b)),
        Err(SendError::NotConnected)
    );
    assert_eq!(mux.stats().psock_attach, 4);
    assert_eq!(mux.stats().psock_unattach, 1);
    check_invariants(&mux);
}

#[test]
fn holes_are_filled_lowest_first_whatever_order_they_opened_in() {
    let (mut mux, _) = mux(Kind::Datagram);
    let ids: Vec<ConnectionId> = (0..5).map(|_| mux.attach()).collect();
    for i in [3, 0, 4] {
        assert_eq!(mux.unattach(ids[i], ParserStats::default()), Ok(false));
    }
    let again: Vec<u32> = (0..4).map(|_| mux.attach().index).collect();
    assert_eq!(again, [0, 3, 4, 5]);
    check_invariants(&mux);
}

#[test]
fn attach_makes_the_connection_available_for_transmit() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let a = mux.attach();
    assert_eq!(events(&mut mux), vec![], "nobody was waiting");
    send(&mut mux, ep, b"msg");
    assert_eq!(events(&mut mux), vec![Event::TxReady(ep)]);
    assert_eq!(flush(&mut mux, ep), vec![(a, b"msg".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn messages_queued_with_no_connection_are_sent_once_one_is_attached() {
    let (mut mux, ep) = mux(Kind::Datagram);
    send(&mut mux, ep, b"first");
    send(&mut mux, ep, b"second");
    assert_eq!(mux.tx_queued(ep), Some((2, 11)));
    assert_eq!(mux.poll_transmit(ep), None);
    assert_eq!(
        events(&mut mux),
        vec![],
        "nothing to do without a connection"
    );
    check_invariants(&mux);
    let a = mux.attach();
    assert_eq!(
        events(&mut mux),
        vec![Event::TxReady(ep)],
        "handed to the waiting endpoint"
    );
    assert_eq!(mux.tx_reserved_by(a), Some(ep));
    assert_eq!(flush(&mut mux, ep), vec![(a, b"firstsecond".to_vec())]);
    assert_eq!(mux.tx_queued(ep), Some((0, 0)));
    check_invariants(&mux);
}

#[test]
fn attached_connections_serve_waiting_endpoints_in_fifo_order() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    let e2 = mux.add_endpoint().unwrap();
    send(&mut mux, e1, b"1");
    send(&mut mux, e0, b"0");
    send(&mut mux, e2, b"2");
    let a = mux.attach();
    let b = mux.attach();
    assert_eq!(
        events(&mut mux),
        vec![Event::TxReady(e1), Event::TxReady(e0)]
    );
    assert_eq!(mux.tx_reserved_by(a), Some(e1));
    assert_eq!(mux.tx_reserved_by(b), Some(e0));
    // When e1 is done, a goes straight to e2, the next waiter.
    assert_eq!(flush(&mut mux, e1), vec![(a, b"1".to_vec())]);
    assert_eq!(mux.tx_reserved_by(a), Some(e2));
    check_invariants(&mux);
}

#[test]
fn unattach_of_an_unknown_connection_is_not_attached() {
    let (mut mux, _) = mux(Kind::Datagram);
    let bogus = ConnectionId { index: 3, gen: 7 };
    assert_eq!(
        mux.unattach(bogus, ParserStats::default()),
        Err(MuxError::NotAttached)
    );
    assert_eq!(MuxError::NotAttached.errno(), 2, "ENOENT");
    // A connection of another mux is unknown here too.
    let (mut other, _) = MuxCore::new(Kind::Datagram).unwrap();
    let _ = other.attach();
    let foreign = other.attach();
    assert_eq!(
        mux.unattach(foreign, ParserStats::default()),
        Err(MuxError::NotAttached)
    );
}

#[test]
fn second_unattach_of_a_free_connection_is_not_attached() {
    let (mut mux, _) = mux(Kind::Datagram);
    let a = mux.attach();
    assert_eq!(mux.unattach(a, ParserStats::default()), Ok(false));
    assert_eq!(events(&mut mux), vec![Event::ConnReleased(a)]);
    assert_eq!(
        mux.unattach(a, ParserStats::default()),
        Err(MuxError::NotAttached)
    );
    assert_eq!(mux.connection_count(), 0);
    assert_eq!(mux.stats().psock_unattach, 1);
}

#[test]
fn unattach_drops_parked_messages_and_counts_them() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.set_rcvbuf(ep, 4).unwrap();
    let a = mux.attach();
    let out = mux.rx_pass(a, [m(1, 4), m(2, 4), m(3, 4)], None);
    assert_eq!((out.delivered, out.parked), (1, 2));
    assert!(mux.is_paused(a));
    events(&mut mux);
    assert_eq!(mux.unattach(a, ParserStats::default()), Ok(false));
    assert_eq!(mux.stats().rx_ready_drops, 2);
    assert!(!mux.is_paused(a));
    // Draining the endpoint finds nothing more: the parked messages are gone, nobody resumes.
    assert_eq!(recv_all(&mut mux, ep), vec![m(1, 4)]);
    assert_eq!(events(&mut mux), vec![Event::ConnReleased(a)]);
    check_invariants(&mux);
}

#[test]
fn unattach_while_reserved_aborts_and_retries_the_message_from_byte_zero_elsewhere() {
    let (mut mux, ep, [a, b], tx) = writing_on_a(b"0123456789");
    assert_eq!(cat(&tx), b"0123456789".to_vec());
    mux.handle_transmit(ep, a, TxResult::Written(4));
    events(&mut mux);
    assert_eq!(mux.unattach(a, ParserStats::default()), Ok(true));
    let ev = events(&mut mux);
    assert!(ev.contains(&Event::ConnError(a, errno::EPIPE)), "{ev:?}");
    assert!(
        ev.contains(&Event::ConnReleased(a)),
        "nobody holds it any more: {ev:?}"
    );
    assert!(ev.contains(&Event::TxReady(ep)), "{ev:?}");
    let s = *mux.stats();
    assert_eq!(
        (s.psock_unattach, s.psock_unattach_rsvd, s.tx_retries),
        (1, 1, 1)
    );
    let agg = mux.aggregate_conn_stats().tx;
    assert_eq!(
        (agg.tx_aborts, agg.reserved, agg.unreserved, agg.tx_bytes),
        (1, 1, 1, 4)
    );
    assert_eq!(
        flush(&mut mux, ep),
        vec![(b, b"0123456789".to_vec())],
        "whole message on b"
    );
    check_invariants(&mux);
}

#[test]
fn unattach_while_the_runtime_writes_defers_the_release_until_reported() {
    let (mut mux, ep, [a, b], _tx) = writing_on_a(b"0123456789");
    events(&mut mux);
    // Another thread unattaches while this transmit is being written.
    assert_eq!(mux.unattach(a, ParserStats::default()), Ok(true));
    assert_eq!(events(&mut mux), vec![Event::ConnError(a, errno::EPIPE)]);
    assert_eq!(mux.connections(), vec![b]);
    assert_eq!(
        mux.unattach(a, ParserStats::default()),
        Err(MuxError::AlreadyUnattaching)
    );
    assert_eq!(MuxError::AlreadyUnattaching.errno(), 114, "EALREADY");
    assert_eq!(mux.poll_transmit(ep), None, "one transmit at a time");
    check_invariants(&mux);
    // The write finishes (whatever it wrote is lost with a): now the socket may go.
    mux.handle_transmit(ep, a, TxResult::Written(10));
    let ev = events(&mut mux);
    assert!(ev.contains(&Event::ConnReleased(a)), "{ev:?}");
    assert!(ev.contains(&Event::TxReady(ep)), "{ev:?}");
    assert_eq!(mux.stats().tx_retries, 1);
    assert_eq!(
        mux.stats().tx_msgs,
        0,
        "bytes written on an unattached connection don't count"
    );
    assert_eq!(flush(&mut mux, ep), vec![(b, b"0123456789".to_vec())]);
    assert_eq!(mux.stats().tx_msgs, 1);
    assert_eq!(mux.connection_count(), 1);
    check_invariants(&mux);
}

#[test]
fn unattach_while_reserved_with_no_other_connection_waits_for_the_next_attach() {
    let (mut mux, ep) = mux(Kind::SeqPacket);
    let a = mux.attach();
    send(&mut mux, ep, b"abcdef");
    let tx = mux.poll_transmit(ep).unwrap();
    mux.handle_transmit(ep, tx.conn, TxResult::Written(2));
    mux.unattach(a, ParserStats::default()).unwrap();
    assert_eq!(mux.poll_transmit(ep), None);
    check_invariants(&mux);
    let b = mux.attach();
    assert_eq!(flush(&mut mux, ep), vec![(b, b"abcdef".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn conn_released_is_emitted_exactly_once_per_unattach() {
    let (mut mux, ep, [a, b], _tx) = writing_on_a(b"x");
    mux.unattach(a, ParserStats::default()).unwrap();
    mux.unattach(b, ParserStats::default()).unwrap();
    mux.handle_transmit(ep, a, TxResult::WouldBlock);
    mux.handle_transmit(ep, a, TxResult::Failed);
    mux.write_space(a);
    let released: Vec<_> = events(&mut mux)
        .into_iter()
        .filter(|e| matches!(e, Event::ConnReleased(_)))
        .collect();
    assert_eq!(
        released,
        vec![Event::ConnReleased(b), Event::ConnReleased(a)]
    );
    assert_eq!(mux.connection_count(), 0);
    assert_eq!(
        mux.tx_queued(ep),
        Some((1, 1)),
        "the message waits for a connection"
    );
    check_invariants(&mux);
}

#[test]
fn rx_pass_on_an_unattached_connection_delivers_nothing() {
    let (mut mux, ep, [a, b], _tx) = writing_on_a(b"x");
    mux.unattach(a, ParserStats::default()).unwrap();
    // a is unattached but still held by the writer: its late messages are not delivered.
    let out = mux.rx_pass(a, [m(1, 4)], None);
    assert_eq!((out.delivered, out.parked), (0, 0));
    mux.unattach(b, ParserStats::default()).unwrap();
    let out = mux.rx_pass(b, [m(2, 4)], None);
    assert_eq!((out.delivered, out.parked), (0, 0));
    assert_eq!(mux.rx_queued(ep), Some((0, 0)));
    check_invariants(&mux);
}

#[test]
fn unattach_folds_the_connection_counters_into_the_aggregates() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let a = mux.attach();
    send(&mut mux, ep, b"abc");
    flush(&mut mux, ep);
    mux.rx_pass(a, [m(1, 7)], None);
    let parser = ParserStats {
        msgs: 1,
        bytes: 7,
        need_more_hdr: 2,
        ..Default::default()
    };
    mux.unattach(a, parser).unwrap();
    let agg = *mux.aggregate_conn_stats();
    assert_eq!(agg.parser, parser);
    assert_eq!(
        (
            agg.tx.tx_msgs,
            agg.tx.tx_bytes,
            agg.tx.reserved,
            agg.tx.unreserved
        ),
        (1, 3, 1, 1)
    );
    assert_eq!(mux.stats().tx_msgs, 1, "mux counters survive unattach");
    assert_eq!(mux.stats().rx_msgs, 1);
}

/// Regression (found by the property test): a connection unattached while a write on it was
/// outstanding kept its "ready" mark after its parked messages were dropped.
#[test]
fn unattach_while_writing_clears_the_parked_state() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.set_recv_disable(ep, true).unwrap();
    send(&mut mux, ep, b"out");
    let a = mux.attach();
    let tx = mux.poll_transmit(ep).unwrap();
    assert_eq!(mux.rx_pass(a, [m(1, 4)], None).parked, 1);
    assert_eq!(mux.unattach(a, ParserStats::default()), Ok(true));
    assert!(!mux.is_paused(a));
    assert_eq!(mux.stats().rx_ready_drops, 1);
    check_invariants(&mux);
    mux.set_recv_disable(ep, false).unwrap();
    mux.handle_transmit(ep, tx.conn, TxResult::Written(3));
    let ev = events(&mut mux);
    assert!(ev.contains(&Event::ConnReleased(a)), "{ev:?}");
    assert!(!ev.contains(&Event::ConnResume(a)), "{ev:?}");
    assert_eq!(mux.rx_queued(ep), Some((0, 0)));
    check_invariants(&mux);
}
