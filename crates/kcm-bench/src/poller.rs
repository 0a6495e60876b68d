//! A small level-triggered epoll wrapper for the hand-written event loops (the `thread` and
//! `raw` servers and the load generator), and the [`Outbox`] of bytes they write without
//! blocking.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};

/// What a descriptor is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The key given at registration.
    pub key: u64,
    /// Readable, or hung up / failed (a read will tell which).
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// One epoll instance.
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use std::time::Duration;
/// use kcm_bench::poller::Poller;
///
/// let l = TcpListener::bind("127.0.0.1:0")?;
/// let c = TcpStream::connect(l.local_addr()?)?;
/// let p = Poller::new()?;
/// p.add(&c, 7, false, true)?;
/// let mut ready = Vec::new();
/// p.wait(&mut ready, Duration::from_secs(1))?;
/// assert_eq!(ready[0].key, 7);
/// assert!(ready[0].write);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Poller {
    fd: OwnedFd,
    events: std::cell::RefCell<Vec<epoll::Event>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("fd", &self.fd).finish()
    }
}

fn flags(read: bool, write: bool) -> EventFlags {
    let mut f = EventFlags::empty();
    if read {
        f |= EventFlags::IN | EventFlags::RDHUP;
    }
    if write {
        f |= EventFlags::OUT;
    }
    f
}

impl Poller {
    /// A new epoll instance.
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            fd: epoll::create(CreateFlags::CLOEXEC)?,
            events: Default::default(),
        })
    }

    /// Registers `fd` under `key` for the given interests (level-triggered).
    pub fn add(&self, fd: impl AsFd, key: u64, read: bool, write: bool) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            fd,
            EventData::new_u64(key),
            flags(read, write),
        )?)
    }

    /// Changes the interests of a registered `fd`.
    pub fn modify(&self, fd: impl AsFd, key: u64, read: bool, write: bool) -> io::Result<()> {
        Ok(epoll::modify(
            &self.fd,
            fd,
            EventData::new_u64(key),
            flags(read, write),
        )?)
    }

    /// Deregisters `fd`.
    pub fn remove(&self, fd: impl AsFd) -> io::Result<()> {
        Ok(epoll::delete(&self.fd, fd)?)
    }

    /// Waits up to `timeout` and replaces `out` with the ready descriptors.
    pub fn wait(&self, out: &mut Vec<Ready>, timeout: Duration) -> io::Result<()> {
        out.clear();
        let mut events = self.events.borrow_mut();
        events.clear();
        events.reserve(256);
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        match epoll::wait(
            &self.fd,
            rustix::buffer::spare_capacity(&mut *events),
            Some(&ts),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let hup = EventFlags::HUP | EventFlags::ERR | EventFlags::RDHUP;
        out.extend(events.iter().map(|e| {
            let f = e.flags;
            Ready {
                key: e.data.u64(),
                read: f.intersects(EventFlags::IN | hup),
                write: f.contains(EventFlags::OUT),
            }
        }));
        Ok(())
    }
}

/// Bytes waiting to be written on a non-blocking socket, and whether its [`Poller`]
/// registration asks for writability.
///
/// Level-triggered epoll reports a writable socket on every wait, so the event loops ask for
/// writability only while bytes remain: [`flush`](Self::flush) writes until done or the socket
/// would block, then [`watch`](Self::watch) changes the registration when that changed.
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use kcm_bench::poller::{Outbox, Poller};
///
/// let l = TcpListener::bind("127.0.0.1:0")?;
/// let mut c = TcpStream::connect(l.local_addr()?)?;
/// c.set_nonblocking(true)?;
/// let p = Poller::new()?;
/// p.add(&c, 0, true, false)?;
/// let mut out = Outbox::with_capacity(64);
/// out.buf.extend_from_slice(b"hello");
/// assert!(!out.flush(&mut c)?, "a fresh socket takes 5 bytes at once");
/// out.watch(&p, &c, 0)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Outbox {
    /// The queued bytes; append to it (a front part may already be written).
    pub buf: Vec<u8>,
    off: usize,
    want_write: bool,
}

impl Outbox {
    /// An empty outbox with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Outbox {
        Outbox {
            buf: Vec::with_capacity(n),
            ..Outbox::default()
        }
    }

    /// Whether bytes remain to be written.
    pub fn pending(&self) -> bool {
        self.off < self.buf.len()
    }

    /// Writes what is queued until all is out (then empties `buf`) or `w` would block;
    /// returns whether bytes remain.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while self.pending() {
            match w.write(&self.buf[self.off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.off = 0;
        Ok(false)
    }

    /// Registers `fd` (readable, under `key`) for writability too exactly while bytes remain,
    /// changing the registration only when that changed.
    pub fn watch(&mut self, poller: &Poller, fd: impl AsFd, key: u64) -> io::Result<()> {
        let pending = self.pending();
        if pending != self.want_write {
            poller.modify(fd, key, true, pending)?;
            self.want_write = pending;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Takes up to `room` bytes, then would block; records what it took.
    struct Narrow {
        room: usize,
        took: Vec<u8>,
        interrupt_first: bool,
    }

    impl Write for Narrow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.interrupt_first) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = b.len().min(self.room).min(3);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.took.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_resumes_where_the_writer_stopped_and_empties_when_done() {
        let mut w = Narrow {
            room: 5,
            took: Vec::new(),
            interrupt_first: true,
        };
        let mut out = Outbox::default();
        out.buf.extend_from_slice(b"0123456789");
        assert!(out.flush(&mut w).unwrap(), "5 of 10 bytes fit");
        assert!(out.pending());
        assert_eq!(w.took, b"01234");
        w.room = 100;
        assert!(!out.flush(&mut w).unwrap());
        assert_eq!(w.took, b"0123456789", "no byte twice, none lost");
        assert!(!out.pending() && out.buf.is_empty());
    }

    #[test]
    fn a_writer_taking_nothing_is_an_error_not_a_spin() {
        let mut out = Outbox::default();
        out.buf.push(1);
        let err = out.flush(&mut &mut [0u8; 0][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn watch_asks_for_writability_only_while_bytes_remain() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let p = Poller::new().unwrap();
        p.add(&c, 9, true, false).unwrap();
        let mut ready = Vec::new();
        let mut out = Outbox::default();
        out.buf.extend_from_slice(b"queued");
        out.watch(&p, &c, 9).unwrap();
        p.wait(&mut ready, Duration::from_secs(1)).unwrap();
        assert_eq!(
            ready,
            vec![Ready {
                key: 9,
                read: false,
                write: true
            }]
        );
        assert!(!out.flush(&mut c).unwrap());
        out.watch(&p, &c, 9).unwrap();
        p.wait(&mut ready, Duration::from_millis(50)).unwrap();
        assert_eq!(ready, vec![], "writable, but nobody asked");
    }
}
