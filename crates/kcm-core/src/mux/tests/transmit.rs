//! Transmit scheduling: reservation, round robin, partial writes, failures, addressed sends
//! (`kcm-spec.md` §5.3, §5.5).

use super::*;

/// A datagram mux with `n` endpoints and `k` connections, events drained.
pub(super) fn setup(n: usize, k: usize) -> (MuxCore, Vec<EndpointId>, Vec<ConnectionId>) {
    let (mut mux, e0) = mux(Kind::Datagram);
    let mut eps = vec![e0];
    for _ in 1..n {
        eps.push(mux.add_endpoint().unwrap());
    }
    let conns = (0..k).map(|_| mux.attach()).collect();
    events(&mut mux);
    (mux, eps, conns)
}

#[test]
fn an_endpoint_keeps_its_connection_until_its_queue_is_empty() {
    let (mut mux, e, c) = setup(1, 2);
    send(&mut mux, e[0], b"m1");
    send(&mut mux, e[0], b"m2");
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!(
        (tx.conn, cat(&tx)),
        (c[0], b"m1m2".to_vec()),
        "in order, one write"
    );
    // Queued while writing: still goes on the same connection.
    send(&mut mux, e[0], b"m3");
    assert_eq!(mux.poll_transmit(e[0]), None, "one transmit at a time");
    mux.handle_transmit(e[0], c[0], TxResult::Written(4));
    assert_eq!(mux.tx_reserved_by(c[0]), Some(e[0]));
    assert_eq!(flush(&mut mux, e[0]), vec![(c[0], b"m3".to_vec())]);
    assert_eq!(mux.tx_reserved_by(c[0]), None, "released once empty");
    let st = mux.conn_stats(c[0]).unwrap().tx;
    assert_eq!(
        (st.tx_msgs, st.tx_bytes, st.reserved, st.unreserved),
        (3, 6, 1, 1)
    );
    check_invariants(&mux);
}

#[test]
fn released_connections_go_to_the_tail_round_robin_across_bursts() {
    let (mut mux, e, c) = setup(1, 3);
    let mut used = Vec::new();
    for burst in 0..6u8 {
        send(&mut mux, e[0], &[burst; 2]);
        send(&mut mux, e[0], &[burst; 3]);
        let out = flush(&mut mux, e[0]);
        assert_eq!(out.len(), 1, "a burst is one write on one connection");
        used.push(out[0].0);
    }
    assert_eq!(used, vec![c[0], c[1], c[2], c[0], c[1], c[2]]);
    check_invariants(&mux);
}

