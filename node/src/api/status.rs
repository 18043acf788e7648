//! The one place where errors become gRPC status codes.

use arbor_proto::rules::{Refusal, RefusalKind};
pub use arbor_proto::wire::{FORWARDED_HEADER, LEADER_HEADER};
use tonic::{Code, Status};

/// The status code of each kind of refusal.
fn refusal_code(kind: RefusalKind) -> Code {
    match kind {
        RefusalKind::Malformed | RefusalKind::GenesisNotAllowed => Code::InvalidArgument,
        RefusalKind::Unsigned | RefusalKind::UnknownSigner | RefusalKind::BadSignature => {
            Code::Unauthenticated
        }
        RefusalKind::WrongRole | RefusalKind::RevokedKey => Code::PermissionDenied,
        RefusalKind::NoGenesis => Code::FailedPrecondition,
        // Admitted under a key that changed before commit: sign again.
        RefusalKind::KeyChanged => Code::Aborted,
    }
}

/// A command refused before (or instead of) being appended.
pub fn refusal(r: &Refusal) -> Status {
    refused(&r.kind(), &r.to_string())
}

/// A refusal decided by the state machine, carried as (kind, message).
pub fn refused(kind: &RefusalKind, message: &str) -> Status {
    Status::new(refusal_code(*kind), format!("{message} ({kind})"))
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
