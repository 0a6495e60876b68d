//! Golden tests of the /proc renderers.
//!
//! The expected text was produced by C `printf` with the kernel's format strings
//! (`kcm-spec.md` §7.2, §7.3) on the same values, so the widths, the overflowing fields and
//! the trailing spaces are checked against printf itself, not against our reading of it.

use super::*;
use crate::stats::{ConnTxStats, ParserStats};

/// `/proc/net/kcm` for the fixtures of [`fixture`].
const KCM: &[&str] = &[
    "*** KCM statistics (2 MUX) ****",
    "Object         RX-Msgs    RX-Bytes         TX-Msgs    TX-Bytes         Recv-Q   Rmem     Send-Q   Smem     Status",
    "mux            12         3456             7          890              -        -        -        -        KCMs: 2, Psocks 5",
    "   kcm-0       5          600              7          890              2        1024     1        -        Psck-1 WMore RxWait ",
    "   kcm-1       0          0                0          0                0        0        0        -        TxWait ",
    "   psock-0     12         3456             0          0                0        0        0        0        RxWait=100 ",
    "   psock-1     0          0                7          890              3        4608     2        2304     Rsvd-0 RxWait ",
    "   psock-2     0          0                0          0                0        0        0        0        Done TxStop RxStop RxPause RdyRx ",
    "   psock-3     0          0                0          0                0        0        0        0        RdyRx ",
    "   psock-4     0          0                0          0                0        0        0        0        ",
    "mux            4294967296 18446744073709551615 0          99999999999      -        -        -        -        KCMs: 1, Psocks 1",
    "   kcm-1234567 1          2                3          4                3        2147483647 0        -        ",
    "   psock-123456 1          2                3          4                -5       6        7        8        RxPause ",
];

/// `/proc/net/kcm_stats` for [`totals`], correct values.
const STATS: &[&str] = &[
    "MUX      RX-Msgs    RX-Bytes         TX-Msgs    TX-Bytes         TX-Retries Attach     Unattach   UnattchRsvd RX-RdyDrops",
    "         101        20202            303        40404            5          6          7          8          9         ",
    "Psock    RX-Msgs    RX-Bytes         TX-Msgs    TX-Bytes         Reserved   Unreserved RX-Aborts  RX-Intr    RX-Unrecov RX-MemFail RX-NeedMor RX-BadLen  RX-TooBig  RX-Timeout TX-Aborts ",
    "         11         1234567890123    13         14               15         16         17         18         19         0          21         22         23         24         25        ",
];

/// `/proc/net/kcm_stats` for [`totals`], as a current kernel prints it.
const QUIRKS: &[&str] = &[
    "MUX      RX-Msgs    RX-Bytes         TX-Msgs    TX-Bytes         TX-Retries Attach     Unattach   UnattchRsvd RX-RdyDrops",
    "         101        20202            303        40404            0          6          8          7          9         ",
    "Psock    RX-Msgs    RX-Bytes         TX-Msgs    TX-Bytes         Reserved   Unreserved RX-Aborts  RX-Intr    RX-Unrecov RX-MemFail RX-NeedMor RX-BadLen  RX-TooBig  RX-Timeout TX-Aborts ",
    "         11         1234567890123    13         14               15         16         0          18         19         0          21         22         23         24         25        ",
];

