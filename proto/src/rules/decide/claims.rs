//! Claims and leases: a node claims an open order and holds it under a lease
//! of its declared dispatch time plus the cluster's grace; it may release it;
//! a lease that runs out lapses, recorded by the next accepted command on the
//! order (or by the leader's `RecordLapse`), and the order is open again.
//! From rules version 2 a lapse of a picked or packed order fences it for
//! the old owner first ([`Fence`]).

use super::super::custody::{FenceExpiryNote, LapseNote};
use super::super::state::{EventKind, Fence, Lease, OrderStatus, Profile};
use super::super::{Code, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    /// If the owner's lease ran out before this entry, the order is open
    /// again and the lapse is counted against the old owner. Only written
    /// if the command is accepted; otherwise the next command finds it again.
    ///
    /// From rules version 2 a lapse of an order that was picked or packed
    /// fences it for the old owner instead (from the lease deadline, for the
    /// fence in force); a fence that has run out by this entry opens the
    /// order and is counted against the old owner. One entry can record
    /// both; the notes are joined by "; " ([`crate::rules::custody`]).
    pub(super) fn record_lapse(&mut self) {
        let mut notes = Vec::new();
        if self.order.lease_lapsed(self.now) {
            if let (Some(owner), Some(lease)) = (self.order.owner.take(), self.order.lease.take()) {
                notes.push(self.lapse(owner, lease));
            }
        }
        if self.order.fence_expired(self.now) {
            if let Some(fence) = self.order.fence.take() {
                self.stats_mut(&fence.node).fence_expiries += 1;
                self.order.status = OrderStatus::Open;
                self.order.custodian = None;
                self.event(EventKind::FenceExpired {
                    node: fence.node.clone(),
                    until_ms: fence.until_ms,
                });
                notes.push(
                    FenceExpiryNote {
                        node: fence.node,
                        until_ms: fence.until_ms,
                        lapsed_seq: fence.lapsed_seq,
                    }
                    .to_string(),
                );
            }
        }
        if !notes.is_empty() {
            self.lapse_note = Some(notes.join("; "));
        }
    }

    /// Records the lapse of `owner`'s lease: the order opens, or from rules
    /// version 2 a picked or packed order is fenced. Returns the note.
    fn lapse(&mut self, owner: String, lease: Lease) -> String {
        let s = self.stats_mut(&owner);
        s.lapses += 1;
        s.open_orders = s.open_orders.saturating_sub(1);
        let fenced = self.rules() >= 2
            && matches!(self.order.status, OrderStatus::Picked | OrderStatus::Packed);
        let mut note = LapseNote {
            owner: owner.clone(),
            deadline_ms: lease.deadline_ms,
            since_seq: self.order.claimed_seq,
            dispatch_time_ms: lease.dispatch_time_ms,
            profile_version: lease.profile_version,
            fenced_until_ms: None,
        };
        self.order.offer = None;
        self.order.claimed_seq = 0;
        if fenced {
            let until_ms = lease.deadline_ms.saturating_add(self.fence_ms());
            note.fenced_until_ms = Some(until_ms);
            // The old owner still holds the goods: custody stays with it.
            self.order.fence = Some(Fence {
                node: owner.clone(),
                status: self.order.status,
                lapsed_seq: self.seq,
                from_ms: lease.deadline_ms,
                until_ms,
            });
            self.order.status = OrderStatus::Fenced;
            self.event(EventKind::Fenced {
                node: owner.clone(),
                deadline_ms: lease.deadline_ms,
                until_ms,
            });
        } else {
            self.order.status = OrderStatus::Open;
            self.order.custodian = None;
            self.event(EventKind::Lapsed {
                node: owner.clone(),
                deadline_ms: lease.deadline_ms,
            });
        }
        self.order.last_lapsed_owner = owner;
        note.to_string()
    }

    /// The fence, if the order is fenced for `node`.
    pub(super) fn fenced_for(&self, node: &str) -> Option<&Fence> {
        self.order
            .fence
            .as_ref()
            .filter(|f| self.order.status == OrderStatus::Fenced && f.node == node)
    }

    /// The fenced old owner confirms it did not ship: the order opens.
    fn clear_fence(&mut self) {
        let Some(fence) = self.order.fence.take() else {
            return;
        };
        self.order.status = OrderStatus::Open;
        self.order.custodian = None;
        self.event(EventKind::FenceCleared { node: fence.node });
    }

    /// Refuses a claim while the order is fenced for its old owner.
    fn not_fenced(&self) -> Result<(), Reject> {
        match (&self.order.fence, self.order.status) {
            (Some(f), OrderStatus::Fenced) => rej(
                Code::Fenced,
                format!(
                    "order {} is fenced for {} until {}: its lease lapsed at {} while it was {} (entry {}); \
                     {} confirms it did not ship, reports it shipped, or the fence runs out",
                    self.order.order_id,
                    f.node,
                    f.until_ms,
                    f.from_ms,
                    f.status.as_str(),
                    f.lapsed_seq,
                    f.node
                ),
            ),
            _ => Ok(()),
        }
    }

    /// Makes `node` the owner and custodian, with a fresh lease.
    pub(super) fn take_on(&mut self, node: &str, profile: &Profile) {
        let grace = self.grace();
        self.order.owner = Some(node.to_string());
        self.order.custodian = Some(node.to_string());
        self.order.claimed_seq = self.seq;
        self.order.offer = None;
        self.order.lease = Some(Lease {
            start_ms: self.now,
            deadline_ms: self
                .now
                .saturating_add(profile.dispatch_time_ms)
                .saturating_add(grace),
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        self.stats_mut(node).open_orders += 1;
    }

    /// The owner gives the order up (release, cancel): no longer counted.
    pub(super) fn drop_owner_count(&mut self) {
        if let (Some(owner), true) = (self.order.owner.clone(), self.order.status.is_leased()) {
            let s = self.stats_mut(&owner);
            s.open_orders = s.open_orders.saturating_sub(1);
        }
    }

    pub(super) fn claim(&mut self, c: &pb::ClaimOrder) -> Result<(), Reject> {
        self.not_cancelled()?;
        self.not_fenced()?;
        if let Some(owner) = &self.order.owner {
            return rej(
                Code::AlreadyOwned,
                format!(
                    "order {} is owned by {owner} (since entry {})",
                    self.order.order_id, self.order.claimed_seq
                ),
            );
        }
        if self.order.status != OrderStatus::Open {
            return rej(
                Code::NotOpen,
                format!("order {} is {}", self.order.order_id, self.status()),
            );
        }
        // Rules version 3: a brokered order, or an assignment offer.
        if self.claim_sourced(c)? {
            return Ok(());
        }
        self.quote(c.price_version, c.total)?;
        let signer = self.signer;
        let profile = self.eligible(signer)?;
        self.order.status = OrderStatus::Claimed;
        self.take_on(signer, &profile);
        self.stats_mut(signer).claims += 1;
        self.event(EventKind::Claimed {
            node: signer.to_string(),
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        Ok(())
    }

    pub(super) fn release(&mut self) -> Result<(), Reject> {
        // Rules version 2: the fenced old owner confirms it did not ship.
        if self.fenced_for(self.signer).is_some() {
            self.clear_fence();
            return Ok(());
        }
        // The owner whose lease just lapsed gives it up: the lapse recorded by
        // this entry already returned the order and freed its capacity.
        if self.lapse_note.is_some() && self.order.last_lapsed_owner == self.signer {
            return Ok(());
        }
        self.owner_only()?;
        self.leased()?;
        self.drop_owner_count();
        let signer = self.signer;
        self.stats_mut(signer).releases += 1;
        self.event(EventKind::Released {
            node: signer.to_string(),
        });
        self.order.status = OrderStatus::Open;
        self.order.owner = None;
        self.order.custodian = None;
        self.order.lease = None;
        self.order.offer = None;
        self.order.claimed_seq = 0;
        Ok(())
    }

    /// `RecordLapse`: accepted only when this entry recorded a lapse.
    pub(super) fn lapse_recorded(&mut self) -> Result<(), Reject> {
        if self.lapse_note.is_some() {
            return Ok(());
        }
        let o = &self.order;
        let fence = o
            .fence
            .as_ref()
            .filter(|_| o.status == OrderStatus::Fenced)
            .map(|f| format!("it is fenced for {} until {}", f.node, f.until_ms));
        let deadline = o
            .lease
            .as_ref()
            .filter(|_| o.status.is_leased())
            .map(|l| format!("its lease runs until {}", l.deadline_ms))
            .or(fence)
            .unwrap_or_else(|| format!("it is {} with no lease running", o.status.as_str()));
        rej(
            Code::NotLapsed,
            format!("order {} has nothing to lapse: {deadline}", o.order_id),
        )
    }
}
