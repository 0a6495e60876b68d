//! Every system call the runtime makes, in one place (the mio model).
//!
//! The calls go through [`rustix`], which wraps the raw syscalls safely; the only `unsafe`
//! left is telling a [`BytesMut`] how many bytes the kernel wrote into its spare capacity, and
//! `epoll_pwait2` for waits finer than a millisecond ([`pwait2`]).
//! Sockets are never switched to non-blocking mode: the connection's file description is
//! shared with the application's own descriptor, and flipping `O_NONBLOCK` on it would change
//! the application's socket too. Every read and write passes `MSG_DONTWAIT` instead, and every
//! write passes `MSG_NOSIGNAL` so a reset peer cannot kill the process with SIGPIPE
//! (`kcm-spec.md` §13 question 5).

mod pollfd;
pub(crate) mod pwait2;
pub(crate) use pollfd::PollFd;

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustix::event::epoll;
use rustix::net::{AddressFamily, RecvFlags, SendAncillaryBuffer, SendFlags, SocketType};

pub(crate) use rustix::event::epoll::EventFlags;

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Most events taken per wait.
const MAX_EVENTS: usize = 64;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        epoll::create(epoll::CreateFlags::CLOEXEC)
            .map(Epoll)
            .map_err(errno)
    }

    pub(crate) fn add(&self, fd: BorrowedFd<'_>, key: u64, flags: EventFlags) -> io::Result<()> {
        epoll::add(&self.0, fd, epoll::EventData::new_u64(key), flags).map_err(errno)
    }

    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, key: u64, flags: EventFlags) -> io::Result<()> {
        epoll::modify(&self.0, fd, epoll::EventData::new_u64(key), flags).map_err(errno)
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.0, fd).map_err(errno)
    }

    /// Waits for events; `None` waits forever. Returns the (key, flags) pairs. EINTR counts as
    /// no events.
    pub(crate) fn wait(
        &self,
        out: &mut Vec<(u64, EventFlags)>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        out.clear();
        let r = match timeout {
            // Not whole milliseconds: `epoll_wait` would round it up.
            Some(d) if d.subsec_nanos() % 1_000_000 != 0 => {
                pwait2::wait(self.0.as_fd(), out, d).unwrap_or_else(|| self.wait_ms(out, timeout))
            }
            _ => self.wait_ms(out, timeout),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }

    /// `epoll_wait`, whose timeout is whole milliseconds (rounded up).
    fn wait_ms(
        &self,
        out: &mut Vec<(u64, EventFlags)>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        // On the stack: this runs once per wait of every receiving thread, and a heap buffer
        // cost an allocation and a free each time.
        let mut evs = [std::mem::MaybeUninit::<epoll::Event>::uninit(); MAX_EVENTS];
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos().into(),
        });
        let (ready, _) = epoll::wait(&self.0, &mut evs, ts.as_ref()).map_err(errno)?;
        out.extend(ready.iter().map(|e| (e.data.u64(), e.flags)));
        Ok(())
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The calling thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`; a system call,
/// not the vDSO).
pub(crate) fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Whether fewer threads are running or runnable on the machine than this process may use
/// cores, the caller included (`/proc/loadavg`'s fourth field); `true` when unknown.
pub(crate) fn idle_core() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    running_now().is_none_or(|r| r < cores)
}

/// The threads running or runnable on the machine now, from `/proc/loadavg`.
fn running_now() -> Option<usize> {
    let mut buf = [0u8; 128];
    running_threads(read_loadavg(&mut buf)?)
}

/// `/proc/loadavg`'s text as of now, into `buf`.
fn read_loadavg(buf: &mut [u8; 128]) -> Option<&str> {
    // The file stays open and is read from its start each time (procfs makes the text
    // afresh for a read at offset 0): a look costs one `pread`, not an open, a path walk, a
    // read and a close. Under W2 a thread at full load looks every 200 µs; with the open and
    // close the looks took ≈ 1.5 % of its time, now ≈ 0.4 %.
    static LOADAVG: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = LOADAVG
        .get_or_init(|| std::fs::File::open("/proc/loadavg").ok())
        .as_ref()?;
    let n = std::os::unix::fs::FileExt::read_at(file, buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

/// The running or runnable threads in `/proc/loadavg`'s text ("0.50 0.40 0.30 2/345 6789").
fn running_threads(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').next())
        .and_then(|r| r.parse().ok())
}

/// An eventfd used to wake a thread blocked in an epoll that contains it.
#[derive(Debug)]
pub(crate) struct Waker(OwnedFd);

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        use rustix::event::EventfdFlags;
        rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map(Waker)
            .map_err(errno)
    }

    pub(crate) fn wake(&self) {
        // A full counter (EAGAIN) still means "readable": nothing to do on error.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    pub(crate) fn reset(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut b);
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Reads from a stream socket into the spare capacity of `buf` (at most `max` bytes) without
/// blocking. `Ok(0)` is end of stream.
pub(crate) fn recv_into(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let n = spare.len().min(max);
    let ((init, _), _) =
        rustix::net::recv(fd, &mut spare[..n], RecvFlags::DONTWAIT).map_err(errno)?;
    let got = init.len();
    // SAFETY: `recv` initialised the first `got` bytes of the spare capacity (rustix returns
    // exactly the initialised prefix), so the buffer's length may grow by `got`.
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

/// Peeks at one byte without blocking or consuming it: `Ok(0)` is end of stream.
pub(crate) fn peek(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut b = [0u8; 1];
    rustix::net::recv(fd, &mut b, RecvFlags::DONTWAIT | RecvFlags::PEEK)
        .map(|(_, n)| n)
        .map_err(errno)
}

/// Writes the slices in order with one `sendmsg`, without blocking and without SIGPIPE.
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, bufs: &[Bytes]) -> io::Result<usize> {
    const IOV_MAX: usize = 1024;
    // Most writes have a few slices (small replies are joined into runs): their iovec array
    // lives on the stack, so a write costs no allocation.
    const ON_STACK: usize = 16;
    let mut stack = [IoSlice::new(&[]); ON_STACK];
    let heap: Vec<IoSlice<'_>>;
    let iov: &[IoSlice<'_>] = if bufs.len() <= ON_STACK {
        for (slot, b) in stack.iter_mut().zip(bufs) {
            *slot = IoSlice::new(b);
        }
        &stack[..bufs.len()]
    } else {
        heap = bufs.iter().take(IOV_MAX).map(|b| IoSlice::new(b)).collect();
        &heap
    };
    let mut control = SendAncillaryBuffer::default();
    rustix::net::sendmsg(
        fd,
        iov,
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )
    .map_err(errno)
}

/// What attach needs to know about a socket, checked in the kernel's order (§3.1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SockInfo {
    pub(crate) inode: u64,
    pub(crate) dev: u64,
    pub(crate) rcvbuf: usize,
    pub(crate) rcvtimeo: Option<Duration>,
}

/// The errno values attach and unattach report, as the kernel does.
pub(crate) use kcm_core::errno as err;

pub(crate) fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Checks that `fd` can be attached: a connected TCP (IPv4/IPv6) or Unix stream socket that
/// is not listening. Errors follow `kcm-spec.md` §3.1: not a socket → ENOENT, wrong family or
/// protocol, listening or closed → EOPNOTSUPP.
pub(crate) fn check_attachable(fd: BorrowedFd<'_>) -> io::Result<SockInfo> {
    let family = rustix::net::sockopt::socket_domain(fd).map_err(|_| os_err(err::ENOENT))?;
    let ty = rustix::net::sockopt::socket_type(fd).map_err(|_| os_err(err::ENOENT))?;
    let stream_ok = match family {
        AddressFamily::INET | AddressFamily::INET6 => {
            let proto = rustix::net::sockopt::socket_protocol(fd).map_err(errno)?;
            ty == SocketType::STREAM && proto == Some(rustix::net::ipproto::TCP)
        }
        // Extension: Unix stream sockets carry a byte stream just like TCP.
        AddressFamily::UNIX => ty == SocketType::STREAM,
        _ => false,
    };
    if !stream_ok {
        return Err(os_err(err::EOPNOTSUPP));
    }
    if rustix::net::sockopt::socket_acceptconn(fd).map_err(errno)? {
        return Err(os_err(err::EOPNOTSUPP));
    }
    // A closed (or never connected) stream socket has no peer.
    match rustix::net::getpeername(fd) {
        Ok(Some(_)) => {}
        Ok(None) if family == AddressFamily::UNIX => {}
        _ => return Err(os_err(err::EOPNOTSUPP)),
    }
    let st = rustix::fs::fstat(fd).map_err(errno)?;
    let rcvbuf = rustix::net::sockopt::socket_recv_buffer_size(fd).map_err(errno)?;
    let rcvtimeo = rustix::net::sockopt::socket_timeout(fd, rustix::net::sockopt::Timeout::Recv)
        .map_err(errno)?;
    Ok(SockInfo {
        inode: st.st_ino,
        dev: st.st_dev,
        rcvbuf,
        rcvtimeo,
    })
}

/// The socket's identity (device, inode), to find it again by any descriptor.
pub(crate) fn sock_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd).map_err(|_| os_err(err::ENOENT))?;
    Ok((st.st_dev, st.st_ino))
}

/// A new descriptor for the same socket, close-on-exec, so the connection outlives the
/// application's descriptor while attached (§3.1).
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(errno)
}

/// Bytes waiting in the socket's receive queue (SIOCINQ) and unsent bytes in its send queue
/// (SIOCOUTQ), for `/proc/net/kcm`. Zero where unknown.
pub(crate) fn queue_lengths(fd: BorrowedFd<'_>) -> (i64, i64) {
    /// `SIOCOUTQ`, the same request number as `TIOCOUTQ`.
    const SIOCOUTQ: rustix::ioctl::Opcode = 0x5411;
    let inq = rustix::io::ioctl_fionread(fd)
        .map(|n| n as i64)
        .unwrap_or(0);
    // SAFETY: SIOCOUTQ on a socket writes exactly one C `int` (the unsent byte count) through
    // the pointer, which is what `Getter<_, c_int>` provides and reads back.
    let outq = unsafe {
        rustix::ioctl::ioctl(
            fd,
            rustix::ioctl::Getter::<SIOCOUTQ, std::ffi::c_int>::new(),
        )
    };
    (inq, outq.map(i64::from).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    /// The running count is the fourth field's numerator; anything else is unknown.
    #[test]
    fn reads_the_running_threads_of_loadavg() {
        assert_eq!(
            super::running_threads("1.57 1.88 1.73 2/110 12805\n"),
            Some(2)
        );
        assert_eq!(super::running_threads("0.00 0.00 0.00 1/1 1"), Some(1));
        assert_eq!(super::running_threads("garbage"), None);
        assert_eq!(super::running_threads("1 2 3 x/4 5"), None);
        let here = std::fs::read_to_string("/proc/loadavg").unwrap();
        assert!(
            super::running_threads(&here).is_some_and(|r| r >= 1),
            "{here}"
        );
        assert!(super::thread_cpu_ns() > 0);
    }

    #[test]
    fn loadavg_kept_open_is_read_afresh() {
        let last_pid = || {
            let mut buf = [0u8; 128];
            let text = super::read_loadavg(&mut buf).unwrap();
            text.split_whitespace().nth(4).unwrap().to_string()
        };
        let before = last_pid();
        // A new thread takes a new id, which the file's last field shows.
        std::thread::spawn(|| ()).join().unwrap();
        assert_ne!(last_pid(), before);
        assert!(super::running_now().is_some_and(|r| r >= 1));
    }
}
