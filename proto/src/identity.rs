//! A party's identity: its party id and ed25519 signing key, and the key file
//! that holds them.
//!
//! The key file is a UTF-8 JSON object with a trailing newline:
//! `{"party_id": "...", "public_key": "<64 hex>", "secret_key": "<64 hex seed>"}`.
//! It is one format for every key: `arbor keys generate` writes party keys,
//! `arbor-node dev` the operator key and every replica its own
//! `identity.key`, all through this module. Files are created with
//! `create_new` (an existing key is never overwritten) and mode 0600 on unix.
//!
//! Unlike [`crate::ledger`] and [`crate::rules`] this module does I/O and
//! draws randomness (keys, nonces).
//! Every command signature names the cluster it is for (see
//! [`crate::ledger::command_message`]), so an identity signs commands only
//! once bound to a cluster: [`Identity::for_cluster`] gives the [`Signer`].
//! The signed commands a client builds from a signer (`claim_order`, ...)
//! are in the client library (`arbor_client::Commands`).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::ledger::sign_command;
use crate::pb;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid key file (the message names it).
    #[error("{0}")]
    Invalid(String),
}

/// The on-disk key file. Unknown fields are ignored so that later versions
/// may add some without breaking older readers.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    party_id: String,
    public_key: String,
    secret_key: String,
}

/// A party id with the key it signs with.
#[derive(Clone)]
pub struct Identity {
    pub party_id: String,
    pub key: SigningKey,
}

impl fmt::Debug for Identity {
    // Never prints the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("party_id", &self.party_id)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh key from the operating system's random source.
    pub fn generate(party_id: &str) -> Identity {
        Identity {
            party_id: party_id.to_string(),
            key: SigningKey::generate(&mut OsRng),
        }
    }

    /// Reads a key file, checking that its public key matches its secret key.
    pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad =
            |what: String| KeyFileError::Invalid(format!("key file {}: {what}", path.display()));
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a valid key file ({e})")))?;
        if file.party_id.trim().is_empty() {
            return Err(bad("party_id is empty".into()));
        }
        let seed = decode_32(&file.secret_key)
            .ok_or_else(|| bad("secret_key is not 64 hex characters".into()))?;
        let public = decode_32(&file.public_key)
            .ok_or_else(|| bad("public_key is not 64 hex characters".into()))?;
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().to_bytes() != public {
            return Err(bad(
                "public_key does not match secret_key (file damaged or edited)".into(),
            ));
        }
        Ok(Identity {
            party_id: file.party_id,
            key,
        })
    }

    /// Writes a new key file (mode 0600 on unix). Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source: std::io::Error| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = KeyFile {
            party_id: self.party_id.clone(),
            public_key: self.public_key_hex(),
            secret_key: hex::encode(self.key.to_bytes()),
        };
        let text = serde_json::to_string_pretty(&file).expect("key file serializes") + "\n";

        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists; refusing to overwrite a key file",
                ))
            } else {
                io(e)
            }
        })?;
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|_| f.sync_all()) {
            drop(f);
            let _ = std::fs::remove_file(path);
            return Err(io(e));
        }
        Ok(())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// This identity signing commands for the cluster `cluster_id` (the id
    /// its genesis entry fixed; `arbor cluster status` shows it).
    pub fn for_cluster(&self, cluster_id: &str) -> Signer {
        Signer {
            identity: self.clone(),
            cluster_id: cluster_id.to_string(),
        }
    }
}

/// An [`Identity`] bound to the cluster its commands are signed for.
#[derive(Clone, Debug)]
pub struct Signer {
    identity: Identity,
    cluster_id: String,
}

impl Signer {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Signs `body` as this party for this cluster, with a fresh random nonce.
    pub fn sign(&self, body: pb::command::Body) -> pb::SignedCommand {
        let cmd = pb::Command {
            nonce: OsRng.next_u64(),
            body: Some(body),
        };
        self.sign_command(&cmd)
    }

