//! Sourcing decisions (rules version 3): a broker (or the order's channel)
//! states why an order goes to which node — its trigger, the policy, every
//! candidate with its profile version, eligibility and score — and the rules
//! recompute every candidate's eligibility from the profiles and counters in
//! force, rejecting a decision that disagrees. An accepted decision opens an
//! assignment offer the selected node accepts (with a claim's checks) or
//! declines; a decline or an offer that runs out is the next trigger. The
//! channel or an operator takes a stalled order back (`ReassignOrder`).
//!
//! Brokered orders (`SourcingMode::Brokered`) are taken on only through an
//! assignment: a claim by the assigned node while its offer is open is its
//! acceptance, every other claim is refused. Race orders keep the rules as
//! first written; a decision's offer there is one more way in, and any
//! admissible claim supersedes it. docs/ledger-format.md §4.40.

use super::super::sourcing::{
    check_candidate, Assignment, CandidateCheck, NotAwaiting, Sourcing, SourcingMode, Trigger,
    HEADROOM, MAX_CANDIDATES,
};
use super::super::state::{EventKind, OrderStatus};
use super::super::{Code, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    fn v3(&self, what: &str) -> Result<(), Reject> {
        if self.rules() < 3 {
            return rej(
                Code::NotInRulesVersion,
                format!(
                    "{what} comes with rules version 3; the ledger is at version {}",
                    self.rules()
                ),
            );
        }
        Ok(())
    }

    fn sourcing_mut(&mut self) -> &mut Sourcing {
        self.order.sourcing.get_or_insert_with(Sourcing::default)
    }

    /// The node's counters as this entry leaves them so far (read only).
    fn open_orders(&self, node: &str) -> u64 {
        self.stats
            .get(node)
            .cloned()
            .or_else(|| self.view.stats(node))
            .unwrap_or_default()
            .open_orders
    }

    /// What a claim by `node` would meet, eligibility-wise, with the
    /// counters as this entry leaves them so far.
    fn compute_candidate(&self, node: &str) -> CandidateCheck {
        check_candidate(self.view, node, &self.order, self.open_orders(node))
    }

    pub(super) fn source(&mut self, s: &pb::SourceOrder) -> Result<(), Reject> {
        self.v3("SourceOrder")?;
        let id = self.order.order_id.clone();
        if self
            .view
            .party(self.signer)
            .is_some_and(|p| p.role == pb::Role::Channel as i32)
        {
            self.channel_only()?;
        }
        self.not_cancelled()?;
        let (trigger, trigger_seq) = match self.order.awaiting_sourcing(self.now) {
            Ok(t) => t,
            Err(NotAwaiting::Assigned(a)) => {
                return rej(
                    Code::AssignmentPending,
                    format!(
                        "order {id} is offered to {} by decision {} until {}: it is answered, \
                         runs out or is reassigned first",
                        a.to, a.decision_seq, a.expires_ms
                    ),
                )
            }
            Err(NotAwaiting::Status(status, owner)) => {
                let by = owner.map(|o| format!(" by {o}")).unwrap_or_default();
                return rej(
                    Code::StaleDecision,
                    format!(
                        "order {id} is {}{by}: it awaits no sourcing decision",
                        status.as_str()
                    ),
                );
            }
        };
        let named = Trigger::from_pb(s.trigger);
        if named != Some(trigger) || s.trigger_seq != trigger_seq {
            return rej(
                Code::TriggerMismatch,
                format!(
                    "order {id} awaits sourcing for trigger {} at entry {trigger_seq}; the decision names {} at entry {}",
                    trigger.as_str(),
                    named.map(|t| t.as_str()).unwrap_or("none"),
                    s.trigger_seq
                ),
            );
        }
        let mut selected_ok = None;
        for c in &s.candidates {
            let got = self.compute_candidate(&c.node);
            if c.profile_version != got.profile_version {
                return rej(
                    Code::EligibilityMismatch,
                    format!(
                        "candidate {}: its profile in force is version {}, the decision names {}",
                        c.node, got.profile_version, c.profile_version
                    ),
                );
            }
            let eligible = got.ineligible.is_empty();
            if c.eligible != eligible || c.ineligible != got.ineligible {
                let says = |e: bool, why: &str| {
                    if e {
                        "eligible".to_string()
                    } else {
                        format!("not eligible ({why})")
                    }
                };
                return rej(
                    Code::EligibilityMismatch,
                    format!(
                        "candidate {} is {} by the profiles and counters in force; the decision says {}",
                        c.node,
                        says(eligible, got.ineligible),
                        says(c.eligible, &c.ineligible)
                    ),
                );
            }
            if let Some(h) = c.components.iter().find(|k| k.name == HEADROOM) {
                if h.value != got.headroom {
                    return rej(
                        Code::ScoreMismatch,
                        format!(
                            "candidate {}: headroom is {} (capacity left by its profile v{}), the decision says {}",
                            c.node, got.headroom, got.profile_version, h.value
                        ),
                    );
                }
            }
            if c.node == s.selected {
                selected_ok = Some(eligible);
            }
        }
        // Rules version 4: every eligible node is listed (unless the
        // decision is full, every one of its candidates eligible).
        if self.rules() >= 4 {
            self.candidates_complete(s)?;
        }
        match selected_ok {
            None => {
                return rej(
                    Code::SelectedNotEligible,
                    format!("selected node {} is not among the candidates", s.selected),
                )
            }
            Some(false) => {
                return rej(
                    Code::SelectedNotEligible,
                    format!("selected node {} is not an eligible candidate", s.selected),
                )
            }
            Some(true) => {}
        }
        // The offer this one supersedes ran out unanswered: counted now.
        if trigger == Trigger::OfferExpired {
            if let Some(old) = self
                .order
                .sourcing
                .as_ref()
                .and_then(|x| x.assignment.clone())
            {
                self.stats_mut(&old.to).assignments_expired += 1;
            }
        }
        let (seq, expires_ms) = (self.seq, self.now.saturating_add(s.expires_in_ms));
        let src = self.sourcing_mut();
        src.assignment = Some(Assignment {
            to: s.selected.clone(),
            decision_seq: seq,
            expires_ms,
        });
        src.decisions.push(seq);
        Ok(())
    }

    /// Rules version 4: the decision lists every node that is eligible by
    /// the profiles and counters in force — every node with a profile,
    /// eligibility recomputed as for a listed candidate — or, when more are
    /// eligible than one decision may list, [`MAX_CANDIDATES`] candidates
    /// that are all eligible. The scan reads the profile index (one key per
    /// node that ever published a profile, in id order), never the orders.
    fn candidates_complete(&self, s: &pb::SourceOrder) -> Result<(), Reject> {
        if s.candidates.len() >= MAX_CANDIDATES && s.candidates.iter().all(|c| c.eligible) {
            return Ok(());
        }
        for node in self.view.profiled_nodes() {
            if s.candidates.iter().any(|c| c.node == node) {
                continue;
            }
            if self.compute_candidate(&node).ineligible.is_empty() {
                return rej(
                    Code::CandidatesIncomplete,
                    format!(
                        "node {node} is eligible for order {} by the profiles and counters in \
                         force but the decision does not list it: a decision lists every \
                         eligible node",
                        self.order.order_id
                    ),
                );
            }
        }
        Ok(())
    }

    /// The assignment the signer answers: addressed to it, the one named,
    /// still open.
    fn answered_assignment(&self, decision_seq: u64) -> Result<Assignment, Reject> {
        let id = &self.order.order_id;
        let Some(a) = self
            .order
            .sourcing
            .as_ref()
            .and_then(|s| s.assignment.clone())
            .filter(|_| self.order.status == OrderStatus::Open)
        else {
            return rej(
                Code::NoAssignment,
                format!("order {id} has no assignment offer ({})", self.status()),
            );
        };
        if a.to != self.signer {
            return rej(
                Code::NotAssignedToSigner,
                format!("order {id} is offered to {}, not {}", a.to, self.signer),
            );
        }
        if a.decision_seq != decision_seq {
            return rej(
                Code::AssignmentMismatch,
                format!(
                    "the assignment of order {id} is decision {}, not {decision_seq}",
                    a.decision_seq
                ),
            );
        }
        if self.now > a.expires_ms {
            return rej(
                Code::AssignmentExpired,
                format!(
                    "the assignment of order {id} (decision {}) ran out at {}",
                    a.decision_seq, a.expires_ms
                ),
            );
        }
        Ok(a)
    }

    pub(super) fn accept_assignment(&mut self, a: &pb::AcceptAssignment) -> Result<(), Reject> {
        self.v3("AcceptAssignment")?;
        self.not_cancelled()?;
        self.answered_assignment(a.decision_seq)?;
        self.quote(a.price_version, a.total)?;
        let signer = self.signer;
        let profile = self.eligible(signer)?;
        self.order.status = OrderStatus::Claimed;
        self.take_on(signer, &profile);
        let s = self.stats_mut(signer);
        s.claims += 1;
        s.assignments_accepted += 1;
        self.event(EventKind::Claimed {
            node: signer.to_string(),
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        self.sourcing_mut().assignment = None;
        Ok(())
    }

    pub(super) fn decline_assignment(&mut self, d: &pb::DeclineAssignment) -> Result<(), Reject> {
        self.v3("DeclineAssignment")?;
        self.answered_assignment(d.decision_seq)?;
        let (signer, seq) = (self.signer, self.seq);
        self.stats_mut(signer).assignments_declined += 1;
        let v4 = self.rules() >= 4;
        let src = self.sourcing_mut();
        src.assignment = None;
        src.declines.push((seq, d.shortage));
        // Rules version 4: the decliner, for the health fold.
        if v4 {
            src.declined_by.push((seq, signer.to_string()));
        }
        Ok(())
    }

    /// The channel or an operator takes the order back: a live (or run out)
    /// assignment is withdrawn; a claimed order leaves its owner (custody
    /// ends, as with a release). Work in progress (picked, packed, fenced)
    /// is refused: its lease lapses into the fence instead.
    pub(super) fn reassign(&mut self, r: &pb::ReassignOrder) -> Result<(), Reject> {
        self.v3("ReassignOrder")?;
        let id = self.order.order_id.clone();
        if self
            .view
            .party(self.signer)
            .is_some_and(|p| p.role == pb::Role::Channel as i32)
        {
            self.channel_only()?;
        }
        self.not_cancelled()?;
        let taken = match self.order.status {
            OrderStatus::Claimed => self.order.owner.clone().unwrap_or_default(),
            OrderStatus::Open => {
                let live = self
                    .order
                    .sourcing
                    .as_ref()
                    .and_then(|s| s.live_assignment(self.now))
                    .map(|a| a.to.clone());
                live.unwrap_or_default()
            }
            OrderStatus::Picked | OrderStatus::Packed | OrderStatus::Fenced => {
                return rej(
                    Code::WorkInProgress,
                    format!(
                        "order {id} is {} by {}: work in progress is not reassigned; \
                         its lease lapses into the fence",
                        self.status(),
                        self.order
                            .owner
                            .clone()
                            .or(self.order.fence.as_ref().map(|f| f.node.clone()))
                            .unwrap_or_default()
                    ),
                )
            }
            _ => {
                return rej(
                    Code::AlreadyShipped,
                    format!("order {id} is {}: nothing to reassign", self.status()),
                )
            }
        };
        if r.from != taken {
            let held = if taken.is_empty() {
                "nobody holds it or is offered it".to_string()
            } else {
                format!("it is held by or offered to {taken}")
            };
            return rej(
                Code::ReassignMismatch,
                format!("order {id}: {held}; the reassignment names \"{}\"", r.from),
            );
        }
        if self.order.status == OrderStatus::Claimed {
            self.drop_owner_count();
            self.order.status = OrderStatus::Open;
            self.order.owner = None;
            self.order.custodian = None;
            self.order.lease = None;
            self.order.offer = None;
            self.order.claimed_seq = 0;
        }
        if !taken.is_empty() {
            let by = self.signer.to_string();
            self.event(EventKind::Reassigned {
                node: taken.clone(),
                by,
            });
        }
        let (seq, v4) = (self.seq, self.rules() >= 4);
        let src = self.sourcing_mut();
        src.assignment = None;
        src.reassigns.push(seq);
        // Rules version 4: the node the order was taken from, for the
        // health fold (it sat on the order).
        if v4 && !taken.is_empty() {
            src.reassigned_from.push((seq, taken));
        }
        Ok(())
    }

    /// A release (rules version 3: possibly reporting a shortage).
    pub(super) fn release_reported(&mut self, r: &pb::ReleaseOrder) -> Result<(), Reject> {
        if r.shortage {
            self.v3("a release reporting a shortage")?;
        }
        self.release()?;
        if r.shortage {
            let seq = self.seq;
            self.sourcing_mut().shortages.push(seq);
        }
        Ok(())
    }

    /// Before a claim of an open, unowned order (rules version 3): the
    /// assigned node's claim is its acceptance (`Ok(true)`: decided); on a
    /// brokered order every other claim is refused; on a race order the
    /// claim proceeds and supersedes any assignment.
    pub(super) fn claim_sourced(&mut self, c: &pb::ClaimOrder) -> Result<bool, Reject> {
        if self.rules() < 3 {
            return Ok(false);
        }
        let Some(src) = self.order.sourcing.clone() else {
            return Ok(false);
        };
        let id = &self.order.order_id;
        match (src.live_assignment(self.now), src.mode) {
            (Some(a), _) if a.to == self.signer => {
                let accept = pb::AcceptAssignment {
                    order_id: id.clone(),
                    decision_seq: a.decision_seq,
                    price_version: c.price_version,
                    total: c.total,
                };
                self.accept_assignment(&accept)?;
                Ok(true)
            }
            (Some(a), SourcingMode::Brokered) => rej(
                Code::AssignmentPending,
                format!(
                    "order {id} is brokered and offered to {} (decision {}, until {})",
                    a.to, a.decision_seq, a.expires_ms
                ),
            ),
            (None, SourcingMode::Brokered) => rej(
                Code::BrokeredOrder,
                format!(
                    "order {id} is brokered: a node takes it on through a sourcing decision's assignment"
                ),
            ),
            (_, SourcingMode::Race) => {
                self.sourcing_mut().assignment = None;
                Ok(false)
            }
        }
    }
}

/// The sourcing record of an order registered with `mode` under rules
/// version `rules` (`Err`: the mode is unknown or needs version 3).
pub(super) fn on_register(rules: u32, mode: i32) -> Result<Option<Sourcing>, Reject> {
    if rules < 3 {
        if mode != 0 {
            return rej(
                Code::NotInRulesVersion,
                format!(
                    "sourcing modes come with rules version 3; the ledger is at version {rules}"
                ),
            );
        }
        return Ok(None);
    }
    let Some(mode) = SourcingMode::from_pb(mode) else {
        return rej(Code::Malformed, format!("unknown sourcing mode {mode}"));
    };
    Ok(Some(Sourcing {
        mode,
        ..Sourcing::default()
    }))
}
