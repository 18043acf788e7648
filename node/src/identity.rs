//! The replica's own ed25519 identity, used to sign checkpoints.
//!
//! Kept in `DATA_DIR/identity.key` (mode 0600) in the same JSON key-file
//! format as `arbor keys generate`, with party id `arbor-replica-<node id>`:
//! an operator enrols that public key with role `replica`, which puts it in
//! the ledger where auditors find it.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct KeyFile {
    party_id: String,
    public_key: String,
    secret_key: String,
}

#[derive(Clone)]
pub struct ReplicaIdentity {
    pub node_id: u64,
    /// Note key name and party id: `arbor-replica-<node id>`.
    pub name: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for ReplicaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReplicaIdentity({}, {})",
            self.name,
            hex::encode(self.public_key())
        )
    }
}

impl ReplicaIdentity {
    pub fn name_for(node_id: u64) -> String {
        format!("arbor-replica-{node_id}")
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Loads `path`, or creates it with a new key on first start.
    pub fn load_or_create(path: &Path, node_id: u64) -> Result<ReplicaIdentity, String> {
        let name = Self::name_for(node_id);
        let key = if path.exists() {
            let (party, key) = load_key_file(path)?;
            if party != name {
                return Err(format!(
                    "{} belongs to {party} but this replica is {name}; was the data directory copied?",
                    path.display()
                ));
            }
            key
        } else {
            create_key_file(path, &name)?
        };
        Ok(ReplicaIdentity { node_id, name, key })
    }
}

/// Reads a key file (the `arbor keys generate` format): party id and key.
pub fn load_key_file(path: &Path) -> Result<(String, SigningKey), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let k: KeyFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a valid key file: {e}", path.display()))?;
    let seed: [u8; 32] = hex::decode(&k.secret_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{}: secret_key is not 32 hex bytes", path.display()))?;
    let key = SigningKey::from_bytes(&seed);
    if hex::encode(key.verifying_key().to_bytes()) != k.public_key {
        return Err(format!(
            "{}: public_key does not match secret_key",
            path.display()
        ));
    }
    Ok((k.party_id, key))
}

/// Creates a key file with a new key (mode 0600; never overwrites).
pub fn create_key_file(path: &Path, party_id: &str) -> Result<SigningKey, String> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let file = KeyFile {
        party_id: party_id.to_string(),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        secret_key: hex::encode(key.to_bytes()),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.key");
        let a = ReplicaIdentity::load_or_create(&p, 3).unwrap();
        let b = ReplicaIdentity::load_or_create(&p, 3).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.name, "arbor-replica-3");
        let err = ReplicaIdentity::load_or_create(&p, 4).unwrap_err();
        assert!(err.contains("arbor-replica-3"), "{err}");
    }
}
