//! [`Endpoint`]: a KCM socket — the message interface applications use.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kcm_core::mux::{ConnectionId, EndpointId, Kind, MuxCore};
use kcm_core::stats::{ConnStats, EndpointStats, MuxStats};
use kcm_core::strparser::{StrConfig, StrParser};
use kcm_core::Parser;

use crate::conn::ConnIo;
use crate::engine::{self, EngineIo};
use crate::events::ConnectionEvent;
use crate::options::{AttachOptions, MuxOptions};
use crate::shared::Events;
use crate::shared::{EpIo, Shared};
use crate::sys::{self, err, PollFd};

mod batch;
pub(crate) mod recv;
mod send;

pub use batch::{BatchMessage, RecvBatch};

/// A received message and the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The whole message, framing header included (as the kernel delivers it), as a zero-copy
    /// slice of the connection's read buffer.
    pub data: Bytes,
    /// The connection it arrived on; pass it to [`Endpoint::send_to`] to reply.
    pub conn: ConnectionId,
}

/// What [`Endpoint::recv_into`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The connection the message came from.
    pub conn: ConnectionId,
    /// The message ended with this read (`MSG_EOR`).
    pub eor: bool,
    /// The rest of the message did not fit and was dropped (`MSG_TRUNC`, datagram endpoints).
    pub trunc: bool,
}

/// An endpoint of a multiplexor: the user-space counterpart of a KCM socket.
///
/// [`Endpoint::new`] creates a mux with its first endpoint, like `socket(AF_KCM, …)`;
/// [`Endpoint::clone_endpoint`] adds another to the same mux, like `SIOCKCMCLONE`. All
/// endpoints of a mux are equivalent: attach TCP connections through any of them, receive on
/// each from its own thread, and every whole message arriving on any connection is delivered to
/// exactly one endpoint; every message sent goes out whole on one connection. The mux lives until
/// its last endpoint is dropped.
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use std::io::{Read, Write};
/// use kcm::{Endpoint, Kind};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let mut client = TcpStream::connect(listener.local_addr()?)?;
/// let (server, _) = listener.accept()?;
///
/// let ep = Endpoint::new(Kind::Datagram)?;
/// let conn = ep.attach(&server, kcm::presets::by_name("thrift").unwrap())?;
///
/// client.write_all(b"\0\0\0\x05hello")?;
/// let msg = ep.recv()?;
/// assert_eq!(&msg.data[..], b"\0\0\0\x05hello");
/// assert_eq!(msg.conn, conn);
///
/// ep.send_to(msg.conn, bytes::Bytes::from_static(b"\0\0\0\x02ok"))?;
/// let mut reply = [0u8; 6];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"\0\0\0\x02ok");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Endpoint {
    shared: Arc<Shared>,
    id: EndpointId,
    io: Arc<EpIo>,
    nonblocking: AtomicBool,
    /// Receive and send timeouts in nanoseconds, 0 = none (SO_RCVTIMEO, SO_SNDTIMEO).
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("kind", &self.shared.kind)
            .finish()
    }
}

