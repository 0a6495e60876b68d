//! Creating, cloning and closing endpoints (`kcm-spec.md` §1.3, §3.3, §3.4).

use super::*;

#[test]
fn endpoint_indices_are_the_lowest_unused() {
    let (mut mux, e0) = mux(Kind::Datagram);
    assert_eq!(e0, EndpointId(0));
    let e1 = mux.add_endpoint().unwrap();
    let e2 = mux.add_endpoint().unwrap();
    assert_eq!((e1, e2), (EndpointId(1), EndpointId(2)));
    assert_eq!(mux.close_endpoint(e1), Ok(false));
    assert_eq!(
        mux.add_endpoint(),
        Ok(EndpointId(1)),
        "the hole at 1 is reused"
    );
    assert_eq!(mux.close_endpoint(e0), Ok(false));
    assert_eq!(mux.add_endpoint(), Ok(EndpointId(0)));
    assert_eq!(mux.add_endpoint(), Ok(EndpointId(3)));
    assert_eq!(
        mux.endpoints(),
        vec![EndpointId(0), EndpointId(1), EndpointId(2), EndpointId(3)]
    );
    assert_eq!(mux.endpoint_count(), 4);
    check_invariants(&mux);
}

#[test]
fn clone_has_the_mux_kind_and_default_options() {
    let (mut mux, e0) = mux(Kind::SeqPacket);
    mux.set_rcvbuf(e0, 10).unwrap();
    mux.set_sndbuf(e0, 20).unwrap();
    mux.set_recv_disable(e0, true).unwrap();
    let e1 = mux.add_endpoint().unwrap();
    assert_eq!(mux.kind(), Kind::SeqPacket);
    assert_eq!(
        mux.buffers(e1),
        Some((DEFAULT_BUF, DEFAULT_BUF)),
        "no inheritance"
    );
    assert_eq!(mux.recv_disabled(e1), Some(false));
    check_invariants(&mux);
}

#[test]
fn clone_joins_the_tail_of_the_eligible_fifo() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let c = mux.attach();
    mux.rx_pass(c, [m(1, 4)], None);
    // e0 served a pass and rejoined; the clone queues up behind it.
    let e1 = mux.add_endpoint().unwrap();
    assert_eq!(eligible(&mux), vec![e0, e1]);
    mux.rx_pass(c, [m(2, 4)], None);
    assert_eq!(eligible(&mux), vec![e1, e0]);
    mux.rx_pass(c, [m(3, 4)], None);
    assert_eq!(recv_all(&mut mux, e0), vec![m(1, 4), m(2, 4)]);
    assert_eq!(recv_all(&mut mux, e1), vec![m(3, 4)]);
    check_invariants(&mux);
}

#[test]
fn clone_first_takes_held_and_parked_messages() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let c = mux.attach();
    mux.set_recv_disable(e0, true).unwrap();
    let out = mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    assert_eq!((out.delivered, out.parked), (0, 2));
    events(&mut mux);
    let e1 = mux.add_endpoint().unwrap();
    assert_eq!(
        events(&mut mux),
        vec![Event::Readable(e1), Event::ConnResume(c)]
    );
    assert_eq!(recv_all(&mut mux, e1), vec![m(1, 4), m(2, 4)]);
    assert_eq!(eligible(&mux), vec![e1]);
    check_invariants(&mux);
}

#[test]
fn closing_the_last_endpoint_reports_it() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    assert_eq!(mux.close_endpoint(e0), Ok(false));
    assert_eq!(mux.close_endpoint(e0), Err(MuxError::NoEndpoint));
    assert_eq!(mux.close_endpoint(e1), Ok(true));
    assert_eq!(mux.endpoint_count(), 0);
    assert_eq!(MuxError::NoEndpoint.errno(), 9);
}

#[test]
fn operations_on_a_closed_endpoint_fail_cleanly() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    mux.close_endpoint(e1).unwrap();
    assert_eq!(mux.send(e1, m(1, 3), END, None), Err(SendError::NoEndpoint));
    assert_eq!(mux.recv(e1, 10, false), None);
    assert_eq!(mux.poll_transmit(e1), None);
    assert_eq!(mux.set_recv_disable(e1, true), Err(MuxError::NoEndpoint));
    assert_eq!(mux.set_rcvbuf(e1, 1), Err(MuxError::NoEndpoint));
    assert_eq!(mux.endpoint_stats(e1), None);
    assert!(!mux.can_send(e1));
    assert_eq!(eligible(&mux), vec![e0]);
    check_invariants(&mux);
}

