//! Limits and failures: EPROTO, EMSGSIZE, skips, parser errors (`kcm-spec.md` §4.3, §4.4).

use super::*;

#[test]
fn length_must_extend_past_the_previous_need_more_view() {
    // §4.3 step 4: after "need more" on 2 bytes, a length of 2 is EPROTO ...
    let s = Script::new(&[Parse::NeedMore, Parse::Length(2)]);
    let mut p = sp(s);
    let t0 = Instant::now();
    feed(&mut p, b"ab", t0);
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, b"cdef", t0);
    let e = StrError::BadLength {
        offset: 0,
        length: 2,
        seen: 2,
    };
    assert_eq!(p.next_message(), Err(e.clone()));
    assert_eq!(e.errno(), errno::EPROTO);
    assert_eq!(p.stats().bad_hdr_len, 1);
    assert_eq!(p.stats().aborts, 1);
    assert_eq!(p.failed(), Some(&e));
    // ... while 3 reaches into the new bytes and is fine.
    let mut p = sp(Script::new(&[Parse::NeedMore, Parse::Length(3)]));
    feed(&mut p, b"ab", t0);
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, b"cdef", t0);
    assert_eq!(p.next_message().unwrap().as_deref(), Some(&b"abc"[..]));
    assert_eq!(p.stats().bad_hdr_len, 0);
}

#[test]
fn first_answer_may_be_any_positive_length() {
    let mut p = sp(Script::new(&[Parse::Length(1), Parse::Length(5)]));
    feed(&mut p, b"abcdef", Instant::now());
    assert_eq!(drain(&mut p), vec![&b"a"[..], &b"bcdef"[..]]);
}

#[test]
fn zero_length_and_zero_skip_are_bad_lengths() {
    for answer in [Parse::Length(0), Parse::Skip(0)] {
        let mut p = sp(Script::new(&[answer]));
        feed(&mut p, b"abc", Instant::now());
        assert!(matches!(
            p.next_message(),
            Err(StrError::BadLength { length: 0, .. })
        ));
        assert_eq!(p.stats().bad_hdr_len, 1);
    }
}

#[test]
fn length_above_max_is_emsgsize_and_allocates_nothing() {
    let mut p = sp_cfg(Arc::new(BE32), 1 << 20, None, 4096);
    let t0 = Instant::now();
    feed(&mut p, &frame(&[7; 100]), t0);
    let mut claim = frame(b"x");
    claim[..4].copy_from_slice(&(1u32 << 30).to_be_bytes());
    feed(&mut p, &claim, t0);
    assert_eq!(p.next_message().unwrap().map(|m| m.len()), Some(104));
    let e = p.next_message().unwrap_err();
    assert_eq!(
        e,
        StrError::TooBig {
            offset: 104,
            length: Some((1 << 30) + 4),
            seen: 5,
            max: 1 << 20
        }
    );
    assert_eq!(e.errno(), errno::EMSGSIZE);
    assert_eq!(p.stats().msg_too_big, 1);
    assert_eq!(p.stats().aborts, 1);
    assert!(
        p.recv_buf().capacity() <= 2 * 4096,
        "a claimed length reserves nothing"
    );
    assert!(p.buffered() <= 2 * 4096);
}

#[test]
fn length_equal_to_max_is_accepted() {
    let mut p = sp_cfg(Arc::new(BE32), 14, None, 8);
    feed(&mut p, &frame(&[1; 10]), Instant::now());
    assert_eq!(drain(&mut p).len(), 1);
    p.set_max_msg_size(13);
    assert_eq!(p.config().max_msg_size, 13);
    feed(&mut p, &frame(&[1; 10]), Instant::now());
    assert!(matches!(
        p.next_message(),
        Err(StrError::TooBig {
            length: Some(14),
            ..
        })
    ));
}

#[test]
fn unknown_length_beyond_max_is_emsgsize() {
    let never = Script::new(&[]);
    let mut p = sp_cfg(never, 100, None, 64);
    let t0 = Instant::now();
    feed(&mut p, &[0; 100], t0);
    assert_eq!(
        p.next_message(),
        Ok(None),
        "exactly max bytes without a length is fine"
    );
    feed(&mut p, &[0], t0);
    let e = p.next_message().unwrap_err();
    let want = StrError::TooBig {
        offset: 0,
        length: None,
        seen: 101,
        max: 100,
    };
    assert_eq!(e, want);
    assert!(e
        .to_string()
        .contains("after 101 bytes exceeds the maximum 100 (EMSGSIZE)"));
    assert_eq!(p.stats().msg_too_big, 1);
    assert_eq!(p.stats().need_more_hdr, 2);
}

