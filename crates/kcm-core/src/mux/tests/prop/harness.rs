//! The [`Harness`]: plays the runtime and the peer, and performs each [`Op`].

use std::collections::{BTreeMap, HashMap, HashSet};

use super::*;
use crate::stats::ParserStats;

/// The runtime, the peer and the bookkeeping of what should have happened.
pub(super) struct Harness {
    pub(super) mux: MuxCore,
    pub(super) kind: Kind,
    pub(super) eps: Vec<EndpointId>,
    /// Unique serial per endpoint ever created (indices are reused).
    pub(super) serial: HashMap<EndpointId, u32>,
    pub(super) next_serial: u32,
    pub(super) conns: Vec<ConnectionId>,
    pub(super) unattached: HashSet<ConnectionId>,
    pub(super) released: HashSet<ConnectionId>,
    pub(super) parser_passed: ParserStats,
    // Receive side.
    /// Start address of each fed message's bytes -> (id, message). Messages are never copied
    /// by the core, so any queued slice can be traced back to its message.
    pub(super) by_addr: BTreeMap<usize, (u32, Bytes)>,
    pub(super) fed: HashMap<u32, ConnectionId>,
    pub(super) delivered: HashSet<u32>,
    pub(super) dropped: HashSet<u32>,
    pub(super) readable: HashSet<EndpointId>,
    pub(super) paused: HashSet<ConnectionId>,
    pub(super) closed_stats: EndpointStats,
    // Transmit side.
    pub(super) next_tx: u32,
    pub(super) completed: HashMap<u32, Vec<u8>>,
    pub(super) close_dropped: usize,
    pub(super) inflight: HashMap<EndpointId, (ConnectionId, Vec<u8>)>,
    pub(super) wire: HashMap<ConnectionId, Vec<u8>>,
    pub(super) dead: HashSet<ConnectionId>,
    pub(super) needs_space: HashSet<ConnectionId>,
    pub(super) tx_ready: HashSet<EndpointId>,
    pub(super) conn_tx_ready: HashSet<ConnectionId>,
    pub(super) blocked: HashSet<EndpointId>,
}

impl Harness {
    pub(super) fn new(kind: Kind) -> Harness {
        let (mux, ep) = MuxCore::new(kind).expect("new mux");
        let mut h = Harness {
            mux,
            kind,
            eps: vec![ep],
            serial: HashMap::from([(ep, 0)]),
            next_serial: 1,
            conns: Vec::new(),
            unattached: HashSet::new(),
            released: HashSet::new(),
            parser_passed: ParserStats::default(),
            by_addr: BTreeMap::new(),
            fed: HashMap::new(),
            delivered: HashSet::new(),
            dropped: HashSet::new(),
            readable: HashSet::new(),
            paused: HashSet::new(),
            closed_stats: EndpointStats::default(),
            next_tx: 0,
            completed: HashMap::new(),
            close_dropped: 0,
            inflight: HashMap::new(),
            wire: HashMap::new(),
            dead: HashSet::new(),
            needs_space: HashSet::new(),
            tx_ready: HashSet::new(),
            conn_tx_ready: HashSet::new(),
            blocked: HashSet::new(),
        };
        h.settle();
        h
    }

    pub(super) fn ep(&self, i: usize) -> EndpointId {
        self.eps[i % self.eps.len()]
    }

    pub(super) fn live(&self, c: ConnectionId) -> bool {
        !self.unattached.contains(&c)
    }

    /// The fed message a queued slice belongs to, and the offset of the slice in it.
    pub(super) fn trace(&self, data: &Bytes) -> (u32, usize) {
        let addr = data.as_ptr() as usize;
        let (&start, (id, msg)) = self
            .by_addr
            .range(..=addr)
            .next_back()
            .expect("a fed message");
        assert!(
            addr + data.len() <= start + msg.len(),
            "slice {addr:#x} outside message {id}"
        );
        assert_eq!(
            data[..],
            msg[addr - start..addr - start + data.len()],
            "message {id} intact"
        );
        (*id, addr - start)
    }

    pub(super) fn step(&mut self, op: &Op) {
        match op.clone() {
            Op::Attach => {
                let c = self.mux.attach();
                assert!(!self.conns.contains(&c), "ids are unique");
                self.conns.push(c);
            }
            Op::Unattach(i) => self.unattach(i),
            Op::AddEndpoint => {
                if self.eps.len() < 6 {
                    let ep = self.mux.add_endpoint().expect("add endpoint");
                    self.eps.push(ep);
                    self.serial.insert(ep, self.next_serial);
                    self.next_serial += 1;
                }
            }
            Op::CloseEndpoint(i) => self.close(i),
            Op::RxPass { conn, lens, prefer } => self.rx_pass(conn, &lens, prefer),
            Op::Recv { ep, max, peek } => self.recv(ep, max, peek),
            Op::Send(s) => self.send(&s),
            Op::PollTransmit(i) => self.poll_transmit(self.ep(i)),
            Op::Complete { ep, result } => self.complete(self.ep(ep), result),
            Op::ConnTransmit { conn, result } => {
                if let Some(&c) = self.conns.get(conn % self.conns.len().max(1)) {
                    self.conn_transmit(c, result);
                }
            }
            Op::WriteSpace(i) => {
                if let Some(&c) = self.conns.get(i % self.conns.len().max(1)) {
                    self.needs_space.remove(&c);
                    self.mux.write_space(c);
                }
            }
            Op::RecvDisable(i, on) => self
                .mux
                .set_recv_disable(self.ep(i), on)
                .expect("live endpoint"),
            Op::SetRcvbuf(i, n) => self.mux.set_rcvbuf(self.ep(i), n).expect("live endpoint"),
            Op::SetRcvlowat(i, n) => self.mux.set_rcvlowat(self.ep(i), n).expect("live endpoint"),
            Op::SetSndbuf(i, n) => self.mux.set_sndbuf(self.ep(i), n).expect("live endpoint"),
        }
        self.settle();
    }

