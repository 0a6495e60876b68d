//! The endpoint's pollable descriptor: a Unix datagram socket whose readiness we set by hand.
//!
//! An endpoint is not a kernel object, so something real must carry its readiness into the
//! application's epoll loop (or tokio's `AsyncFd`). We use one end (`user`) of a Unix
//! datagram socket pair and drive its two readiness bits from the other end (`ours`):
//!
//! - **readable**: a one-byte datagram sits in `user`'s receive queue (we send it from `ours`
//!   and take it back by reading `user`).
//! - **writable**: Unix datagram sockets report POLLOUT while the bytes they have sent and not
//!   yet had consumed stay under a quarter of their send buffer. We shrink `user`'s send buffer
//!   to the minimum and, to make it unwritable, send one filler datagram from `user` that
//!   exceeds that quarter; reading it off `ours` makes `user` writable again.
//!
//! Both bits are level-triggered and independent, which is what "readable when a message is
//! queued, writable when a send would not block" needs. Error conditions are reported as
//! readable (the next receive returns the error), because userspace cannot raise POLLERR on a
//! socket.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const FILLER: [u8; 2048] = [0u8; 2048];

#[derive(Debug)]
pub(crate) struct PollFd {
    user: OwnedFd,
    ours: OwnedFd,
    /// (readable, writable) as last set; the lock also orders concurrent updates.
    state: Mutex<(bool, bool)>,
}

impl PollFd {
    pub(crate) fn new() -> io::Result<PollFd> {
        let (user, ours) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
        // The kernel doubles and clamps this to its minimum (about 4.5 KiB).
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&user, 1);
        Ok(PollFd {
            user,
            ours,
            state: Mutex::new((false, true)),
        })
    }

    /// Locks the readiness state; compute the new state while holding it, then [`PollFd::set`].
    pub(crate) fn lock(&self) -> MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the descriptor's readiness to the given state.
    pub(crate) fn set(&self, cur: &mut (bool, bool), readable: bool, writable: bool) {
        if readable != cur.0 {
            if readable {
                let _ = rustix::net::send(&self.ours, &[1], SendFlags::DONTWAIT);
            } else {
                let mut b = [0u8; 16];
                while rustix::net::recv(&self.user, &mut b, RecvFlags::DONTWAIT).is_ok() {}
            }
            cur.0 = readable;
        }
        if writable != cur.1 {
            if writable {
                let mut b = [0u8; 16];
                while rustix::net::recv(&self.ours, &mut b, RecvFlags::DONTWAIT).is_ok() {}
            } else {
                let _ = rustix::net::send(&self.user, &FILLER, SendFlags::DONTWAIT);
            }
            cur.1 = writable;
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.user.as_fd()
    }
}
