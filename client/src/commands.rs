//! The signed commands a party builds from its [`Signer`] (an identity bound
//! to the cluster its commands are for): one method per command of
//! `proto/arbor/v1/arbor.proto`, each filling in the message and signing it
//! with a fresh nonce ([`Signer::sign`]).
//!
//! [`Signer`] and [`Identity`](arbor_proto::identity::Identity) (the key
//! file, the party id, the signing primitive) are in `arbor_proto::identity`,
//! shared with the replica, which reads and writes its own key in the same
//! format. These methods are the client's: bring them into scope with
//! `use arbor_client::Commands`.

use arbor_proto::identity::Signer;
use arbor_proto::pb;
use arbor_proto::pb::command::Body;

mod sealed {
    /// Only [`Signer`](super::Signer) builds commands.
    pub trait Sealed {
        fn signer(&self) -> &super::Signer;
    }

    impl Sealed for super::Signer {
        fn signer(&self) -> &super::Signer {
            self
        }
    }
}

/// Command builders on [`Signer`]: `id.for_cluster(&cluster_id).claim_order("o-1", 1, 2598)`
/// is the signed `ClaimOrder` ready for [`Client::submit`](crate::Client::submit).
pub trait Commands: sealed::Sealed {
    /// An operator command enrolling a party. `kind` must be
    /// [`pb::NodeKind::Unspecified`] unless `role` is [`pb::Role::Node`].
    fn enroll_party(
        &self,
        party_id: &str,
        role: pb::Role,
        kind: pb::NodeKind,
        public_key: &[u8],
    ) -> pb::SignedCommand {
        self.signer().sign(Body::EnrollParty(pb::EnrollParty {
            party_id: party_id.to_string(),
            role: role as i32,
            kind: kind as i32,
            public_key: public_key.to_vec(),
            channel_names: Vec::new(),
        }))
    }

    /// An operator command enrolling a channel whose orders' external
    /// references may use the given channel names (none: its own party id).
    fn enroll_channel(
        &self,
        party_id: &str,
        public_key: &[u8],
        channel_names: &[String],
    ) -> pb::SignedCommand {
        self.signer().sign(Body::EnrollParty(pb::EnrollParty {
            party_id: party_id.to_string(),
            role: pb::Role::Channel as i32,
            kind: pb::NodeKind::Unspecified as i32,
            public_key: public_key.to_vec(),
            channel_names: channel_names.to_vec(),
        }))
    }

    /// A channel command registering an order.
    fn register_order(&self, order: pb::RegisterOrder) -> pb::SignedCommand {
        self.signer().sign(Body::RegisterOrder(order))
    }

    /// A node command claiming an order at the quoted price.
    fn claim_order(&self, order_id: &str, price_version: u64, total: i64) -> pb::SignedCommand {
        self.signer().sign(Body::ClaimOrder(pb::ClaimOrder {
            order_id: order_id.to_string(),
            price_version,
            total,
        }))
    }

    /// An operator command replacing a party's key (also reinstates a revoked party).
    fn rotate_key(&self, party_id: &str, public_key: &[u8]) -> pb::SignedCommand {
        self.signer().sign(Body::RotateKey(pb::RotateKey {
            party_id: party_id.to_string(),
            public_key: public_key.to_vec(),
        }))
    }

