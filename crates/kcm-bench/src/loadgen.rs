//! The load generator: its own threads, each running one epoll loop over its share of the
//! client connections.
//!
//! Closed loop: a connection keeps up to `depth` requests in flight (W1, W3, W4), or the
//! thread keeps a fixed number in flight across its connections and picks the connection of each
//! new request at random with a skew (W2: one connection carries 90 %). Every reply is checked
//! against the request it names (length, sequence number, content, see [`crate::wire`]) before it
//! counts, and its latency goes into an HDR histogram (ns). One-way: the thread only writes
//! whole messages as fast as the servers take them; the server side counts what it delivered.
//!
//! Each thread measures its own CPU time over the measured window, so the report can show
//! whether the load generator, which shares the machine's cores with the servers, was the limit.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::framer::Framer;
use crate::poller::{Outbox, Poller, Ready};
use crate::wire::{self, Op, Request};
use crate::work;

/// How one load-generator run drives its connections.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// What the server does with each request; [`Op::None`] makes a one-way stream.
    pub op: Op,
    /// Request size in bytes, header included.
    pub req_size: usize,
    /// Most requests in flight on one connection.
    pub depth: usize,
    /// Skewed mode (W2): this many requests in flight across the thread's connections, the
    /// first connection getting `hot_share` of them and the rest sharing the remainder equally.
    pub window: Option<(usize, f64)>,
    /// Mean of the exponential CPU work asked of the server per request, in ns (0: none).
    pub work_mean_ns: f64,
    /// Start of the measured window.
    pub measure_from: Instant,
    /// End of the measured window (and of the run).
    pub measure_until: Instant,
}

/// What one load-generator thread (or all of them, merged) saw in the measured window.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Replies received and verified (closed loop), or messages written (one-way).
    pub requests: u64,
    /// Replies that passed verification (equals `requests` when the run is valid).
    pub verified: u64,
    /// Bytes written in the window (one-way).
    pub bytes: u64,
    /// Latency of every counted request, in ns.
    pub hist: Histogram<u64>,
    /// CPU time the generator's threads used in the window.
    pub cpu: Duration,
}

/// A histogram for latencies in ns from 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000_000, 3) {
        Ok(h) => h,
        // Unreachable: the bounds are constants within the crate's limits.
        Err(e) => unreachable!("histogram bounds are valid: {e}"),
    }
}

impl LoadResult {
    fn empty() -> LoadResult {
        LoadResult {
            requests: 0,
            verified: 0,
            bytes: 0,
            hist: new_histogram(),
            cpu: Duration::ZERO,
        }
    }

    /// Adds another thread's result.
    pub fn merge(&mut self, other: &LoadResult) {
        self.requests += other.requests;
        self.verified += other.verified;
        self.bytes += other.bytes;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.cpu += other.cpu;
    }
}

/// Sequence numbers carry their in-flight slot in the low 16 bits, so a reply finds its
/// request without a map even when replies come back out of order (kcm and the kernel may
/// answer requests of one connection from different workers).
const SLOT_BITS: u32 = 16;
const MAX_DEPTH: usize = 1 << SLOT_BITS;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u64,
    sent_ns: u64,
    busy: bool,
}

struct Conn {
    stream: TcpStream,
    framer: Framer,
    out: Outbox,
    template: Vec<u8>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    counter: u64,
}

impl Conn {
    fn new(stream: TcpStream, index: u16, spec: &LoadSpec, slots: usize) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        let mut template = Vec::with_capacity(spec.req_size);
        Request {
            conn: index,
            op: spec.op,
            seq: 0,
            work_ns: 0,
        }
        .write(spec.req_size, &mut template);
        Ok(Conn {
            stream,
            framer: Framer::new(64 * 1024, 1 << 20),
            out: Outbox::with_capacity(64 * 1024),
            template,
            slots: vec![Slot::default(); slots],
            free: (0..slots as u16).rev().collect(),
            counter: 0,
        })
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Queues one request; false when every slot is busy.
    fn push(&mut self, now_ns: u64, work_ns: u32) -> bool {
        let Some(slot) = self.free.pop() else {
            return false;
        };
        self.counter += 1;
        let seq = (self.counter << SLOT_BITS) | u64::from(slot);
        self.slots[usize::from(slot)] = Slot {
            seq,
            sent_ns: now_ns,
            busy: true,
        };
        Request::patch_seq(&mut self.template, seq);
        Request::patch_work(&mut self.template, work_ns);
        self.out.buf.extend_from_slice(&self.template);
        true
    }
}

