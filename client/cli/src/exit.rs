//! The exit codes `arbor` and `arbor-node` share (docs/operations.md lists
//! them), and how an error is sorted into one.
//!
//! | code | meaning |
//! |------|---------|
//! | 0  | success (audit commands: verified against pinned trust) |
//! | 1  | failure: a check or proof failed, or an error not covered below |
//! | 2  | rejected: the command was signed and appended with outcome rejected |
//! | 3  | not found (order, party, entry, file) |
//! | 4  | unavailable: cluster unreachable, no leader, deadline exceeded |
//! | 5  | refused by the replica: nothing appended (invalid, permission, limits) |
//! | 6  | refused locally before signing (the pre-check; `--force` overrides) |
//! | 7  | unverified: internally consistent only (no `--trust` given) |
//! | 64 | usage error (bad flags or arguments) |

use std::fmt;

use arbor_client::ClientError;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    Failure,
    Rejected,
    NotFound,
    Unavailable,
    Refused,
    RefusedLocally,
    Unverified,
    Usage,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Rejected => 2,
            Exit::NotFound => 3,
            Exit::Unavailable => 4,
            Exit::Refused => 5,
            Exit::RefusedLocally => 6,
            Exit::Unverified => 7,
            Exit::Usage => 64,
        }
    }

    /// The `kind` of a JSON error object.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Rejected => "rejected",
            Exit::NotFound => "not_found",
            Exit::Unavailable => "unavailable",
            Exit::Refused => "refused",
            Exit::RefusedLocally => "refused_locally",
            Exit::Unverified => "unverified",
            Exit::Usage => "usage",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// The `Exit codes:` section of `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0   success (audit commands: verified against pinned trust)
  1   failure: a check or proof failed, or an error not covered below
  2   rejected: the command was signed and appended with outcome `rejected`
  3   not found (order, party, entry, file)
  4   unavailable: cluster unreachable, no leader, deadline exceeded
  5   refused by the replica: nothing appended (invalid, permission, resource limits)
  6   refused locally before signing: the pre-check predicts a rejection (--force signs anyway)
  7   unverified: an audit result that is internally consistent only (no --trust given)
  64  usage error (bad flags or arguments)

Errors are one line starting with `error:` on stderr; with --output json, one JSON \
object on stderr: {\"error\": MESSAGE, \"kind\": KIND, \"exit_code\": N, ...}.";

/// An error that knows its exit code, with optional JSON details (merged
/// into the JSON error object).
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub details: Option<Value>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> CliError {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// `bail!` with exit code 64 (a usage error).
macro_rules! usage {
    ($($t:tt)*) => {
        return Err($crate::exit::CliError::new($crate::exit::Exit::Usage, format!($($t)*)).into())
    };
}
pub(crate) use usage;

/// `bail!` with an exit code.
pub fn fail<T>(exit: Exit, message: impl Into<String>) -> anyhow::Result<T> {
    Err(CliError::new(exit, message).into())
}

/// The exit code of an error: the first cause in its chain that says.
pub fn classify(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return c.exit;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return client_exit(c);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return Exit::NotFound;
            }
        }
        if let Some(k) = cause.downcast_ref::<arbor_proto::identity::KeyFileError>() {
            if let arbor_proto::identity::KeyFileError::Io { source, .. } = k {
                if source.kind() == std::io::ErrorKind::NotFound {
                    return Exit::NotFound;
                }
            }
            return Exit::Failure;
        }
    }
    Exit::Failure
}

pub fn client_exit(e: &ClientError) -> Exit {
    use tonic::Code;
    match e {
        ClientError::Status { code, .. } => match code {
            Code::NotFound => Exit::NotFound,
            Code::Unavailable | Code::DeadlineExceeded => Exit::Unavailable,
            Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => Exit::Refused,
            _ => Exit::Failure,
        },
        ClientError::Unavailable(_) => Exit::Unavailable,
        ClientError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Exit::NotFound
        }
        ClientError::InvalidInput(_) => Exit::Usage,
        _ => Exit::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_sort_into_their_codes() {
        let st = |code| {
            anyhow::Error::from(ClientError::Status {
                code,
                message: "x".into(),
            })
        };
        assert_eq!(classify(&st(tonic::Code::NotFound)), Exit::NotFound);
        assert_eq!(
            classify(&st(tonic::Code::DeadlineExceeded)),
            Exit::Unavailable
        );
        assert_eq!(classify(&st(tonic::Code::PermissionDenied)), Exit::Refused);
        assert_eq!(classify(&st(tonic::Code::ResourceExhausted)), Exit::Refused);
        assert_eq!(
            classify(&anyhow::Error::from(ClientError::Unavailable("x".into()))),
            Exit::Unavailable
        );
        let local =
            anyhow::Error::from(CliError::new(Exit::RefusedLocally, "no")).context("claim o-1");
        assert_eq!(classify(&local), Exit::RefusedLocally);
        let missing = std::fs::read("/nonexistent/arbor-key").unwrap_err();
        assert_eq!(classify(&anyhow::Error::from(missing)), Exit::NotFound);
        assert_eq!(classify(&anyhow::anyhow!("other")), Exit::Failure);
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Failure,
            Exit::Rejected,
            Exit::NotFound,
            Exit::Unavailable,
            Exit::Refused,
            Exit::RefusedLocally,
            Exit::Unverified,
            Exit::Usage,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 64]);
    }
}
