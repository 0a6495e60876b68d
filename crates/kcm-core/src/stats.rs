//! Statistics, as plain structs (`kcm-spec.md` §7.1).
//!
//! The field names follow the kernel's `struct kcm_stats`, `struct kcm_psock_stats`,
//! `struct strp_stats` and `struct kcm_mux_stats`; all counters are `u64` here (the kernel
//! uses 32 bits for some). Fields marked *extension* have no kernel counterpart.

use std::ops::AddAssign;

/// Per-endpoint counters (kernel: `struct kcm_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages returned by receive calls (peeks excluded).
    pub rx_msgs: u64,
    /// Bytes returned by receive calls (as copied; peeks excluded).
    pub rx_bytes: u64,
    /// Messages completed by send calls.
    pub tx_msgs: u64,
    /// Bytes accepted by send calls.
    pub tx_bytes: u64,
}

/// Per-connection stream-parser counters (kernel: `struct strp_stats` plus the aggregate
/// flags of `struct strp_aggr_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Complete messages parsed.
    pub msgs: u64,
    /// Bytes consumed from the connection.
    pub bytes: u64,
    /// Buffer allocation failures (always 0 here: Rust aborts on OOM; kept for the layout).
    pub mem_fail: u64,
    /// Parser calls that answered "need more".
    pub need_more_hdr: u64,
    /// Messages whose length exceeded the maximum (EMSGSIZE, or skipped by policy).
    pub msg_too_big: u64,
    /// Assembly timeouts (ETIMEDOUT).
    pub msg_timeouts: u64,
    /// Lengths that did not extend past the bytes already seen (EPROTO).
    pub bad_hdr_len: u64,
    /// Parsers that ended aborted (counted once per connection).
    pub aborts: u64,
    /// Parsers that ended interrupted: any parser error, or `-ESTRPIPE` at a message start.
    pub interrupted: u64,
    /// Parsers that ended unrecoverably interrupted (`-ESTRPIPE` mid-message).
    pub unrecov_intr: u64,
    /// *Extension*: messages dropped by a parser's [`Parse::Skip`](crate::Parse::Skip).
    pub skipped_msgs: u64,
    /// *Extension*: bytes dropped by a parser's [`Parse::Skip`](crate::Parse::Skip).
    pub skipped_bytes: u64,
}

/// Per-connection transmit counters (kernel: `struct kcm_psock_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnTxStats {
    /// Messages fully written to the connection.
    pub tx_msgs: u64,
    /// Bytes written to the connection.
    pub tx_bytes: u64,
    /// Times an endpoint reserved this connection for transmit.
    pub reserved: u64,
    /// Times an endpoint released this connection.
    pub unreserved: u64,
    /// Transmit-side aborts (hard write errors, unattach or close while reserved).
    pub tx_aborts: u64,
}

/// All counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Receive side (the stream parser).
    pub parser: ParserStats,
    /// Transmit side.
    pub tx: ConnTxStats,
}

/// Per-mux counters (kernel: `struct kcm_mux_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// Messages delivered to endpoints.
    pub rx_msgs: u64,
    /// Bytes delivered to endpoints.
    pub rx_bytes: u64,
    /// Messages fully written to connections.
    pub tx_msgs: u64,
    /// Bytes written to connections.
    pub tx_bytes: u64,
    /// Parked messages dropped by unattach.
    pub rx_ready_drops: u64,
    /// Messages retried from byte 0 on another connection after a transmit abort.
    pub tx_retries: u64,
    /// Connections attached.
    pub psock_attach: u64,
    /// Connections unattached while reserved for transmit.
    pub psock_unattach_rsvd: u64,
    /// Connections unattached.
    pub psock_unattach: u64,
    /// *Extension*: addressed messages dropped because their connection failed or went away.
    pub tx_addr_drops: u64,
}

macro_rules! impl_add_assign {
    ($t:ty { $($f:ident),* }) => {
        impl AddAssign for $t {
            fn add_assign(&mut self, o: Self) {
                $(self.$f += o.$f;)*
            }
        }
    };
}

impl_add_assign!(EndpointStats {
    rx_msgs,
    rx_bytes,
    tx_msgs,
    tx_bytes
});
impl_add_assign!(ParserStats {
    msgs,
    bytes,
    mem_fail,
    need_more_hdr,
    msg_too_big,
    msg_timeouts,
    bad_hdr_len,
    aborts,
    interrupted,
    unrecov_intr,
    skipped_msgs,
    skipped_bytes
});
impl_add_assign!(ConnTxStats {
    tx_msgs,
    tx_bytes,
    reserved,
    unreserved,
    tx_aborts
});
impl_add_assign!(MuxStats {
    rx_msgs,
    rx_bytes,
    tx_msgs,
    tx_bytes,
    rx_ready_drops,
    tx_retries,
    psock_attach,
    psock_unattach_rsvd,
    psock_unattach,
    tx_addr_drops
});

impl AddAssign for ConnStats {
    fn add_assign(&mut self, o: Self) {
        self.parser += o.parser;
        self.tx += o.tx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_assign_sums_every_field() {
        let mut a = MuxStats {
            rx_msgs: 1,
            tx_retries: 2,
            ..Default::default()
        };
        a += MuxStats {
            rx_msgs: 3,
            psock_unattach: 4,
            ..Default::default()
        };
        assert_eq!(a.rx_msgs, 4);
        assert_eq!(a.tx_retries, 2);
        assert_eq!(a.psock_unattach, 4);
    }
}
