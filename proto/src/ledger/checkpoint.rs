//! Checkpoints in the C2SP `tlog-checkpoint` format, signed as C2SP
//! `signed-note`s, so existing transparency-log tooling can read them.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, base64>\n
//! time <ms since the Unix epoch>\n      (extension line)
//! map2 <M> <map root, base64>\n         (extension line, once the ledger has a map epoch)
//! \n
//! — <key name> <base64(key id[4] || ed25519 signature[64])>\n   (one per signer)
//! ```
//!
//! The signature covers the note text (every line up to and including the
//! last extension line's newline). The key id is the first 4 bytes of
//! SHA-256(key name || "\n" || 0x01 || 32-byte public key) (0x01: ed25519).
//!
//! The `map2` line commits to the order map (`super::map`, version 2: orders
//! and parties) at size `M`, the newest map epoch at or below the tree
//! size: `M = map::epoch_at(size)`. It is absent while `M` is 0, and in
//! checkpoints made before the map. Older checkpoints carry `map <M>
//! <root>` instead, the version 1 map (orders only); both parse.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

const DASH: &str = "\u{2014}";

/// The signed statement: this log, at this size, has this root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time_ms: u64,
    /// The order map root at size `map_size`, the newest map epoch (`None`
    /// before the first epoch, and in checkpoints older than the map).
    pub map: Option<MapCommitment>,
}

/// A checkpoint's map line: the order map's root at tree size `size`.
/// Version 1 (`map <M> <root>`) is the map of orders only; version 2
/// (`map2 <M> <root>`) also holds the parties' chains (`super::map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapCommitment {
    pub size: u64,
    pub root: Hash,
    pub version: u32,
}

/// A known signer: its note key name and public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteKey {
    pub name: String,
    pub public_key: [u8; 32],
}

impl NoteKey {
    pub fn id(&self) -> [u8; 4] {
        key_id(&self.name, &self.public_key)
    }
}

pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([0x01]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Checkpoint {
    /// The note text that signatures cover.
    pub fn body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time_ms
        );
        if let Some(m) = &self.map {
            let word = if m.version == 1 { "map" } else { "map2" };
            s.push_str(&format!("{word} {} {}\n", m.size, B64.encode(m.root)));
        }
        s
    }

    /// One signature line for this checkpoint.
    pub fn sign_line(&self, name: &str, key: &SigningKey) -> String {
        let sig = key.sign(self.body().as_bytes());
        let mut blob = key_id(name, &key.verifying_key().to_bytes()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{DASH} {name} {}\n", B64.encode(blob))
    }

    /// The complete signed note with the given signature lines.
    pub fn note(&self, signature_lines: &[String]) -> String {
        let mut s = self.body();
        s.push('\n');
        for l in signature_lines {
            s.push_str(l);
        }
        s
    }

    /// Parses the note text (the part before the blank line).
    pub fn parse_body(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or("checkpoint has no origin line")?;
        let size = lines
            .next()
            .ok_or("checkpoint has no size line")?
            .parse::<u64>()
            .map_err(|_| "checkpoint size is not a decimal number")?;
        let root_b64 = lines.next().ok_or("checkpoint has no root hash line")?;
        let root: Hash = B64
            .decode(root_b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("checkpoint root hash is not 32 bytes of base64")?;
        let mut time_ms = 0;
        let mut map = None;
        for l in lines {
            if let Some(t) = l.strip_prefix("time ") {
                time_ms = t.parse().map_err(|_| "checkpoint time is not a number")?;
            } else if let Some((version, m)) = l
                .strip_prefix("map ")
                .map(|m| (1, m))
                .or_else(|| l.strip_prefix("map2 ").map(|m| (2, m)))
            {
                if map.is_some() {
                    return Err("checkpoint has two map lines".into());
                }
                let (m_size, m_root) = m
                    .split_once(' ')
                    .ok_or("checkpoint map line is not `map <size> <root>`")?;
                let m_size: u64 = m_size
                    .parse()
                    .map_err(|_| "checkpoint map size is not a decimal number")?;
                let m_root: Hash = B64
                    .decode(m_root)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or("checkpoint map root is not 32 bytes of base64")?;
                if m_size > size {
                    return Err(format!(
                        "checkpoint map size {m_size} is beyond its tree size {size}"
                    ));
                }
                map = Some(MapCommitment {
                    size: m_size,
                    root: m_root,
                    version,
                });
            }
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            time_ms,
            map,
        })
    }
}

/// A signed note split into its checkpoint and the names of the known keys
/// whose signatures verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    pub checkpoint: Checkpoint,
    pub signed_by: Vec<String>,
}

