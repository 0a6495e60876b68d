//! `kernel`: Linux's own AF_KCM, where the running kernel has it (most do not: then
//! [`probe`] fails and the run prints one "skipped" line).
//!
//! The mux gets the textbook parser as a raw eBPF socket filter (`r0 = ntohl(load_word(0)) +
//! 4`), every connection is attached with `SIOCKCMATTACH` and each worker owns one KCM socket
//! (`SIOCKCMCLONE`). Kernel KCM cannot say which connection a message came from, and its own
//! `send` picks any connection, so a worker answers on the TCP socket named by the request's
//! connection field (the kernel leaves the attached socket's transmit side to user space when
//! KCM itself does not send on it). Two caveats of the kernel, not of the harness:
//! `kcm-spec.md` §4.2 (a message starting mid-segment is misframed by an offset-0 parser, so
//! pipelined workloads may fail verification), and timings inside an emulated guest say
//! nothing about speed.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use rustix::net::{AddressFamily, SocketType};

use super::{Running, ServerCtx, MAX_FRAME, STOP_POLL};
use crate::wire::{self, Op};

/// `AF_KCM`.
const AF_KCM: u16 = 41;
/// `SIOCPROTOPRIVATE` + 0 / + 2 (`include/uapi/linux/kcm.h`).
const SIOCKCMATTACH: libc::c_ulong = 0x89E0;
const SIOCKCMCLONE: libc::c_ulong = 0x89E2;

/// Opens a KCM socket (`socket(AF_KCM, SOCK_DGRAM, 0)`): the test of whether the kernel has KCM.
pub fn probe() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket(
        AddressFamily::from_raw(AF_KCM),
        SocketType::DGRAM,
        None,
    )?)
}

/// Starts the workers on kernel KCM sockets.
pub fn start(conns: Vec<TcpStream>, ctx: &ServerCtx) -> anyhow::Result<Running> {
    let first = probe().context("socket(AF_KCM)")?;
    let prog = sys::load_parser().context("bpf(BPF_PROG_LOAD) of the length parser")?;
    for c in &conns {
        sys::attach(&first, c, &prog).context("SIOCKCMATTACH")?;
    }
    let mut socks = vec![first];
    for _ in 1..ctx.workers {
        let s = sys::clone(&socks[0]).context("SIOCKCMCLONE")?;
        socks.push(s);
    }
    for s in &socks {
        rustix::net::sockopt::set_socket_timeout(
            s,
            rustix::net::sockopt::Timeout::Recv,
            Some(STOP_POLL),
        )?;
    }
    let conns: Arc<Vec<Mutex<TcpStream>>> = Arc::new(conns.into_iter().map(Mutex::new).collect());
    let shared = conns.clone();
    let running = Running::spawn_workers(ctx, "kernel", socks, move |sock, ctx| {
        worker(&sock, &shared, ctx)
    })?;
    // The TCP sockets outlive the workers' KCM sockets (joined first), so the mux is gone
    // before they close.
    Ok(running.with_on_stop(move || {
        drop(prog);
        drop(conns);
        Ok(())
    }))
}

fn worker(sock: &OwnedFd, conns: &[Mutex<TcpStream>], ctx: &ServerCtx) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_FRAME];
    let mut out = Vec::with_capacity(MAX_FRAME);
    while !ctx.stopped() {
        let n = match rustix::net::recv(sock, &mut buf[..], rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io::Error::from(e)).context("recv on a KCM socket"),
        };
        let msg = &buf[..n.min(buf.len())];
        ctx.counters.add(1, msg.len() as u64);
        out.clear();
        let req = match wire::reply_into(msg, &mut out) {
            Ok(r) => r,
            Err(_) => {
                ctx.counters.bad();
                continue;
            }
        };
        crate::work::spin(req.work_ns);
        if req.op == Op::None {
            continue;
        }
        let Some(conn) = conns.get(usize::from(req.conn)) else {
            ctx.counters.bad();
            continue;
        };
        let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        match conn.write_all(&out) {
            Ok(()) => {}
            Err(e) if super::is_disconnect(&e) => {}
            Err(e) => return Err(e).context("reply on the TCP socket"),
        }
    }
    Ok(())
}

/// The raw system calls kernel KCM needs and no safe wrapper offers.
mod sys {
    use super::*;

    /// One eBPF instruction (`struct bpf_insn`).
    #[repr(C)]
    struct Insn {
        code: u8,
        /// dst in the low nibble, src in the high one.
        regs: u8,
        off: i16,
        imm: i32,
    }

    /// The prefix of `union bpf_attr` that `BPF_PROG_LOAD` reads.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }

    #[repr(C)]
    struct AttachArg {
        fd: libc::c_int,
        bpf_fd: libc::c_int,
    }

    #[repr(C)]
    struct CloneArg {
        fd: libc::c_int,
    }

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

    /// Loads `r6 = r1; r0 = ntohl(skb[0..4]); r0 += 4; exit` (LD_ABS takes the skb from r6).
    pub(super) fn load_parser() -> io::Result<OwnedFd> {
        let insns = [
            Insn {
                code: 0xbf,
                regs: 0x16,
                off: 0,
                imm: 0,
            }, // ALU64 MOV X: r6 = r1
            Insn {
                code: 0x20,
                regs: 0,
                off: 0,
                imm: 0,
            }, // LD ABS W: r0 = ntohl(*(u32 *)skb)
            Insn {
                code: 0x07,
                regs: 0,
                off: 0,
                imm: 4,
            }, // ALU64 ADD K: r0 += 4
            Insn {
                code: 0x95,
                regs: 0,
                off: 0,
                imm: 0,
            }, // EXIT
        ];
        let license = b"GPL\0";
        let mut name = [0u8; 16];
        name[..7].copy_from_slice(b"kcm_len");
        let attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
        };
        // SAFETY: `attr` is a valid prefix of `union bpf_attr` for BPF_PROG_LOAD (the kernel
        // zero-extends a shorter size); the instruction array and the license string it points
        // to outlive the call, and the kernel only reads them.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoad,
                std::mem::size_of::<ProgLoad>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success BPF_PROG_LOAD returns a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    /// `SIOCKCMATTACH` of a TCP socket with the parser program.
    pub(super) fn attach(kcm: &OwnedFd, tcp: &TcpStream, prog: &OwnedFd) -> io::Result<()> {
        let arg = AttachArg {
            fd: tcp.as_fd().as_raw_fd(),
            bpf_fd: prog.as_raw_fd(),
        };
        // SAFETY: SIOCKCMATTACH reads a `struct kcm_attach` (two ints) from the pointer, which
        // is valid for the duration of the call; both descriptors are open.
        let r = unsafe { libc::ioctl(kcm.as_raw_fd(), SIOCKCMATTACH, &arg as *const AttachArg) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `SIOCKCMCLONE`: a new KCM socket on the same mux.
    pub(super) fn clone(kcm: &OwnedFd) -> io::Result<OwnedFd> {
        let mut arg = CloneArg { fd: -1 };
        // SAFETY: SIOCKCMCLONE writes one int (the new descriptor) through the pointer, which is
        // valid and exclusively borrowed for the duration of the call.
        let r = unsafe { libc::ioctl(kcm.as_raw_fd(), SIOCKCMCLONE, &mut arg as *mut CloneArg) };
        if r < 0 || arg.fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success the kernel installed a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(arg.fd) })
    }
}
