//! Receive steering, backpressure and `KCM_RECV_DISABLE` (`kcm-spec.md` §5.1, §5.2, §5.4).

use super::*;

/// A mux with `n` endpoints and one connection, events drained.
fn setup(n: usize) -> (MuxCore, Vec<EndpointId>, ConnectionId) {
    let (mut mux, e0) = mux(Kind::Datagram);
    let mut eps = vec![e0];
    for _ in 1..n {
        eps.push(mux.add_endpoint().unwrap());
    }
    let c = mux.attach();
    events(&mut mux);
    (mux, eps, c)
}

#[test]
fn one_pass_goes_to_one_endpoint_which_then_rejoins_the_tail() {
    let (mut mux, e, c) = setup(2);
    let out = mux.rx_pass(c, [m(1, 4), m(2, 4), m(3, 4)], None);
    assert_eq!((out.delivered, out.parked), (3, 0));
    assert_eq!(mux.rx_queued(e[0]), Some((3, 12)));
    assert_eq!(mux.rx_queued(e[1]), Some((0, 0)));
    assert_eq!(eligible(&mux), vec![e[1], e[0]]);
    assert_eq!(
        events(&mut mux),
        vec![Event::Readable(e[0])],
        "one wake-up for the batch"
    );
    check_invariants(&mux);
}

#[test]
fn the_eligible_fifo_round_robins_across_passes_and_connections() {
    let (mut mux, e, c) = setup(3);
    let d = mux.attach();
    for (i, conn) in [c, d, c, d, d, c].into_iter().enumerate() {
        mux.rx_pass(conn, [m(i as u8, 4)], None);
    }
    assert_eq!(recv_all(&mut mux, e[0]), vec![m(0, 4), m(3, 4)]);
    assert_eq!(recv_all(&mut mux, e[1]), vec![m(1, 4), m(4, 4)]);
    assert_eq!(recv_all(&mut mux, e[2]), vec![m(2, 4), m(5, 4)]);
    check_invariants(&mux);
}

#[test]
fn admission_is_below_rcvbuf_before_adding() {
    let (mut mux, e, c) = setup(2);
    mux.set_rcvbuf(e[0], 10).unwrap();
    // 0 < 10: take 8; 8 < 10: take 8 more (16, over the limit); 16 >= 10: next endpoint.
    mux.rx_pass(c, [m(1, 8), m(2, 8), m(3, 8)], None);
    assert_eq!(mux.rx_queued(e[0]), Some((2, 16)));
    assert_eq!(mux.rx_queued(e[1]), Some((1, 8)));
    check_invariants(&mux);
}

#[test]
fn a_message_bigger_than_rcvbuf_still_fits_an_empty_endpoint() {
    let (mut mux, e, c) = setup(1);
    mux.set_rcvbuf(e[0], 10).unwrap();
    let out = mux.rx_pass(c, [m(1, 1000)], None);
    assert_eq!((out.delivered, out.parked), (1, 0));
    assert_eq!(mux.rx_queued(e[0]), Some((1, 1000)));
    assert_eq!(eligible(&mux), vec![], "full now");
    check_invariants(&mux);
}

#[test]
fn a_full_endpoint_drops_out_until_drained_below_its_low_water_mark() {
    let (mut mux, e, c) = setup(2);
    mux.set_rcvbuf(e[0], 10).unwrap();
    mux.rx_pass(c, [m(1, 8), m(2, 8)], None);
    assert_eq!(eligible(&mux), vec![e[1]], "e0 is full and not re-added");
    mux.rx_pass(c, [m(3, 4)], None);
    mux.rx_pass(c, [m(4, 4)], None);
    assert_eq!(
        mux.rx_queued(e[1]),
        Some((2, 8)),
        "every later pass goes to e1"
    );
    // Reading one message leaves 8 bytes: below rcvbuf but not below the default lowat (1).
    assert_eq!(mux.recv(e[0], 100, false).unwrap().data, m(1, 8));
    assert_eq!(eligible(&mux), vec![e[1]]);
    check_invariants(&mux);
    assert_eq!(mux.recv(e[0], 100, false).unwrap().data, m(2, 8));
    assert_eq!(eligible(&mux), vec![e[1], e[0]], "empty: back at the tail");
    check_invariants(&mux);
}

