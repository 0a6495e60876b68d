//! The benchmark's request and reply messages, shared by every server and the load generator.
//!
//! All messages are Thrift-framed (4-byte big-endian length of the rest, then the body). The
//! request body carries what a server needs to answer without knowing the workload, and what the
//! load generator needs to check the answer, so a broken server cannot post numbers:
//!
//! ```text
//! offset  size  field
//!      0     4  length of the rest (big-endian)
//!      4     2  connection index (the `kernel` server routes its reply by it: AF_KCM does not
//!               say which connection a message came from)
//!      6     1  op: 0 = no reply (one-way streams), 1 = 16-byte ack, 2 = echo
//!      7     1  reserved, 0
//!      8     8  sequence number, echoed in the reply
//!     16     4  CPU work to do before replying, in nanoseconds (W2)
//!     20     …  filler, a fixed pattern
//! ```
//!
//! An ack is `[0,0,0,12][seq: 8][request length: 4]`: the server must have framed the request
//! right to know its length. An echo returns the request byte for byte.

use thiserror::Error;

use crate::framer::HEADER;

/// Smallest request: header and the fixed fields.
pub const MIN_REQUEST: usize = 20;
/// Size of an ack reply.
pub const ACK_LEN: usize = 16;

/// What the server does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Count it, send nothing (one-way streams).
    None = 0,
    /// Reply with a 16-byte ack.
    Ack = 1,
    /// Reply with the request itself.
    Echo = 2,
}

/// A request a server could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Shorter than the fixed fields.
    #[error("request of {0} bytes is shorter than {MIN_REQUEST}")]
    TooShort(usize),
    /// The op byte is not one of [`Op`].
    #[error("unknown op {0}")]
    UnknownOp(u8),
}

/// A reply that does not match the request it claims to answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Wrong size for the request's op.
    #[error("reply of {got} bytes, expected {want}")]
    Length {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The sequence number names no request in flight on this connection.
    #[error("reply for sequence {0:#x}, which is not in flight")]
    UnknownSeq(u64),
    /// The ack reports another request length, or the echo differs from the request.
    #[error("reply content does not match the request")]
    Content,
}

/// The fields of a request a server and the load generator look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Connection index (for the `kernel` server's reply routing).
    pub conn: u16,
    /// What to do.
    pub op: Op,
    /// Sequence number.
    pub seq: u64,
    /// CPU work in nanoseconds.
    pub work_ns: u32,
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

impl Request {
    /// Reads the fields of a whole framed request.
    pub fn parse(msg: &[u8]) -> Result<Request, RequestError> {
        if msg.len() < MIN_REQUEST {
            return Err(RequestError::TooShort(msg.len()));
        }
        Request::parse_body(&msg[HEADER..])
    }

    /// Reads the fields of a request whose length header was already taken off (as a codec
    /// that strips it hands it over).
    pub fn parse_body(body: &[u8]) -> Result<Request, RequestError> {
        if body.len() < MIN_REQUEST - HEADER {
            return Err(RequestError::TooShort(body.len() + HEADER));
        }
        let op = match body[2] {
            0 => Op::None,
            1 => Op::Ack,
            2 => Op::Echo,
            other => return Err(RequestError::UnknownOp(other)),
        };
        Ok(Request {
            conn: u16::from_be_bytes([body[0], body[1]]),
            op,
            seq: be_u64(body, 4),
            work_ns: be_u32(body, 12),
        })
    }

    /// Builds the framed request of `size` bytes (at least [`MIN_REQUEST`]) into `out`.
    ///
    /// ```
    /// use kcm_bench::wire::{Op, Request};
    /// let r = Request { conn: 3, op: Op::Ack, seq: 9, work_ns: 0 };
    /// let mut buf = Vec::new();
    /// r.write(32, &mut buf);
    /// assert_eq!(buf.len(), 32);
    /// assert_eq!(Request::parse(&buf), Ok(r));
    /// ```
    pub fn write(&self, size: usize, out: &mut Vec<u8>) {
        let size = size.max(MIN_REQUEST);
        let start = out.len();
        out.extend_from_slice(&((size - HEADER) as u32).to_be_bytes());
        out.extend_from_slice(&self.conn.to_be_bytes());
        out.extend_from_slice(&[self.op as u8, 0]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.work_ns.to_be_bytes());
        out.extend((MIN_REQUEST..size).map(filler));
        debug_assert_eq!(out.len() - start, size);
    }

    /// Rewrites the sequence number of a request built by [`Request::write`] in place (the load
    /// generator keeps one template per connection and patches it).
    pub fn patch_seq(msg: &mut [u8], seq: u64) {
        msg[8..16].copy_from_slice(&seq.to_be_bytes());
    }

    /// Rewrites the work field in place.
    pub fn patch_work(msg: &mut [u8], work_ns: u32) {
        msg[16..20].copy_from_slice(&work_ns.to_be_bytes());
    }
}

/// The filler byte at `offset` of a request.
fn filler(offset: usize) -> u8 {
    (offset as u8).wrapping_mul(31).wrapping_add(7)
}

