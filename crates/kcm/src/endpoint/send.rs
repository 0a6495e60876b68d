//! The sending half of [`Endpoint`]: `sendmsg`/`sendmmsg` and their addressed forms.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kcm_core::mux::{
    ConnectionId, EndpointId, MsgData, MuxCore, Refused, SendBatch, SendError, SendFlags,
};

use super::{from_nanos, Endpoint};
use crate::shared::Events;
use crate::shared::Shared;
use crate::sys;

impl Endpoint {
    // ---- sending ----

    /// Sends one whole message on any connection (connected mode, as the kernel): a datagram
    /// endpoint ends the message, a seqpacket endpoint ends it too (a plain `write()` on
    /// SEQPACKET carries `MSG_EOR`). Blocks while the send buffer is full, unless
    /// non-blocking (then `WouldBlock`) or the write timeout passes (`WouldBlock`).
    pub fn send(&self, msg: Bytes) -> io::Result<usize> {
        self.send_flags(
            msg,
            SendFlags {
                eor: true,
                ..SendFlags::default()
            },
        )
    }

    /// Sends with explicit `MSG_MORE` / `MSG_EOR` / `MSG_BATCH` semantics (§2.2): use it to
    /// build one message from several calls, or to batch.
    pub fn send_flags(&self, data: Bytes, flags: SendFlags) -> io::Result<usize> {
        self.send_inner(data, flags, None)
    }

    /// Sends one whole message on a given connection (addressed mode, an extension). Fails
    /// with `ENOTCONN` if the connection is not attached and `EPIPE` if it can no longer
    /// transmit; a message queued for a connection that fails later is dropped and counted
    /// (`tx_addr_drops`).
    ///
    /// A peer that stops reading costs only its own connection: once its socket is full, the
    /// messages queued for it step aside into that connection's backlog and the endpoint goes
    /// on with its other destinations (an unaddressed message, as in the kernel, always
    /// finishes on the connection it started on, and messages sent after an unaddressed one
    /// stay behind it: an endpoint's messages reach a connection in the order they were sent).
    /// New sends to that connection block — or
    /// fail with `WouldBlock` when non-blocking or past the write timeout — while its backlog
    /// holds 208 KiB (the default send buffer); sends to other connections do not.
    pub fn send_to(&self, conn: ConnectionId, msg: Bytes) -> io::Result<usize> {
        self.send_inner(
            msg,
            SendFlags {
                eor: true,
                ..SendFlags::default()
            },
            Some(conn),
        )
    }

