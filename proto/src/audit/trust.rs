//! Pinned trust: what an auditor obtains once, out of band, and judges every
//! checkpoint by (docs/ledger-format.md §10).
//!
//! A [`Trust`] names one ledger — its cluster id and the hash of its genesis
//! entry — and the replica keys whose checkpoint signatures count, in C2SP's
//! note verifier-key format (`<name>+<hex key id>+<base64(0x01 || key)>`).
//! It may also hold a checkpoint the auditor already verified, so that later
//! checks also prove the ledger only grew. The file is plain text:
//!
//! ```text
//! arbor-trust v1
//! cluster arbor-test
//! genesis 5f0c…(64 hex digits)
//! replica arbor-replica-1+1a2b3c4d+AY4x…
//! replica arbor-replica-2+…
//! checkpoint YXJib3IvYXJib3ItdGVzdAo…     (optional: base64 of the signed note)
//! ```
//!
//! Lines starting with `#` and empty lines are comments. The
//! [fingerprint](Trust::fingerprint) is SHA-256 over the canonical anchor
//! text (the first line, `cluster`, `genesis` and the `replica` lines sorted,
//! each ending in `\n`; never the saved checkpoint), shown as ssh shows host
//! keys: `SHA256:` and unpadded base64. Two auditors who pinned the same
//! ledger and keys see the same fingerprint, whatever checkpoint they saved.
//!
//! [`Trust::check_checkpoint`] is the one rule every tool applies: a
//! checkpoint counts only if its origin is `arbor/<cluster id>` and a quorum
//! (`floor(k/2) + 1` of the `k` pinned keys) of *pinned* keys signed it.

use std::fmt::Write as _;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::AuditError;
use crate::ledger::checkpoint::{verify_note, Checkpoint, NoteKey};
use crate::ledger::merkle::Hash;

/// The first line of every trust file, version 1.
pub const TRUST_MAGIC: &str = "arbor-trust v1";

/// The trust an auditor pins: one ledger and the replica keys that vouch for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// `Genesis.cluster_id` of entry 0; checkpoints' origin is `arbor/<cluster_id>`.
    pub cluster_id: String,
    /// The `hash` of entry 0.
    pub genesis_hash: Hash,
    /// The replica keys whose checkpoint signatures count; never empty.
    pub replicas: Vec<NoteKey>,
    /// A checkpoint already verified against this trust, if any.
    pub checkpoint: Option<SavedCheckpoint>,
}

/// A checkpoint kept in a trust file: the signed note and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// A checkpoint that [`Trust::check_checkpoint`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trusted {
    pub checkpoint: Checkpoint,
    /// Pinned keys whose signatures verified (at least `quorum`).
    pub signed_by: Vec<String>,
    /// Signatures needed.
    pub quorum: usize,
}

/// Why a trust file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("trust file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trust file line {line}: {what}")]
    Format { line: usize, what: String },
    #[error("trust file: {0}")]
    Invalid(String),
}

/// A key in C2SP note verifier-key format: `<name>+<hex key id>+<base64(0x01 || key)>`.
pub fn verifier_key(k: &NoteKey) -> String {
    let mut blob = vec![0x01];
    blob.extend_from_slice(&k.public_key);
    format!("{}+{}+{}", k.name, hex::encode(k.id()), B64.encode(blob))
}

/// Parses a C2SP note verifier key (ed25519 only) and checks its key id.
pub fn parse_verifier_key(s: &str) -> Result<NoteKey, String> {
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "{s:?} is not a verifier key (<name>+<key id>+<base64 key>)"
        ));
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(format!(
            "verifier key name {name:?} is empty or has a space"
        ));
    }
    let blob = B64
        .decode(b64)
        .map_err(|_| format!("verifier key {name}: the key is not base64"))?;
    if blob.len() != 33 || blob[0] != 0x01 {
        return Err(format!(
            "verifier key {name}: not an ed25519 key (0x01 and 32 bytes)"
        ));
    }
    let public_key: [u8; 32] = blob[1..].try_into().expect("33 - 1 = 32");
    let k = NoteKey {
        name: name.to_string(),
        public_key,
    };
    if id.len() != 8 || hex::encode(k.id()) != id {
        return Err(format!(
            "verifier key {name}: key id {id:?} is not {} (SHA-256 of name, newline, 0x01, key)",
            hex::encode(k.id())
        ));
    }
    Ok(k)
}

