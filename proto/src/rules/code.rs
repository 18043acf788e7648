//! Every name the rules write or compare, in one table: outcome codes,
//! responsibility rule names, incident and exception kinds, refusal kinds.
//!
//! Outcome codes and rule names are ledger format: an entry's `code` goes into
//! its hash, a ruling's rule into the `ResolveDispute` command that states it
//! (docs/ledger-format.md, docs/disputes.md). Renaming a variant is free;
//! changing its string changes the format, and the test at the bottom pins
//! every one. The rules build outcomes from these enums and compare them as
//! enums; the wire carries [`as_str`](Code::as_str), and strings read back
//! (exports, commands) go through `parse`.
//!
//! Refusal kinds are not ledger format (a refused command is not appended)
//! but name each [`Refusal`](super::Refusal) in status messages and logs, and
//! are what the API layer maps to gRPC status codes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a string-named enum: `as_str`, `parse`, `ALL` and `Display`.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $s:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every variant, in table order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name as written on the wire and in the ledger.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $s, )*
                }
            }

            /// The variant named `s`, if any (the inverse of `as_str`).
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $s => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Serialized as its name.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        s
                    ))
                })
            }
        }
    };
}

names! {
    /// The outcome code of a ledger entry: `accepted`, or why the rules
    /// rejected the command (the rejection is recorded all the same).
    pub enum Code {
        Accepted = "accepted",
        /// Only for commands structural validation lets through by mistake.
        Malformed = "malformed",

        // Parties and keys
        PartyExists = "party_exists",
        KeyInUse = "key_in_use",
        UnknownParty = "unknown_party",
        AlreadyRevoked = "already_revoked",
        LastOperator = "last_operator",

        // Membership
        ReplicaExists = "replica_exists",
        UnknownReplica = "unknown_replica",
        LastReplica = "last_replica",
        ReplicaAddressInUse = "replica_address_in_use",

        // Rules versions
        RulesVersionLowered = "rules_version_lowered",

        // Orders: registration, price, cancellation, exceptions
        DuplicateOrder = "duplicate_order",
        ExternalRefTaken = "external_ref_taken",
        UnknownOrder = "unknown_order",
        OrderCancelled = "order_cancelled",
        OrderClosed = "order_closed",
        AlreadyCancelled = "already_cancelled",
        AlreadyShipped = "already_shipped",
        NotOrderChannel = "not_order_channel",
        StalePriceVersion = "stale_price_version",
        PriceMismatch = "price_mismatch",
        NotEntitled = "not_entitled",

        // Claims, leases, lapses
        AlreadyOwned = "already_owned",
        NotOpen = "not_open",
        NotOwner = "not_owner",
        NotClaimed = "not_claimed",
        NotLapsed = "not_lapsed",
        /// Rules version 2: claimed by another node while fenced for its old owner.
        Fenced = "fenced",
        AtCapacity = "at_capacity",

        // Eligibility by profile
        NoProfile = "no_profile",
        RegionNotServed = "region_not_served",
        ColdChainRequired = "cold_chain_required",
        HazmatRequired = "hazmat_required",
        CategoryNotServed = "category_not_served",

        // Handoffs
        OfferPending = "offer_pending",
        HandoffToSelf = "handoff_to_self",
        NotANode = "not_a_node",
        NoOffer = "no_offer",
        NotOfferedToSigner = "not_offered_to_signer",
        OfferMismatch = "offer_mismatch",
        OfferExpired = "offer_expired",

        // Milestones
        MilestoneOutOfOrder = "milestone_out_of_order",

        // Returns
        NotDelivered = "not_delivered",
        ReturnAlreadyClaimed = "return_already_claimed",
        NoReturnRequested = "no_return_requested",
        ReturnsNotHandled = "returns_not_handled",
        NoReturnClaimed = "no_return_claimed",
        NotReturnNode = "not_return_node",
        RefundExceedsPaid = "refund_exceeds_paid",

        // Disputes
        IncidentInFuture = "incident_in_future",
        UnknownDispute = "unknown_dispute",
        AlreadyResolved = "already_resolved",
        RulingMismatch = "ruling_mismatch",
        /// Rules version 2: a dispute of the same kind on the same incident exists.
        DuplicateIncident = "duplicate_incident",
        /// The command uses what a later rules version brings.
        NotInRulesVersion = "not_in_rules_version",

        // Carriers sign (rules version 3)
        NotACarrier = "not_a_carrier",
        TenderRequired = "tender_required",
        NoTender = "no_tender",
        NotTenderedToSigner = "not_tendered_to_signer",
        TenderMismatch = "tender_mismatch",
        TenderAlreadyAccepted = "tender_already_accepted",
        TenderPending = "tender_pending",
        TrackingIdMismatch = "tracking_id_mismatch",
        NoDeliveryCode = "no_delivery_code",
        WrongDeliveryCode = "wrong_delivery_code",
        DeliveryCodeUsed = "delivery_code_used",
        // SLA clocks and claim deadlines (rules version 3)
        /// A dispute opened after its kind's claim deadline.
        ClaimDeadlinePassed = "claim_deadline_passed",
        // Sourcing (rules version 3)
        TriggerMismatch = "trigger_mismatch",
        StaleDecision = "stale_decision",
        EligibilityMismatch = "eligibility_mismatch",
        SelectedNotEligible = "selected_not_eligible",
        ScoreMismatch = "score_mismatch",
        AssignmentPending = "assignment_pending",
        NoAssignment = "no_assignment",
        NotAssignedToSigner = "not_assigned_to_signer",
        AssignmentMismatch = "assignment_mismatch",
        AssignmentExpired = "assignment_expired",
        BrokeredOrder = "brokered_order",
        WorkInProgress = "work_in_progress",
        ReassignMismatch = "reassign_mismatch",
        // Carriers, version 4 (tender deadlines, unique delivery codes)
        /// An `AcceptTender` after the tender's deadline.
        TenderExpired = "tender_expired",
        /// A `RegisterOrder` whose delivery code hash another order registered.
        DeliveryCodeReused = "delivery_code_reused",
        // Sourcing completeness (sourcing4, rules version 4)
        /// A sourcing decision omits an eligible node.
        CandidatesIncomplete = "candidates_incomplete",
    }
}

