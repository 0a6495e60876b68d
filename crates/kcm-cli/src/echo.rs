//! The message echo server behind `kcm echo` (and the server half of `kcm demo`).
//!
//! ```text
//!   acceptor thread ── accept() ── attach(conn, parser) ──┐
//!                                                        ▼
//!                  one mux (drop_failed) ── connections 0..n
//!                   │ control endpoint: receive disabled; attaches, reads events and stats
//!                   │ worker endpoint 1 ◄── worker thread 1: recv_batch → send_batch_to
//!                   │ …
//!                   └ worker endpoint N ◄── worker thread N
//! ```
//!
//! Each message goes back on the connection it came from (addressed mode). A connection that
//! sends bad input fails in its own stream parser and the mux drops it (`drop_failed`); the
//! server and every other connection carry on. Workers wake at least every
//! [`POLL_INTERVAL`] to notice shutdown.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context as _;
use kcm::{AttachOptions, ConnectionEvent, Endpoint, Kind, Message, MuxOptions};

use crate::drops::DropTally;
use crate::spec::ParserSpec;

/// How long a worker waits in a receive or a send before looking at the shutdown flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Messages a worker takes per `recv_batch`.
const BATCH: usize = 64;

/// What to serve.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Address to listen on (`IP:PORT` or `HOST:PORT`; port 0 picks a free port).
    pub listen: String,
    /// The parser every accepted connection is attached with.
    pub parser: ParserSpec,
    /// Worker threads, each with its own endpoint (at least 1).
    pub workers: usize,
    /// Largest message accepted per connection; `None`: the socket's receive buffer size, as
    /// the kernel (`kcm-spec.md` §4.3).
    pub max_message_size: Option<usize>,
}

/// A running echo server. Stop it with [`EchoServer::shutdown`].
pub struct EchoServer {
    addr: SocketAddr,
    control: Arc<Endpoint>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<WorkerReport>>,
    drops: DropTally,
}

/// One worker's totals.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerReport {
    echoed: u64,
    failed: u64,
}

/// What a server did, returned by [`EchoServer::shutdown`].
#[derive(Debug)]
pub struct EchoReport {
    /// Messages sent back.
    pub echoed: u64,
    /// Replies that could not be sent (their connection had failed or was gone).
    pub failed_replies: u64,
    /// Dropped connections by reason.
    pub drops: DropTally,
    /// This server's mux statistics (`/proc/net/kcm_stats` layout), taken before teardown.
    pub mux_stats: String,
}

impl EchoServer {
    /// Binds, creates the mux and starts the acceptor and the workers.
    pub fn start(cfg: EchoConfig) -> anyhow::Result<EchoServer> {
        let listener = TcpListener::bind(&cfg.listen)
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener
            .local_addr()
            .context("listening socket has no address")?;
        let mut opts = MuxOptions::default();
        opts.drop_failed = true;
        let control =
            Endpoint::with_options(Kind::Datagram, opts).context("cannot create the mux")?;
        // The control endpoint never receives: if it were eligible, the mux would steer
        // messages to it and they would wait there for a reader that never comes.
        control
            .set_recv_disable(true)
            .context("cannot disable receive on the control endpoint")?;
        let control = Arc::new(control);
        let stop = Arc::new(AtomicBool::new(false));

        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let ep = control
                .clone_endpoint()
                .context("cannot add a worker endpoint")?;
            let stop = stop.clone();
            let handle = thread::Builder::new()
                .name(format!("echo-worker-{i}"))
                .spawn(move || worker(&ep, &stop))
                .context("cannot start a worker thread")?;
            workers.push(handle);
        }

        let mut attach = AttachOptions::default();
        if let Some(max) = cfg.max_message_size {
            attach = attach.max_message_size(max);
        }
        let acceptor = {
            let (control, stop, parser) = (control.clone(), stop.clone(), cfg.parser.clone());
            thread::Builder::new()
                .name("echo-acceptor".to_owned())
                .spawn(move || acceptor(&listener, &control, &parser, attach, &stop))
                .context("cannot start the acceptor thread")?
        };
        Ok(EchoServer {
            addr,
            control,
            stop,
            acceptor: Some(acceptor),
            workers,
            drops: DropTally::default(),
        })
    }

    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Folds the connection events recorded since the last call into the drop counts, and
    /// returns the failures worth logging. Call it now and then: the event log is bounded.
    pub fn poll_events(&mut self) -> Vec<ConnectionEvent> {
        self.drops.record(self.control.take_events())
    }

    /// Stops accepting, stops the workers, and returns the totals. Connections stay attached
    /// until the mux is torn down at the end of this call.
    pub fn shutdown(mut self) -> EchoReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // The acceptor sleeps in accept(): a connection of our own wakes it. If even that
            // fails, leave the thread; it holds nothing that outlives the process.
            if TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1)).is_ok() {
                let _ = acceptor.join();
            }
        }
        let mut total = WorkerReport::default();
        for w in self.workers.drain(..) {
            // A worker that panicked has no report; its messages simply go uncounted.
            if let Ok(r) = w.join() {
                total.echoed += r.echoed;
                total.failed += r.failed;
            }
        }
        for ev in self.poll_events() {
            eprintln!("kcm echo: {ev}");
        }
        EchoReport {
            echoed: total.echoed,
            failed_replies: total.failed,
            mux_stats: self.control.proc_kcm_stats(),
            drops: std::mem::take(&mut self.drops),
        }
    }
}

/// Where to connect to reach a listener: its own address, with loopback for a wildcard IP.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