fn to_nanos(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

fn from_nanos(n: u64) -> Option<Duration> {
    (n != 0).then(|| Duration::from_nanos(n))
}

impl Endpoint {
    /// Creates a mux of the given kind and returns its first endpoint (`socket(AF_KCM, kind,
    /// KCMPROTO_CONNECTED)`).
    pub fn new(kind: Kind) -> io::Result<Endpoint> {
        Endpoint::with_options(kind, MuxOptions::default())
    }

    /// Like [`Endpoint::new`], with mux options.
    pub fn with_options(kind: Kind, opts: MuxOptions) -> io::Result<Endpoint> {
        let (core, id) = MuxCore::new(kind).map_err(|e| sys::os_err(e.errno()))?;
        let engine = Arc::new(EngineIo::new()?);
        let shared = Arc::new(Shared::new(kind, opts, core, engine.clone()));
        let io = Arc::new(shared.new_ep_io()?);
        shared
            .eps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.0, io.clone());
        engine::spawn(engine, Arc::downgrade(&shared))?;
        crate::registry::lock().muxes.push(Arc::downgrade(&shared));
        Ok(Endpoint::from_parts(shared, id, io))
    }

    fn from_parts(shared: Arc<Shared>, id: EndpointId, io: Arc<EpIo>) -> Endpoint {
        Endpoint {
            shared,
            id,
            io,
            nonblocking: AtomicBool::new(false),
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
        }
    }

    /// Adds a new endpoint to this endpoint's mux (`SIOCKCMCLONE`): same kind, default options
    /// (nothing is inherited), immediately eligible to receive.
    pub fn clone_endpoint(&self) -> io::Result<Endpoint> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(sys::os_err(err::EBADF));
        }
        let io = Arc::new(self.shared.new_ep_io()?);
        let id = st.core.add_endpoint().map_err(|e| sys::os_err(e.errno()))?;
        self.shared
            .eps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.0, io.clone());
        let mut events = Events::new();
        Shared::drain(&mut st.core, &mut events);
        drop(st);
        self.shared.dispatch(events, None);
        // Not busy: it may take what the engine left to the others.
        self.shared.wake_busy_engine();
        Ok(Endpoint::from_parts(self.shared.clone(), id, io))
    }

    /// This endpoint's id (its index in the mux, as `kcm-<n>` in `/proc/net/kcm`).
    pub fn id(&self) -> EndpointId {
        self.id
    }

    /// The mux's kind.
    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// Attaches a connected TCP (IPv4 or IPv6) or Unix stream socket to the mux with a
    /// parser (`SIOCKCMATTACH`). kcm keeps its own descriptor of the socket, so the caller
    /// may close theirs; the caller must not read or write the socket while it is attached.
    /// Bytes already waiting on the socket are parsed at once: attach at a message boundary.
    ///
    /// Errors, as the kernel's: not a socket → `ENOENT`; not a stream socket of those
    /// families, listening, or closed → `EOPNOTSUPP`; attached already (to any mux of this
    /// process) → `EALREADY`.
    pub fn attach<S: AsFd>(&self, sock: &S, parser: Arc<dyn Parser>) -> io::Result<ConnectionId> {
        self.attach_with(sock, parser, AttachOptions::default())
    }

    /// [`Endpoint::attach`] with per-connection options.
    pub fn attach_with<S: AsFd>(
        &self,
        sock: &S,
        parser: Arc<dyn Parser>,
        opts: AttachOptions,
    ) -> io::Result<ConnectionId> {
        let fd = sock.as_fd();
        let info = sys::check_attachable(fd)?;
        let sock_id = (info.dev, info.inode);
        if !crate::registry::lock().attached.insert(sock_id) {
            return Err(sys::os_err(err::EALREADY));
        }
        let result = self.attach_checked(fd, sock_id, info, parser, opts);
        if result.is_err() {
            crate::registry::lock().attached.remove(&sock_id);
        }
        result
    }

    fn attach_checked(
        &self,
        fd: BorrowedFd<'_>,
        sock_id: crate::registry::SockId,
        info: sys::SockInfo,
        parser: Arc<dyn Parser>,
        opts: AttachOptions,
    ) -> io::Result<ConnectionId> {
        let dup = sys::dup(fd)?;
        let cfg = StrConfig {
            max_msg_size: opts.max_message_size.unwrap_or(info.rcvbuf),
            timeout: opts.timeout.or(info.rcvtimeo),
            read_size: self.shared.opts.read_size,
        };
        let mut events = Events::new();
        let io = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(sys::os_err(err::EBADF));
            }
            let id = st.core.attach();
            let io = Arc::new(ConnIo::new(id, dup, sock_id, StrParser::new(parser, cfg)));
            self.shared
                .conns
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(io.key(), io.clone());
            if let Err(e) = self.shared.register_conn(&io) {
                self.shared.deregister_conn(&io);
                let _ = st.core.unattach(id, Default::default());
                Shared::drain(&mut st.core, &mut events);
                drop(st);
                self.shared.dispatch(events, None);
                return Err(e);
            }
            Shared::drain(&mut st.core, &mut events);
            io
        };
        // Parse what is already buffered, and send what was waiting for a connection.
        self.shared.drive_rx(&io, None, &mut events);
        self.shared.dispatch(events, None);
        Ok(io.id)
    }

    /// Unattaches a socket (`SIOCKCMUNATTACH`): it is plain TCP again, at an undefined stream
    /// position (a parked or half-assembled message is dropped, `kcm-spec.md` §3.2). A socket
    /// not attached to this mux → `ENOENT`; an unattach already under way → `EALREADY`.
    pub fn unattach<S: AsFd>(&self, sock: &S) -> io::Result<Bytes> {
        let ident = sys::sock_identity(sock.as_fd())?;
        // Looked up under the map's read lock, with no copy of the map: a linear search, but
        // of the map's values in place (a server tearing down 10,000 connections one by one
        // made a vector of every connection's handle for each).
        let id = self
            .shared
            .conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|c| c.sock == (ident.0, ident.1))
            .map(|c| c.id)
            .ok_or_else(|| sys::os_err(err::ENOENT))?;
        self.shared.unattach(id)
    }

    /// Unattaches a connection by id. Returns the bytes kcm had read from it but not yet
    /// delivered (an extension: the kernel loses them).
    pub fn unattach_id(&self, conn: ConnectionId) -> io::Result<Bytes> {
        self.shared.unattach(conn)
    }

    /// The connections attached to the mux.
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.shared.lock().core.connections()
    }

    // ---- options ----

    /// Makes calls fail with `WouldBlock` instead of waiting (`O_NONBLOCK`).
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
        if on {
            // From now on it waits for its descriptor, not in its epoll (see `recv_inner`).
            self.shared.set_busy(&self.io, false);
        }
    }

    /// Whether calls are non-blocking.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Receive timeout (`SO_RCVTIMEO`): a blocking receive fails with `WouldBlock` after it.
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        self.read_timeout.store(to_nanos(t), Ordering::Relaxed);
    }

    /// Send timeout (`SO_SNDTIMEO`) for sends blocked on a full send buffer.
    pub fn set_write_timeout(&self, t: Option<Duration>) {
        self.write_timeout.store(to_nanos(t), Ordering::Relaxed);
    }

    /// Receive-buffer limit in bytes (`SO_RCVBUF`, default 212,992): the endpoint stops being
    /// chosen for new messages while this many bytes are queued (§5.1).
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.with_core(|c, id| c.set_rcvbuf(id, bytes).map_err(|e| sys::os_err(e.errno())))
    }

    /// Send-buffer limit in bytes (`SO_SNDBUF`, default 212,992), checked before each new
    /// message (§2.2).
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.with_core(|c, id| c.set_sndbuf(id, bytes).map_err(|e| sys::os_err(e.errno())))
    }

    /// Receive low-water mark (`SO_RCVLOWAT`, default 1): a full endpoint becomes eligible
    /// again once fewer bytes than this are queued.
    pub fn set_recv_lowat(&self, bytes: usize) -> io::Result<()> {
        self.with_core(|c, id| {
            c.set_rcvlowat(id, bytes)
                .map_err(|e| sys::os_err(e.errno()))
        })
    }

    /// `KCM_RECV_DISABLE`: stop receiving and hand queued messages to other endpoints (or the
    /// mux's hold queue); clearing it makes the endpoint eligible again (§5.4).
    pub fn set_recv_disable(&self, disable: bool) -> io::Result<()> {
        self.with_core(|c, id| {
            c.set_recv_disable(id, disable)
                .map_err(|e| sys::os_err(e.errno()))
        })
    }

    /// Whether `KCM_RECV_DISABLE` is set.
    pub fn recv_disable(&self) -> bool {
        self.shared
            .lock()
            .core
            .recv_disabled(self.id)
            .unwrap_or(false)
    }

    /// Takes the endpoint's pending error (`SO_ERROR`; KCM only ever posts EPIPE here).
    pub fn take_error(&self) -> Option<io::Error> {
        self.shared
            .lock()
            .core
            .take_endpoint_error(self.id)
            .map(sys::os_err)
    }

    fn with_core<T>(
        &self,
        f: impl FnOnce(&mut MuxCore, EndpointId) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut events = Events::new();
        let r = {
            let mut st = self.shared.lock();
            let r = f(&mut st.core, self.id);
            Shared::drain(&mut st.core, &mut events);
            r
        };
        self.shared.dispatch(events, Some(self.id));
        self.shared.sync_pollfd(self.id, &self.io);
        r
    }

    // ---- statistics and events ----

    /// Messages and bytes queued on this endpoint for receive, ready to be taken without
    /// waiting (the kernel's `SIOCINQ` reports the bytes). A server can use it to batch its
    /// replies while more requests are already waiting.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use std::io::Write;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = std::net::TcpStream::connect(l.local_addr()?)?;
    /// let (server, _) = l.accept()?;
    /// let ep = kcm::Endpoint::new(kcm::Kind::Datagram)?;
    /// ep.attach(&server, kcm::presets::by_name("thrift").unwrap())?;
    /// client.write_all(b"\0\0\0\x01a\0\0\0\x01b")?;
    /// let first = ep.recv()?;
    /// // Both arrived together: the second is parsed and queued by now, or very soon.
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    /// while ep.queued() != (1, 5) {
    ///     assert!(std::time::Instant::now() < deadline, "the second message never queued");
    ///     std::thread::yield_now();
    /// }
    /// # let _ = first;
    /// # Ok(()) }
    /// ```
    pub fn queued(&self) -> (usize, usize) {
        self.shared
            .lock()
            .core
            .rx_queued(self.id)
            .unwrap_or_default()
    }

    /// This endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        self.shared
            .lock()
            .core
            .endpoint_stats(self.id)
            .unwrap_or_default()
    }

    /// The mux's counters.
    pub fn mux_stats(&self) -> MuxStats {
        *self.shared.lock().core.stats()
    }

    /// A live connection's counters (receive side from its stream parser, transmit side
    /// from the mux).
    pub fn connection_stats(&self, conn: ConnectionId) -> Option<ConnStats> {
        let io = self.shared.conn_io(conn)?;
        let parser = *io.lock_rx().strp.stats();
        let mut s = self.shared.lock().core.conn_stats(conn)?;
        s.parser = parser;
        Some(s)
    }

    /// Messages and bytes waiting in a connection's backlog: replies for a peer whose socket
    /// was full, set aside so that they hold up no other connection (see
    /// [`Endpoint::send_to`]). `None` while the connection has none. A backlog that stays put
    /// marks a peer that stopped reading.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let _client = std::net::TcpStream::connect(l.local_addr()?)?;
    /// let (server, _) = l.accept()?;
    /// let ep = kcm::Endpoint::new(kcm::Kind::Datagram)?;
    /// let conn = ep.attach(&server, kcm::presets::by_name("thrift").unwrap())?;
    /// assert_eq!(ep.connection_backlog(conn), None);
    /// # Ok(()) }
    /// ```
    pub fn connection_backlog(&self, conn: ConnectionId) -> Option<(usize, usize)> {
        self.shared.lock().core.tx_backlog(conn)
    }

    /// Takes the connection events recorded so far (parser errors, peer closes, transmit
    /// aborts), oldest first.
    pub fn take_events(&self) -> Vec<ConnectionEvent> {
        let mut log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.events.drain(..).collect()
    }

    /// Takes the last errno posted on a connection (the kernel posts it on the TCP socket's
    /// `SO_ERROR`): EPIPE for state changes and transmit aborts, the parser's error otherwise.
    pub fn connection_error(&self, conn: ConnectionId) -> Option<io::Error> {
        self.shared.conn_io(conn)?.take_error().map(sys::os_err)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The endpoint's pollable descriptor (see the [`AsFd`] impl), created on first use.
    pub fn poll_fd(&self) -> io::Result<BorrowedFd<'_>> {
        if self.io.pollfd.get().is_none() {
            let p = PollFd::new()?;
            // Another thread may have won the race; either descriptor is fine.
            let _ = self.io.pollfd.set(p);
            self.shared.sync_pollfd(self.id, &self.io);
        }
        match self.io.pollfd.get() {
            Some(p) => Ok(p.fd()),
            None => Err(io::ErrorKind::Other.into()),
        }
    }
}

