//! Batch receive: many whole messages off an endpoint's queue in one call (the runtime's
//! `recvmmsg`), with one endpoint lookup and one counter update per queue entry instead of per
//! message: as the runs they are queued in (`recv_runs`), or cut into a `Bytes` each
//! (`recv_many`).

use bytes::Bytes;

use super::rx_queue::Budget;
use super::{ConnectionId, EndpointId, MuxCore};
use crate::MsgRun;

impl MuxCore {
    /// Takes up to `max_msgs` whole messages off the front of an endpoint's queue, handing
    /// each to `f` with the connection it came from, in order; returns how many it took.
    ///
    /// The same as calling [`recv`](Self::recv)`(ep, usize::MAX, false)` until it answers
    /// `None` or `max_msgs` were taken: no truncation and no partial reads (a message is
    /// always taken whole, on datagram and seqpacket endpoints alike; what is left of one a
    /// short seqpacket read began is taken as it is), the same endpoint counters, and the
    /// same eligibility effects, in the same order: when a message leaves the queue's memory
    /// below `SO_RCVLOWAT` the endpoint becomes ready at that point (§5.1), which may move
    /// held or parked messages onto its queue, behind the ones still there, and those are
    /// taken too if the count allows. A closed endpoint takes nothing.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kcm_core::mux::{Kind, MuxCore};
    ///
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// let conn = mux.attach();
    /// let msgs = [&b"one"[..], b"two", b"three"].map(Bytes::from_static);
    /// mux.rx_pass(conn, msgs.clone(), None);
    /// let mut got = Vec::new();
    /// assert_eq!(mux.recv_many(ep, 2, |data, from| got.push((data, from))), 2);
    /// assert_eq!(got, [(msgs[0].clone(), conn), (msgs[1].clone(), conn)]);
    /// assert_eq!(mux.rx_queued(ep), Some((1, 5)));
    /// let stats = mux.endpoint_stats(ep).unwrap();
    /// assert_eq!((stats.rx_msgs, stats.rx_bytes), (2, 6));
    /// ```
    pub fn recv_many(
        &mut self,
        ep: EndpointId,
        max_msgs: usize,
        mut f: impl FnMut(Bytes, ConnectionId),
    ) -> usize {
        // A run's messages are cut from its buffer here, in order; a run is only split (its
        // lengths copied) where the count or the low-water mark ends a call inside it.
        self.recv_runs(ep, max_msgs, |conn, run| {
            for data in run.into_messages() {
                f(data, conn);
            }
        })
    }

    /// [`recv_many`](Self::recv_many) handing over runs: the same messages in the same order,
    /// with the same counters and eligibility effects, given to `f` as the runs they are queued
    /// in ([`MsgRun`]; a lone message as a run of one) with the connection they came from. A
    /// receiver that only reads its messages (`MsgRun::iter`) then costs no reference count
    /// and no allocation per message.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kcm_core::mux::{Kind, MuxCore};
    /// use kcm_core::MsgRun;
    ///
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// let conn = mux.attach();
    /// let run = MsgRun::new(Bytes::from_static(b"onetwothree"), vec![3, 3, 5], 0);
    /// mux.rx_pass_runs(conn, [run], None);
    /// let mut got = Vec::new();
    /// assert_eq!(mux.recv_runs(ep, 2, |from, run| got.push((from, run))), 2);
    /// let msgs: Vec<&[u8]> = got[0].1.iter().map(|m| m.data()).collect();
    /// assert_eq!((got.len(), got[0].0), (1, conn));
    /// assert_eq!(msgs, [&b"one"[..], b"two"]);
    /// assert_eq!(mux.rx_queued(ep), Some((1, 5)));
    /// ```
    pub fn recv_runs(
        &mut self,
        ep: EndpointId,
        max_msgs: usize,
        mut f: impl FnMut(ConnectionId, MsgRun),
    ) -> usize {
        let mut taken = 0;
        while taken < max_msgs {
            let Some(e) = self.ep_mut(ep) else {
                break;
            };
            let mut budget = Budget {
                mem: e.rx_mem,
                lowat: e.rcvlowat,
                low: false,
            };
            let n = e.rx.take_runs(max_msgs - taken, &mut budget, &mut f);
            e.stats.rx_msgs += n as u64;
            e.stats.rx_bytes += (e.rx_mem - budget.mem) as u64;
            e.rx_mem = budget.mem;
            taken += n;
            if !budget.low {
                break;
            }
            // Where `recv` would call it: after the message that went below the low-water
            // mark. One call after the whole batch would not be the same once the mark is
            // above a message's size: called here, with messages still queued, it absorbs
            // held and parked messages only up to SO_RCVBUF, and fewer than it would with the
            // queue emptied (test `a_low_water_mark_above_one_absorbs_where_one_at_a_time_does`).
            // So the call goes on after it, and what this appends behind the queue is taken
            // next if the count allows, as with one `recv` at a time. With the default mark (1)
            // this is only once the queue is empty, in practice once per batch, and it returns
            // at once when the endpoint is already eligible.
            self.rcv_ready(ep.0);
        }
        taken
    }
}
