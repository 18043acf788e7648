//! Carriers sign (rules version 3): the owner's `shipped` tenders the order
//! to an enrolled carrier, which takes custody only by signing the tender
//! acceptance (`AcceptTender`: what it received, its tracking id); the
//! delivery's proof is graded — the recipient's one-time delivery code
//! checked against the hash the channel registered (`code`), the signed
//! carrier's delivery scan (`ScanDelivery`, `scan`), or the node's word
//! (`word`) — and the responsibility rules say which grade a ruling rests
//! on (`rules/disputes.rs`, docs/disputes.md §4.7).
//!
//! A `shipped` without a tender, to a carrier name that is not an enrolled
//! carrier, is the unsigned hand-off of versions 1 and 2 and is decided as
//! before under version 3. From version 4 custody never passes to an
//! unsigned name: the carrier carries as the node's agent and the node stays
//! the custodian until delivery ([`UnsignedNote`] in the entry's message).
//! Also from version 4: a tender expires (`tender_expired` after it; the
//! node may tender again), and a tender acceptance that signs for fewer
//! parcels than were tendered records `parcels_short_at_tender`, which a
//! `lost` dispute for the missing parcels rules on against the node.

use super::super::carriers::{
    delivery_code_hash, Tender, TenderAcceptance, DEFAULT_TENDER_TIMEOUT_MS,
};
use super::super::custody::UnsignedNote;
use super::super::state::EventKind;
use super::super::{role_name, Code, Decision, Exception, Grade, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

/// The rules version carriers arrive in.
const CARRIERS_VERSION: u32 = 3;

/// The rules version of unsigned hand-offs kept by the node, tender
/// deadlines, parcels compared and unique delivery codes.
const CARRIERS_V4: u32 = 4;

fn rules_of(view: &impl StateView) -> u32 {
    view.config().map(|c| c.rules()).unwrap_or(1)
}

fn too_early(what: &str, version: u32) -> String {
    format!("{what} need rules version {CARRIERS_VERSION}; the rules are at version {version}")
}

/// `EnrollParty` of a carrier before rules version 3: rejected.
pub(super) fn enroll_check(view: &impl StateView, e: &pb::EnrollParty) -> Option<Decision> {
    let version = rules_of(view);
    (e.role == pb::Role::Carrier as i32 && version < CARRIERS_VERSION).then(|| {
        Decision::reject(
            Code::NotInRulesVersion,
            too_early("carrier parties", version),
            "",
        )
    })
}

/// `RegisterOrder` with a delivery code's hash before rules version 3: rejected.
pub(super) fn register_check(view: &impl StateView, r: &pb::RegisterOrder) -> Option<Decision> {
    let version = rules_of(view);
    (!r.delivery_code_sha256.is_empty() && version < CARRIERS_VERSION).then(|| {
        Decision::reject(
            Code::NotInRulesVersion,
            too_early("delivery codes", version),
            "",
        )
    })
}

impl<V: StateView> OnOrder<'_, V> {
    fn carriers_only(&self, what: &str) -> Result<(), Reject> {
        if self.rules() < CARRIERS_VERSION {
            return rej(Code::NotInRulesVersion, too_early(what, self.rules()));
        }
        Ok(())
    }

    /// The checks of a `ReportMilestone` that come before the rest: the
    /// fields of version 3 under an earlier version; the owner tendering a
    /// pending tender again (to another carrier, or the same); the owner
    /// presenting a delivery code already used. `None`: decided as usual.
    pub(super) fn carrier_milestone(
        &mut self,
        m: &pb::ReportMilestone,
    ) -> Option<Result<(), Reject>> {
        let is_owner = self.order.owner.as_deref() == Some(self.signer);
        // A non-owner is rejected `not_owner` as usual (and that is evidence
        // against it), whatever fields it sets.
        let may_report = is_owner || self.fenced_for(self.signer).is_some();
        if may_report && (m.tender || m.parcels != 0 || !m.delivery_code.is_empty()) {
            if let Err(r) = self.carriers_only("tenders to carriers and delivery codes") {
                return Some(Err(r));
            }
        }
        if may_report && m.tender_timeout_ms != 0 && self.rules() < CARRIERS_V4 {
            return Some(rej(
                Code::NotInRulesVersion,
                format!(
                    "tender timeouts need rules version {CARRIERS_V4}; the rules are at version {}",
                    self.rules()
                ),
            ));
        }
        let milestone = pb::Milestone::try_from(m.milestone).unwrap_or(pb::Milestone::Unspecified);
        let pending = self
            .order
            .tender
            .as_ref()
            .is_some_and(|t| t.accepted.is_none());
        if is_owner && pending && m.tender && milestone == pb::Milestone::Shipped {
            return Some(self.retender(m));
        }
        if is_owner
            && milestone == pb::Milestone::Delivered
            && !m.delivery_code.is_empty()
            && self.order.delivery_code_used_seq != 0
        {
            return Some(self.code_unused());
        }
        None
    }

    /// The carrier a tender names must be an enrolled carrier.
    fn tender_carrier(&self, carrier: &str) -> Result<(), Reject> {
        match self.view.party(carrier) {
            None => rej(
                Code::UnknownParty,
                format!("party {carrier} is not enrolled: a tender names an enrolled carrier"),
            ),
            Some(p) if p.role != pb::Role::Carrier as i32 => rej(
                Code::NotACarrier,
                format!(
                    "party {carrier} is enrolled as {}, not as a carrier",
                    role_name(pb::Role::try_from(p.role).unwrap_or(pb::Role::Unspecified))
                ),
            ),
            Some(_) => Ok(()),
        }
    }

    /// The hand-off of an accepted `shipped`: a tender (version 3, `tender`
    /// set), after which the node stays the custodian, or the unsigned
    /// hand-off that makes the named carrier the custodian.
    pub(super) fn hand_over(&mut self, m: &pb::ReportMilestone) -> Result<(), Reject> {
        let signer = self.signer;
        if m.tender {
            self.tender_carrier(&m.carrier)?;
            // Rules version 4: the carrier must sign by the tender's deadline.
            let expires_ms = if self.rules() >= CARRIERS_V4 {
                let timeout = match m.tender_timeout_ms {
                    0 => DEFAULT_TENDER_TIMEOUT_MS,
                    t => t,
                };
                self.now.saturating_add(timeout)
            } else {
                0
            };
            self.order.tender = Some(Tender {
                carrier: m.carrier.clone(),
                node: signer.to_string(),
                seq: self.seq,
                parcels: m.parcels,
                expires_ms,
                accepted: None,
            });
            self.order.custodian = Some(signer.to_string());
            self.event(EventKind::Tendered {
                node: signer.to_string(),
                carrier: m.carrier.clone(),
            });
            return Ok(());
        }
        if self.rules() >= CARRIERS_VERSION
            && self
                .view
                .party(&m.carrier)
                .is_some_and(|p| p.role == pb::Role::Carrier as i32)
        {
            return rej(
                Code::TenderRequired,
                format!(
                    "{} is an enrolled carrier: custody passes to it only by its signature; report shipped as a tender to it",
                    m.carrier
                ),
            );
        }
        // Rules version 4: custody never passes to an unsigned name: the
        // carrier carries as the node's agent, and the node stays the custodian.
        let agent = self.rules() >= CARRIERS_V4;
        if agent {
            self.order.custodian = Some(signer.to_string());
            self.notes.push(
                UnsignedNote {
                    carrier: m.carrier.clone(),
                    node: signer.to_string(),
                }
                .to_string(),
            );
        } else {
            self.order.custodian = Some(m.carrier.clone());
        }
        self.event(EventKind::Shipped {
            node: signer.to_string(),
            carrier: m.carrier.clone(),
            agent,
        });
        Ok(())
    }

    /// Rules version 4: a tender past its deadline (never for a tender of
    /// version 3, which has none).
    fn tender_expired(&self, t: &Tender) -> bool {
        t.expires_ms != 0 && self.now > t.expires_ms
    }

    /// The owner tenders again while its tender is pending (the carrier did
    /// not come): the new tender replaces it; counters do not change.
    fn retender(&mut self, m: &pb::ReportMilestone) -> Result<(), Reject> {
        if m.price_version != 0 {
            self.quote(m.price_version, m.total)?;
        }
        self.order.carrier = m.carrier.clone();
        self.order.tracking_id = m.tracking_id.clone();
        self.hand_over(m)
    }

    /// The delivered milestone's custody: with a delivery code (version 3)
    /// it ends; on the node's word it ends unless a carrier signed for the
    /// goods (the node cannot speak for it) or, as in versions 1 and 2,
    /// there is no proof of delivery.
    pub(super) fn deliver(&mut self, m: &pb::ReportMilestone) -> Result<(), Reject> {
        let signer = self.signer.to_string();
        let proof = !m.proof_of_delivery.is_empty();
        if self.rules() >= CARRIERS_VERSION {
            // Rules version 4: a tender that expired unsigned no longer
            // stands in the way of the node's own delivery.
            if let Some(t) = self
                .order
                .tender
                .as_ref()
                .filter(|t| t.accepted.is_none() && !self.tender_expired(t))
            {
                return rej(
                    Code::TenderPending,
                    format!(
                        "order {} is tendered to {} (entry {}), which has not signed for it; a delivery follows the carrier's acceptance",
                        self.order.order_id, t.carrier, t.seq
                    ),
                );
            }
            if !m.delivery_code.is_empty() {
                self.use_code(&m.delivery_code)?;
                self.order.custodian = None;
                self.order.delivery_grade = Some(Grade::Code);
                self.event(EventKind::DeliveryProven {
                    by: signer,
                    grade: Grade::Code,
                });
                return Ok(());
            }
            self.order.delivery_grade = Some(Grade::Word);
        }
        if proof && self.order.acceptance().is_none() {
            // Delivered with proof: nobody in the chain holds it any more.
            self.order.custodian = None;
        }
        self.event(EventKind::Delivered {
            node: signer,
            proof,
        });
        Ok(())
    }

    fn code_unused(&self) -> Result<(), Reject> {
        if self.order.delivery_code_used_seq != 0 {
            return rej(
                Code::DeliveryCodeUsed,
                format!(
                    "the delivery code of order {} was used at entry {}; a code is good for one delivery",
                    self.order.order_id, self.order.delivery_code_used_seq
                ),
            );
        }
        Ok(())
    }

    /// Checks a presented delivery code against the registered hash and
    /// marks it used by this entry.
    fn use_code(&mut self, code: &str) -> Result<(), Reject> {
        let id = &self.order.order_id;
        if self.order.delivery_code_sha256.is_empty() {
            return rej(
                Code::NoDeliveryCode,
                format!("order {id} has no delivery code registered"),
            );
        }
        self.code_unused()?;
        if delivery_code_hash(id, code).as_slice() != self.order.delivery_code_sha256.as_slice() {
            return rej(
                Code::WrongDeliveryCode,
                format!(
                    "the delivery code presented for order {id} does not match the hash its channel registered"
                ),
            );
        }
        self.order.delivery_code_used_seq = self.seq;
        Ok(())
    }

    /// The tender the signer answers: one exists and names the signer.
    fn tender_to_signer(&self) -> Result<Tender, Reject> {
        let id = &self.order.order_id;
        let Some(t) = self.order.tender.clone() else {
            return rej(
                Code::NoTender,
                format!("order {id} has no tender to a carrier"),
            );
        };
        if t.carrier != self.signer {
            return rej(
                Code::NotTenderedToSigner,
                format!(
                    "order {id} is tendered to {}, not {}",
                    t.carrier, self.signer
                ),
            );
        }
        Ok(t)
    }

    pub(super) fn accept_tender(&mut self, a: &pb::AcceptTender) -> Result<(), Reject> {
        self.carriers_only("tender acceptances")?;
        self.not_cancelled()?;
        let t = self.tender_to_signer()?;
        let id = self.order.order_id.clone();
        if t.seq != a.tender_seq {
            return rej(
                Code::TenderMismatch,
                format!(
                    "the tender of order {id} is entry {}, not {}",
                    t.seq, a.tender_seq
                ),
            );
        }
        if let Some(done) = &t.accepted {
            return rej(
                Code::TenderAlreadyAccepted,
                format!(
                    "the tender of order {id} (entry {}) was accepted at entry {}",
                    t.seq, done.seq
                ),
            );
        }
        if self.tender_expired(&t) {
            return rej(
                Code::TenderExpired,
                format!(
                    "the tender of order {id} (entry {}) expired at {} unsigned (this entry is at {}); the node may tender it again",
                    t.seq, t.expires_ms, self.now
                ),
            );
        }
        let carrier = self.signer.to_string();
        // Rules version 4: what the carrier signed for, against the tender.
        if self.rules() >= CARRIERS_V4 && t.parcels != 0 && a.parcels != t.parcels {
            self.notes.push(format!(
                "{carrier} signed for {} of the {} parcels tendered at entry {}",
                a.parcels, t.parcels, t.seq
            ));
            if a.parcels < t.parcels {
                self.order.exceptions.push((
                    Exception::ParcelsShortAtTender.as_str().into(),
                    carrier.clone(),
                    self.seq,
                ));
            }
        }
        self.order.tender = Some(Tender {
            accepted: Some(TenderAcceptance {
                seq: self.seq,
                tracking_id: a.tracking_id.clone(),
                parcels: a.parcels,
                weight_grams: a.weight_grams,
                damaged: a.damaged,
            }),
            ..t.clone()
        });
        self.order.custodian = Some(carrier.clone());
        self.order.carrier = carrier.clone();
        self.order.tracking_id = a.tracking_id.clone();
        if a.damaged {
            self.order.exceptions.push((
                Exception::DamageNotedAtTender.as_str().into(),
                carrier.clone(),
                self.seq,
            ));
        }
        self.event(EventKind::TenderAccepted {
            node: t.node,
            carrier,
            damaged: a.damaged,
        });
        Ok(())
    }

    pub(super) fn scan_delivery(&mut self, s: &pb::ScanDelivery) -> Result<(), Reject> {
        self.carriers_only("delivery scans")?;
        self.not_cancelled()?;
        let t = self.tender_to_signer()?;
        let id = self.order.order_id.clone();
        let Some(acc) = &t.accepted else {
            return rej(
                Code::TenderPending,
                format!(
                    "order {id} is tendered to {} (entry {}) and not yet accepted; a carrier delivers only what it signed for",
                    t.carrier, t.seq
                ),
            );
        };
        if acc.tracking_id != s.tracking_id {
            return rej(
                Code::TrackingIdMismatch,
                format!(
                    "carrier {} accepted order {id} with tracking id {}, not {}",
                    t.carrier, acc.tracking_id, s.tracking_id
                ),
            );
        }
        let grade = if s.delivery_code.is_empty() {
            Grade::Scan
        } else {
            self.use_code(&s.delivery_code)?;
            Grade::Code
        };
        use super::super::state::OrderStatus::{Delivered, Shipped};
        let upgrade = self.order.status == Delivered
            && self.order.delivery_grade == Some(Grade::Word)
            && self.order.custodian.as_deref() == Some(self.signer);
        if self.order.status != Shipped && !upgrade {
            return rej(
                Code::MilestoneOutOfOrder,
                format!(
                    "order {id} is {}; a delivery scan can only follow shipped, or a delivery on the node's word",
                    self.status()
                ),
            );
        }
        if let (false, Some(owner)) = (upgrade, self.order.owner.clone()) {
            self.stats_mut(&owner).delivered += 1;
        }
        self.order.status = Delivered;
        self.order.custodian = None;
        self.order.delivery_grade = Some(grade);
        self.event(EventKind::DeliveryProven {
            by: self.signer.to_string(),
            grade,
        });
        Ok(())
    }
}
