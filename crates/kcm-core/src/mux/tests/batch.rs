//! The batch paths against one message at a time: [`MuxCore::rx_pass_runs`] (passes as runs of
//! messages, queued as runs) and `rcv_ready` against the per-message delivery they replaced
//! (kept here as the reference), and
//! [`MuxCore::recv_many`] and [`MuxCore::recv_runs`] against repeated whole [`MuxCore::recv`]
//! calls. Two muxes are
//! driven through the same random operations, one each way, and must stay identical:
//! what was taken, events, counters, queues, eligibility, parked and held messages.

use proptest::prelude::prop;
use proptest::prelude::*;

use super::*;
use crate::MsgRun;

mod reference;

use reference::{
    rcv_ready_one_by_one, recv_as_runs, recv_batch, recv_one_by_one, rx_pass_one_by_one,
};

type QueuedMsg = (Bytes, ConnectionId);
type EpState = (
    Vec<QueuedMsg>,
    usize,
    usize,
    usize,
    bool,
    bool,
    EndpointStats,
);
type ConnState = (ConnectionId, Vec<Bytes>, bool, bool);

/// Everything the receive side holds, in comparable form (the transmit side too, through
/// the /proc snapshot).
#[derive(Debug, PartialEq)]
struct RxState {
    eps: Vec<Option<EpState>>,
    conns: Vec<Option<ConnState>>,
    eligible: Vec<u32>,
    ready: Vec<u32>,
    hold: Vec<QueuedMsg>,
    proc: crate::proc::ProcMux,
}

