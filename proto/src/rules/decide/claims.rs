//! Claims and leases: a node claims an open order and holds it under a lease
//! of its declared dispatch time plus the cluster's grace; it may release it;
//! a lease that runs out lapses, recorded by the next accepted command on the
//! order (or by the leader's `RecordLapse`), and the order is open again.

use super::super::state::{EventKind, Lease, OrderStatus, Profile};
use super::super::{Code, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    /// If the owner's lease ran out before this entry, the order is open
    /// again and the lapse is counted against the old owner. Only written
    /// if the command is accepted; otherwise the next command finds it again.
    pub(super) fn record_lapse(&mut self) {
        if !self.order.lease_lapsed(self.now) {
            return;
        }
        let (Some(owner), Some(lease)) = (self.order.owner.take(), self.order.lease.take()) else {
            return;
        };
        let s = self.stats_mut(&owner);
        s.lapses += 1;
        s.open_orders = s.open_orders.saturating_sub(1);
        self.lapse_note = Some(format!(
            "lease of {owner} lapsed at {} (owner since entry {}, dispatch time {} ms of profile v{} + grace)",
            lease.deadline_ms, self.order.claimed_seq, lease.dispatch_time_ms, lease.profile_version
        ));
        self.order.status = OrderStatus::Open;
        self.order.custodian = None;
        self.order.offer = None;
        self.order.claimed_seq = 0;
        self.event(EventKind::Lapsed {
            node: owner.clone(),
            deadline_ms: lease.deadline_ms,
        });
        self.order.last_lapsed_owner = owner;
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
        let deadline = o
            .lease
            .as_ref()
            .filter(|_| o.status.is_leased())
            .map(|l| format!("its lease runs until {}", l.deadline_ms))
            .unwrap_or_else(|| format!("it is {} with no lease running", o.status.as_str()));
        rej(
            Code::NotLapsed,
            format!("order {} has nothing to lapse: {deadline}", o.order_id),
        )
    }
}
