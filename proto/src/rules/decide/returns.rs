//! Returns: the registering channel requests the return of a delivered
//! order, a node whose profile handles returns in the region claims it, and
//! receives it with a refund of at most what was paid.

use super::super::state::OrderStatus;
use super::super::{Code, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

impl<V: StateView> OnOrder<'_, V> {
    pub(super) fn request_return(&mut self) -> Result<(), Reject> {
        self.channel_only()?;
        if self.order.status != OrderStatus::Delivered {
            return rej(
                Code::NotDelivered,
                format!(
                    "order {} is {}; a return needs a delivered order",
                    self.order.order_id,
                    self.status()
                ),
            );
        }
        self.order.status = OrderStatus::ReturnRequested;
        Ok(())
    }

    pub(super) fn claim_return(&mut self) -> Result<(), Reject> {
        let id = &self.order.order_id;
        match self.order.status {
            OrderStatus::ReturnRequested => {}
            OrderStatus::ReturnClaimed | OrderStatus::Returned => {
                return rej(
                    Code::ReturnAlreadyClaimed,
                    format!(
                        "the return of order {id} is claimed by {}",
                        self.order.return_node
                    ),
                )
            }
            _ => {
                return rej(
                    Code::NoReturnRequested,
                    format!("order {id} is {}; no return is requested", self.status()),
                )
            }
        }
        let Some(p) = self.view.profile(self.signer) else {
            return rej(
                Code::NoProfile,
                format!(
                    "node {} has not published a capability profile",
                    self.signer
                ),
            );
        };
        if !p.handles_returns {
            return rej(
                Code::ReturnsNotHandled,
                format!(
                    "the profile v{} of node {} does not handle returns",
                    p.version, self.signer
                ),
            );
        }
        if !p.regions.contains(&self.order.destination_region) {
            return rej(
                Code::RegionNotServed,
                format!(
                    "the profile v{} of node {} serves {}, not {}",
                    p.version,
                    self.signer,
                    p.regions.join(", "),
                    self.order.destination_region
                ),
            );
        }
        self.order.status = OrderStatus::ReturnClaimed;
        self.order.return_node = self.signer.to_string();
        Ok(())
    }

    pub(super) fn receive_return(&mut self, r: &pb::ReceiveReturn) -> Result<(), Reject> {
        let id = &self.order.order_id;
        if self.order.status != OrderStatus::ReturnClaimed {
            return rej(
                Code::NoReturnClaimed,
                format!("order {id} is {}; no return is in progress", self.status()),
            );
        }
        if self.order.return_node != self.signer {
            return rej(
                Code::NotReturnNode,
                format!(
                    "the return of order {id} is claimed by {}, not {}",
                    self.order.return_node, self.signer
                ),
            );
        }
        if r.price_version != self.order.price_version {
            return rej(
                Code::PriceMismatch,
                format!(
                    "order {id} is at price version {} (total {} {}); the refund quoted version {}",
                    self.order.price_version,
                    self.order.total,
                    self.order.currency,
                    r.price_version
                ),
            );
        }
        if r.refund > self.order.total {
            return rej(
                Code::RefundExceedsPaid,
                format!(
                    "refund {} exceeds {} {} paid at price version {}",
                    r.refund, self.order.total, self.order.currency, self.order.price_version
                ),
            );
        }
        self.order.status = OrderStatus::Returned;
        self.order.refund = r.refund;
        Ok(())
    }
}
