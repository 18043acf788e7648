//! A party's identity: its party id and ed25519 signing key, and the key file
//! that holds them.
//!
//! The key file is a UTF-8 JSON object with a trailing newline:
//! `{"party_id": "...", "public_key": "<64 hex>", "secret_key": "<64 hex seed>"}`.
//! `arbor-node dev` writes the operator key in the same format, so the two must
//! stay identical. Files are created with `create_new` (an existing key is never
//! overwritten) and mode 0600 on unix.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use arbor_proto::ledger::{sign_admin, sign_command};
use arbor_proto::pb;
use arbor_proto::pb::command::Body;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;

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
    pub fn load(path: &Path) -> Result<Identity, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |what: String| ClientError::Key(format!("key file {}: {what}", path.display()));
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
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let io = |source: std::io::Error| ClientError::Io {
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

    /// Signs `body` as this party with a fresh random nonce.
    pub fn sign(&self, body: pb::command::Body) -> pb::SignedCommand {
        let cmd = pb::Command {
            nonce: OsRng.next_u64(),
            body: Some(body),
        };
        sign_command(&self.key, &self.party_id, &cmd)
    }

    /// An operator command enrolling a party. `kind` must be
    /// [`pb::NodeKind::Unspecified`] unless `role` is [`pb::Role::Node`].
    pub fn enroll_party(
        &self,
        party_id: &str,
        role: pb::Role,
        kind: pb::NodeKind,
        public_key: &[u8],
    ) -> pb::SignedCommand {
        self.sign(pb::command::Body::EnrollParty(pb::EnrollParty {
            party_id: party_id.to_string(),
            role: role as i32,
            kind: kind as i32,
            public_key: public_key.to_vec(),
        }))
    }

    /// A channel command registering an order.
    pub fn register_order(&self, order: pb::RegisterOrder) -> pb::SignedCommand {
        self.sign(pb::command::Body::RegisterOrder(order))
    }

    /// A node command claiming an order at the quoted price.
    pub fn claim_order(&self, order_id: &str, price_version: u64, total: i64) -> pb::SignedCommand {
        self.sign(pb::command::Body::ClaimOrder(pb::ClaimOrder {
            order_id: order_id.to_string(),
            price_version,
            total,
        }))
    }

    /// An operator command replacing a party's key (also reinstates a revoked party).
    pub fn rotate_key(&self, party_id: &str, public_key: &[u8]) -> pb::SignedCommand {
        self.sign(Body::RotateKey(pb::RotateKey {
            party_id: party_id.to_string(),
            public_key: public_key.to_vec(),
        }))
    }

    /// An operator command revoking a party's key.
    pub fn revoke_key(&self, party_id: &str, reason: &str) -> pb::SignedCommand {
        self.sign(Body::RevokeKey(pb::RevokeKey {
            party_id: party_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// A node publishing its own capability profile (the next version).
    pub fn publish_profile(&self, profile: pb::PublishProfile) -> pb::SignedCommand {
        self.sign(Body::PublishProfile(profile))
    }

    /// A channel amending the price of an order it registered.
    pub fn amend_price(
        &self,
        order_id: &str,
        base_version: u64,
        lines: Vec<pb::OrderLine>,
        reason: &str,
    ) -> pb::SignedCommand {
        let total = lines.iter().map(|l| l.quantity as i64 * l.unit_price).sum();
        self.sign(Body::AmendPrice(pb::AmendPrice {
            order_id: order_id.to_string(),
            base_version,
            lines,
            total,
            reason: reason.to_string(),
        }))
    }

    /// A channel cancelling an order it registered.
    pub fn cancel_order(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.sign(Body::CancelOrder(pb::CancelOrder {
            order_id: order_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// The owner giving an order back.
    pub fn release_order(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.sign(Body::ReleaseOrder(pb::ReleaseOrder {
            order_id: order_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// The owner offering custody to another node, open for `expires_in_ms`.
    pub fn offer_handoff(&self, order_id: &str, to: &str, expires_in_ms: u64) -> pb::SignedCommand {
        self.sign(Body::OfferHandoff(pb::OfferHandoff {
            order_id: order_id.to_string(),
            to: to.to_string(),
            expires_in_ms,
        }))
    }

    /// The receiver accepting the offer made at entry `offer_seq`.
    pub fn accept_handoff(
        &self,
        order_id: &str,
        offer_seq: u64,
        damaged: bool,
        note: &str,
    ) -> pb::SignedCommand {
        self.sign(Body::AcceptHandoff(pb::AcceptHandoff {
            order_id: order_id.to_string(),
            offer_seq,
            damaged,
            note: note.to_string(),
        }))
    }

    /// The receiver declining the offer made at entry `offer_seq`.
    pub fn decline_handoff(
        &self,
        order_id: &str,
        offer_seq: u64,
        reason: &str,
    ) -> pb::SignedCommand {
        self.sign(Body::DeclineHandoff(pb::DeclineHandoff {
            order_id: order_id.to_string(),
            offer_seq,
            reason: reason.to_string(),
        }))
    }

    /// The owner reporting `picked` or `packed`.
    pub fn report_milestone(&self, order_id: &str, milestone: pb::Milestone) -> pb::SignedCommand {
        self.sign(Body::ReportMilestone(pb::ReportMilestone {
            order_id: order_id.to_string(),
            milestone: milestone as i32,
            ..Default::default()
        }))
    }

    /// The owner reporting the hand-off to a carrier.
    pub fn report_shipped(
        &self,
        order_id: &str,
        carrier: &str,
        tracking_id: &str,
    ) -> pb::SignedCommand {
        self.sign(Body::ReportMilestone(pb::ReportMilestone {
            order_id: order_id.to_string(),
            milestone: pb::Milestone::Shipped as i32,
            carrier: carrier.to_string(),
            tracking_id: tracking_id.to_string(),
            ..Default::default()
        }))
    }

    /// The owner reporting delivery, with a proof-of-delivery reference ("" if none).
    pub fn report_delivered(&self, order_id: &str, proof_of_delivery: &str) -> pb::SignedCommand {
        self.sign(Body::ReportMilestone(pb::ReportMilestone {
            order_id: order_id.to_string(),
            milestone: pb::Milestone::Delivered as i32,
            proof_of_delivery: proof_of_delivery.to_string(),
            ..Default::default()
        }))
    }

    /// The owner or the registering channel reporting an exception.
    pub fn report_exception(
        &self,
        order_id: &str,
        kind: pb::ExceptionKind,
        note: &str,
    ) -> pb::SignedCommand {
        self.sign(Body::ReportException(pb::ReportException {
            order_id: order_id.to_string(),
            kind: kind as i32,
            note: note.to_string(),
        }))
    }

    /// The channel requesting a return of a delivered order.
    pub fn request_return(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.sign(Body::RequestReturn(pb::RequestReturn {
            order_id: order_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// A node that handles returns claiming one.
    pub fn claim_return(&self, order_id: &str) -> pb::SignedCommand {
        self.sign(Body::ClaimReturn(pb::ClaimReturn {
            order_id: order_id.to_string(),
        }))
    }

    /// The return node reporting the goods received and the refund.
    pub fn receive_return(
        &self,
        order_id: &str,
        refund: i64,
        price_version: u64,
    ) -> pb::SignedCommand {
        self.sign(Body::ReceiveReturn(pb::ReceiveReturn {
            order_id: order_id.to_string(),
            refund,
            price_version,
        }))
    }

    /// Any enrolled party opening a dispute on an order: what happened
    /// (`kind`) and when (`incident_ms`, Unix ms, not after the entry's time).
    pub fn open_dispute(
        &self,
        order_id: &str,
        kind: pb::IncidentKind,
        incident_ms: u64,
        statement: &str,
    ) -> pb::SignedCommand {
        self.sign(Body::OpenDispute(pb::OpenDispute {
            order_id: order_id.to_string(),
            kind: kind as i32,
            incident_ms,
            statement: statement.to_string(),
        }))
    }

    /// An auditor resolving the dispute opened at entry `dispute_seq`. The
    /// ruling must be the one the responsibility rules compute (see
    /// [`Client::preview_ruling`](crate::Client::preview_ruling)); any other
    /// is rejected `ruling_mismatch`. `liable` is "" when nobody is.
    pub fn resolve_dispute(
        &self,
        order_id: &str,
        dispute_seq: u64,
        liable: &str,
        rule: &str,
        evidence: Vec<u64>,
    ) -> pb::SignedCommand {
        self.sign(Body::ResolveDispute(pb::ResolveDispute {
            order_id: order_id.to_string(),
            dispute_seq,
            liable: liable.to_string(),
            rule: rule.to_string(),
            evidence,
        }))
    }

    /// An operator membership command, stamped with the current time
    /// (replicas refuse admin commands more than 5 minutes off their clock).
    pub fn sign_admin(&self, body: pb::admin_command::Body) -> pb::SignedAdmin {
        let issued_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let cmd = pb::AdminCommand {
            issued_at_ms,
            body: Some(body),
        };
        sign_admin(&self.key, &self.party_id, &cmd)
    }
}

fn decode_32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_proto::ledger::{verify_admin, verify_command};
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
            matches!(&err, ClientError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
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
        assert!(matches!(err, ClientError::Io { .. }));
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
            assert!(matches!(err, ClientError::Key(_)), "{name}: {msg}");
            assert!(msg.contains(name), "{name}: {msg}");
            assert!(msg.contains(expect), "{name}: {msg}");
            assert!(!msg.contains('\n'), "{name}: {msg}");
        }
    }

    #[test]
    fn signed_commands_verify_and_nonces_differ() {
        let id = Identity::generate("node-1");
        let a = id.claim_order("o-1", 1, 2598);
        let b = id.claim_order("o-1", 1, 2598);
        assert_eq!(a.signer, "node-1");
        verify_command(&a, &id.public_key()).unwrap();
        assert_ne!(a.command, b.command, "fresh nonce per command");
        let cmd = pb::Command::decode(a.command.as_slice()).unwrap();
        assert!(matches!(cmd.body, Some(pb::command::Body::ClaimOrder(ref c)) if c.total == 2598));

        let adm = id.sign_admin(pb::admin_command::Body::RemoveNode(pb::RemoveNode {
            node_id: 3,
        }));
        verify_admin(&adm, &id.public_key()).unwrap();
        let cmd = pb::AdminCommand::decode(adm.admin.as_slice()).unwrap();
        assert!(cmd.issued_at_ms > 1_600_000_000_000);
    }

    #[test]
    fn dispute_commands_carry_their_fields() {
        let id = Identity::generate("aud");
        let open = id.open_dispute("o-1", pb::IncidentKind::Damaged, 1234, "box crushed");
        verify_command(&open, &id.public_key()).unwrap();
        match pb::Command::decode(open.command.as_slice()).unwrap().body {
            Some(Body::OpenDispute(d)) => {
                assert_eq!(d.order_id, "o-1");
                assert_eq!(d.kind, pb::IncidentKind::Damaged as i32);
                assert_eq!((d.incident_ms, d.statement.as_str()), (1234, "box crushed"));
            }
            other => panic!("{other:?}"),
        }
        let res = id.resolve_dispute("o-1", 9, "store-1", "damage_noted_at_acceptance", vec![7]);
        match pb::Command::decode(res.command.as_slice()).unwrap().body {
            Some(Body::ResolveDispute(r)) => {
                assert_eq!((r.dispute_seq, r.liable.as_str()), (9, "store-1"));
                assert_eq!(
                    (r.rule.as_str(), r.evidence),
                    ("damage_noted_at_acceptance", vec![7])
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let id = Identity::generate("p");
        let s = format!("{id:?}");
        assert!(!s.contains(&hex::encode(id.key.to_bytes())));
        assert!(s.contains(&id.public_key_hex()));
    }
}
