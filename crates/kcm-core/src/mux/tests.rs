//! Deterministic tests of [`MuxCore`], one (or a few) per applicable line of the `kcm-spec.md`
//! §11 checklist, and a property test driving random operation sequences.
//!
//! Every test ends by calling [`check_invariants`], which looks inside the state machine (the
//! tests are a child module of `mux`, so they see its private fields) and asserts the
//! bookkeeping that the public API cannot show: list membership agrees with the flags, memory
//! counters agree with the queues, nobody holds a connection twice, no wake-up was lost.

use bytes::Bytes;

use super::tx::TxMsg;
use super::*;
use crate::errno;

mod attach;
mod backlog;
mod batch;
mod batch_send;
mod endpoints;
mod prop;
mod recv;
mod send;
mod stats;
mod steering;
mod transmit;

/// Everything the core wants the runtime to act on, in order.
fn events(mux: &mut MuxCore) -> Vec<Event> {
    std::iter::from_fn(|| mux.poll_event()).collect()
}

/// A new mux and its first endpoint.
fn mux(kind: Kind) -> (MuxCore, EndpointId) {
    MuxCore::new(kind).expect("a new mux")
}

/// A recognisable message body: `tag` repeated `len` times.
fn m(tag: u8, len: usize) -> Bytes {
    Bytes::from(vec![tag; len])
}

/// Ends the message on both kinds (DGRAM: no `more`; SEQPACKET: `eor`).
const END: SendFlags = SendFlags {
    more: false,
    eor: true,
    batch: false,
};
/// Continues the message on both kinds (DGRAM: `more`; SEQPACKET: no `eor`).
const MORE: SendFlags = SendFlags {
    more: true,
    eor: false,
    batch: false,
};
/// Ends the message but asks to defer transmission (`MSG_BATCH`).
const BATCH: SendFlags = SendFlags {
    more: false,
    eor: true,
    batch: true,
};

/// Sends one whole unaddressed message, which must be accepted.
fn send(mux: &mut MuxCore, ep: EndpointId, data: &[u8]) {
    let n = mux.send(ep, Bytes::copy_from_slice(data), END, None);
    assert_eq!(n, Ok(data.len()), "send on {ep:?}");
}

/// The bytes of a transmit, concatenated.
fn cat(tx: &Transmit) -> Vec<u8> {
    assert_eq!(
        tx.bufs.iter().map(Bytes::len).sum::<usize>(),
        tx.len,
        "len matches bufs"
    );
    tx.bufs.iter().flat_map(|b| b.iter().copied()).collect()
}

/// Writes everything the endpoint may write now, the socket accepting every byte; returns
/// the connection and bytes of each transmit.
fn flush(mux: &mut MuxCore, ep: EndpointId) -> Vec<(ConnectionId, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(tx) = mux.poll_transmit(ep) {
        let bytes = cat(&tx);
        mux.handle_transmit(ep, tx.conn, TxResult::Written(tx.len));
        out.push((tx.conn, bytes));
    }
    out
}

/// Reads every queued message of an endpoint (whole reads).
fn recv_all(mux: &mut MuxCore, ep: EndpointId) -> Vec<Bytes> {
    std::iter::from_fn(|| mux.recv(ep, usize::MAX, false).map(|r| r.data)).collect()
}

/// An endpoint's receive counters: (messages, bytes).
fn rx_counts(mux: &MuxCore, ep: EndpointId) -> (u64, u64) {
    let st = mux.endpoint_stats(ep).expect("an open endpoint");
    (st.rx_msgs, st.rx_bytes)
}

/// An endpoint's send counters: (messages, bytes).
fn tx_counts(mux: &MuxCore, ep: EndpointId) -> (u64, u64) {
    let st = mux.endpoint_stats(ep).expect("an open endpoint");
    (st.tx_msgs, st.tx_bytes)
}

/// The receive-eligible FIFO, as endpoint ids.
fn eligible(mux: &MuxCore) -> Vec<EndpointId> {
    mux.rx_eligible.iter().map(|&i| EndpointId(i)).collect()
}

fn has_room(e: &Ep) -> bool {
    !e.disabled && e.rx_mem < e.rcvbuf
}

/// Asserts every internal consistency rule of the mux. Panics with a description of the
/// first rule broken.
#[track_caller]
fn check_invariants(mux: &MuxCore) {
    check_rx(mux);
    check_tx(mux);
}