#[test]
fn skip_spanning_several_reads_drops_bytes_as_they_arrive() {
    let mut p = sp(Arc::new(Tlv));
    let t0 = Instant::now();
    feed(&mut p, &[0, 1, b'a', 1, 8, 1, 2], t0); // a message, then a 10-byte skip begins
    assert_eq!(
        p.next_message().unwrap().as_deref(),
        Some(&[0, 1, b'a'][..])
    );
    assert_eq!(p.next_message(), Ok(None));
    assert_eq!(p.need_bytes(), 6);
    feed(&mut p, &[3, 4, 5], t0);
    assert_eq!(p.recv_buf().len(), 0, "skipped bytes are never buffered");
    assert_eq!(p.need_bytes(), 3);
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, &[6, 7, 8, 0, 2, b'b', b'c', 1, 0], t0); // skip ends, a message, a 2-byte skip
    assert_eq!(drain(&mut p), vec![&[0, 2, b'b', b'c'][..]]);
    feed(&mut p, &[0, 0], t0);
    assert_eq!(drain(&mut p), vec![&[0, 0][..]]);
    let s = p.stats();
    assert_eq!(
        (s.msgs, s.skipped_msgs, s.skipped_bytes, s.msg_too_big),
        (3, 2, 12, 2)
    );
    assert_eq!(s.bytes, 7 + 3 + 9 + 2);
    assert_eq!(s.aborts, 0);
}

#[test]
fn estrpipe_at_message_start_leaves_the_message_unconsumed() {
    let s = Script::new(&[Parse::Length(3), Parse::Error(errno::ESTRPIPE)]);
    let mut p = sp(s);
    feed(&mut p, b"abcdefg", Instant::now());
    assert_eq!(p.next_message().unwrap().as_deref(), Some(&b"abc"[..]));
    let e = p.next_message().unwrap_err();
    assert_eq!(e, StrError::Interrupted { offset: 3 });
    assert_eq!(e.errno(), errno::ESTRPIPE);
    assert_eq!(p.stats().interrupted, 1);
    assert_eq!(p.stats().unrecov_intr, 0);
    assert_eq!(p.stats().aborts, 1);
    assert_eq!(
        &p.take_unparsed()[..],
        b"defg",
        "the stream resumes at the message start"
    );
    assert_eq!(p.take_unparsed().len(), 0);
}

#[test]
fn estrpipe_mid_message_is_unrecoverable() {
    let s = Script::new(&[Parse::NeedMore, Parse::Error(errno::ESTRPIPE)]);
    let mut p = sp(s);
    let t0 = Instant::now();
    feed(&mut p, b"ab", t0);
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, b"c", t0);
    let e = p.next_message().unwrap_err();
    assert_eq!(e, StrError::Unrecoverable { offset: 0, seen: 2 });
    assert_eq!(e.errno(), errno::ENODATA);
    assert_eq!((p.stats().unrecov_intr, p.stats().interrupted), (1, 0));
    assert_eq!(p.stats().aborts, 1);
}

#[test]
fn other_parser_errors_keep_their_errno() {
    let mut p = sp(Arc::new(Tlv));
    feed(&mut p, &[0, 0, 9, 9], Instant::now());
    assert_eq!(drain_until_err(&mut p), 1);
    let e = StrError::Parser {
        offset: 2,
        errno: errno::EBADMSG,
    };
    assert_eq!(p.failed(), Some(&e));
    assert_eq!(e.errno(), errno::EBADMSG);
    assert_eq!((p.stats().interrupted, p.stats().aborts), (1, 1));
    // A non-positive errno from a buggy parser becomes EPROTO.
    let mut p = sp(Script::new(&[Parse::Error(-5)]));
    feed(&mut p, b"a", Instant::now());
    assert_eq!(p.next_message().unwrap_err().errno(), errno::EPROTO);
}

fn drain_until_err(p: &mut StrParser) -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = p.next_message() {
        n += 1;
    }
    n
}

#[test]
fn failure_is_sticky() {
    let mut p = sp_cfg(
        Script::new(&[Parse::Error(errno::EBADMSG)]),
        100,
        Some(5),
        64,
    );
    let t0 = Instant::now();
    feed(&mut p, b"abc", t0);
    let e = p.next_message().unwrap_err();
    assert_eq!(p.poll_timeout(), None, "a failed parser has no timer");
    feed(&mut p, &frame(b"late"), secs(t0, 1));
    assert_eq!(p.next_message(), Err(e.clone()));
    assert_eq!(p.next_message(), Err(e.clone()));
    assert_eq!(p.handle_timeout(secs(t0, 100)), Err(e));
    assert_eq!(p.stats().aborts, 1, "counted once");
    assert_eq!(p.stats().msg_timeouts, 0);
    assert_eq!(
        p.stats().bytes,
        3 + 8,
        "bytes received after the failure still count"
    );
}

#[test]
fn error_messages_name_errno_and_offset() {
    let e = StrError::TooBig {
        offset: 1234,
        length: Some(70000),
        seen: 10,
        max: 65536,
    };
    assert_eq!(
        e.to_string(),
        "message of 70000 bytes exceeds the maximum 65536 (EMSGSIZE) at stream offset 1234"
    );
    let all = [
        StrError::BadLength {
            offset: 7,
            length: 2,
            seen: 2,
        },
        StrError::Timeout {
            offset: 7,
            seen: 1,
            timeout: Duration::from_millis(1500),
        },
        StrError::Parser {
            offset: 7,
            errno: 74,
        },
        StrError::Interrupted { offset: 7 },
        StrError::Unrecoverable { offset: 7, seen: 3 },
    ];
    let names = ["EPROTO", "ETIMEDOUT", "errno 74", "ESTRPIPE", "ENODATA"];
    for (e, name) in all.iter().zip(names) {
        let s = e.to_string();
        assert!(s.contains(name) && s.ends_with("stream offset 7"), "{s}");
        assert_eq!(e.offset(), 7);
    }
}
