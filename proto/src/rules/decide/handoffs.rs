//! Handoffs: the owner offers the order to another node, which accepts (if
//! eligible, becoming owner and custodian with a fresh lease, possibly noting
//! damage) or declines; an offer not answered in time expires.

use super::super::state::{EventKind, Offer};
use super::super::{Code, Exception, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    /// The pending offer, if it has not expired.
    pub(super) fn live_offer(&self) -> Option<&Offer> {
        self.order
            .offer
            .as_ref()
            .filter(|o| self.now <= o.expires_ms)
    }

    pub(super) fn offer(&mut self, h: &pb::OfferHandoff) -> Result<(), Reject> {
        self.owner_only()?;
        self.leased()?;
        if let Some(o) = self.live_offer() {
            return rej(
                Code::OfferPending,
                format!(
                    "order {} is already offered to {} (entry {}, expires at {})",
                    self.order.order_id, o.to, o.offer_seq, o.expires_ms
                ),
            );
        }
        if h.to == self.signer {
            return rej(
                Code::HandoffToSelf,
                format!("{} already owns the order", h.to),
            );
        }
        match self.view.party(&h.to) {
            None => {
                return rej(
                    Code::UnknownParty,
                    format!("party {} is not enrolled", h.to),
                )
            }
            Some(p) if p.role != pb::Role::Node as i32 => {
                return rej(
                    Code::NotANode,
                    format!("party {} is not a fulfillment node", h.to),
                )
            }
            Some(_) => {}
        }
        self.order.offer = Some(Offer {
            to: h.to.clone(),
            offer_seq: self.seq,
            expires_ms: self.now.saturating_add(h.expires_in_ms),
        });
        Ok(())
    }

    /// The offer the receiver answers: it must be addressed to the signer,
    /// be the one named and not have expired.
    pub(super) fn answered_offer(&self, offer_seq: u64) -> Result<Offer, Reject> {
        let id = &self.order.order_id;
        let Some(offer) = self.order.offer.clone() else {
            return rej(
                Code::NoOffer,
                format!("order {id} has no pending handoff offer"),
            );
        };
        if offer.to != self.signer {
            return rej(
                Code::NotOfferedToSigner,
                format!("order {id} is offered to {}, not {}", offer.to, self.signer),
            );
        }
        if offer.offer_seq != offer_seq {
            return rej(
                Code::OfferMismatch,
                format!(
                    "the pending offer of order {id} is entry {}, not {offer_seq}",
                    offer.offer_seq
                ),
            );
        }
        if self.now > offer.expires_ms {
            return rej(
                Code::OfferExpired,
                format!(
                    "the offer of order {id} (entry {}) expired at {}",
                    offer.offer_seq, offer.expires_ms
                ),
            );
        }
        Ok(offer)
    }

    pub(super) fn accept(&mut self, a: &pb::AcceptHandoff) -> Result<(), Reject> {
        self.answered_offer(a.offer_seq)?;
        self.leased()?;
        let signer = self.signer;
        let profile = self.eligible(signer)?;
        let sender = self.order.owner.clone().unwrap_or_default();
        {
            let s = self.stats_mut(&sender);
            s.open_orders = s.open_orders.saturating_sub(1);
            s.handoffs_out += 1;
        }
        self.take_on(signer, &profile);
        self.stats_mut(signer).handoffs_in += 1;
        self.event(EventKind::HandedOff {
            from: sender,
            to: signer.to_string(),
            damaged: a.damaged,
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        if a.damaged {
            self.order.exceptions.push((
                Exception::DamageNotedAtHandoff.as_str().into(),
                signer.to_string(),
                self.seq,
            ));
        }
        Ok(())
    }

    pub(super) fn decline(&mut self, d: &pb::DeclineHandoff) -> Result<(), Reject> {
        self.answered_offer(d.offer_seq)?;
        self.order.offer = None;
        Ok(())
    }
}