    /// An operator command revoking a party's key.
    fn revoke_key(&self, party_id: &str, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::RevokeKey(pb::RevokeKey {
            party_id: party_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// An operator command adding replica `node_id` (client API at `addr`,
    /// peer port at `peer_addr`) to the desired membership.
    fn add_replica(&self, node_id: u64, addr: &str, peer_addr: &str) -> pb::SignedCommand {
        self.signer().sign(Body::AddReplica(pb::AddReplica {
            node_id,
            addr: addr.to_string(),
            peer_addr: peer_addr.to_string(),
        }))
    }

    /// An operator command removing replica `node_id` from the desired membership.
    fn remove_replica(&self, node_id: u64) -> pb::SignedCommand {
        self.signer()
            .sign(Body::RemoveReplica(pb::RemoveReplica { node_id }))
    }

    /// An operator command raising the rules version from its own entry on
    /// (never lowering it), with the fence of version 2 (0: the default).
    fn set_rules_version(&self, version: u32, fence_ms: u64) -> pb::SignedCommand {
        self.signer()
            .sign(Body::SetRulesVersion(pb::SetRulesVersion {
                claim_deadlines: None,
                version,
                fence_ms,
            }))
    }

    /// An operator command setting the rules version (never lower), the
    /// fence (0: the default) and, from version 3, the claim deadline of
    /// each dispute kind (`None`, or a kind's 0: its default).
    fn set_rules(
        &self,
        version: u32,
        fence_ms: u64,
        claim_deadlines: Option<pb::ClaimDeadlines>,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::SetRulesVersion(pb::SetRulesVersion {
                version,
                fence_ms,
                claim_deadlines,
            }))
    }

    /// A node publishing its own capability profile (the next version).
    fn publish_profile(&self, profile: pb::PublishProfile) -> pb::SignedCommand {
        self.signer().sign(Body::PublishProfile(profile))
    }

    /// Rules version 3: a sourcing decision (broker- or channel-signed), as
    /// [`ReferenceBroker::decide`](crate::broker::ReferenceBroker::decide) makes it.
    fn source_order(&self, decision: pb::SourceOrder) -> pb::SignedCommand {
        self.signer().sign(Body::SourceOrder(decision))
    }

    /// Rules version 3: the selected node taking on the order the decision
    /// at entry `decision_seq` offered it, quoting the price.
    fn accept_assignment(
        &self,
        order_id: &str,
        decision_seq: u64,
        price_version: u64,
        total: i64,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::AcceptAssignment(pb::AcceptAssignment {
                order_id: order_id.to_string(),
                decision_seq,
                price_version,
                total,
            }))
    }

    /// Rules version 3: the selected node declining (with `shortage`: it
    /// lacks the stock).
    fn decline_assignment(
        &self,
        order_id: &str,
        decision_seq: u64,
        reason: &str,
        shortage: bool,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::DeclineAssignment(pb::DeclineAssignment {
                order_id: order_id.to_string(),
                decision_seq,
                reason: reason.to_string(),
                shortage,
            }))
    }

