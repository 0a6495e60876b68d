//! Statistics add up across endpoints, connections and the mux (`kcm-spec.md` §7.1).

use super::*;
use crate::stats::ParserStats;

/// Sum of the transmit counters of live connections and the aggregates of unattached ones.
fn conn_tx_total(mux: &MuxCore) -> crate::stats::ConnTxStats {
    let mut t = mux.aggregate_conn_stats().tx;
    for c in mux.connections() {
        t += mux.conn_stats(c).unwrap().tx;
    }
    t
}

#[test]
fn statistics_add_up() {
    let (mut mux, e0) = mux(Kind::SeqPacket);
    let e1 = mux.add_endpoint().unwrap();
    let a = mux.attach();
    let b = mux.attach();

    // Receive: 3 messages from a (to e0), 2 from b (to e1).
    mux.rx_pass(a, [m(1, 10), m(2, 20), m(3, 30)], None);
    mux.rx_pass(b, [m(4, 5), m(5, 5)], None);
    // e0 hands its backlog to e1: the same messages, not new deliveries.
    mux.set_recv_disable(e0, true).unwrap();
    mux.recv(e1, 3, false).unwrap(); // partial read of m4 (5 bytes): 3 bytes
    let all = recv_all(&mut mux, e1);
    assert_eq!(
        all.len(),
        5,
        "the rest of m4, then m5, and m1, m2, m3 appended by the requeue"
    );
    assert_eq!(rx_counts(&mux, e1), (5, 70));
    assert_eq!(mux.endpoint_stats(e0).unwrap().rx_msgs, 0);
    assert_eq!(
        (mux.stats().rx_msgs, mux.stats().rx_bytes),
        (5, 70),
        "each message once"
    );

    // Transmit: e0 sends 2 messages, e1 one; one write fails half way and is retried.
    send(&mut mux, e0, &[1; 4]);
    send(&mut mux, e0, &[2; 6]);
    send(&mut mux, e1, &[3; 8]);
    let tx = mux.poll_transmit(e0).unwrap();
    assert_eq!(tx.conn, a);
    mux.handle_transmit(e0, a, TxResult::Written(7));
    mux.write_space(a);
    let tx = mux.poll_transmit(e0).unwrap();
    mux.handle_transmit(e0, tx.conn, TxResult::Failed);
    flush(&mut mux, e1);
    flush(&mut mux, e0);
    assert_eq!(
        (tx_counts(&mux, e0), tx_counts(&mux, e1)),
        ((2, 10), (1, 8))
    );

    let ms = *mux.stats();
    assert_eq!((ms.tx_msgs, ms.tx_retries), (3, 1));
    // 4 + 3 bytes on a before it failed, then 6 (retried) + 8 on b.
    assert_eq!(ms.tx_bytes, 7 + 6 + 8);
    let t = conn_tx_total(&mux);
    assert_eq!(
        (t.tx_msgs, t.tx_bytes, t.tx_aborts),
        (ms.tx_msgs, ms.tx_bytes, 1)
    );
    assert_eq!(t.reserved, t.unreserved, "nothing is reserved now");
    let sa = mux.conn_stats(a).unwrap().tx;
    assert_eq!((sa.tx_msgs, sa.tx_bytes, sa.tx_aborts), (1, 7, 1));

    // Unattach both: the connection counters move to the aggregates, totals are unchanged.
    let pa = ParserStats {
        msgs: 3,
        bytes: 60,
        ..Default::default()
    };
    let pb = ParserStats {
        msgs: 2,
        bytes: 10,
        bad_hdr_len: 1,
        interrupted: 1,
        ..Default::default()
    };
    mux.unattach(a, pa).unwrap();
    mux.unattach(b, pb).unwrap();
    assert_eq!(mux.connection_count(), 0);
    assert_eq!(conn_tx_total(&mux), t);
    let agg = mux.aggregate_conn_stats();
    assert_eq!(
        (agg.parser.msgs, agg.parser.bytes, agg.parser.bad_hdr_len),
        (5, 70, 1)
    );
    let ms2 = *mux.stats();
    assert_eq!(
        (
            ms2.psock_attach,
            ms2.psock_unattach,
            ms2.psock_unattach_rsvd
        ),
        (2, 2, 0)
    );
    assert_eq!(
        (ms2.rx_msgs, ms2.tx_msgs, ms2.tx_bytes),
        (ms.rx_msgs, ms.tx_msgs, ms.tx_bytes)
    );
    check_invariants(&mux);
}

#[test]
fn messages_moved_through_the_hold_queue_are_counted_once() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    let c = mux.attach();
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    mux.set_recv_disable(e1, true).unwrap();
    mux.set_recv_disable(e0, true).unwrap();
    mux.set_recv_disable(e1, false).unwrap();
    mux.close_endpoint(e0).unwrap();
    assert_eq!(recv_all(&mut mux, e1).len(), 2);
    assert_eq!((mux.stats().rx_msgs, mux.stats().rx_bytes), (2, 8));
}

#[test]
fn parked_messages_are_counted_when_delivered_or_dropped() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.set_rcvbuf(ep, 1).unwrap();
    let c = mux.attach();
    let d = mux.attach();
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    mux.rx_pass(d, [m(3, 4)], None);
    assert_eq!(
        mux.stats().rx_msgs,
        1,
        "parked messages are not delivered yet"
    );
    recv_all(&mut mux, ep);
    assert_eq!(mux.stats().rx_msgs, 3);
    mux.rx_pass(c, [m(4, 4), m(5, 4)], None);
    mux.unattach(c, ParserStats::default()).unwrap();
    assert_eq!((mux.stats().rx_msgs, mux.stats().rx_ready_drops), (4, 1));
    check_invariants(&mux);
}
