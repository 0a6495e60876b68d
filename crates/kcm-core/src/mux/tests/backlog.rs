//! Connection backlogs: a peer that stops reading costs only its own connection
//! (`tx/backlog.rs`).

use super::transmit::setup;
use super::*;

fn send_to(mux: &mut MuxCore, ep: EndpointId, conn: ConnectionId, data: &[u8]) {
    let n = mux.send(ep, Bytes::copy_from_slice(data), END, Some(conn));
    assert_eq!(n, Ok(data.len()), "send_to {conn} on {ep:?}");
}

/// Endpoint 0 writes `a1` and `a2` on `c[0]`, which takes 3 bytes and is then full, with `b`
/// for `c[1]` queued behind: the connection's messages move to its backlog.
fn stalled() -> (MuxCore, Vec<EndpointId>, Vec<ConnectionId>) {
    let (mut mux, e, c) = setup(2, 2);
    send_to(&mut mux, e[0], c[0], b"a1a1a1");
    send_to(&mut mux, e[0], c[0], b"a2");
    send_to(&mut mux, e[0], c[1], b"b1");
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!((tx.conn, cat(&tx)), (c[0], b"a1a1a1a2".to_vec()));
    mux.handle_transmit(e[0], c[0], TxResult::Written(3));
    (mux, e, c)
}

#[test]
fn a_full_connection_moves_its_messages_aside_and_the_endpoint_goes_on() {
    let (mut mux, e, c) = stalled();
    assert_eq!(mux.tx_backlog(c[0]), Some((2, 8)));
    assert_eq!(mux.tx_queued(e[0]), Some((1, 2)));
    assert_eq!(mux.tx_reserved_by(c[0]), None);
    // The endpoint is not stuck behind the full connection.
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"b1".to_vec())]);
    check_invariants(&mux);
    // Nothing happens on the full connection until it has room again.
    assert!(!events(&mut mux).contains(&Event::ConnTxReady(c[0])));
    assert_eq!(mux.poll_conn_transmit(c[0]).map(|t| t.len), Some(5));
    mux.handle_conn_transmit(c[0], TxResult::WouldBlock);
    mux.write_space(c[0]);
    assert!(events(&mut mux).contains(&Event::ConnTxReady(c[0])));
    // It goes on from the byte where the endpoint stopped, in order.
    let tx = mux.poll_conn_transmit(c[0]).unwrap();
    assert_eq!(cat(&tx), b"1a1a2".to_vec());
    mux.handle_conn_transmit(c[0], TxResult::Written(tx.len));
    assert_eq!(mux.tx_backlog(c[0]), None);
    let st = mux.conn_stats(c[0]).unwrap().tx;
    assert_eq!((st.tx_msgs, st.tx_bytes), (2, 8));
    assert_eq!((mux.stats().tx_msgs, mux.stats().tx_bytes), (3, 10));
    check_invariants(&mux);
    // Free again for anyone.
    send_to(&mut mux, e[1], c[0], b"x");
    assert_eq!(flush(&mut mux, e[1]), vec![(c[0], b"x".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn later_messages_for_a_backlogged_connection_join_it_from_any_endpoint() {
    let (mut mux, e, c) = stalled();
    // The other endpoint does not wait for the full connection: its message joins the backlog.
    send_to(&mut mux, e[1], c[0], b"f1");
    assert_eq!(mux.tx_queued(e[1]), Some((0, 0)));
    // The stalled endpoint's next message for it too, once its own turn comes.
    send_to(&mut mux, e[0], c[0], b"a3");
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"b1".to_vec())]);
    assert_eq!(mux.tx_queued(e[0]), Some((0, 0)));
    assert_eq!(mux.tx_backlog(c[0]), Some((4, 12)));
    check_invariants(&mux);
    mux.write_space(c[0]);
    let tx = mux.poll_conn_transmit(c[0]).unwrap();
    assert_eq!(
        cat(&tx),
        b"1a1a2f1a3".to_vec(),
        "each endpoint's order kept"
    );
    mux.handle_conn_transmit(c[0], TxResult::Written(tx.len));
    assert_eq!(mux.tx_backlog(c[0]), None);
    check_invariants(&mux);
}

