//! Disputes on an order: opening one records the incident; resolving it is
//! accepted only with the ruling the responsibility rules compute
//! ([`rule_on`](super::super::rule_on), `rules/disputes.rs`).

use super::super::disputes::rule_on;
use super::super::state::{Dispute, RulingRecord};
use super::super::{Code, Incident, Rule, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    pub(super) fn open_dispute(&mut self, d: &pb::OpenDispute) -> Result<(), Reject> {
        if d.incident_ms > self.now {
            return rej(
                Code::IncidentInFuture,
                format!(
                    "incident time {} is after this entry's time {}",
                    d.incident_ms, self.now
                ),
            );
        }
        let Some(kind) = Incident::from_pb(d.kind) else {
            return rej(Code::Malformed, "incident kind is not set".into());
        };
        let dispute = Dispute {
            seq: self.seq,
            kind: kind.as_str().into(),
            incident_ms: d.incident_ms,
            opened_by: self.signer.to_string(),
            ruling: None,
            known_good_ms: d.known_good_ms,
            parcels: d.parcels,
        };
        if self.rules() < 4 && d.parcels != 0 {
            return rej(
                Code::NotInRulesVersion,
                format!(
                    "parcels in a dispute need rules version 4; the rules are at version {}",
                    self.rules()
                ),
            );
        }
        if self.rules() < 2 {
            if d.known_good_ms != 0 {
                return rej(
                    Code::NotInRulesVersion,
                    format!(
                        "dispute windows need rules version 2; the rules are at version {}",
                        self.rules()
                    ),
                );
            }
        } else if let Some(earlier) = self.same_incident(&dispute) {
            return rej(
                Code::DuplicateIncident,
                format!(
                    "order {} already has a {} dispute on this incident (entry {earlier}); one incident has one ruling",
                    self.order.order_id, dispute.kind
                ),
            );
        }
        if self.rules() >= 3 {
            self.within_claim_deadline(kind)?;
        }
        self.order.disputes.push(dispute);
        Ok(())
    }

    /// Rules version 2, one ruling per incident: the earlier dispute of the
    /// same kind whose window (or instant) overlaps this one's; for late,
    /// duplicate processing and price mismatch, whose rulings read no time,
    /// any earlier dispute of the same kind.
    fn same_incident(&self, d: &Dispute) -> Option<u64> {
        let timed = matches!(
            Incident::parse(&d.kind),
            Some(Incident::Lost | Incident::Damaged)
        );
        let (from, to) = d.window();
        self.order
            .disputes
            .iter()
            .filter(|e| e.kind == d.kind)
            .find(|e| {
                let (f, t) = e.window();
                !timed || (f <= to && from <= t)
            })
            .map(|e| e.seq)
    }

    pub(super) fn resolve_dispute(&mut self, r: &pb::ResolveDispute) -> Result<(), Reject> {
        let id = self.order.order_id.clone();
        let Some(i) = self
            .order
            .disputes
            .iter()
            .position(|d| d.seq == r.dispute_seq)
        else {
            return rej(
                Code::UnknownDispute,
                format!(
                    "order {id} has no dispute opened at entry {}",
                    r.dispute_seq
                ),
            );
        };
        let dispute = &self.order.disputes[i];
        if let Some(done) = &dispute.ruling {
            return rej(
                Code::AlreadyResolved,
                format!(
                    "the dispute of entry {} was resolved at entry {}",
                    r.dispute_seq, done.seq
                ),
            );
        }
        let computed = rule_on(&self.order, dispute);
        if computed.liable != r.liable
            || Rule::parse(&r.rule) != Some(computed.rule)
            || computed.evidence != r.evidence
        {
            return rej(
                Code::RulingMismatch,
                format!(
                    "the rules find {} liable under {} on evidence {:?} ({}); the ruling says {} under {} on {:?}",
                    if computed.liable.is_empty() { "nobody" } else { &computed.liable },
                    computed.rule,
                    computed.evidence,
                    computed.explanation,
                    if r.liable.is_empty() { "nobody" } else { &r.liable },
                    r.rule,
                    r.evidence
                ),
            );
        }
        self.order.disputes[i].ruling = Some(RulingRecord {
            liable: computed.liable,
            rule: computed.rule.as_str().into(),
            evidence: computed.evidence,
            seq: self.seq,
        });
        Ok(())
    }
}
