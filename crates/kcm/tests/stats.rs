//! Checklist `kcm-spec.md` §11, "Statistics" (§7), over real loopback sockets.
//!
//! The process-wide renderers ([`kcm::proc_net_kcm`], [`kcm::proc_net_kcm_stats`]) show every
//! mux of the process, so the tests of this binary run one at a time (`SERIAL`) and compare
//! exact numbers. The kernel-quirks layout is a renderer option of `kcm_core::proc`, tested
//! there; the runtime prints correct values (decision 3), which is checked here.

mod common;

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use common::*;
use kcm::{ConnectionId, Endpoint, Kind};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `body` framed on `conn` and waits until the peer has it.
fn send_to(ep: &Endpoint, conn: ConnectionId, client: &mut std::net::TcpStream, body: &[u8]) {
    ep.send_to(conn, Bytes::from(frame(body))).expect("send_to");
    assert_eq!(
        read_frame(client).expect("the peer reads the message"),
        frame(body)
    );
}

/// §7.1: per-endpoint messages and bytes received (by recv) and sent (accepted by send).
#[test]
fn endpoint_counters_count_messages_and_bytes_both_ways() {
    let _g = serial();
    let ep = fifo_endpoint(Kind::Datagram);
    let idle = clone_of(&ep);
    let (mut client, server) = tcp_pair();
    ep.attach(&server, thrift()).unwrap();
    client
        .write_all(&[frame(b"a"), frame(b"bc"), frame(b"def")].concat())
        .unwrap();
    for _ in 0..3 {
        ep.recv().unwrap();
    }
    ep.send(Bytes::from(frame(b"reply 1"))).unwrap();
    ep.send(Bytes::from(frame(b"reply 22"))).unwrap();
    let s = ep.stats();
    assert_eq!((s.rx_msgs, s.rx_bytes), (3, 5 + 6 + 7));
    assert_eq!((s.tx_msgs, s.tx_bytes), (2, 11 + 12));
    assert_eq!(idle.stats(), Default::default());
}

/// §7.1: per-connection parser counters and transmit counters, including reservations.
#[test]
fn connection_counters_count_parsing_and_transmit() {
    let _g = serial();
    let (ep, mut client, _server, conn) = attached();
    client
        .write_all(&[frame(b"one"), frame(b"two")].concat())
        .unwrap();
    ep.recv().unwrap();
    ep.recv().unwrap();
    client.write_all(&frame(b"three")[..3]).unwrap(); // half a header
    wait_for("the partial header to be read", || {
        ep.connection_stats(conn).unwrap().parser.bytes == 17
    });
    send_to(&ep, conn, &mut client, b"out 1");
    send_to(&ep, conn, &mut client, b"out two");
    wait_for("both reservations released", || {
        ep.connection_stats(conn).unwrap().tx.unreserved == 2
    });

    let s = ep.connection_stats(conn).unwrap();
    assert_eq!((s.parser.msgs, s.parser.bytes), (2, 17));
    assert!(s.parser.need_more_hdr >= 1, "{:?}", s.parser);
    assert_eq!(
        (s.parser.msg_too_big, s.parser.bad_hdr_len, s.parser.aborts),
        (0, 0, 0)
    );
    assert_eq!((s.tx.tx_msgs, s.tx.tx_bytes), (2, 9 + 11));
    assert_eq!((s.tx.reserved, s.tx.unreserved, s.tx.tx_aborts), (2, 2, 0));
}

/// §7.1: per-mux counters: traffic through all its endpoints, attaches and unattaches.
#[test]
fn mux_counters_count_traffic_attaches_and_unattaches() {
    let _g = serial();
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    let (mut c0, s0) = tcp_pair();
    let (mut c1, s1) = tcp_pair();
    let k0 = e0.attach(&s0, thrift()).unwrap();
    let k1 = e0.attach(&s1, thrift()).unwrap();
    c0.write_all(&frame(b"to e0")).unwrap();
    wait_for("delivery", || queued(&e0) == 1);
    c1.write_all(&frame(b"to e1")).unwrap();
    wait_for("delivery", || queued(&e1) == 1);
    send_to(&e0, k0, &mut c0, b"x");
    send_to(&e1, k1, &mut c1, b"yy");
    e1.unattach(&s1).unwrap();

    let m = e1.mux_stats();
    assert_eq!((m.rx_msgs, m.rx_bytes), (2, 18));
    assert_eq!((m.tx_msgs, m.tx_bytes), (2, 5 + 6));
    assert_eq!(
        (m.psock_attach, m.psock_unattach, m.psock_unattach_rsvd),
        (2, 1, 0)
    );
    assert_eq!((m.rx_ready_drops, m.tx_retries), (0, 0));
}