#[test]
fn endpoints_already_waiting_for_the_connection_join_its_backlog() {
    let (mut mux, e, c) = setup(2, 2);
    send_to(&mut mux, e[0], c[0], b"a1a1");
    send_to(&mut mux, e[0], c[1], b"b1");
    let tx = mux.poll_transmit(e[0]).unwrap();
    // Another endpoint queues for the same connection while it is held: it waits for it.
    send_to(&mut mux, e[1], c[0], b"f1");
    assert_eq!(mux.poll_transmit(e[1]), None);
    mux.handle_transmit(e[0], tx.conn, TxResult::WouldBlock);
    // The stall lets the waiter in: its message is in the backlog, not stuck on the endpoint.
    assert_eq!(mux.tx_queued(e[1]), Some((0, 0)));
    assert_eq!(mux.tx_backlog(c[0]), Some((2, 6)));
    check_invariants(&mux);
}

#[test]
fn a_full_backlog_refuses_new_sends_to_its_connection_only() {
    let (mut mux, e, c) = setup(1, 2);
    mux.set_sndbuf(e[0], 1 << 22).unwrap();
    let big = vec![7u8; 100_000];
    for _ in 0..3 {
        send_to(&mut mux, e[0], c[0], &big);
    }
    send_to(&mut mux, e[0], c[1], b"b1");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(10));
    assert_eq!(mux.tx_backlog(c[0]).map(|(n, _)| n), Some(3));
    assert!(!mux.can_send_to(e[0], Some(c[0])));
    assert!(mux.can_send_to(e[0], Some(c[1])) && mux.can_send(e[0]));
    let r = mux.send(e[0], Bytes::from_static(b"more"), END, Some(c[0]));
    assert_eq!(r, Err(SendError::WouldBlock));
    let mut batch = vec![(Some(c[1]), &b"ok"[..]), (Some(c[0]), b"no")].into_iter();
    let (n, refused) = mux.send_batch(e[0], &mut batch);
    assert_eq!(
        (n, refused.map(|r| r.error)),
        (1, Some(SendError::WouldBlock))
    );
    send_to(&mut mux, e[0], c[1], b"b2");
    check_invariants(&mux);
}

#[test]
fn unattaching_a_backlogged_connection_drops_its_backlog() {
    let (mut mux, e, c) = stalled();
    events(&mut mux);
    assert_eq!(mux.unattach(c[0], Default::default()), Ok(true));
    assert_eq!(mux.stats().tx_addr_drops, 2);
    assert!(events(&mut mux).contains(&Event::ConnReleased(c[0])));
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"b1".to_vec())]);
    check_invariants(&mux);
}

#[test]
fn unattached_while_its_backlog_is_written_it_is_released_when_the_write_is_reported() {
    let (mut mux, _e, c) = stalled();
    mux.write_space(c[0]);
    let tx = mux.poll_conn_transmit(c[0]).unwrap();
    events(&mut mux);
    assert_eq!(mux.unattach(c[0], Default::default()), Ok(true));
    assert!(
        !events(&mut mux).contains(&Event::ConnReleased(c[0])),
        "the socket is still being written"
    );
    check_invariants(&mux);
    mux.handle_conn_transmit(c[0], TxResult::Written(tx.len));
    assert!(events(&mut mux).contains(&Event::ConnReleased(c[0])));
    assert_eq!(mux.stats().tx_addr_drops, 2);
    check_invariants(&mux);
}

#[test]
fn a_failed_backlog_write_drops_it_and_posts_epipe() {
    let (mut mux, e, c) = stalled();
    mux.write_space(c[0]);
    mux.poll_conn_transmit(c[0]).unwrap();
    events(&mut mux);
    mux.handle_conn_transmit(c[0], TxResult::Failed);
    assert_eq!(mux.tx_backlog(c[0]), None);
    assert_eq!(mux.stats().tx_addr_drops, 2);
    assert!(events(&mut mux).contains(&Event::ConnError(c[0], errno::EPIPE)));
    let r = mux.send(e[0], Bytes::from_static(b"x"), END, Some(c[0]));
    assert_eq!(r, Err(SendError::ConnectionDead));
    check_invariants(&mux);
}

#[test]
fn nothing_moves_without_another_destination_waiting_or_for_an_unaddressed_head() {
    // Only messages for the full connection: the endpoint simply waits for it.
    let (mut mux, e, c) = setup(1, 2);
    send_to(&mut mux, e[0], c[0], b"a1a1");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(1));
    assert_eq!(mux.tx_backlog(c[0]), None);
    assert_eq!(mux.tx_reserved_by(c[0]), Some(e[0]));
    check_invariants(&mux);
    // An unaddressed message half written must finish on its connection (§5.3).
    let (mut mux, e, c) = setup(1, 2);
    send(&mut mux, e[0], b"u1u1");
    let tx = mux.poll_transmit(e[0]).unwrap();
    send_to(&mut mux, e[0], c[1], b"b1");
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(1));
    assert!(c.iter().all(|&c| mux.tx_backlog(c).is_none()));
    assert_eq!(mux.tx_reserved_by(tx.conn), Some(e[0]));
    check_invariants(&mux);
}

