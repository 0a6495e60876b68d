//! BPF socket-filter parser programs (placeholder: built by the BPF issue).
#![forbid(unsafe_code)]
