//! Random operation sequences against a model of what the runtime and the peer observe.
//!
//! A [`Harness`] plays the runtime: it performs each [`Op`], drains and checks the events,
//! writes what `poll_transmit` hands out onto a per-connection "wire", and after every step
//! asserts [`check_invariants`] plus the observable contracts: no received message is lost or
//! duplicated except where the spec drops it, every sent message reaches exactly one wire whole
//! (or is still queued, or was dropped and counted), no wake-up is lost, counters agree.
//! At the end it drains everything through events alone, as a runtime would, and checks that
//! nothing is stuck.

use proptest::prelude::prop;
use proptest::prelude::*;

use super::*;

mod checks;
mod harness;

use harness::Harness;

#[derive(Debug, Clone)]
enum Op {
    Attach,
    Unattach(usize),
    AddEndpoint,
    CloseEndpoint(usize),
    RxPass {
        conn: usize,
        lens: Vec<usize>,
        prefer: Option<usize>,
    },
    Recv {
        ep: usize,
        max: usize,
        peek: bool,
    },
    Send(SendOp),
    PollTransmit(usize),
    Complete {
        ep: usize,
        result: Res,
    },
    /// Write a connection's backlog (whatever the result, the runtime writes it at once).
    ConnTransmit {
        conn: usize,
        result: Res,
    },
    WriteSpace(usize),
    RecvDisable(usize, bool),
    SetRcvbuf(usize, usize),
    SetRcvlowat(usize, usize),
    SetSndbuf(usize, usize),
}

#[derive(Debug, Clone)]
struct SendOp {
    ep: usize,
    len: usize,
    chunks: usize,
    batch: bool,
    zero_end: bool,
    target: Option<usize>,
    /// Post an endpoint error before this chunk.
    err_at: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Res {
    All,
    /// Written(len * p / 256).
    Part(u8),
    WouldBlock,
    Failed,
}

fn op() -> impl Strategy<Value = Op> {
    let send = (
        0..8usize,
        12..70usize,
        1..4usize,
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0..8usize),
        prop::option::weighted(0.1, 0..3usize),
    )
        .prop_map(|(ep, len, chunks, batch, zero_end, target, err_at)| {
            Op::Send(SendOp {
                ep,
                len,
                chunks,
                batch,
                zero_end,
                target,
                err_at,
            })
        });
    let res = prop_oneof![
        3 => Just(Res::All),
        3 => any::<u8>().prop_map(Res::Part),
        1 => Just(Res::WouldBlock),
        1 => Just(Res::Failed),
    ];
    prop_oneof![
        2 => Just(Op::Attach),
        1 => (0..8usize).prop_map(Op::Unattach),
        1 => Just(Op::AddEndpoint),
        1 => (0..8usize).prop_map(Op::CloseEndpoint),
        5 => (0..8usize, prop::collection::vec(1..40usize, 0..5), prop::option::of(0..9usize))
            .prop_map(|(conn, lens, prefer)| Op::RxPass { conn, lens, prefer }),
        5 => (0..8usize, 0..48usize, prop::bool::weighted(0.2))
            .prop_map(|(ep, max, peek)| Op::Recv { ep, max, peek }),
        5 => send,
        4 => (0..8usize).prop_map(Op::PollTransmit),
        4 => (0..8usize, res.clone()).prop_map(|(ep, result)| Op::Complete { ep, result }),
        3 => (0..8usize, res).prop_map(|(conn, result)| Op::ConnTransmit { conn, result }),
        2 => (0..8usize).prop_map(Op::WriteSpace),
        1 => (0..8usize, any::<bool>()).prop_map(|(ep, on)| Op::RecvDisable(ep, on)),
        1 => (0..8usize, prop_oneof![Just(1usize), 8..80usize, Just(DEFAULT_BUF)])
            .prop_map(|(ep, n)| Op::SetRcvbuf(ep, n)),
        1 => (0..8usize, 1..60usize).prop_map(|(ep, n)| Op::SetRcvlowat(ep, n)),
        1 => (0..8usize, prop_oneof![Just(1usize), 16..160usize, Just(DEFAULT_BUF)])
            .prop_map(|(ep, n)| Op::SetSndbuf(ep, n)),
    ]
}

