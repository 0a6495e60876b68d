//! The mux's half of a `/proc/net/kcm` snapshot (the runtime adds socket-level and parser
//! figures it alone knows).

use super::MuxCore;
use crate::proc::{ProcConn, ProcEndpoint, ProcMux};

impl MuxCore {
    /// Everything `/proc/net/kcm` shows that the core knows: per-endpoint queues and status
    /// words, per-connection transmit counters and status words (`kcm-spec.md` §7.2).
    /// Parser counters and socket queue lengths are left at zero for the runtime to fill.
    pub fn proc_snapshot(&self) -> ProcMux {
        let endpoints = self
            .eps
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .map(|(i, e)| ProcEndpoint {
                index: i as u32,
                stats: e.stats,
                rx_queue_msgs: e.rx.len() as u64,
                rx_mem: e.rx_mem as u64,
                tx_queue_msgs: e.tx.queued_msgs as u64,
                reserved_conn: e.tx.reserved,
                tx_wait: e.tx.waiting,
                wait_more: e.tx.wait_more,
                rx_wait: e.rx_wait,
            })
            .collect();
        let conns = self
            .conns
            .iter()
            .flatten()
            .map(|c| ProcConn {
                index: c.id.index,
                stats: c.stats,
                done: c.done,
                tx_stopped: c.tx_stopped,
                reserved_by: c.tx_reserved_by,
                paused: !c.parked.is_empty(),
                ready_msg: !c.parked.is_empty(),
                ..ProcConn::default()
            })
            .collect();
        ProcMux {
            stats: self.stats,
            endpoints,
            conns,
        }
    }
}
