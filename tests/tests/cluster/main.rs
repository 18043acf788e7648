//! Cluster tests: real `arbor-node` processes over TLS, driven by the
//! `TestCluster` harness (tests/src). One test binary, one module per area
//! (one binary links RocksDB once instead of once per file).

mod arbitration;
mod audit;
mod bench;
mod bundle;
mod carriers;
mod carriers_v4;
mod cli;
mod deadlines;
mod disputes;
mod election;
mod explorer;
mod failover;
mod fences;
mod fulfillment_example;
mod limits;
mod membership;
mod nemesis;
mod observe;
mod partition;
mod peer_boundary;
mod protocol;
mod reads;
mod sla;
mod snapshot;
mod sourcing;
mod watch;
mod windows;
