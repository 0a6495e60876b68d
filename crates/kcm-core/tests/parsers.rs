//! The native parsers used from outside the crate, the way a stream parser uses them: split a
//! byte stream holding several real protocol messages, fed in pieces of every size.

use kcm_core::{errno, parse_spec, presets, Parse, Parser};

/// What a minimal stream parser makes of `stream` when the bytes arrive `chunk` at a time:
/// delivered messages (after the strip prefix), skipped byte counts, and the final error.
#[derive(Debug, Default, PartialEq, Eq)]
struct Framed {
    msgs: Vec<Vec<u8>>,
    skipped: Vec<usize>,
    error: Option<i32>,
}

fn frame(p: &dyn Parser, stream: &[u8], chunk: usize) -> Framed {
    let mut out = Framed::default();
    let mut start = 0; // first byte of the current message
    let mut seen = 0; // bytes received so far
    while seen < stream.len() {
        seen = (seen + chunk).min(stream.len());
        // Drain every message complete within the bytes seen so far.
        while start < seen {
            match p.parse(&stream[start..seen]) {
                Parse::NeedMore => break,
                Parse::Length(n) if start + n <= seen => {
                    out.msgs
                        .push(stream[start + p.strip_prefix()..start + n].to_vec());
                    start += n;
                }
                Parse::Skip(n) if start + n <= seen => {
                    out.skipped.push(n);
                    start += n;
                }
                Parse::Length(_) | Parse::Skip(_) => break, // wait for the rest
                Parse::Error(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out
}

/// Frames `stream` with every chunk size from 1 to the whole and checks the results agree.
fn frame_all_ways(spec: &str, stream: &[u8]) -> Framed {
    let p = parse_spec(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let whole = frame(&*p, stream, stream.len().max(1));
    for chunk in 1..stream.len() {
        assert_eq!(frame(&*p, stream, chunk), whole, "{spec}, chunk {chunk}");
    }
    whole
}

fn thrift_msg(body: &[u8]) -> Vec<u8> {
    let mut m = (body.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

#[test]
fn thrift_stream_with_strip_and_discard() {
    let mut stream = Vec::new();
    for body in [
        &b"ping"[..],
        b"",
        b"a longer body that is over max",
        b"pong",
    ] {
        stream.extend(thrift_msg(body));
    }
    let f = frame_all_ways("thrift", &stream);
    assert_eq!(f.msgs.len(), 4);
    assert_eq!(f.msgs[0], thrift_msg(b"ping"));
    assert_eq!(f.error, None);

    let f = frame_all_ways("thrift,strip=4,max=16,discard", &stream);
    assert_eq!(f.msgs, vec![b"ping".to_vec(), vec![], b"pong".to_vec()]);
    assert_eq!(f.skipped, vec![34]);

    let f = frame_all_ways("thrift,max=16", &stream);
    assert_eq!(f.msgs.len(), 2);
    assert_eq!(f.error, Some(errno::EMSGSIZE));
}

#[test]
fn memcache_stream_of_get_and_set() {
    fn request(opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = extras.len() + key.len() + value.len();
        let mut m = vec![0x80, opcode];
        m.extend_from_slice(&(key.len() as u16).to_be_bytes());
        m.push(extras.len() as u8);
        m.extend_from_slice(&[0, 0, 0]); // data type, vbucket
        m.extend_from_slice(&(body as u32).to_be_bytes());
        m.extend_from_slice(&[0; 12]); // opaque, cas
        m.extend_from_slice(extras);
        m.extend_from_slice(key);
        m.extend_from_slice(value);
        m
    }
    let get = request(0x00, &[], b"Hello", &[]);
    let set = request(
        0x01,
        &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0x0e, 0x10],
        b"Hello",
        b"World",
    );
    let stream = [get.clone(), set.clone(), get.clone()].concat();
    let f = frame_all_ways("memcache", &stream);
    assert_eq!(f.msgs, vec![get.clone(), set, get]);
}

#[test]
fn http2_frames_after_the_preface() {
    let settings = [0, 0, 6, 0x04, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    let ack = [0, 0, 0, 0x04, 0x01, 0, 0, 0, 0];
    let mut data = vec![0, 0, 5, 0x00, 0x01, 0, 0, 0, 1];
    data.extend_from_slice(b"hello");
    let stream = [&settings[..], &ack, &data].concat();
    let f = frame_all_ways("http2", &stream);
    assert_eq!(f.msgs, vec![settings.to_vec(), ack.to_vec(), data]);
}

#[test]
fn dns_and_kafka_streams() {
    let q1 = [&[0u8, 3][..], b"abc"].concat();
    let q2 = [&[0u8, 1][..], b"z"].concat();
    let f = frame_all_ways("dns", &[q1.clone(), q2.clone()].concat());
    assert_eq!(f.msgs, vec![q1, q2]);

    let ok = [&6i32.to_be_bytes()[..], b"kafka!"].concat();
    let bad = (-1i32).to_be_bytes();
    let f = frame_all_ways("kafka", &[&ok[..], &bad, &ok].concat());
    assert_eq!(f.msgs, vec![ok]);
    assert_eq!(f.error, Some(errno::EPROTO));
}

#[test]
fn mqtt_stream_of_connect_publish_ping() {
    let connect = [
        &[0x10u8, 15][..],
        &[0, 4],
        b"MQTT",
        &[4, 0x02, 0, 60, 0, 3],
        b"kcm",
    ]
    .concat();
    // PUBLISH QoS 0, topic "t", 200-byte payload: remaining 3 + 200 = 203 = 0xcb 0x01.
    let publish = [&[0x30u8, 0xcb, 0x01, 0, 1, b't'][..], &[7u8; 200]].concat();
    let ping = vec![0xc0, 0x00];
    let stream = [connect.clone(), publish.clone(), ping.clone()].concat();
    let f = frame_all_ways("mqtt", &stream);
    assert_eq!(f.msgs, vec![connect.clone(), publish, ping.clone()]);

    let f = frame_all_ways("mqtt,max=100,discard", &stream);
    assert_eq!(f.msgs, vec![connect, ping]);
    assert_eq!(f.skipped, vec![206]);
}

#[test]
fn little_endian_including_header_with_strip() {
    // A 2-byte little-endian length that counts itself, stripped before delivery.
    let msg = |body: &[u8]| {
        let mut m = ((body.len() + 2) as u16).to_le_bytes().to_vec();
        m.extend_from_slice(body);
        m
    };
    let stream = [msg(b"one"), msg(b"three")].concat();
    let f = frame_all_ways("lf:width=2,le,incl,strip=2", &stream);
    assert_eq!(f.msgs, vec![b"one".to_vec(), b"three".to_vec()]);
    // A zero length is shorter than the header: EPROTO.
    let f = frame_all_ways("lf:width=2,le,incl", &[msg(b"x"), vec![0, 0]].concat());
    assert_eq!(f.msgs.len(), 1);
    assert_eq!(f.error, Some(errno::EPROTO));
}

#[test]
fn presets_and_their_spec_names_agree() {
    for (name, _) in presets::PRESETS {
        let a = presets::by_name(name).expect("listed");
        let b = parse_spec(name).expect("parses");
        for bytes in [
            &[0x30u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12][..],
            &[0xff; 13],
        ] {
            assert_eq!(a.parse(bytes), b.parse(bytes), "{name}");
        }
    }
}