#[test]
fn two_endpoints_never_hold_the_same_connection() {
    let (mut mux, e, c) = setup(2, 1);
    send(&mut mux, e[0], b"zero");
    send(&mut mux, e[1], b"one");
    assert_eq!(mux.tx_reserved_by(c[0]), Some(e[0]));
    assert_eq!(mux.poll_transmit(e[1]), None, "e1 waits");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(2));
    // Half a message on the wire: e1 still can't have it, even after a WouldBlock.
    mux.write_space(c[0]);
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::WouldBlock);
    assert_eq!(mux.poll_transmit(e[1]), None);
    check_invariants(&mux);
    events(&mut mux);
    mux.write_space(c[0]);
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!(cat(&tx), b"ro".to_vec());
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(2));
    assert_eq!(
        events(&mut mux),
        vec![Event::TxReady(e[0]), Event::TxReady(e[1])]
    );
    assert_eq!(
        mux.tx_reserved_by(c[0]),
        Some(e[1]),
        "handed straight to the waiter"
    );
    assert_eq!(flush(&mut mux, e[1]), vec![(c[0], b"one".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn partial_writes_resume_at_the_right_byte() {
    let (mut mux, e, c) = setup(1, 1);
    let msgs: [&[u8]; 4] = [b"hello", b", ", b"multiplexed", b" world!"];
    for (i, msg) in msgs.iter().enumerate() {
        // Mix single-part and multi-part messages.
        if i % 2 == 0 {
            send(&mut mux, e[0], msg);
        } else {
            mux.send(e[0], Bytes::copy_from_slice(&msg[..1]), MORE, None)
                .unwrap();
            mux.send(e[0], Bytes::copy_from_slice(&msg[1..]), END, None)
                .unwrap();
        }
    }
    let want: Vec<u8> = msgs.concat();
    events(&mut mux);
    let mut wire = Vec::new();
    let mut step = 1;
    while let Some(tx) = mux.poll_transmit(e[0]) {
        assert_eq!(tx.conn, c[0]);
        let bytes = cat(&tx);
        assert_eq!(
            bytes[..],
            want[wire.len()..],
            "resumes where the socket stopped"
        );
        let n = step.min(tx.len);
        wire.extend_from_slice(&bytes[..n]);
        mux.handle_transmit(e[0], tx.conn, TxResult::Written(n));
        check_invariants(&mux);
        if wire.len() < want.len() {
            assert_eq!(
                events(&mut mux),
                vec![],
                "a short write waits for write space"
            );
            mux.write_space(c[0]);
            assert_eq!(events(&mut mux), vec![Event::TxReady(e[0])]);
        }
        step += 2;
    }
    assert_eq!(wire, want);
    let st = mux.conn_stats(c[0]).unwrap().tx;
    assert_eq!((st.tx_msgs, st.tx_bytes), (4, want.len() as u64));
    assert_eq!(
        (mux.stats().tx_msgs, mux.stats().tx_bytes),
        (4, want.len() as u64)
    );
    check_invariants(&mux);
}

#[test]
fn would_block_keeps_the_reservation_and_write_space_re_emits_tx_ready() {
    let (mut mux, e, c) = setup(1, 2);
    send(&mut mux, e[0], b"abc");
    events(&mut mux);
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::WouldBlock);
    assert_eq!(events(&mut mux), vec![]);
    assert_eq!(mux.tx_reserved_by(c[0]), Some(e[0]));
    mux.write_space(c[1]);
    assert_eq!(
        events(&mut mux),
        vec![],
        "write space on a connection nobody holds"
    );
    mux.write_space(c[0]);
    assert_eq!(events(&mut mux), vec![Event::TxReady(e[0])]);
    assert_eq!(flush(&mut mux, e[0]), vec![(c[0], b"abc".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn a_failed_write_retires_the_connection_and_retries_from_byte_zero_elsewhere() {
    let (mut mux, e, c) = setup(1, 2);
    send(&mut mux, e[0], b"first");
    send(&mut mux, e[0], b"second");
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!(tx.conn, c[0]);
    mux.handle_transmit(e[0], c[0], TxResult::Written(8));
    events(&mut mux);
    mux.write_space(c[0]);
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!(cat(&tx), b"ond".to_vec());
    mux.handle_transmit(e[0], c[0], TxResult::Failed);
    let ev = events(&mut mux);
    assert_eq!(
        ev,
        vec![
            Event::TxReady(e[0]),
            Event::ConnError(c[0], errno::EPIPE),
            Event::TxReady(e[0])
        ]
    );
    assert_eq!(mux.is_tx_stopped(c[0]), Some(true));
    assert_eq!(mux.stats().tx_retries, 1);
    let st = mux.conn_stats(c[0]).unwrap().tx;
    assert_eq!((st.tx_aborts, st.tx_msgs, st.tx_bytes), (1, 1, 8));
    // "first" went out whole on c0; "second" is retried whole on c1.
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"second".to_vec())]);
    for _ in 0..3 {
        send(&mut mux, e[0], b"x");
        assert_eq!(
            flush(&mut mux, e[0]),
            vec![(c[1], b"x".to_vec())],
            "c0 is dead for good"
        );
    }
    assert_eq!(mux.stats().tx_retries, 1);
    assert_eq!(mux.connections(), c, "a transmit failure does not unattach");
    check_invariants(&mux);
}

#[test]
fn a_failed_write_with_no_other_connection_waits_for_one() {
    let (mut mux, e, c) = setup(1, 1);
    send(&mut mux, e[0], b"msg");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Failed);
    assert_eq!(mux.poll_transmit(e[0]), None);
    check_invariants(&mux);
    let d = mux.attach();
    assert_eq!(flush(&mut mux, e[0]), vec![(d, b"msg".to_vec())]);
    assert_eq!(mux.tx_reserved_by(c[0]), None);
    check_invariants(&mux);
}

#[test]
fn a_write_of_more_than_was_asked_is_clamped() {
    let (mut mux, e, c) = setup(1, 1);
    send(&mut mux, e[0], b"abc");
    let tx = mux.poll_transmit(e[0]).unwrap();
    send(&mut mux, e[0], b"def");
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(100));
    // Only "abc" was handed out; "def" must still be written.
    assert_eq!(flush(&mut mux, e[0]), vec![(c[0], b"def".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn a_report_without_a_transmit_is_ignored() {
    let (mut mux, e, c) = setup(1, 1);
    send(&mut mux, e[0], b"abc");
    mux.handle_transmit(e[0], c[0], TxResult::Written(2));
    mux.handle_transmit(e[0], c[0], TxResult::Failed);
    assert_eq!(mux.is_tx_stopped(c[0]), Some(false));
    assert_eq!(flush(&mut mux, e[0]), vec![(c[0], b"abc".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn a_transmit_is_capped_and_continues() {
    let (mut mux, e, c) = setup(1, 1);
    // Messages too large to share a run: one queue entry each.
    let msg = |i: u16| -> Vec<u8> { [i.to_be_bytes().as_slice(), &[0; 298]].concat() };
    for i in 0..300u16 {
        send(&mut mux, e[0], &msg(i));
    }
    let out = flush(&mut mux, e[0]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.len(), 300 * tx::MAX_TX_MSGS);
    let all: Vec<u8> = out.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let want: Vec<u8> = (0..300u16).flat_map(msg).collect();
    assert_eq!(all, want);
    assert!(out.iter().all(|(conn, _)| *conn == c[0]));
    check_invariants(&mux);
}

#[test]
fn small_messages_share_runs_and_are_counted_one_by_one() {
    let (mut mux, e, c) = setup(1, 1);
    for i in 0..300u16 {
        send(&mut mux, e[0], &i.to_be_bytes());
    }
    assert_eq!(mux.tx_queued(e[0]), Some((300, 600)));
    let out = flush(&mut mux, e[0]);
    assert_eq!(out.len(), 1, "one write for all of them");
    let want: Vec<u8> = (0..300u16).flat_map(u16::to_be_bytes).collect();
    assert_eq!(out[0], (c[0], want));
    assert_eq!(mux.stats().tx_msgs, 300);
    assert_eq!(mux.conn_stats(c[0]).map(|s| s.tx.tx_msgs), Some(300));
    check_invariants(&mux);
}

#[test]
fn a_connection_failing_inside_a_run_loses_only_the_message_it_was_writing() {
    let (mut mux, e, c) = setup(1, 2);
    for m in [b"aaaa", b"bbbb", b"cccc"] {
        send(&mut mux, e[0], m);
    }
    events(&mut mux);
    let tx = mux.poll_transmit(e[0]).expect("a transmit");
    assert_eq!((tx.conn, tx.len), (c[0], 12));
    // The first message and half of the second go out, then the connection fails.
    mux.handle_transmit(e[0], c[0], TxResult::Written(6));
    assert_eq!(mux.tx_queued(e[0]), Some((2, 8)));
    assert_eq!(mux.stats().tx_msgs, 1);
    mux.write_space(c[0]);
    events(&mut mux);
    let tx = mux.poll_transmit(e[0]).expect("the rest");
    mux.handle_transmit(e[0], tx.conn, TxResult::Failed);
    // Retried from the start of the message that was cut, on the other connection.
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"bbbbcccc".to_vec())]);
    assert_eq!(mux.stats().tx_msgs, 3);
    assert_eq!(mux.stats().tx_retries, 1);
    check_invariants(&mux);
}

#[test]
fn an_addressed_send_goes_only_to_its_connection() {
    let (mut mux, e, c) = setup(1, 2);
    mux.send(e[0], m(1, 3), END, Some(c[1])).unwrap();
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], vec![1; 3])]);
    // Unaddressed sends still follow the FIFO: c0 is at its head.
    send(&mut mux, e[0], b"any");
    assert_eq!(flush(&mut mux, e[0]), vec![(c[0], b"any".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn unaddressed_messages_ride_along_but_addressed_ones_switch_connection() {
    let (mut mux, e, c) = setup(1, 2);
    mux.send(e[0], m(1, 2), END, Some(c[1])).unwrap();
    send(&mut mux, e[0], &[2; 2]);
    mux.send(e[0], m(3, 2), END, Some(c[0])).unwrap();
    mux.send(e[0], m(4, 2), END, Some(c[1])).unwrap();
    // The unaddressed message rides on c1; c1 is let go when the head is for c0, and so on.
    let want = vec![
        (c[1], vec![1, 1, 2, 2]),
        (c[0], vec![3, 3]),
        (c[1], vec![4, 4]),
    ];
    assert_eq!(flush(&mut mux, e[0]), want);
    let st = (
        mux.conn_stats(c[0]).unwrap().tx,
        mux.conn_stats(c[1]).unwrap().tx,
    );
    assert_eq!((st.0.reserved, st.1.reserved), (1, 2));
    check_invariants(&mux);
}

#[test]
fn an_addressed_send_waits_while_another_endpoint_holds_its_connection() {
    let (mut mux, e, c) = setup(2, 2);
    send(&mut mux, e[0], b"e0");
    assert_eq!(mux.tx_reserved_by(c[0]), Some(e[0]));
    mux.send(e[1], m(1, 2), END, Some(c[0])).unwrap();
    assert_eq!(
        mux.poll_transmit(e[1]),
        None,
        "waits for c0 although c1 is free"
    );
    check_invariants(&mux);
    events(&mut mux);
    assert_eq!(flush(&mut mux, e[0]), vec![(c[0], b"e0".to_vec())]);
    assert_eq!(
        mux.tx_reserved_by(c[0]),
        Some(e[1]),
        "handed over before the FIFO"
    );
    assert_eq!(flush(&mut mux, e[1]), vec![(c[0], vec![1, 1])]);
    check_invariants(&mux);
}

#[test]
fn an_addressed_send_is_dropped_when_its_connection_dies() {
    let (mut mux, e, c) = setup(2, 2);
    send(&mut mux, e[0], b"e0");
    mux.send(e[1], m(1, 2), END, Some(c[0])).unwrap();
    send(&mut mux, e[1], b"after");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Failed);
    assert_eq!(mux.stats().tx_addr_drops, 1);
    assert_eq!(mux.stats().tx_retries, 1);
    assert_eq!(
        mux.tx_queued(e[1]),
        Some((1, 5)),
        "only the addressed message is dropped"
    );
    check_invariants(&mux);
    let out1 = flush(&mut mux, e[1]);
    let out0 = flush(&mut mux, e[0]);
    assert_eq!((out0.len(), out1.len()), (1, 1));
    assert_eq!(out0[0].1, b"e0".to_vec());
    assert_eq!(out1[0].1, b"after".to_vec());
    check_invariants(&mux);
}

#[test]
fn an_addressed_send_is_dropped_when_its_connection_is_unattached() {
    let (mut mux, e, c) = setup(2, 2);
    send(&mut mux, e[0], b"e0");
    mux.send(e[1], m(1, 2), END, Some(c[0])).unwrap();
    mux.unattach(c[0], Default::default()).unwrap();
    assert_eq!(mux.stats().tx_addr_drops, 1);
    assert_eq!(mux.tx_queued(e[1]), Some((0, 0)));
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"e0".to_vec())]);
    // Not reserved when unattached: a queued addressed message is dropped as well.
    mux.send(e[1], m(2, 2), BATCH, Some(c[1])).unwrap();
    mux.unattach(c[1], Default::default()).unwrap();
    mux.send(e[1], Bytes::new(), END, None).unwrap();
    assert_eq!(mux.stats().tx_addr_drops, 2);
    assert_eq!(mux.tx_queued(e[1]), Some((0, 0)));
    check_invariants(&mux);
}

#[test]
fn a_send_addressed_to_a_missing_or_dead_connection_fails() {
    let (mut mux, e, c) = setup(1, 2);
    let bogus = ConnectionId { index: 9, gen: 9 };
    let err = mux.send(e[0], m(1, 1), END, Some(bogus)).unwrap_err();
    assert_eq!((err, err.errno()), (SendError::NotConnected, 107));
    send(&mut mux, e[0], b"x");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Failed);
    let err = mux.send(e[0], m(1, 1), END, Some(c[0])).unwrap_err();
    assert_eq!(
        (err, err.errno()),
        (SendError::ConnectionDead, errno::EPIPE)
    );
    mux.unattach(c[1], Default::default()).unwrap();
    assert_eq!(
        mux.send(e[0], m(1, 1), END, Some(c[1])),
        Err(SendError::NotConnected)
    );
    assert_eq!(
        mux.tx_queued(e[0]),
        Some((1, 1)),
        "only x, waiting for a connection"
    );
    check_invariants(&mux);
}

#[test]
fn write_space_during_a_write_makes_a_short_write_try_again() {
    let (mut mux, e, c) = setup(1, 1);
    send(&mut mux, e[0], b"0123456789");
    let tx = mux.poll_transmit(e[0]).unwrap();
    events(&mut mux);
    // The socket drained while the write was under way; the write may still have come up
    // short (it ran before the space appeared) and the readiness edge is already spent.
    mux.write_space(c[0]);
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(4));
    assert_eq!(
        events(&mut mux),
        vec![Event::TxReady(e[0]), Event::TxReady(e[0])]
    );
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!(cat(&tx), b"456789".to_vec());
    mux.write_space(c[0]);
    mux.handle_transmit(e[0], tx.conn, TxResult::WouldBlock);
    assert_eq!(
        events(&mut mux),
        vec![Event::TxReady(e[0]), Event::TxReady(e[0])]
    );
    // Without space reported during the write, a short write waits for write space.
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(1));
    assert_eq!(events(&mut mux), vec![]);
    check_invariants(&mux);
}