    /// Rules version 3: the order's channel or an operator taking the order
    /// back from `from` (its owner or assignee; "" when neither).
    fn reassign_order(&self, order_id: &str, from: &str, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::ReassignOrder(pb::ReassignOrder {
            order_id: order_id.to_string(),
            from: from.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// Rules version 3: the owner giving an order back because it lacks the
    /// stock (the next sourcing trigger is a shortage).
    fn release_shortage(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::ReleaseOrder(pb::ReleaseOrder {
            order_id: order_id.to_string(),
            reason: reason.to_string(),
            shortage: true,
        }))
    }

    /// A channel amending the price of an order it registered.
    fn amend_price(
        &self,
        order_id: &str,
        base_version: u64,
        lines: Vec<pb::OrderLine>,
        reason: &str,
    ) -> pb::SignedCommand {
        let total = lines.iter().map(|l| l.quantity as i64 * l.unit_price).sum();
        self.signer().sign(Body::AmendPrice(pb::AmendPrice {
            order_id: order_id.to_string(),
            base_version,
            lines,
            total,
            reason: reason.to_string(),
        }))
    }

    /// A channel cancelling an order it registered.
    fn cancel_order(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::CancelOrder(pb::CancelOrder {
            order_id: order_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// The owner giving an order back.
    fn release_order(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::ReleaseOrder(pb::ReleaseOrder {
            shortage: false,
            order_id: order_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// The owner offering custody to another node, open for `expires_in_ms`.
    fn offer_handoff(&self, order_id: &str, to: &str, expires_in_ms: u64) -> pb::SignedCommand {
        self.signer().sign(Body::OfferHandoff(pb::OfferHandoff {
            order_id: order_id.to_string(),
            to: to.to_string(),
            expires_in_ms,
        }))
    }

    /// The receiver accepting the offer made at entry `offer_seq`.
    fn accept_handoff(
        &self,
        order_id: &str,
        offer_seq: u64,
        damaged: bool,
        note: &str,
    ) -> pb::SignedCommand {
        self.signer().sign(Body::AcceptHandoff(pb::AcceptHandoff {
            order_id: order_id.to_string(),
            offer_seq,
            damaged,
            note: note.to_string(),
        }))
    }

    /// The receiver declining the offer made at entry `offer_seq`.
    fn decline_handoff(&self, order_id: &str, offer_seq: u64, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::DeclineHandoff(pb::DeclineHandoff {
            order_id: order_id.to_string(),
            offer_seq,
            reason: reason.to_string(),
        }))
    }

    /// The owner reporting `picked` or `packed`.
    fn report_milestone(&self, order_id: &str, milestone: pb::Milestone) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportMilestone(pb::ReportMilestone {
                order_id: order_id.to_string(),
                milestone: milestone as i32,
                ..Default::default()
            }))
    }

    /// The owner reporting the hand-off to a carrier.
    fn report_shipped(
        &self,
        order_id: &str,
        carrier: &str,
        tracking_id: &str,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportMilestone(pb::ReportMilestone {
                order_id: order_id.to_string(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: carrier.to_string(),
                tracking_id: tracking_id.to_string(),
                ..Default::default()
            }))
    }

    /// The owner reporting delivery, with a proof-of-delivery reference ("" if none).
    fn report_delivered(&self, order_id: &str, proof_of_delivery: &str) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportMilestone(pb::ReportMilestone {
                order_id: order_id.to_string(),
                milestone: pb::Milestone::Delivered as i32,
                proof_of_delivery: proof_of_delivery.to_string(),
                ..Default::default()
            }))
    }

    /// Rules version 3: the owner tendering the order to the enrolled
    /// carrier `carrier` (`parcels` tendered, 0: not stated). The owner stays
    /// the custodian until the carrier signs [`accept_tender`](Self::accept_tender).
    fn report_tender(
        &self,
        order_id: &str,
        carrier: &str,
        tracking_id: &str,
        parcels: u32,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportMilestone(pb::ReportMilestone {
                order_id: order_id.to_string(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: carrier.to_string(),
                tracking_id: tracking_id.to_string(),
                tender: true,
                parcels,
                ..Default::default()
            }))
    }

    /// Rules version 4: a tender that stands `timeout_ms` for the carrier
    /// to sign (0: the default, 24 h; at most 7 days); after it the
    /// carrier's acceptance is `tender_expired` and the node may tender
    /// again.
    fn report_tender_with_timeout(
        &self,
        order_id: &str,
        carrier: &str,
        tracking_id: &str,
        parcels: u32,
        timeout_ms: u64,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportMilestone(pb::ReportMilestone {
                order_id: order_id.to_string(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: carrier.to_string(),
                tracking_id: tracking_id.to_string(),
                tender: true,
                parcels,
                tender_timeout_ms: timeout_ms,
                ..Default::default()
            }))
    }

    /// Rules version 3: the owner reporting delivery with the recipient's
    /// one-time delivery code (and a proof reference, "" if none).
    fn report_delivered_with_code(
        &self,
        order_id: &str,
        proof_of_delivery: &str,
        delivery_code: &str,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportMilestone(pb::ReportMilestone {
                order_id: order_id.to_string(),
                milestone: pb::Milestone::Delivered as i32,
                proof_of_delivery: proof_of_delivery.to_string(),
                delivery_code: delivery_code.to_string(),
                ..Default::default()
            }))
    }

    /// Rules version 3: the carrier named by the tender of entry
    /// `tender_seq` signing for the goods: custody passes to it.
    fn accept_tender(&self, accept: pb::AcceptTender) -> pb::SignedCommand {
        self.signer().sign(Body::AcceptTender(accept))
    }

    /// Rules version 3: the carrier holding the goods by its signed tender
    /// scanning the delivery (`delivery_code` "" when the recipient gave none).
    fn scan_delivery(
        &self,
        order_id: &str,
        tracking_id: &str,
        delivery_code: &str,
        note: &str,
    ) -> pb::SignedCommand {
        self.signer().sign(Body::ScanDelivery(pb::ScanDelivery {
            order_id: order_id.to_string(),
            tracking_id: tracking_id.to_string(),
            delivery_code: delivery_code.to_string(),
            note: note.to_string(),
        }))
    }

    /// The owner or the registering channel reporting an exception.
    fn report_exception(
        &self,
        order_id: &str,
        kind: pb::ExceptionKind,
        note: &str,
    ) -> pb::SignedCommand {
        self.signer()
            .sign(Body::ReportException(pb::ReportException {
                order_id: order_id.to_string(),
                kind: kind as i32,
                note: note.to_string(),
            }))
    }

    /// The channel requesting a return of a delivered order.
    fn request_return(&self, order_id: &str, reason: &str) -> pb::SignedCommand {
        self.signer().sign(Body::RequestReturn(pb::RequestReturn {
            order_id: order_id.to_string(),
            reason: reason.to_string(),
        }))
    }

    /// A node that handles returns claiming one.
    fn claim_return(&self, order_id: &str) -> pb::SignedCommand {
        self.signer().sign(Body::ClaimReturn(pb::ClaimReturn {
            order_id: order_id.to_string(),
        }))
    }

    /// The return node reporting the goods received and the refund.
    fn receive_return(&self, order_id: &str, refund: i64, price_version: u64) -> pb::SignedCommand {
        self.signer().sign(Body::ReceiveReturn(pb::ReceiveReturn {
            order_id: order_id.to_string(),
            refund,
            price_version,
        }))
    }

    /// Any enrolled party opening a dispute on an order: what happened
    /// (`kind`) and when (`incident_ms`, Unix ms, not after the entry's time).
    fn open_dispute(
        &self,
        order_id: &str,
        kind: pb::IncidentKind,
        incident_ms: u64,
        statement: &str,
    ) -> pb::SignedCommand {
        self.signer().sign(Body::OpenDispute(pb::OpenDispute {
            order_id: order_id.to_string(),
            kind: kind as i32,
            incident_ms,
            statement: statement.to_string(),
            known_good_ms: 0,
            parcels: 0,
        }))
    }

    /// Rules version 4: a dispute about `parcels` of the order's parcels
    /// only (0: the whole order; only a `lost` dispute names parcels). A
    /// loss of no more parcels than a signed carrier's acceptance was short
    /// of the tender is the shipper's (`parcels_short_at_tender`).
    fn open_dispute_parcels(
        &self,
        order_id: &str,
        kind: pb::IncidentKind,
        incident_ms: u64,
        parcels: u32,
        statement: &str,
    ) -> pb::SignedCommand {
        self.signer().sign(Body::OpenDispute(pb::OpenDispute {
            order_id: order_id.to_string(),
            kind: kind as i32,
            incident_ms,
            statement: statement.to_string(),
            known_good_ms: 0,
            parcels,
        }))
    }

    /// Any party opening a dispute over the window from `known_good_ms`
    /// (the goods last known good) to `known_bad_ms` (first known bad);
    /// rules version 2, lost and damaged only.
    fn open_dispute_window(
        &self,
        order_id: &str,
        kind: pb::IncidentKind,
        known_good_ms: u64,
        known_bad_ms: u64,
        statement: &str,
    ) -> pb::SignedCommand {
        self.signer().sign(Body::OpenDispute(pb::OpenDispute {
            order_id: order_id.to_string(),
            kind: kind as i32,
            incident_ms: known_bad_ms,
            statement: statement.to_string(),
            known_good_ms,
            parcels: 0,
        }))
    }

    /// An auditor resolving the dispute opened at entry `dispute_seq`. The
    /// ruling must be the one the responsibility rules compute (see
    /// [`Client::preview_ruling`](crate::Client::preview_ruling)); any other
    /// is rejected `ruling_mismatch`. `liable` is "" when nobody is.
    fn resolve_dispute(
        &self,
        order_id: &str,
        dispute_seq: u64,
        liable: &str,
        rule: &str,
        evidence: Vec<u64>,
    ) -> pb::SignedCommand {
        self.signer().sign(Body::ResolveDispute(pb::ResolveDispute {
            order_id: order_id.to_string(),
            dispute_seq,
            liable: liable.to_string(),
            rule: rule.to_string(),
            evidence,
        }))
    }
}

impl Commands for Signer {}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_proto::identity::Identity;
    use arbor_proto::ledger::verify_command;
    use prost::Message;

    #[test]
    fn claims_carry_their_fields() {
        let id = Identity::generate("node-1").for_cluster("c1");
        let a = id.claim_order("o-1", 1, 2598);
        assert_eq!(a.signer, "node-1");
        verify_command(&a, "c1", &id.public_key()).unwrap();
        assert!(verify_command(&a, "c2", &id.public_key()).is_err());
        let cmd = pb::Command::decode(a.command.as_slice()).unwrap();
        assert!(matches!(cmd.body, Some(Body::ClaimOrder(ref c)) if c.total == 2598));
    }

    #[test]
    fn dispute_commands_carry_their_fields() {
        let id = Identity::generate("aud").for_cluster("c1");
        let open = id.open_dispute("o-1", pb::IncidentKind::Damaged, 1234, "box crushed");
        verify_command(&open, "c1", &id.public_key()).unwrap();
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
    fn carrier_commands_carry_their_fields() {
        let node = Identity::generate("store-1").for_cluster("c1");
        let t = node.report_tender("o-1", "sf", "T-1", 2);
        match pb::Command::decode(t.command.as_slice()).unwrap().body {
            Some(Body::ReportMilestone(m)) => {
                assert!(m.tender);
                assert_eq!((m.carrier.as_str(), m.parcels), ("sf", 2));
                assert_eq!(m.milestone, pb::Milestone::Shipped as i32);
            }
            other => panic!("{other:?}"),
        }
        let sf = Identity::generate("sf").for_cluster("c1");
        let a = sf.accept_tender(pb::AcceptTender {
            order_id: "o-1".into(),
            tender_seq: 7,
            tracking_id: "SF1".into(),
            parcels: 2,
            ..Default::default()
        });
        verify_command(&a, "c1", &sf.public_key()).unwrap();
        assert!(matches!(
            pb::Command::decode(a.command.as_slice()).unwrap().body,
            Some(Body::AcceptTender(ref x)) if x.tender_seq == 7 && x.tracking_id == "SF1"
        ));
        let s = sf.scan_delivery("o-1", "SF1", "K7Q2-M9XD", "front desk");
        assert!(matches!(
            pb::Command::decode(s.command.as_slice()).unwrap().body,
            Some(Body::ScanDelivery(ref x)) if x.delivery_code == "K7Q2-M9XD" && x.note == "front desk"
        ));
        let h = crate::delivery_code_hash("o-1", "K7Q2-M9XD");
        assert_eq!(
            h,
            arbor_proto::rules::carriers::delivery_code_hash("o-1", "K7Q2-M9XD")
        );
        assert_ne!(h, crate::delivery_code_hash("o-2", "K7Q2-M9XD"));
    }
}