#[test]
fn a_send_buffer_full_of_a_stuck_connections_messages_makes_room_for_another() {
    let (mut mux, e, c) = setup(1, 2);
    mux.set_sndbuf(e[0], 10).unwrap();
    send_to(&mut mux, e[0], c[0], b"aaaaaa");
    send_to(&mut mux, e[0], c[0], b"AAAAAA");
    let tx = mux.poll_transmit(e[0]).unwrap();
    mux.handle_transmit(e[0], tx.conn, TxResult::Written(2));
    // Only the stuck connection's messages: the endpoint waits for it, and is full.
    assert_eq!(mux.tx_backlog(c[0]), None);
    assert!(!mux.can_send(e[0]));
    assert!(
        !mux.can_send_to(e[0], Some(c[0])),
        "its own connection gets no room"
    );
    let r = mux.send(e[0], Bytes::from_static(b"x"), END, Some(c[0]));
    assert_eq!(r, Err(SendError::WouldBlock));
    // A message for another connection makes them step aside.
    assert!(mux.can_send_to(e[0], Some(c[1])) && mux.can_send_to(e[0], None));
    send_to(&mut mux, e[0], c[1], b"b1");
    assert_eq!(mux.tx_backlog(c[0]), Some((2, 12)));
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"b1".to_vec())]);
    check_invariants(&mux);
}

/// Endpoint 0 writes `a1` on c[0], which takes 3 bytes and is then full. Queued behind it,
/// sent while that write is under way: `u` (any connection), then `a2` for c[0] again. With
/// `others` false, c[1] is unattached first.
fn stalled_behind_unaddressed(others: bool) -> (MuxCore, Vec<EndpointId>, Vec<ConnectionId>) {
    let (mut mux, e, c) = setup(2, 2);
    if !others {
        mux.unattach(c[1], Default::default()).unwrap();
    }
    send_to(&mut mux, e[0], c[0], b"a1a1a1");
    let tx = mux.poll_transmit(e[0]).unwrap();
    assert_eq!((tx.conn, cat(&tx)), (c[0], b"a1a1a1".to_vec()));
    let n = mux.send(e[0], Bytes::from_static(b"uu"), END, None);
    assert_eq!(n, Ok(2));
    send_to(&mut mux, e[0], c[0], b"a2");
    mux.handle_transmit(e[0], c[0], TxResult::Written(3));
    (mux, e, c)
}

#[test]
fn messages_behind_an_unaddressed_one_stay_behind_it() {
    // `a1` steps aside; `a2` must not: `u` may yet be written on c[0], and `a2` was sent
    // after it.
    let (mut mux, e, c) = stalled_behind_unaddressed(true);
    assert_eq!(mux.tx_backlog(c[0]), Some((1, 6)), "only the head moved");
    assert_eq!(mux.tx_queued(e[0]), Some((2, 4)));
    check_invariants(&mux);
    // `u` goes out on the other connection; then `a2`, now at the head, joins the backlog.
    assert_eq!(flush(&mut mux, e[0]), vec![(c[1], b"uu".to_vec())]);
    assert_eq!(mux.tx_backlog(c[0]), Some((2, 8)));
    check_invariants(&mux);
}

#[test]
fn with_no_other_connection_the_unaddressed_message_keeps_its_place() {
    // As above with c[1] unattached: `u` can only go on c[0], after `a1` and before `a2`.
    let (mut mux, _, c) = stalled_behind_unaddressed(false);
    check_invariants(&mux);
    let mut wire = b"a1a".to_vec();
    mux.write_space(c[0]);
    // Until the mux asks for nothing more (a bound, so that a loop of requests fails).
    for round in 0.. {
        let evs = events(&mut mux);
        if evs.is_empty() {
            break;
        }
        assert!(round < 100, "still asking for transmits: {evs:?}");
        for ev in evs {
            match ev {
                Event::ConnTxReady(conn) => {
                    if let Some(tx) = mux.poll_conn_transmit(conn) {
                        wire.extend(cat(&tx));
                        mux.handle_conn_transmit(conn, TxResult::Written(tx.len));
                    }
                }
                Event::TxReady(ep) => {
                    if let Some(tx) = mux.poll_transmit(ep) {
                        wire.extend(cat(&tx));
                        mux.handle_transmit(ep, tx.conn, TxResult::Written(tx.len));
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        wire,
        b"a1a1a1uua2".to_vec(),
        "the endpoint's order on the wire"
    );
    check_invariants(&mux);
}
