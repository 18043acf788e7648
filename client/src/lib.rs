//! arbor-client: the Rust client library for an arbor cluster (the `arbor` CLI
//! is built on it, in `client/cli/`).
//!
//! - [`Identity`]: a party id and its ed25519 key; reads and writes key files
//!   (the format is `arbor_proto::identity`'s, shared with the replica).
//! - [`Commands`]: the signed commands an [`Identity`] builds
//!   (`claim_order`, `offer_handoff`, `open_dispute`, ...).
//! - [`Client`]: talks to the cluster over gRPC and hides leader changes
//!   (retries with backoff, follows leader hints, resends identical bytes).
//! - [`watch`]: [`Client::watch`], the live entry feed that resumes on
//!   another replica after a disconnect, never missing or repeating an entry.
//! - [`bundle`]: [`Client::dispute_bundle`], one order's proven history for a dispute.
//! - [`audit`]: checkpoints, Merkle proofs and exports, and the checks that
//!   never trust the replica that answered.
//! - [`broker`]: the reference broker (rules version 3): a sourcing decision
//!   for an order from its candidates' profiles and counters, scored by
//!   distance, headroom and a pluggable health score.
//! - Disputes: [`Commands::open_dispute`], [`Client::preview_ruling`] (the
//!   ruling the responsibility rules compute) and [`Commands::resolve_dispute`].
//!
//! A complete fulfillment node — follow the ledger with [`Client::watch`],
//! claim each new order it may serve at the locked price, report picked,
//! packed and shipped, and shrug off rejections such as `already_owned` — is
//! the example `client/examples/fulfillment_node.rs`
//! (`cargo run --example fulfillment_node -- --endpoints ... --key node.key`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), arbor_client::ClientError> {
//! use arbor_client::{Client, Commands, Identity, TlsOptions, Transport};
//! let tls = TlsOptions::from_files("arbor-data/tls/ca.pem".as_ref(), None, None)?;
//! let client = Client::connect(
//!     &["127.0.0.1:7101,127.0.0.1:7102".to_string()],
//!     &Transport::Tls(tls),
//! )
//! .await?;
//! // Signatures name the cluster (its genesis id): ask it, or know it.
//! let node = Identity::load("store-17.key".as_ref())?.for_cluster(&client.cluster_id().await?);
//! let reply = client.submit(node.claim_order("o-1", 1, 2598)).await?;
//! let outcome = reply.outcome.unwrap_or_default();
//! println!("seq {}: {}", reply.seq, outcome.code);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod audit;
pub mod broker;
pub mod bundle;
mod client;
mod commands;
mod endpoints;
mod error;
mod transport;
pub mod watch;

pub use arbor_proto::identity::{Identity, KeyFileError, Signer};
pub use arbor_proto::pb;
/// Rules version 3: the hash a channel registers for a one-time delivery code.
pub use arbor_proto::rules::carriers::delivery_code_hash;
pub use client::{Client, MembershipChange, ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT, LEADER_HEADER};
pub use commands::Commands;
pub use endpoints::{channel, parse_endpoints};
pub use error::{code_name, ClientError};
pub use transport::{TlsOptions, Transport};
pub use watch::WatchStream;
