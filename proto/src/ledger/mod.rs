//! The ledger format: entries, their canonical hash, signatures and command ids.
//!
//! Byte layouts here are normative and specified in `docs/ledger-format.md`.
//! Every multi-byte integer is big-endian; every variable-length field is
//! preceded by its length as a big-endian u64 (see [`encode`]).

pub mod checkpoint;
mod encode;
mod entry;
pub mod map;
pub mod merkle;
mod sign;

pub use encode::Preimage;
pub use entry::{entry_time, Entry, Head, HASH_LEN, ZERO_HASH};
pub use sign::{
    command_id, command_message, push_command_message, sign_command, signing_bytes, verify_command,
    SignatureError, COMMAND_DOMAIN, COMMAND_ID_DOMAIN,
};
