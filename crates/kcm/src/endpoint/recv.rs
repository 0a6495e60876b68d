//! The receiving half of [`Endpoint`]: `recvmsg`/`recvmmsg`, and the wait in which a receiving
//! thread reads the connections itself.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kcm_core::mux::Event;

use super::batch::BatchSink;
use super::{from_nanos, Endpoint, Message, RecvBatch, RecvMeta};
use crate::shared::Events;
use crate::shared::Shared;
use crate::sys;

/// How often at most a busy endpoint thread looks for arrivals left to it
/// ([`Endpoint::poll_arrivals`]): one non-blocking `epoll_wait` per period while the engine
/// defers, a small price beside the wait it saves a quiet connection's message.
const ARRIVALS_POLL: Duration = Duration::from_micros(100);

impl Endpoint {
    // ---- receiving ----

    /// Receives one whole message, blocking until one arrives (or the read timeout passes, or
    /// the endpoint is non-blocking: `WouldBlock`). While it waits, the calling thread reads and
    /// parses the mux's connections itself, so a message usually reaches it without any hand-off
    /// between threads.
    pub fn recv(&self) -> io::Result<Message> {
        let r = self.recv_inner(usize::MAX, false)?;
        Ok(Message {
            data: r.data,
            conn: r.conn,
        })
    }

    /// Returns the next message without taking it (`MSG_PEEK`: no counters change).
    pub fn peek(&self) -> io::Result<Message> {
        let r = self.recv_inner(usize::MAX, true)?;
        Ok(Message {
            data: r.data,
            conn: r.conn,
        })
    }

    /// Receives into a buffer with the kernel's semantics for short buffers: a datagram
    /// endpoint returns the prefix and drops the rest (`trunc`); a seqpacket endpoint returns the
    /// prefix and keeps the rest for the next call (`eor` false until the last piece; the
    /// original KCM semantics, `design.md` §2 decision 2).
    pub fn recv_into(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let r = self.recv_inner(buf.len(), false)?;
        buf[..r.data.len()].copy_from_slice(&r.data);
        Ok(RecvMeta {
            len: r.data.len(),
            conn: r.conn,
            eor: r.eor,
            trunc: r.trunc,
        })
    }

    /// Receives up to `max` whole messages into `out` (`recvmmsg` with `MSG_WAITFORONE`):
    /// waits for the first as [`Endpoint::recv`] does, then takes whatever else is already
    /// queued. Returns how many were added.
    ///
    /// [`Endpoint::recv_runs`] takes the same messages without a `Bytes` for each.
    pub fn recv_batch(&self, out: &mut Vec<Message>, max: usize) -> io::Result<usize> {
        self.recv_batch_into(out, max)
    }

