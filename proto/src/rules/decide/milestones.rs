//! Milestones and exceptions: the owner moves the order forward (picked,
//! packed, shipped to a carrier, delivered), never backwards; the owner or
//! the registering channel report exceptions (damaged, lost, delayed).

use super::super::state::OrderStatus;
use super::super::{Code, Exception, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    pub(super) fn milestone(&mut self, m: &pb::ReportMilestone) -> Result<(), Reject> {
        self.not_cancelled()?;
        // Rules version 3: tenders to carriers and delivery codes (carriers.rs).
        if let Some(decided) = self.carrier_milestone(m) {
            return decided;
        }
        if self.fenced_for(self.signer).is_some() {
            return self.shipped_from_fence(m);
        }
        self.owner_only()?;
        if m.price_version != 0 {
            self.quote(m.price_version, m.total)?;
        }
        use OrderStatus::*;
        let milestone = pb::Milestone::try_from(m.milestone).unwrap_or(pb::Milestone::Unspecified);
        let (next, allowed_from): (OrderStatus, &[OrderStatus]) = match milestone {
            pb::Milestone::Picked => (Picked, &[Claimed]),
            pb::Milestone::Packed => (Packed, &[Claimed, Picked]),
            pb::Milestone::Shipped => (Shipped, &[Claimed, Picked, Packed]),
            pb::Milestone::Delivered => (Delivered, &[Shipped]),
            pb::Milestone::Unspecified => {
                return rej(Code::Malformed, "milestone is not set".into())
            }
        };
        if !allowed_from.contains(&self.order.status) {
            return rej(
                Code::MilestoneOutOfOrder,
                format!(
                    "order {} is {}; {} can only follow {}",
                    self.order.order_id,
                    self.status(),
                    next.as_str(),
                    allowed_from
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            );
        }
        let signer = self.signer;
        match next {
            Shipped => {
                if let Some(o) = self.live_offer() {
                    return rej(
                        Code::OfferPending,
                        format!(
                            "order {} is offered to {} (entry {}); the offer must be answered or expire before shipping",
                            self.order.order_id, o.to, o.offer_seq
                        ),
                    );
                }
                let late = self
                    .order
                    .lease
                    .as_ref()
                    .is_some_and(|l| self.now > l.start_ms.saturating_add(l.dispatch_time_ms));
                let s = self.stats_mut(signer);
                s.open_orders = s.open_orders.saturating_sub(1);
                s.shipped += 1;
                if late {
                    s.late_shipments += 1;
                }
                self.order.offer = None;
                self.order.carrier = m.carrier.clone();
                self.order.tracking_id = m.tracking_id.clone();
                self.hand_over(m)?;
            }
            Delivered => {
                self.stats_mut(signer).delivered += 1;
                self.order.proof_of_delivery = m.proof_of_delivery.clone();
                self.deliver(m)?;
            }
            _ => {}
        }
        self.order.status = next;
        Ok(())
    }

    /// Rules version 2: the fenced old owner reports the hand-off to the
    /// carrier it made (or makes) after its lease lapsed. Accepted and
    /// counted late; the node is the owner again, for the delivery.
    fn shipped_from_fence(&mut self, m: &pb::ReportMilestone) -> Result<(), Reject> {
        let milestone = pb::Milestone::try_from(m.milestone).unwrap_or(pb::Milestone::Unspecified);
        if milestone != pb::Milestone::Shipped {
            let fence = self.order.fence.as_ref().map(|f| f.until_ms).unwrap_or(0);
            return rej(
                Code::MilestoneOutOfOrder,
                format!(
                    "order {} is fenced for {} until {fence}: it can only report shipped, or release the order to confirm it did not ship",
                    self.order.order_id, self.signer
                ),
            );
        }
        if m.price_version != 0 {
            self.quote(m.price_version, m.total)?;
        }
        let signer = self.signer;
        // The lapse already took the order off its open orders.
        let s = self.stats_mut(signer);
        s.shipped += 1;
        s.late_shipments += 1;
        self.order.fence = None;
        self.order.owner = Some(signer.to_string());
        self.order.carrier = m.carrier.clone();
        self.order.tracking_id = m.tracking_id.clone();
        self.order.status = OrderStatus::Shipped;
        self.hand_over(m)
    }

    pub(super) fn exception(&mut self, e: &pb::ReportException) -> Result<(), Reject> {
        self.not_cancelled()?;
        let is_owner = self.order.owner.as_deref() == Some(self.signer);
        if !is_owner && self.order.registered_by != self.signer {
            return rej(
                Code::NotEntitled,
                format!(
                    "only the owner ({}) or the registering channel ({}) report exceptions on order {}",
                    self.order.owner.as_deref().unwrap_or("nobody"),
                    self.order.registered_by,
                    self.order.order_id
                ),
            );
        }
        let Some(kind) = Exception::from_pb(e.kind) else {
            return rej(Code::Malformed, "exception kind is not set".into());
        };
        self.order
            .exceptions
            .push((kind.as_str().into(), self.signer.to_string(), self.seq));
        Ok(())
    }
}
