//! openraft wiring: type configuration and the gRPC network client.

pub mod codec;
pub mod network;
pub mod types;

pub use types::{NodeId, Raft, Request, Response, TypeConfig};