#[test]
fn a_recycled_transmit_lends_its_list_to_the_next_and_few_are_kept() {
    let (mut mux, e, _) = setup(1, 1);
    send(&mut mux, e[0], b"one");
    let tx = mux.poll_transmit(e[0]).expect("a transmit");
    let list = tx.bufs.as_ptr();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(tx.len));
    mux.recycle(tx);
    // (Kept: the pointer check alone would pass with a new list the allocator put in the
    // freed one's place.)
    assert_eq!(mux.spare_bufs.len(), 1, "the list is kept");
    send(&mut mux, e[0], b"two");
    let tx = mux.poll_transmit(e[0]).expect("a transmit");
    assert_eq!(tx.bufs.as_ptr(), list, "the same list, no allocation");
    assert_eq!(cat(&tx), b"two".to_vec());
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(tx.len));
    // A runtime giving back more than it takes does not make the mux hoard lists.
    for _ in 0..100 {
        mux.recycle(Transmit {
            conn: tx.conn,
            bufs: Vec::with_capacity(8),
            len: 0,
        });
    }
    assert!(mux.spare_bufs.len() <= 4, "{} kept", mux.spare_bufs.len());
    assert_eq!(mux.spare_bufs.len(), 4, "up to the limit");
    // Long lists are let go.
    mux.spare_bufs.clear();
    mux.recycle(Transmit {
        conn: tx.conn,
        bufs: Vec::with_capacity(1000),
        len: 0,
    });
    assert!(mux.spare_bufs.is_empty());
    events(&mut mux);
    check_invariants(&mux);
}

/// A transmit given back with its slices still in it lets them go at once, not when its list
/// next serves (its buffers would stay held, a run's kept from reuse).
#[test]
fn recycle_lets_the_slices_go() {
    let (mut mux, e, _) = setup(1, 1);
    send(&mut mux, e[0], b"one");
    let tx = mux.poll_transmit(e[0]).expect("a transmit");
    let view = tx.bufs[0].clone();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(tx.len));
    assert!(!view.is_unique());
    mux.recycle(tx);
    assert!(view.is_unique(), "the kept list still holds the slice");
    check_invariants(&mux);
}
