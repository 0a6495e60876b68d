//! Send semantics: message boundaries, batching, buffering, errors (`kcm-spec.md` §2.2).

use super::*;

fn flags(more: bool, eor: bool, batch: bool) -> SendFlags {
    SendFlags { more, eor, batch }
}

/// The entries queued on an endpoint, as byte vectors (small messages share a run).
fn queue(mux: &MuxCore, ep: EndpointId) -> Vec<Vec<u8>> {
    let e = mux.ep(ep).expect("endpoint");
    e.tx.queue.iter().map(tx::TxMsg::bytes).collect()
}

#[test]
fn datagram_send_ends_the_message_unless_more() {
    let (mut mux, ep) = mux(Kind::Datagram);
    assert_eq!(
        mux.send(ep, m(b'a', 2), flags(true, false, false), None),
        Ok(2)
    );
    assert_eq!(mux.tx_queued(ep), Some((0, 0)), "open, not queued");
    // MSG_EOR means nothing on a datagram endpoint: MSG_MORE keeps it open.
    assert_eq!(
        mux.send(ep, m(b'b', 2), flags(true, true, false), None),
        Ok(2)
    );
    assert_eq!(
        mux.send(ep, m(b'c', 2), flags(false, false, false), None),
        Ok(2)
    );
    assert_eq!(queue(&mux, ep), vec![b"aabbcc".to_vec()]);
    assert_eq!(tx_counts(&mux, ep), (1, 6));
    check_invariants(&mux);
}

#[test]
fn seqpacket_send_ends_the_message_only_with_eor() {
    let (mut mux, ep) = mux(Kind::SeqPacket);
    mux.send(ep, m(b'a', 2), flags(false, false, false), None)
        .unwrap();
    assert_eq!(mux.tx_queued(ep), Some((0, 0)), "no eor: still open");
    mux.send(ep, m(b'b', 1), flags(false, false, true), None)
        .unwrap();
    assert_eq!(
        mux.tx_queued(ep),
        Some((0, 0)),
        "batch does not end it either"
    );
    // MSG_MORE means nothing on a seqpacket endpoint: MSG_EOR ends it.
    mux.send(ep, m(b'c', 2), flags(true, true, false), None)
        .unwrap();
    assert_eq!(queue(&mux, ep), vec![b"aabcc".to_vec()]);
    check_invariants(&mux);
}

#[test]
fn zero_length_ending_send_completes_the_open_message_and_returns_zero() {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let (mut mux, ep) = mux(kind);
        mux.send(ep, m(b'x', 3), MORE, None).unwrap();
        assert_eq!(mux.send(ep, Bytes::new(), END, None), Ok(0));
        assert_eq!(queue(&mux, ep), vec![b"xxx".to_vec()]);
        assert_eq!(mux.endpoint_stats(ep).unwrap().tx_msgs, 1);
        check_invariants(&mux);
    }
}

#[test]
fn zero_length_send_never_creates_an_empty_message() {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let (mut mux, ep) = mux(kind);
        let _c = mux.attach();
        events(&mut mux);
        assert_eq!(mux.send(ep, Bytes::new(), END, None), Ok(0));
        assert_eq!(mux.send(ep, Bytes::new(), MORE, None), Ok(0));
        assert_eq!(mux.send(ep, Bytes::new(), MORE, None), Ok(0));
        assert_eq!(mux.send(ep, Bytes::new(), END, None), Ok(0));
        assert_eq!(mux.tx_queued(ep), Some((0, 0)));
        assert_eq!(mux.endpoint_stats(ep).unwrap().tx_msgs, 0);
        assert_eq!(events(&mut mux), vec![], "nothing to transmit");
        assert_eq!(mux.poll_transmit(ep), None);
        check_invariants(&mux);
    }
}

#[test]
fn the_target_of_a_message_is_taken_from_its_first_bytes() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let a = mux.attach();
    let b = mux.attach();
    // An empty first call opens nothing, so the target of the data that follows counts.
    mux.send(ep, Bytes::new(), MORE, None).unwrap();
    mux.send(ep, m(1, 2), MORE, Some(b)).unwrap();
    mux.send(ep, m(2, 2), END, Some(a)).unwrap();
    assert_eq!(flush(&mut mux, ep), vec![(b, vec![1, 1, 2, 2])]);
    check_invariants(&mux);
}