names! {
    /// A responsibility rule (docs/disputes.md): named by every ruling and
    /// stated in the `ResolveDispute` command that records it.
    pub enum Rule {
        CustodianAtIncident = "custodian_at_incident",
        CleanAcceptance = "clean_acceptance",
        DeliveredWithoutProof = "delivered_without_proof",
        NoCustodian = "no_custodian",
        DamageNotedAtAcceptance = "damage_noted_at_acceptance",
        LeaseLapsed = "lease_lapsed",
        /// Rules version 2: a fenced old owner neither confirmed nor shipped.
        FenceExpired = "fence_expired",
        /// Rules version 2: several custodians held the goods in the window.
        SharedCustody = "shared_custody",
        LateDispatch = "late_dispatch",
        NoBreach = "no_breach",
        MilestoneWithoutOwnership = "milestone_without_ownership",
        WrongPriceQuoted = "wrong_price_quoted",
        /// The dispute's kind has no rule (not produced by `OpenDispute`).
        NoRule = "no_rule",

        // Carriers sign (rules version 3)
        /// The carrier held the goods by its signed tender acceptance.
        CarrierSignedTender = "carrier_signed_tender",
        /// Delivery rests on the node's word: the signed carrier stays custodian.
        DeliveredOnNodeWord = "delivered_on_node_word",
        /// Custody ended with the recipient's one-time delivery code.
        DeliveredWithCode = "delivered_with_code",
        /// Custody ended with the carrier's signed delivery scan.
        DeliveredByCarrierScan = "delivered_by_carrier_scan",
        /// The carrier noted damage when it signed for the goods.
        DamageNotedAtTender = "damage_noted_at_tender",

        // SLA clocks (rules version 3)
        /// A node that took the order on in time for its ship-by (or
        /// promised delivery) did not get it to the carrier by then.
        MissedShipBy = "missed_ship_by",
        /// Nobody took the order on in time for its ship-by: the time was
        /// the sourcer's (the channel, or the broker sourcing it).
        SourcedLate = "sourced_late",
        /// Dispatched in time, delivered after the promised delivery.
        LateDelivery = "late_delivery",

        // Carriers, version 4 (unsigned hand-offs, parcels compared)
        /// The goods went to a carrier that is not enrolled and did not
        /// sign: it carries as the shipping node's agent, and the node stays
        /// the custodian until delivery.
        UnsignedCarrierIsShippersAgent = "unsigned_carrier_is_shippers_agent",
        /// The carrier signed for fewer parcels than the node tendered: the
        /// missing parcels never reached it.
        ParcelsShortAtTender = "parcels_short_at_tender",
    }
}

names! {
    /// Rules version 3: the grade of a delivery's proof, strongest first.
    pub enum Grade {
        /// The recipient's one-time code matched the hash the channel registered.
        Code = "code",
        /// The carrier holding the goods by its signed tender signed a delivery scan.
        Scan = "scan",
        /// The owner node reported the delivery (today's proof string).
        Word = "word",
    }
}

