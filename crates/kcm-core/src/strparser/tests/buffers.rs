//! Buffer sizing, zero-copy delivery, prefix stripping and handing the stream back.

use super::*;

#[test]
fn strip_prefix_removes_the_header() {
    let be = Be32 {
        min_view: 4,
        strip: 4,
    };
    let mut p = sp(Arc::new(be));
    let mut input = frame(b"body");
    input.extend(frame(b""));
    feed(&mut p, &input, Instant::now());
    assert_eq!(drain(&mut p), vec![&b"body"[..], &b""[..]]);
    // A prefix longer than the message leaves it empty rather than panicking.
    let be = Be32 {
        min_view: 1,
        strip: 9,
    };
    let mut p = sp(Arc::new(be));
    feed(&mut p, &frame(b"abc"), Instant::now());
    assert_eq!(drain(&mut p), vec![Bytes::new()]);
}

#[test]
fn big_message_is_read_into_a_buffer_of_exactly_its_size() {
    let mut p = sp_cfg(Arc::new(BE32), 1 << 20, None, 1024);
    let msg = frame(&vec![9; 5000]);
    let t0 = Instant::now();
    feed(&mut p, &msg[..100], t0);
    assert_eq!(p.next_message(), Ok(None));
    assert_eq!(p.need_bytes(), 4904);
    let buf = p.recv_buf();
    assert_eq!(buf.capacity(), 5004, "exactly the message");
    assert_eq!(
        buf.capacity() - buf.len(),
        4904,
        "spare is exactly the remainder"
    );
    let base = buf.as_ptr();
    feed(&mut p, &msg[100..], t0);
    let m = p.next_message().unwrap().unwrap();
    assert_eq!(m, msg);
    assert_eq!(m.as_ptr(), base, "handed out without another copy");
    p.shrink();
    assert_eq!(p.buffered(), 0);
}

#[test]
fn shrink_frees_only_an_empty_buffer() {
    let mut p = sp(Arc::new(BE32));
    let t0 = Instant::now();
    feed(&mut p, &[0, 0], t0);
    assert_eq!(p.next_message(), Ok(None));
    p.shrink();
    assert!(p.buffered() >= 2, "partial message kept");
    feed(&mut p, &[0, 1, b'z'], t0);
    assert!(p.next_message().unwrap().is_some());
    p.shrink();
    assert_eq!(p.buffered(), 0);
    feed(&mut p, &frame(b"again"), t0);
    assert_eq!(drain(&mut p), vec![frame(b"again")]);
}

#[test]
fn take_unparsed_without_failure_restarts_at_the_next_byte() {
    let mut p = sp_cfg(Arc::new(BE32), 1000, Some(3), 64);
    let t0 = Instant::now();
    feed(&mut p, &[0, 0, 0, 9, 1, 2], t0);
    assert_eq!(p.next_message(), Ok(None));
    assert_eq!(&p.take_unparsed()[..], &[0, 0, 0, 9, 1, 2]);
    assert_eq!((p.need_bytes(), p.poll_timeout()), (0, None));
    feed(&mut p, &frame(b"k"), t0);
    assert_eq!(drain(&mut p), vec![frame(b"k")]);
    // Offsets continue across the taken bytes.
    feed(&mut p, &[0, 0, 0, 0, 0xff], t0);
    assert!(p.next_message().unwrap().is_some());
    p.set_max_msg_size(4);
    feed(&mut p, &[0, 0, 0], t0);
    let e = p.next_message().unwrap_err();
    assert_eq!(e.offset(), 6 + 5 + 4);
}
