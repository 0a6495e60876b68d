//! ELF objects and raw instruction arrays: loading never panics, and whatever loads and
//! verifies runs without a fault.
#![no_main]

use kcm_core::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for section in [None, Some("socket_kcm"), Some(".text")] {
        if let Ok(p) = kcm_bpf::BpfParser::from_elf(data, section) {
            assert!(p.run_interpreter(data).is_ok());
            let _ = p.parse(data);
        }
    }
    let _ = kcm_bpf::load_raw(data);
});
