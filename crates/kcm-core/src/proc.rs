//! Text renderers for the kernel's `/proc/net/kcm` and `/proc/net/kcm_stats` layouts
//! (`kcm-spec.md` §7.2, §7.3), so that tools and eyes trained on KCM read ours unchanged.
//!
//! The runtime fills plain snapshot structs ([`ProcMux`], [`ProcTotals`]); the renderers only
//! format. Columns are left-aligned with the kernel's printf widths; a value wider than its
//! column pushes the rest of the line right, as printf does. [`render_kcm_stats`] prints
//! correct values; [`render_kcm_stats_kernel_quirks`] prints what a current kernel prints
//! (`design.md` §2, decision 3).

use std::fmt::Write;

use crate::stats::{ConnStats, EndpointStats, MuxStats};

/// One endpoint (kernel: KCM socket) as shown in `/proc/net/kcm`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcEndpoint {
    /// Endpoint index in its mux.
    pub index: u32,
    /// The endpoint's counters.
    pub stats: EndpointStats,
    /// Messages waiting in its receive queue (`Recv-Q`).
    pub rx_queue_msgs: u64,
    /// Bytes of receive memory charged to it (`Rmem`).
    pub rx_mem: u64,
    /// Messages waiting in its transmit queue (`Send-Q`).
    pub tx_queue_msgs: u64,
    /// The connection it has reserved for transmit (`Psck-<n>`).
    pub reserved_conn: Option<u32>,
    /// Waiting for a connection to transmit on (`TxWait`).
    pub tx_wait: bool,
    /// Holding batched messages not yet pushed (`WMore`).
    pub wait_more: bool,
    /// Eligible to receive, i.e. on the mux's receive-waiting list (`RxWait`).
    pub rx_wait: bool,
}

/// One attached connection (kernel: psock) as shown in `/proc/net/kcm`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcConn {
    /// Connection index in its mux.
    pub index: u32,
    /// The connection's counters (receive columns come from its parser).
    pub stats: ConnStats,
    /// Receive-queue length of the underlying socket (kernel: buffers; `Recv-Q`).
    pub sock_rx_queue: i64,
    /// Receive memory of the underlying socket, bytes (`Rmem`).
    pub sock_rmem: i64,
    /// Write-queue length of the underlying socket (`Send-Q`).
    pub sock_tx_queue: i64,
    /// Write memory of the underlying socket, bytes (`Smem`).
    pub sock_wmem: i64,
    /// Being torn down after unattach (`Done`).
    pub done: bool,
    /// Transmit side aborted (`TxStop`).
    pub tx_stopped: bool,
    /// Stream parser stopped by a failure (`RxStop`).
    pub rx_stopped: bool,
    /// The endpoint that has reserved it for transmit (`Rsvd-<n>`).
    pub reserved_by: Option<u32>,
    /// Parser paused because no endpoint could take a message (`RxPause`).
    pub paused: bool,
    /// Holding a parsed message for the next eligible endpoint (`RdyRx`).
    pub ready_msg: bool,
    /// Bytes still missing of the current message when its length is known (`RxWait=<n>`).
    pub need_bytes: usize,
    /// Received bytes are waiting to be parsed (kernel: TCP receive queue non-empty); with
    /// neither `paused` nor `ready_msg`, shows `RxWait` or `RxWait=<need_bytes>`.
    pub rx_has_data: bool,
}

/// One mux with its endpoints and connections, in display order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcMux {
    /// The mux's counters.
    pub stats: MuxStats,
    /// Its endpoints.
    pub endpoints: Vec<ProcEndpoint>,
    /// Its attached connections.
    pub conns: Vec<ProcConn>,
}

/// Totals for `/proc/net/kcm_stats`: every mux's counters plus every connection's, live
/// and gone, summed by the runtime (`kcm-spec.md` §7.3).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcTotals {
    /// Sum of the mux counters.
    pub mux: MuxStats,
    /// Sum of the connection counters.
    pub conn: ConnStats,
}

