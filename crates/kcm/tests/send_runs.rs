//! [`Endpoint::send_runs`] over real loopback connections: a [`SendBatch`] of replies written
//! back to back reaches each connection whole and in order, takes what the send buffer admits
//! and keeps the rest, and stops at a message for a connection that is gone (which stays at
//! its front). That it queues exactly what one send per message would is the core's property
//! test (`kcm_core::mux` tests, `batch_send.rs`).

mod common;

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use common::{
    assert_errno, assert_silent, attach_narrow, attach_pair, endpoint, frame, read_frame, wait_for,
};
use kcm::{ConnectionId, Endpoint, Kind, SendBatch};

const ENOTCONN: i32 = rustix::io::Errno::NOTCONN.raw_os_error();

/// Message `seq` for peer `p`: framed, `len` body bytes that say whose and which it is.
fn msg(p: usize, seq: usize, len: usize) -> Vec<u8> {
    let mut body = vec![(p * 50 + seq % 50) as u8; len.max(2)];
    body[0] = p as u8;
    body[1] = seq as u8;
    frame(&body)
}

#[test]
fn a_send_batch_reaches_each_connection_whole_and_in_order() {
    let ep = endpoint(Kind::Datagram);
    let mut peers: Vec<(TcpStream, ConnectionId)> = (0..3).map(|_| attach_pair(&ep)).collect();
    // Runs for one connection, changes of destination, sizes on both sides of the copy
    // limit (256 B) and one far larger than a run (4 KiB), some written in place.
    let sizes = [12usize, 12, 300, 12, 5_000, 1, 251, 252, 40];
    let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    let mut batch = SendBatch::new();
    for seq in 0..120 {
        let p = (seq / 4 + seq / 7) % 3;
        let m = msg(p, seq, sizes[seq % sizes.len()]);
        if seq % 5 == 0 {
            batch.slot_to(peers[p].1, m.len()).copy_from_slice(&m);
        } else {
            batch.push_to(peers[p].1, &m);
        }
        want[p].push(m);
    }
    let bytes = batch.pending_bytes();
    assert_eq!(ep.send_runs(&mut batch).expect("send_runs"), 120);
    assert!(batch.is_empty(), "everything accepted leaves the batch");
    for (p, (peer, _)) in peers.iter_mut().enumerate() {
        for (i, m) in want[p].iter().enumerate() {
            assert_eq!(
                &read_frame(peer).expect("a message"),
                m,
                "peer {p} message {i}"
            );
        }
        assert_silent(peer, Duration::from_millis(20));
    }
    let s = ep.stats();
    assert_eq!((s.tx_msgs, s.tx_bytes), (120, bytes as u64));
}

#[test]
fn unaddressed_messages_of_a_batch_go_out_on_a_connection_in_order() {
    let ep = endpoint(Kind::Datagram);
    let (mut peer, _) = attach_pair(&ep);
    let mut batch = SendBatch::new();
    let msgs: Vec<Vec<u8>> = (0..50).map(|i| msg(0, i, 10 + i * 7)).collect();
    for m in &msgs {
        batch.push(m);
    }
    assert_eq!(ep.send_runs(&mut batch).expect("send_runs"), msgs.len());
    for m in &msgs {
        assert_eq!(&read_frame(&mut peer).expect("a message"), m);
    }
}

/// An endpoint with a 1,000-byte send buffer and no connection (nothing drains its queue, so
/// what the buffer admits is exact), and a batch of five unaddressed 604-byte messages.
fn five_for_a_small_buffer() -> (Endpoint, Vec<Vec<u8>>, SendBatch) {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(1000).expect("sndbuf");
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| msg(0, i, 600)).collect();
    let mut batch = SendBatch::new();
    for m in &msgs {
        batch.push(m);
    }
    (ep, msgs, batch)
}

/// Sends until the batch is empty; returns how many were accepted.
fn send_all(ep: &Endpoint, batch: &mut SendBatch) -> usize {
    let mut sent = 0;
    while !batch.is_empty() {
        let n = ep.send_runs(batch).expect("the rest");
        assert!(n > 0, "a blocking send accepts at least one");
        sent += n;
    }
    sent
}

#[test]
fn a_full_send_buffer_takes_what_fits_and_leaves_the_rest_in_the_batch() {
    let (ep, msgs, mut batch) = five_for_a_small_buffer();
    ep.set_nonblocking(true);
    // 0 queued before the first, 604 < 1000 before the second, 1208 before the third.
    assert_eq!(ep.send_runs(&mut batch).expect("two fit"), 2);
    assert_eq!((batch.len(), batch.front()), (3, Some(&msgs[2][..])));
    let e = ep.send_runs(&mut batch).expect_err("the buffer is full");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    assert_eq!(batch.len(), 3, "a refused send takes nothing");

    // A connection drains the queue. A blocking send returns what it accepted when the
    // buffer fills again after its first message (as `sendmmsg`).
    let (mut peer, _) = attach_pair(&ep);
    ep.set_nonblocking(false);
    assert_eq!(send_all(&ep, &mut batch), 3);
    for m in &msgs {
        assert_eq!(&read_frame(&mut peer).expect("a message"), m);
    }
    assert_eq!(ep.stats().tx_msgs, 5);
}

