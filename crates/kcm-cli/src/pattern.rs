//! The demo's messages: reproducible from their sequence number alone.
//!
//! A message is a 4-byte big-endian length (thrift framing) and a body: the sequence number
//! (u64 big-endian), then pseudo-random bytes. The body's length and bytes are a function of
//! the seed and the sequence number, so a reply can be checked byte for byte without keeping
//! what was sent.

use std::fmt;

/// Bytes of the sequence number at the start of every body: the smallest body there is.
pub const SEQ_LEN: usize = 8;

/// Bytes of the length header in front of every body.
pub const HEADER_LEN: usize = 4;

/// One step of the SplitMix64 generator: a fast, well-mixed stream from any 64-bit state.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The message family of one demo run.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    seed: u64,
    max_body: usize,
}

/// Why a reply is not the message that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Shorter than a header and a sequence number.
    TooShort(usize),
    /// The length header does not match the bytes that came.
    BadHeader {
        /// The header's value.
        header: u64,
        /// The body bytes that came.
        body: usize,
    },
    /// A sequence number that was never sent.
    UnknownSeq(u64),
    /// The body length differs from the one sent.
    WrongLength {
        /// The message.
        seq: u64,
        /// Body length sent.
        expected: usize,
        /// Body length received.
        got: usize,
    },
    /// A body byte differs.
    WrongByte {
        /// The message.
        seq: u64,
        /// Offset of the first differing byte in the body.
        at: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::TooShort(n) => write!(
                f,
                "reply of {n} bytes is too short to hold a sequence number"
            ),
            Mismatch::BadHeader { header, body } => {
                write!(
                    f,
                    "reply header says {header} bytes but {body} body bytes came"
                )
            }
            Mismatch::UnknownSeq(s) => {
                write!(f, "reply with sequence number {s}, which was never sent")
            }
            Mismatch::WrongLength { seq, expected, got } => {
                write!(f, "reply {seq}: body of {got} bytes, sent {expected}")
            }
            Mismatch::WrongByte { seq, at } => write!(f, "reply {seq}: body differs at byte {at}"),
        }
    }
}

impl Pattern {
    /// Bodies of `SEQ_LEN..=max_body` bytes (`max_body` is raised to `SEQ_LEN` if below).
    pub fn new(seed: u64, max_body: usize) -> Pattern {
        Pattern {
            seed,
            max_body: max_body.max(SEQ_LEN),
        }
    }

    /// The generator state of one message.
    fn state(&self, seq: u64) -> u64 {
        let mut s = self.seed ^ seq.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        splitmix(&mut s)
    }

    /// Body length of message `seq`, uniform in `SEQ_LEN..=max_body`.
    pub fn body_len(&self, seq: u64) -> usize {
        let span = (self.max_body - SEQ_LEN + 1) as u64;
        // `span` fits in usize, so the remainder does too.
        SEQ_LEN + (splitmix(&mut self.state(seq).wrapping_add(1)) % span) as usize
    }

    /// The whole message `seq`: header, sequence number, pseudo-random bytes.
    pub fn message(&self, seq: u64) -> Vec<u8> {
        let body = self.body_len(seq);
        let mut m = Vec::with_capacity(HEADER_LEN + body);
        // Bodies are capped far below 4 GiB by the command line.
        m.extend_from_slice(&(body as u32).to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        let mut st = self.state(seq);
        while m.len() < HEADER_LEN + body {
            let word = splitmix(&mut st).to_le_bytes();
            let take = (HEADER_LEN + body - m.len()).min(word.len());
            m.extend_from_slice(&word[..take]);
        }
        m
    }

    /// Checks a reply against the message its sequence number names; `count` messages
    /// (`0..count`) were sent. Returns the sequence number.
    pub fn check(&self, reply: &[u8], count: u64) -> Result<u64, Mismatch> {
        if reply.len() < HEADER_LEN + SEQ_LEN {
            return Err(Mismatch::TooShort(reply.len()));
        }
        let (hdr, body) = reply.split_at(HEADER_LEN);
        let header = u64::from(u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]));
        if header != body.len() as u64 {
            return Err(Mismatch::BadHeader {
                header,
                body: body.len(),
            });
        }
        let (seq_bytes, rest) = body.split_at(SEQ_LEN);
        let mut seq = [0u8; SEQ_LEN];
        seq.copy_from_slice(seq_bytes);
        let seq = u64::from_be_bytes(seq);
        if seq >= count {
            return Err(Mismatch::UnknownSeq(seq));
        }
        let expected = self.body_len(seq);
        if body.len() != expected {
            return Err(Mismatch::WrongLength {
                seq,
                expected,
                got: body.len(),
            });
        }
        let mut st = self.state(seq);
        for (i, chunk) in rest.chunks(8).enumerate() {
            let word = splitmix(&mut st).to_le_bytes();
            if let Some(j) = chunk.iter().zip(word).position(|(a, b)| *a != b) {
                return Err(Mismatch::WrongByte {
                    seq,
                    at: SEQ_LEN + i * 8 + j,
                });
            }
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_check_out() {
        let p = Pattern::new(7, 100);
        for seq in 0..500 {
            let m = p.message(seq);
            assert_eq!(m.len(), HEADER_LEN + p.body_len(seq));
            assert!((HEADER_LEN + SEQ_LEN..=HEADER_LEN + 100).contains(&m.len()));
            assert_eq!(
                u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize,
                m.len() - 4
            );
            assert_eq!(p.check(&m, 500), Ok(seq));
        }
    }

    #[test]
    fn sizes_and_bytes_vary_with_seq_and_seed() {
        let p = Pattern::new(1, 4096);
        let lens: std::collections::HashSet<_> = (0..200).map(|s| p.body_len(s)).collect();
        assert!(lens.len() > 150, "lengths barely vary: {}", lens.len());
        assert!(lens.iter().all(|&l| (SEQ_LEN..=4096).contains(&l)));
        let q = Pattern::new(2, 4096);
        assert!((0..20).any(|s| p.message(s) != q.message(s)));
        // Every byte value shows up: the payload is not a constant fill.
        let big: Vec<u8> = (0..50).flat_map(|s| p.message(s)).collect();
        let distinct: std::collections::HashSet<_> = big.iter().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn every_corruption_is_caught() {
        let p = Pattern::new(3, 64);
        let seq = (0..100).find(|&s| p.body_len(s) > 20).unwrap();
        let good = p.message(seq);
        assert_eq!(p.check(&good[..10], 100), Err(Mismatch::TooShort(10)));
        let mut short = good.clone();
        short.pop();
        assert!(matches!(
            p.check(&short, 100),
            Err(Mismatch::BadHeader { .. })
        ));
        assert_eq!(p.check(&good, seq), Err(Mismatch::UnknownSeq(seq)));
        for at in SEQ_LEN..good.len() - HEADER_LEN {
            let mut bad = good.clone();
            bad[HEADER_LEN + at] ^= 0x40;
            assert_eq!(p.check(&bad, 100), Err(Mismatch::WrongByte { seq, at }));
        }
        // Another message's body, relabelled with this sequence number and length.
        let other = (0..100)
            .find(|&s| s != seq && p.body_len(s) != p.body_len(seq))
            .unwrap();
        let mut swapped = p.message(other);
        swapped[HEADER_LEN..HEADER_LEN + SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
        assert!(matches!(
            p.check(&swapped, 100),
            Err(Mismatch::WrongLength { .. })
        ));
    }
}
