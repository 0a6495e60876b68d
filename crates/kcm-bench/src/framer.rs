//! The hand-written length-prefix framer of the `thread` and `raw` servers and of the load
//! generator's reply reader.
//!
//! Every system in the benchmark speaks the Thrift framed transport: a 4-byte big-endian length
//! of the rest, then the body (`bench.md`, "Systems"). The framer reads into one reusable buffer
//! and hands out whole frames, header included, as slices of it: no copy, no allocation per
//! message. It is what a careful classic server would write by hand, so it is the baseline kcm's
//! stream parser is measured against.

use std::io::{self, Read};

/// Bytes of the length header.
pub const HEADER: usize = 4;

/// A frame announced a length above the framer's maximum: the stream cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the maximum of {max}")]
pub struct FrameTooLong {
    /// Total frame length the header announced (header included).
    pub len: usize,
    /// The framer's maximum.
    pub max: usize,
}

/// Splits a byte stream into length-prefixed frames.
///
/// ```
/// use kcm_bench::framer::Framer;
///
/// let mut f = Framer::new(64, 1024);
/// let mut stream: &[u8] = b"\0\0\0\x03abc\0\0\0\x01z\0\0";
/// f.read_from(&mut stream)?;
/// assert_eq!(f.next_frame()?, Some(&b"\0\0\0\x03abc"[..]));
/// assert_eq!(f.next_frame()?, Some(&b"\0\0\0\x01z"[..]));
/// assert_eq!(f.next_frame()?, None); // half a header is waiting for more bytes
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// First byte not yet handed out.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    read_size: usize,
    max_frame: usize,
}

impl Framer {
    /// A framer that reads `read_size` bytes at a time and accepts frames of at most
    /// `max_frame` bytes, header included.
    pub fn new(read_size: usize, max_frame: usize) -> Framer {
        let read_size = read_size.max(HEADER);
        Framer {
            buf: vec![0; read_size],
            start: 0,
            end: 0,
            read_size,
            max_frame: max_frame.max(HEADER),
        }
    }

    /// Bytes read but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Free space to read into, at least `read_size` bytes (and room for the whole pending
    /// frame once its length is known, so a large frame takes no more reads than it must).
    pub fn spare(&mut self) -> &mut [u8] {
        let pending = self.pending_len().unwrap_or(0);
        let want = self.read_size.max(pending.saturating_sub(self.buffered()));
        if self.buf.len() - self.end < want {
            // Move the partial frame to the front, then grow only if that is not enough.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into [`Framer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Reads once from `r` into the buffer. `Ok(0)` is end of stream.
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        let n = r.read(self.spare())?;
        self.filled(n);
        Ok(n)
    }

    /// The total length of the frame at the front, once its header is in.
    fn pending_len(&self) -> Option<usize> {
        if self.buffered() < HEADER {
            return None;
        }
        let hdr: [u8; HEADER] = self
            .buf
            .get(self.start..self.start + HEADER)?
            .try_into()
            .ok()?;
        Some(HEADER + u32::from_be_bytes(hdr) as usize)
    }

    /// The next whole frame (header included), or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameTooLong> {
        let Some(len) = self.pending_len() else {
            return Ok(None);
        };
        if len > self.max_frame {
            return Err(FrameTooLong {
                len,
                max: self.max_frame,
            });
        }
        if self.buffered() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        if self.start == self.end {
            // Everything consumed: the next read starts at the front, no copy needed.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[at..at + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Feeds `stream` to a framer in pieces of `step` bytes and collects the frames.
    fn split(stream: &[u8], step: usize, read_size: usize) -> Vec<Vec<u8>> {
        let mut f = Framer::new(read_size, 1 << 20);
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            let mut piece = piece;
            while !piece.is_empty() {
                f.read_from(&mut piece).unwrap();
            }
            while let Some(fr) = f.next_frame().unwrap() {
                out.push(fr.to_vec());
            }
        }
        assert_eq!(f.buffered(), 0);
        out
    }

    #[test]
    fn frames_survive_any_segmentation() {
        let msgs: Vec<Vec<u8>> = (0..40)
            .map(|i| frame(&vec![i as u8; (i * 37) % 300]))
            .collect();
        let stream: Vec<u8> = msgs.concat();
        for step in [1, 2, 3, 4, 5, 7, 64, 1000, stream.len()] {
            for read_size in [4, 16, 4096] {
                assert_eq!(
                    split(&stream, step, read_size),
                    msgs,
                    "step {step} read_size {read_size}"
                );
            }
        }
    }

    #[test]
    fn empty_body_is_a_frame() {
        assert_eq!(split(&frame(b""), 1, 8), vec![vec![0, 0, 0, 0]]);
    }

    #[test]
    fn large_frame_grows_the_buffer_once() {
        let big = frame(&[7u8; 10_000]);
        let mut f = Framer::new(64, 1 << 20);
        let mut s = &big[..];
        f.read_from(&mut s).unwrap();
        assert_eq!(f.next_frame().unwrap(), None);
        // The header is known: the next spare region holds the rest of the frame.
        assert!(f.spare().len() >= 10_004 - 64);
        while !s.is_empty() {
            f.read_from(&mut s).unwrap();
        }
        assert_eq!(f.next_frame().unwrap().map(<[u8]>::len), Some(10_004));
    }

    #[test]
    fn too_long_is_an_error_not_a_panic() {
        let mut f = Framer::new(64, 100);
        let mut s: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2];
        f.read_from(&mut s).unwrap();
        assert_eq!(
            f.next_frame(),
            Err(FrameTooLong {
                len: 4 + 0xffff_ffff,
                max: 100
            })
        );
    }

    #[test]
    fn partial_header_waits() {
        let mut f = Framer::new(64, 100);
        let mut s: &[u8] = &[0, 0];
        f.read_from(&mut s).unwrap();
        assert_eq!(f.next_frame(), Ok(None));
        let mut s: &[u8] = &[0, 1, 9];
        f.read_from(&mut s).unwrap();
        assert_eq!(f.next_frame(), Ok(Some(&[0u8, 0, 0, 1, 9][..])));
    }
}