fn rx_state(mux: &MuxCore) -> RxState {
    let eps = mux
        .eps
        .iter()
        .map(|e| {
            e.as_ref().map(|e| {
                let q = e.rx.iter().collect();
                (
                    q, e.rx_mem, e.rcvbuf, e.rcvlowat, e.disabled, e.rx_wait, e.stats,
                )
            })
        })
        .collect();
    let conns = mux
        .conns
        .iter()
        .map(|c| {
            c.as_ref()
                .map(|c| (c.id, c.parked.iter().cloned().collect(), c.ready, c.done))
        })
        .collect();
    RxState {
        eps,
        conns,
        eligible: mux.rx_eligible.iter().copied().collect(),
        ready: mux.ready_conns.iter().collect(),
        hold: mux.hold.iter().map(|m| (m.data.clone(), m.conn)).collect(),
        proc: mux.proc_snapshot(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Attach,
    Unattach(usize),
    AddEndpoint,
    CloseEndpoint(usize),
    /// A pass of messages of these lengths; the batch side gets it as runs (a new run after
    /// each message whose `cuts` entry is true), each message behind `strip` bytes that the
    /// run strips.
    RxPass {
        conn: usize,
        lens: Vec<usize>,
        prefer: Option<usize>,
        cuts: Vec<bool>,
        strip: usize,
    },
    Recv {
        ep: usize,
        max: usize,
        peek: bool,
    },
    RecvMany {
        ep: usize,
        max: usize,
    },
    /// `recv_runs`, read back message by message.
    RecvRuns {
        ep: usize,
        max: usize,
    },
    RecvDisable(usize, bool),
    SetRcvbuf(usize, usize),
    SetRcvlowat(usize, usize),
    /// `rcv_ready` called directly (it is safe at any time): the reference on one mux, the
    /// current one on the other.
    RcvReady(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Attach),
        1 => (0..8usize).prop_map(Op::Unattach),
        1 => Just(Op::AddEndpoint),
        1 => (0..8usize).prop_map(Op::CloseEndpoint),
        6 => (
            0..8usize,
            prop::collection::vec(prop_oneof![1 => Just(0usize), 9 => 1..40usize], 0..12),
            prop::option::of(0..9usize),
            prop::collection::vec(prop::bool::weighted(0.3), 12),
            prop_oneof![3 => Just(0usize), 1 => 1..5usize],
        )
            .prop_map(|(conn, lens, prefer, cuts, strip)| Op::RxPass {
                conn,
                lens,
                prefer,
                cuts,
                strip,
            }),
        2 => (0..8usize, 0..48usize, prop::bool::weighted(0.2))
            .prop_map(|(ep, max, peek)| Op::Recv { ep, max, peek }),
        5 => (0..8usize, prop_oneof![0..4usize, 4..20usize, Just(usize::MAX)])
            .prop_map(|(ep, max)| Op::RecvMany { ep, max }),
        3 => (0..8usize, prop_oneof![0..4usize, 4..20usize, Just(usize::MAX)])
            .prop_map(|(ep, max)| Op::RecvRuns { ep, max }),
        1 => (0..8usize, any::<bool>()).prop_map(|(ep, on)| Op::RecvDisable(ep, on)),
        1 => (0..8usize, prop_oneof![Just(1usize), 8..80usize, Just(DEFAULT_BUF)])
            .prop_map(|(ep, n)| Op::SetRcvbuf(ep, n)),
        1 => (0..8usize, prop_oneof![Just(1usize), 2..60usize])
            .prop_map(|(ep, n)| Op::SetRcvlowat(ep, n)),
        2 => (0..8usize).prop_map(Op::RcvReady),
    ]
}

/// Two muxes driven alike, `a` one message at a time, `b` in batches.
struct Pair {
    a: MuxCore,
    b: MuxCore,
    eps: Vec<EndpointId>,
    conns: Vec<ConnectionId>,
    next_body: u8,
}

impl Pair {
    fn new(kind: Kind) -> Pair {
        let (a, ep) = mux(kind);
        let (b, _) = mux(kind);
        Pair {
            a,
            b,
            eps: vec![ep],
            conns: Vec::new(),
            next_body: 0,
        }
    }

    fn ep(&self, i: usize) -> EndpointId {
        self.eps[i % self.eps.len()]
    }

    fn conn(&self, i: usize) -> Option<ConnectionId> {
        self.conns.get(i % self.conns.len().max(1)).copied()
    }

    /// Applies `op` to both muxes and checks that they agree.
    fn step(&mut self, op: &Op) {
        match *op {
            Op::Attach => {
                let c = self.a.attach();
                assert_eq!(self.b.attach(), c);
                self.conns.push(c);
            }
            Op::Unattach(i) => {
                if let Some(c) = self.conn(i) {
                    let p = crate::stats::ParserStats::default();
                    assert_eq!(self.a.unattach(c, p), self.b.unattach(c, p));
                }
            }
            Op::AddEndpoint => {
                if self.eps.len() < 5 {
                    let ep = self.a.add_endpoint().expect("add endpoint");
                    assert_eq!(self.b.add_endpoint(), Ok(ep));
                    self.eps.push(ep);
                }
            }
            Op::CloseEndpoint(i) => {
                if self.eps.len() > 1 {
                    let ep = self.ep(i);
                    assert_eq!(self.a.close_endpoint(ep), self.b.close_endpoint(ep));
                    self.eps.retain(|&e| e != ep);
                }
            }
            Op::RxPass {
                conn,
                ref lens,
                prefer,
                ref cuts,
                strip,
            } => self.rx_pass(conn, lens, prefer, cuts, strip),
            Op::Recv { ep, max, peek } => {
                let ep = self.ep(ep);
                assert_eq!(self.a.recv(ep, max, peek), self.b.recv(ep, max, peek));
            }
            Op::RecvMany { ep, max } => {
                let ep = self.ep(ep);
                let one = recv_one_by_one(&mut self.a, ep, max);
                assert_eq!(one, recv_batch(&mut self.b, ep, max), "messages taken");
            }
            Op::RecvRuns { ep, max } => {
                let ep = self.ep(ep);
                let one = recv_one_by_one(&mut self.a, ep, max);
                assert_eq!(one, recv_as_runs(&mut self.b, ep, max), "messages taken");
            }
            Op::RecvDisable(i, on) => {
                let ep = self.ep(i);
                let r = self.a.set_recv_disable(ep, on);
                assert_eq!(r, self.b.set_recv_disable(ep, on));
            }
            Op::SetRcvbuf(i, n) => {
                let ep = self.ep(i);
                assert_eq!(self.a.set_rcvbuf(ep, n), self.b.set_rcvbuf(ep, n));
            }
            Op::SetRcvlowat(i, n) => {
                let ep = self.ep(i);
                assert_eq!(self.a.set_rcvlowat(ep, n), self.b.set_rcvlowat(ep, n));
            }
            Op::RcvReady(i) => {
                let ep = self.ep(i);
                rcv_ready_one_by_one(&mut self.a, ep.0);
                self.b.rcv_ready(ep.0);
            }
        }
        self.check();
    }

    fn rx_pass(
        &mut self,
        conn: usize,
        lens: &[usize],
        prefer: Option<usize>,
        cuts: &[bool],
        strip: usize,
    ) {
        let Some(c) = self.conn(conn) else {
            return;
        };
        let prefer = prefer.map(|p| self.eps.get(p).copied().unwrap_or(EndpointId(99)));
        let msgs: Vec<Bytes> = lens
            .iter()
            .map(|&len| {
                self.next_body = self.next_body.wrapping_add(1);
                m(self.next_body, len)
            })
            .collect();
        let runs = as_runs(&msgs, cuts, strip);
        let one = rx_pass_one_by_one(&mut self.a, c, msgs, prefer);
        assert_eq!(one, self.b.rx_pass_runs(c, runs, prefer), "pass outcome");
    }

    fn check(&mut self) {
        assert_eq!(events(&mut self.a), events(&mut self.b), "events");
        assert_eq!(rx_state(&self.a), rx_state(&self.b), "receive state");
        assert_eq!(self.a.stats(), self.b.stats(), "mux counters");
        assert_eq!(self.a.held(), self.b.held());
        check_invariants(&self.a);
        check_invariants(&self.b);
    }
}

/// `msgs` as runs: a new run after each message whose `cuts` entry is true, every message
/// behind `strip` bytes of header that the run strips.
fn as_runs(msgs: &[Bytes], cuts: &[bool], strip: usize) -> Vec<MsgRun> {
    let mut runs = Vec::new();
    let (mut data, mut lens) = (Vec::new(), Vec::new());
    for (i, msg) in msgs.iter().enumerate() {
        data.extend(std::iter::repeat_n(0xee, strip));
        data.extend_from_slice(msg);
        lens.push(strip + msg.len());
        if cuts.get(i).copied().unwrap_or(false) || i + 1 == msgs.len() {
            let lens = std::mem::take(&mut lens);
            runs.push(MsgRun::new(
                Bytes::from(std::mem::take(&mut data)),
                lens,
                strip,
            ));
        }
    }
    runs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn batches_are_indistinguishable_from_one_message_at_a_time(
        seqpacket in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut pair = Pair::new(if seqpacket { Kind::SeqPacket } else { Kind::Datagram });
        for op in &ops {
            pair.step(op);
        }
    }
}

/// Runs `ops` on a fresh pair of both kinds.
fn run(ops: &[Op]) {
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        let mut pair = Pair::new(kind);
        for op in ops {
            pair.step(op);
        }
    }
}

