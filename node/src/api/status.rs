//! The one place where errors become gRPC status codes.

use arbor_proto::rules::Refusal;
use tonic::{Code, Status};

/// Metadata key carrying the leader's address on `UNAVAILABLE` answers.
pub const LEADER_HEADER: &str = "x-arbor-leader";
/// Metadata key marking a request forwarded by another replica (never forwarded twice).
pub const FORWARDED_HEADER: &str = "x-arbor-forwarded";

/// A command refused before (or instead of) being appended.
pub fn refusal(r: &Refusal) -> Status {
    let code = match r {
        Refusal::Malformed(_) | Refusal::GenesisNotAllowed => Code::InvalidArgument,
        Refusal::Unsigned | Refusal::UnknownSigner(_) | Refusal::BadSignature(_) => {
            Code::Unauthenticated
        }
        Refusal::WrongRole { .. } | Refusal::RevokedKey(_) => Code::PermissionDenied,
        Refusal::NoGenesis => Code::FailedPrecondition,
        // Admitted under a key that changed before commit: sign again.
        Refusal::KeyChanged(_) => Code::Aborted,
    };
    Status::new(code, format!("{} ({})", r, r.code()))
}

/// A refusal decided by the state machine, carried as (code, message).
pub fn refused(code: &str, message: &str) -> Status {
    let c = match code {
        "malformed" | "genesis_not_allowed" => Code::InvalidArgument,
        "unsigned" | "unknown_signer" | "bad_signature" => Code::Unauthenticated,
        "wrong_role" | "revoked_key" => Code::PermissionDenied,
        "no_genesis" => Code::FailedPrecondition,
        "key_changed" => Code::Aborted,
        _ => Code::Internal,
    };
    Status::new(c, format!("{message} ({code})"))
}

/// No leader can serve the request right now; `leader` is a hint if known.
pub fn unavailable(message: impl Into<String>, leader: Option<&str>) -> Status {
    let mut s = Status::unavailable(message.into());
    if let Some(addr) = leader {
        if let Ok(v) = addr.parse() {
            s.metadata_mut().insert(LEADER_HEADER, v);
        }
    }
    s
}

pub fn not_found(message: impl Into<String>) -> Status {
    Status::not_found(message.into())
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// Storage or raft failure on this replica.
pub fn internal(message: impl std::fmt::Display) -> Status {
    Status::internal(message.to_string())
}