#[test]
fn a_blocking_send_waits_for_room_and_sends_the_refused_message_once() {
    let (ep, msgs, mut batch) = five_for_a_small_buffer();
    // The first two fill the buffer, the third is refused.
    assert_eq!(ep.send_runs(&mut batch).expect("two fit"), 2);
    let (mut peer, sent) = std::thread::scope(|s| {
        // Nothing drains the buffer until the attach: the call waits for room for its
        // first message (sent on its own), then goes on with the rest.
        let sender = s.spawn(|| send_all(&ep, &mut batch));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !sender.is_finished(),
            "the send waits while nothing drains the buffer"
        );
        let (peer, _) = attach_pair(&ep);
        (peer, sender.join().expect("sender"))
    });
    assert_eq!(sent, 3);
    for m in &msgs {
        assert_eq!(&read_frame(&mut peer).expect("a message"), m);
    }
    assert_silent(&mut peer, Duration::from_millis(50));
    assert_eq!(ep.stats().tx_msgs, 5, "each message once");
}

#[test]
fn a_message_for_a_gone_connection_stops_the_batch_and_stays_at_its_front() {
    let ep = endpoint(Kind::Datagram);
    let (mut peer, conn) = attach_pair(&ep);
    let (_other, gone) = attach_pair(&ep);
    ep.unattach_id(gone).expect("unattach");
    let (a1, lost, a2) = (msg(0, 1, 20), msg(1, 2, 20), msg(0, 3, 20));
    let mut batch = SendBatch::new();
    batch.push_to(conn, &a1);
    batch.push_to(gone, &lost);
    batch.push_to(conn, &a2);
    // The first is accepted; the call stops at the refusal, as `send_batch_to` does.
    assert_eq!(ep.send_runs(&mut batch).expect("one accepted"), 1);
    assert_eq!(batch.front(), Some(&lost[..]));
    // Nothing accepted before it now: the refusal is the call's error.
    assert_errno(ep.send_runs(&mut batch), ENOTCONN);
    assert_eq!(batch.len(), 2);
    batch.skip(1);
    assert_eq!(ep.send_runs(&mut batch).expect("the rest"), 1);
    assert_eq!(read_frame(&mut peer).expect("a1"), a1);
    assert_eq!(read_frame(&mut peer).expect("a2"), a2);
    assert_eq!(ep.stats().tx_msgs, 2);
}

/// A batch's replies to a peer that stops reading step aside into that connection's backlog
/// while the replies to another peer go out; with the backlog full, the stuck peer's next
/// message is refused at the front of a batch (only it: skipping it lets the rest go), and
/// the stuck peer still gets everything accepted for it, whole and in order, when it reads
/// again.
#[test]
fn replies_in_a_batch_to_a_peer_that_stops_reading_do_not_hold_up_the_others() {
    let ep = endpoint(Kind::Datagram);
    ep.set_send_buffer_size(4 << 20).expect("sndbuf");
    let (mut slow, slow_conn) = attach_narrow(&ep);
    let (mut fast, fast_conn) = attach_pair(&ep);
    // A megabyte of small replies to the slow peer, 100 to a batch: far more than its
    // kernel buffers hold.
    let to_slow: Vec<Vec<u8>> = (0..5_000).map(|i| msg(1, i, 200)).collect();
    let mut batch = SendBatch::new();
    for replies in to_slow.chunks(100) {
        for m in replies {
            batch.push_to(slow_conn, m);
        }
        while !batch.is_empty() {
            ep.send_runs(&mut batch).expect("room in the send buffer");
        }
    }
    wait_for("the slow connection to fill up", || {
        ep.connection_stats(slow_conn).expect("stats").tx.tx_bytes > 0
    });
    // Replies to the fast peer go out meanwhile, a batch at a time.
    for round in 0..10 {
        let replies: Vec<Vec<u8>> = (0..20).map(|i| msg(2, round * 20 + i, 30)).collect();
        for m in &replies {
            batch.push_to(fast_conn, m);
        }
        assert_eq!(
            ep.send_runs(&mut batch).expect("room for the fast peer"),
            20
        );
        for m in &replies {
            assert_eq!(&read_frame(&mut fast).expect("a reply"), m, "round {round}");
        }
    }
    // The slow peer's replies stepped aside into its backlog, which is full now.
    let (msgs, bytes) = ep.connection_backlog(slow_conn).expect("a backlog");
    assert!(
        msgs > 0 && bytes >= 208 * 1024,
        "{msgs} messages, {bytes} bytes"
    );
    // A stuck message at the front stops the batch (non-blocking: refused); skipped, the
    // rest goes.
    ep.set_nonblocking(true);
    let (stuck, after) = (msg(1, 60_000, 200), msg(2, 9_999, 30));
    batch.push_to(slow_conn, &stuck);
    batch.push_to(fast_conn, &after);
    let e = ep
        .send_runs(&mut batch)
        .expect_err("the slow peer's backlog is full");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(batch.front(), Some(&stuck[..]));
    batch.skip(1);
    assert_eq!(ep.send_runs(&mut batch).expect("the fast reply"), 1);
    assert_eq!(read_frame(&mut fast).expect("a reply"), after);
    ep.set_nonblocking(false);
    // The slow peer reads again: everything accepted for it arrives, whole and in order.
    for (i, m) in to_slow.iter().enumerate() {
        assert_eq!(
            &read_frame(&mut slow).expect("a reply"),
            m,
            "slow reply {i}"
        );
    }
    assert_silent(&mut slow, Duration::from_millis(20));
    wait_for("the slow peer's backlog to go", || {
        ep.connection_backlog(slow_conn).is_none()
    });
    assert_eq!(ep.mux_stats().tx_addr_drops, 0);
}