    pub(super) fn unattach(&mut self, i: usize) {
        let Some(&c) = self.conns.get(i % self.conns.len().max(1)) else {
            return;
        };
        let parked: Vec<u32> = match self.mux.conn(c) {
            Some(conn) => conn.parked.iter().map(|d| self.trace(d).0).collect(),
            None => Vec::new(),
        };
        let parser = ParserStats {
            msgs: 1,
            bytes: u64::from(c.gen),
            ..Default::default()
        };
        let res = self.mux.unattach(c, parser);
        if self.released.contains(&c) {
            assert_eq!(res, Err(MuxError::NotAttached));
        } else if self.unattached.contains(&c) {
            assert_eq!(res, Err(MuxError::AlreadyUnattaching));
        } else {
            assert!(res.is_ok(), "{res:?}");
            self.unattached.insert(c);
            self.paused.remove(&c);
            self.parser_passed += parser;
            for id in parked {
                assert!(self.dropped.insert(id));
            }
        }
    }

    pub(super) fn close(&mut self, i: usize) {
        if self.eps.len() < 2 {
            return;
        }
        let ep = self.ep(i);
        self.closed_stats += self.mux.endpoint_stats(ep).expect("live endpoint");
        self.close_dropped += self.mux.tx_queued(ep).expect("live endpoint").0;
        // The runtime abandons a write of a closed endpoint.
        self.inflight.remove(&ep);
        assert_eq!(self.mux.close_endpoint(ep), Ok(false));
        self.eps.retain(|&e| e != ep);
        self.readable.remove(&ep);
        self.tx_ready.remove(&ep);
        self.blocked.remove(&ep);
    }

    pub(super) fn rx_pass(&mut self, conn: usize, lens: &[usize], prefer: Option<usize>) {
        let Some(&c) = self.conns.get(conn % self.conns.len().max(1)) else {
            return;
        };
        let prefer = prefer.map(|p| self.eps.get(p).copied().unwrap_or(EndpointId(99)));
        let mut msgs = Vec::new();
        for &len in lens {
            let id = self.by_addr.len() as u32;
            let body: Vec<u8> = (0..len)
                .map(|k| (id as u8).wrapping_mul(31).wrapping_add(k as u8))
                .collect();
            let b = Bytes::from(body);
            self.by_addr.insert(b.as_ptr() as usize, (id, b.clone()));
            if self.live(c) {
                self.fed.insert(id, c);
            }
            msgs.push(b);
        }
        let out = self.mux.rx_pass(c, msgs, prefer);
        if self.live(c) {
            assert_eq!(out.delivered + out.parked, lens.len(), "{out:?}");
            if out.parked > 0 {
                self.paused.insert(c);
            }
        } else {
            assert_eq!((out.delivered, out.parked), (0, 0), "unattached connection");
        }
    }

    pub(super) fn recv(&mut self, i: usize, max: usize, peek: bool) {
        let ep = self.ep(i);
        let Some(whole) = self.mux.recv(ep, usize::MAX, true) else {
            assert_eq!(self.mux.recv(ep, max, peek), None);
            assert_eq!(self.mux.rx_queued(ep), Some((0, 0)));
            return;
        };
        assert!(!whole.eor && !whole.trunc && whole.full_len == whole.data.len());
        let (id, offset) = self.trace(&whole.data);
        assert_eq!(
            Some(&whole.conn),
            self.fed.get(&id),
            "message {id} names its connection"
        );
        let r = self.mux.recv(ep, max, peek).expect("a queued message");
        let n = max.min(whole.data.len());
        assert_eq!(r.data[..], whole.data[..n]);
        assert_eq!((r.conn, r.full_len), (whole.conn, whole.data.len()));
        if peek {
            assert!(!r.eor && !r.trunc);
            return;
        }
        match self.kind {
            Kind::Datagram => {
                assert_eq!(offset, 0, "datagram messages are never split");
                assert!(r.eor);
                assert_eq!(r.trunc, n < whole.data.len());
            }
            Kind::SeqPacket => {
                assert!(!r.trunc);
                assert_eq!(r.eor, n == whole.data.len());
            }
        }
        if r.eor {
            assert!(self.delivered.insert(id), "message {id} delivered twice");
        }
    }