/// Renders the `/proc/net/kcm` layout: a title with the mux count, a header, then per mux
/// one summary line, one line per endpoint and one per connection.
///
/// ```
/// use kcm_core::proc::{render_kcm, ProcMux};
///
/// let text = render_kcm(&[ProcMux::default()]);
/// assert!(text.starts_with("*** KCM statistics (1 MUX) ****\n"));
/// assert!(text.ends_with("KCMs: 0, Psocks 0\n"));
/// ```
pub fn render_kcm(muxes: &[ProcMux]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "*** KCM statistics ({} MUX) ****", muxes.len());
    let _ = writeln!(
        s,
        "{:<14} {:<10} {:<16} {:<10} {:<16} {:<8} {:<8} {:<8} {:<8} Status",
        "Object", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Recv-Q", "Rmem", "Send-Q", "Smem"
    );
    for mux in muxes {
        render_mux(&mut s, mux);
    }
    s
}

fn render_mux(s: &mut String, mux: &ProcMux) {
    let m = &mux.stats;
    // "mux" in 6 columns then an empty 8-column field: the 14-column Object column.
    let _ = writeln!(
        s,
        "{:<6}{:<8} {:<10} {:<16} {:<10} {:<16} {:<8} {:<8} {:<8} {:<8} KCMs: {}, Psocks {}",
        "mux",
        "",
        m.rx_msgs,
        m.rx_bytes,
        m.tx_msgs,
        m.tx_bytes,
        "-",
        "-",
        "-",
        "-",
        mux.endpoints.len(),
        mux.conns.len()
    );
    for e in &mux.endpoints {
        render_endpoint(s, e);
    }
    for c in &mux.conns {
        render_conn(s, c);
    }
}

fn render_endpoint(s: &mut String, e: &ProcEndpoint) {
    let st = &e.stats;
    let _ = write!(
        s,
        "   kcm-{:<7} {:<10} {:<16} {:<10} {:<16} {:<8} {:<8} {:<8} {:<8} ",
        e.index,
        st.rx_msgs,
        st.rx_bytes,
        st.tx_msgs,
        st.tx_bytes,
        e.rx_queue_msgs,
        e.rx_mem,
        e.tx_queue_msgs,
        "-"
    );
    // Status words, each followed by a space, in the kernel's order.
    if let Some(c) = e.reserved_conn {
        let _ = write!(s, "Psck-{c} ");
    }
    word(s, e.tx_wait, "TxWait ");
    word(s, e.wait_more, "WMore ");
    word(s, e.rx_wait, "RxWait ");
    s.push('\n');
}

fn render_conn(s: &mut String, c: &ProcConn) {
    let _ = write!(
        s,
        "   psock-{:<5} {:<10} {:<16} {:<10} {:<16} {:<8} {:<8} {:<8} {:<8} ",
        c.index,
        c.stats.parser.msgs,
        c.stats.parser.bytes,
        c.stats.tx.tx_msgs,
        c.stats.tx.tx_bytes,
        c.sock_rx_queue,
        c.sock_rmem,
        c.sock_tx_queue,
        c.sock_wmem
    );
    word(s, c.done, "Done ");
    word(s, c.tx_stopped, "TxStop ");
    word(s, c.rx_stopped, "RxStop ");
    if let Some(e) = c.reserved_by {
        let _ = write!(s, "Rsvd-{e} ");
    }
    // §7.2: a receiving connection says whether it waits for bytes (and how many); a held
    // one says why it holds.
    if !c.paused && !c.ready_msg {
        if c.rx_has_data && c.need_bytes > 0 {
            let _ = write!(s, "RxWait={} ", c.need_bytes);
        } else if c.rx_has_data {
            s.push_str("RxWait ");
        }
    } else {
        word(s, c.paused, "RxPause ");
        word(s, c.ready_msg, "RdyRx ");
    }
    s.push('\n');
}

fn word(s: &mut String, on: bool, w: &str) {
    if on {
        s.push_str(w);
    }
}