names! {
    /// The kind of incident a dispute is about, as recorded on the order.
    pub enum Incident {
        Lost = "lost",
        Damaged = "damaged",
        Late = "late",
        DuplicateProcessing = "duplicate_processing",
        PriceMismatch = "price_mismatch",
    }
}

names! {
    /// Why a command was refused outright (nothing appended): the kind of a
    /// [`Refusal`](super::Refusal).
    pub enum RefusalKind {
        Malformed = "malformed",
        Unsigned = "unsigned",
        UnknownSigner = "unknown_signer",
        WrongRole = "wrong_role",
        RevokedKey = "revoked_key",
        KeyChanged = "key_changed",
        BadSignature = "bad_signature",
        NoGenesis = "no_genesis",
        GenesisNotAllowed = "genesis_not_allowed",
        ForeignReference = "foreign_reference",
    }
}

names! {
    /// The kind of an exception recorded on an order (`Order::exceptions`).
    pub enum Exception {
        Damaged = "damaged",
        Lost = "lost",
        Delayed = "delayed",
        /// Recorded by an `AcceptHandoff` that notes damage.
        DamageNotedAtHandoff = "damage_noted_at_handoff",
        /// Rules version 3: recorded by an `AcceptTender` that notes damage.
        DamageNotedAtTender = "damage_noted_at_tender",
        /// Rules version 4 (carriers): recorded by an `AcceptTender` that
        /// signs for fewer parcels than were tendered.
        ParcelsShortAtTender = "parcels_short_at_tender",
    }
}

impl Exception {
    /// The exception of a wire `ExceptionKind` (`None` when unset or unknown).
    pub fn from_pb(kind: i32) -> Option<Exception> {
        use crate::pb::ExceptionKind as K;
        Some(match K::try_from(kind).ok()? {
            K::Damaged => Exception::Damaged,
            K::Lost => Exception::Lost,
            K::Delayed => Exception::Delayed,
            K::Unspecified => return None,
        })
    }
}

