//! `tokio`: a multi-thread runtime with one worker per bench worker and one task per connection,
//! reading and writing through `Framed<TcpStream, LengthDelimitedCodec>`.
//!
//! The codec is set to the benchmark's wire format, a 4-byte big-endian length of the rest: it
//! takes the header off on decode and puts it back on encode, so what crosses the wire is
//! byte for byte what the other systems receive and send. (`LengthDelimitedCodec` cannot keep
//! the header on decode and also add it on encode: one `length_adjustment` serves both.)
//! Echo replies are the received frame itself, no copy (kcm's worker copies its 64-byte echoes
//! into its `SendBatch`, as it copies acks). Replies to requests that
//! arrived in one read are fed and flushed together, as a careful tokio user would write it.

use std::io;
use std::net::TcpStream;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{Running, ServerCtx, MAX_FRAME};
use crate::framer::HEADER;
use crate::wire::{Op, Request};

/// The codec for the benchmark's wire format.
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
/// let mut codec = kcm_bench::systems::tokio::codec();
/// let mut buf = BytesMut::from(&b"\0\0\0\x02hi\0\0"[..]);
/// let frame = codec.decode(&mut buf)?.unwrap();
/// assert_eq!(&frame[..], b"hi");
/// let mut out = BytesMut::new();
/// codec.encode(bytes::Bytes::from_static(b"hi"), &mut out)?;
/// assert_eq!(&out[..], b"\0\0\0\x02hi"); // the same wire format back
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(HEADER)
        .length_adjustment(0)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Starts the runtime and spawns one task per connection.
pub fn start(conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<Running> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ctx.workers)
        .thread_name("tokio-w")
        .enable_io()
        .build()
        .context("tokio: runtime")?;
    for c in conns {
        c.set_nonblocking(true)?;
        let stream = {
            let _guard = rt.enter();
            tokio::net::TcpStream::from_std(c).context("tokio: register stream")?
        };
        let ctx = ctx.clone();
        rt.spawn(async move {
            if let Err(e) = serve(stream, &ctx).await {
                if !super::is_disconnect(&e) {
                    ctx.counters.bad();
                }
            }
        });
    }
    // The tasks end when the load generator closes its ends; shutting the runtime down after
    // the run cancels any that are still waiting.
    Ok(Running::threads(ctx, Vec::new()).with_on_stop(move || {
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        Ok(())
    }))
}

async fn serve(stream: tokio::net::TcpStream, ctx: &ServerCtx) -> io::Result<()> {
    let mut framed = Framed::new(stream, codec());
    while let Some(frame) = framed.next().await {
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut frame: BytesMut = frame?;
        loop {
            n += 1;
            bytes += (HEADER + frame.len()) as u64;
            match Request::parse_body(&frame) {
                Ok(req) => {
                    crate::work::spin(req.work_ns);
                    match req.op {
                        Op::None => {}
                        Op::Ack => {
                            let ack = crate::wire::ack(req.seq, HEADER + frame.len());
                            framed.feed(Bytes::copy_from_slice(&ack[HEADER..])).await?;
                        }
                        Op::Echo => framed.feed(frame.split().freeze()).await?,
                    }
                }
                Err(_) => ctx.counters.bad(),
            }
            // Another whole request already buffered? Answer it before flushing.
            if !has_frame(framed.read_buffer()) {
                break;
            }
            match framed.next().await {
                Some(f) => frame = f?,
                None => break,
            }
        }
        ctx.counters.add(n, bytes);
        SinkExt::<Bytes>::flush(&mut framed).await?;
    }
    Ok(())
}

/// Whether `buf` starts with a whole frame (so the next decode needs no read).
fn has_frame(buf: &BytesMut) -> bool {
    match buf.get(..HEADER) {
        Some(h) => {
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            buf.len() >= HEADER + len
        }
        None => false,
    }
}