#[test]
fn rcvlowat_sets_the_rejoin_threshold() {
    let (mut mux, e, c) = setup(2);
    mux.set_rcvbuf(e[0], 10).unwrap();
    mux.set_rcvlowat(e[0], 9).unwrap();
    mux.rx_pass(c, [m(1, 8), m(2, 8)], None);
    assert_eq!(eligible(&mux), vec![e[1]]);
    mux.recv(e[0], 100, false).unwrap();
    assert_eq!(eligible(&mux), vec![e[1], e[0]], "8 < 9: eligible again");
    check_invariants(&mux);
}

#[test]
fn a_pass_overflows_to_the_next_eligible_endpoint() {
    let (mut mux, e, c) = setup(3);
    mux.set_rcvbuf(e[0], 5).unwrap();
    mux.set_rcvbuf(e[1], 5).unwrap();
    let out = mux.rx_pass(c, [m(1, 6), m(2, 6), m(3, 6)], None);
    assert_eq!(out.delivered, 3);
    assert_eq!(recv_all(&mut mux, e[0]), vec![m(1, 6)]);
    assert_eq!(recv_all(&mut mux, e[1]), vec![m(2, 6)]);
    assert_eq!(recv_all(&mut mux, e[2]), vec![m(3, 6)]);
    check_invariants(&mux);
}

#[test]
fn no_eligible_endpoint_parks_messages_and_pauses_until_an_endpoint_drains() {
    let (mut mux, e, c) = setup(1);
    mux.set_rcvbuf(e[0], 10).unwrap();
    let out = mux.rx_pass(c, [m(1, 8), m(2, 8), m(3, 8), m(4, 8)], None);
    assert_eq!((out.delivered, out.parked), (2, 2));
    assert!(mux.is_paused(c));
    assert_eq!(events(&mut mux), vec![Event::Readable(e[0])]);
    check_invariants(&mux);
    // Still paused: a late pass of the same read is parked behind, in order.
    let out = mux.rx_pass(c, [m(5, 8)], None);
    assert_eq!((out.delivered, out.parked), (0, 1));
    mux.recv(e[0], 100, false).unwrap();
    assert!(mux.is_paused(c), "8 bytes left: not drained yet");
    assert_eq!(events(&mut mux), vec![]);
    mux.recv(e[0], 100, false).unwrap();
    // Drained: takes parked messages until full (0 -> 8 -> 16), the connection stays paused.
    assert_eq!(events(&mut mux), vec![Event::Readable(e[0])]);
    assert!(mux.is_paused(c));
    assert_eq!(recv_all(&mut mux, e[0]), vec![m(3, 8), m(4, 8), m(5, 8)]);
    assert_eq!(
        events(&mut mux),
        vec![Event::Readable(e[0]), Event::ConnResume(c)]
    );
    assert!(!mux.is_paused(c));
    assert_eq!(eligible(&mux), vec![e[0]]);
    check_invariants(&mux);
}

#[test]
fn parked_connections_are_served_in_fifo_order() {
    let (mut mux, e, a) = setup(1);
    let b = mux.attach();
    mux.set_recv_disable(e[0], true).unwrap();
    mux.rx_pass(b, [m(1, 4)], None);
    mux.rx_pass(a, [m(2, 4), m(3, 4)], None);
    assert!(mux.is_paused(a) && mux.is_paused(b));
    events(&mut mux);
    mux.set_rcvbuf(e[0], 4).unwrap();
    mux.set_recv_disable(e[0], false).unwrap();
    // Room for one message: b (first to park) resumes, a stays paused.
    assert_eq!(
        events(&mut mux),
        vec![Event::Readable(e[0]), Event::ConnResume(b)]
    );
    assert!(mux.is_paused(a));
    assert_eq!(recv_all(&mut mux, e[0]), vec![m(1, 4), m(2, 4), m(3, 4)]);
    let resumed = vec![
        Event::Readable(e[0]),
        Event::Readable(e[0]),
        Event::ConnResume(a),
    ];
    assert_eq!(events(&mut mux), resumed);
    check_invariants(&mux);
}