impl Incident {
    /// The incident of a wire `IncidentKind` (`None` when unset or unknown).
    pub fn from_pb(kind: i32) -> Option<Incident> {
        use crate::pb::IncidentKind as K;
        Some(match K::try_from(kind).ok()? {
            K::Lost => Incident::Lost,
            K::Damaged => Incident::Damaged,
            K::Late => Incident::Late,
            K::DuplicateProcessing => Incident::DuplicateProcessing,
            K::PriceMismatch => Incident::PriceMismatch,
            K::Unspecified => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings are ledger format: this table is the one place that says
    /// what they are, and a change here is a format change.
    #[test]
    fn every_name_is_pinned() {
        let codes: &[(Code, &str)] = &[
            (Code::Accepted, "accepted"),
            (Code::Malformed, "malformed"),
            (Code::PartyExists, "party_exists"),
            (Code::KeyInUse, "key_in_use"),
            (Code::UnknownParty, "unknown_party"),
            (Code::AlreadyRevoked, "already_revoked"),
            (Code::LastOperator, "last_operator"),
            (Code::ReplicaExists, "replica_exists"),
            (Code::UnknownReplica, "unknown_replica"),
            (Code::LastReplica, "last_replica"),
            (Code::ReplicaAddressInUse, "replica_address_in_use"),
            (Code::RulesVersionLowered, "rules_version_lowered"),
            (Code::DuplicateOrder, "duplicate_order"),
            (Code::ExternalRefTaken, "external_ref_taken"),
            (Code::UnknownOrder, "unknown_order"),
            (Code::OrderCancelled, "order_cancelled"),
            (Code::OrderClosed, "order_closed"),
            (Code::AlreadyCancelled, "already_cancelled"),
            (Code::AlreadyShipped, "already_shipped"),
            (Code::NotOrderChannel, "not_order_channel"),
            (Code::StalePriceVersion, "stale_price_version"),
            (Code::PriceMismatch, "price_mismatch"),
            (Code::NotEntitled, "not_entitled"),
            (Code::AlreadyOwned, "already_owned"),
            (Code::NotOpen, "not_open"),
            (Code::NotOwner, "not_owner"),
            (Code::NotClaimed, "not_claimed"),
            (Code::NotLapsed, "not_lapsed"),
            (Code::Fenced, "fenced"),
            (Code::AtCapacity, "at_capacity"),
            (Code::NoProfile, "no_profile"),
            (Code::RegionNotServed, "region_not_served"),
            (Code::ColdChainRequired, "cold_chain_required"),
            (Code::HazmatRequired, "hazmat_required"),
            (Code::CategoryNotServed, "category_not_served"),
            (Code::OfferPending, "offer_pending"),
            (Code::HandoffToSelf, "handoff_to_self"),
            (Code::NotANode, "not_a_node"),
            (Code::NoOffer, "no_offer"),
            (Code::NotOfferedToSigner, "not_offered_to_signer"),
            (Code::OfferMismatch, "offer_mismatch"),
            (Code::OfferExpired, "offer_expired"),
            (Code::MilestoneOutOfOrder, "milestone_out_of_order"),
            (Code::NotDelivered, "not_delivered"),
            (Code::ReturnAlreadyClaimed, "return_already_claimed"),
            (Code::NoReturnRequested, "no_return_requested"),
            (Code::ReturnsNotHandled, "returns_not_handled"),
            (Code::NoReturnClaimed, "no_return_claimed"),
            (Code::NotReturnNode, "not_return_node"),
            (Code::RefundExceedsPaid, "refund_exceeds_paid"),
            (Code::IncidentInFuture, "incident_in_future"),
            (Code::UnknownDispute, "unknown_dispute"),
            (Code::AlreadyResolved, "already_resolved"),
            (Code::RulingMismatch, "ruling_mismatch"),
            (Code::DuplicateIncident, "duplicate_incident"),
            (Code::NotInRulesVersion, "not_in_rules_version"),
            (Code::NotACarrier, "not_a_carrier"),
            (Code::TenderRequired, "tender_required"),
            (Code::NoTender, "no_tender"),
            (Code::NotTenderedToSigner, "not_tendered_to_signer"),
            (Code::TenderMismatch, "tender_mismatch"),
            (Code::TenderAlreadyAccepted, "tender_already_accepted"),
            (Code::TenderPending, "tender_pending"),
            (Code::TrackingIdMismatch, "tracking_id_mismatch"),
            (Code::NoDeliveryCode, "no_delivery_code"),
            (Code::WrongDeliveryCode, "wrong_delivery_code"),
            (Code::DeliveryCodeUsed, "delivery_code_used"),
            (Code::ClaimDeadlinePassed, "claim_deadline_passed"),
            // Sourcing (rules version 3)
            (Code::TriggerMismatch, "trigger_mismatch"),
            (Code::StaleDecision, "stale_decision"),
            (Code::EligibilityMismatch, "eligibility_mismatch"),
            (Code::SelectedNotEligible, "selected_not_eligible"),
            (Code::ScoreMismatch, "score_mismatch"),
            (Code::AssignmentPending, "assignment_pending"),
            (Code::NoAssignment, "no_assignment"),
            (Code::NotAssignedToSigner, "not_assigned_to_signer"),
            (Code::AssignmentMismatch, "assignment_mismatch"),
            (Code::AssignmentExpired, "assignment_expired"),
            (Code::BrokeredOrder, "brokered_order"),
            (Code::WorkInProgress, "work_in_progress"),
            (Code::ReassignMismatch, "reassign_mismatch"),
            // Carriers, version 4
            (Code::TenderExpired, "tender_expired"),
            (Code::DeliveryCodeReused, "delivery_code_reused"),
            // Sourcing completeness (sourcing4, rules version 4)
            (Code::CandidatesIncomplete, "candidates_incomplete"),
        ];
        let rules: &[(Rule, &str)] = &[
            (Rule::CustodianAtIncident, "custodian_at_incident"),
            (Rule::CleanAcceptance, "clean_acceptance"),
            (Rule::DeliveredWithoutProof, "delivered_without_proof"),
            (Rule::NoCustodian, "no_custodian"),
            (Rule::DamageNotedAtAcceptance, "damage_noted_at_acceptance"),
            (Rule::LeaseLapsed, "lease_lapsed"),
            (Rule::FenceExpired, "fence_expired"),
            (Rule::SharedCustody, "shared_custody"),
            (Rule::LateDispatch, "late_dispatch"),
            (Rule::NoBreach, "no_breach"),
            (
                Rule::MilestoneWithoutOwnership,
                "milestone_without_ownership",
            ),
            (Rule::WrongPriceQuoted, "wrong_price_quoted"),
            (Rule::NoRule, "no_rule"),
            (Rule::CarrierSignedTender, "carrier_signed_tender"),
            (Rule::DeliveredOnNodeWord, "delivered_on_node_word"),
            (Rule::DeliveredWithCode, "delivered_with_code"),
            (Rule::DeliveredByCarrierScan, "delivered_by_carrier_scan"),
            (Rule::DamageNotedAtTender, "damage_noted_at_tender"),
            (Rule::MissedShipBy, "missed_ship_by"),
            (Rule::SourcedLate, "sourced_late"),
            (Rule::LateDelivery, "late_delivery"),
            // Carriers, version 4
            (
                Rule::UnsignedCarrierIsShippersAgent,
                "unsigned_carrier_is_shippers_agent",
            ),
            (Rule::ParcelsShortAtTender, "parcels_short_at_tender"),
        ];
        let incidents: &[(Incident, &str)] = &[
            (Incident::Lost, "lost"),
            (Incident::Damaged, "damaged"),
            (Incident::Late, "late"),
            (Incident::DuplicateProcessing, "duplicate_processing"),
            (Incident::PriceMismatch, "price_mismatch"),
        ];
        fn check<T: Copy + PartialEq + fmt::Debug + fmt::Display>(
            pinned: &[(T, &str)],
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            assert_eq!(pinned.len(), all.len(), "a variant is not pinned");
            for (v, s) in pinned {
                assert!(all.contains(v), "{v:?}");
                assert_eq!(as_str(*v), *s, "{v:?}");
                assert_eq!(v.to_string(), *s, "{v:?}");
                assert_eq!(parse(s), Some(*v), "{s}");
            }
        }
        let refusals: &[(RefusalKind, &str)] = &[
            (RefusalKind::Malformed, "malformed"),
            (RefusalKind::Unsigned, "unsigned"),
            (RefusalKind::UnknownSigner, "unknown_signer"),
            (RefusalKind::WrongRole, "wrong_role"),
            (RefusalKind::RevokedKey, "revoked_key"),
            (RefusalKind::KeyChanged, "key_changed"),
            (RefusalKind::BadSignature, "bad_signature"),
            (RefusalKind::NoGenesis, "no_genesis"),
            (RefusalKind::GenesisNotAllowed, "genesis_not_allowed"),
            (RefusalKind::ForeignReference, "foreign_reference"),
        ];
        check(codes, Code::ALL, Code::as_str, Code::parse);
        check(rules, Rule::ALL, Rule::as_str, Rule::parse);
        check(incidents, Incident::ALL, Incident::as_str, Incident::parse);
        check(
            refusals,
            RefusalKind::ALL,
            RefusalKind::as_str,
            RefusalKind::parse,
        );
        let exceptions: &[(Exception, &str)] = &[
            (Exception::Damaged, "damaged"),
            (Exception::Lost, "lost"),
            (Exception::Delayed, "delayed"),
            (Exception::DamageNotedAtHandoff, "damage_noted_at_handoff"),
            (Exception::DamageNotedAtTender, "damage_noted_at_tender"),
            (Exception::ParcelsShortAtTender, "parcels_short_at_tender"),
        ];
        let grades: &[(Grade, &str)] = &[
            (Grade::Code, "code"),
            (Grade::Scan, "scan"),
            (Grade::Word, "word"),
        ];
        check(grades, Grade::ALL, Grade::as_str, Grade::parse);
        check(
            exceptions,
            Exception::ALL,
            Exception::as_str,
            Exception::parse,
        );
    }

    #[test]
    fn names_parse_exactly() {
        assert_eq!(Code::parse("already_owned"), Some(Code::AlreadyOwned));
        for s in ["", "Already_owned", "already_owned ", "already_ownee"] {
            assert_eq!(Code::parse(s), None, "{s:?}");
        }
        assert_eq!(Rule::parse("no_rule"), Some(Rule::NoRule));
        assert_eq!(Rule::parse("accepted"), None);
        assert_eq!(
            Incident::from_pb(crate::pb::IncidentKind::Late as i32),
            Some(Incident::Late)
        );
        assert_eq!(Incident::from_pb(0), None);
        assert_eq!(Incident::from_pb(99), None);
        let lost = crate::pb::ExceptionKind::Lost as i32;
        assert_eq!(Exception::from_pb(lost), Some(Exception::Lost));
        assert_eq!(Exception::from_pb(0), None);
    }

    #[test]
    fn names_serialize_as_their_strings() {
        let json = serde_json::to_string(&RefusalKind::KeyChanged).unwrap();
        assert_eq!(json, "\"key_changed\"");
        let back: RefusalKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, RefusalKind::KeyChanged);
        let err = serde_json::from_str::<Code>("\"already_ownee\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown Code \"already_ownee\""),
            "{err}"
        );
    }
}