#[test]
fn closing_an_endpoint_requeues_its_unread_messages_to_others() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    let c = mux.attach();
    mux.rx_pass(c, [m(1, 4), m(2, 5)], None);
    assert_eq!(mux.rx_queued(e0), Some((2, 9)));
    events(&mut mux);
    assert_eq!(mux.close_endpoint(e0), Ok(false));
    assert_eq!(events(&mut mux), vec![Event::Readable(e1)]);
    assert_eq!(recv_all(&mut mux, e1), vec![m(1, 4), m(2, 5)]);
    check_invariants(&mux);
}

#[test]
fn closing_an_endpoint_with_no_one_eligible_moves_messages_to_the_hold_queue() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    mux.set_recv_disable(e1, true).unwrap();
    let c = mux.attach();
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    mux.close_endpoint(e0).unwrap();
    assert_eq!(mux.held(), 2);
    mux.set_recv_disable(e1, false).unwrap();
    assert_eq!(mux.held(), 0);
    assert_eq!(recv_all(&mut mux, e1), vec![m(1, 4), m(2, 4)]);
    check_invariants(&mux);
}

#[test]
fn closing_the_last_endpoint_loses_the_hold_queue() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    mux.set_recv_disable(e1, true).unwrap();
    let c = mux.attach();
    mux.rx_pass(c, [m(1, 4)], None);
    mux.close_endpoint(e0).unwrap();
    assert_eq!(mux.held(), 1);
    assert_eq!(mux.close_endpoint(e1), Ok(true));
    assert_eq!(mux.held(), 0);
}

#[test]
fn closing_an_endpoint_drops_its_open_and_unsent_messages() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    send(&mut mux, e0, b"one");
    send(&mut mux, e0, b"two");
    mux.send(e0, m(3, 3), MORE, None).unwrap();
    assert_eq!(mux.tx_queued(e0), Some((2, 6)));
    mux.close_endpoint(e0).unwrap();
    assert!(
        mux.tx_waiting.is_empty(),
        "the closed endpoint no longer waits"
    );
    let c = mux.attach();
    assert_eq!(
        events(&mut mux),
        vec![],
        "nobody is handed the new connection"
    );
    send(&mut mux, e1, b"later");
    assert_eq!(flush(&mut mux, e1), vec![(c, b"later".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn closing_an_endpoint_while_tx_reserved_aborts_that_connection_for_good() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    let a = mux.attach();
    let b = mux.attach();
    send(&mut mux, e0, b"half-written");
    let tx = mux.poll_transmit(e0).unwrap();
    assert_eq!(tx.conn, a);
    mux.handle_transmit(e0, a, TxResult::Written(4));
    events(&mut mux);
    assert_eq!(mux.close_endpoint(e0), Ok(false));
    // Part of a message is on the wire: the stream can never carry another message (§3.4).
    assert_eq!(events(&mut mux), vec![Event::ConnError(a, errno::EPIPE)]);
    assert_eq!(mux.is_tx_stopped(a), Some(true));
    let st = mux.conn_stats(a).unwrap().tx;
    assert_eq!((st.tx_aborts, st.reserved, st.unreserved), (1, 1, 1));
    assert_eq!(
        mux.connections(),
        vec![a, b],
        "still attached (receive keeps working)"
    );
    for round in 0..3 {
        send(&mut mux, e1, &[round; 5]);
        assert_eq!(
            flush(&mut mux, e1),
            vec![(b, vec![round; 5])],
            "never on {a}"
        );
    }
    assert_eq!(mux.tx_reserved_by(a), None);
    mux.rx_pass(a, [m(9, 4)], None);
    assert_eq!(recv_all(&mut mux, e1), vec![m(9, 4)]);
    check_invariants(&mux);
}

#[test]
fn closing_an_endpoint_that_waits_for_a_connection_leaves_the_wait_list() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    send(&mut mux, e0, b"x");
    send(&mut mux, e1, b"y");
    mux.close_endpoint(e0).unwrap();
    let c = mux.attach();
    assert_eq!(events(&mut mux), vec![Event::TxReady(e1)]);
    assert_eq!(flush(&mut mux, e1), vec![(c, b"y".to_vec())]);
    check_invariants(&mux);
}