/// Accepts connections and attaches each to the mux until `stop` is set.
fn acceptor(
    listener: &TcpListener,
    control: &Endpoint,
    parser: &ParserSpec,
    opts: AttachOptions,
    stop: &AtomicBool,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                // Replies are whole messages written at once: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string());
                // kcm keeps its own descriptor: ours closes when `stream` goes out of scope.
                if let Err(e) = control.attach_with(&stream, parser.parser.clone(), opts) {
                    eprintln!("kcm echo: cannot attach connection from {peer}: {e}");
                }
            }
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of descriptors: back off instead of spinning on the same error.
                eprintln!("kcm echo: accept: {e}");
                thread::sleep(POLL_INTERVAL);
            }
            // Per-connection failures (ECONNABORTED and the like) do not concern the server.
            Err(_) => {}
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Whether a failed receive only means that nothing came: the read timeout expired, a
/// non-blocking endpoint had nothing queued, or a signal interrupted the wait. The receive
/// loops just go round again.
pub fn nothing_received(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// One worker: receive a batch, send each message back where it came from, until `stop`.
fn worker(ep: &Endpoint, stop: &AtomicBool) -> WorkerReport {
    ep.set_read_timeout(Some(POLL_INTERVAL));
    ep.set_write_timeout(Some(POLL_INTERVAL));
    let mut report = WorkerReport::default();
    let mut batch = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        match ep.recv_batch(&mut batch, BATCH) {
            Ok(_) => echo_batch(ep, &batch, stop, &mut report),
            Err(e) if nothing_received(&e) => {}
            Err(e) => {
                // Only an error posted on the endpoint itself lands here (EPIPE after a
                // transmit abort); it is taken by this call, so carry on.
                eprintln!("kcm echo: receive: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    report
}

/// Sends a batch back, message by message to its own connection. A batch stops at the first
/// message the mux refuses (a dead connection, or a full send buffer); that message is
/// retried alone to tell which, and the rest of the batch goes on.
fn echo_batch(ep: &Endpoint, batch: &[Message], stop: &AtomicBool, report: &mut WorkerReport) {
    let mut rest = batch;
    while !rest.is_empty() {
        match ep.send_batch_to(rest.iter().map(|m| (m.conn, m.data.clone()))) {
            Ok(n) if n >= rest.len() => {
                report.echoed += rest.len() as u64;
                return;
            }
            Ok(n) => {
                report.echoed += n as u64;
                rest = &rest[n..];
                if let Some((first, tail)) = rest.split_first() {
                    send_one(ep, first, stop, report);
                    rest = tail;
                }
            }
            // The write timeout passed with the send buffer still full (a peer that does not
            // read): try again, unless shutting down, when the rest will never go out.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    report.failed += rest.len() as u64;
                    return;
                }
            }
            Err(_) => {
                report.failed += 1;
                rest = &rest[1..];
            }
        }
    }
}

fn send_one(ep: &Endpoint, msg: &Message, stop: &AtomicBool, report: &mut WorkerReport) {
    loop {
        match ep.send_to(msg.conn, msg.data.clone()) {
            Ok(_) => {
                report.echoed += 1;
                return;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && !stop.load(Ordering::Relaxed) => {}
            // ENOTCONN (dropped) or EPIPE (failed): the reply has nowhere to go.
            Err(_) => {
                report.failed += 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn server(spec: &str, workers: usize) -> EchoServer {
        let parser = crate::spec::resolve(spec).unwrap();
        let cfg = EchoConfig {
            listen: "127.0.0.1:0".to_owned(),
            parser,
            workers,
            max_message_size: None,
        };
        EchoServer::start(cfg).unwrap()
    }

    fn connect(s: &EchoServer) -> TcpStream {
        let c = TcpStream::connect(s.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    #[test]
    fn echoes_and_drops_a_bad_connection() {
        let s = server("lf:width=2,incl", 2);
        assert_ne!(s.local_addr().port(), 0);
        let mut good = connect(&s);
        let mut bad = connect(&s);
        // A u16 BE length that counts itself: 1 is shorter than the header (EPROTO).
        bad.write_all(&[0, 1, 0, 0]).unwrap();
        let mut buf = [0u8; 16];
        let n = bad.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the bad connection was not closed");
        good.write_all(b"\0\x05abc").unwrap();
        let mut reply = [0u8; 5];
        good.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"\0\x05abc");
        let report = s.shutdown();
        assert_eq!(report.echoed, 1);
        assert_eq!(
            report.drops.to_string(),
            "dropped connections: 1 (parser error EPROTO: 1)"
        );
        assert!(report.mux_stats.contains("RX-Msgs"));
    }

    #[test]
    fn only_timeouts_and_interruptions_mean_nothing_received() {
        for kind in [
            ErrorKind::WouldBlock,
            ErrorKind::TimedOut,
            ErrorKind::Interrupted,
        ] {
            assert!(nothing_received(&kind.into()), "{kind:?}");
        }
        assert!(
            !nothing_received(&io::Error::from_raw_os_error(32)),
            "EPIPE"
        );
        assert!(!nothing_received(&ErrorKind::UnexpectedEof.into()));
    }

    #[test]
    fn wake_addr_uses_loopback_for_wildcards() {
        assert_eq!(
            wake_addr("0.0.0.0:7".parse().unwrap()),
            "127.0.0.1:7".parse().unwrap()
        );
        assert_eq!(
            wake_addr("[::]:7".parse().unwrap()),
            "[::1]:7".parse().unwrap()
        );
        assert_eq!(
            wake_addr("10.1.2.3:7".parse().unwrap()),
            "10.1.2.3:7".parse().unwrap()
        );
    }
}