fn golden(lines: &[&str]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn fixture() -> Vec<ProcMux> {
    let conn = |index: u32| ProcConn {
        index,
        ..ProcConn::default()
    };
    let a = ProcMux {
        stats: MuxStats {
            rx_msgs: 12,
            rx_bytes: 3456,
            tx_msgs: 7,
            tx_bytes: 890,
            ..MuxStats::default()
        },
        endpoints: vec![
            ProcEndpoint {
                index: 0,
                stats: EndpointStats {
                    rx_msgs: 5,
                    rx_bytes: 600,
                    tx_msgs: 7,
                    tx_bytes: 890,
                },
                rx_queue_msgs: 2,
                rx_mem: 1024,
                tx_queue_msgs: 1,
                reserved_conn: Some(1),
                wait_more: true,
                rx_wait: true,
                ..ProcEndpoint::default()
            },
            ProcEndpoint {
                index: 1,
                tx_wait: true,
                ..ProcEndpoint::default()
            },
        ],
        conns: vec![
            ProcConn {
                stats: ConnStats {
                    parser: ParserStats {
                        msgs: 12,
                        bytes: 3456,
                        ..ParserStats::default()
                    },
                    ..ConnStats::default()
                },
                rx_has_data: true,
                need_bytes: 100,
                ..conn(0)
            },
            ProcConn {
                stats: ConnStats {
                    tx: ConnTxStats {
                        tx_msgs: 7,
                        tx_bytes: 890,
                        ..ConnTxStats::default()
                    },
                    ..ConnStats::default()
                },
                sock_rx_queue: 3,
                sock_rmem: 4608,
                sock_tx_queue: 2,
                sock_wmem: 2304,
                reserved_by: Some(0),
                rx_has_data: true,
                ..conn(1)
            },
            ProcConn {
                done: true,
                tx_stopped: true,
                rx_stopped: true,
                paused: true,
                ready_msg: true,
                ..conn(2)
            },
            ProcConn {
                ready_msg: true,
                rx_has_data: true,
                need_bytes: 5,
                ..conn(3)
            },
            conn(4),
        ],
    };
    // Values wider than their columns push the rest of the line right.
    let b = ProcMux {
        stats: MuxStats {
            rx_msgs: 1 << 32,
            rx_bytes: u64::MAX,
            tx_bytes: 99_999_999_999,
            ..MuxStats::default()
        },
        endpoints: vec![ProcEndpoint {
            index: 1_234_567,
            stats: EndpointStats {
                rx_msgs: 1,
                rx_bytes: 2,
                tx_msgs: 3,
                tx_bytes: 4,
            },
            rx_queue_msgs: 3,
            rx_mem: 2_147_483_647,
            ..ProcEndpoint::default()
        }],
        conns: vec![ProcConn {
            index: 123_456,
            stats: ConnStats {
                parser: ParserStats {
                    msgs: 1,
                    bytes: 2,
                    ..ParserStats::default()
                },
                tx: ConnTxStats {
                    tx_msgs: 3,
                    tx_bytes: 4,
                    ..ConnTxStats::default()
                },
            },
            sock_rx_queue: -5,
            sock_rmem: 6,
            sock_tx_queue: 7,
            sock_wmem: 8,
            paused: true,
            ..ProcConn::default()
        }],
    };
    vec![a, b]
}

fn totals() -> ProcTotals {
    ProcTotals {
        mux: MuxStats {
            rx_msgs: 101,
            rx_bytes: 20202,
            tx_msgs: 303,
            tx_bytes: 40404,
            tx_retries: 5,
            psock_attach: 6,
            psock_unattach: 7,
            psock_unattach_rsvd: 8,
            rx_ready_drops: 9,
            tx_addr_drops: 1000,
        },
        conn: ConnStats {
            parser: ParserStats {
                msgs: 11,
                bytes: 1_234_567_890_123,
                mem_fail: 0,
                need_more_hdr: 21,
                msg_too_big: 23,
                msg_timeouts: 24,
                bad_hdr_len: 22,
                aborts: 17,
                interrupted: 18,
                unrecov_intr: 19,
                skipped_msgs: 1000,
                skipped_bytes: 1000,
            },
            tx: ConnTxStats {
                tx_msgs: 13,
                tx_bytes: 14,
                reserved: 15,
                unreserved: 16,
                tx_aborts: 25,
            },
        },
    }
}

#[test]
fn kcm_layout_matches_printf() {
    assert_eq!(render_kcm(&fixture()), golden(KCM));
}

#[test]
fn kcm_with_no_mux_is_title_and_header() {
    let text = render_kcm(&[]);
    assert_eq!(text, golden(&KCM[..2]).replace("(2 MUX)", "(0 MUX)"));
}

#[test]
fn kcm_stats_layout_matches_printf() {
    assert_eq!(render_kcm_stats(&totals()), golden(STATS));
}

#[test]
fn kcm_stats_kernel_quirks_match_printf() {
    let text = render_kcm_stats_kernel_quirks(&totals());
    assert_eq!(text, golden(QUIRKS));
    // Extensions have no column in the kernel layout.
    assert!(!text.contains("1000"));
}

/// The status words of a connection line (they start at column 107 when every number fits
/// its column).
fn conn_status(c: ProcConn) -> String {
    let text = render_kcm(&[ProcMux {
        conns: vec![c],
        ..ProcMux::default()
    }]);
    let line = text.lines().last().unwrap_or_default();
    line.get(107..).unwrap_or_default().to_string()
}

#[test]
fn conn_receive_status_words() {
    let c = |paused, ready_msg, rx_has_data, need_bytes| ProcConn {
        paused,
        ready_msg,
        rx_has_data,
        need_bytes,
        ..ProcConn::default()
    };
    // (paused, ready, data waiting, need_bytes) -> words
    let cases = [
        (c(false, false, false, 0), ""),
        (c(false, false, false, 9), ""),
        (c(false, false, true, 0), "RxWait "),
        (c(false, false, true, 9), "RxWait=9 "),
        (c(true, false, true, 9), "RxPause "),
        (c(false, true, true, 9), "RdyRx "),
        (c(true, true, false, 0), "RxPause RdyRx "),
    ];
    for (conn, want) in cases {
        let dbg = format!("{conn:?}");
        assert_eq!(conn_status(conn), want, "{dbg}");
    }
    let all = ProcConn {
        done: true,
        tx_stopped: true,
        rx_stopped: true,
        reserved_by: Some(3),
        rx_has_data: true,
        ..ProcConn::default()
    };
    assert_eq!(conn_status(all), "Done TxStop RxStop Rsvd-3 RxWait ");
}

#[test]
fn endpoint_status_words() {
    let status = |e: ProcEndpoint| {
        let text = render_kcm(&[ProcMux {
            endpoints: vec![e],
            ..ProcMux::default()
        }]);
        let line = text.lines().last().unwrap_or_default().to_string();
        line.get(107..).unwrap_or_default().to_string()
    };
    assert_eq!(status(ProcEndpoint::default()), "");
    let e = ProcEndpoint {
        tx_wait: true,
        rx_wait: true,
        ..ProcEndpoint::default()
    };
    assert_eq!(status(e), "TxWait RxWait ");
    let e = ProcEndpoint {
        reserved_conn: Some(0),
        wait_more: true,
        ..ProcEndpoint::default()
    };
    assert_eq!(status(e), "Psck-0 WMore ");
}
