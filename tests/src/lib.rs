//! arbor-tests: a harness that runs real `arbor-node` processes, and the
//! cluster tests in `tests/` that use it.
//!
//! Build the binaries first: `cargo build --workspace --bins`, then
//! `cargo test -p arbor-tests`. The harness finds `arbor-node` and `arbor`
//! next to the test executable (or at `ARBOR_NODE_BIN` / `ARBOR_BIN`).
//!
//! - [`cluster::TestCluster`]: start voters, wait for a leader, kill, stop,
//!   restart, add replicas, submit with recorded acknowledgements, and
//!   [`cluster::TestCluster::check_invariants`].
//! - [`invariants`]: the invariants as pure functions over a chain.
//! - [`replica::Process`]: one child process with its log file.
//! - [`dev::DevCluster`]: `arbor-node dev` and the `arbor` CLI, for end-to-end tests.
//! - [`browser::Browser`]: headless Chromium for the explorer's tests.
//! - [`ports`], [`wait`], [`bins`], [`fixtures`]: the small pieces.

pub mod acks;
pub mod bins;
pub mod browser;
pub mod cluster;
pub mod dev;
pub mod fixtures;
pub mod invariants;
pub mod ports;
pub mod proxy;
pub mod replica;
pub mod wait;

pub use acks::{Ack, Acks, Submitter};
pub use cluster::{Audit, Options, TestCluster, DEFAULT_CLUSTER_ID, OPERATOR};
pub use wait::{wait_until, TIMEOUT};
