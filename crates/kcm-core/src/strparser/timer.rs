//! The message-assembly timer (`kcm-spec.md` §4.3 "Limits"): armed by the first bytes of a
//! message, never re-armed per chunk, cancelled when the message ends.

use std::time::Instant;

use super::{MsgState, StrError, StrParser};

impl StrParser {
    /// Ends the current message (delivered, skipped or abandoned): the next one starts at
    /// `buf[0]`. Its timer starts at the latest receive if its first bytes are already here.
    pub(super) fn end_message(&mut self) {
        self.msg = MsgState::default();
        self.msg_start = self.start;
        self.deadline = None;
        if !self.buf.is_empty() {
            if let Some(t) = self.last_recv {
                self.arm(t);
            }
        }
    }

    /// Starts the assembly timer at `now`, if a timeout is configured.
    pub(super) fn arm(&mut self, now: Instant) {
        match self.cfg.timeout {
            // Zero means "no timeout", as SO_RCVTIMEO does.
            Some(t) if !t.is_zero() => {
                // A deadline past the end of representable time is no deadline.
                self.deadline = now.checked_add(t);
                self.armed_timeout = t;
            }
            _ => self.deadline = None,
        }
    }

    /// When the current message must be complete, if a timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Fails the stream with [`StrError::Timeout`] if the assembly deadline has passed at
    /// `now` (`msg_timeouts` +1). Once failed, returns that failure again.
    ///
    /// Drain [`next_message`](Self::next_message) first: a message whose last bytes were
    /// received but not yet collected is otherwise still "being assembled". A driver that
    /// stops reading on purpose (a paused connection, `kcm-spec.md` §5.2) should restart the
    /// timer with [`restart_timer`](Self::restart_timer) when it resumes.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), StrError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.deadline {
            Some(deadline) if now >= deadline => {
                self.stats.msg_timeouts += 1;
                let seen = (self.start - self.msg_start) as usize + self.buf.len();
                let e = StrError::Timeout {
                    offset: self.msg_start,
                    seen,
                    timeout: self.armed_timeout,
                };
                Err(self.fail(e))
            }
            _ => Ok(()),
        }
    }

    /// Restarts a running assembly timer at `now` (for a driver resuming a connection it had
    /// paused: the time its bytes waited in our buffer is not the peer's delay). Does
    /// nothing when no timer runs.
    pub fn restart_timer(&mut self, now: Instant) {
        if self.deadline.is_some() {
            self.arm(now);
        }
    }
}