fn pass(conn: usize, lens: &[usize]) -> Op {
    Op::RxPass {
        conn,
        lens: lens.to_vec(),
        prefer: None,
        cuts: Vec::new(),
        strip: 0,
    }
}

#[test]
fn a_low_water_mark_above_one_absorbs_where_one_at_a_time_does() {
    // Endpoint 0 full (rcvbuf 20), endpoint 1 disabled: the rest of the pass is parked.
    // Taking 3 of 5 goes below the mark (15) after the 2nd: the parked messages are absorbed
    // then, before the 3rd is taken, and not after it (which would absorb more).
    run(&[
        Op::AddEndpoint,
        Op::RecvDisable(1, true),
        Op::SetRcvbuf(0, 20),
        Op::SetRcvlowat(0, 15),
        Op::Attach,
        pass(0, &[5, 5, 5, 5, 5, 5, 5, 5, 5, 5]),
        Op::RecvMany { ep: 0, max: 3 },
        Op::RecvMany { ep: 0, max: 1 },
        Op::RecvMany {
            ep: 0,
            max: usize::MAX,
        },
    ]);
}

#[test]
fn the_hold_queue_and_parked_messages_are_taken_on_in_the_same_call() {
    // Closing endpoint 1 with nobody eligible holds its messages; endpoint 0, full, is
    // drained in one call that goes on with the held messages, then the parked ones.
    run(&[
        Op::AddEndpoint,
        Op::Attach,
        Op::SetRcvbuf(0, 1),
        pass(0, &[3, 3]), // endpoint 0 takes one (then full), endpoint 1 the other
        pass(0, &[4]),    // endpoint 1 again
        Op::SetRcvbuf(1, 1),
        pass(0, &[6, 6]), // nobody has room: parked
        Op::CloseEndpoint(1),
        Op::RecvMany {
            ep: 0,
            max: usize::MAX,
        },
    ]);
}

