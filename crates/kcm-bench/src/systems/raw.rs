//! `raw`: the ceiling. One thread reads every connection and finds the message boundaries with
//! the hand-written [`Framer`]; it delivers nothing and answers nothing (`bench.md`: "the limit:
//! a single thread that only reads the stream and finds message boundaries"). Only one-way
//! workloads run against it.

use std::io;
use std::net::TcpStream;

use anyhow::Context;

use super::{is_disconnect, Running, ServerCtx, MAX_FRAME, STOP_POLL};
use crate::framer::Framer;
use crate::poller::Poller;

/// Starts the single reader thread.
pub fn start(conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<Running> {
    for c in &conns {
        c.set_nonblocking(true)?;
    }
    let c2 = ctx.clone();
    let t = std::thread::Builder::new()
        .name("raw".into())
        .spawn(move || reader(conns, &c2))
        .context("spawn raw reader")?;
    Ok(Running::threads(ctx, vec![t]))
}

fn reader(mut conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<()> {
    let poller = Poller::new()?;
    let mut framers = Vec::new();
    for (k, c) in conns.iter().enumerate() {
        poller.add(c, k as u64, true, false)?;
        framers.push(Framer::new(64 * 1024, MAX_FRAME));
    }
    let mut ready = Vec::new();
    while !ctx.stopped() {
        poller.wait(&mut ready, STOP_POLL)?;
        for r in &ready {
            let k = r.key as usize;
            let (Some(stream), Some(framer)) = (conns.get_mut(k), framers.get_mut(k)) else {
                continue;
            };
            let mut closed = match framer.read_from(stream) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if is_disconnect(&e) => true,
                Err(e) => return Err(e).context("raw reader"),
            };
            let (mut n, mut bytes) = (0u64, 0u64);
            loop {
                match framer.next_frame() {
                    Ok(Some(msg)) => {
                        n += 1;
                        bytes += msg.len() as u64;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // A corrupt stream cannot be reframed: count it and stop reading it.
                        ctx.counters.bad();
                        closed = true;
                        break;
                    }
                }
            }
            ctx.counters.add(n, bytes);
            if closed {
                let _ = poller.remove(&*stream);
            }
        }
    }
    Ok(())
}
