//! `kcm demo`: an echo server and a client mux in one process, on loopback.
//!
//! ```text
//!  client threads 1..T            client mux              echo server mux
//!  endpoint t: send(msg) ──────► conn 1..C (thrift) ───► workers: send_to(conn, msg)
//!  endpoint t: recv() ◄── any ── conn 1..C ◄──────────────────────┘
//! ```
//!
//! A reply may reach any client endpoint (the client mux steers each to whichever endpoint is
//! ready, as KCM does), so replies are checked against a table shared by every thread: each
//! sequence number must come back exactly once, byte for byte (see [`crate::pattern`]).
//!
//! The bytes in flight are capped ([`window`]) below what the client endpoints can queue, so
//! the client never sends more than it can take back even while no thread is receiving:
//! otherwise every client thread could block in `send` behind a server blocked in `send_to`
//! behind a client that is not reading.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use kcm::{AttachOptions, Endpoint, Kind, Message};

use crate::echo::{nothing_received, EchoConfig, EchoServer};
use crate::pattern::{Pattern, HEADER_LEN};

/// Without a single new reply for this long, the demo gives up and reports what is missing.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How long a client thread waits for replies before looking around again.
const RECV_WAIT: Duration = Duration::from_millis(10);

/// Messages sent in a row before a thread looks for replies.
const SEND_BURST: usize = 32;

/// First mismatches kept for the report.
const ERRORS_SHOWN: usize = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// TCP connections between the client mux and the server.
    pub connections: usize,
    /// Client threads, one endpoint each.
    pub threads: usize,
    /// Messages to send.
    pub messages: u64,
    /// Largest message body in bytes (after the 4-byte length).
    pub max_size: usize,
    /// Seed of the message sizes and contents.
    pub seed: u64,
    /// Echo server worker threads.
    pub workers: usize,
}

/// The state every client thread shares.
struct Table {
    pattern: Pattern,
    count: u64,
    /// One bit per sequence number: answered already.
    answered: Vec<AtomicU64>,
    /// Replies that checked out.
    good: AtomicU64,
    /// Replies that did not (wrong bytes or a repeat).
    bad: AtomicU64,
    /// Bytes sent whose reply has not come yet.
    in_flight: AtomicI64,
    /// Bytes sent in all.
    sent_bytes: AtomicU64,
    errors: Mutex<Vec<String>>,
    abort: AtomicBool,
    finished: OnceLock<Instant>,
}

