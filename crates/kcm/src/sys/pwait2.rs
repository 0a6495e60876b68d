//! Waits with timeouts finer than a millisecond: `epoll_pwait2` (Linux 5.11 and later), whose
//! timeout is a `timespec`. `epoll_wait`'s is whole milliseconds, rounded up, so a 200 µs
//! wait there lasts 1 ms. It serves every timed wait that is not whole milliseconds, which is
//! most of them: a read timeout or deferral is waited out as "the time left until the
//! deadline".
//!
//! Written by hand because rustix calls `epoll_pwait2` only when built for Linux 5.11 and up
//! (its `linux_5_11` feature), for every wait and with no fallback, which would break the
//! runtime on older kernels. Here the first wait that needs it tries it, and the answer is
//! remembered once it is a clear one: it worked, or the kernel lacks it (ENOSYS) or a policy
//! refuses it (EPERM), and then waits keep millisecond resolution. Any other error (EINTR, a
//! full descriptor table for `available`'s own probe) is not taken for an answer. A process
//! under a seccomp filter never tries it: a filter written before the call existed may kill
//! the process for it (SIGSYS) rather than refuse it, and that cannot be asked about without
//! trying (rustix declines to probe for the same reason). `KCM_EPOLL_PWAIT2=try` in the
//! environment tries it all the same, for a process whose filter is known to allow or refuse
//! it (Docker's default profile has allowed it since the 20.10 releases of 2021, moby PR
//! 41971; snapd's base template only since the end of 2024), and `KCM_EPOLL_PWAIT2=never`
//! never uses it; any other value, or none, leaves the choice to kcm. 32-bit targets never
//! use it: the kernel's timespec there is not libc's.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::{EventFlags, MAX_EVENTS};

/// What is known of `epoll_pwait2` in this process.
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const WORKS: u8 = 1;
const ABSENT: u8 = 2;

/// Whether `epoll_pwait2` works in this process (tried on an epoll of its own if no wait has
/// tried it yet).
pub(crate) fn available() -> bool {
    if STATE.load(Ordering::Relaxed) == UNKNOWN {
        if let Ok(ep) = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC) {
            let _ = wait(
                std::os::fd::AsFd::as_fd(&ep),
                &mut Vec::new(),
                Duration::ZERO,
            );
        }
    }
    STATE.load(Ordering::Relaxed) == WORKS
}

/// Waits on the epoll `ep` for up to `timeout` with `epoll_pwait2`; the (key, flags) pairs
/// go to `out`. `None` if the call is not to be used here: the caller waits the millisecond
/// way instead.
pub(crate) fn wait(
    ep: BorrowedFd<'_>,
    out: &mut Vec<(u64, EventFlags)>,
    timeout: Duration,
) -> Option<io::Result<()>> {
    match STATE.load(Ordering::Relaxed) {
        WORKS => return Some(call(ep.as_raw_fd(), out, timeout)),
        ABSENT => return None,
        _ => {}
    }
    let asked = Policy::from_env(std::env::var("KCM_EPOLL_PWAIT2").ok().as_deref());
    if cfg!(not(target_pointer_width = "64")) || !asked.tries(under_seccomp_filter) {
        STATE.store(ABSENT, Ordering::Relaxed);
        return None;
    }
    let r = call(ep.as_raw_fd(), out, timeout);
    match r.as_ref().map_err(io::Error::raw_os_error) {
        Ok(()) => STATE.store(WORKS, Ordering::Relaxed),
        Err(Some(libc::ENOSYS | libc::EPERM)) => {
            STATE.store(ABSENT, Ordering::Relaxed);
            return None;
        }
        Err(_) => {}
    }
    Some(r)
}

/// What the environment asks of `epoll_pwait2` (`KCM_EPOLL_PWAIT2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Unset, or a value kcm does not know: try it unless a seccomp filter applies.
    Auto,
    /// `try`: even under a seccomp filter.
    Try,
    /// `never`.
    Never,
}

impl Policy {
    fn from_env(value: Option<&str>) -> Policy {
        match value.map(str::trim) {
            Some("try") => Policy::Try,
            Some("never") => Policy::Never,
            _ => Policy::Auto,
        }
    }

    /// Whether to try the call; `filtered` is asked only when it decides.
    fn tries(self, filtered: impl FnOnce() -> bool) -> bool {
        match self {
            Policy::Auto => !filtered(),
            Policy::Try => true,
            Policy::Never => false,
        }
    }
}

/// Whether a seccomp filter applies to this process (`Seccomp: 2` in `/proc/self/status`).
/// Unknown counts as yes.
fn under_seccomp_filter() -> bool {
    std::fs::read_to_string("/proc/self/status").map_or(true, |s| seccomp_filtered(&s))
}

/// Whether a `/proc/<pid>/status` text says a seccomp filter applies (or says nothing).
fn seccomp_filtered(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .is_none_or(|mode| mode.trim() != "0")
}

fn call(epfd: i32, out: &mut Vec<(u64, EventFlags)>, timeout: Duration) -> io::Result<()> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `epfd` is an open epoll descriptor for the whole call (borrowed by the caller);
    // `evs` is a writable array of `MAX_EVENTS` events and the kernel writes at most
    // `maxevents` (= its length) of them; `ts` is a valid timespec that lives across the
    // call; a null signal mask leaves the mask alone (its size is then not read).
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

    /// Only a process known to run without a seccomp filter tries the call.
    #[test]
    fn seccomp_modes_are_read_from_the_status_text() {
        assert!(!seccomp_filtered(
            "Name:\tkcm\nSeccomp:\t0\nSeccomp_filters:\t0\n"
        ));
        assert!(seccomp_filtered("Seccomp:\t2\nSeccomp_filters:\t1\n"));
        assert!(seccomp_filtered("Seccomp:\t1\n"), "strict mode");
        assert!(
            seccomp_filtered("Name:\tkcm\n"),
            "an older kernel that does not say"
        );
    }

    /// `KCM_EPOLL_PWAIT2` overrides the seccomp rule either way; anything else leaves it.
    #[test]
    fn the_environment_can_force_or_forbid_the_call() {
        let filtered = || true;
        let clear = || false;
        assert!(Policy::from_env(Some("try")).tries(filtered));
        assert!(Policy::from_env(Some(" try\n")).tries(filtered));
        assert!(!Policy::from_env(Some("never")).tries(clear));
        for v in [None, Some(""), Some("yes"), Some("TRY")] {
            assert_eq!(Policy::from_env(v), Policy::Auto, "{v:?}");
            assert!(!Policy::from_env(v).tries(filtered));
            assert!(Policy::from_env(v).tries(clear));
        }
        // The filter is not looked up when the environment decides.
        assert!(Policy::Try.tries(|| unreachable!()));
        assert!(!Policy::Never.tries(|| unreachable!()));
    }

    /// A ready descriptor is reported with its key and flags, as `epoll_wait` reports it.
    #[test]
    fn reports_what_is_ready() {
        let Some(ep) = epoll_or_skip() else { return };
        let waker = Waker::new().expect("eventfd");
        ep.add(waker.as_fd(), 7, EventFlags::IN).expect("add");
        let mut out = Vec::new();
        let pwait = |out: &mut Vec<_>| {
            wait(ep.as_fd(), out, Duration::from_micros(300))
                .expect("available")
                .expect("wait")
        };
        pwait(&mut out);
        assert!(out.is_empty(), "nothing is ready yet: {out:?}");
        waker.wake();
        pwait(&mut out);
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