#[track_caller]
fn check_rx(mux: &MuxCore) {
    let mut seen = std::collections::HashSet::new();
    for &i in &mux.rx_eligible {
        assert!(seen.insert(i), "endpoint {i} twice on the eligible FIFO");
    }
    for (i, e) in mux.eps.iter().enumerate() {
        let Some(e) = e else {
            assert!(
                !mux.rx_eligible.contains(&(i as u32)),
                "closed endpoint {i} eligible"
            );
            continue;
        };
        let sum: usize = e.rx.iter().map(|(data, _)| data.len()).sum();
        assert_eq!(
            e.rx_mem, sum,
            "endpoint {i}: rx_mem is the sum of queued lengths"
        );
        assert_eq!(
            e.rx_wait,
            mux.rx_eligible.contains(&(i as u32)),
            "endpoint {i}: rx_wait flag"
        );
        if e.disabled {
            assert!(!e.rx_wait, "disabled endpoint {i} is eligible");
            assert!(e.rx.is_empty(), "disabled endpoint {i} holds messages");
        } else if !e.rx_wait {
            // Out of the FIFO only while full, or until drained below the low-water mark.
            assert!(
                e.rx_mem >= e.rcvbuf || e.rx_mem >= e.rcvlowat,
                "endpoint {i} has room (rx_mem {}, rcvbuf {}, rcvlowat {}) but is not eligible",
                e.rx_mem,
                e.rcvbuf,
                e.rcvlowat
            );
        }
    }
    let mut ready = std::collections::HashSet::new();
    for ci in mux.ready_conns.iter() {
        assert!(ready.insert(ci), "connection {ci} twice on the ready FIFO");
    }
    let mut free: Vec<u32> = mux.free_conns.iter().map(|r| r.0).collect();
    free.sort_unstable();
    let slots: Vec<u32> = (0..mux.conns.len() as u32)
        .filter(|&i| mux.conns[i as usize].is_none())
        .collect();
    assert_eq!(free, slots, "the free list is the free slots, each once");
    let mut parked_any = false;
    for (ci, c) in mux.conns.iter().enumerate() {
        let Some(c) = c else {
            assert!(
                !ready.contains(&(ci as u32)),
                "freed connection {ci} on the ready FIFO"
            );
            continue;
        };
        assert_eq!(
            c.id.index as usize, ci,
            "connection id index matches its slot"
        );
        assert_eq!(
            c.ready,
            ready.contains(&(ci as u32)),
            "connection {ci}: ready flag"
        );
        assert_eq!(
            c.ready,
            !c.parked.is_empty(),
            "connection {ci}: ready iff parked"
        );
        if c.done {
            assert!(
                c.parked.is_empty(),
                "unattached connection {ci} keeps parked messages"
            );
        }
        parked_any |= !c.parked.is_empty();
    }
    if parked_any || !mux.hold.is_empty() {
        // Whoever became eligible would first have taken the held and parked messages.
        for &i in &mux.rx_eligible {
            let e = mux.eps[i as usize]
                .as_ref()
                .expect("eligible endpoint exists");
            assert!(
                !has_room(e),
                "endpoint {i} has room while messages are parked or held"
            );
        }
    }
}

#[track_caller]
fn check_backlogs(mux: &MuxCore) {
    for c in mux.conns.iter().flatten() {
        let Some(b) = &c.backlog else { continue };
        let id = c.id;
        assert!(!b.queue.is_empty(), "{id}: empty backlog kept");
        assert_eq!(c.tx_reserved_by, None, "{id}: backlog and a reservation");
        assert!(
            !c.tx_avail && !mux.tx_avail.contains(id.index),
            "{id}: backlog on an available connection"
        );
        let sum: usize = b.queue.iter().map(|m: &TxMsg| m.len).sum();
        assert_eq!(b.bytes, sum, "{id}: backlog bytes");
        for (k, m) in b.queue.iter().enumerate() {
            assert_eq!(
                m.target,
                Some(id),
                "{id}: backlog entry {k} addressed elsewhere"
            );
            assert!(m.sent < m.len, "{id}: backlog entry {k} fully sent");
            assert!(k == 0 || m.sent == 0, "{id}: backlog entry {k} half sent");
        }
        if c.tx_stopped || c.done {
            assert!(
                b.writing.is_some(),
                "{id}: backlog kept on a dead connection"
            );
        }
    }
}

