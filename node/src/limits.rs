//! Resource limits of a replica: the `[limits]` table of the TOML config.
//!
//! Every limit that a client can run into is answered `RESOURCE_EXHAUSTED`
//! with a message naming the limit by its config key (`limits.KEY = VALUE`,
//! see [`exhausted`]), so an operator reading a client's error knows what to
//! raise. docs/operations.md lists each key, its default and what a client
//! sees. Where the limits are enforced:
//!
//! - connections, HTTP/2 streams, keepalive and idle connections:
//!   `listener.rs` (the accept loop and the per-connection wrapper);
//! - client message sizes: tonic's decode limit on the client API, its
//!   refusal renamed by `listener::Track` to name the key
//!   (`max-peer-message-bytes` holds every service on the peer port);
//! - reply bytes: `GetEntries` (`client_api.rs`) and the pages of
//!   `WatchEntries` (`watch.rs`);
//! - open watch streams: [`ApiLimits::watch_slot`];
//! - pending admission work: `admission.rs`.

use crate::api::status;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::error::ConfigError;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Room left in a reply for everything but its entries (`GetEntriesReply`'s
/// `head_seq` and `empty`).
pub const REPLY_OVERHEAD: usize = 32;

/// What the raft transport needs above the largest client message: a raft
/// entry carries the command plus its own framing.
const PEER_MESSAGE_SLACK: usize = 64 * KIB;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Open connections per listener. Beyond it, new connections are
    /// accepted and closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Largest request message of the client API (`arbor.v1.Arbor`).
    pub max_client_message_bytes: usize,
    /// Largest message of the replica API (`arbor.v1.Raft`).
    pub max_peer_message_bytes: usize,
    /// Largest `GetEntries` reply, and page of entries a `WatchEntries`
    /// stream reads ahead.
    pub max_reply_bytes: usize,
    /// Open `WatchEntries` streams on this replica.
    pub max_watch_streams: usize,
    /// Entries a `WatchEntries` stream reads ahead of what it has sent.
    pub watch_buffer_entries: usize,
    /// Submitted commands waiting for their signature check on the leader.
    pub max_pending_admission: usize,
    /// A connection with no open stream for this long is closed. 0 = never.
    pub idle_timeout_ms: u64,
    /// HTTP/2 PING interval on every connection. 0 = no pings.
    pub keepalive_interval_ms: u64,
    /// A connection whose peer does not answer a PING within this is closed.
    pub keepalive_timeout_ms: u64,
    /// Longest a client-API call is worked on (the caller's `grpc-timeout`
    /// is honoured when shorter); past it the answer is `DEADLINE_EXCEEDED`.
    /// Does not bound a `WatchEntries` stream once it is open.
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_concurrent_streams: 1024,
            max_client_message_bytes: 4 * MIB,
            max_peer_message_bytes: 256 * MIB,
            max_reply_bytes: 4 * MIB,
            max_watch_streams: 256,
            watch_buffer_entries: 256,
            max_pending_admission: 4096,
            idle_timeout_ms: 300_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    /// Checks every limit is usable; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least<T: PartialOrd + std::fmt::Display>(
            key: &str,
            v: T,
            min: T,
        ) -> Result<(), ConfigError> {
            if v < min {
                return Err(ConfigError::Invalid(format!(
                    "limits.{key} must be at least {min} (got {v})"
                )));
            }
            Ok(())
        }
        at_least("max-connections", self.max_connections, 1)?;
        at_least("max-concurrent-streams", self.max_concurrent_streams, 1)?;
        at_least(
            "max-client-message-bytes",
            self.max_client_message_bytes,
            4 * KIB,
        )?;
        let peer_min = self
            .max_client_message_bytes
            .saturating_add(PEER_MESSAGE_SLACK)
            .max(MIB);
        if self.max_peer_message_bytes < peer_min {
            return Err(ConfigError::Invalid(format!(
                "limits.max-peer-message-bytes must be at least {peer_min} (got {}): raft \
                 messages carry client commands (max-client-message-bytes + 64 KiB, at least 1 MiB)",
                self.max_peer_message_bytes
            )));
        }
        at_least("max-reply-bytes", self.max_reply_bytes, 4 * KIB)?;
        at_least("max-watch-streams", self.max_watch_streams, 1)?;
        at_least("watch-buffer-entries", self.watch_buffer_entries, 1)?;
        at_least("max-pending-admission", self.max_pending_admission, 1)?;
        at_least("request-timeout-ms", self.request_timeout_ms, 100)?;
        if self.idle_timeout_ms != 0 {
            at_least("idle-timeout-ms (when not 0)", self.idle_timeout_ms, 1_000)?;
        }
        if self.keepalive_interval_ms != 0 {
            at_least(
                "keepalive-interval-ms (when not 0)",
                self.keepalive_interval_ms,
                1_000,
            )?;
            at_least(
                "keepalive-timeout-ms (with keepalive-interval-ms)",
                self.keepalive_timeout_ms,
                100,
            )?;
        }
        Ok(())
    }

    /// The server-side cap of a client-API call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }

    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive_interval_ms > 0).then(|| Duration::from_millis(self.keepalive_interval_ms))
    }

    pub fn keepalive_timeout(&self) -> Option<Duration> {
        self.keepalive_interval()
            .map(|_| Duration::from_millis(self.keepalive_timeout_ms))
    }

    /// Largest reply message of the client API that tonic will encode: a
    /// reply of entries is cut at `max-reply-bytes`; the rest are small.
    pub fn max_client_reply_bytes(&self) -> usize {
        self.max_reply_bytes
            .max(self.max_client_message_bytes)
            .saturating_add(64 * KIB)
    }
}

