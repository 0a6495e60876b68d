//! `next_messages`: runs of messages, failures after messages, skips, the timer, and the
//! parser shown each view as often as one message at a time shows it (the random comparison
//! is in `batch_prop.rs`).

use super::*;
use crate::strparser::batch::RUN;

/// Four-byte frames of `n` one-byte bodies.
fn small_frames(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| frame(&[i as u8])).collect()
}

#[test]
fn a_run_longer_than_one_scan_is_delivered_whole_and_in_place() {
    let mut p = sp(Arc::new(BE32));
    let input = small_frames(3 * RUN + 5);
    let base = p.recv_buf().as_ptr();
    feed(&mut p, &input, Instant::now());
    let mut out = Vec::new();
    assert_eq!(p.next_messages(&mut out), Ok(3 * RUN + 5));
    for (i, m) in out.iter().enumerate() {
        assert_eq!(&m[..], &frame(&[i as u8])[..]);
        assert_eq!(m.as_ptr(), base.wrapping_add(5 * i), "zero-copy");
    }
    assert_eq!(p.stats().msgs, out.len() as u64);
    assert_eq!(p.start, input.len() as u64);
    assert_eq!(p.next_messages(&mut out), Ok(0));
}

#[test]
fn messages_before_a_failure_are_appended_and_the_failure_sticks() {
    let mut p = sp(Arc::new(Tlv));
    let mut input = vec![0, 1, b'a', 0, 0];
    input.extend_from_slice(&[7, 7, 0, 0]); // corrupt header, then a message never delivered
    feed(&mut p, &input, Instant::now());
    let mut out = vec![Bytes::from_static(b"earlier")];
    let e = p.next_messages(&mut out).unwrap_err();
    assert_eq!(
        e,
        StrError::Parser {
            offset: 5,
            errno: errno::EBADMSG
        }
    );
    assert_eq!(out, [&b"earlier"[..], &[0, 1, b'a'][..], &[0, 0][..]]);
    assert_eq!((p.stats().msgs, p.stats().interrupted), (2, 1));
    assert_eq!(p.next_messages(&mut out), Err(e));
    assert_eq!(out.len(), 3, "nothing after the failure");
}

#[test]
fn oversized_length_mid_buffer_is_emsgsize_after_the_messages_before_it() {
    let mut p = sp_cfg(Arc::new(BE32), 10, None, 4096);
    let mut input = small_frames(3);
    input.extend(frame(&[0; 7])); // 11 bytes > 10
    feed(&mut p, &input, Instant::now());
    let mut out = Vec::new();
    let e = p.next_messages(&mut out).unwrap_err();
    assert!(matches!(
        e,
        StrError::TooBig {
            offset: 15,
            length: Some(11),
            ..
        }
    ));
    assert_eq!(out.len(), 3);
    assert_eq!((p.stats().msg_too_big, p.stats().aborts), (1, 1));
}

#[test]
fn skips_between_messages_are_counted_once() {
    let mut p = sp(Arc::new(Tlv));
    let input = [0, 1, b'a', 1, 2, b'x', b'y', 0, 0, 1, 5, b'z'];
    feed(&mut p, &input, Instant::now());
    let mut out = Vec::new();
    assert_eq!(p.next_messages(&mut out), Ok(2));
    assert_eq!(out, [&[0, 1, b'a'][..], &[0, 0][..]]);
    let s = p.stats();
    assert_eq!((s.msgs, s.skipped_msgs, s.skipped_bytes), (2, 2, 11));
    assert_eq!(s.need_more_hdr, 0);
    assert_eq!(p.need_bytes(), 4, "the rest of the second skip");
}

#[test]
fn the_timer_ends_as_after_the_last_message() {
    let mut p = sp_cfg(Arc::new(BE32), 1000, Some(10), 4096);
    let t0 = Instant::now();
    feed(&mut p, &[0, 0], t0);
    let mut out = Vec::new();
    assert_eq!(p.next_messages(&mut out), Ok(0));
    // Completes the first message, two more, and the first bytes of a fourth.
    let mut input = vec![0, 0];
    input.extend(small_frames(2));
    input.push(0);
    feed(&mut p, &input, secs(t0, 4));
    assert_eq!(p.next_messages(&mut out), Ok(3));
    assert_eq!(
        p.poll_timeout(),
        Some(secs(t0, 14)),
        "the fourth: latest receive"
    );
    assert_eq!(p.stats().need_more_hdr, 2, "views of 2 bytes, then of 1");
    feed(&mut p, &[0, 0, 0], secs(t0, 5));
    assert_eq!(p.next_messages(&mut out), Ok(1));
    assert_eq!(p.poll_timeout(), None, "ends at a boundary: cancelled");
}

#[test]
fn the_parser_sees_the_same_views_as_one_at_a_time() {
    // A scripted (impure) parser: answers in order whatever the view, so a second call on
    // a view would change what comes out.
    let script = [
        Parse::Length(2),
        Parse::Length(1),
        Parse::Length(9), // longer than what is here: the scan stops on it
        Parse::Length(3),
        Parse::NeedMore,
    ];
    let run = |batch: bool| {
        let s = Script::new(&script);
        let mut p = sp(s.clone());
        let t0 = Instant::now();
        let mut out = Vec::new();
        for chunk in [&b"abcdefg"[..], b"hijk", b"lmnop"] {
            feed(&mut p, chunk, t0);
            if batch {
                p.next_messages(&mut out).unwrap();
            } else {
                out.extend(drain(&mut p));
            }
        }
        (out, s.views(), *p.stats())
    };
    let (one, views, stats) = run(false);
    assert_eq!(one, [&b"ab"[..], b"c", b"defghijkl", b"mno"]);
    assert_eq!(views, [7, 5, 4, 4, 1]);
    assert_eq!(run(true), (one, views, stats));
}