#[track_caller]
fn check_tx(mux: &MuxCore) {
    check_backlogs(mux);
    let mut avail = std::collections::HashSet::new();
    for ci in mux.tx_avail.iter() {
        assert!(
            avail.insert(ci),
            "connection {ci} twice on the available FIFO"
        );
    }
    let mut waiting = std::collections::HashSet::new();
    for &ei in &mux.tx_waiting {
        assert!(
            waiting.insert(ei),
            "endpoint {ei} twice on the waiting FIFO"
        );
    }
    let mut holders = std::collections::HashMap::new();
    for (i, e) in mux.eps.iter().enumerate() {
        let i = i as u32;
        let Some(e) = e else {
            assert!(
                !waiting.contains(&i),
                "closed endpoint {i} waits for a connection"
            );
            continue;
        };
        let t = &e.tx;
        if !t.waiting {
            // `reserve_conn` relies on this to skip scanning the waiter lists.
            assert!(
                !waiting.contains(&i)
                    && mux
                        .conns
                        .iter()
                        .flatten()
                        .all(|c| !c.addr_waiters.contains(&i)),
                "endpoint {i} is on a waiter list but not waiting"
            );
        }
        let sum: usize = t.queue.iter().map(|m: &TxMsg| m.len).sum();
        assert_eq!(
            t.queued_bytes, sum,
            "endpoint {i}: queued_bytes is the sum of queued lengths"
        );
        let msgs: usize = t.queue.iter().map(TxMsg::msgs).sum();
        assert_eq!(
            t.queued_msgs, msgs,
            "endpoint {i}: queued_msgs counts the messages of every entry"
        );
        for (k, msg) in t.queue.iter().enumerate() {
            assert!(msg.len > 0, "endpoint {i}: empty message queued");
            assert!(
                msg.sent < msg.len,
                "endpoint {i}: message {k} fully sent but still queued"
            );
            assert!(
                k == 0 || msg.sent == 0,
                "endpoint {i}: message {k} behind the head is half sent"
            );
        }
        if let Some(ci) = t.reserved {
            assert!(
                holders.insert(ci, i).is_none(),
                "connection {ci} reserved by two endpoints"
            );
            let c = mux.conns[ci as usize]
                .as_ref()
                .expect("reserved connection exists");
            assert_eq!(
                c.tx_reserved_by,
                Some(i),
                "connection {ci} knows its holder {i}"
            );
            assert!(
                !t.waiting,
                "endpoint {i} holds a connection and waits for one"
            );
            assert!(
                !t.queue.is_empty(),
                "endpoint {i} holds connection {ci} with nothing to send"
            );
            if c.tx_stopped || c.done {
                // Only while the runtime still writes on it (release deferred until reported).
                assert!(
                    t.writing.is_some(),
                    "endpoint {i} holds aborted connection {ci}"
                );
            }
        } else {
            assert!(
                t.writing.is_none(),
                "endpoint {i} writes without a reservation"
            );
        }
        if !t.queue.is_empty() && t.reserved.is_none() && !t.wait_more {
            assert!(
                t.waiting,
                "endpoint {i} has messages, no connection and is not waiting"
            );
        }
        if t.waiting {
            let head = t.queue.front().expect("a waiting endpoint has messages");
            if let Some(c) = head.target {
                assert!(
                    mux.tx_backlog(c).is_none(),
                    "endpoint {i} waits for {c}, which has a backlog to join"
                );
            }
            match head.target {
                None => assert!(
                    waiting.contains(&i),
                    "endpoint {i} waits but is not on the FIFO"
                ),
                Some(c) => {
                    let conn = mux.conn(c).expect("waited-for connection exists");
                    assert!(
                        conn.addr_waiters.contains(&i),
                        "endpoint {i} not among {c}'s waiters"
                    );
                }
            }
        } else {
            assert!(
                !waiting.contains(&i),
                "endpoint {i} on the waiting FIFO but not waiting"
            );
        }
        if t.blocked {
            assert!(
                t.queued_bytes >= t.sndbuf,
                "endpoint {i} blocked with room: lost Writable"
            );
        }
    }
    for (ci, c) in mux.conns.iter().enumerate() {
        let ci = ci as u32;
        let Some(c) = c else {
            assert!(!avail.contains(&ci), "freed connection {ci} available");
            continue;
        };
        assert_eq!(
            c.tx_avail,
            avail.contains(&ci),
            "connection {ci}: tx_avail flag"
        );
        match c.tx_reserved_by {
            Some(e) => assert_eq!(holders.get(&ci), Some(&e), "connection {ci}: holder agrees"),
            None => assert!(!holders.contains_key(&ci), "connection {ci}: holder agrees"),
        }
        let live = !c.tx_stopped && !c.done;
        if c.tx_avail {
            assert!(
                live && c.tx_reserved_by.is_none(),
                "connection {ci} available but unusable"
            );
        }
        if live && c.tx_reserved_by.is_none() && c.backlog.is_none() {
            assert!(
                c.tx_avail,
                "connection {ci} usable, free, yet not available: lost"
            );
        }
        if c.done {
            assert!(
                c.tx_reserved_by.is_some() || c.backlog.is_some(),
                "unattached connection {ci} not freed"
            );
        }
        if !c.addr_waiters.is_empty() {
            assert!(
                live && c.tx_reserved_by.is_some(),
                "waiters on {ci}, which nobody holds"
            );
        }
        for &w in &c.addr_waiters {
            let e = mux.eps[w as usize].as_ref().expect("waiter exists");
            assert!(
                e.tx.waiting,
                "endpoint {w} on {ci}'s waiters but not waiting"
            );
            assert_eq!(
                e.tx.queue.front().and_then(|m| m.target),
                Some(c.id),
                "waiter {w} target"
            );
        }
        let held = u64::from(c.tx_reserved_by.is_some());
        assert_eq!(
            c.stats.tx.reserved,
            c.stats.tx.unreserved + held,
            "connection {ci}: reserve count"
        );
    }
    if !mux.tx_avail.is_empty() {
        assert!(
            mux.tx_waiting.is_empty(),
            "an endpoint waits while a connection is available"
        );
    }
}