/// `RESOURCE_EXHAUSTED`: `what`, then the limit by its config key.
pub fn exhausted(key: &str, limit: impl std::fmt::Display, what: impl std::fmt::Display) -> Status {
    status::resource_exhausted(format!("{what} (limits.{key} = {limit})"))
}

/// `RESOURCE_EXHAUSTED` for an entry that alone is bigger than `max-reply-bytes`.
pub fn entry_too_big(seq: u64, bytes: usize, limit: usize) -> Status {
    exhausted(
        "max-reply-bytes",
        limit,
        format_args!(
            "ledger entry {seq} is {bytes} bytes, more than a reply may hold; \
             the replica's operator must raise the limit to serve it"
        ),
    )
}

/// Encoded size of one entry inside a reply: field tag, length, message.
pub fn framed_len(message_len: usize) -> usize {
    1 + prost::length_delimiter_len(message_len) + message_len
}

/// The limits the client API enforces itself, with the state they need.
#[derive(Clone)]
pub struct ApiLimits {
    pub limits: Limits,
    watch_slots: Arc<Semaphore>,
}

impl ApiLimits {
    pub fn new(limits: &Limits) -> ApiLimits {
        ApiLimits {
            limits: *limits,
            watch_slots: Arc::new(Semaphore::new(limits.max_watch_streams)),
        }
    }

    /// `WatchEntries` streams open now.
    pub fn watch_streams_open(&self) -> usize {
        self.limits.max_watch_streams - self.watch_slots.available_permits()
    }

    /// A slot for one `WatchEntries` stream, held until the stream is dropped.
    pub fn watch_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.watch_slots.clone().try_acquire_owned().map_err(|_| {
            exhausted(
                "max-watch-streams",
                self.limits.max_watch_streams,
                "this replica serves as many watch streams as it may; \
                 retry later or watch from another replica",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn invalid(l: Limits) -> String {
        l.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate().unwrap();
        NodeConfig {
            insecure_plaintext: true,
            ..NodeConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn validation_names_the_key() {
        let d = Limits::default();
        for (l, key) in [
            (
                Limits {
                    max_connections: 0,
                    ..d
                },
                "limits.max-connections",
            ),
            (
                Limits {
                    max_concurrent_streams: 0,
                    ..d
                },
                "limits.max-concurrent-streams",
            ),
            (
                Limits {
                    max_client_message_bytes: 100,
                    ..d
                },
                "limits.max-client-message-bytes",
            ),
            (
                Limits {
                    max_peer_message_bytes: 4 * MIB,
                    ..d
                },
                "limits.max-peer-message-bytes",
            ),
            (
                Limits {
                    max_reply_bytes: 10,
                    ..d
                },
                "limits.max-reply-bytes",
            ),
            (
                Limits {
                    max_watch_streams: 0,
                    ..d
                },
                "limits.max-watch-streams",
            ),
            (
                Limits {
                    watch_buffer_entries: 0,
                    ..d
                },
                "limits.watch-buffer-entries",
            ),
            (
                Limits {
                    max_pending_admission: 0,
                    ..d
                },
                "limits.max-pending-admission",
            ),
            (
                Limits {
                    idle_timeout_ms: 5,
                    ..d
                },
                "limits.idle-timeout-ms",
            ),
            (
                Limits {
                    keepalive_interval_ms: 5,
                    ..d
                },
                "limits.keepalive-interval-ms",
            ),
            (
                Limits {
                    keepalive_timeout_ms: 0,
                    ..d
                },
                "limits.keepalive-timeout-ms",
            ),
        ] {
            let e = invalid(l);
            assert!(e.contains(key), "{key}: {e}");
        }
        // 0 turns the timers off; a keepalive timeout without pings is unused.
        Limits {
            idle_timeout_ms: 0,
            keepalive_interval_ms: 0,
            keepalive_timeout_ms: 0,
            ..d
        }
        .validate()
        .unwrap();
        // The peer limit follows the client limit.
        let e = invalid(Limits {
            max_client_message_bytes: 256 * MIB,
            ..d
        });
        assert!(e.contains("max-peer-message-bytes"), "{e}");
        // And a whole config is checked with its limits.
        let c = NodeConfig {
            limits: Limits {
                max_watch_streams: 0,
                ..d
            },
            ..NodeConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max-watch-streams"));
    }

    #[test]
    fn toml_table_with_unknown_keys_refused() {
        let c: NodeConfig =
            toml::from_str("id = 3\n[limits]\nmax-watch-streams = 7\nidle-timeout-ms = 0\n")
                .unwrap();
        assert_eq!(c.limits.max_watch_streams, 7);
        assert_eq!(c.limits.idle_timeout(), None);
        assert_eq!(c.limits.max_reply_bytes, Limits::default().max_reply_bytes);
        let e = toml::from_str::<NodeConfig>("[limits]\nmax-watch-stream = 7\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max-watch-stream"), "{e}");
    }

    #[test]
    fn exhausted_names_the_key() {
        let s = ApiLimits::new(&Limits {
            max_watch_streams: 1,
            ..Limits::default()
        });
        let held = s.watch_slot().unwrap();
        let e = s.watch_slot().unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains("limits.max-watch-streams = 1"),
            "{}",
            e.message()
        );
        drop(held);
        let _again = s.watch_slot().unwrap();
        let e = entry_too_big(7, 5000, 4096);
        assert!(
            e.message().contains("entry 7 is 5000 bytes"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("limits.max-reply-bytes = 4096"));
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let c: NodeConfig = toml::from_str(include_str!("../../docs/arbor-node.example.toml"))
            .expect("docs/arbor-node.example.toml parses");
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn framing_counts_tag_and_length() {
        assert_eq!(framed_len(0), 2);
        assert_eq!(framed_len(127), 129);
        assert_eq!(framed_len(128), 131);
    }
}
