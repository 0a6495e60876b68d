//! Options of a mux and of an attach.

use std::time::Duration;

/// Options fixed when a mux is created ([`Endpoint::with_options`](crate::Endpoint::with_options)).
///
/// ```
/// use kcm::{Endpoint, Kind, MuxOptions};
/// let ep = Endpoint::with_options(Kind::Datagram, MuxOptions::default().drop_failed(true))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MuxOptions {
    /// Unattach (and close kcm's descriptor of) a connection once it has failed — a parser
    /// error, a read error, end of stream, a transmit abort — and its transmit side is idle.
    /// The kernel never does this (the application must watch `SO_ERROR` and unattach); servers
    /// usually want it. Default: `false`, as the kernel.
    pub drop_failed: bool,
    /// Size of the read buffer each connection reads into (one `recv` per read pass). Default
    /// 64 KiB.
    pub read_size: usize,
    /// Let the thread that drives a connection take the messages of that read pass for its
    /// own endpoint when it is receive-eligible (no hand-off to another thread). Default `true`;
    /// `false` steers strictly by the eligible FIFO, as the kernel.
    pub prefer_local: bool,
    /// How long new bytes on a connection are left to busy endpoint threads before the engine
    /// thread reads them itself, when no thread is waiting in its epoll to be woken for them.
    /// A thread is busy when it took messages with a blocking receive and will be back, or is
    /// inside one; a non-blocking endpoint's caller never counts. A busy thread reads the
    /// bytes when it comes back for its next message (it looks at most every 100 µs), with no
    /// hand-off; the engine's read is the backstop for threads that stay away longer, and
    /// comes one to two windows after the bytes (the engine notices arrivals at the end of a
    /// window). While every endpoint's thread is busy, nobody could take what the engine read
    /// sooner, and it waits 20 ms instead, or until one is free. Shorter: such threads delay
    /// new messages less; longer: fewer engine wake-ups.
    ///
    /// Default 300 µs. Values below a millisecond are kept exactly where the kernel has
    /// `epoll_pwait2` (Linux 5.11 and later; not tried under a seccomp filter) and rounded up
    /// to whole milliseconds elsewhere
    /// ([`sub_millisecond_timeouts`](crate::sub_millisecond_timeouts) tells which). Measured
    /// against 1 ms (`docs/bench.md`): a request-reply load (the bench's W1) gets a p99
    /// latency about a quarter lower (355–373 against 436–618 µs) and a mean about a tenth
    /// lower, so about that much more QPS with 8 requests in flight; a pipelined one (W3) a
    /// p99 about 10 % lower at the same throughput; a load of uneven CPU-heavy requests (W2)
    /// loses about 1.5 % of its QPS.
    pub busy_read_defer: Duration,
    /// Serve the load with as few endpoint threads as keep up with it. While one endpoint's
    /// thread is at work and keeping up (it came back for messages within the last 10 ms),
    /// another that runs out of messages waits only for messages steered to it (standby), not
    /// for new bytes on the connections, and the one at work keeps every read pass it reads
    /// for its own endpoint while that has room (with [`MuxOptions::prefer_local`]). A
    /// standby thread is brought in when the one at work falls behind — it ran (not merely
    /// waited for a core) for most of 200 µs without its queue emptying or between two
    /// receives, and the machine has an idle core (`/proc/loadavg`'s running threads, which in
    /// a container with a CPU limit usually count the whole host's) — after which none goes to
    /// standby for 10 ms; when messages are steered to it (the working endpoint is full); and
    /// when bytes stay unread for 1–2 ms (the engine's window, or `busy_read_defer` if longer:
    /// it reads them for the standby thread). An endpoint whose
    /// `SO_RCVBUF` cannot hold a read pass ([`MuxOptions::read_size`]; KCM's one-byte idiom
    /// for balancing message by message) never waits in standby.
    ///
    /// The kernel spreads instead: a read pass goes to the next eligible endpoint, which
    /// wakes its thread even when the one at work would have taken it a moment later; each
    /// such hand-off costs a wake-up and a thread competing for the cores. Measured on 2
    /// cores shared with the load generator (`docs/bench.md`): the bench's request-reply load
    /// (W1) about 40 % more QPS with a third of the p99, its pipelined load (W3) about 50 %
    /// more messages a second; its CPU-heavy loads unchanged (W2 as the bench runs it, with a
    /// one-byte `SO_RCVBUF`; and with the default one, taking 1 or 16 messages a call, within
    /// a few per cent of spreading). Default `true`; `false` for the kernel's spreading.
    pub concentrate: bool,
}

impl Default for MuxOptions {
    fn default() -> MuxOptions {
        MuxOptions {
            drop_failed: false,
            read_size: 64 * 1024,
            prefer_local: true,
            busy_read_defer: Duration::from_micros(300),
            concentrate: true,
        }
    }
}

impl MuxOptions {
    /// Sets [`MuxOptions::drop_failed`].
    pub fn drop_failed(mut self, on: bool) -> Self {
        self.drop_failed = on;
        self
    }

    /// Sets [`MuxOptions::read_size`] (at least 1 KiB is used).
    pub fn read_size(mut self, bytes: usize) -> Self {
        self.read_size = bytes.max(1024);
        self
    }

    /// Sets [`MuxOptions::prefer_local`].
    pub fn prefer_local(mut self, on: bool) -> Self {
        self.prefer_local = on;
        self
    }

    /// Sets [`MuxOptions::busy_read_defer`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use kcm::{Endpoint, Kind, MuxOptions};
    /// let opts = MuxOptions::default().busy_read_defer(Duration::from_millis(5));
    /// let ep = Endpoint::with_options(Kind::Datagram, opts)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn busy_read_defer(mut self, wait: Duration) -> Self {
        self.busy_read_defer = wait;
        self
    }

    /// Sets [`MuxOptions::concentrate`].
    ///
    /// ```
    /// use kcm::{Endpoint, Kind, MuxOptions};
    /// // Spread read passes over idle endpoints' threads, as the kernel does.
    /// let ep = Endpoint::with_options(Kind::Datagram, MuxOptions::default().concentrate(false))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn concentrate(mut self, on: bool) -> Self {
        self.concentrate = on;
        self
    }
}

/// Per-connection options given at attach time
/// ([`Endpoint::attach_with`](crate::Endpoint::attach_with)).
///
/// By default they come from the socket itself, as in the kernel (`kcm-spec.md` §6.3): the
/// maximum message size is the socket's `SO_RCVBUF` and the assembly timeout its
/// `SO_RCVTIMEO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachOptions {
    /// Largest message accepted (EMSGSIZE above). `None`: the socket's receive buffer size.
    pub max_message_size: Option<usize>,
    /// Longest time a message may take to arrive, from its first byte (ETIMEDOUT). `None`:
    /// the socket's receive timeout (none by default).
    pub timeout: Option<Duration>,
}

impl AttachOptions {
    /// Sets the maximum message size.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = Some(n);
        self
    }

    /// Sets the assembly timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}
