//! One attached connection's I/O state: the duplicated socket descriptor and the receive
//! driver (the stream parser behind a try-lock), plus the errors posted on it.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use kcm_core::mux::ConnectionId;
use kcm_core::strparser::StrParser;

use crate::registry::SockId;

/// The epoll key of a connection: its id packed into 64 bits (never `u64::MAX`, the waker's).
pub(crate) fn key(id: ConnectionId) -> u64 {
    (u64::from(id.index) << 32) | u64::from(id.gen)
}

pub(crate) const WAKER_KEY: u64 = u64::MAX;

pub(crate) struct RxState {
    pub(crate) strp: StrParser,
    /// Receive side finished for good (parser error, read error, unattach).
    pub(crate) done: bool,
    /// The peer closed its side (end of stream seen).
    pub(crate) eof: bool,
    /// The assembly deadline already handed to the engine's timer list.
    pub(crate) armed: Option<Instant>,
    /// Bytes arrived since the engine's last buffer sweep (see `Shared::sweep_buffers`).
    pub(crate) busy: bool,
    /// The last pass ended on a short read, not on WouldBlock: an end of stream may be
    /// waiting unseen (see `Shared::read_passes`).
    pub(crate) check_eof: bool,
}

pub(crate) struct ConnIo {
    pub(crate) id: ConnectionId,
    pub(crate) fd: OwnedFd,
    pub(crate) sock: SockId,
    pub(crate) rx: Mutex<RxState>,
    /// Someone saw the socket readable while another thread held `rx` (see `Shared::drive_rx`).
    pub(crate) notified: AtomicBool,
    /// The thread holding `rx` is a reader (in `Shared::drive_rx`), which honours `notified`;
    /// other holders (statistics, /proc, timer checks) only look and do not.
    pub(crate) reading: AtomicBool,
    /// The mux parked messages of this connection: do not read (§5.2).
    pub(crate) paused: AtomicBool,
    pub(crate) unattaching: AtomicBool,
    /// Reads of the socket so far (the engine's deferred reads skip a connection read since).
    pub(crate) reads: AtomicU64,
    /// The last errno posted on the connection (the kernel's `sk_err` on the TCP socket).
    pub(crate) error: Mutex<Option<i32>>,
}

impl ConnIo {
    pub(crate) fn new(id: ConnectionId, fd: OwnedFd, sock: SockId, strp: StrParser) -> ConnIo {
        ConnIo {
            id,
            fd,
            sock,
            rx: Mutex::new(RxState {
                strp,
                done: false,
                eof: false,
                armed: None,
                busy: false,
                check_eof: false,
            }),
            notified: AtomicBool::new(false),
            reading: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            unattaching: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    pub(crate) fn key(&self) -> u64 {
        key(self.id)
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn lock_rx(&self) -> MutexGuard<'_, RxState> {
        self.rx.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn post_error(&self, errno: i32) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(errno);
    }

    pub(crate) fn take_error(&self) -> Option<i32> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }
}
