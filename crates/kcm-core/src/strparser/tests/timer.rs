//! The assembly timer on a virtual clock (`kcm-spec.md` §4.3 "Limits").

use super::*;

#[test]
fn timer_armed_at_first_byte_not_rearmed_and_fires() {
    let mut p = sp_cfg(Arc::new(BE32), 1000, Some(10), 64);
    let t0 = Instant::now();
    assert_eq!(p.poll_timeout(), None);
    feed(&mut p, &[0, 0], secs(t0, 3));
    assert_eq!(p.poll_timeout(), Some(secs(t0, 13)));
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, &[0, 5, b'x'], secs(t0, 8));
    assert_eq!(p.next_message(), Ok(None));
    assert_eq!(
        p.poll_timeout(),
        Some(secs(t0, 13)),
        "a later chunk does not re-arm"
    );
    let just_before = secs(t0, 13) - Duration::from_nanos(1);
    assert_eq!(p.handle_timeout(just_before), Ok(()));
    let e = p.handle_timeout(secs(t0, 13)).unwrap_err();
    assert_eq!(
        e,
        StrError::Timeout {
            offset: 0,
            seen: 5,
            timeout: Duration::from_secs(10)
        }
    );
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    assert_eq!((p.stats().msg_timeouts, p.stats().aborts), (1, 1));
    assert_eq!(p.next_message(), Err(e));
}

#[test]
fn timer_cancelled_on_completion_and_rearmed_for_buffered_next_message() {
    let mut p = sp_cfg(Arc::new(BE32), 1000, Some(10), 64);
    let t0 = Instant::now();
    feed(&mut p, &frame(b"ab")[..5], t0);
    assert_eq!(p.next_message(), Ok(None));
    let mut rest = frame(b"ab")[5..].to_vec();
    rest.extend_from_slice(&[0, 0]); // first bytes of the next message
    feed(&mut p, &rest, secs(t0, 4));
    assert!(p.next_message().unwrap().is_some());
    assert_eq!(
        p.poll_timeout(),
        Some(secs(t0, 14)),
        "next message: latest receive + 10 s"
    );
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, &[0, 0], secs(t0, 6));
    assert!(p.next_message().unwrap().is_some()); // an empty-bodied message completes
    assert_eq!(
        p.poll_timeout(),
        None,
        "completion with nothing buffered cancels"
    );
    assert_eq!(p.handle_timeout(secs(t0, 1000)), Ok(()));
    feed(&mut p, &[0], secs(t0, 20));
    assert_eq!(p.poll_timeout(), Some(secs(t0, 30)));
    p.restart_timer(secs(t0, 25));
    assert_eq!(p.poll_timeout(), Some(secs(t0, 35)));
    assert_eq!(p.stats().msg_timeouts, 0);
}

#[test]
fn no_timeout_configured_never_arms() {
    for timeout in [None, Some(Duration::ZERO)] {
        let cfg = StrConfig {
            timeout,
            ..StrConfig::default()
        };
        let mut p = StrParser::new(Arc::new(BE32), cfg);
        let t0 = Instant::now();
        feed(&mut p, &[0, 0], t0);
        assert_eq!(p.next_message(), Ok(None));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.handle_timeout(secs(t0, 1_000_000)), Ok(()));
        p.restart_timer(t0);
        assert_eq!(p.poll_timeout(), None);
    }
}

#[test]
fn set_timeout_applies_to_the_next_timer() {
    let mut p = sp_cfg(Arc::new(BE32), 1000, Some(10), 64);
    let t0 = Instant::now();
    feed(&mut p, &[0], t0);
    p.set_timeout(Some(Duration::from_secs(2)));
    assert_eq!(p.poll_timeout(), Some(secs(t0, 10)));
    feed(&mut p, &[0, 0, 0], t0);
    assert!(p.next_message().unwrap().is_some());
    feed(&mut p, &[0], secs(t0, 50));
    assert_eq!(p.poll_timeout(), Some(secs(t0, 52)));
}

#[test]
fn timer_runs_through_a_skip_and_stops_at_its_end() {
    let mut p = sp_cfg(Arc::new(Tlv), 1000, Some(10), 64);
    let t0 = Instant::now();
    feed(&mut p, &[1, 4, 0], t0);
    assert_eq!(p.next_message(), Ok(None));
    feed(&mut p, &[0], secs(t0, 5));
    assert_eq!(p.poll_timeout(), Some(secs(t0, 10)));
    feed(&mut p, &[0, 0], secs(t0, 7));
    assert_eq!(p.poll_timeout(), None, "skip over, nothing buffered");
    feed(&mut p, &[1, 9], secs(t0, 8));
    assert_eq!(p.next_message(), Ok(None));
    let e = p.handle_timeout(secs(t0, 18)).unwrap_err();
    assert_eq!(
        e,
        StrError::Timeout {
            offset: 6,
            seen: 2,
            timeout: Duration::from_secs(10)
        }
    );
}