#[test]
fn zero_length_messages_keep_the_memory_below_the_mark() {
    run(&[
        Op::Attach,
        Op::SetRcvbuf(0, 1),
        pass(0, &[0, 0, 0, 2, 0]),
        pass(0, &[1, 0]),
        Op::RecvMany { ep: 0, max: 2 },
        Op::RecvMany {
            ep: 0,
            max: usize::MAX,
        },
    ]);
}

#[test]
fn a_seqpacket_remainder_is_taken_whole() {
    let (mut mux, ep) = mux(Kind::SeqPacket);
    let c = mux.attach();
    mux.rx_pass(c, [Bytes::from_static(b"0123456789"), m(2, 3)], None);
    events(&mut mux);
    assert_eq!(mux.recv(ep, 4, false).map(|r| r.eor), Some(false));
    let got = recv_batch(&mut mux, ep, 10);
    assert_eq!(
        got,
        [(Bytes::from_static(b"456789"), c), (m(2, 3), c)],
        "the rest of the first message, then the second"
    );
    assert_eq!(rx_counts(&mux, ep), (2, 13));
    assert_eq!(mux.rx_queued(ep), Some((0, 0)));
    check_invariants(&mux);
}

#[test]
fn nothing_is_taken_from_a_closed_or_empty_endpoint_or_with_max_zero() {
    let (mut mux, ep) = mux(Kind::Datagram);
    let c = mux.attach();
    assert!(recv_batch(&mut mux, ep, 10).is_empty());
    mux.rx_pass(c, [m(1, 1)], None);
    assert!(recv_batch(&mut mux, ep, 0).is_empty());
    assert!(recv_batch(&mut mux, EndpointId(7), 10).is_empty());
    assert_eq!(mux.rx_queued(ep), Some((1, 1)));
    assert_eq!(rx_counts(&mux, ep), (0, 0));
}

#[test]
fn a_long_pass_fills_endpoints_in_turn_with_one_wake_up_each() {
    run(&[
        Op::AddEndpoint,
        Op::AddEndpoint,
        Op::Attach,
        Op::SetRcvbuf(0, 30),
        Op::SetRcvbuf(1, 30),
        Op::SetRcvbuf(2, 30),
        Op::RxPass {
            conn: 0,
            lens: vec![10; 12],
            prefer: Some(1),
            cuts: vec![false, false, false, true],
            strip: 2,
        },
        Op::RecvMany { ep: 1, max: 2 },
        pass(0, &[10, 10]),
    ]);
}
