//! Waits with timeouts finer than a millisecond: `epoll_pwait2` (Linux 5.11 and later), whose
//! timeout is a `timespec`. `epoll_wait`'s is whole milliseconds, rounded up, so a 200 µs
//! wait there lasts 1 ms.
//!
//! Written by hand because rustix calls `epoll_pwait2` only when built for Linux 5.11 and up
//! (its `linux_5_11` feature), for every wait and with no fallback, which would break the
//! runtime on older kernels. Here the call is tried once per process and then used only for
//! timeouts that are not whole milliseconds; where it is missing (ENOSYS) or filtered out (a
//! seccomp policy's EPERM), waits keep millisecond resolution.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::time::Duration;

use super::{EventFlags, MAX_EVENTS};

/// Whether `epoll_pwait2` works in this process (asked once).
pub(crate) fn available() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        // The kernel's timespec is 64-bit on every architecture; libc's matches it only where
        // `time_t` is 64-bit.
        if cfg!(not(target_pointer_width = "64")) {
            return false;
        }
        let Ok(ep) = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)
        else {
            return false;
        };
        let mut out = Vec::new();
        call(ep.as_raw_fd(), &mut out, Duration::ZERO).is_ok()
    })
}

/// Waits on the epoll `ep` for up to `timeout`; the (key, flags) pairs go to `out`. EINTR
/// counts as no events.
pub(crate) fn wait(
    ep: BorrowedFd<'_>,
    out: &mut Vec<(u64, EventFlags)>,
    timeout: Duration,
) -> io::Result<()> {
    match call(ep.as_raw_fd(), out, timeout) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        other => other,
    }
}

fn call(epfd: i32, out: &mut Vec<(u64, EventFlags)>, timeout: Duration) -> io::Result<()> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `epfd` is an open epoll descriptor for the whole call (borrowed by the caller,
    // or owned by `available`'s frame); `evs` is a writable array of `MAX_EVENTS` events and
    // the kernel writes at most `maxevents` (= its length) of them; `ts` is a valid timespec
    // that lives across the call; a null signal mask leaves the mask alone (its size is then
    // not read).
    let n = unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait2,
            epfd,
            evs.as_mut_ptr(),
            MAX_EVENTS as libc::c_int,
            &ts as *const libc::timespec,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0).min(MAX_EVENTS);
    // Copies out of the (packed) kernel structure, field by field.
    out.extend(evs[..n].iter().map(|e| {
        let (key, bits) = (e.u64, e.events);
        (key, EventFlags::from_bits_retain(bits))
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::Instant;

    use super::*;
    use crate::sys::{Epoll, Waker};

    /// An epoll to test with, or `None` (and a note) where the kernel has no `epoll_pwait2`.
    fn epoll_or_skip() -> Option<Epoll> {
        if !available() {
            eprintln!("epoll_pwait2 is not available here: nothing to test");
            return None;
        }
        Some(Epoll::new().expect("epoll"))
    }

    /// A ready descriptor is reported with its key and flags, as `epoll_wait` reports it.
    #[test]
    fn reports_what_is_ready() {
        let Some(ep) = epoll_or_skip() else { return };
        let waker = Waker::new().expect("eventfd");
        ep.add(waker.as_fd(), 7, EventFlags::IN).expect("add");
        let mut out = Vec::new();
        wait(ep.as_fd(), &mut out, Duration::from_micros(300)).expect("wait");
        assert!(out.is_empty(), "nothing is ready yet: {out:?}");
        waker.wake();
        wait(ep.as_fd(), &mut out, Duration::from_micros(300)).expect("wait");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 7);
        assert!(out[0].1.contains(EventFlags::IN));
    }

    /// A timeout below a millisecond lasts at least that long, and (the point of the call)
    /// usually well under the millisecond `epoll_wait` would round it up to: the median of
    /// 21 waits of 100 µs stays below 900 µs (rounded up, every one would last at least 1 ms;
    /// 20 runs next to 8 busy loops on 2 CPUs stayed under it).
    #[test]
    fn sub_millisecond_timeouts_are_kept() {
        let Some(ep) = epoll_or_skip() else { return };
        let mut out = Vec::new();
        let mut took: Vec<Duration> = (0..21)
            .map(|_| {
                let start = Instant::now();
                ep.wait(&mut out, Some(Duration::from_micros(100)))
                    .expect("wait");
                start.elapsed()
            })
            .collect();
        took.sort();
        assert!(took[0] >= Duration::from_micros(100), "{took:?}");
        assert!(took[10] < Duration::from_micros(900), "{took:?}");
    }
}
