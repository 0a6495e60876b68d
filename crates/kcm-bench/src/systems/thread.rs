//! `thread`: the classic server KCM was measured against. Each connection belongs to one worker
//! thread (dealt round robin at accept), which serves it from its own epoll loop with the
//! hand-written [`Framer`] and writes the replies of a read pass inline, in one `write`.

use std::io;
use std::net::TcpStream;

use anyhow::Context;

use super::{is_disconnect, serve, Running, ServerCtx, MAX_FRAME, STOP_POLL};
use crate::framer::Framer;
use crate::poller::{Outbox, Poller};

struct Conn {
    stream: TcpStream,
    framer: Framer,
    out: Outbox,
    open: bool,
}

/// Starts the workers, each with its round-robin share of `conns`.
pub fn start(conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<Running> {
    let mut shares: Vec<Vec<TcpStream>> = (0..ctx.workers).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        c.set_nonblocking(true)?;
        shares[i % ctx.workers].push(c);
    }
    Running::spawn_workers(ctx, "thread", shares, worker)
}

fn worker(streams: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<()> {
    let poller = Poller::new()?;
    let mut conns = Vec::new();
    for (k, stream) in streams.into_iter().enumerate() {
        poller.add(&stream, k as u64, true, false)?;
        conns.push(Conn {
            stream,
            framer: Framer::new(64 * 1024, MAX_FRAME),
            out: Outbox::with_capacity(16 * 1024),
            open: true,
        });
    }
    let mut ready = Vec::new();
    while !ctx.stopped() {
        poller.wait(&mut ready, STOP_POLL)?;
        for r in &ready {
            let Some(c) = conns.get_mut(r.key as usize) else {
                continue;
            };
            if !c.open {
                continue;
            }
            match serve_conn(c, r.read, ctx) {
                Ok(()) => {}
                Err(e) if is_disconnect(&e) => close(c, &poller),
                Err(e) => return Err(e).context("thread server"),
            }
            if c.open {
                c.out.watch(&poller, &c.stream, r.key)?;
            }
        }
    }
    Ok(())
}

fn close(c: &mut Conn, poller: &Poller) {
    c.open = false;
    // A closed peer stays readable (EOF/HUP) forever: stop watching it. A failure here
    // changes nothing for the run.
    let _ = poller.remove(&c.stream);
}

/// One read pass: read once, answer every whole request, write the answers.
fn serve_conn(c: &mut Conn, readable: bool, ctx: &ServerCtx) -> io::Result<()> {
    if readable {
        match c.framer.read_from(&mut c.stream) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let (mut n, mut bytes) = (0u64, 0u64);
        loop {
            match c.framer.next_frame() {
                Ok(Some(msg)) => {
                    n += 1;
                    bytes += msg.len() as u64;
                    serve(msg, &mut c.out.buf, &ctx.counters);
                }
                Ok(None) => break,
                Err(_) => {
                    ctx.counters.bad();
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        ctx.counters.add(n, bytes);
    }
    c.out.flush(&mut c.stream)?;
    Ok(())
}
