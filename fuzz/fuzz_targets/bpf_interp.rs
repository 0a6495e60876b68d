//! Program and input together: the first byte gives the number of instructions, the next
//! 8-byte slots the program, the rest is the message view. A verified program must run
//! without a fault on every view, and the native (recognised) answer must equal the
//! interpreter's.
#![no_main]

use kcm_core::{Parse, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let len = (usize::from(n) * 8).min(rest.len() / 8 * 8);
    let (code, view) = rest.split_at(len);
    let Ok(parser) = kcm_bpf::BpfParser::from_raw(code) else {
        return;
    };
    for end in [0, view.len() / 2, view.len()] {
        let v = &view[..end];
        let raw = parser.run_interpreter(v).expect("a verified program never faults");
        assert_eq!(parser.parse(v), Parse::from_raw(i64::from(raw as i32)));
    }
});
