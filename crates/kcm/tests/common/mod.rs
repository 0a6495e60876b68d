//! Helpers shared by the integration tests: loopback TCP pairs, Thrift framing, endpoints
//! that cannot hang the suite, polling with a deadline, and readers for the `/proc` text.
//!
//! Every endpoint and every peer socket made here has a read timeout, so a bug shows up as a
//! failed assertion within seconds, never as a hung test run.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcm::{ConnectionId, Endpoint, Kind, Message, MuxOptions, Parser};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The errno numbers the tests expect (from rustix, so they match the platform).
pub mod errno {
    use rustix::io::Errno;

    /// Not a socket / not attached here.
    pub const ENOENT: i32 = Errno::NOENT.raw_os_error();
    /// Already attached / unattach under way.
    pub const EALREADY: i32 = Errno::ALREADY.raw_os_error();
    /// Wrong kind of socket, listening or closed.
    pub const EOPNOTSUPP: i32 = Errno::OPNOTSUPP.raw_os_error();
    /// Posted on a connection by state changes and transmit aborts.
    pub const EPIPE: i32 = Errno::PIPE.raw_os_error();
    /// Message longer than the connection's maximum.
    pub const EMSGSIZE: i32 = Errno::MSGSIZE.raw_os_error();
    /// Bad header length.
    pub const EPROTO: i32 = Errno::PROTO.raw_os_error();
    /// Assembly timeout.
    pub const ETIMEDOUT: i32 = Errno::TIMEDOUT.raw_os_error();
    /// Parser handed the stream back at a message start.
    pub const ESTRPIPE: i32 = Errno::STRPIPE.raw_os_error();
    /// Parser handed the stream back mid-message.
    pub const ENODATA: i32 = Errno::NODATA.raw_os_error();
    /// A parser's own error in the tests.
    pub const EBADMSG: i32 = Errno::BADMSG.raw_os_error();
}

/// A connected loopback TCP pair on 127.0.0.1: `(client, server)`, with `TCP_NODELAY`.
///
/// The client (the test's peer) has read and write timeouts of [`TIMEOUT`]. The server end,
/// the one tests attach, keeps the kernel's defaults, because attach takes the connection's
/// assembly timeout from its `SO_RCVTIMEO` (`kcm-spec.md` §6.3); a test that reads it
/// directly after unattach sets a timeout first.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    pair_on("127.0.0.1:0".parse().expect("literal address")).expect("loopback TCP pair")
}

/// A connected TCP pair on `[::1]`, or `None` when this host has no IPv6 loopback.
pub fn tcp_pair_v6() -> Option<(TcpStream, TcpStream)> {
    pair_on("[::1]:0".parse().expect("literal address")).ok()
}

fn pair_on(addr: SocketAddr) -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(addr)?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_read_timeout(Some(TIMEOUT))?;
    client.set_write_timeout(Some(TIMEOUT))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// A Thrift frame: the body's length as 4 bytes big-endian, then the body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("test bodies fit in u32");
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Reads one Thrift frame from a stream and returns it whole, header included (as
/// [`frame`] builds it and as kcm delivers messages).
pub fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut hdr = [0u8; 4];
    stream.read_exact(&mut hdr)?;
    let len = u32::from_be_bytes(hdr) as usize;
    let mut out = vec![0u8; 4 + len];
    out[..4].copy_from_slice(&hdr);
    stream.read_exact(&mut out[4..])?;
    Ok(out)
}

/// The Thrift framed-transport parser (the example of the kernel's KCM documentation).
pub fn thrift() -> Arc<dyn Parser> {
    kcm::presets::by_name("thrift").expect("thrift preset")
}

/// Gives an endpoint read and write timeouts of [`TIMEOUT`] so no call can hang a test.
pub fn guard(ep: Endpoint) -> Endpoint {
    ep.set_read_timeout(Some(TIMEOUT));
    ep.set_write_timeout(Some(TIMEOUT));
    ep
}

/// A new mux's first endpoint, with timeouts.
pub fn endpoint(kind: Kind) -> Endpoint {
    guard(Endpoint::new(kind).expect("new endpoint"))
}

