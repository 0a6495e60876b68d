//! `kcm`: this library. Every server connection is attached to one mux with the Thrift preset;
//! each worker thread owns one endpoint (`Endpoint::new` + `clone_endpoint`), takes messages in
//! batches (`recv_runs`: read in place, a `Bytes` only for a request echoed back) and answers
//! each on the connection it came from (`send_batch_to`, addressed mode), so a connection's
//! requests are load-balanced across the workers.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use kcm::{AttachOptions, ConnectionId, Endpoint, Kind, MsgData, MuxOptions, RecvBatch};

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
/// 0.82×; 4 → 1.34, 0.72; 8 → 1.50, 0.62; 16 → 1.46, 0.72; unbounded → 1.42, 0.74.
const REPLY_BATCH: usize = 8;

/// One reply: an acknowledgement built on the stack (the library copies it into its send
/// queue, as the `thread` server copies it into its output buffer), or an echo of the request
/// (a zero-copy slice of the read buffer).
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

/// Sent by reference: the library copies an ack or takes another reference to an echo, and
/// the batch is iterated without moving each 40-byte entry around.
impl MsgData for &Reply {
    fn is_shared(&self) -> bool {
        matches!(self, Reply::Echo(_))
    }
    fn into_bytes(self) -> Bytes {
        match self {
            Reply::Ack(a) => Bytes::copy_from_slice(a),
            Reply::Echo(b) => b.clone(),
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
    let mut replies: Vec<(ConnectionId, Reply)> = Vec::with_capacity(BATCH);
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
            match req.op {
                Op::None => {}
                Op::Ack => replies.push((m.conn, Reply::Ack(wire::ack(req.seq, m.data.len())))),
                Op::Echo => replies.push((m.conn, Reply::Echo(m.to_bytes()))),
            }
        }
        batch.clear();
        ctx.counters.add(n, bytes);
        if ctx.cpu_work && replies.len() < REPLY_BATCH && ep.queued().0 > 0 {
            continue;
        }
        // One write per connection rather than one per change of destination (order within a
        // connection is kept; about +3 % W2 QPS). Without CPU work the replies of a batch come
        // grouped by read pass already.
        if ctx.cpu_work {
            replies.sort_by_key(|(conn, _)| *conn);
        }
        // `send_batch_to` stops early when a connection's send queue fills (it returns the
        // count it took): send the rest again, or their requests would never be answered.
        let mut sent = 0;
        while sent < replies.len() {
            match ep.send_batch_to(replies[sent..].iter().map(|(c, r)| (*c, r))) {
                Ok(0) => break,
                Ok(n) => sent += n,
                // The peer left with requests in flight (end of run): skip its reply.
                Err(e) if super::is_disconnect(&e) => sent += 1,
                Err(e) => return Err(e).context("kcm: send_batch_to"),
            }
        }
        replies.clear();
    }
    Ok(())
}
