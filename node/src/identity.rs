//! The replica's own ed25519 identity, used to sign checkpoints.
//!
//! Kept in `DATA_DIR/identity.key` (mode 0600) in the key-file format of
//! `arbor keys generate` (read and written by `arbor_proto::identity`, so
//! there is one implementation of it), with party id
//! `arbor-replica-<node id>`: an operator enrols that public key with role
//! `replica`, which puts it in the ledger where auditors find it.

use std::path::Path;

use arbor_proto::identity::Identity;
use ed25519_dalek::SigningKey;

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
        let id = load_or_create_key_file(path, &name)?;
        if id.party_id != name {
            return Err(format!(
                "{} belongs to {} but this replica is {name}; was the data directory copied?",
                path.display(),
                id.party_id
            ));
        }
        Ok(ReplicaIdentity {
            node_id,
            name,
            key: id.key,
        })
    }
}

/// Reads the key file at `path`, or creates it (mode 0600) for `party_id`.
pub fn load_or_create_key_file(path: &Path, party_id: &str) -> Result<Identity, String> {
    if path.exists() {
        return Identity::load(path).map_err(|e| e.to_string());
    }
    let id = Identity::generate(party_id);
    id.save(path).map_err(|e| e.to_string())?;
    Ok(id)
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
