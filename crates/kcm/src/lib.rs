//! kcm: Linux's Kernel Connection Multiplexor (AF_KCM), in user space, on any kernel.
//!
//! KCM gives an application a *message* interface over TCP. Attach connected TCP sockets to
//! a multiplexor together with a [`Parser`] that finds message boundaries; every whole message
//! that arrives on any of them is delivered to exactly one of the mux's [`Endpoint`]s (one per
//! worker thread, load-balanced), and every message an endpoint sends goes out whole, never
//! interleaved, on one of the connections. kcm reproduces the kernel's semantics
//! (`kcm-spec.md`) with safe Rust over plain sockets, and adds what the kernel never had:
//! every received [`Message`] names its connection and [`Endpoint::send_to`] replies on it.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use bytes::Bytes;
//! use kcm::{Endpoint, Kind};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = TcpStream::connect(listener.local_addr()?)?;
//! let (server, _) = listener.accept()?;
//!
//! let ep = Endpoint::new(Kind::Datagram)?;          // socket(AF_KCM, SOCK_DGRAM, 0)
//! let worker = ep.clone_endpoint()?;                // SIOCKCMCLONE
//! ep.attach(&server, kcm::presets::by_name("thrift").unwrap())?;   // SIOCKCMATTACH
//!
//! client.write_all(b"\0\0\0\x03abc\0\0\0\x01z")?;      // two framed messages
//! let first = ep.recv()?;
//! assert_eq!(&first.data[..], b"\0\0\0\x03abc");
//! let reply = Bytes::from_static(b"\0\0\0\x02ok");
//! worker.send_to(first.conn, reply)?;
//! let mut buf = [0u8; 6];
//! client.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"\0\0\0\x02ok");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Threading model
//!
//! There is no thread that every message must pass through. The work is done by whichever
//! thread is at hand, under one mutex per mux that guards the sans-IO state machine
//! ([`kcm_core::mux::MuxCore`]) and is never held across a system call:
//!
//! ```text
//!  worker thread A          worker thread B            engine thread (one per mux)
//!  ep_a.recv()              ep_b.recv()                waits in its own epoll
//!    │ epoll_wait(ep_a)       │ epoll_wait(ep_b)          │ (registered last → woken only
//!    │                        │                           │  when no endpoint thread waits)
//!    ▼                        ▼                           ▼
//!  ┌──────────────── every connection is in every epoll, EPOLLEXCLUSIVE|EPOLLET ─────────┐
//!  │  conn 0 ── conn 1 ── conn 2 …   new bytes wake ONE waiting thread                   │
//!  └─────────────────────────────────────────────────────────────────────────────────────┘
//!    │ woken thread: recv() into the connection's buffer (64 KiB), parse every message in
//!    │ it, lock the mux once, hand the whole read pass to one endpoint (its own if eligible),
//!    ▼ unlock; messages for other endpoints wake them through their eventfd.
//!  send()/send_to(): queue under the lock, then the calling thread itself writes the
//!    reserved connection with one vectored write; if the socket is full, the engine thread
//!    resumes on EPOLLOUT. Timeouts and dropping failed connections are the engine's too.
//! ```
//!
//! - **Receive**: a thread blocked in [`Endpoint::recv`] drives the connections itself; it
//!   reads big, parses in place and queues each read pass as runs of whole messages (one
//!   buffer and their lengths), from which a receiver takes each message as a zero-copy
//!   [`bytes::Bytes`] slice. A
//!   connection is read by one thread at a time (a try-lock; a thread that finds it busy leaves
//!   a note that makes the reader go round again, so no wake-up is lost).
//! - **Send**: the caller writes its own messages (and any other endpoint's that became
//!   ready) with `sendmsg(MSG_DONTWAIT|MSG_NOSIGNAL)`; a batch is one `writev`.
//! - **Progress without the caller**: a message accepted by `send` is written out even if
//!   the sender never calls again (the engine thread resumes on write space), and messages
//!   arriving while no worker is waiting are read and queued: by a busy thread when it comes
//!   back for its next message (it looks at its epoll at most every 100 µs), else by the
//!   engine thread after `MuxOptions::busy_read_defer` (300 µs by default; 20 ms while every
//!   endpoint's thread is busy, since there is nobody free to take them).
//! - **As few threads at work as keep up** ([`MuxOptions::concentrate`], on by default):
//!   while one endpoint's thread is at work and keeping up, another that runs out of messages
//!   waits only for messages steered to it (standby), not in the epoll of the diagram, and the
//!   one at work keeps every read pass it reads. The others are brought in when it falls
//!   behind (it ran for most of 200 µs without catching up, and a core is idle), when its
//!   endpoint is full, or when bytes stay unread for 1 ms. On the bench's 2 shared cores this
//!   made request-reply and pipelined loads 40–50 % faster than spreading every read pass.
//! - **Backpressure, not buffering**: when no endpoint can take a message, the connection
//!   parks it and is not read until one can; TCP flow control stops the peer, as in the kernel.
//!   Parked connections take turns: one that an endpoint could not empty goes to the back.
//!
//! Memory per connection: nothing while idle (the read buffer is released when a read
//! finds the socket empty and no message is half-assembled); at most one read buffer plus one
//! message (bounded by the maximum message size) while busy. On the send side, replies for a
//! peer that stopped reading wait in its connection's backlog, which takes new sends until it
//! holds 208 KiB (plus what its senders had queued for it when it filled up).
//!
//! # Semantics decisions (where kcm deliberately differs from the kernel)
//!
//! 1. The parser sees a view that starts exactly at the message start (the kernel can pass a
//!    view starting at the TCP segment start when two messages share a segment, which misframes
//!    the textbook parser).
//! 2. SEQPACKET short reads keep the remainder for the next read (original KCM semantics;
//!    current kernels silently drop it).
//! 3. Statistics are correct where the kernel's `/proc` output has quirks (TX-Retries,
//!    RX-Aborts, swapped unattach columns); the renderers reproduce the layout, not the bugs.
//! 4. Addressed mode ([`Message::conn`], [`Endpoint::send_to`]) is an extension; connected
//!    mode ([`Endpoint::send`]) is the default and matches the kernel. Addressed messages for
//!    a connection whose socket is full step aside into that connection's backlog, so a peer
//!    that stops reading does not hold up the endpoint's other replies (a kernel KCM socket's
//!    single send queue would).
//! 5. Errors the kernel posts only on the TCP socket's `SO_ERROR` are also recorded as
//!    [`ConnectionEvent`]s with the connection, stream offset and parser result.
//! 6. Double attach is detected among the muxes of this process (the kernel checks every
//!    kernel user of the socket).
#![deny(missing_docs)]