/// Addressed sends from a few endpoints to a few connections whose writes often come back
/// short or blocked: the operations that move messages into connection backlogs and back out.
fn backlog_op() -> impl Strategy<Value = Op> {
    let send = (
        0..3usize,
        12..70usize,
        1..3usize,
        prop::bool::weighted(0.2),
        0..4usize,
    )
        .prop_map(|(ep, len, chunks, batch, target)| {
            Op::Send(SendOp {
                ep,
                len,
                chunks,
                batch,
                zero_end: false,
                target: Some(target),
                err_at: None,
            })
        });
    let res = prop_oneof![
        2 => Just(Res::All),
        3 => any::<u8>().prop_map(Res::Part),
        3 => Just(Res::WouldBlock),
        1 => Just(Res::Failed),
    ];
    prop_oneof![
        1 => Just(Op::AddEndpoint),
        1 => (0..4usize).prop_map(Op::Unattach),
        8 => send,
        5 => (0..3usize).prop_map(Op::PollTransmit),
        5 => (0..3usize, res.clone()).prop_map(|(ep, result)| Op::Complete { ep, result }),
        4 => (0..4usize, res).prop_map(|(conn, result)| Op::ConnTransmit { conn, result }),
        3 => (0..4usize).prop_map(Op::WriteSpace),
        1 => (0..3usize, prop_oneof![Just(1usize), 16..160usize, Just(DEFAULT_BUF)])
            .prop_map(|(ep, n)| Op::SetSndbuf(ep, n)),
    ]
}

fn run(kind: Kind, ops: &[Op]) {
    let mut h = Harness::new(kind);
    for op in ops {
        h.step(op);
    }
    h.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(
        seqpacket in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(if seqpacket { Kind::SeqPacket } else { Kind::Datagram }, &ops);
    }

    #[test]
    fn addressed_sends_to_full_connections_keep_every_invariant(
        ops in prop::collection::vec(backlog_op(), 1..100),
    ) {
        let setup = [Op::Attach, Op::Attach, Op::Attach, Op::Attach, Op::AddEndpoint, Op::AddEndpoint];
        run(Kind::Datagram, &[&setup[..], &ops[..]].concat());
    }
}

/// A fixed busy sequence, so that a plain `cargo test` exercises the harness deterministically.
#[test]
fn the_harness_runs_a_busy_sequence() {
    let send = |ep, target| {
        Op::Send(SendOp {
            ep,
            len: 30,
            chunks: 2,
            batch: false,
            zero_end: false,
            target,
            err_at: None,
        })
    };
    let ops = vec![
        Op::AddEndpoint,
        send(0, None),
        Op::Attach,
        Op::Attach,
        send(1, Some(1)),
        Op::RxPass {
            conn: 0,
            lens: vec![5, 6, 7],
            prefer: Some(1),
        },
        Op::PollTransmit(0),
        Op::Complete {
            ep: 0,
            result: Res::Part(100),
        },
        Op::Unattach(0),
        Op::PollTransmit(1),
        Op::Complete {
            ep: 1,
            result: Res::Failed,
        },
        Op::SetRcvbuf(0, 1),
        Op::RecvDisable(1, true),
        Op::RxPass {
            conn: 1,
            lens: vec![9, 9, 9],
            prefer: None,
        },
        Op::Recv {
            ep: 0,
            max: 4,
            peek: false,
        },
        Op::RecvDisable(1, false),
        Op::CloseEndpoint(0),
        Op::Attach,
    ];
    for kind in [Kind::Datagram, Kind::SeqPacket] {
        run(kind, &ops);
    }
}

/// Found by the random operations (and shrunk): endpoint 0's head message for a full
/// connection stepped aside with every later message for that connection, including one sent
/// after an unaddressed message that then went out on the same connection behind it.
#[test]
fn a_stalled_endpoint_keeps_its_order_on_the_connection() {
    let s = |len, target| {
        Op::Send(SendOp {
            ep: 0,
            len,
            chunks: 1,
            batch: false,
            zero_end: false,
            target,
            err_at: None,
        })
    };
    let ops = vec![
        Op::Attach,
        Op::Attach,
        Op::CloseEndpoint(0),
        s(12, None),
        s(12, None),
        s(25, None),
        s(30, Some(1)),
        Op::PollTransmit(0),
        Op::Complete {
            ep: 0,
            result: Res::Failed,
        },
        Op::Unattach(2),
        s(12, None),
        Op::CloseEndpoint(0),
        s(24, Some(1)),
        Op::PollTransmit(0),
        Op::Complete {
            ep: 0,
            result: Res::Part(110),
        },
    ];
    run(Kind::Datagram, &ops);
}
