//! What the [`Harness`] checks after every step, and the final drain.

use std::collections::{HashMap, HashSet};

use super::harness::Harness;
use super::*;
use crate::stats::ParserStats;

impl Harness {
    /// Drains events, checking each, then checks everything that must hold between calls.
    pub(super) fn settle(&mut self) {
        for ev in events(&mut self.mux) {
            match ev {
                Event::Readable(ep) => {
                    assert!(self.eps.contains(&ep), "{ev:?}");
                    self.readable.insert(ep);
                }
                Event::Writable(ep) => {
                    assert!(self.eps.contains(&ep), "{ev:?}");
                    self.blocked.remove(&ep);
                }
                Event::TxReady(ep) => {
                    assert!(self.eps.contains(&ep), "{ev:?}");
                    self.tx_ready.insert(ep);
                }
                Event::ConnResume(c) => assert!(self.paused.remove(&c), "{ev:?} without a pause"),
                Event::ConnTxReady(c) => {
                    assert!(self.mux.tx_backlog(c).is_some(), "{ev:?} without a backlog");
                    self.conn_tx_ready.insert(c);
                }
                Event::ConnError(c, e) => {
                    assert_eq!(e, errno::EPIPE);
                    assert!(self.dead.insert(c), "{ev:?} twice");
                }
                Event::ConnReleased(c) => {
                    assert!(self.unattached.contains(&c), "{ev:?} before unattach");
                    assert!(self.released.insert(c), "{ev:?} twice");
                    assert!(
                        self.inflight.values().all(|(w, _)| *w != c),
                        "{ev:?} while writing on it"
                    );
                    assert_eq!(self.mux.conn_stats(c), None);
                }
            }
        }
        check_invariants(&self.mux);
        self.check_rx();
        self.check_tx();
    }

    fn check_rx(&mut self) {
        let mux = &self.mux;
        let mut in_core = Vec::new();
        for e in mux.eps.iter().flatten() {
            in_core.extend(e.rx.iter().map(|(data, _)| self.trace(&data).0));
        }
        let mut parked = 0;
        for c in mux.conns.iter().flatten() {
            parked += c.parked.len();
            in_core.extend(c.parked.iter().map(|d| self.trace(d).0));
        }
        in_core.extend(mux.hold.iter().map(|m| self.trace(&m.data).0));
        let mut all: Vec<u32> = in_core;
        all.extend(self.delivered.iter().copied());
        all.extend(self.dropped.iter().copied());
        all.sort_unstable();
        let mut fed: Vec<u32> = self.fed.keys().copied().collect();
        fed.sort_unstable();
        assert_eq!(
            all, fed,
            "every message fed is delivered, queued, parked, held or dropped"
        );
        let s = mux.stats();
        assert_eq!(s.rx_ready_drops, self.dropped.len() as u64);
        let first_deliveries = self.fed.len() - parked - self.dropped.len();
        assert_eq!(
            s.rx_msgs, first_deliveries as u64,
            "mux rx_msgs counts each message once"
        );
        let mut ep_rx = self.closed_stats;
        for &ep in &self.eps {
            ep_rx += mux.endpoint_stats(ep).expect("live endpoint");
            let (queued, _) = mux.rx_queued(ep).expect("live endpoint");
            if queued == 0 {
                self.readable.remove(&ep);
            } else {
                assert!(
                    self.readable.contains(&ep),
                    "{ep:?} has messages but was never woken"
                );
            }
        }
        assert_eq!(ep_rx.rx_msgs, self.delivered.len() as u64);
        for &c in &self.conns {
            if self.live(c) {
                assert_eq!(
                    mux.is_paused(c),
                    self.paused.contains(&c),
                    "{c} pause state"
                );
            }
        }
    }

