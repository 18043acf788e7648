//! openraft wiring: the gRPC network client and the binary codec of raft
//! log entries and RPCs. The type configuration is [`crate::types`], the
//! `Raft` handle [`crate::Raft`].

pub mod codec;
pub mod network;
