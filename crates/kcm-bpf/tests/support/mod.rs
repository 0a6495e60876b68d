//! Test-only access to the real kernel's BPF verifier and runtime, used as an oracle.
//!
//! `bpf(BPF_PROG_LOAD)` loads a `BPF_PROG_TYPE_SOCKET_FILTER` program and
//! `bpf(BPF_PROG_TEST_RUN)` runs it on bytes. For socket filters the kernel treats the first 14
//! input bytes as an Ethernet header (`eth_type_trans` pulls them), so the program's packet
//! starts 14 bytes in: [`KernelProg::run`] prefixes that pad. This is the only `unsafe` code of
//! the crate, and it exists only in tests.
#![allow(dead_code)]

use std::ffi::c_void;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kcm_bpf::Insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Bytes the kernel's test run consumes as the link-layer header.
pub const ETH_PAD: usize = 14;
/// `union bpf_attr` bytes passed; the fields used here all lie within, the rest is zero.
const ATTR_SIZE: usize = 128;

/// `union bpf_attr`, as zeroed bytes with the fields written at their UAPI offsets.
#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Attr {
        Attr([0; ATTR_SIZE])
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: `attr` is a valid, writable, 8-byte-aligned buffer of ATTR_SIZE bytes that
    // outlives the call; every pointer stored inside it (by the callers below) points to a
    // live buffer of the size stored beside it. The kernel reads and writes only within those.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr() as *mut c_void,
            ATTR_SIZE as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A program loaded into the kernel.
pub struct KernelProg {
    fd: OwnedFd,
}

/// Loads a socket filter. `Err` carries the verifier log (or the errno if there is no log).
pub fn load(insns: &[Insn]) -> Result<KernelProg, String> {
    load_with_log(insns, 1).map(|(p, _)| p)
}

/// Whether the kernel verifier walked instruction `insn` while loading `insns` (read from the
/// per-instruction log of log level 2). Instructions it proved dead are not walked.
pub fn kernel_walks(insns: &[Insn], insn: usize) -> bool {
    let log = match load_with_log(insns, 2) {
        Ok((_, log)) => log,
        Err(log) => log,
    };
    let prefix = format!("{insn}: (");
    log.lines().any(|l| l.starts_with(&prefix))
}

fn load_with_log(insns: &[Insn], level: u32) -> Result<(KernelProg, String), String> {
    let code = Insn::encode_all(insns);
    let license = b"GPL\0";
    let mut log = vec![0u8; if level > 1 { 4 << 20 } else { 64 * 1024 }];
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_SOCKET_FILTER);
    attr.u32(4, insns.len() as u32);
    attr.u64(8, code.as_ptr() as u64);
    attr.u64(16, license.as_ptr() as u64);
    attr.u32(24, level); // log_level
    attr.u32(28, log.len() as u32);
    attr.u64(32, log.as_mut_ptr() as u64);
    let result = bpf(BPF_PROG_LOAD, &mut attr);
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
    match result {
        Ok(fd) => {
            // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor that nothing
            // else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            Ok((KernelProg { fd }, text))
        }
        Err(e) if text.is_empty() => Err(e.to_string()),
        Err(e) => Err(format!("{e}: {text}")),
    }
}

impl KernelProg {
    /// Runs the program with `view` as the packet; returns the kernel's 32-bit return value.
    pub fn run(&self, view: &[u8]) -> u32 {
        let mut data = vec![0u8; ETH_PAD];
        data.extend_from_slice(view);
        let mut attr = Attr::new();
        attr.u32(0, self.fd.as_raw_fd() as u32);
        attr.u32(8, data.len() as u32);
        attr.u64(16, data.as_ptr() as u64);
        attr.u32(32, 1); // repeat
        match bpf(BPF_PROG_TEST_RUN, &mut attr) {
            Ok(_) => attr.get_u32(4),
            Err(e) => panic!("BPF_PROG_TEST_RUN failed on {} bytes: {e}", view.len()),
        }
    }
}

/// Whether the kernel oracle is usable. When it is not, prints a loud SKIPPED line (the caller
/// then skips); under `CI` it panics instead, because CI runs as root and must have it.
pub fn available(test: &str) -> bool {
    let probe = [
        Insn::new(0xb7, 0, 0, 0, 7), // r0 = 7
        Insn::new(0x95, 0, 0, 0, 0), // exit
    ];
    let why = match load(&probe) {
        Ok(p) if p.run(&[]) == 7 => return true,
        Ok(_) => "the test run returned a wrong value".to_string(),
        Err(e) => e,
    };
    if std::env::var_os("CI").is_some() {
        panic!("kernel BPF oracle unavailable under CI ({test}): {why}");
    }
    // Straight to the process's stderr: the test harness captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: kernel BPF oracle unavailable (need root and bpf()): {why}"
    );
    false
}

pub mod gen;

/// The kernel verifier's per-instruction log (log level 2), for debugging.
pub fn log2(insns: &[Insn]) -> String {
    match load_with_log(insns, 2) {
        Ok((_, log)) => log,
        Err(log) => log,
    }
}