mod conn;
mod endpoint;
mod engine;
mod events;
mod options;
mod proc;
mod registry;
mod shared;
mod sys;

pub use endpoint::{BatchMessage, Endpoint, Message, RecvBatch, RecvMeta};
pub use events::{ConnectionEvent, ConnectionEventKind, EVENT_LOG_CAP};
pub use kcm_core::mux::{ConnectionId, EndpointId, Kind, MsgData, SendBatch, SendFlags};
pub use kcm_core::stats::{ConnStats, EndpointStats, MuxStats, ParserStats};
pub use kcm_core::{errno, Parse, Parser};
pub use options::{AttachOptions, MuxOptions};
pub use proc::{proc_net_kcm, proc_net_kcm_stats};

/// Whether timeouts below a millisecond ([`MuxOptions::busy_read_defer`],
/// [`Endpoint::set_read_timeout`]) are kept on this machine: a 64-bit target, a kernel with
/// `epoll_pwait2` (Linux 5.11 and later) and no seccomp filter on the process (one might kill
/// it for the call rather than refuse it, so kcm does not try). Where not, they are rounded
/// up to whole milliseconds, as `epoll_wait` takes them. `KCM_EPOLL_PWAIT2=try` in the
/// environment tries the call under a seccomp filter too (for a filter known to allow it or
/// to refuse it with an error, as Docker's default profile does), and `KCM_EPOLL_PWAIT2=never`
/// keeps every wait in milliseconds; the first timed wait decides, for the whole process.
///
/// ```
/// if !kcm::sub_millisecond_timeouts() {
///     eprintln!("read timeouts and busy_read_defer are rounded up to whole milliseconds");
/// }
/// ```
pub fn sub_millisecond_timeouts() -> bool {
    sys::pwait2::available()
}

/// The parsers that ship with kcm, re-exported from `kcm-core`.
pub mod presets {
    pub use kcm_core::presets::*;
}