/// Appends the server's reply to `msg` (a whole framed request) to `out`; one-way requests
/// append nothing. Returns the request's fields (the caller does its CPU work).
pub fn reply_into(msg: &[u8], out: &mut Vec<u8>) -> Result<Request, RequestError> {
    let req = Request::parse(msg)?;
    match req.op {
        Op::None => {}
        Op::Ack => out.extend_from_slice(&ack(req.seq, msg.len())),
        Op::Echo => out.extend_from_slice(msg),
    }
    Ok(req)
}

/// The 16-byte ack for a request of `req_len` bytes.
pub fn ack(seq: u64, req_len: usize) -> [u8; ACK_LEN] {
    let mut a = [0u8; ACK_LEN];
    a[..4].copy_from_slice(&((ACK_LEN - HEADER) as u32).to_be_bytes());
    a[4..12].copy_from_slice(&seq.to_be_bytes());
    a[12..16].copy_from_slice(&(req_len as u32).to_be_bytes());
    a
}

/// The sequence number a reply claims to answer (ack or echo), before it is checked.
pub fn reply_seq(reply: &[u8], op: Op) -> Result<u64, ReplyError> {
    let want = match op {
        Op::Ack => ACK_LEN,
        _ => MIN_REQUEST,
    };
    if reply.len() < want {
        return Err(ReplyError::Length {
            got: reply.len(),
            want,
        });
    }
    Ok(match op {
        Op::Ack => be_u64(reply, 4),
        _ => be_u64(reply, 8),
    })
}

/// Checks a reply against the request it answers: `template` is the connection's request
/// (its sequence and work fields are ignored), `seq` the sequence number of the request in flight.
pub fn check_reply(reply: &[u8], template: &[u8], op: Op, seq: u64) -> Result<(), ReplyError> {
    match op {
        Op::Ack => {
            if reply.len() != ACK_LEN {
                return Err(ReplyError::Length {
                    got: reply.len(),
                    want: ACK_LEN,
                });
            }
            if reply != ack(seq, template.len()) {
                return Err(ReplyError::Content);
            }
        }
        Op::Echo | Op::None => {
            if reply.len() != template.len() || template.len() < MIN_REQUEST {
                return Err(ReplyError::Length {
                    got: reply.len(),
                    want: template.len(),
                });
            }
            // The work field differs per request (W2); everything else is fixed or the seq.
            if reply[..8] != template[..8]
                || be_u64(reply, 8) != seq
                || reply[20..] != template[20..]
            {
                return Err(ReplyError::Content);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: u64 = 0x0102_0304_0506_0708;

    fn req(op: Op, size: usize) -> Vec<u8> {
        let mut v = Vec::new();
        Request {
            conn: 7,
            op,
            seq: SEQ,
            work_ns: 20_000,
        }
        .write(size, &mut v);
        v
    }

    #[test]
    fn ack_names_seq_and_length() {
        let r = req(Op::Ack, 5000);
        let mut out = Vec::new();
        reply_into(&r, &mut out).unwrap();
        assert_eq!(out.len(), ACK_LEN);
        assert_eq!(&out[..4], &[0, 0, 0, 12]);
        assert_eq!(reply_seq(&out, Op::Ack), Ok(SEQ));
        assert_eq!(check_reply(&out, &r, Op::Ack, SEQ), Ok(()));
        // An ack for a request of another length is caught.
        assert_eq!(
            check_reply(&out, &req(Op::Ack, 4999), Op::Ack, SEQ),
            Err(ReplyError::Content)
        );
        assert_eq!(
            check_reply(&out, &r, Op::Ack, SEQ + 1),
            Err(ReplyError::Content)
        );
    }

    #[test]
    fn echo_is_the_request() {
        let r = req(Op::Echo, 64);
        let mut out = Vec::new();
        reply_into(&r, &mut out).unwrap();
        assert_eq!(out, r);
        assert_eq!(check_reply(&out, &r, Op::Echo, SEQ), Ok(()));
        assert_eq!(
            check_reply(&out, &r, Op::Echo, SEQ + 1),
            Err(ReplyError::Content)
        );
        out[40] ^= 1;
        assert_eq!(
            check_reply(&out, &r, Op::Echo, SEQ),
            Err(ReplyError::Content)
        );
        assert!(matches!(
            check_reply(&out[..63], &r, Op::Echo, SEQ),
            Err(ReplyError::Length { .. })
        ));
    }

    #[test]
    fn one_way_has_no_reply() {
        let mut out = Vec::new();
        reply_into(&req(Op::None, 32), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn bad_requests_are_errors() {
        assert_eq!(
            reply_into(&[0, 0, 0, 1, 9], &mut Vec::new()),
            Err(RequestError::TooShort(5))
        );
        let mut r = req(Op::Ack, 32);
        r[6] = 9;
        assert_eq!(Request::parse(&r), Err(RequestError::UnknownOp(9)));
    }

    #[test]
    fn patching_changes_only_its_field() {
        let mut r = req(Op::Echo, 64);
        Request::patch_seq(&mut r, 42);
        Request::patch_work(&mut r, 5);
        let p = Request::parse(&r).unwrap();
        assert_eq!((p.conn, p.seq, p.work_ns, p.op), (7, 42, 5, Op::Echo));
        assert_eq!(Request::parse_body(&r[4..]), Ok(p));
    }
}