    pub(super) fn send(&mut self, s: &SendOp) {
        let ep = self.ep(s.ep);
        let id = self.next_tx;
        self.next_tx += 1;
        // Framing for the peer: total length, id, sender serial, then filler.
        let mut msg = Vec::with_capacity(s.len);
        msg.extend_from_slice(&(s.len as u32).to_be_bytes());
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&self.serial[&ep].to_be_bytes());
        msg.extend((12..s.len).map(|k| (k as u8) ^ (id as u8)));
        let target = s.target.map(|t| {
            self.conns
                .get(t)
                .copied()
                .unwrap_or(ConnectionId { index: 77, gen: 77 })
        });
        let cut = s.len.div_ceil(s.chunks);
        let mut chunks: Vec<&[u8]> = msg.chunks(cut).collect();
        if s.zero_end {
            chunks.push(&[]);
        }
        let mut k = 0;
        let mut err_at = s.err_at;
        while k < chunks.len() {
            let last = k + 1 == chunks.len();
            let flags = SendFlags {
                more: !last,
                eor: last,
                batch: last && s.batch,
            };
            if err_at == Some(k) {
                err_at = None;
                self.mux.set_endpoint_error(ep, errno::EPIPE);
            }
            let expect_err = if self.mux.has_endpoint_error(ep) {
                Some(SendError::Pending(errno::EPIPE))
            } else if k > 0 {
                None
            } else if target
                .is_some_and(|t| !self.conns.contains(&t) || self.unattached.contains(&t))
            {
                Some(SendError::NotConnected)
            } else if target.is_some_and(|t| self.dead.contains(&t)) {
                Some(SendError::ConnectionDead)
            } else if !self.mux.can_send_to(ep, target) {
                Some(SendError::WouldBlock)
            } else {
                None
            };
            let res = self
                .mux
                .send(ep, Bytes::copy_from_slice(chunks[k]), flags, target);
            match expect_err {
                None => assert_eq!(res, Ok(chunks[k].len())),
                Some(e) => assert_eq!(res, Err(e)),
            }
            match res {
                Ok(_) => k += 1,
                Err(SendError::Pending(_)) if self.kind == Kind::Datagram && k > 0 => return,
                Err(SendError::Pending(_)) => {} // cleared: retry the chunk
                Err(SendError::WouldBlock) => {
                    // (A full backlog refuses only its connection: the endpoint is not full.)
                    if !self.mux.can_send(ep) {
                        self.blocked.insert(ep);
                    }
                    return;
                }
                Err(_) => return,
            }
        }
        self.completed.insert(id, msg);
    }

    pub(super) fn poll_transmit(&mut self, ep: EndpointId) {
        let Some(tx) = self.mux.poll_transmit(ep) else {
            return;
        };
        assert!(!self.inflight.contains_key(&ep), "one transmit at a time");
        assert!(tx.len > 0);
        assert!(
            !self.dead.contains(&tx.conn) && self.live(tx.conn),
            "transmit on a dead connection"
        );
        self.tx_ready.remove(&ep);
        self.inflight.insert(ep, (tx.conn, cat(&tx)));
    }

    /// Writes a connection's backlog, as the runtime does on [`Event::ConnTxReady`].
    pub(super) fn conn_transmit(&mut self, c: ConnectionId, result: Res) {
        let Some(tx) = self.mux.poll_conn_transmit(c) else {
            return;
        };
        assert!(tx.len > 0 && tx.conn == c);
        assert!(
            !self.dead.contains(&c) && self.live(c),
            "backlog written on a dead connection"
        );
        self.conn_tx_ready.remove(&c);
        let res = self.write(c, cat(&tx), result);
        self.mux.handle_conn_transmit(c, res);
    }

    pub(super) fn complete(&mut self, ep: EndpointId, result: Res) {
        let Some((conn, bytes)) = self.inflight.remove(&ep) else {
            return;
        };
        let res = self.write(conn, bytes, result);
        self.mux.handle_transmit(ep, conn, res);
    }

    /// What the peer gets of a write of `bytes` on `conn`, and its result.
    fn write(&mut self, conn: ConnectionId, bytes: Vec<u8>, result: Res) -> TxResult {
        let res = match result {
            Res::All => TxResult::Written(bytes.len()),
            Res::Part(p) => TxResult::Written(bytes.len() * usize::from(p) / 256),
            Res::WouldBlock => TxResult::WouldBlock,
            Res::Failed => TxResult::Failed,
        };
        let healthy = self.live(conn) && !self.dead.contains(&conn);
        match res {
            TxResult::Written(n) => {
                if healthy {
                    self.wire
                        .entry(conn)
                        .or_default()
                        .extend_from_slice(&bytes[..n]);
                }
                if n < bytes.len() {
                    self.needs_space.insert(conn);
                }
            }
            TxResult::WouldBlock => {
                self.needs_space.insert(conn);
            }
            TxResult::Failed => {}
        }
        res
    }
}
