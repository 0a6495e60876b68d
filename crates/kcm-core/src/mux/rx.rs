//! Receive steering, backpressure and the receive queue (`kcm-spec.md` §2.3–§2.4, §5.1–§5.4).

use std::collections::VecDeque;

use bytes::Bytes;

use super::{ConnectionId, EndpointId, Event, Kind, MuxCore, MuxError, RxMsg};
use crate::run::{Cursor, MsgRun};

/// What one receive call took off an endpoint's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvRead {
    /// The bytes returned (the whole message, or a prefix of what is left of it).
    pub data: Bytes,
    /// The connection the message came from (addressed mode; always filled).
    pub conn: ConnectionId,
    /// The message is complete with this read (`MSG_EOR`).
    pub eor: bool,
    /// A datagram endpoint dropped the rest of a message that did not fit (`MSG_TRUNC`).
    pub trunc: bool,
    /// Bytes of the message that were left to read before this call.
    pub full_len: usize,
}

/// The result of a receive pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassOutcome {
    /// Messages queued on endpoints.
    pub delivered: usize,
    /// Messages parked on the connection (it is now paused: stop reading it).
    pub parked: usize,
}

impl MuxCore {
    /// Hands the messages of one read pass of `conn` to endpoints (§5.1): they all go to one
    /// reserved endpoint while it has room, then to the next eligible one; when no endpoint
    /// can take one, it and every later one are parked on the connection, which is then paused
    /// until an endpoint takes them ([`Event::ConnResume`]).
    ///
    /// `prefer` names the endpoint whose thread is driving the connection: when it is
    /// eligible it is reserved first, so a thread that is waiting for a message gets it
    /// without a hand-off (an extension: the kernel always takes the head of the eligible
    /// FIFO; the FIFO order is kept for everyone else).
    pub fn rx_pass(
        &mut self,
        conn: ConnectionId,
        msgs: impl IntoIterator<Item = Bytes>,
        prefer: Option<EndpointId>,
    ) -> PassOutcome {
        self.rx_pass_runs(conn, msgs.into_iter().map(MsgRun::one), prefer)
    }

