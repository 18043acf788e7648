//! arbor-proto: everything two parties must agree on.
//!
//! - [`pb`]: the generated protobuf messages and gRPC services (`arbor.v1`).
//! - [`ledger`]: the entry format, canonical hashing, command signing and ids.
//! - [`rules`]: the deterministic arbitration state machine.
//! - [`audit`]: the export file and the offline verifier built on the two above.
//! - [`identity`]: a party's key file and the signing it does, one format for
//!   client keys, the dev operator key and each replica's own key.
//! - [`wire`]: the gRPC metadata keys client and replica agree on.
//!
//! `ledger` and `rules` are the pure core: no I/O, no async, no clock, no
//! randomness. Replicas apply commands with them and auditors replay exports
//! with them, so the two cannot disagree.

#![forbid(unsafe_code)]

pub mod audit;
pub mod duration;
pub mod identity;
pub mod ledger;
pub mod rules;
pub mod wire;

/// Generated code for `proto/arbor/v1/arbor.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("arbor.v1");

    /// The encoded `FileDescriptorSet` of `arbor/v1/arbor.proto`, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/arbor_descriptor.bin"));
}