#[test]
fn batch_defers_transmission_until_a_non_batch_completion() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let a = mux.attach();
    events(&mut mux);
    mux.send(ep, m(1, 2), BATCH, None).unwrap();
    mux.send(ep, m(2, 2), BATCH, None).unwrap();
    assert_eq!(events(&mut mux), vec![], "batched: nothing to do yet");
    assert_eq!(mux.tx_reserved_by(a), None);
    assert_eq!(mux.poll_transmit(ep), None);
    check_invariants(&mux);
    mux.send(ep, m(3, 2), END, None).unwrap();
    assert_eq!(events(&mut mux), vec![Event::TxReady(ep)]);
    let tx = mux.poll_transmit(ep).unwrap();
    assert_eq!(
        cat(&tx),
        vec![1, 1, 2, 2, 3, 3],
        "the whole batch in one write"
    );
    mux.handle_transmit(ep, a, TxResult::Written(6));
    assert_eq!(mux.stats().tx_msgs, 3);
    check_invariants(&mux);
}

#[test]
fn an_unfinished_message_does_not_flush_a_batch() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let _a = mux.attach();
    events(&mut mux);
    mux.send(ep, m(1, 2), BATCH, None).unwrap();
    mux.send(ep, m(2, 2), MORE, None).unwrap();
    assert_eq!(events(&mut mux), vec![]);
    check_invariants(&mux);
}

#[test]
fn zero_length_ending_send_flushes_a_batch() {
    let (mut mux, ep) = mux(Kind::SeqPacket);
    let a = mux.attach();
    events(&mut mux);
    mux.send(ep, m(1, 2), BATCH, None).unwrap();
    assert_eq!(mux.send(ep, Bytes::new(), END, None), Ok(0));
    assert_eq!(events(&mut mux), vec![Event::TxReady(ep)]);
    assert_eq!(flush(&mut mux, ep), vec![(a, vec![1, 1])]);
    check_invariants(&mux);
}

#[test]
fn would_block_flushes_a_batch() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let a = mux.attach();
    mux.set_sndbuf(ep, 10).unwrap();
    events(&mut mux);
    mux.send(ep, m(1, 6), BATCH, None).unwrap();
    mux.send(ep, m(2, 6), BATCH, None).unwrap();
    assert_eq!(events(&mut mux), vec![]);
    assert_eq!(
        mux.send(ep, m(3, 1), BATCH, None),
        Err(SendError::WouldBlock)
    );
    assert_eq!(SendError::WouldBlock.errno(), errno::EAGAIN);
    assert_eq!(
        events(&mut mux),
        vec![Event::TxReady(ep)],
        "flushed so that it can't deadlock"
    );
    let tx = mux.poll_transmit(ep).unwrap();
    assert_eq!(tx.len, 12);
    mux.handle_transmit(ep, a, TxResult::Written(12));
    assert_eq!(events(&mut mux), vec![Event::Writable(ep)]);
    check_invariants(&mux);
}

#[test]
fn sndbuf_is_checked_only_at_message_start() {
    let (mut mux, ep) = mux(Kind::SeqPacket);
    mux.set_sndbuf(ep, 10).unwrap();
    // A message larger than the send buffer is accepted whole.
    assert_eq!(mux.send(ep, m(1, 100), END, None), Ok(100));
    assert!(!mux.can_send(ep));
    assert_eq!(mux.send(ep, m(2, 1), END, None), Err(SendError::WouldBlock));
    assert_eq!(
        mux.send(ep, Bytes::new(), END, None),
        Err(SendError::WouldBlock)
    );
    check_invariants(&mux);

    // A message begun below the limit may grow past it.
    let (mut mux, ep) = super::mux(Kind::SeqPacket);
    mux.set_sndbuf(ep, 10).unwrap();
    mux.send(ep, m(1, 8), END, None).unwrap();
    mux.send(ep, m(2, 8), MORE, None).unwrap();
    assert!(mux.can_send(ep), "continuing an open message never blocks");
    assert_eq!(mux.send(ep, m(3, 50), MORE, None), Ok(50));
    assert_eq!(mux.send(ep, m(4, 50), END, None), Ok(50));
    assert_eq!(mux.tx_queued(ep), Some((2, 116)));
    check_invariants(&mux);
}