/// §7.1, §7.3: the counters of an unattached connection live on in its mux's totals.
#[test]
fn connection_counters_survive_unattach_in_the_mux_totals() {
    let _g = serial();
    let (ep, mut client, server, conn) = attached();
    client
        .write_all(&[frame(b"one"), frame(b"two")].concat())
        .unwrap();
    ep.recv().unwrap();
    ep.recv().unwrap();
    send_to(&ep, conn, &mut client, b"out");
    wait_for("the reservation released", || {
        ep.connection_stats(conn).unwrap().tx.unreserved == 1
    });
    let live = kcm_stats_values(&ep.proc_kcm_stats());
    ep.unattach(&server).unwrap();
    assert!(ep.connection_stats(conn).is_none());
    let gone = kcm_stats_values(&ep.proc_kcm_stats());

    for key in [
        "Psock RX-Msgs",
        "Psock RX-Bytes",
        "Psock TX-Msgs",
        "Psock TX-Bytes",
        "Psock Reserved",
        "Psock Unreserved",
    ] {
        assert_eq!(gone[key], live[key], "{key} changed at unattach");
    }
    assert_eq!((gone["Psock RX-Msgs"], gone["Psock RX-Bytes"]), (2, 14));
    assert_eq!((gone["Psock TX-Msgs"], gone["Psock TX-Bytes"]), (1, 7));
    assert_eq!((gone["Mux Attach"], gone["Mux Unattach"]), (1, 1));
}

/// §7.3: `/proc/net/kcm_stats` totals include muxes already destroyed.
#[test]
fn counters_survive_mux_destruction_in_the_process_totals() {
    let _g = serial();
    let before = kcm_stats_values(&kcm::proc_net_kcm_stats());
    {
        let (ep, mut client, server, conn) = attached();
        client
            .write_all(&[frame(b"one"), frame(b"two"), frame(b"three")].concat())
            .unwrap();
        for _ in 0..3 {
            ep.recv().unwrap();
        }
        send_to(&ep, conn, &mut client, b"bye");
        let (_c2, s2) = tcp_pair();
        ep.attach(&s2, thrift()).unwrap();
        ep.unattach(&server).unwrap();
        // The mux dies here with one connection still attached.
    }
    let after = kcm_stats_values(&kcm::proc_net_kcm_stats());
    let delta = |k: &str| after[k] - before[k];
    assert_eq!(
        (delta("Mux RX-Msgs"), delta("Mux RX-Bytes")),
        (3, 7 + 7 + 9)
    );
    assert_eq!((delta("Mux TX-Msgs"), delta("Mux TX-Bytes")), (1, 7));
    assert_eq!((delta("Mux Attach"), delta("Mux Unattach")), (2, 2));
    assert_eq!((delta("Psock RX-Msgs"), delta("Psock RX-Bytes")), (3, 23));
    assert_eq!((delta("Psock TX-Msgs"), delta("Psock TX-Bytes")), (1, 7));
}

/// §7.2: `/proc/net/kcm` shows one line per mux, endpoint and connection with their
/// counters, queues and status words; the process-wide view lists every live mux.
#[test]
fn proc_net_kcm_shows_every_mux_endpoint_and_connection_with_its_counts() {
    let _g = serial();
    let e0 = fifo_endpoint(Kind::Datagram);
    let e1 = clone_of(&e0);
    e1.set_recv_disable(true).unwrap();
    let (mut c0, s0) = tcp_pair();
    let (mut c1, s1) = tcp_pair();
    let k0 = e0.attach(&s0, thrift()).unwrap();
    let k1 = e0.attach(&s1, thrift()).unwrap();
    c0.write_all(&[frame(b"ab"), frame(b"cd")].concat())
        .unwrap();
    assert_eq!(&e0.recv().unwrap().data[..], &frame(b"ab")[..]);
    wait_for("the second message", || queued(&e0) == 1);
    send_to(&e0, k1, &mut c1, b"xyz");

    let text = e0.proc_kcm();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "*** KCM statistics (1 MUX) ****", "{text}");
    assert!(
        lines[1].starts_with("Object") && lines[1].ends_with("Status"),
        "{text}"
    );
    let mux: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        mux,
        ["mux", "2", "12", "1", "7", "-", "-", "-", "-", "KCMs:", "2,", "Psocks", "2"],
        "{text}"
    );
    let row = |cols: Option<Vec<String>>| cols.unwrap_or_else(|| panic!("missing row in\n{text}"));
    // kcm-0: received 1 (6 bytes), sent 1 (7 bytes), one message (6 bytes) queued; eligible.
    assert_eq!(
        row(proc_endpoint_row(&text, 0)),
        ["kcm-0", "1", "6", "1", "7", "1", "6", "0", "-", "RxWait"]
    );
    // kcm-1: disabled, so not eligible.
    assert_eq!(
        row(proc_endpoint_row(&text, 1)),
        ["kcm-1", "0", "0", "0", "0", "0", "0", "0", "-"]
    );
    assert_eq!(
        row(proc_conn_row(&text, k0.index))[..5],
        ["psock-0", "2", "12", "0", "0"]
    );
    assert_eq!(
        row(proc_conn_row(&text, k1.index))[..5],
        ["psock-1", "0", "0", "1", "7"]
    );
    assert_eq!(lines.len(), 7, "{text}");

    let other = endpoint(Kind::SeqPacket);
    let all = kcm::proc_net_kcm();
    assert!(
        all.starts_with("*** KCM statistics (2 MUX) ****\n"),
        "{all}"
    );
    assert_eq!(all.lines().filter(|l| l.starts_with("mux")).count(), 2);
    drop(other);
    assert!(kcm::proc_net_kcm().starts_with("*** KCM statistics (1 MUX) ****\n"));
}
