//! Receive-buffer sizing for [`StrParser`](super::StrParser): "read big, parse in place, hand
//! out slices" (`design.md` §2, data path principles).
//!
//! Every allocation here has a capacity chosen by the stream parser, never by `BytesMut`'s
//! growth policy (which may double or round up): that is what keeps a connection's memory
//! within `max_msg_size + read_size` whatever the peer claims or sends.

use bytes::BytesMut;

/// Below this much spare room a new read buffer is prepared, so that one read syscall
/// always has room for at least this many bytes (or `read_size`, if smaller).
const MIN_READ: usize = 4096;

/// What the parser knows about the message at the head of the buffer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Need {
    /// Length unknown, or no message in progress: room for a big read.
    Read,
    /// The message is this many bytes long in total and not all of it has arrived.
    Length(usize),
}

/// Makes sure `buf` has spare capacity for the next read, following the sizing rules of
/// `StrParser::recv_buf`; `read_size` is the configured default read size (at least 1).
pub(super) fn prepare(buf: &mut BytesMut, need: Need, read_size: usize) {
    let read = read_size.max(1);
    let len = buf.len();
    let spare = buf.capacity() - len;
    match need {
        // A message bigger than a read buffer gets a buffer of exactly its size, so the rest
        // of it is read straight into place and handed out without another copy, and the
        // read stops exactly at its end. The length was checked against `max_msg_size`
        // before we got here, so a peer cannot make us reserve more than that.
        Need::Length(total) if total > read => {
            if buf.capacity() != total {
                move_to_fresh(buf, total);
            }
        }
        Need::Length(total) => {
            let missing = total.saturating_sub(len);
            if spare < missing.max(low_water(read)) {
                grow(buf, read);
            }
        }
        Need::Read => {
            if spare < low_water(read) {
                grow(buf, read);
            }
        }
    }
}

/// The least spare room worth a read syscall.
fn low_water(read: usize) -> usize {
    read.min(MIN_READ)
}

/// Gives `buf` at least `read` bytes of spare room: by taking back the space of its own
/// allocation when nothing else still shares it (no allocation, no copy of delivered bytes),
/// else by moving the buffered bytes into a fresh allocation of `len + read` bytes.
fn grow(buf: &mut BytesMut, read: usize) {
    if buf.try_reclaim(read) {
        return;
    }
    let cap = buf.len().saturating_add(read);
    move_to_fresh(buf, cap);
}

/// Replaces `buf` with a new allocation of exactly `cap` bytes holding the same contents.
fn move_to_fresh(buf: &mut BytesMut, cap: usize) {
    let mut fresh = BytesMut::with_capacity(cap.max(buf.len()));
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_buffer_gets_read_size() {
        let mut b = BytesMut::new();
        prepare(&mut b, Need::Read, 1000);
        assert_eq!(b.capacity(), 1000);
    }

    #[test]
    fn big_known_length_gets_exact_buffer() {
        let mut b = BytesMut::with_capacity(100);
        b.extend_from_slice(&[7; 60]);
        prepare(&mut b, Need::Length(500), 100);
        assert_eq!(b.capacity(), 500);
        assert_eq!(&b[..], &[7; 60][..]);
        // Already exact: left alone.
        let p = b.as_ptr();
        prepare(&mut b, Need::Length(500), 100);
        assert_eq!(b.as_ptr(), p);
    }

    #[test]
    fn small_known_length_fits_in_a_read_buffer() {
        let mut b = BytesMut::with_capacity(100);
        b.extend_from_slice(&[1; 90]);
        // 10 spare < 40 missing: move into a new buffer with a full read of room.
        prepare(&mut b, Need::Length(130), 200);
        assert!(b.capacity() - b.len() >= 40);
        assert!(b.capacity() <= 90 + 200);
    }

    #[test]
    fn reclaims_space_when_unshared() {
        let mut b = BytesMut::with_capacity(64);
        b.extend_from_slice(&[1; 64]);
        drop(b.split_to(64)); // delivered and already dropped by the user
        prepare(&mut b, Need::Read, 64);
        assert_eq!(b.capacity(), 64);
    }

    #[test]
    fn keeps_reading_into_a_roomy_buffer() {
        let mut b = BytesMut::with_capacity(10_000);
        b.extend_from_slice(&[1; 10]);
        let p = b.as_ptr();
        prepare(&mut b, Need::Read, 8192);
        assert_eq!(
            b.as_ptr(),
            p,
            "9990 spare bytes are above the low-water mark"
        );
    }
}