impl AsFd for Endpoint {
    /// The endpoint's pollable descriptor: readable while a message (or an error) is queued,
    /// writable while a send would not block. Register it in any epoll loop; readiness is
    /// level-triggered. Driving connections for such users is the engine thread's work (see
    /// the crate docs).
    ///
    /// If the descriptor cannot be created (out of file descriptors), this falls back to the
    /// endpoint's internal epoll descriptor, which is readable whenever a receive may make
    /// progress; use [`Endpoint::poll_fd`] to see the error instead.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self.poll_fd() {
            Ok(fd) => fd,
            Err(_) => {
                self.io.always_wake.store(true, Ordering::Relaxed);
                self.io.epoll.as_fd()
            }
        }
    }
}

impl AsRawFd for Endpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Drop for Endpoint {
    /// Closes the endpoint (§3.4): unsent messages are dropped, unread ones move to other
    /// endpoints; closing the last endpoint tears the mux down and unattaches every
    /// connection.
    fn drop(&mut self) {
        let mut events = Events::new();
        let last = {
            let mut st = self.shared.lock();
            let last = st.core.close_endpoint(self.id).unwrap_or(false);
            if last {
                st.closed = true;
            }
            Shared::drain(&mut st.core, &mut events);
            self.shared.set_busy(&self.io, false);
            self.shared.set_sleeping(&self.io, false);
            self.shared
                .eps
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id.0);
            last
        };
        // Requeued messages wake the endpoints they moved to.
        self.shared.dispatch(events, None);
        self.shared.tx_cv.notify_all();
        if last {
            crate::shared::teardown(&self.shared);
        }
    }
}