#[test]
fn a_blocked_sender_is_told_when_the_queue_drains() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.set_sndbuf(ep, 10).unwrap();
    events(&mut mux);
    send(&mut mux, ep, &[1; 6]);
    send(&mut mux, ep, &[2; 6]);
    assert_eq!(mux.send(ep, m(3, 1), END, None), Err(SendError::WouldBlock));
    let a = mux.attach();
    events(&mut mux);
    let tx = mux.poll_transmit(ep).unwrap();
    mux.handle_transmit(ep, a, TxResult::Written(3));
    assert_eq!(events(&mut mux), vec![], "12 bytes still queued");
    mux.write_space(a);
    assert_eq!(events(&mut mux), vec![Event::TxReady(ep)]);
    let tx2 = mux.poll_transmit(ep).unwrap();
    assert_eq!(tx2.len, tx.len - 3);
    mux.handle_transmit(ep, a, TxResult::Written(3));
    assert_eq!(
        events(&mut mux),
        vec![Event::Writable(ep)],
        "6 < 10: room again"
    );
    send(&mut mux, ep, &[3; 1]);
    check_invariants(&mux);
}

#[test]
fn raising_sndbuf_wakes_the_sender() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.set_sndbuf(ep, 5).unwrap();
    send(&mut mux, ep, &[1; 6]);
    assert_eq!(mux.send(ep, m(2, 1), END, None), Err(SendError::WouldBlock));
    events(&mut mux);
    mux.set_sndbuf(ep, 100).unwrap();
    assert_eq!(events(&mut mux), vec![Event::Writable(ep)]);
    check_invariants(&mux);
}

#[test]
fn a_pending_error_fails_the_next_send_once_and_clears() {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let (mut mux, ep) = mux(kind);
        mux.set_endpoint_error(ep, errno::EPIPE);
        let err = mux.send(ep, m(1, 3), END, None).unwrap_err();
        assert_eq!(
            (err, err.errno()),
            (SendError::Pending(errno::EPIPE), errno::EPIPE)
        );
        assert!(!mux.has_endpoint_error(ep));
        assert_eq!(mux.send(ep, m(1, 3), END, None), Ok(3));
        assert_eq!(
            mux.tx_queued(ep),
            Some((1, 3)),
            "only the second send was taken"
        );
        check_invariants(&mux);
    }
}

#[test]
fn datagram_error_discards_the_open_message() {
    let (mut mux, ep) = mux(Kind::Datagram);
    mux.send(ep, m(b'a', 2), MORE, None).unwrap();
    mux.set_endpoint_error(ep, errno::EPIPE);
    assert!(mux.send(ep, m(b'b', 2), MORE, None).is_err());
    mux.send(ep, m(b'c', 2), END, None).unwrap();
    assert_eq!(
        queue(&mux, ep),
        vec![b"cc".to_vec()],
        "aa went with the failed message"
    );
    check_invariants(&mux);
}

#[test]
fn seqpacket_error_keeps_the_open_message() {
    let (mut mux, ep) = mux(Kind::SeqPacket);
    mux.send(ep, m(b'a', 2), MORE, None).unwrap();
    mux.set_endpoint_error(ep, errno::EPIPE);
    assert!(mux.send(ep, m(b'b', 2), END, None).is_err());
    mux.send(ep, m(b'c', 2), END, None).unwrap();
    assert_eq!(queue(&mux, ep), vec![b"aacc".to_vec()]);
    check_invariants(&mux);
}

#[test]
fn sends_are_counted_per_endpoint() {
    let (mut mux, e0) = mux(Kind::Datagram);
    let e1 = mux.add_endpoint().unwrap();
    send(&mut mux, e0, b"abc");
    mux.send(e1, m(1, 4), MORE, None).unwrap();
    mux.send(e1, m(1, 5), END, None).unwrap();
    assert_eq!((tx_counts(&mux, e0), tx_counts(&mux, e1)), ((1, 3), (1, 9)));
}