/// Parses a signed note and verifies its signatures against `keys`; unknown
/// signers are ignored (as C2SP prescribes), a known key with a bad signature
/// is an error. Fails unless at least `quorum` known keys signed.
pub fn verify_note(note: &str, keys: &[NoteKey], quorum: usize) -> Result<VerifiedNote, String> {
    let split = note
        .find("\n\n")
        .ok_or("signed note has no blank line before its signatures")?;
    let body = &note[..split + 1];
    let checkpoint = Checkpoint::parse_body(body)?;
    if checkpoint.body() != body {
        return Err("checkpoint text is not in canonical form".into());
    }
    let mut signed_by: Vec<String> = Vec::new();
    for line in note[split + 2..].lines() {
        let rest = line
            .strip_prefix(DASH)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| format!("signature line {line:?} does not start with an em dash"))?;
        let (name, b64) = rest
            .rsplit_once(' ')
            .ok_or("signature line has no signature")?;
        let blob = B64
            .decode(b64)
            .map_err(|_| format!("signature of {name} is not base64"))?;
        if blob.len() != 68 {
            continue; // not an ed25519 signature: not ours to check
        }
        let Some(key) = keys.iter().find(|k| k.name == name && k.id() == blob[..4]) else {
            continue;
        };
        let vk = VerifyingKey::from_bytes(&key.public_key)
            .map_err(|_| format!("key {name} is not a valid ed25519 key"))?;
        let sig = Signature::from_bytes(blob[4..].try_into().expect("68 - 4 = 64"));
        vk.verify_strict(body.as_bytes(), &sig)
            .map_err(|_| format!("checkpoint signature of {name} does not verify"))?;
        if !signed_by.contains(&key.name) {
            signed_by.push(key.name.clone());
        }
    }
    if signed_by.len() < quorum {
        return Err(format!(
            "checkpoint has {} valid signature(s) from known replicas, {} needed",
            signed_by.len(),
            quorum
        ));
    }
    Ok(VerifiedNote {
        checkpoint,
        signed_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp() -> Checkpoint {
        Checkpoint {
            origin: "arbor.example/ledger".into(),
            size: 42,
            root: [7; 32],
            time_ms: 1_700_000_000_000,
            map: None,
        }
    }

    fn keys() -> Vec<(String, SigningKey)> {
        (1..=3)
            .map(|i| (format!("replica-{i}"), SigningKey::from_bytes(&[i; 32])))
            .collect()
    }

    fn known() -> Vec<NoteKey> {
        keys()
            .iter()
            .map(|(n, k)| NoteKey {
                name: n.clone(),
                public_key: k.verifying_key().to_bytes(),
            })
            .collect()
    }

    #[test]
    fn quorum_signed_note_verifies() {
        let c = cp();
        let lines: Vec<String> = keys()[..2].iter().map(|(n, k)| c.sign_line(n, k)).collect();
        let note = c.note(&lines);
        assert!(note.starts_with("arbor.example/ledger\n42\n"));
        let v = verify_note(&note, &known(), 2).unwrap();
        assert_eq!(v.checkpoint, c);
        assert_eq!(v.signed_by, vec!["replica-1", "replica-2"]);
        assert!(verify_note(&note, &known(), 3)
            .unwrap_err()
            .contains("2 valid signature"));
    }

    #[test]
    fn forged_or_altered_notes_fail() {
        let c = cp();
        let (n, k) = &keys()[0];
        let note = c.note(&[c.sign_line(n, k)]);
        let altered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(verify_note(&altered, &known(), 1)
            .unwrap_err()
            .contains("does not verify"));
        // Signed by a key that claims a known name.
        let impostor = SigningKey::from_bytes(&[9; 32]);
        let forged = c.note(&[c.sign_line(n, &impostor)]);
        assert!(verify_note(&forged, &known(), 1).is_err());
    }

    #[test]
    fn the_map_line_is_signed_and_optional() {
        let mut c = cp();
        c.map = Some(MapCommitment {
            size: 32,
            root: [3; 32],
            version: 1,
        });
        let lines: Vec<String> = keys()[..2].iter().map(|(n, k)| c.sign_line(n, k)).collect();
        let note = c.note(&lines);
        assert!(note.contains("\ntime 1700000000000\nmap 32 AwMD"));
        // Version 2 is its own line; the version is part of what is signed.
        let mut c2 = c.clone();
        c2.map.as_mut().unwrap().version = 2;
        let note2 = c2.note(&[c2.sign_line(&keys()[0].0, &keys()[0].1)]);
        assert!(note2.contains("\nmap2 32 AwMD"));
        assert_eq!(verify_note(&note2, &known(), 1).unwrap().checkpoint, c2);
        let downgraded = note2.replacen("\nmap2 ", "\nmap ", 1);
        assert!(verify_note(&downgraded, &known(), 1).is_err());
        let twice = c2.body() + "map 32 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n";
        assert!(Checkpoint::parse_body(&twice)
            .unwrap_err()
            .contains("two map lines"));
        let v = verify_note(&note, &known(), 2).unwrap();
        assert_eq!(v.checkpoint, c);
        // Dropping or changing the line breaks every signature.
        let dropped = note.replacen(&format!("map 32 {}\n", B64.encode([3u8; 32])), "", 1);
        assert!(verify_note(&dropped, &known(), 1).is_err());
        let older = note.replacen("map 32 ", "map 0 ", 1);
        assert!(verify_note(&older, &known(), 1)
            .unwrap_err()
            .contains("does not verify"));
        // A map beyond the tree, or a malformed line, is refused outright.
        assert!(
            Checkpoint::parse_body(&c.body().replace("map 32", "map 43"))
                .unwrap_err()
                .contains("beyond")
        );
        assert!(Checkpoint::parse_body(&c.body().replace("map 32 ", "map 32")).is_err());
        // A note without the line (older checkpoints) still verifies.
        let plain = cp();
        let note = plain.note(&[plain.sign_line(&keys()[0].0, &keys()[0].1)]);
        assert_eq!(
            verify_note(&note, &known(), 1).unwrap().checkpoint.map,
            None
        );
    }
}
