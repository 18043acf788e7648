//! The one place where errors become gRPC status codes: every `Status` the
//! replica answers with is built here (clippy's `disallowed-methods` keeps
//! `Status::` constructors out of other files; see clippy.toml).
#![allow(clippy::disallowed_methods)]

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
        RefusalKind::WrongRole | RefusalKind::RevokedKey | RefusalKind::ForeignReference => {
            Code::PermissionDenied
        }
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

/// The request cannot be served in this state (fix the state, not the request).
pub fn failed_precondition(message: impl Into<String>) -> Status {
    Status::failed_precondition(message.into())
}

/// The caller is known but may not do this.
pub fn permission_denied(message: impl Into<String>) -> Status {
    Status::permission_denied(message.into())
}

/// The caller did not prove who it is.
pub fn unauthenticated(message: impl Into<String>) -> Status {
    Status::unauthenticated(message.into())
}

/// A configured limit was reached; the message names it.
pub fn resource_exhausted(message: impl Into<String>) -> Status {
    Status::resource_exhausted(message.into())
}

/// A position past what exists (e.g. a sequence number ahead of the ledger).
pub fn out_of_range(message: impl Into<String>) -> Status {
    Status::out_of_range(message.into())
}

/// A status with an explicit code (refusals renamed by the listener).
pub fn with_code(code: Code, message: impl Into<String>) -> Status {
    Status::new(code, message.into())
}
