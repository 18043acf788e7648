//! The client library's one error type.
//!
//! A *rejected* command is not an error: it is a successful [`crate::Client::submit`]
//! whose `outcome.accepted` is false (the rejection is recorded in the ledger).
//! These variants are for calls that did not produce an answer, or that the
//! server refused to act on at all.

use std::path::PathBuf;

use arbor_proto::identity::KeyFileError;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status (never retried for codes
    /// such as `INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`).
    #[error("{}: {message}", code_name(*.code))]
    Status { code: Code, message: String },

    /// No replica gave an answer before the call's deadline; holds the last error.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),

    /// A key file or key material is malformed.
    #[error("{0}")]
    Key(String),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The caller passed something unusable (an empty endpoint list, a bad address).
    #[error("{0}")]
    InvalidInput(String),
}

impl ClientError {
    /// The gRPC code: the server's code for [`ClientError::Status`],
    /// `Unavailable` for [`ClientError::Unavailable`], `None` for local errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::Unavailable(_) => Some(Code::Unavailable),
            _ => None,
        }
    }

    pub(crate) fn from_status(s: &tonic::Status) -> ClientError {
        ClientError::Status {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl From<KeyFileError> for ClientError {
    fn from(e: KeyFileError) -> ClientError {
        match e {
            KeyFileError::Io { path, source } => ClientError::Io { path, source },
            KeyFileError::Invalid(msg) => ClientError::Key(msg),
        }
    }
}

/// A short lowercase name for a gRPC code, as in the gRPC spec (`not found`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