impl Trust {
    /// Trust in `replicas` for the ledger with this cluster id and genesis hash.
    pub fn new(cluster_id: &str, genesis_hash: Hash, replicas: Vec<NoteKey>) -> Trust {
        let mut t = Trust {
            cluster_id: cluster_id.to_string(),
            genesis_hash,
            replicas,
            checkpoint: None,
        };
        t.sort();
        t
    }

    fn sort(&mut self) {
        self.replicas
            .sort_by(|a, b| (&a.name, a.public_key).cmp(&(&b.name, b.public_key)));
        self.replicas.dedup();
    }

    /// Reads and parses a trust file.
    pub fn load(path: &Path) -> Result<Trust, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Trust::parse(&text)
    }

    /// Parses the text of a trust file (see the module documentation).
    pub fn parse(text: &str) -> Result<Trust, TrustError> {
        let fmt = |line: usize, what: String| TrustError::Format { line, what };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        match lines.next() {
            Some((_, l)) if l == TRUST_MAGIC => {}
            Some((n, l)) => {
                return Err(fmt(
                    n,
                    format!("{l:?} is not {TRUST_MAGIC:?}: not an arbor trust file"),
                ))
            }
            None => return Err(TrustError::Invalid("the file is empty".into())),
        }
        let (mut cluster, mut genesis, mut replicas, mut note) = (None, None, Vec::new(), None);
        for (n, l) in lines {
            let (key, value) = l
                .split_once(' ')
                .ok_or_else(|| fmt(n, format!("{l:?} has no value")))?;
            match key {
                "cluster" if cluster.is_none() => cluster = Some(value.to_string()),
                "genesis" if genesis.is_none() => {
                    let h = hex::decode(value)
                        .ok()
                        .and_then(|b| <Hash>::try_from(b).ok())
                        .ok_or_else(|| fmt(n, "genesis is not 64 hex digits".into()))?;
                    genesis = Some(h);
                }
                "replica" => replicas.push(parse_verifier_key(value).map_err(|e| fmt(n, e))?),
                "checkpoint" if note.is_none() => {
                    let b = B64
                        .decode(value)
                        .map_err(|_| fmt(n, "checkpoint is not base64".into()))?;
                    let s = String::from_utf8(b)
                        .map_err(|_| fmt(n, "checkpoint note is not UTF-8".into()))?;
                    note = Some(s);
                }
                "cluster" | "genesis" | "checkpoint" => {
                    return Err(fmt(n, format!("{key} is given twice")))
                }
                _ => return Err(fmt(n, format!("unknown line {key:?}"))),
            }
        }
        let cluster = cluster.ok_or_else(|| TrustError::Invalid("no cluster line".into()))?;
        let genesis = genesis.ok_or_else(|| TrustError::Invalid("no genesis line".into()))?;
        if replicas.is_empty() {
            return Err(TrustError::Invalid(
                "no replica key: no checkpoint could count".into(),
            ));
        }
        let mut names: Vec<&str> = replicas.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(TrustError::Invalid(format!(
                "replica {} is pinned twice",
                w[0]
            )));
        }
        let mut keys: Vec<&[u8; 32]> = replicas.iter().map(|k| &k.public_key).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(TrustError::Invalid(
                "one public key is pinned under two names: it would count twice towards a quorum"
                    .into(),
            ));
        }
        let mut t = Trust::new(&cluster, genesis, replicas);
        if let Some(note) = note {
            t.set_checkpoint(note).map_err(TrustError::Invalid)?;
        }
        Ok(t)
    }

    /// The canonical text that the fingerprint covers.
    fn anchor_text(&self) -> String {
        let mut s = format!(
            "{TRUST_MAGIC}\ncluster {}\ngenesis {}\n",
            self.cluster_id,
            hex::encode(self.genesis_hash)
        );
        for k in &self.replicas {
            let _ = writeln!(s, "replica {}", verifier_key(k));
        }
        s
    }

    /// The file's text: the anchors, then the saved checkpoint if any.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "# arbor trust file (docs/ledger-format.md §10). Fingerprint {}\n",
            self.fingerprint()
        );
        s.push_str(&self.anchor_text());
        if let Some(c) = &self.checkpoint {
            let _ = writeln!(
                s,
                "# verified checkpoint: size {}, root {}\ncheckpoint {}",
                c.checkpoint.size,
                hex::encode(c.checkpoint.root),
                B64.encode(c.note.as_bytes())
            );
        }
        s
    }

    /// Writes the file (to a temporary file beside it, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.to_text()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// `SHA256:<unpadded base64>` of the anchor text, as ssh shows host keys.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            B64_NO_PAD.encode(Sha256::digest(self.anchor_text().as_bytes()))
        )
    }

    /// The origin line checkpoints of this ledger carry.
    pub fn origin(&self) -> String {
        format!("arbor/{}", self.cluster_id)
    }

    /// Signatures a checkpoint needs: `floor(k/2) + 1` of the `k` pinned keys.
    pub fn quorum(&self) -> usize {
        self.replicas.len() / 2 + 1
    }

    /// Keeps `note` as the verified checkpoint (parsed; its origin must be this ledger's).
    pub fn set_checkpoint(&mut self, note: String) -> Result<(), String> {
        let checkpoint = verify_note(&note, &[], 0)
            .map_err(|e| format!("saved checkpoint: {e}"))?
            .checkpoint;
        if checkpoint.origin != self.origin() {
            return Err(format!(
                "saved checkpoint is for {:?}, not {:?}",
                checkpoint.origin,
                self.origin()
            ));
        }
        self.checkpoint = Some(SavedCheckpoint { checkpoint, note });
        Ok(())
    }

    /// The rule every tool applies to a checkpoint: its origin is this
    /// ledger's and a quorum of the pinned keys signed it. Unpinned signers
    /// are ignored; the error names them, and the reason, when too few
    /// pinned keys signed.
    pub fn check_checkpoint(&self, note: &str) -> Result<Trusted, AuditError> {
        let bad = |m: String| AuditError::Checkpoint(m);
        let parsed = verify_note(note, &[], 0).map_err(bad)?.checkpoint;
        if parsed.origin != self.origin() {
            return Err(bad(format!(
                "origin is {:?}, but the trust pins cluster {:?} (origin {:?}): another ledger",
                parsed.origin,
                self.cluster_id,
                self.origin()
            )));
        }
        let quorum = self.quorum();
        match verify_note(note, &self.replicas, quorum) {
            Ok(v) => Ok(Trusted {
                checkpoint: v.checkpoint,
                signed_by: v.signed_by,
                quorum,
            }),
            Err(e) => {
                let strangers: Vec<String> = note_lines(note)
                    .into_iter()
                    .filter(|(name, id)| {
                        !self
                            .replicas
                            .iter()
                            .any(|k| &k.name == name && &k.id() == id)
                    })
                    .map(|(name, id)| format!("{name} (key id {})", hex::encode(id)))
                    .collect();
                let mut m = format!(
                    "not signed by a quorum of the pinned replica keys ({quorum} of {} needed): {e}",
                    self.replicas.len()
                );
                if !strangers.is_empty() {
                    let _ = write!(
                        m,
                        "; signed by keys the trust does not pin: {}",
                        strangers.join(", ")
                    );
                }
                Err(bad(m))
            }
        }
    }

    /// Whether `keys` are exactly the pinned replica keys (in any order).
    pub fn pins_exactly(&self, keys: &[NoteKey]) -> bool {
        let mut k = keys.to_vec();
        k.sort_by(|a, b| (&a.name, a.public_key).cmp(&(&b.name, b.public_key)));
        k.dedup();
        k == self.replicas
    }

    /// The same trust with `keys` pinned instead (after a trusted checkpoint
    /// vouched for them, §10 of docs/ledger-format.md).
    pub fn with_replicas(&self, keys: Vec<NoteKey>) -> Trust {
        let mut t = Trust {
            replicas: keys,
            ..self.clone()
        };
        t.sort();
        t
    }
}