impl Table {
    fn new(pattern: Pattern, count: u64) -> Table {
        Table {
            pattern,
            count,
            answered: (0..count.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            good: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            sent_bytes: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            abort: AtomicBool::new(false),
            finished: OnceLock::new(),
        }
    }

    fn done(&self) -> bool {
        self.good.load(Ordering::Acquire) + self.bad.load(Ordering::Acquire) >= self.count
    }

    fn note_error(&self, e: String) {
        let mut errs = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errs.len() < ERRORS_SHOWN {
            errs.push(e);
        }
    }

    /// Checks one reply and marks its sequence number answered.
    fn take_reply(&self, msg: &Message) {
        self.in_flight
            .fetch_sub(msg.data.len() as i64, Ordering::AcqRel);
        let ok = match self.pattern.check(&msg.data, self.count) {
            Ok(seq) => {
                let bit = 1u64 << (seq % 64);
                // seq < count, so the word exists.
                let prev = self.answered[(seq / 64) as usize].fetch_or(bit, Ordering::AcqRel);
                if prev & bit != 0 {
                    self.note_error(format!("reply {seq} came twice"));
                }
                prev & bit == 0
            }
            Err(e) => {
                self.note_error(e.to_string());
                false
            }
        };
        let counter = if ok { &self.good } else { &self.bad };
        counter.fetch_add(1, Ordering::AcqRel);
        if self.done() {
            let _ = self.finished.set(Instant::now());
        }
    }

    fn missing(&self) -> u64 {
        let answered: u64 = self
            .answered
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum();
        self.count - answered
    }
}

/// The cap on bytes in flight: half of what the client endpoints can queue between them
/// (212,992 bytes each by default, `kcm-spec.md` §5.1), at least one message.
pub fn window(threads: usize, max_body: usize) -> i64 {
    let w = threads.max(1) * 104 * 1024;
    w.max(HEADER_LEN + max_body) as i64
}

/// Runs the demo and prints its report. Fails if any reply is missing or wrong.
pub fn run(cfg: &DemoConfig) -> anyhow::Result<()> {
    let max_msg = HEADER_LEN + cfg.max_size;
    let thrift = crate::spec::resolve("thrift").map_err(anyhow::Error::msg)?;
    let server = EchoServer::start(EchoConfig {
        listen: "127.0.0.1:0".to_owned(),
        parser: thrift.clone(),
        workers: cfg.workers,
        max_message_size: Some(max_msg),
    })?;
    println!(
        "kcm demo: {} messages of 8..={} body bytes (seed {}) over {} connections, {} client threads, {} server workers",
        cfg.messages, cfg.max_size, cfg.seed, cfg.connections, cfg.threads, cfg.workers
    );
    println!(
        "echo server listening on {} (parser {thrift})",
        server.local_addr()
    );

    let client = Endpoint::new(Kind::Datagram).context("cannot create the client mux")?;
    let opts = AttachOptions::default().max_message_size(max_msg);
    for _ in 0..cfg.connections {
        let conn = std::net::TcpStream::connect(server.local_addr())
            .context("cannot connect to the echo server")?;
        conn.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        client
            .attach_with(&conn, thrift.parser.clone(), opts)
            .context("cannot attach a client connection")?;
    }
    let mut eps = vec![client];
    for _ in 1..cfg.threads {
        eps.push(
            eps[0]
                .clone_endpoint()
                .context("cannot add a client endpoint")?,
        );
    }

    let table = Table::new(Pattern::new(cfg.seed, cfg.max_size), cfg.messages);
    let window = window(cfg.threads, cfg.max_size);
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = eps
            .iter()
            .enumerate()
            .map(|(t, ep)| {
                let table = &table;
                s.spawn(move || client_thread(ep, table, t as u64, cfg.threads as u64, window))
            })
            .collect();
        watch(&table);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let elapsed = table
        .finished
        .get()
        .copied()
        .unwrap_or_else(Instant::now)
        .duration_since(start);

    // Both muxes' statistics at the same moment, connections still attached: the server
    // goes first so that its drop counts show failures, not the client's orderly close.
    let client_stats = eps[0].proc_kcm_stats();
    let report = server.shutdown();
    drop(eps);
    print_report(&table, elapsed, &client_stats, &report);

    for r in results {
        r?;
    }
    let (missing, bad) = (table.missing(), table.bad.load(Ordering::Acquire));
    if missing > 0 || bad > 0 {
        for e in table
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            eprintln!("kcm demo: {e}");
        }
        bail!(
            "{missing} of {} replies missing, {bad} wrong or repeated",
            table.count
        );
    }
    Ok(())
}

/// Waits until every reply is in, or until replies stop coming.
fn watch(table: &Table) {
    let mut last = (0, Instant::now());
    while !table.done() && !table.abort.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(20));
        let seen = table.good.load(Ordering::Acquire) + table.bad.load(Ordering::Acquire);
        if seen != last.0 {
            last = (seen, Instant::now());
        } else if last.1.elapsed() > STALL_LIMIT {
            table.note_error(format!("no reply for {STALL_LIMIT:?}; giving up"));
            table.abort.store(true, Ordering::Release);
        }
    }
}