/// Runs one load-generator thread's share of a run on the calling thread.
pub fn run_thread(
    streams: Vec<(u16, TcpStream)>,
    spec: &LoadSpec,
    seed: u64,
) -> anyhow::Result<LoadResult> {
    if spec.op == Op::None {
        return one_way(streams, spec);
    }
    let slots = spec
        .window
        .map_or(spec.depth, |(w, _)| w)
        .clamp(1, MAX_DEPTH);
    let mut conns = streams
        .into_iter()
        .map(|(i, s)| Conn::new(s, i, spec, slots))
        .collect::<io::Result<Vec<_>>>()
        .context("load generator: socket setup")?;
    let poller = Poller::new()?;
    for (k, c) in conns.iter().enumerate() {
        poller.add(&c.stream, k as u64, true, false)?;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Instant::now();
    let mut res = LoadResult::empty();
    let mut cpu_start = None;
    let mut ready: Vec<Ready> = Vec::new();
    let mut touched: Vec<usize> = (0..conns.len()).collect();
    let mut total_in_flight = 0usize;
    loop {
        let now = Instant::now();
        let measuring = now >= spec.measure_from;
        if measuring && cpu_start.is_none() {
            cpu_start = Some(work::thread_cpu_time());
        }
        if now >= spec.measure_until {
            break;
        }
        // Refill: each touched connection back to its depth, or the skewed window.
        let now_ns = now.duration_since(base).as_nanos() as u64;
        let draw_work = |rng: &mut StdRng| {
            if spec.work_mean_ns > 0.0 {
                work::exponential_ns(rng, spec.work_mean_ns)
            } else {
                0
            }
        };
        match spec.window {
            None => {
                for &k in &touched {
                    let c = &mut conns[k];
                    while c.in_flight() < spec.depth.min(slots) {
                        let w = draw_work(&mut rng);
                        c.push(now_ns, w);
                        total_in_flight += 1;
                    }
                }
            }
            Some((window, hot)) => {
                while total_in_flight < window {
                    let k = if conns.len() == 1 || rng.gen::<f64>() < hot {
                        0
                    } else {
                        rng.gen_range(1..conns.len())
                    };
                    let w = draw_work(&mut rng);
                    if conns[k].push(now_ns, w) {
                        total_in_flight += 1;
                        touched.push(k);
                    } else {
                        break;
                    }
                }
            }
        }
        for &k in &touched {
            let c = &mut conns[k];
            c.out
                .flush(&mut c.stream)
                .context("load generator: write")?;
            c.out.watch(&poller, &c.stream, k as u64)?;
        }
        touched.clear();
        let wait = spec
            .measure_until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        poller.wait(&mut ready, wait)?;
        let now_ns = base.elapsed().as_nanos() as u64;
        let measuring = Instant::now() >= spec.measure_from;
        for r in &ready {
            let k = r.key as usize;
            let Some(c) = conns.get_mut(k) else { continue };
            touched.push(k);
            if !r.read {
                continue;
            }
            match c.framer.read_from(&mut c.stream) {
                Ok(0) => bail!("server closed connection {k}"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e).context(format!("load generator: read on connection {k}")),
            }
            while let Some(reply) = c
                .framer
                .next_frame()
                .context("load generator: reply framing")?
            {
                let seq = wire::reply_seq(reply, spec.op).context("bad reply")?;
                let slot = (seq & (MAX_DEPTH as u64 - 1)) as usize;
                let s = match c.slots.get(slot) {
                    Some(s) if s.busy && s.seq == seq => *s,
                    _ => return Err(wire::ReplyError::UnknownSeq(seq)).context("bad reply"),
                };
                wire::check_reply(reply, &c.template, spec.op, seq).context("bad reply")?;
                c.slots[slot].busy = false;
                c.free.push(slot as u16);
                total_in_flight -= 1;
                if measuring {
                    res.requests += 1;
                    res.verified += 1;
                    res.hist
                        .saturating_record(now_ns.saturating_sub(s.sent_ns).max(1));
                }
            }
        }
    }
    res.cpu = cpu_start.map_or(Duration::ZERO, |c| {
        work::thread_cpu_time().saturating_sub(c)
    });
    Ok(res)
}

/// One-way: write a block of whole messages over and over on every connection.
fn one_way(streams: Vec<(u16, TcpStream)>, spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let per_block = (64 * 1024 / spec.req_size.max(1)).max(1);
    let poller = Poller::new()?;
    let mut conns = Vec::new();
    for (k, (i, s)) in streams.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let mut block = Vec::with_capacity(per_block * spec.req_size);
        for _ in 0..per_block {
            Request {
                conn: i,
                op: Op::None,
                seq: 0,
                work_ns: 0,
            }
            .write(spec.req_size, &mut block);
        }
        poller.add(&s, k as u64, false, true)?;
        conns.push((s, block, 0usize));
    }
    let mut res = LoadResult::empty();
    let mut cpu_start = None;
    let mut ready = Vec::new();
    let mut sink = [0u8; 256];
    loop {
        let now = Instant::now();
        if now >= spec.measure_until {
            break;
        }
        let measuring = now >= spec.measure_from;
        if measuring && cpu_start.is_none() {
            cpu_start = Some(work::thread_cpu_time());
        }
        poller.wait(
            &mut ready,
            spec.measure_until
                .saturating_duration_since(now)
                .min(Duration::from_millis(20)),
        )?;
        for r in &ready {
            let Some((s, block, off)) = conns.get_mut(r.key as usize) else {
                continue;
            };
            if r.read {
                // A one-way server never answers: bytes or end of stream here mean it broke.
                match s.read(&mut sink) {
                    Ok(0) => bail!("server closed a one-way connection"),
                    Ok(_) => bail!("server replied on a one-way connection"),
                    Err(_) => {}
                }
            }
            match s.write(&block[*off..]) {
                Ok(n) => {
                    *off = (*off + n) % block.len();
                    if measuring {
                        res.bytes += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("load generator: one-way write"),
            }
        }
    }
    res.requests = res.bytes / spec.req_size.max(1) as u64;
    res.cpu = cpu_start.map_or(Duration::ZERO, |c| {
        work::thread_cpu_time().saturating_sub(c)
    });
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server thread that answers every request with `reply(request)`.
    fn fake_server(
        reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
    ) -> (TcpStream, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let t = std::thread::spawn(move || {
            let mut f = Framer::new(4096, 1 << 20);
            while let Ok(n) = f.read_from(&mut s) {
                if n == 0 {
                    return;
                }
                while let Ok(Some(m)) = f.next_frame() {
                    if s.write_all(&reply(m)).is_err() {
                        return;
                    }
                }
            }
        });
        (c, t)
    }

    fn spec(op: Op) -> LoadSpec {
        let now = Instant::now();
        LoadSpec {
            op,
            req_size: 64,
            depth: 4,
            window: None,
            work_mean_ns: 0.0,
            measure_from: now,
            measure_until: now + Duration::from_millis(100),
        }
    }

    fn run(op: Op, reply: fn(&[u8]) -> Vec<u8>) -> anyhow::Result<LoadResult> {
        let (c, t) = fake_server(reply);
        let r = run_thread(vec![(0, c)], &spec(op), 1);
        t.join().unwrap();
        r
    }

    #[test]
    fn a_correct_server_posts_verified_requests() {
        let r = run(Op::Echo, |m| m.to_vec()).unwrap();
        assert!(r.requests > 0);
        assert_eq!(r.verified, r.requests);
        assert_eq!(r.hist.len(), r.requests);
        let r = run(Op::Ack, |m| {
            wire::ack(Request::parse(m).unwrap().seq, m.len()).to_vec()
        })
        .unwrap();
        assert!(r.requests > 0);
    }

    #[test]
    fn a_broken_server_posts_nothing() {
        // Wrong content.
        assert!(run(Op::Echo, |m| {
            let mut v = m.to_vec();
            v[30] ^= 0xff;
            v
        })
        .is_err());
        // A reply for a request never sent.
        assert!(run(Op::Ack, |m| wire::ack(
            Request::parse(m).unwrap().seq + 1,
            m.len()
        )
        .to_vec())
        .is_err());
        // The right sequence but the wrong request length.
        assert!(run(Op::Ack, |m| wire::ack(
            Request::parse(m).unwrap().seq,
            m.len() - 1
        )
        .to_vec())
        .is_err());
        // Two replies for one request.
        assert!(run(Op::Echo, |m| [m, m].concat()).is_err());
    }

    #[test]
    fn skewed_window_puts_the_hot_share_on_connection_zero() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let counts: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
        let mut conns = Vec::new();
        let mut threads = Vec::new();
        for i in 0..8u16 {
            let counts = counts.clone();
            let (c, t) = fake_server(move |m| {
                counts[usize::from(i)].fetch_add(1, Ordering::Relaxed);
                m.to_vec()
            });
            conns.push((i, c));
            threads.push(t);
        }
        let mut s = spec(Op::Echo);
        s.window = Some((32, 0.9));
        let r = run_thread(conns, &s, 7).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let n: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = n.iter().sum();
        assert!(r.requests > 100 && total >= r.requests, "{n:?}");
        let hot = n[0] as f64 / total as f64;
        assert!((0.85..0.95).contains(&hot), "hot share {hot}: {n:?}");
        assert!(n[1..].iter().all(|&x| x > 0), "{n:?}");
    }
}