    /// Signs `cmd` exactly as given (nonce included).
    pub fn sign_command(&self, cmd: &pb::Command) -> pb::SignedCommand {
        sign_command(
            &self.identity.key,
            &self.cluster_id,
            &self.identity.party_id,
            cmd,
        )
    }
}

/// A signer reads as its identity: `signer.party_id`, `signer.public_key()`.
impl std::ops::Deref for Signer {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.identity
    }
}

fn decode_32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::verify_command;
    use prost::Message;

    #[test]
    fn key_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        let id = Identity::generate("store-17");
        id.save(&path).unwrap();
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.party_id, "store-17");
        assert_eq!(back.key.to_bytes(), id.key.to_bytes());

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert_eq!(obj["party_id"], "store-17");
        assert_eq!(obj["public_key"], id.public_key_hex());
        assert_eq!(obj["secret_key"].as_str().unwrap().len(), 64);
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        Identity::generate("x").save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn save_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        let first = Identity::generate("first");
        first.save(&path).unwrap();
        let err = Identity::generate("second").save(&path).unwrap_err();
        assert!(
            matches!(&err, KeyFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
        );
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(Identity::load(&path).unwrap().party_id, "first");
    }

    #[test]
    fn load_reports_bad_files_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let id = Identity::generate("p");
        let other = Identity::generate("q");

        let missing = dir.path().join("missing.key");
        let err = Identity::load(&missing).unwrap_err();
        assert!(matches!(err, KeyFileError::Io { .. }));
        assert!(err.to_string().contains("missing.key"), "{err}");

        let cases = [
            (
                "garbage.key",
                "not json".to_string(),
                "not a valid key file",
            ),
            (
                "partial.key",
                r#"{"party_id": "p"}"#.to_string(),
                "not a valid key file",
            ),
            (
                "short.key",
                format!(
                    r#"{{"party_id":"p","public_key":"{}","secret_key":"abcd"}}"#,
                    id.public_key_hex()
                ),
                "secret_key is not 64 hex",
            ),
            (
                "mismatch.key",
                format!(
                    r#"{{"party_id":"p","public_key":"{}","secret_key":"{}"}}"#,
                    other.public_key_hex(),
                    hex::encode(id.key.to_bytes())
                ),
                "public_key does not match secret_key",
            ),
            (
                "noparty.key",
                format!(
                    r#"{{"party_id":"","public_key":"{}","secret_key":"{}"}}"#,
                    id.public_key_hex(),
                    hex::encode(id.key.to_bytes())
                ),
                "party_id is empty",
            ),
        ];
        for (name, text, expect) in cases {
            let p = write(name, &text);
            let err = Identity::load(&p).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, KeyFileError::Invalid(_)), "{name}: {msg}");
            assert!(msg.contains(name), "{name}: {msg}");
            assert!(msg.contains(expect), "{name}: {msg}");
            assert!(!msg.contains('\n'), "{name}: {msg}");
        }
    }

    #[test]
    fn signed_commands_verify_and_nonces_differ() {
        let id = Identity::generate("node-1").for_cluster("c1");
        let claim = || {
            pb::command::Body::ClaimOrder(pb::ClaimOrder {
                order_id: "o-1".into(),
                price_version: 1,
                total: 2598,
            })
        };
        let a = id.sign(claim());
        let b = id.sign(claim());
        assert_eq!(a.signer, "node-1");
        verify_command(&a, "c1", &id.public_key()).unwrap();
        assert!(verify_command(&a, "c2", &id.public_key()).is_err());
        assert_ne!(a.command, b.command, "fresh nonce per command");
        let cmd = pb::Command::decode(a.command.as_slice()).unwrap();
        assert!(matches!(cmd.body, Some(pb::command::Body::ClaimOrder(ref c)) if c.total == 2598));
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let id = Identity::generate("p");
        let s = format!("{id:?}");
        assert!(!s.contains(&hex::encode(id.key.to_bytes())));
        assert!(s.contains(&id.public_key_hex()));
    }
}
