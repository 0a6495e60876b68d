//! How a parser's answer is applied (`kcm-spec.md` §4.3 step 4, §4.4): lengths, limits,
//! skips and errors.

use super::{StrError, StrParser};
use bytes::Buf;

use crate::parser::{errno, Parse};

/// The outcome of one parser call, once applied.
#[derive(Debug, Clone, Copy)]
pub(super) enum Looked {
    /// The message's length is still unknown.
    NeedMore,
    /// The message is this long in total (checked against the limits).
    Length(usize),
    /// The message is being dropped; the rest of it, if any, is dropped as it arrives.
    Skipped,
}

impl StrParser {
    /// Calls the parser on the current message's bytes and applies its answer. `answered` is
    /// the parser's answer for exactly these bytes when the caller already has it (the batch
    /// scan stops on one): it is applied as is, so the parser sees each view once.
    pub(super) fn look(&mut self, answered: Option<Parse>) -> Result<Looked, StrError> {
        let view = self.buf.len();
        // A view shorter than the parser's declared minimum is answered "need more" on the
        // parser's behalf, with every effect of a real answer, so `min_view` changes nothing
        // observable.
        let answer = match answered {
            Some(a) => a,
            None if view < self.min_view => Parse::NeedMore,
            None => self.parser.parse(&self.buf),
        };
        self.msg.looked = view;
        let offset = self.msg_start;
        let prev = self.msg.need_more_view;
        match answer {
            Parse::NeedMore => {
                self.stats.need_more_hdr += 1;
                self.msg.need_more_view = view;
                if view > self.cfg.max_msg_size {
                    // Our own bound (the kernel has none here): see StrConfig::max_msg_size.
                    return Err(self.too_big(None, view));
                }
                Ok(Looked::NeedMore)
            }
            Parse::Length(len) => {
                // §4.3 step 4, in the kernel's order: EMSGSIZE before EPROTO.
                if len > self.cfg.max_msg_size {
                    return Err(self.too_big(Some(len), view));
                }
                self.check_extends(len, prev)?;
                self.msg.len = Some(len);
                Ok(Looked::Length(len))
            }
            Parse::Skip(len) => {
                // The same "must reach past what was seen" rule as for a length; it also
                // rejects Skip(0), which would otherwise never make progress.
                self.check_extends(len, prev)?;
                self.stats.msg_too_big += 1;
                self.stats.skipped_msgs += 1;
                self.stats.skipped_bytes += len as u64;
                let drop = len.min(view);
                self.buf.advance(drop);
                self.start += drop as u64;
                self.skip = len - drop;
                if self.skip == 0 {
                    self.end_message();
                }
                // While the skip lasts the timer keeps running: the skipped message still has
                // to arrive in time.
                Ok(Looked::Skipped)
            }
            Parse::Error(e) => Err(self.parser_error(e, offset, prev)),
        }
    }

    /// EMSGSIZE (`msg_too_big`): the message is longer than `max_msg_size`, or its length is
    /// still unknown after `seen` bytes, more than that.
    fn too_big(&mut self, length: Option<usize>, seen: usize) -> StrError {
        self.stats.msg_too_big += 1;
        let e = StrError::TooBig {
            offset: self.msg_start,
            length,
            seen,
            max: self.cfg.max_msg_size,
        };
        self.fail(e)
    }

    /// EPROTO unless `len` reaches past the view of the previous "need more" answer.
    fn check_extends(&mut self, len: usize, prev: usize) -> Result<(), StrError> {
        if len <= prev {
            self.stats.bad_hdr_len += 1;
            let e = StrError::BadLength {
                offset: self.msg_start,
                length: len,
                seen: prev,
            };
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// §4.4: ESTRPIPE on the first look hands the stream back at the message start; after a
    /// "need more" it is unrecoverable (ENODATA); any other errno is a plain parser error.
    fn parser_error(&mut self, e: i32, offset: u64, prev: usize) -> StrError {
        let err = if e == errno::ESTRPIPE && prev == 0 {
            self.stats.interrupted += 1;
            StrError::Interrupted { offset }
        } else if e == errno::ESTRPIPE {
            self.stats.unrecov_intr += 1;
            StrError::Unrecoverable { offset, seen: prev }
        } else {
            self.stats.interrupted += 1;
            // A parser must report a positive errno; anything else is a protocol error.
            let errno = if e > 0 { e } else { errno::EPROTO };
            StrError::Parser { offset, errno }
        };
        self.fail(err)
    }

    /// Stops the parser for good with `e`.
    pub(super) fn fail(&mut self, e: StrError) -> StrError {
        self.stats.aborts += 1;
        self.deadline = None;
        self.failed = Some(e.clone());
        e
    }
}