/// One client thread: sends messages `first, first + step, …` (connected mode) within the
/// window, and checks whatever replies reach its endpoint, until every reply is in.
fn client_thread(
    ep: &Endpoint,
    table: &Table,
    first: u64,
    step: u64,
    window: i64,
) -> anyhow::Result<()> {
    ep.set_read_timeout(Some(RECV_WAIT));
    let mut next = first;
    let mut batch = Vec::with_capacity(64);
    while !table.done() && !table.abort.load(Ordering::Acquire) {
        // Send a burst, non-blocking: a full send buffer means it is time to receive.
        ep.set_nonblocking(true);
        let mut burst = 0;
        while next < table.count
            && burst < SEND_BURST
            && table.in_flight.load(Ordering::Acquire) < window
        {
            let msg = table.pattern.message(next);
            let len = msg.len();
            table.in_flight.fetch_add(len as i64, Ordering::AcqRel);
            match ep.send(Bytes::from(msg)) {
                Ok(_) => {
                    table.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
                    next += step;
                    burst += 1;
                }
                Err(e) => {
                    table.in_flight.fetch_sub(len as i64, Ordering::AcqRel);
                    if e.kind() == ErrorKind::WouldBlock {
                        break;
                    }
                    table.abort.store(true, Ordering::Release);
                    return Err(e).with_context(|| format!("send of message {next} failed"));
                }
            }
        }
        // Receive: just look if there is more to send right away, else wait a little.
        let more = next < table.count && table.in_flight.load(Ordering::Acquire) < window;
        ep.set_nonblocking(more);
        batch.clear();
        match ep.recv_batch(&mut batch, 64) {
            Ok(_) => batch.iter().for_each(|m| table.take_reply(m)),
            Err(e) if nothing_received(&e) => {}
            Err(e) => {
                table.abort.store(true, Ordering::Release);
                return Err(e).context("receive failed");
            }
        }
    }
    Ok(())
}

fn print_report(
    table: &Table,
    elapsed: Duration,
    client_stats: &str,
    server: &crate::echo::EchoReport,
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let good = table.good.load(Ordering::Acquire);
    let bytes = table.sent_bytes.load(Ordering::Relaxed);
    println!(
        "replies verified: {good} of {} ({} wrong or repeated)",
        table.count,
        table.bad.load(Ordering::Acquire)
    );
    println!(
        "elapsed {:.3} s: {:.0} messages/s, {:.1} MB/s each way ({} bytes sent)",
        secs,
        good as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes
    );
    println!("client mux:\n{}", client_stats.trim_end());
    println!("server mux:\n{}", server.mux_stats.trim_end());
    println!(
        "server: echoed {} messages, {}",
        server.echoed, server.drops
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fits_the_client_queues_but_holds_a_message() {
        assert_eq!(window(2, 4096), 2 * 104 * 1024);
        assert!(window(1, 4096) < 212_992);
        assert_eq!(window(1, 1 << 20), (4 + (1 << 20)) as i64);
    }

    #[test]
    fn table_counts_missing_wrong_and_repeated_replies() {
        let p = Pattern::new(4, 100);
        let table = Table::new(p, 130);
        let reply = |seq: u64| Message {
            data: Bytes::from(p.message(seq)),
            conn: kcm::ConnectionId { index: 0, gen: 0 },
        };
        for seq in 0..128 {
            table.take_reply(&reply(seq));
        }
        assert_eq!(
            (table.good.load(Ordering::Relaxed), table.missing()),
            (128, 2)
        );
        assert!(!table.done() && table.finished.get().is_none());
        table.take_reply(&reply(5));
        let mut wrong = p.message(129);
        let last = wrong.len() - 1;
        wrong[last] ^= 1;
        table.take_reply(&Message {
            data: Bytes::from(wrong),
            conn: kcm::ConnectionId { index: 0, gen: 0 },
        });
        // 130 replies came, so the run is over, but two of them were bad and 128, 129 missing.
        assert!(table.done() && table.finished.get().is_some());
        assert_eq!((table.bad.load(Ordering::Relaxed), table.missing()), (2, 2));
        let errors = table.errors.lock().unwrap();
        assert_eq!(errors[0], "reply 5 came twice");
        assert!(
            errors[1].starts_with("reply 129: body differs"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn small_demo_verifies_every_reply() {
        let cfg = DemoConfig {
            connections: 2,
            threads: 2,
            messages: 500,
            max_size: 300,
            seed: 9,
            workers: 2,
        };
        run(&cfg).unwrap();
    }
}