/// (name, key id) of each well-formed ed25519 signature line of a note.
fn note_lines(note: &str) -> Vec<(String, [u8; 4])> {
    let Some(split) = note.find("\n\n") else {
        return Vec::new();
    };
    note[split + 2..]
        .lines()
        .filter_map(|l| l.strip_prefix("\u{2014} "))
        .filter_map(|r| r.rsplit_once(' '))
        .filter_map(|(name, b64)| {
            let blob = B64.decode(b64).ok()?;
            (blob.len() == 68).then(|| (name.to_string(), blob[..4].try_into().expect("4 bytes")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn keys(seeds: &[u8]) -> Vec<(NoteKey, SigningKey)> {
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let sk = SigningKey::from_bytes(&[*s; 32]);
                (
                    NoteKey {
                        name: format!("arbor-replica-{}", i + 1),
                        public_key: sk.verifying_key().to_bytes(),
                    },
                    sk,
                )
            })
            .collect()
    }

    fn cp(size: u64) -> Checkpoint {
        Checkpoint {
            origin: "arbor/c1".into(),
            size,
            root: [size as u8; 32],
            time_ms: 5,
            map: None,
        }
    }

    #[test]
    fn verifier_keys_round_trip_and_bad_ids_are_refused() {
        let (k, _) = keys(&[3]).remove(0);
        let s = verifier_key(&k);
        assert!(s.starts_with("arbor-replica-1+"), "{s}");
        assert_eq!(parse_verifier_key(&s).unwrap(), k);
        let mut bad = s.clone();
        bad.replace_range(16..17, if &s[16..17] == "0" { "1" } else { "0" });
        assert!(parse_verifier_key(&bad).unwrap_err().contains("key id"));
        assert!(parse_verifier_key("a+b").is_err());
        assert!(parse_verifier_key("a b+00000000+AQ==").is_err());
    }

    #[test]
    fn the_file_round_trips_and_the_fingerprint_ignores_the_checkpoint() {
        let ks = keys(&[1, 2, 3]);
        let pins: Vec<NoteKey> = ks.iter().rev().map(|(k, _)| k.clone()).collect();
        let mut t = Trust::new("c1", [9; 32], pins);
        let fp = t.fingerprint();
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
        let c = cp(10);
        let note = c.note(&[c.sign_line(&ks[0].0.name, &ks[0].1)]);
        t.set_checkpoint(note).unwrap();
        let text = t.to_text();
        let back = Trust::parse(&text).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.fingerprint(), fp);
        // Another key pinned: another fingerprint.
        let other = t.with_replicas(keys(&[1, 2, 4]).into_iter().map(|(k, _)| k).collect());
        assert_ne!(other.fingerprint(), fp);
        // Damage is refused, naming the line.
        let e = Trust::parse(&text.replace("genesis 0909", "genesis 09x9")).unwrap_err();
        assert!(e.to_string().contains("genesis"), "{e}");
        assert!(Trust::parse("arbor-trust v1\ncluster c1\n").is_err());
        // One key under two names would count twice.
        let twice = format!(
            "{text}replica {}\n",
            verifier_key(&NoteKey {
                name: "arbor-replica-9".into(),
                public_key: ks[0].0.public_key,
            })
        );
        let e = Trust::parse(&twice).unwrap_err();
        assert!(e.to_string().contains("two names"), "{e}");
        assert!(Trust::parse("hello\n").is_err());
    }

    #[test]
    fn only_a_quorum_of_pinned_keys_makes_a_checkpoint_count() {
        let ks = keys(&[1, 2, 3]);
        let t = Trust::new("c1", [0; 32], ks.iter().map(|(k, _)| k.clone()).collect());
        let c = cp(7);
        let sign = |idx: &[usize], with: &[(NoteKey, SigningKey)]| {
            let lines: Vec<String> = idx
                .iter()
                .map(|&i| c.sign_line(&ks[i].0.name, &with[i].1))
                .collect();
            c.note(&lines)
        };
        let ok = t.check_checkpoint(&sign(&[0, 2], &ks)).unwrap();
        assert_eq!(ok.signed_by, ["arbor-replica-1", "arbor-replica-3"]);
        assert_eq!(ok.quorum, 2);
        let one = t.check_checkpoint(&sign(&[1], &ks)).unwrap_err();
        assert!(one.to_string().contains("1 valid signature"), "{one}");
        // Same names, the forger's keys.
        let forged = keys(&[7, 8, 9]);
        let e = t.check_checkpoint(&sign(&[0, 1, 2], &forged)).unwrap_err();
        assert!(
            e.to_string()
                .contains("keys the trust does not pin: arbor-replica-1"),
            "{e}"
        );
        // Another cluster's origin.
        let other = Checkpoint {
            origin: "arbor/c2".into(),
            ..c.clone()
        };
        let note = other.note(&[other.sign_line(&ks[0].0.name, &ks[0].1)]);
        assert!(t
            .check_checkpoint(&note)
            .unwrap_err()
            .to_string()
            .contains("another ledger"));
    }
}