/// A new mux that steers strictly by the eligible FIFO (`prefer_local` off), as the kernel.
pub fn fifo_endpoint(kind: Kind) -> Endpoint {
    let mut opts = MuxOptions::default();
    opts.prefer_local = false;
    guard(Endpoint::with_options(kind, opts).expect("new endpoint"))
}

/// Another endpoint on the same mux, with timeouts.
pub fn clone_of(ep: &Endpoint) -> Endpoint {
    guard(ep.clone_endpoint().expect("clone endpoint"))
}

/// A datagram endpoint with one Thrift connection attached: `(endpoint, client, server,
/// connection)`. The test keeps `server` so it can unattach by descriptor.
pub fn attached() -> (Endpoint, TcpStream, TcpStream, ConnectionId) {
    let ep = endpoint(Kind::Datagram);
    let (client, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).expect("attach");
    (ep, client, server, conn)
}

/// Attaches the server end of a new loopback pair to `ep` with the Thrift parser: `(peer,
/// connection)`.
pub fn attach_pair(ep: &Endpoint) -> (TcpStream, ConnectionId) {
    let (peer, server) = tcp_pair();
    let conn = ep.attach(&server, thrift()).expect("attach");
    (peer, conn)
}

/// [`attach_pair`] with small kernel buffers (well under a megabyte in all), so that writes
/// to a peer that does not read soon find its socket full. (Not smaller: a receive buffer far
/// below loopback's 64 KiB segment size makes TCP crawl on zero-window probes.)
pub fn attach_narrow(ep: &Endpoint) -> (TcpStream, ConnectionId) {
    let (peer, server) = tcp_pair();
    shrink_recv_buffer(&peer, 64 * 1024);
    shrink_send_buffer(&server, 4096);
    let conn = ep.attach(&server, thrift()).expect("attach");
    (peer, conn)
}

/// The errno of an I/O error (-1 if it has none).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Asserts that `r` failed with `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32) {
    match r {
        Ok(v) => panic!("expected errno {errno}, got Ok({v:?})"),
        Err(e) => assert_eq!(errno_of(&e), errno, "expected errno {errno}, got {e}"),
    }
}

/// Polls `cond` until it holds; fails the test after [`TIMEOUT`]. For effects that happen
/// on another thread (the engine), where no blocking call can wait for them.
#[track_caller]
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Takes one message without waiting: `None` if nothing is queued. Leaves the endpoint
/// blocking afterwards.
pub fn try_recv(ep: &Endpoint) -> Option<Message> {
    ep.set_nonblocking(true);
    let r = ep.recv();
    ep.set_nonblocking(false);
    match r {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("recv failed: {e}"),
    }
}

/// Takes every message queued on the endpoint without waiting.
pub fn drain(ep: &Endpoint) -> Vec<Message> {
    std::iter::from_fn(|| try_recv(ep)).collect()
}

/// The columns of the `/proc/net/kcm` line of endpoint `kcm-<index>` in `text`.
pub fn proc_endpoint_row(text: &str, index: u32) -> Option<Vec<String>> {
    proc_row(text, &format!("kcm-{index}"))
}

/// The columns of the `/proc/net/kcm` line of connection `psock-<index>` in `text`.
pub fn proc_conn_row(text: &str, index: u32) -> Option<Vec<String>> {
    proc_row(text, &format!("psock-{index}"))
}

/// Asserts whether the `/proc/net/kcm` line of `conn` shows `flag` (`RxStop`, `RdyRx`,
/// `RxWait=<n>`, …); a failure prints the whole table.
#[track_caller]
pub fn assert_conn_flag(ep: &Endpoint, conn: ConnectionId, flag: &str, shown: bool) {
    let text = ep.proc_kcm();
    let row = proc_conn_row(&text, conn.index)
        .unwrap_or_else(|| panic!("no line for {conn:?} in:\n{text}"));
    assert_eq!(
        row.iter().any(|col| col == flag),
        shown,
        "{flag} shown on {conn:?}:\n{text}"
    );
}

fn proc_row(text: &str, object: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(object))
}

