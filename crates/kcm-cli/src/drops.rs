//! Counting dropped connections by the failure that caused each drop.
//!
//! A mux created with `drop_failed` records a failure event (parser error, end of stream, read
//! error, transmit abort) and later a `Dropped` event for the same connection. The event log
//! is bounded (`kcm::EVENT_LOG_CAP`), so a long-running server drains it periodically into a
//! [`DropTally`], which remembers each connection's first failure until the drop arrives.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use kcm::{ConnectionEvent, ConnectionEventKind, ConnectionId};

/// Dropped-connection counts by reason, fed with a mux's connection events.
#[derive(Debug, Default)]
pub struct DropTally {
    /// The first failure seen on each connection not yet dropped.
    pending: HashMap<ConnectionId, String>,
    /// Drops so far, by reason.
    by_reason: BTreeMap<String, u64>,
}

/// The short label a drop is counted under.
fn reason(kind: &ConnectionEventKind) -> Option<String> {
    Some(match kind {
        ConnectionEventKind::ParserError(e) => format!("parser error {}", errno_name(e.errno())),
        ConnectionEventKind::PeerClosed => "peer closed".to_owned(),
        ConnectionEventKind::ReadError(e) => format!("read error {}", errno_name(*e)),
        ConnectionEventKind::TxAborted => "transmit aborted".to_owned(),
        ConnectionEventKind::Dropped => return None,
        // A kind added to the runtime later still gets counted, under its debug name.
        other => format!("{other:?}"),
    })
}

/// The symbolic name of the errnos a connection can fail with (Linux numbering).
fn errno_name(errno: i32) -> String {
    let name = match errno {
        kcm::errno::EMSGSIZE => "EMSGSIZE",
        kcm::errno::EPROTO => "EPROTO",
        kcm::errno::ETIMEDOUT => "ETIMEDOUT",
        kcm::errno::ESTRPIPE => "ESTRPIPE",
        kcm::errno::ENODATA => "ENODATA",
        kcm::errno::EPIPE => "EPIPE",
        kcm::errno::EBADMSG => "EBADMSG",
        kcm::errno::EINVAL => "EINVAL",
        kcm::errno::ECONNRESET => "ECONNRESET",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

impl DropTally {
    /// Folds events (oldest first) into the tally. Returns the events worth telling an
    /// operator about as they happen: failures other than a peer's orderly close.
    pub fn record(
        &mut self,
        events: impl IntoIterator<Item = ConnectionEvent>,
    ) -> Vec<ConnectionEvent> {
        let mut notable = Vec::new();
        for ev in events {
            match reason(&ev.kind) {
                Some(why) => {
                    if !matches!(ev.kind, ConnectionEventKind::PeerClosed) {
                        notable.push(ev.clone());
                    }
                    // The first failure is the cause; a later EPIPE on transmit is a consequence.
                    self.pending.entry(ev.conn).or_insert(why);
                }
                None => {
                    let why = self
                        .pending
                        .remove(&ev.conn)
                        .unwrap_or_else(|| "unknown".to_owned());
                    *self.by_reason.entry(why).or_default() += 1;
                }
            }
        }
        notable
    }
}

impl fmt::Display for DropTally {
    /// `dropped connections: N`, then the count per reason in parentheses when there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.by_reason.values().sum();
        write!(f, "dropped connections: {total}")?;
        let mut sep = " (";
        for (why, n) in &self.by_reason {
            write!(f, "{sep}{why}: {n}")?;
            sep = ", ";
        }
        if !self.by_reason.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcm_core::StrError;

    fn ev(index: u32, kind: ConnectionEventKind) -> ConnectionEvent {
        ConnectionEvent {
            conn: ConnectionId { index, gen: index },
            kind,
        }
    }

    #[test]
    fn counts_drops_by_first_failure() {
        let mut t = DropTally::default();
        assert_eq!(t.to_string(), "dropped connections: 0");
        let too_big = StrError::TooBig {
            offset: 0,
            length: Some(5000),
            seen: 4,
            max: 1024,
        };
        let notable = t.record([
            ev(1, ConnectionEventKind::ParserError(too_big)),
            ev(2, ConnectionEventKind::PeerClosed),
            ev(1, ConnectionEventKind::TxAborted),
            ev(3, ConnectionEventKind::PeerClosed),
            ev(1, ConnectionEventKind::Dropped),
            ev(2, ConnectionEventKind::Dropped),
        ]);
        // Peer closes are routine; the parser error and the abort are worth a log line.
        assert_eq!(notable.len(), 2);
        assert_eq!(
            t.to_string(),
            "dropped connections: 2 (parser error EMSGSIZE: 1, peer closed: 1)"
        );
        // Connection 3 failed but was not dropped yet: its drop arrives in a later batch.
        t.record([
            ev(3, ConnectionEventKind::Dropped),
            ev(9, ConnectionEventKind::Dropped),
        ]);
        assert_eq!(
            t.to_string(),
            "dropped connections: 4 (parser error EMSGSIZE: 1, peer closed: 2, unknown: 1)"
        );
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(kcm::errno::EPROTO), "EPROTO");
        assert_eq!(errno_name(104), "ECONNRESET");
        assert_eq!(errno_name(12345), "errno 12345");
    }
}
