//! Unit tests for parser spec strings: every option and every error.

use super::*;
use crate::parser::{errno, Parse};

fn lf(s: &str) -> LengthField {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> SpecError {
    match parse_spec(s) {
        Ok(p) => panic!("{s} parsed as {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn bare_lf_is_the_default_builder() {
    let want = LengthField::builder().build().unwrap();
    assert_eq!(lf("lf"), want);
    assert_eq!(lf("lf:"), want);
    assert_eq!(lf("  lf  "), want);
}

#[test]
fn every_option_sets_its_field() {
    assert_eq!(lf("lf:offset=3").offset(), 3);
    assert_eq!(lf("lf:width=2").width(), 2);
    assert_eq!(lf("lf:be").order(), ByteOrder::Big);
    assert_eq!(lf("lf:le").order(), ByteOrder::Little);
    assert!(lf("lf:signed").signed());
    assert_eq!(lf("lf:adjust=-4").adjust(), -4);
    assert_eq!(lf("lf:adjust=+7").adjust(), 7);
    assert_eq!(lf("lf:adjust=-9223372036854775808").adjust(), i64::MIN);
    assert!(lf("lf:incl").includes_header());
    assert_eq!(lf("lf:strip=4").strip(), 4);
    assert_eq!(lf("lf:max=1048576").max_length(), Some(1 << 20));
    assert_eq!(lf("lf:discard").too_long(), TooLong::Discard);
    assert_eq!(lf("lf:fail").too_long(), TooLong::Fail);
}

#[test]
fn a_full_lf_spec_matches_the_builder() {
    let want = LengthField::builder()
        .offset(2)
        .width(2)
        .little_endian()
        .signed(true)
        .adjust(-2)
        .includes_header(true)
        .strip(4)
        .max_length(4096)
        .too_long(TooLong::Discard)
        .build()
        .unwrap();
    let got = lf("lf:offset=2,width=2,le,signed,adjust=-2,incl,strip=4,max=4K,discard");
    assert_eq!(got, want);
    // Spaces around options and values are tolerated, and ',' may follow `lf` too.
    assert_eq!(
        lf("lf, offset = 2 ,width=2,le,signed,adjust=-2,incl,strip=4,max=4k,discard"),
        want
    );
}

#[test]
fn max_suffixes_are_binary_units() {
    assert_eq!(lf("lf:max=64K").max_length(), Some(64 * 1024));
    assert_eq!(lf("lf:max=64k").max_length(), Some(64 * 1024));
    assert_eq!(lf("lf:max=3M").max_length(), Some(3 << 20));
    assert_eq!(lf("lf:max=3m").max_length(), Some(3 << 20));
    assert_eq!(lf("lf:max=4").max_length(), Some(4));
}

#[test]
fn presets_take_lf_options_as_overrides() {
    let t = lf("thrift,max=65536");
    assert_eq!(
        t,
        presets::thrift()
            .to_builder()
            .max_length(65536)
            .build()
            .unwrap()
    );
    let m = lf("memcache,strip=12,max=1M,discard");
    assert_eq!((m.offset(), m.adjust(), m.strip()), (8, 12, 12));
    // The strip prefix cannot pass the length field: memcache's header is 24 bytes but a
    // message is only known to be 12 bytes long.
    assert_eq!(
        err("memcache,strip=13"),
        SpecError::Invalid(LengthFieldError::StripBeyondHeader {
            strip: 13,
            header_len: 12
        })
    );
    assert_eq!(m.too_long(), TooLong::Discard);
    // `:` works after a preset name as well.
    assert_eq!(lf("dns:max=512").max_length(), Some(512));
    let k = parse_spec("kafka,max=100").unwrap();
    assert_eq!(k.parse(&96i32.to_be_bytes()), Parse::Length(100));
    assert_eq!(k.parse(&97i32.to_be_bytes()), Parse::Error(errno::EMSGSIZE));
    assert_eq!(k.parse(&(-5i32).to_be_bytes()), Parse::Error(errno::EPROTO));
}

#[test]
fn every_preset_name_parses() {
    for (name, _) in presets::PRESETS {
        let p = parse_spec(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let direct = presets::by_name(name).unwrap();
        assert_eq!(format!("{p:?}"), format!("{direct:?}"), "{name}");
        assert!(SPEC_HELP.contains(name), "{name} missing from SPEC_HELP");
    }
}

#[test]
fn mqtt_takes_max_and_policy_only() {
    let m = parse_spec("mqtt,max=100,discard").unwrap();
    assert_eq!(m.parse(&[0x30, 98]), Parse::Length(100));
    assert_eq!(m.parse(&[0x30, 99]), Parse::Skip(101));
    let m = parse_spec("mqtt,max=100").unwrap();
    assert_eq!(m.parse(&[0x30, 99]), Parse::Error(errno::EMSGSIZE));
    let m = parse_spec("mqtt:fail").unwrap();
    assert_eq!(m.parse(&[0x30, 99]), Parse::Length(101));
    for opt in [
        "width=2", "le", "strip=1", "incl", "signed", "adjust=1", "offset=0",
    ] {
        assert_eq!(
            err(&format!("mqtt,{opt}")),
            SpecError::NotApplicable {
                parser: "mqtt".into(),
                option: opt.into()
            }
        );
    }
    assert_eq!(
        "mqtt".parse::<LengthField>(),
        Err(SpecError::NotLengthField("mqtt".into()))
    );
}

#[test]
fn bpf_specs_are_not_native() {
    for s in [
        "bpf:parser.o",
        "bpf:parser.o:socket_kcm",
        "bpf:/a,b/c.o",
        " bpf:x",
        "bpf",
    ] {
        assert_eq!(err(s), SpecError::NotNative, "{s}");
    }
    // Only the exact prefix: `bpfx` is just an unknown name.
    assert_eq!(err("bpfx"), SpecError::UnknownParser("bpfx".into()));
}

#[test]
fn structural_errors() {
    assert_eq!(err(""), SpecError::Empty);
    assert_eq!(err("   "), SpecError::Empty);
    assert_eq!(err("gopher"), SpecError::UnknownParser("gopher".into()));
    assert_eq!(err("Thrift"), SpecError::UnknownParser("Thrift".into()));
    assert_eq!(err(":width=2"), SpecError::UnknownParser("".into()));
    assert_eq!(err("lf:width=2,,le"), SpecError::EmptyOption);
    assert_eq!(err("lf:width=2,"), SpecError::EmptyOption);
    assert_eq!(err("thrift,,"), SpecError::EmptyOption);
    // An empty list after the separator is no options at all.
    assert_eq!(lf("thrift,"), presets::thrift());
    assert_eq!(lf("thrift:"), presets::thrift());
}

#[test]
fn option_errors_name_the_option() {
    assert_eq!(err("lf:size=4"), SpecError::UnknownOption("size=4".into()));
    assert_eq!(err("lf:big"), SpecError::UnknownOption("big".into()));
    assert_eq!(err("lf:=4"), SpecError::UnknownOption("=4".into()));
    for key in ["offset", "width", "adjust", "strip", "max"] {
        assert_eq!(
            err(&format!("lf:{key}")),
            SpecError::MissingValue(key.into())
        );
    }
    for key in ["be", "le", "signed", "incl", "discard", "fail"] {
        assert_eq!(
            err(&format!("lf:{key}=1")),
            SpecError::UnexpectedValue(key.into())
        );
    }
    let bad = |option: &str, value: &str| SpecError::BadNumber {
        option: option.into(),
        value: value.into(),
    };
    assert_eq!(err("lf:offset=-1"), bad("offset", "-1"));
    assert_eq!(err("lf:width=four"), bad("width", "four"));
    assert_eq!(err("lf:width="), bad("width", ""));
    assert_eq!(err("lf:strip=0x4"), bad("strip", "0x4"));
    assert_eq!(err("lf:adjust=1.5"), bad("adjust", "1.5"));
    assert_eq!(
        err("lf:adjust=9223372036854775808"),
        bad("adjust", "9223372036854775808")
    );
    assert_eq!(err("lf:max=K"), bad("max", "K"));
    assert_eq!(err("lf:max=4G"), bad("max", "4G"));
    assert_eq!(err("lf:max=4KiB"), bad("max", "4KiB"));
    let huge = format!("{}M", usize::MAX);
    assert_eq!(err(&format!("lf:max={huge}")), bad("max", &huge));
    let msg = err("lf:width=four").to_string();
    assert!(msg.contains("width") && msg.contains("four"), "{msg}");
}

#[test]
fn repeated_or_contradictory_options_are_refused() {
    assert_eq!(
        err("lf:width=2,width=2"),
        SpecError::Duplicate("width=2".into())
    );
    assert_eq!(err("lf:be,le"), SpecError::Duplicate("le".into()));
    assert_eq!(err("lf:discard,fail"), SpecError::Duplicate("fail".into()));
    assert_eq!(
        err("mqtt,max=1,max=2"),
        SpecError::Duplicate("max=2".into())
    );
}

#[test]
fn invalid_combinations_surface_the_builder_error() {
    assert_eq!(
        err("lf:width=0"),
        SpecError::Invalid(LengthFieldError::Width(0))
    );
    assert_eq!(
        err("lf:width=9"),
        SpecError::Invalid(LengthFieldError::Width(9))
    );
    assert_eq!(
        err("lf:width=2,strip=3"),
        SpecError::Invalid(LengthFieldError::StripBeyondHeader {
            strip: 3,
            header_len: 2
        })
    );
    assert_eq!(
        err("lf:max=0"),
        SpecError::Invalid(LengthFieldError::ZeroMaxLength)
    );
    assert_eq!(
        err("memcache,max=8"),
        SpecError::Invalid(LengthFieldError::MaxBelowHeader {
            max_length: 8,
            header_len: 12
        })
    );
    assert!(matches!(
        err(&format!("lf:offset={}", usize::MAX)),
        SpecError::Invalid(LengthFieldError::Offset { .. })
    ));
}

#[test]
fn display_prints_a_spec_that_parses_back() {
    let cases = [
        "lf:offset=0,width=4,be",
        "lf:offset=8,width=4,be,adjust=12",
        "lf:offset=1,width=3,le,signed,adjust=-3,incl,strip=2,max=100,discard",
    ];
    for s in cases {
        assert_eq!(lf(s).to_string(), s);
    }
    for name in ["thrift", "memcache", "http2", "dns", "kafka"] {
        let p = presets::length_field_by_name(name).unwrap();
        assert_eq!(lf(&p.to_string()), p, "{name}");
    }
    assert_eq!(Mqtt::new().to_string(), "mqtt");
    assert_eq!(Mqtt::with_max(9, TooLong::Fail).to_string(), "mqtt,max=9");
    assert_eq!(
        Mqtt::with_max(9, TooLong::Discard).to_string(),
        "mqtt,max=9,discard"
    );
    let back = parse_spec(&Mqtt::with_max(9, TooLong::Discard).to_string()).unwrap();
    assert_eq!(
        format!("{back:?}"),
        format!("{:?}", Mqtt::with_max(9, TooLong::Discard))
    );
}

#[test]
fn help_mentions_every_option() {
    for opt in [
        "offset=", "width=", "be", "le", "signed", "adjust=", "incl", "strip=", "max=", "discard",
        "fail", "lf", "bpf:",
    ] {
        assert!(SPEC_HELP.contains(opt), "{opt}");
    }
    // Every example in the help text is itself valid.
    let examples = SPEC_HELP
        .lines()
        .find_map(|l| l.strip_prefix("Examples:"))
        .unwrap();
    for ex in examples.split_whitespace() {
        assert!(parse_spec(ex).is_ok(), "{ex}");
    }
}
