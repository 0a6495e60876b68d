//! `/proc/net/kcm` socket columns (`kcm-spec.md` §7.2): a connection's Send-Q/Smem show the
//! bytes its socket has not sent yet, read from the socket itself (SIOCOUTQ).

mod common;

use bytes::Bytes;
use common::*;

/// A peer that does not read: what kcm wrote piles up in the attached socket's send queue, and
/// the psock row shows it.
#[test]
fn psock_row_shows_the_socket_send_queue() {
    let (ep, client, _server, conn) = attached();
    // 4 MiB cannot fit in the loopback buffers of a peer that never reads.
    let body = vec![7u8; 4 << 20];
    ep.send_to(conn, Bytes::from(frame(&body))).expect("send");
    let mut unsent = 0i64;
    wait_for("unsent bytes in the psock row", || {
        let text = ep.proc_kcm();
        let row = proc_conn_row(&text, conn.index).expect("psock row");
        unsent = row[7].parse().expect("Send-Q is a number");
        unsent > 0
    });
    let text = ep.proc_kcm();
    let row = proc_conn_row(&text, conn.index).expect("psock row");
    assert_eq!(row[8], row[7], "Smem shows the same unsent bytes:\n{text}");
    drop(client);
}
