//! The servers under test. Each takes the server ends of the run's connections, serves them with
//! the same number of workers until told to stop, and counts what it delivered.
//!
//! | system | shape |
//! |---|---|
//! | [`thread`] | one epoll loop per worker thread, connections dealt round robin, hand-written framer, replies written inline |
//! | [`tokio`](mod@self::tokio) | multi-thread runtime, one task per connection, `Framed<TcpStream, LengthDelimitedCodec>` |
//! | [`kcm`](mod@self::kcm) | every connection attached to one mux, one endpoint per worker thread, addressed replies |
//! | [`raw`] | one thread that reads and frames, nothing else: the ceiling |
//! | [`kernel`] | Linux AF_KCM, where the kernel has it |

pub mod kcm;
pub mod kernel;
pub mod raw;
pub mod thread;
pub mod tokio;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::config::System;

/// Largest message any server accepts (W1's 5,000 B requests with room to spare).
pub const MAX_FRAME: usize = 64 * 1024;

/// How long a blocked worker waits before it looks at the stop flag again.
pub const STOP_POLL: Duration = Duration::from_millis(20);

/// What a server delivered, updated once per batch (not per message: a shared counter written
/// per message would cost the fast systems more than the slow ones).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages delivered to the application (parsed whole).
    pub msgs: AtomicU64,
    /// Bytes of those messages, headers included.
    pub bytes: AtomicU64,
    /// Malformed requests (wrong size, unknown op): must stay 0.
    pub bad: AtomicU64,
}

impl Counters {
    /// Adds a batch.
    pub fn add(&self, msgs: u64, bytes: u64) {
        if msgs > 0 {
            self.msgs.fetch_add(msgs, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Counts a malformed request.
    pub fn bad(&self) {
        self.bad.fetch_add(1, Ordering::Relaxed);
    }

    /// (messages, bytes) so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.msgs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// What every server is given.
#[derive(Debug, Clone)]
pub struct ServerCtx {
    /// Worker threads.
    pub workers: usize,
    /// Raised when the run is over.
    pub stop: Arc<AtomicBool>,
    /// Delivery counters.
    pub counters: Arc<Counters>,
    /// Requests carry CPU work (W2): servers that can balance per message should tune for
    /// spreading work over the workers rather than for batching.
    pub cpu_work: bool,
}

impl ServerCtx {
    /// A context with a fresh stop flag and counters.
    pub fn new(workers: usize) -> ServerCtx {
        ServerCtx {
            workers: workers.max(1),
            stop: Arc::default(),
            counters: Arc::default(),
            cpu_work: false,
        }
    }

    /// Whether the run is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A running server: its threads, plus whatever must be dropped after them.
pub struct Running {
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    ctx: ServerCtx,
    on_stop: Option<Box<dyn FnOnce() -> anyhow::Result<()> + Send>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Running {
    /// A server made of these threads.
    pub fn threads(ctx: &ServerCtx, threads: Vec<JoinHandle<anyhow::Result<()>>>) -> Running {
        Running {
            threads,
            ctx: ctx.clone(),
            on_stop: None,
        }
    }

    /// A server of one worker thread per share, named `{name}-w{index}`, each running `worker`
    /// on its share (the share's connections, or its endpoint) until the run is over.
    pub fn spawn_workers<T: Send + 'static>(
        ctx: &ServerCtx,
        name: &str,
        shares: impl IntoIterator<Item = T>,
        worker: impl Fn(T, &ServerCtx) -> anyhow::Result<()> + Clone + Send + 'static,
    ) -> anyhow::Result<Running> {
        let mut threads = Vec::new();
        for (w, share) in shares.into_iter().enumerate() {
            let (ctx, worker) = (ctx.clone(), worker.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-w{w}"))
                    .spawn(move || worker(share, &ctx))
                    .context("spawn worker")?,
            );
        }
        Ok(Running::threads(ctx, threads))
    }

    /// Runs `f` after the threads have been joined (shuts a runtime down, closes sockets).
    pub fn with_on_stop(
        mut self,
        f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> Running {
        self.on_stop = Some(Box::new(f));
        self
    }

    /// The server's counters.
    pub fn counters(&self) -> &Counters {
        &self.ctx.counters
    }

    /// Stops the server and reports the first error any worker hit.
    pub fn stop(self) -> anyhow::Result<()> {
        self.ctx.stop.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(anyhow!("server thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        if let Some(f) = self.on_stop {
            let r = f();
            if first.is_ok() {
                first = r;
            }
        }
        let bad = self.ctx.counters.bad.load(Ordering::Relaxed);
        if first.is_ok() && bad > 0 {
            first = Err(anyhow!("server saw {bad} malformed requests"));
        }
        first
    }
}

/// Starts `system` on the server ends of the connections.
pub fn start(system: System, conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<Running> {
    match system {
        System::Thread => thread::start(conns, ctx),
        System::Tokio => tokio::start(conns, ctx),
        System::Kcm => kcm::start(conns, ctx),
        System::Raw => raw::start(conns, ctx),
        System::Kernel => kernel::start(conns, ctx),
    }
}

/// Whether an I/O error only means the peer went away (the load generator closes its ends when
/// a run is over, with requests still in flight).
pub fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | ConnectionAborted | NotConnected | UnexpectedEof
    )
}

/// Handles one request in a server: builds its reply into `out` and does its CPU work. A
/// malformed request is counted and skipped.
#[inline]
pub fn serve(msg: &[u8], out: &mut Vec<u8>, counters: &Counters) {
    match crate::wire::reply_into(msg, out) {
        Ok(req) => crate::work::spin(req.work_ns),
        Err(_) => counters.bad(),
    }
}
