//! Sans-IO core of kcm, a user-space Kernel Connection Multiplexor.
//!
//! Nothing in this crate touches a socket, a clock or a thread: time is passed in as `now`,
//! bytes are handed in and messages handed out. The runtime crate `kcm` drives these state
//! machines with real sockets. The layers, from pure to less pure:
//!
//! - [`Parser`]: KCM's message-boundary contract, and the parsers that ship with kcm
//!   ([`LengthField`] and its presets, [`Mqtt`]).
//! - [`StrParser`]: one connection's stream parser (message assembly, limits, timeout), which
//!   hands a read pass over as runs of whole messages ([`MsgRun`]).
//! - [`mux`]: the N×M multiplexor (receive steering, backpressure, transmit reservation).
//! - [`stats`] and [`proc`]: counters and the `/proc/net/kcm*` renderers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod length_field;
pub mod mqtt;
pub mod parser;
pub mod presets;
pub mod proc;
pub mod run;
pub mod spec;
pub mod stats;
pub mod strparser;

pub use length_field::{ByteOrder, LengthField, LengthFieldBuilder, LengthFieldError, TooLong};
pub use mqtt::Mqtt;
pub use parser::{errno, Parse, Parser};
pub use run::{MsgRun, RunIter, RunMessage};
pub use spec::{parse_spec, SpecError};
pub use strparser::{StrConfig, StrError, StrParser};
pub mod mux;