    /// Sends several whole messages as one batch (`sendmmsg`): every message but the last
    /// carries `MSG_BATCH`, so they go out together, in one vectored write per connection.
    /// Returns how many were accepted; a non-blocking endpoint may accept fewer than all (and
    /// fails with `WouldBlock` only if it accepted none).
    ///
    /// Messages may be [`Bytes`] (queued without a copy) or borrowed slices (copied, as the
    /// kernel copies what `sendmsg` is given; for small replies built on the stack this is
    /// the cheapest form: no allocation, no reference count). See [`MsgData`].
    pub fn send_batch<I, D>(&self, msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = D>,
        D: MsgData,
    {
        self.send_batch_inner(Msgs(msgs.into_iter().map(|m| (None, m))))
    }

    /// [`Endpoint::send_batch`] in addressed mode: each message goes to the connection paired
    /// with it.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use std::io::Read;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = std::net::TcpStream::connect(l.local_addr()?)?;
    /// let (server, _) = l.accept()?;
    /// let ep = kcm::Endpoint::new(kcm::Kind::Datagram)?;
    /// let conn = ep.attach(&server, kcm::presets::by_name("thrift").unwrap())?;
    /// // Two small replies built on the stack: copied, no allocation per reply.
    /// let replies = [[0u8, 0, 0, 1, b'a'], [0, 0, 0, 1, b'b']];
    /// assert_eq!(ep.send_batch_to(replies.iter().map(|r| (conn, r)))?, 2);
    /// let mut got = [0u8; 10];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"\0\0\0\x01a\0\0\0\x01b");
    /// # Ok(()) }
    /// ```
    pub fn send_batch_to<I, D>(&self, msgs: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = (ConnectionId, D)>,
        D: MsgData,
    {
        self.send_batch_inner(Msgs(msgs.into_iter().map(|(c, m)| (Some(c), m))))
    }

    /// Sends the messages of a [`SendBatch`] as [`Endpoint::send_batch_to`] (or
    /// [`Endpoint::send_batch`], for messages added without a connection) would send them one
    /// by one, as borrowed slices: the same blocking, the same counters, the same bytes on
    /// each connection. The replies a server writes back to back into the batch are copied
    /// into the send queue a connection at a time instead of one by one, which makes this the
    /// cheapest way to answer a batch of small pipelined requests (`kcm bench` W3).
    ///
    /// Returns how many were accepted; they leave the batch, which is empty once all have.
    /// That may be fewer than all: as `sendmmsg`, a blocking call waits for room for its first
    /// message only and returns when the buffer fills after that, and a non-blocking one fails
    /// with `WouldBlock` only if it accepted none. Call again while the batch is not empty. A
    /// message refused for its connection (`ENOTCONN`, `EPIPE`) stops the
    /// call, as in [`Endpoint::send_batch_to`]: it stays at the front of the batch with the
    /// rest, and [`SendBatch::skip`] drops it to go on with the others.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use std::io::Read;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = std::net::TcpStream::connect(l.local_addr()?)?;
    /// let (server, _) = l.accept()?;
    /// let ep = kcm::Endpoint::new(kcm::Kind::Datagram)?;
    /// let conn = ep.attach(&server, kcm::presets::by_name("thrift").unwrap())?;
    /// let mut batch = kcm::SendBatch::new();
    /// batch.push_to(conn, b"\0\0\0\x01a");
    /// // Or written in place:
    /// batch.slot_to(conn, 5).copy_from_slice(b"\0\0\0\x01b");
    /// assert_eq!(ep.send_runs(&mut batch)?, 2);
    /// assert!(batch.is_empty());
    /// let mut got = [0u8; 10];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"\0\0\0\x01a\0\0\0\x01b");
    /// # Ok(()) }
    /// ```
    pub fn send_runs(&self, batch: &mut SendBatch) -> io::Result<usize> {
        self.send_batch_inner(Runs(batch))
    }

    fn send_batch_inner(&self, mut msgs: impl Source) -> io::Result<usize> {
        let mut sent = 0;
        let mut events = Events::new();
        let mut st = self.shared.lock();
        loop {
            let (n, refused) = msgs.queue(&mut st.core, self.id);
            sent += n;
            let Some(refused) = refused else { break };
            match refused.error {
                // A full buffer after some were accepted, or on a non-blocking endpoint:
                // report what was accepted (the core flushed it).
                SendError::WouldBlock if sent > 0 || self.is_nonblocking() => break,
                SendError::WouldBlock => {
                    // Nothing accepted yet: wait for room as a single send would, then go on.
                    Shared::drain(&mut st.core, &mut events);
                    drop(st);
                    self.shared
                        .dispatch(std::mem::take(&mut events), Some(self.id));
                    let flags = SendFlags {
                        eor: true,
                        batch: true,
                        more: false,
                    };
                    self.send_inner(refused.data, flags, refused.target)?;
                    msgs.sent_refused();
                    sent += 1;
                    st = self.shared.lock();
                }
                _ if sent > 0 => break,
                e => {
                    Shared::drain(&mut st.core, &mut events);
                    drop(st);
                    self.shared.dispatch(events, Some(self.id));
                    return Err(sys::os_err(e.errno()));
                }
            }
        }
        Shared::drain(&mut st.core, &mut events);
        self.finish_send(st, events);
        if sent == 0 && self.is_nonblocking() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(sent)
    }

    /// After queuing under the lock: writes this endpoint's own transmit without locking
    /// again, acts on the rest, and refreshes the pollable descriptor (a send may have filled
    /// the buffer: tests/recvmsg.rs, poll_fd_is_writable_only_while_a_send_would_not_block).
    fn finish_send(
        &self,
        mut st: parking_lot::MutexGuard<'_, crate::shared::State>,
        mut events: Events,
    ) {
        let job = Shared::take_own_transmit(&mut st, self.id, &mut events);
        drop(st);
        if let Some(job) = job {
            self.shared.transmit(self.id, job, &mut events);
        }
        self.shared.dispatch(events, Some(self.id));
        self.shared.sync_pollfd(self.id, &self.io);
    }

    fn send_inner(
        &self,
        data: Bytes,
        flags: SendFlags,
        target: Option<ConnectionId>,
    ) -> io::Result<usize> {
        let deadline =
            from_nanos(self.write_timeout.load(Ordering::Relaxed)).map(|d| Instant::now() + d);
        let mut events = Events::new();
        loop {
            let mut st = self.shared.lock();
            let r = st.core.send(self.id, data.clone(), flags, target);
            Shared::drain(&mut st.core, &mut events);
            match r {
                Ok(n) => {
                    self.finish_send(st, events);
                    return Ok(n);
                }
                Err(SendError::WouldBlock) => {
                    drop(st);
                    // Let the flushed batch go out before waiting for room.
                    self.shared
                        .dispatch(std::mem::take(&mut events), Some(self.id));
                    if self.is_nonblocking() {
                        self.shared.sync_pollfd(self.id, &self.io);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    let mut st = self.shared.lock();
                    while !st.core.can_send_to(self.id, target) && !st.closed {
                        let wait = match deadline {
                            None => Duration::from_secs(3600),
                            Some(d) => match d.checked_duration_since(Instant::now()) {
                                Some(w) if !w.is_zero() => w,
                                _ => return Err(io::ErrorKind::WouldBlock.into()),
                            },
                        };
                        self.shared.tx_cv.wait_for(&mut st, wait);
                    }
                }
                Err(e) => {
                    drop(st);
                    self.shared.dispatch(events, Some(self.id));
                    return Err(sys::os_err(e.errno()));
                }
            }
        }
    }
}

/// Where a batch send takes its messages from.
trait Source {
    /// Queues what the core accepts, up to the first refusal: how many, and the refused
    /// message.
    fn queue(&mut self, core: &mut MuxCore, ep: EndpointId) -> (usize, Option<Refused>);
    /// The refused message has since been sent on its own (a blocking wait for room).
    fn sent_refused(&mut self);
}

/// Messages from an iterator: a refused one was taken from it already.
struct Msgs<I>(I);

impl<I, D> Source for Msgs<I>
where
    I: Iterator<Item = (Option<ConnectionId>, D)>,
    D: MsgData,
{
    fn queue(&mut self, core: &mut MuxCore, ep: EndpointId) -> (usize, Option<Refused>) {
        core.send_batch(ep, &mut self.0)
    }

    fn sent_refused(&mut self) {}
}

/// Messages from a [`SendBatch`]: a refused one stays at its front until it is sent.
struct Runs<'a>(&'a mut SendBatch);

impl Source for Runs<'_> {
    fn queue(&mut self, core: &mut MuxCore, ep: EndpointId) -> (usize, Option<Refused>) {
        core.send_runs(ep, self.0)
    }

    fn sent_refused(&mut self) {
        self.0.skip(1);
    }
}