    /// [`rx_pass`](Self::rx_pass) for a pass given as runs of messages (as
    /// [`StrParser::next_runs`](crate::StrParser::next_runs) gives them): exactly the same
    /// steering, counting and parking, message by message, as `rx_pass` with the runs'
    /// messages in order, but a run (or the part of it one endpoint takes) is queued whole.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kcm_core::mux::{Kind, MuxCore};
    /// use kcm_core::MsgRun;
    ///
    /// let (mut mux, ep) = MuxCore::new(Kind::Datagram).unwrap();
    /// let conn = mux.attach();
    /// let run = MsgRun::new(Bytes::from_static(b"\x02ab\x01c"), vec![3, 2], 1);
    /// assert_eq!(mux.rx_pass_runs(conn, [run], None).delivered, 2);
    /// assert_eq!(mux.rx_queued(ep), Some((2, 3)));
    /// assert_eq!(&mux.recv(ep, 100, false).unwrap().data[..], b"ab");
    /// ```
    pub fn rx_pass_runs(
        &mut self,
        conn: ConnectionId,
        runs: impl IntoIterator<Item = MsgRun>,
        prefer: Option<EndpointId>,
    ) -> PassOutcome {
        let mut out = PassOutcome::default();
        // An unattached connection delivers nothing, even while a writer still holds it.
        let Some(c) = self.conn(conn).filter(|c| !c.done) else {
            return out;
        };
        let mut paused = !c.parked.is_empty();
        let mut target: Option<u32> = None;
        if let Some(p) = prefer {
            if let Some(pos) = self.rx_eligible.iter().position(|&x| x == p.0) {
                self.rx_eligible.remove(pos);
                self.set_rx_wait(p.0, false);
                target = Some(p.0);
            }
        }
        let mut runs = runs.into_iter();
        let mut cur: Option<Cursor> = None;
        'pass: while !paused {
            let Some(run) = runs.next() else { break };
            if run.len() == 1 {
                // A message on its own (every pass of a request-reply load): queued as it is,
                // with none of a run's bookkeeping.
                match self.steer(&mut target) {
                    Some(t) => {
                        self.fill_one(t, conn, run.into_only());
                        out.delivered += 1;
                        continue;
                    }
                    None => {
                        cur = Some(Cursor::new(run));
                        paused = true;
                        break;
                    }
                }
            }
            cur = Some(Cursor::new(run)).filter(|c| !c.is_done());
            while cur.is_some() {
                match self
                    .steer(&mut target)
                    .map(|t| self.fill(t, conn, &mut cur))
                {
                    // `steer` answers an endpoint only when `fill` will take at least the
                    // next message there (one admission rule for both); parking is the safe
                    // way never to go round without progress all the same.
                    Some(0) | None => {
                        paused = true;
                        break 'pass;
                    }
                    Some(n) => out.delivered += n,
                }
            }
        }
        // No endpoint can take the rest: parked, in order, and the connection paused. (Without
        // a pause everything went to endpoints: the loop ran out of runs.)
        let newly_ready = match self.conn_mut(conn).filter(|_| paused) {
            Some(c) => {
                let rest = cur.into_iter().flat_map(Cursor::into_rest);
                for data in rest.chain(runs.flat_map(MsgRun::into_messages)) {
                    c.parked.push_back(data);
                    out.parked += 1;
                }
                let newly = out.parked > 0 && !c.ready;
                c.ready |= newly;
                newly
            }
            None => false,
        };
        if newly_ready {
            self.ready_conns.push_back(conn.index);
        }
        // End of the pass: the reserved endpoint rejoins the tail of the FIFO (§5.1).
        if let Some(t) = target {
            self.rcv_ready(t);
        }
        out
    }

    /// Takes (or peeks at) the next message on an endpoint (§2.3–§2.4). `max` is the caller's
    /// buffer size: a datagram endpoint truncates to it and drops the rest (`trunc`), a
    /// seqpacket endpoint returns the prefix and keeps the rest for the next call (the
    /// original KCM semantics; current kernels drop it, `design.md` §2 decision 2).
    pub fn recv(&mut self, ep: EndpointId, max: usize, peek: bool) -> Option<RecvRead> {
        let kind = self.kind;
        let e = self.ep_mut(ep)?;
        // Taken whole (a datagram endpoint cuts it to `max` and drops the rest, §2.3) in one
        // look at the queue; only a seqpacket endpoint, which keeps what does not fit, and a
        // peek look at the size first.
        let whole = !peek && (kind == Kind::Datagram || e.rx.front_len()?.0 <= max);
        let read = if whole {
            let RxMsg { mut data, conn } = e.rx.pop()?;
            let full_len = data.len();
            e.rx_mem -= full_len;
            let trunc = full_len > max;
            if trunc {
                data.truncate(max);
            }
            RecvRead {
                data,
                conn,
                eor: true,
                trunc,
                full_len,
            }
        } else {
            let (full_len, conn) = e.rx.front_len()?;
            let n = full_len.min(max);
            let front = &mut e.rx.front_mut()?.data;
            let data = if peek {
                front.slice(..n)
            } else {
                // A seqpacket endpoint keeps the rest for the next call.
                e.rx_mem -= n;
                front.split_to(n)
            };
            RecvRead {
                data,
                conn,
                eor: false,
                trunc: false,
                full_len,
            }
        };
        if peek {
            return Some(read);
        }
        e.stats.rx_bytes += read.data.len() as u64;
        if read.eor {
            e.stats.rx_msgs += 1;
        }
        // Drained below the low-water mark: eligible again (§5.1).
        if e.rx_mem < e.rcvlowat {
            self.rcv_ready(ep.0);
        }
        Some(read)
    }

    /// Messages queued on the endpoint, and their bytes.
    pub fn rx_queued(&self, ep: EndpointId) -> Option<(usize, usize)> {
        self.ep(ep).map(|e| (e.rx.len(), e.rx_mem))
    }

    /// Sets or clears `KCM_RECV_DISABLE` (§5.4). Setting it moves the endpoint's queued
    /// messages to other endpoints (or the hold queue); clearing it makes it eligible again.
    pub fn set_recv_disable(&mut self, ep: EndpointId, disable: bool) -> Result<(), MuxError> {
        let e = self.ep_mut(ep).ok_or(MuxError::NoEndpoint)?;
        if e.disabled == disable {
            return Ok(());
        }
        e.disabled = disable;
        if disable {
            let msgs = e.rx.take_all();
            e.rx_mem = 0;
            self.set_rx_wait(ep.0, false);
            self.rx_eligible.retain(|&x| x != ep.0);
            self.requeue(msgs);
        } else {
            self.rcv_ready(ep.0);
        }
        Ok(())
    }

    /// Whether `KCM_RECV_DISABLE` is set.
    pub fn recv_disabled(&self, ep: EndpointId) -> Option<bool> {
        self.ep(ep).map(|e| e.disabled)
    }

    /// Messages in the hold queue (requeued with no eligible endpoint; unbounded, §5.4).
    pub fn held(&self) -> usize {
        self.hold.len()
    }

    /// Moves messages to eligible endpoints in FIFO order, the rest to the hold queue.
    pub(super) fn requeue(&mut self, msgs: VecDeque<RxMsg>) {
        for m in msgs {
            // Full endpoints at the head of the FIFO drop out of it (§5.4).
            let target = loop {
                match self.rx_eligible.front() {
                    Some(&t) if self.ep_has_room(t) => break Some(t),
                    Some(&t) => {
                        self.rx_eligible.pop_front();
                        self.set_rx_wait(t, false);
                    }
                    None => break None,
                }
            };
            match target {
                Some(t) => self.enqueue(t, m),
                None => self.hold.push_back(m),
            }
        }
    }

    /// The kernel's `kcm_rcv_ready`: an endpoint that may take messages first absorbs the hold
    /// queue, then parked messages of ready connections in FIFO order (a connection it could
    /// not empty moves to the back), and only if it still has room joins the tail of the
    /// eligible FIFO (§5.2).
    pub(super) fn rcv_ready(&mut self, ei: u32) {
        let Some(e) = self.eps.get(ei as usize).and_then(Option::as_ref) else {
            return;
        };
        if e.rx_wait || e.disabled {
            return;
        }
        while self.ep_has_room(ei) {
            let Some(m) = self.hold.pop_front() else {
                break;
            };
            self.enqueue(ei, m);
        }
        if !self.hold.is_empty() {
            return;
        }
        while let Some(ci) = self.ready_conns.front() {
            let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
                self.ready_conns.pop_front();
                continue;
            };
            let conn = c.id;
            // Its parked messages go over while there is room; the first that does not fit
            // goes back to the head.
            let mut parked = std::mem::take(&mut c.parked);
            while let Some(data) = parked.pop_front() {
                // Admitted exactly when the endpoint has room, as in `fill`.
                if !self.ep_has_room(ei) {
                    parked.push_front(data);
                    break;
                }
                self.fill_one(ei, conn, data);
            }
            let Some(c) = self.conns.get_mut(ci as usize).and_then(Option::as_mut) else {
                break;
            };
            c.parked = parked;
            if !c.parked.is_empty() {
                // The endpoint is full. The connection goes to the back of the line, as a
                // kernel psock does: it parks one message at a time and, once that is taken,
                // parses the next and queues up again behind the others. A busy connection's
                // backlog must not keep a quiet one's message waiting.
                self.ready_conns.pop_front();
                self.ready_conns.push_back(ci);
                return;
            }
            c.ready = false;
            self.ready_conns.pop_front();
            self.events.push_back(Event::ConnResume(conn));
        }
        if self.ep_has_room(ei) {
            self.rx_eligible.push_back(ei);
            self.set_rx_wait(ei, true);
        }
    }

    #[inline]
    pub(super) fn ep_has_room(&self, ei: u32) -> bool {
        // Admission: below SO_RCVBUF before adding (§5.1), never while disabled.
        self.eps
            .get(ei as usize)
            .and_then(Option::as_ref)
            .is_some_and(|e| !e.disabled && e.rx_mem < e.rcvbuf)
    }

    /// Queues a message on an endpoint, uncounted (one that is moved: held or requeued;
    /// messages coming from a connection go through [`fill`](Self::fill) or
    /// [`fill_one`](Self::fill_one), which also count them).
    #[inline]
    pub(super) fn enqueue(&mut self, ei: u32, m: RxMsg) {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return;
        };
        let len = m.data.len();
        let was_empty = e.rx.is_empty();
        e.rx_mem += len;
        e.rx.push(m);
        if was_empty {
            self.events.push_back(Event::Readable(EndpointId(ei)));
        }
    }

    /// [`fill`](Self::fill) for a lone message on an endpoint that `steer` found with room.
    #[inline]
    fn fill_one(&mut self, ei: u32, conn: ConnectionId, data: Bytes) {
        let size = data.len() as u64;
        self.enqueue(ei, RxMsg { data, conn });
        self.stats.rx_msgs += 1;
        self.stats.rx_bytes += size;
    }

    /// Queues the messages of connection `conn` at `cur` (a run of a pass, or what is left of
    /// one) on endpoint `ei` while it has room, with one endpoint lookup for the run: the admission
    /// rule is checked before each message (§5.1), `Readable` comes only for the first message
    /// into an empty queue, and the mux counts each message, this being the first time it
    /// reaches an endpoint (a later requeue moves it without counting it again). What it takes
    /// goes on the queue as one run; `cur` is left at the first message that did not fit, or
    /// emptied once the run is all gone (a run taken whole is moved as it is, with no copy and
    /// no empty run left in its place). Returns how many it queued.
    fn fill(&mut self, ei: u32, conn: ConnectionId, cur: &mut Option<Cursor>) -> usize {
        let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) else {
            return 0;
        };
        let Some(at) = cur.as_mut() else {
            return 0;
        };
        let was_empty = e.rx.is_empty();
        let mem_before = e.rx_mem;
        let lens = at.run.lens();
        let (mut i, mut off) = (at.next, at.off);
        // The admission rule of `ep_has_room`, checked before each message (§5.1). The memory
        // only grows, so when the last message is admitted all are: one sum for the rest of
        // the run (a pipelined pass into an endpoint with room), else message by message.
        if let Some((&last, head)) = lens.get(i..).and_then(<[usize]>::split_last) {
            let (raw, size) = at.run.sizes(head);
            if !e.disabled && e.rx_mem + size < e.rcvbuf {
                e.rx_mem += size + at.run.size(last);
                off += raw + last;
                i = lens.len();
            }
        }
        while !e.disabled && e.rx_mem < e.rcvbuf && i < lens.len() {
            e.rx_mem += at.run.size(lens[i]);
            off += lens[i];
            i += 1;
        }
        let n = i - at.next;
        // What the messages taken count for is what they added to the endpoint's memory.
        let bytes = (e.rx_mem - mem_before) as u64;
        if n == lens.len() {
            // The whole run: queued as it is.
            if let Some(at) = cur.take() {
                e.rx.push_run(conn, at.run);
            }
        } else if n > 0 {
            e.rx.push_run(conn, at.run.part(at.next, i, at.off));
            (at.next, at.off) = (i, off);
            if at.is_done() {
                *cur = None;
            }
        }
        if was_empty && n > 0 {
            self.events.push_back(Event::Readable(EndpointId(ei)));
        }
        self.stats.rx_msgs += n as u64;
        self.stats.rx_bytes += bytes;
        n
    }

    /// The endpoint the next message of a pass goes to: the current reservation while it has
    /// room, else the head of the eligible FIFO (a full one drops out, §5.1).
    #[inline]
    pub(super) fn steer(&mut self, target: &mut Option<u32>) -> Option<u32> {
        loop {
            let t = match *target {
                Some(t) => t,
                None => {
                    let t = self.rx_eligible.pop_front()?;
                    self.set_rx_wait(t, false);
                    *target = Some(t);
                    t
                }
            };
            if self.ep_has_room(t) {
                return Some(t);
            }
            *target = None;
        }
    }

    pub(super) fn set_rx_wait(&mut self, ei: u32, on: bool) {
        if let Some(e) = self.eps.get_mut(ei as usize).and_then(Option::as_mut) {
            e.rx_wait = on;
        }
    }
}
