//! Any instruction array: the verifier answers (never panics or hangs), and its error message
//! and the disassembly can be rendered.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = data.len() / 8 * 8;
    let Ok(insns) = kcm_bpf::load_raw(&data[..whole]) else {
        return;
    };
    let _ = kcm_bpf::disassemble(&insns);
    if let Err(e) = kcm_bpf::verify(&insns) {
        let _ = e.to_string();
    }
});
