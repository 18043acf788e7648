//! gRPC services: the client API (`arbor.v1.Arbor`, on the client port) and
//! the replica API (`arbor.v1.Raft`, on the peer port with the Arbor service
//! for forwarded requests, members only: `peer_auth.rs`). Errors become status codes
//! only in `status.rs`.

pub mod admission;
mod audit;
pub mod client_api;
pub mod peer_auth;
pub mod raft_api;
pub mod read_index;
pub mod routing;
pub mod status;
pub mod watch;
mod write;

pub use client_api::ArborApi;
pub use raft_api::RaftApi;

/// The server stream of `WatchEntries` (built in `watch.rs`, named by the
/// service in `client_api.rs`; here so neither imports the other for it).
pub type EntryStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<arbor_proto::pb::LedgerEntry, tonic::Status>> + Send>,
>;
