//! What is signed, and how a command is identified.
//!
//! A party signs [`command_message`]: `COMMAND_DOMAIN || cluster_id || 0x00
//! || command`, where `command` is the encoded `pb::Command` and `cluster_id`
//! the UTF-8 id the cluster's genesis entry fixed (never empty, never holding
//! a NUL byte: `rules::validate` refuses such a genesis). So a command signed
//! for one cluster verifies on no other, even one that enrolled the same key.
//! Verification uses `verify_strict` so that every replica and every auditor
//! reaches the same verdict for the same bytes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

use super::encode::Preimage;
use crate::pb;

/// The prefix of every command signature (`v2`: the cluster id follows it).
pub const COMMAND_DOMAIN: &[u8] = b"arbor.v2.command\0";
pub const COMMAND_ID_DOMAIN: &[u8] = b"arbor.v1.command-id\0";

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature is {0} bytes, expected 64")]
    BadLength(usize),
    #[error("signature does not verify against the key enrolled for {0}")]
    Invalid(String),
    #[error("public key of {0} is not a valid ed25519 key")]
    BadKey(String),
}

/// The bytes a signature covers: `domain || payload`.
pub fn signing_bytes(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain.len() + payload.len());
    v.extend_from_slice(domain);
    v.extend_from_slice(payload);
    v
}

/// The bytes a command signature covers:
/// `COMMAND_DOMAIN || cluster_id || 0x00 || command`.
pub fn command_message(cluster_id: &str, command: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(COMMAND_DOMAIN.len() + cluster_id.len() + 1 + command.len());
    push_command_message(&mut v, cluster_id, command);
    v
}

/// Appends [`command_message`] to `out` (for batches that share one buffer).
pub fn push_command_message(out: &mut Vec<u8>, cluster_id: &str, command: &[u8]) {
    out.extend_from_slice(COMMAND_DOMAIN);
    out.extend_from_slice(cluster_id.as_bytes());
    out.push(0);
    out.extend_from_slice(command);
}

/// Encodes and signs `cmd` as party `signer` for cluster `cluster_id`.
pub fn sign_command(
    key: &SigningKey,
    cluster_id: &str,
    signer: &str,
    cmd: &pb::Command,
) -> pb::SignedCommand {
    let command = cmd.encode_to_vec();
    let signature = key
        .sign(&command_message(cluster_id, &command))
        .to_bytes()
        .to_vec();
    pb::SignedCommand {
        command,
        signer: signer.to_string(),
        signature,
    }
}

fn verify(
    message: &[u8],
    signer: &str,
    public_key: &[u8],
    sig: &[u8],
) -> Result<(), SignatureError> {
    let key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| SignatureError::BadKey(signer.to_string()))?;
    let key =
        VerifyingKey::from_bytes(&key).map_err(|_| SignatureError::BadKey(signer.to_string()))?;
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| SignatureError::BadLength(sig.len()))?;
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Invalid(signer.to_string()))
}

/// Verifies a command envelope, signed for cluster `cluster_id`, against the
/// signer's enrolled public key.
pub fn verify_command(
    env: &pb::SignedCommand,
    cluster_id: &str,
    public_key: &[u8],
) -> Result<(), SignatureError> {
    verify(
        &command_message(cluster_id, &env.command),
        &env.signer,
        public_key,
        &env.signature,
    )
}

/// The identity of a command for exactly-once: SHA-256 over the signer and the
/// command bytes. The same signed bytes resent have the same id.
pub fn command_id(signer: &str, command: &[u8]) -> [u8; 32] {
    Preimage::new(COMMAND_ID_DOMAIN)
        .bytes(signer.as_bytes())
        .bytes(command)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signed_command_verifies_and_tampering_is_refused() {
        let k = key(7);
        let cmd = pb::Command {
            nonce: 1,
            body: None,
        };
        let env = sign_command(&k, "c1", "ops", &cmd);
        let pk = k.verifying_key().to_bytes();
        assert_eq!(verify_command(&env, "c1", &pk), Ok(()));

        let mut bad = env.clone();
        bad.command.push(0);
        assert!(matches!(
            verify_command(&bad, "c1", &pk),
            Err(SignatureError::Invalid(_))
        ));

        let other = key(8).verifying_key().to_bytes();
        assert!(matches!(
            verify_command(&env, "c1", &other),
            Err(SignatureError::Invalid(_))
        ));

        let mut short = env.clone();
        short.signature.truncate(10);
        assert_eq!(
            verify_command(&short, "c1", &pk),
            Err(SignatureError::BadLength(10))
        );
    }

    #[test]
    fn a_command_signed_for_one_cluster_verifies_on_no_other() {
        let k = key(5);
        let pk = k.verifying_key().to_bytes();
        let cmd = pb::Command {
            nonce: 9,
            body: None,
        };
        let env = sign_command(&k, "cluster-a", "ops", &cmd);
        assert_eq!(verify_command(&env, "cluster-a", &pk), Ok(()));
        for other in ["cluster-b", "cluster-", "cluster-a\0", "", "cluster-aa"] {
            assert!(
                matches!(
                    verify_command(&env, other, &pk),
                    Err(SignatureError::Invalid(_))
                ),
                "{other:?}"
            );
        }
        // The id and the command cannot trade bytes: the NUL separates them.
        let mut moved = env.clone();
        moved.command.insert(0, b'a');
        assert!(verify_command(&moved, "cluster-", &pk).is_err());
    }

    #[test]
    fn the_signed_message_is_exactly_as_specified() {
        // docs/ledger-format.md §1: "arbor.v2.command" NUL cluster_id NUL command.
        assert_eq!(
            command_message("prod-eu", b"\x08\x01"),
            b"arbor.v2.command\0prod-eu\0\x08\x01".to_vec()
        );
    }

    #[test]
    fn command_id_depends_on_signer_and_bytes() {
        assert_ne!(command_id("a", b"x"), command_id("b", b"x"));
        assert_ne!(command_id("a", b"x"), command_id("a", b"y"));
        assert_ne!(command_id("ab", b""), command_id("a", b"b"));
        assert_eq!(command_id("a", b"x"), command_id("a", b"x"));
    }
}