#[test]
fn a_busy_connections_backlog_takes_turns_with_a_quiet_one() {
    let (mut mux, e, busy) = setup(1);
    let quiet = mux.attach();
    mux.set_rcvbuf(e[0], 4).unwrap();
    // One message fits; the busy connection parks the rest of its pass, then the quiet one
    // parks its single message behind it.
    mux.rx_pass(busy, [m(1, 4), m(2, 4), m(3, 4), m(4, 4)], None);
    mux.rx_pass(quiet, [m(9, 4)], None);
    events(&mut mux);
    // Each time the endpoint empties it takes one message; a connection it could not empty
    // goes to the back of the line (a kernel psock parks one message at a time and queues up
    // again for the next), so the quiet message waits for one of the busy ones, not for all.
    let mut order = Vec::new();
    while let Some(r) = mux.recv(e[0], usize::MAX, false) {
        order.push(r.data[0]);
    }
    assert_eq!(order, vec![1, 2, 9, 3, 4]);
    assert!(!mux.is_paused(busy) && !mux.is_paused(quiet));
    check_invariants(&mux);
}

#[test]
fn the_hold_queue_is_drained_before_parked_connections() {
    let (mut mux, e, c) = setup(2);
    mux.set_recv_disable(e[1], true).unwrap();
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    // e0 hands its backlog on; nobody is eligible: the hold queue takes it.
    mux.set_recv_disable(e[0], true).unwrap();
    assert_eq!(mux.held(), 2);
    let out = mux.rx_pass(c, [m(3, 4)], None);
    assert_eq!(out.parked, 1);
    check_invariants(&mux);
    events(&mut mux);
    mux.set_recv_disable(e[1], false).unwrap();
    assert_eq!(mux.held(), 0);
    assert_eq!(recv_all(&mut mux, e[1]), vec![m(1, 4), m(2, 4), m(3, 4)]);
    assert!(!mux.is_paused(c));
    check_invariants(&mux);
}

#[test]
fn a_partly_drained_hold_queue_keeps_the_connections_parked() {
    let (mut mux, e, c) = setup(2);
    mux.set_recv_disable(e[1], true).unwrap();
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    mux.set_recv_disable(e[0], true).unwrap();
    mux.rx_pass(c, [m(3, 4)], None);
    mux.set_rcvbuf(e[1], 4).unwrap();
    mux.set_recv_disable(e[1], false).unwrap();
    assert_eq!(mux.held(), 1);
    assert!(mux.is_paused(c), "held messages come first");
    assert_eq!(eligible(&mux), vec![]);
    check_invariants(&mux);
}

#[test]
fn recv_disable_moves_queued_messages_to_another_endpoint() {
    let (mut mux, e, c) = setup(2);
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    events(&mut mux);
    mux.set_recv_disable(e[0], true).unwrap();
    assert_eq!(mux.recv_disabled(e[0]), Some(true));
    assert_eq!(mux.rx_queued(e[0]), Some((0, 0)));
    assert_eq!(events(&mut mux), vec![Event::Readable(e[1])]);
    assert_eq!(eligible(&mux), vec![e[1]]);
    mux.rx_pass(c, [m(3, 4)], None);
    assert_eq!(recv_all(&mut mux, e[1]), vec![m(1, 4), m(2, 4), m(3, 4)]);
    assert!(recv_all(&mut mux, e[0]).is_empty());
    check_invariants(&mux);
}

#[test]
fn clearing_recv_disable_makes_the_endpoint_eligible_again() {
    let (mut mux, e, c) = setup(2);
    mux.set_recv_disable(e[0], true).unwrap();
    mux.set_recv_disable(e[0], true).unwrap();
    mux.set_recv_disable(e[0], false).unwrap();
    assert_eq!(mux.recv_disabled(e[0]), Some(false));
    assert_eq!(eligible(&mux), vec![e[1], e[0]], "rejoins at the tail");
    mux.rx_pass(c, [m(1, 4)], None);
    mux.rx_pass(c, [m(2, 4)], None);
    assert_eq!(recv_all(&mut mux, e[0]), vec![m(2, 4)]);
    check_invariants(&mux);
}

