//! The committed C corpus (`bpf/*.o`, built by `bpf/build.sh`): each object loads, verifies,
//! is or is not recognised as expected, and answers like the protocol says.

use std::path::PathBuf;

use kcm_bpf::BpfParser;
use kcm_core::{errno, Parse, Parser};

fn corpus(name: &str) -> BpfParser {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../bpf")
        .join(format!("{name}.o"));
    BpfParser::from_elf_file(&path, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Checks parse() against the interpreter's raw answer too, so both paths are exercised.
fn check(p: &BpfParser, view: &[u8], want: Parse) {
    assert_eq!(p.parse(view), want, "parse {view:02x?}");
    let raw = p.run_interpreter(view).expect("no fault");
    assert_eq!(
        Parse::from_raw(i64::from(raw as i32)),
        want,
        "interpreter {view:02x?}"
    );
}

#[test]
fn kcm_doc_example() {
    let p = corpus("kcm_doc");
    assert!(p.is_native());
    check(&p, &[0, 0, 0, 12], Parse::Length(16));
    check(&p, &[0, 0, 0], Parse::NeedMore);
    check(&p, &[0xff, 0xff, 0xff, 0xf0], Parse::Error(12));
}

#[test]
fn thrift_via_skb_load_bytes_is_recognised() {
    let p = corpus("thrift");
    let n = p.native().expect("recognised");
    assert_eq!(n.preset(), Some("thrift"));
    check(&p, &[0, 0, 1, 0, 9], Parse::Length(260));
    check(&p, &[0, 0, 1], Parse::NeedMore);
}

#[test]
fn memcache_dns_http2() {
    let m = corpus("memcache");
    assert_eq!(m.native().and_then(|n| n.preset()), Some("memcache"));
    let mut hdr = [0u8; 24];
    hdr[8..12].copy_from_slice(&5u32.to_be_bytes());
    check(&m, &hdr, Parse::Length(29));
    check(&m, &hdr[..11], Parse::NeedMore);
    let d = corpus("dns");
    assert!(d.native().is_some_and(|n| n.is_plain()));
    check(&d, &[1, 0], Parse::Length(258));
    let h = corpus("http2");
    assert_eq!(h.native().and_then(|n| n.preset()), Some("http2"));
    check(&h, &[0, 1, 0, 4], Parse::Length(265));
    check(&h, &[0, 1], Parse::NeedMore);
}

#[test]
fn kafka_and_little_endian() {
    let k = corpus("kafka");
    assert!(k.is_native(), "{}", k.disassembly());
    check(&k, &[0, 0, 0, 20], Parse::Length(24));
    check(&k, &[0x80, 0, 0, 0], Parse::Error(0x7fff_fffc));
    let le = corpus("le_u32");
    let n = le.native().expect("recognised");
    assert_eq!(n.length_field().order(), kcm_core::ByteOrder::Little);
    check(&le, &[9, 0, 0, 0], Parse::Length(9));
    check(&le, &[0, 0, 0, 0], Parse::NeedMore);
    check(&le, &[9, 0, 0], Parse::NeedMore);
}

#[test]
fn mqtt_is_interpreted() {
    let p = corpus("mqtt");
    assert!(!p.is_native());
    check(&p, &[0x30], Parse::NeedMore);
    check(&p, &[0x30, 5], Parse::Length(7));
    check(&p, &[0x30, 0x80], Parse::NeedMore);
    check(&p, &[0x30, 0x80, 1], Parse::Length(3 + 128));
    check(
        &p,
        &[0x30, 0xff, 0xff, 0xff, 0x7f],
        Parse::Length(5 + 268_435_455),
    );
    check(
        &p,
        &[0x30, 0xff, 0xff, 0xff, 0xff],
        Parse::Error(errno::EBADMSG),
    );
}

fn object(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../bpf")
        .join(format!("{name}.o"));
    std::fs::read(path).expect("corpus object")
}

#[test]
fn llvm_mc_object_in_a_socket_section() {
    let obj = object("asm_dns");
    let p = BpfParser::from_elf(&obj, None).expect("found through socket*");
    assert!(p.native().is_some_and(|n| n.preset() == Some("dns")));
    let named = BpfParser::from_elf(&obj, Some("socket")).expect("by name");
    assert_eq!(named.program().insns(), p.program().insns());
}

#[test]
fn loader_errors_name_what_was_found() {
    let obj = object("kcm_doc");
    let err = kcm_bpf::load_elf(&obj, Some("socket_kcn")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no section named `socket_kcn`"), "{msg}");
    assert!(
        msg.contains("socket_kcm") && msg.contains("license"),
        "{msg}"
    );
    // Not an ELF object at all.
    assert!(matches!(
        kcm_bpf::load_elf(b"\x7fELF", None),
        Err(kcm_bpf::LoadError::Elf(_))
    ));
    // An x86 object is not BPF: this test binary's own kind of file is not at hand, so patch
    // e_machine of a BPF object instead (offset 18, little-endian).
    let mut x86 = obj.clone();
    x86[18] = 62;
    x86[19] = 0;
    assert!(matches!(
        kcm_bpf::load_elf(&x86, None),
        Err(kcm_bpf::LoadError::NotBpf(_))
    ));
    // A raw array whose length is not a whole number of instructions.
    assert!(BpfParser::from_raw(&[0; 12]).is_err());
}

#[test]
fn verifier_error_is_reported_through_the_parser() {
    // r0 = r2 (never written); exit
    let raw = [0xbf, 0x20, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let err = BpfParser::from_raw(&raw).unwrap_err();
    assert_eq!(err.to_string(), "verifier: insn 0: R2 !read_ok");
}
