//! gRPC services: the client API (`arbor.v1.Arbor`) and the replica API
//! (`arbor.v1.Raft`), served on the same listener. Errors become status codes
//! only in `status.rs`.

pub mod admission;
mod audit;
pub mod client_api;
pub mod raft_api;
pub mod routing;
pub mod status;
pub mod watch;

pub use client_api::ArborApi;
pub use raft_api::RaftApi;
