//! What client and replica must agree on besides the protobuf messages: the
//! gRPC metadata keys of the status answers and of forwarded requests.
//!
//! Refusals travel as status codes with the [`RefusalKind`] name in the
//! message; see `node/src/api/status.rs` for which code each kind gets.
//!
//! [`RefusalKind`]: crate::rules::RefusalKind

/// Metadata key with the leader's `host:port` on `UNAVAILABLE` answers.
pub const LEADER_HEADER: &str = "x-arbor-leader";

/// Metadata key marking a request forwarded by another replica (a replica
/// never forwards such a request a second time).
pub const FORWARDED_HEADER: &str = "x-arbor-forwarded";
