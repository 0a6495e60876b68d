//! The references: the receive paths as they were when they handled one message at a time,
//! and whole `recv` calls in a loop; and the wrapper that collects what `recv_many` takes.

use super::*;

/// The per-message receive pass `rx_pass` used before it delivered runs: one `steer` and
/// one `deliver` per message. The reference the batch version is compared with.
pub(super) fn rx_pass_one_by_one(
    mux: &mut MuxCore,
    conn: ConnectionId,
    msgs: Vec<Bytes>,
    prefer: Option<EndpointId>,
) -> PassOutcome {
    let mut out = PassOutcome::default();
    let Some(c) = mux.conn(conn).filter(|c| !c.done) else {
        return out;
    };
    let mut paused = !c.parked.is_empty();
    let mut target: Option<u32> = None;
    if let Some(p) = prefer {
        if let Some(pos) = mux.rx_eligible.iter().position(|&x| x == p.0) {
            mux.rx_eligible.remove(pos);
            mux.set_rx_wait(p.0, false);
            target = Some(p.0);
        }
    }
    for data in msgs {
        if !paused {
            if let Some(t) = mux.steer(&mut target) {
                deliver(mux, t, RxMsg { data, conn });
                out.delivered += 1;
                continue;
            }
            paused = true;
        }
        if let Some(c) = mux.conn_mut(conn) {
            c.parked.push_back(data);
            out.parked += 1;
            if !c.ready {
                c.ready = true;
                mux.ready_conns.push_back(conn.index);
            }
        }
    }
    if let Some(t) = target {
        rcv_ready_one_by_one(mux, t);
    }
    out
}

/// The per-message delivery the receive paths used before they delivered runs: count the
/// message for the mux, queue it.
fn deliver(mux: &mut MuxCore, ei: u32, m: RxMsg) {
    mux.stats.rx_msgs += 1;
    mux.stats.rx_bytes += m.data.len() as u64;
    mux.enqueue(ei, m);
}

/// `rcv_ready` as it was before it moved parked messages in runs: one `deliver` per message.
pub(super) fn rcv_ready_one_by_one(mux: &mut MuxCore, ei: u32) {
    let Some(e) = mux.eps.get(ei as usize).and_then(Option::as_ref) else {
        return;
    };
    if e.rx_wait || e.disabled {
        return;
    }
    while mux.ep_has_room(ei) {
        let Some(m) = mux.hold.pop_front() else {
            break;
        };
        mux.enqueue(ei, m);
    }
    if !mux.hold.is_empty() {
        return;
    }
    while let Some(ci) = mux.ready_conns.front() {
        let Some(c) = mux.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            mux.ready_conns.pop_front();
            continue;
        };
        let conn = c.id;
        while mux.ep_has_room(ei) {
            let Some(c) = mux.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
                break;
            };
            let Some(data) = c.parked.pop_front() else {
                break;
            };
            deliver(mux, ei, RxMsg { data, conn });
        }
        let Some(c) = mux.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
            break;
        };
        if !c.parked.is_empty() {
            mux.ready_conns.pop_front();
            mux.ready_conns.push_back(ci);
            return;
        }
        c.ready = false;
        mux.ready_conns.pop_front();
        mux.events.push_back(Event::ConnResume(conn));
    }
    if mux.ep_has_room(ei) {
        mux.rx_eligible.push_back(ei);
        mux.set_rx_wait(ei, true);
    }
}

/// What `recv_many` must equal: whole reads until `None` or `max` messages.
pub(super) fn recv_one_by_one(
    mux: &mut MuxCore,
    ep: EndpointId,
    max: usize,
) -> Vec<(Bytes, ConnectionId)> {
    let mut out = Vec::new();
    while out.len() < max {
        let Some(r) = mux.recv(ep, usize::MAX, false) else {
            break;
        };
        assert!(r.eor && !r.trunc && r.full_len == r.data.len());
        out.push((r.data, r.conn));
    }
    out
}

pub(super) fn recv_batch(
    mux: &mut MuxCore,
    ep: EndpointId,
    max: usize,
) -> Vec<(Bytes, ConnectionId)> {
    let mut out = Vec::new();
    let n = mux.recv_many(ep, max, |data, conn| out.push((data, conn)));
    assert_eq!(n, out.len(), "the count returned");
    out
}

/// What `recv_runs` takes, message by message, both ways a receiver may read a run (borrowed,
/// and cut as `Bytes`), which must agree.
pub(super) fn recv_as_runs(
    mux: &mut MuxCore,
    ep: EndpointId,
    max: usize,
) -> Vec<(Bytes, ConnectionId)> {
    let mut out = Vec::new();
    let n = mux.recv_runs(ep, max, |conn, run| {
        assert!(!run.is_empty(), "an empty run handed over");
        let cut: Vec<Bytes> = run.clone().into_messages().collect();
        let borrowed: Vec<&[u8]> = run.iter().map(|m| m.data()).collect();
        assert_eq!(cut, borrowed, "a run read two ways");
        for m in run.iter() {
            assert_eq!(m.to_bytes(), m.data());
            out.push((m.to_bytes(), conn));
        }
    });
    assert_eq!(n, out.len(), "the count returned");
    out
}
