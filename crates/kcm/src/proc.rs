//! `/proc/net/kcm` and `/proc/net/kcm_stats` for the muxes of this process.
//!
//! The kernel shows every mux of a network namespace; the user-space equivalent is every mux
//! of the process. Layout and columns follow `kcm-spec.md` §7.2–§7.3 (renderers in
//! [`kcm_core::proc`]); values are correct where the kernel's have quirks.

use std::os::fd::AsFd;
use std::sync::PoisonError;

use kcm_core::proc::{render_kcm, render_kcm_stats, ProcMux, ProcTotals};

use crate::endpoint::Endpoint;
use crate::shared::Shared;

fn snapshot(shared: &Shared) -> ProcMux {
    let mut snap = shared.lock().core.proc_snapshot();
    for pc in &mut snap.conns {
        let io = shared
            .conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|c| c.id.index == pc.index)
            .cloned();
        let Some(io) = io else { continue };
        let (inq, outq) = crate::sys::queue_lengths(io.fd.as_fd());
        pc.sock_rx_queue = inq;
        pc.sock_tx_queue = outq;
        pc.sock_rmem = inq;
        pc.sock_wmem = outq;
        if let Ok(rx) = io.rx.try_lock() {
            pc.stats.parser = *rx.strp.stats();
            pc.rx_stopped = rx.done;
            pc.need_bytes = rx.strp.need_bytes();
        }
        // kcm moves the socket's bytes into its own buffer, so a message waiting for its
        // remainder holds received data just as the kernel's TCP queue does (§7.2 `RxWait=<n>`).
        pc.rx_has_data = inq > 0 || pc.need_bytes > 0;
    }
    snap
}

fn totals(muxes: &[ProcMux]) -> ProcTotals {
    let reg = crate::registry::lock();
    let mut t = ProcTotals {
        mux: reg.dead_mux,
        conn: reg.dead_conn,
    };
    drop(reg);
    for m in muxes {
        t.mux += m.stats;
        for c in &m.conns {
            t.conn += c.stats;
        }
    }
    t
}

fn live_snapshots() -> Vec<ProcMux> {
    let muxes: Vec<_> = crate::registry::lock()
        .muxes
        .iter()
        .filter_map(|w| w.upgrade())
        .collect();
    muxes
        .iter()
        .map(|m| {
            let mut s = snapshot(m);
            // Unattached connections' counters live on in the mux aggregate (§7.3).
            let agg = *m.lock().core.aggregate_conn_stats();
            s.conns.push(kcm_core::proc::ProcConn {
                index: u32::MAX,
                stats: agg,
                done: true,
                ..Default::default()
            });
            s
        })
        .collect()
}

/// `/proc/net/kcm` for every live mux of this process.
///
/// ```
/// let ep = kcm::Endpoint::new(kcm::Kind::Datagram)?;
/// assert!(kcm::proc_net_kcm().contains("KCM statistics"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn proc_net_kcm() -> String {
    let mut snaps = live_snapshots();
    for s in &mut snaps {
        s.conns.retain(|c| c.index != u32::MAX);
    }
    render_kcm(&snaps)
}

/// `/proc/net/kcm_stats`: totals over every mux this process has had, live or destroyed.
pub fn proc_net_kcm_stats() -> String {
    render_kcm_stats(&totals(&live_snapshots()))
}

impl Endpoint {
    /// `/proc/net/kcm` for this endpoint's mux alone.
    pub fn proc_kcm(&self) -> String {
        render_kcm(&[snapshot(self.shared())])
    }

    /// `/proc/net/kcm_stats`-style totals for this endpoint's mux alone (live connections plus
    /// those already unattached).
    pub fn proc_kcm_stats(&self) -> String {
        let snap = snapshot(self.shared());
        let mut t = ProcTotals {
            mux: snap.stats,
            conn: *self.shared().lock().core.aggregate_conn_stats(),
        };
        for c in &snap.conns {
            t.conn += c.stats;
        }
        render_kcm_stats(&t)
    }
}