/// Messages queued on endpoint `ep` (its `Recv-Q` column in `/proc/net/kcm`), read without
/// taking any.
pub fn queued(ep: &Endpoint) -> u64 {
    let text = ep.proc_kcm();
    let row = proc_endpoint_row(&text, ep.id().0).expect("endpoint row in /proc/net/kcm");
    row[5].parse().expect("Recv-Q is a number")
}

/// The `/proc/net/kcm_stats` values by column name, from its two value lines: the mux
/// line's as `"Mux <column>"`, the psock line's as `"Psock <column>"` (for example
/// `"Mux TX-Retries"`, `"Psock RX-BadLen"`).
pub fn kcm_stats_values(text: &str) -> std::collections::HashMap<String, u64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "kcm_stats has four lines:\n{text}");
    let mut out = std::collections::HashMap::new();
    for (hdr, vals, prefix) in [(lines[0], lines[1], "Mux"), (lines[2], lines[3], "Psock")] {
        // The first header word names the section ("MUX", "Psock") and has no value.
        let names: Vec<&str> = hdr.split_whitespace().skip(1).collect();
        let values: Vec<u64> = vals
            .split_whitespace()
            .map(|v| v.parse().expect("a number"))
            .collect();
        assert_eq!(names.len(), values.len(), "columns of:\n{hdr}\n{vals}");
        for (n, v) in names.into_iter().zip(values) {
            out.insert(format!("{prefix} {n}"), v);
        }
    }
    out
}

// ---- helpers for the send/transmit/fault tests (part B) ----

/// Collects the mux's connection events until one for `conn` satisfies `pred`; fails the test
/// after [`TIMEOUT`]. Returns every event taken so far (they are taken from the mux).
#[track_caller]
pub fn wait_for_event(
    ep: &Endpoint,
    conn: ConnectionId,
    what: &str,
    pred: impl Fn(&kcm::ConnectionEventKind) -> bool,
) -> Vec<kcm::ConnectionEvent> {
    let mut seen = Vec::new();
    wait_for(what, || {
        seen.extend(ep.take_events());
        seen.iter().any(|e| e.conn == conn && pred(&e.kind))
    });
    seen
}

/// Makes closing `s` send a reset instead of a FIN (`SO_LINGER` with a zero timeout).
pub fn set_linger_zero<S: std::os::fd::AsFd>(s: &S) {
    rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO)).expect("SO_LINGER");
}

/// Shrinks a socket's kernel send buffer (the kernel doubles the value and enforces a minimum
/// of a few KiB), so that writes towards a peer that does not read soon find it full.
pub fn shrink_send_buffer<S: std::os::fd::AsFd>(s: &S, bytes: usize) {
    rustix::net::sockopt::set_socket_send_buffer_size(s, bytes).expect("SO_SNDBUF");
}

/// Shrinks a socket's kernel receive buffer (and so the TCP window it advertises). Not for a
/// socket about to be attached: its receive buffer size is its default maximum message size
/// (`kcm-spec.md` §6.3).
pub fn shrink_recv_buffer<S: std::os::fd::AsFd>(s: &S, bytes: usize) {
    rustix::net::sockopt::set_socket_recv_buffer_size(s, bytes).expect("SO_RCVBUF");
}

/// Asserts that nothing arrives on `stream` within `wait` (a "must not be sent" check: the
/// wait bounds the check, it synchronises nothing). Restores the [`TIMEOUT`] read timeout.
#[track_caller]
pub fn assert_silent(stream: &mut TcpStream, wait: Duration) {
    stream
        .set_read_timeout(Some(wait))
        .expect("set_read_timeout");
    let mut b = [0u8; 1];
    let r = stream.read(&mut b);
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    match r {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected nothing to arrive, got {other:?}"),
    }
}

/// Waits until an error is posted on the connection and returns its errno (taking it, as
/// `SO_ERROR` does).
#[track_caller]
pub fn wait_conn_error(ep: &Endpoint, conn: ConnectionId) -> i32 {
    let mut posted = None;
    wait_for("an error posted on the connection", || {
        posted = ep.connection_error(conn);
        posted.is_some()
    });
    posted.as_ref().map_or(-1, errno_of)
}