#[test]
fn recv_disable_with_no_other_endpoint_uses_the_hold_queue() {
    let (mut mux, e, c) = setup(1);
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    mux.set_recv_disable(e[0], true).unwrap();
    assert_eq!(mux.held(), 2);
    assert!(!mux.is_paused(c), "held messages don't pause connections");
    mux.set_recv_disable(e[0], false).unwrap();
    assert_eq!(mux.held(), 0);
    assert_eq!(recv_all(&mut mux, e[0]), vec![m(1, 4), m(2, 4)]);
    check_invariants(&mux);
}

#[test]
fn requeue_skips_full_endpoints() {
    let (mut mux, e, c) = setup(3);
    mux.rx_pass(c, [m(1, 4), m(2, 4)], None);
    mux.set_rcvbuf(e[1], 1).unwrap();
    mux.rx_pass(c, [m(3, 4)], None);
    assert_eq!(
        eligible(&mux),
        vec![e[2], e[0]],
        "e1 filled up and dropped out"
    );
    mux.set_rcvbuf(e[2], 4).unwrap();
    // e0's two messages: e2 takes one (0 < 4) and is then full; e0 is disabled; hold the rest.
    mux.set_recv_disable(e[0], true).unwrap();
    assert_eq!(mux.held(), 1);
    assert_eq!(eligible(&mux), vec![]);
    check_invariants(&mux);
    // e1 drains first and takes the held message before rejoining.
    assert_eq!(recv_all(&mut mux, e[1]), vec![m(3, 4), m(2, 4)]);
    assert_eq!(recv_all(&mut mux, e[2]), vec![m(1, 4)]);
    assert_eq!(mux.held(), 0);
    check_invariants(&mux);
}

#[test]
fn prefer_picks_the_driving_endpoint_when_it_is_eligible() {
    let (mut mux, e, c) = setup(3);
    mux.rx_pass(c, [m(1, 4)], Some(e[2]));
    assert_eq!(mux.rx_queued(e[2]), Some((1, 4)));
    assert_eq!(
        eligible(&mux),
        vec![e[0], e[1], e[2]],
        "the others keep their FIFO order"
    );
    mux.rx_pass(c, [m(2, 4)], None);
    assert_eq!(mux.rx_queued(e[0]), Some((1, 4)));
    check_invariants(&mux);
}

#[test]
fn prefer_falls_back_to_the_fifo_when_not_eligible() {
    let (mut mux, e, c) = setup(2);
    mux.set_recv_disable(e[1], true).unwrap();
    mux.rx_pass(c, [m(1, 4)], Some(e[1]));
    assert_eq!(mux.rx_queued(e[0]), Some((1, 4)));
    mux.set_recv_disable(e[1], false).unwrap();
    mux.set_rcvbuf(e[1], 1).unwrap();
    mux.rx_pass(c, [m(2, 4)], Some(e[1]));
    assert_eq!(
        mux.rx_queued(e[1]),
        Some((1, 4)),
        "eligible with room: taken"
    );
    mux.rx_pass(c, [m(3, 4)], Some(e[1]));
    assert_eq!(mux.rx_queued(e[0]), Some((2, 8)), "full: FIFO instead");
    mux.rx_pass(c, [m(4, 4)], Some(EndpointId(99)));
    assert_eq!(mux.rx_queued(e[0]), Some((3, 12)), "unknown: FIFO");
    check_invariants(&mux);
}

#[test]
fn messages_carry_their_connection() {
    let (mut mux, e, a) = setup(1);
    let b = mux.attach();
    mux.rx_pass(b, [m(1, 4)], None);
    mux.rx_pass(a, [m(2, 4)], None);
    assert_eq!(mux.recv(e[0], 100, false).unwrap().conn, b);
    assert_eq!(mux.recv(e[0], 100, false).unwrap().conn, a);
}