/// Renders the `/proc/net/kcm_stats` layout with correct values: the mux line in header
/// order (`Attach`, `Unattach`, `UnattchRsvd`), with the real `TX-Retries` and `RX-Aborts`.
///
/// ```
/// use kcm_core::proc::{render_kcm_stats, ProcTotals};
///
/// let mut t = ProcTotals::default();
/// t.mux.tx_retries = 3;
/// let text = render_kcm_stats(&t);
/// assert_eq!(text.lines().count(), 4);
/// assert!(text.lines().nth(1).unwrap().contains(" 3 "));
/// ```
pub fn render_kcm_stats(t: &ProcTotals) -> String {
    render_stats(t, false)
}

/// Renders `/proc/net/kcm_stats` exactly as a current kernel does, quirks included
/// (`kcm-spec.md` §7.1): `TX-Retries` and `RX-Aborts` print 0, and the values under
/// `Unattach` and `UnattchRsvd` are swapped.
///
/// ```
/// use kcm_core::proc::{render_kcm_stats_kernel_quirks, ProcTotals};
///
/// let mut t = ProcTotals::default();
/// t.mux.tx_retries = 3;
/// assert!(!render_kcm_stats_kernel_quirks(&t).contains('3'));
/// ```
pub fn render_kcm_stats_kernel_quirks(t: &ProcTotals) -> String {
    render_stats(t, true)
}

fn render_stats(t: &ProcTotals, quirks: bool) -> String {
    let m = &t.mux;
    let p = &t.conn.parser;
    let tx = &t.conn.tx;
    // The kernel's aggregation skips tx_retries and never sets the parser's aborted flag,
    // and prints unattach_rsvd under "Unattach" (and the reverse).
    let (retries, aborts) = if quirks {
        (0, 0)
    } else {
        (m.tx_retries, p.aborts)
    };
    let (col_unattach, col_rsvd) = if quirks {
        (m.psock_unattach_rsvd, m.psock_unattach)
    } else {
        (m.psock_unattach, m.psock_unattach_rsvd)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<10} {:<16} {:<10} {:<16} {:<10} {:<10} {:<10} {:<10} {:<10}",
        "MUX",
        "RX-Msgs",
        "RX-Bytes",
        "TX-Msgs",
        "TX-Bytes",
        "TX-Retries",
        "Attach",
        "Unattach",
        "UnattchRsvd",
        "RX-RdyDrops"
    );
    let _ = writeln!(
        s,
        "{:<8} {:<10} {:<16} {:<10} {:<16} {:<10} {:<10} {:<10} {:<10} {:<10}",
        "",
        m.rx_msgs,
        m.rx_bytes,
        m.tx_msgs,
        m.tx_bytes,
        retries,
        m.psock_attach,
        col_unattach,
        col_rsvd,
        m.rx_ready_drops
    );
    let _ = writeln!(
        s,
        "{:<8} {:<10} {:<16} {:<10} {:<16} {:<10} {:<10} {:<10} {:<10} {:<10} {:<10} {:<10} \
         {:<10} {:<10} {:<10} {:<10}",
        "Psock",
        "RX-Msgs",
        "RX-Bytes",
        "TX-Msgs",
        "TX-Bytes",
        "Reserved",
        "Unreserved",
        "RX-Aborts",
        "RX-Intr",
        "RX-Unrecov",
        "RX-MemFail",
        "RX-NeedMor",
        "RX-BadLen",
        "RX-TooBig",
        "RX-Timeout",
        "TX-Aborts"
    );
    let _ = writeln!(
        s,
        "{:<8} {:<10} {:<16} {:<10} {:<16} {:<10} {:<10} {:<10} {:<10} {:<10} {:<10} {:<10} \
         {:<10} {:<10} {:<10} {:<10}",
        "",
        p.msgs,
        p.bytes,
        tx.tx_msgs,
        tx.tx_bytes,
        tx.reserved,
        tx.unreserved,
        aborts,
        p.interrupted,
        p.unrecov_intr,
        p.mem_fail,
        p.need_more_hdr,
        p.bad_hdr_len,
        p.msg_too_big,
        p.msg_timeouts,
        tx.tx_aborts
    );
    s
}

#[cfg(test)]
mod tests;
