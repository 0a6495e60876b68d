//! A small level-triggered epoll wrapper for the hand-written event loops (the `thread` and
//! `raw` servers and the load generator).

use std::io;
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