    /// Receives up to `max` whole messages into `batch`, as [`Endpoint::recv_batch`] does,
    /// but keeps them as the runs they arrived in ([`RecvBatch`]): a read pass of many small
    /// messages is taken as one buffer and a list of lengths, and reading them costs no
    /// reference count or allocation per message. The batch is added to, not cleared.
    /// Returns how many messages were added.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::net::{TcpListener, TcpStream};
    /// use kcm::{Endpoint, Kind, RecvBatch};
    ///
    /// let l = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(l.local_addr()?)?;
    /// let ep = Endpoint::new(Kind::Datagram)?;
    /// ep.attach(&l.accept()?.0, kcm::presets::by_name("thrift").unwrap())?;
    /// client.write_all(b"\0\0\0\x03one\0\0\0\x03two")?;
    /// let mut batch = RecvBatch::new();
    /// while batch.len() < 2 {
    ///     ep.recv_runs(&mut batch, 64)?;
    /// }
    /// let got: Vec<&[u8]> = batch.iter().map(|m| m.data).collect();
    /// assert_eq!(got, [&b"\0\0\0\x03one"[..], b"\0\0\0\x03two"]);
    /// batch.clear();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_runs(&self, batch: &mut RecvBatch, max: usize) -> io::Result<usize> {
        self.recv_batch_into(batch, max)
    }

    fn recv_batch_into(&self, out: &mut impl BatchSink, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut n = 0;
        let mut waited = false;
        let mut events = Events::new();
        {
            // Whatever is queued already is taken under one lock; only an empty queue goes
            // the blocking way for its first message.
            let mut st = self.shared.lock();
            if st.core.rx_queued(self.id).is_none_or(|(msgs, _)| msgs == 0) {
                drop(st);
                out.push_one(self.recv()?);
                n = 1;
                waited = true;
                st = self.shared.lock();
            }
            n += out.take(&mut st.core, self.id, max - n);
            // A non-blocking caller waits for the endpoint's descriptor, not in its epoll: it
            // reads no connection while it waits, so it never counts as busy (`recv_inner`).
            self.shared.set_busy(&self.io, !self.is_nonblocking());
            Shared::drain(&mut st.core, &mut events);
        }
        self.shared.dispatch(events, Some(self.id));
        self.shared.sync_pollfd(self.id, &self.io);
        // (`recv` looked for arrivals already, on the way out of its wait.)
        if !waited {
            self.poll_arrivals();
        }
        Ok(n)
    }

    /// While the engine leaves arrivals to busy endpoint threads ([`Shared::rx_deferred`]), a
    /// thread that takes messages reads the connections that became readable since it last
    /// looked (here or in a blocking wait), at most once per [`ARRIVALS_POLL`]: their messages
    /// join the queues (or wait their turn on their connection) now, not when every busy
    /// thread has run dry or the engine's deadline passes. (Without it, under W2's skew a
    /// quiet connection's request waited ≈ 1 ms to be read while the busy connection kept
    /// both workers supplied; tests/receive.rs,
    /// a_busy_thread_reads_a_quiet_connection_without_draining_the_busy_one_first.)
    fn poll_arrivals(&self) {
        if !self.shared.rx_deferred.load(Ordering::Relaxed) {
            return;
        }
        let now = self.shared.since_epoch();
        let last = self.io.last_poll.load(Ordering::Relaxed);
        if now.saturating_sub(last) < ARRIVALS_POLL.as_nanos() as u64 {
            return;
        }
        self.io.last_poll.store(now, Ordering::Relaxed);
        let mut ready = Vec::new();
        if self
            .io
            .epoll
            .wait(&mut ready, Some(Duration::ZERO))
            .is_err()
        {
            return;
        }
        let mut events = Events::new();
        for &(key, _) in &ready {
            // The waker (level-triggered) is left as it is: the next blocking wait sees it and
            // looks at the queue, and a caller polling the internal epoll as the endpoint's
            // descriptor (the fallback of `as_fd`) still finds it readable.
            if let Some(conn) = self.shared.conn_by_key(key) {
                // Every endpoint thread is busy (else the bytes would have woken one): this
                // one, back already, may keep what it reads, as in a blocking wait.
                self.shared.drive_rx(&conn, Some(self.id), &mut events);
            }
        }
        self.shared.dispatch(events, Some(self.id));
    }

    /// A blocking receive leaves without a message (an error, its timeout): the thread is
    /// neither waiting nor busy any more.
    fn leave_empty_handed(&self) {
        self.shared.set_sleeping(&self.io, false);
        self.shared.set_busy(&self.io, false);
    }

    fn recv_inner(&self, max: usize, peek: bool) -> io::Result<kcm_core::mux::RecvRead> {
        let nonblocking = self.is_nonblocking();
        let deadline =
            from_nanos(self.read_timeout.load(Ordering::Relaxed)).map(|d| Instant::now() + d);
        let mut ready = Vec::new();
        let mut polled_once = false;
        loop {
            let mut events = Events::new();
            {
                let mut st = self.shared.lock();
                let r = st.core.recv(self.id, max, peek);
                Shared::drain(&mut st.core, &mut events);
                // Under the lock that saw the queue empty (see `EpIo::sleeping`).
                self.shared
                    .set_sleeping(&self.io, r.is_none() && !nonblocking);
                // A thread in a blocking receive counts as busy until it leaves without a
                // message: it will look at its epoll, whose ready list holds every arrival the
                // engine is woken for while the thread is not yet (or no longer) waiting in
                // it, so the engine need not read and hand over those bytes. A non-blocking
                // receive never counts, message or not: its caller waits for the endpoint's
                // descriptor in its own loop, which only the engine's reads make readable, so
                // bytes left to it would wait out the engine's window (20 ms while no endpoint
                // is free).
                self.shared.set_busy(&self.io, !nonblocking);
                if let Some(r) = r {
                    drop(st);
                    self.shared.dispatch(events, Some(self.id));
                    self.shared.sync_pollfd(self.id, &self.io);
                    if !peek {
                        self.poll_arrivals();
                    }
                    return Ok(r);
                }
                if let Some(e) = st.core.take_endpoint_error(self.id) {
                    self.leave_empty_handed();
                    return Err(sys::os_err(e));
                }
            }
            self.shared
                .dispatch(std::mem::take(&mut events), Some(self.id));
            let timeout = if nonblocking {
                if polled_once {
                    self.shared.sync_pollfd(self.id, &self.io);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Some(Duration::ZERO)
            } else {
                match deadline {
                    None => None,
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(w) if !w.is_zero() => Some(w),
                        // SO_RCVTIMEO expiry is EAGAIN, as for any socket.
                        _ => {
                            self.leave_empty_handed();
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                    },
                }
            };
            polled_once = true;
            let waited = self.io.epoll.wait(&mut ready, timeout);
            self.shared.set_sleeping(&self.io, false);
            // What is ready now is in `ready`: no need to look again for a while.
            self.io
                .last_poll
                .store(self.shared.since_epoch(), Ordering::Relaxed);
            if let Err(e) = waited {
                self.leave_empty_handed();
                return Err(e);
            }
            // This thread keeps the first read pass that brings it messages. The passes of the
            // other ready connections go by the eligible FIFO while another endpoint's thread
            // is idle, so that it starts on them at once instead of waiting for this one to
            // work through everything; while every other thread is busy, this one keeps them
            // too (handing them to a busy thread would only make them wait behind its work).
            let mut have_pass = false;
            for &(key, _) in &ready {
                if key == crate::conn::WAKER_KEY {
                    self.io.waker.reset();
                } else if let Some(conn) = self.shared.conn_by_key(key) {
                    let others_idle = self.shared.sleeping_eps.load(Ordering::SeqCst) > 0;
                    let prefer = (!have_pass || !others_idle).then_some(self.id);
                    self.shared.drive_rx(&conn, prefer, &mut events);
                    have_pass = have_pass || events.contains(&Event::Readable(self.id));
                }
            }
            self.shared.dispatch(events, Some(self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::{Endpoint, Kind};

    fn busy_eps(ep: &Endpoint) -> usize {
        ep.shared.busy_eps.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until `f` holds.
    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The engine leaves arrivals to busy endpoint threads: a thread in a blocking receive
    /// counts as one (it will look at its epoll, whose ready list holds them) until it leaves
    /// without a message, and a non-blocking receive never does.
    #[test]
    fn a_blocking_receive_counts_as_busy_until_it_leaves_empty_handed() {
        let ep = Arc::new(Endpoint::new(Kind::Datagram).unwrap());
        ep.set_nonblocking(true);
        assert!(ep.recv().is_err());
        assert_eq!(busy_eps(&ep), 0, "a non-blocking receive is not busy");
        ep.set_nonblocking(false);
        ep.set_read_timeout(Some(Duration::from_millis(300)));
        let waiter = {
            let ep = ep.clone();
            std::thread::spawn(move || ep.recv().map(|_| ()))
        };
        until("the receiving thread waits", || {
            ep.io.sleeping.load(Ordering::SeqCst)
        });
        assert_eq!(busy_eps(&ep), 1, "a thread waiting in recv");
        let r = waiter.join().unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the read timeout"
        );
        assert_eq!(busy_eps(&ep), 0, "left without a message");
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn queued(eps: &[&Endpoint]) -> usize {
        eps.iter().map(|e| e.queued().0).sum()
    }

    /// Two endpoints whose threads each took a message and keep it (both busy, neither
    /// waiting), with the engine's window while all are busy made a minute long, so that only
    /// a wake-up can make it read sooner.
    fn both_busy() -> (Endpoint, Endpoint, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let opts = crate::MuxOptions::default().busy_read_defer(Duration::from_micros(200));
        let a = Endpoint::with_options(Kind::Datagram, opts).unwrap();
        let b = a.clone_endpoint().unwrap();
        a.attach(&server, crate::presets::by_name("thrift").unwrap())
            .unwrap();
        a.shared
            .all_busy_defer
            .store(60_000_000_000, Ordering::Relaxed);
        client.write_all(&frame(b"1")).unwrap();
        let _one = a.recv().unwrap();
        client.write_all(&frame(b"2")).unwrap();
        let _two = b.recv().unwrap();
        assert_eq!(busy_eps(&a), 2);
        until("the engine sees every thread busy", || {
            a.shared.all_busy.load(Ordering::SeqCst)
        });
        client.write_all(&frame(b"3")).unwrap();
        // Well past `busy_read_defer`: a slow machine can only make the engine read later,
        // so this holds unless it reads too soon.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(queued(&[&a, &b]), 0, "read while every thread was busy");
        (a, b, client)
    }

    /// While every endpoint's thread is busy the engine leaves arrivals to them for the long
    /// window (`ALL_BUSY_DEFER`); a new endpoint, free to take them, wakes it, and it reads
    /// them once `busy_read_defer` has passed. (The wake-up is checked by its count: the
    /// engine's buffer sweep would wake it within 200 ms anyway, so the read alone cannot
    /// tell.)
    #[test]
    fn a_new_endpoint_wakes_the_engine_to_read_what_busy_threads_left() {
        let (a, b, _client) = both_busy();
        let woken = a.shared.busy_wakes.load(Ordering::Relaxed);
        let c = a.clone_endpoint().unwrap();
        assert!(
            a.shared.busy_wakes.load(Ordering::Relaxed) > woken,
            "not woken"
        );
        until("read for the free endpoint", || queued(&[&a, &b, &c]) == 1);
        assert!(!a.shared.all_busy.load(Ordering::SeqCst));
    }

    /// The same when a busy thread's endpoint turns non-blocking: its caller now waits for
    /// the descriptor, which only the engine's reads make readable.
    #[test]
    fn an_endpoint_turning_non_blocking_wakes_the_engine() {
        let (a, b, _client) = both_busy();
        let woken = a.shared.busy_wakes.load(Ordering::Relaxed);
        b.set_nonblocking(true);
        assert!(
            a.shared.busy_wakes.load(Ordering::Relaxed) > woken,
            "not woken"
        );
        assert_eq!(busy_eps(&a), 1);
        until("read once an endpoint is free", || queued(&[&a, &b]) == 1);
    }

    /// A non-blocking batch receive that takes messages does not count as busy (its caller
    /// waits for the descriptor, not in the epoll).
    #[test]
    fn a_non_blocking_batch_receive_is_not_busy() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let a = Endpoint::new(Kind::Datagram).unwrap();
        a.attach(&server, crate::presets::by_name("thrift").unwrap())
            .unwrap();
        client.write_all(&frame(b"1")).unwrap();
        a.set_nonblocking(true);
        let mut got = Vec::new();
        until("a message", || {
            a.recv_batch(&mut got, 4).is_ok_and(|n| n == 1)
        });
        assert_eq!(busy_eps(&a), 0);
    }
}
