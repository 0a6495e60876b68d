//! Connection events: the errors KCM posts on TCP sockets, delivered where users look.
//!
//! The kernel reports parser errors and transmit aborts only through `SO_ERROR` of the attached
//! TCP socket (`kcm-spec.md` §3.6), which most users never read. kcm records each one as a
//! [`ConnectionEvent`] on the mux, readable from any endpoint with
//! [`Endpoint::take_events`](crate::Endpoint::take_events), and also keeps the last errno per
//! connection ([`Endpoint::connection_error`](crate::Endpoint::connection_error)). The log is
//! bounded: past [`EVENT_LOG_CAP`] entries the oldest are dropped and counted.

use std::collections::VecDeque;
use std::fmt;

use kcm_core::mux::ConnectionId;
use kcm_core::strparser::StrError;

/// How many events the mux keeps before dropping the oldest.
pub const EVENT_LOG_CAP: usize = 4096;

/// Something that happened to one attached connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// The connection it happened to.
    pub conn: ConnectionId,
    /// What happened.
    pub kind: ConnectionEventKind,
}

/// What happened to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEventKind {
    /// The stream parser failed (EMSGSIZE, EPROTO, ETIMEDOUT, a parser's own errno): the
    /// connection receives nothing more; its transmit side still works.
    ParserError(StrError),
    /// The peer closed its sending side (end of stream). Transmit still works until it fails.
    PeerClosed,
    /// Reading the socket failed with this errno (the connection itself gets EPIPE, as
    /// in the kernel).
    ReadError(i32),
    /// Transmit on the connection was aborted (hard write error, or an unattach or endpoint
    /// close while a message was half written): EPIPE, and it never transmits again.
    TxAborted,
    /// The connection was unattached by [`MuxOptions::drop_failed`](crate::MuxOptions) after
    /// a failure.
    Dropped,
}

impl ConnectionEventKind {
    /// The errno the kernel would post on the TCP socket for this event (0 for none).
    pub fn errno(&self) -> i32 {
        match self {
            ConnectionEventKind::ParserError(e) => e.errno(),
            // A read error means the TCP state changed (reset, timeout): the kernel's state
            // change callback then overwrites TCP's own error with EPIPE (§3.6). The original
            // errno stays in the event.
            ConnectionEventKind::PeerClosed
            | ConnectionEventKind::TxAborted
            | ConnectionEventKind::ReadError(_) => 32,
            ConnectionEventKind::Dropped => 0,
        }
    }
}

impl fmt::Display for ConnectionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ConnectionEventKind::ParserError(e) => write!(f, "{}: parser error: {e}", self.conn),
            ConnectionEventKind::PeerClosed => write!(f, "{}: peer closed", self.conn),
            ConnectionEventKind::ReadError(e) => {
                write!(
                    f,
                    "{}: read error: {}",
                    self.conn,
                    std::io::Error::from_raw_os_error(*e)
                )
            }
            ConnectionEventKind::TxAborted => write!(f, "{}: transmit aborted (EPIPE)", self.conn),
            ConnectionEventKind::Dropped => write!(f, "{}: dropped after failure", self.conn),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct EventLog {
    pub(crate) events: VecDeque<ConnectionEvent>,
    pub(crate) dropped: u64,
}

impl EventLog {
    pub(crate) fn push(&mut self, ev: ConnectionEvent) {
        if self.events.len() >= EVENT_LOG_CAP {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(ev);
    }
}