    fn check_tx(&mut self) {
        let mux = &self.mux;
        for &ep in &self.eps {
            if self.blocked.contains(&ep) {
                assert!(!mux.can_send(ep), "{ep:?} could send but was never told");
            }
            let e = mux.ep(ep).expect("live endpoint");
            if let Some(ci) = e.tx.reserved {
                let c = mux.conns[ci as usize]
                    .as_ref()
                    .expect("reserved connection")
                    .id;
                if !self.inflight.contains_key(&ep) {
                    assert!(
                        self.tx_ready.contains(&ep) || self.needs_space.contains(&c),
                        "{ep:?} holds {c} with work to do but nobody will call it"
                    );
                }
            }
        }
        let mut backlogged = 0;
        for &c in &self.conns {
            if self.live(c) {
                assert_eq!(mux.is_tx_stopped(c), Some(self.dead.contains(&c)), "{c}");
            }
            if let Some((msgs, _)) = mux.tx_backlog(c) {
                backlogged += msgs;
                assert!(
                    self.conn_tx_ready.contains(&c) || self.needs_space.contains(&c),
                    "{c} has a backlog but nobody will write it"
                );
            }
        }
        // Conservation of sent messages, counters.
        let on_wire = self.parse_wires(false);
        let queued: usize = self
            .eps
            .iter()
            .map(|&ep| mux.tx_queued(ep).expect("live").0)
            .sum();
        let s = mux.stats();
        assert_eq!(
            self.completed.len(),
            on_wire + queued + backlogged + s.tx_addr_drops as usize + self.close_dropped,
            "every completed message is on a wire, queued or dropped and counted"
        );
        assert_eq!(s.tx_msgs, on_wire as u64);
        let mut conn_tx = mux.aggregate_conn_stats().tx;
        for c in mux.conns.iter().flatten() {
            conn_tx += c.stats.tx;
        }
        assert_eq!((conn_tx.tx_msgs, conn_tx.tx_bytes), (s.tx_msgs, s.tx_bytes));
        assert_eq!(conn_tx.tx_aborts, self.dead.len() as u64);
        let wire_bytes: usize = self.wire.values().map(Vec::len).sum();
        assert_eq!(s.tx_bytes, wire_bytes as u64);
        let mut ep_tx = self.closed_stats;
        for &ep in &self.eps {
            ep_tx += mux.endpoint_stats(ep).expect("live endpoint");
        }
        assert_eq!(ep_tx.tx_msgs, self.completed.len() as u64);
        assert_eq!(s.psock_attach, self.conns.len() as u64);
        assert_eq!(s.psock_unattach, self.unattached.len() as u64);
        // Parser counters are folded in when the connection is released.
        let mut parser = ParserStats::default();
        for c in &self.released {
            parser.msgs += 1;
            parser.bytes += u64::from(c.gen);
        }
        assert_eq!(mux.aggregate_conn_stats().parser, parser);
        let unreleased = self.unattached.len() - self.released.len();
        assert_eq!(self.parser_passed.msgs, parser.msgs + unreleased as u64);
    }

    /// Parses every wire as the peer would; returns the number of whole messages. A torn
    /// message may end a wire only if the connection died or a message is half written on it
    /// (unless `strict`).
    fn parse_wires(&self, strict: bool) -> usize {
        let mut seen = HashSet::new();
        for (c, wire) in &self.wire {
            let mut rest = &wire[..];
            let mut last_id: HashMap<u32, u32> = HashMap::new();
            while rest.len() >= 12 {
                let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                let id = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
                let serial = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
                let want = self
                    .completed
                    .get(&id)
                    .expect("only completed messages are written");
                assert_eq!(want.len(), len, "{c}: length of message {id}");
                if rest.len() < len {
                    break;
                }
                assert_eq!(
                    &rest[..len],
                    &want[..],
                    "{c}: message {id} intact and contiguous"
                );
                assert!(seen.insert(id), "message {id} written whole twice");
                if let Some(prev) = last_id.insert(serial, id) {
                    assert!(prev < id, "{c}: endpoint {serial} messages out of order");
                }
                rest = &rest[len..];
            }
            if !rest.is_empty() {
                let held =
                    self.mux.tx_reserved_by(*c).is_some() || self.mux.tx_backlog(*c).is_some();
                let excuse = self.dead.contains(c) || (!strict && held);
                assert!(
                    excuse,
                    "{c}: torn message on a healthy wire ({} bytes)",
                    rest.len()
                );
            }
        }
        seen.len()
    }

    /// Runs everything to completion the way a runtime would: only on events.
    pub(super) fn drain(&mut self) {
        let inflight: Vec<EndpointId> = self.inflight.keys().copied().collect();
        for ep in inflight {
            self.complete(ep, Res::All);
        }
        self.settle();
        for &ep in &self.eps.clone() {
            if self.mux.ep(ep).is_some_and(|e| e.tx.wait_more) {
                // An application ending its batch.
                let _ = self.mux.send(ep, Bytes::new(), END, None);
            }
        }
        let spaces: Vec<ConnectionId> = self.needs_space.drain().collect();
        for c in spaces {
            self.mux.write_space(c);
        }
        self.settle();
        for _ in 0..10_000 {
            if let Some(&c) = self.conn_tx_ready.iter().next() {
                self.conn_tx_ready.remove(&c);
                self.conn_transmit(c, Res::All);
                self.settle();
                continue;
            }
            let Some(&ep) = self.tx_ready.iter().next() else {
                break;
            };
            self.tx_ready.remove(&ep);
            self.poll_transmit(ep);
            self.complete(ep, Res::All);
            self.settle();
        }
        assert!(
            self.tx_ready.is_empty() && self.conn_tx_ready.is_empty(),
            "transmit never settles"
        );
        let live_conn = self
            .conns
            .iter()
            .any(|&c| self.live(c) && !self.dead.contains(&c));
        for &ep in &self.eps {
            let (queued, _) = self.mux.tx_queued(ep).expect("live endpoint");
            assert!(
                queued == 0 || !live_conn,
                "{ep:?} is stuck with {queued} messages"
            );
        }
        self.parse_wires(true);
        for &c in &self.unattached {
            assert!(self.released.contains(&c), "{c} never released");
        }
    }
}
