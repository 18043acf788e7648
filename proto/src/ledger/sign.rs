//! What is signed, and how a command is identified.
//!
//! A party signs `COMMAND_DOMAIN || command` where `command` is the encoded
//! `pb::Command`. Verification uses `verify_strict` so that every replica and
//! every auditor reaches the same verdict for the same bytes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

use super::encode::Preimage;
use crate::pb;

pub const COMMAND_DOMAIN: &[u8] = b"arbor.v1.command\0";
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

/// Encodes and signs `cmd` as party `signer`.
pub fn sign_command(key: &SigningKey, signer: &str, cmd: &pb::Command) -> pb::SignedCommand {
    let command = cmd.encode_to_vec();
    let signature = key
        .sign(&signing_bytes(COMMAND_DOMAIN, &command))
        .to_bytes()
        .to_vec();
    pb::SignedCommand {
        command,
        signer: signer.to_string(),
        signature,
    }
}

fn verify(
    domain: &[u8],
    payload: &[u8],
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
    key.verify_strict(
        &signing_bytes(domain, payload),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| SignatureError::Invalid(signer.to_string()))
}

/// Verifies a command envelope against the signer's enrolled public key.
pub fn verify_command(env: &pb::SignedCommand, public_key: &[u8]) -> Result<(), SignatureError> {
    verify(
        COMMAND_DOMAIN,
        &env.command,
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
        let env = sign_command(&k, "ops", &cmd);
        let pk = k.verifying_key().to_bytes();
        assert_eq!(verify_command(&env, &pk), Ok(()));

        let mut bad = env.clone();
        bad.command.push(0);
        assert!(matches!(
            verify_command(&bad, &pk),
            Err(SignatureError::Invalid(_))
        ));

        let other = key(8).verifying_key().to_bytes();
        assert!(matches!(
            verify_command(&env, &other),
            Err(SignatureError::Invalid(_))
        ));

        let mut short = env.clone();
        short.signature.truncate(10);
        assert_eq!(
            verify_command(&short, &pk),
            Err(SignatureError::BadLength(10))
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
