//! `kcm`: this library. Every server connection is attached to one mux with the Thrift preset;
//! each worker thread owns one endpoint (`Endpoint::new` + `clone_endpoint`), takes messages in
//! batches (`recv_runs`: read in place) and answers each on the connection it came from,
//! writing the replies back to back into a `SendBatch` (`send_runs`, addressed mode), so a
//! connection's requests are load-balanced across the workers.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use kcm::{AttachOptions, ConnectionId, Endpoint, Kind, MuxOptions, RecvBatch, SendBatch};

use super::{Running, ServerCtx, MAX_FRAME, STOP_POLL};
use crate::wire::{self, Op, Request};

/// Most messages taken per `recv_batch` (`recvmmsg`'s vlen): a worker takes whatever is
/// queued for it, up to several connections' read passes at once, as the `thread` server
/// answers everything one 64 KiB read brought. (64 cost W3 about 15 %: more round trips
/// through the mux per message.)
const BATCH: usize = 256;

/// With CPU work per request, replies go out in groups of up to this many while requests are
/// waiting, and at once when none is: a reply waits for at most a few more requests' work,
/// while the client gets fewer, fuller writes (and fewer wake-ups). W2, 3 reps each, after
/// busy threads began to read quiet connections themselves: 2 → 1.22× `thread`'s QPS, p99
/// 0.82×; 4 → 1.34, 0.72; 8 → 1.50, 0.62; 16 → 1.46, 0.72; unbounded → 1.42, 0.74. Again
/// once the engine stopped waking every 300 µs while both workers are busy (3510d60): 4 →
/// 1.43, 1.44; 8 → 1.54–1.58 in five runs; 16 → 1.59–1.65 in seven (p99 0.61–0.63 for both);
/// 24 → 1.58, 1.61; 32 → 1.52, 1.63; 64 → 1.56, 1.56.
const REPLY_BATCH: usize = 16;

/// A reply held back while requests with CPU work wait (see [`REPLY_BATCH`]): an
/// acknowledgement, or an echo of the request (a zero-copy slice of its read buffer, which the
/// batch it came in does not keep).
enum Reply {
    Ack([u8; wire::ACK_LEN]),
    Echo(Bytes),
}

impl AsRef<[u8]> for Reply {
    fn as_ref(&self) -> &[u8] {
        match self {
            Reply::Ack(a) => a,
            Reply::Echo(b) => b,
        }
    }
}

/// Creates the mux, attaches every connection and starts one worker per endpoint.
pub fn start(conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<Running> {
    // Connections the load generator closes at the end of a run are dropped by the mux.
    let mut opts = MuxOptions::default();
    opts.drop_failed = true;
    let first = Endpoint::with_options(Kind::Datagram, opts).context("kcm: create mux")?;
    let mut eps = Vec::with_capacity(ctx.workers);
    for _ in 1..ctx.workers {
        eps.push(first.clone_endpoint().context("kcm: clone endpoint")?);
    }
    let parser: Arc<dyn kcm::Parser> = Arc::new(kcm::presets::thrift());
    for c in &conns {
        first
            .attach_with(
                c,
                parser.clone(),
                AttachOptions::default().max_message_size(MAX_FRAME),
            )
            .context("kcm: attach")?;
    }
    // kcm keeps its own descriptors; ours can go.
    drop(conns);
    eps.insert(0, first);
    Running::spawn_workers(ctx, "kcm", eps, worker)
}

fn worker(ep: Endpoint, ctx: &ServerCtx) -> anyhow::Result<()> {
    ep.set_read_timeout(Some(STOP_POLL));
    // With CPU work per request, balance per message, as KCM's documentation intends: an
    // endpoint with a message queued is not eligible for more (SO_RCVBUF of one byte), so
    // the rest wait on their connection (parked, in arrival order) for whichever worker
    // frees up first. Replies go out once no request is waiting for this worker (or a few
    // are pending), as the `thread` server writes the replies of a read pass together: one
    // write per request would cost more than the balancing gains.
    let batch_max = if ctx.cpu_work {
        ep.set_recv_buffer_size(1)?;
        1
    } else {
        BATCH
    };
    let mut batch = RecvBatch::new();
    // Replies are written back to back into `out`, a connection's at a time, as the
    // `thread` server writes them into its output buffer (`send_runs` copies each
    // connection's replies into the send queue in one piece). With CPU work they are held
    // in `held` first, to go out sorted by connection.
    let mut out = SendBatch::new();
    let mut held: Vec<(ConnectionId, Reply)> = Vec::new();
    while !ctx.stopped() {
        match ep.recv_runs(&mut batch, batch_max) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if super::is_disconnect(&e) => continue,
            Err(e) => return Err(e).context("kcm: recv_runs"),
        }
        let mut bytes = 0u64;
        let n = batch.len() as u64;
        for m in batch.iter() {
            bytes += m.data.len() as u64;
            let req = match Request::parse(m.data) {
                Ok(r) => r,
                Err(_) => {
                    ctx.counters.bad();
                    continue;
                }
            };
            crate::work::spin(req.work_ns);
            match (req.op, ctx.cpu_work) {
                (Op::None, _) => {}
                (Op::Ack, false) => out.push_to(m.conn, &wire::ack(req.seq, m.data.len())),
                (Op::Echo, false) => out.push_to(m.conn, m.data),
                (Op::Ack, true) => {
                    held.push((m.conn, Reply::Ack(wire::ack(req.seq, m.data.len()))));
                }
                (Op::Echo, true) => held.push((m.conn, Reply::Echo(m.to_bytes()))),
            }
        }
        batch.clear();
        ctx.counters.add(n, bytes);
        if ctx.cpu_work {
            if held.len() < REPLY_BATCH && ep.queued().0 > 0 {
                continue;
            }
            // One write per connection rather than one per change of destination (order
            // within a connection is kept; about +3 % W2 QPS). Without CPU work the replies
            // of a batch come grouped by read pass already.
            held.sort_by_key(|(conn, _)| *conn);
            for (conn, r) in held.drain(..) {
                out.push_to(conn, r.as_ref());
            }
        }
        // `send_runs` stops early when a connection's send queue fills (it returns the count
        // it took, and the rest stay in `out`): send again, or their requests would never be
        // answered.
        while !out.is_empty() {
            match ep.send_runs(&mut out) {
                Ok(0) => break,
                Ok(_) => {}
                // The peer left with requests in flight (end of run): skip its reply.
                Err(e) if super::is_disconnect(&e) => out.skip(1),
                Err(e) => return Err(e).context("kcm: send_runs"),
            }
        }
        out.clear();
    }
    Ok(())
}
