//! Capability profiles and eligibility: a node publishes what it serves
//! (regions, capacity, dispatch time, cold chain, hazmat, categories), and
//! only a node whose profile in force covers an order, with capacity left,
//! may take it on (claim it or accept it in a handoff).

use super::super::state::{Order, OrderStatus, Profile};
use super::super::{Code, Decision, Effect, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

pub(super) fn publish_profile(
    view: &impl StateView,
    signer: &str,
    p: &pb::PublishProfile,
    seq: u64,
) -> Decision {
    let version = view.profile(signer).map(|old| old.version).unwrap_or(0) + 1;
    Decision::accept(
        "",
        vec![Effect::PutProfile(Profile {
            node: signer.to_string(),
            version,
            published_seq: seq,
            regions: p.regions.clone(),
            max_open_orders: p.max_open_orders,
            dispatch_time_ms: p.dispatch_time_ms,
            handles_returns: p.handles_returns,
            cold_chain: p.cold_chain,
            hazmat: p.hazmat,
            categories: p.categories.clone(),
        })],
    )
}

impl<V: StateView> OnOrder<'_, V> {
    /// A node may take the order on (claim or receive it): its profile in
    /// force serves the region and every requirement, with capacity left.
    pub(super) fn eligible(&mut self, node: &str) -> Result<Profile, Reject> {
        let profile = check_eligible(self.view, node, &self.order)?;
        let open = self.stats_mut(node).open_orders;
        if open >= profile.max_open_orders as u64 {
            return rej(
                Code::AtCapacity,
                format!(
                    "node {node} has {open} open orders; its profile v{} allows {}",
                    profile.version, profile.max_open_orders
                ),
            );
        }
        Ok(profile)
    }
}

/// The profile checks of eligibility (capacity aside): the node has a
/// profile whose regions and capabilities cover the order.
pub fn check_eligible(view: &impl StateView, node: &str, order: &Order) -> Result<Profile, Reject> {
    let Some(p) = view.profile(node) else {
        return rej(
            Code::NoProfile,
            format!("node {node} has not published a capability profile"),
        );
    };
    let v = p.version;
    if !p.regions.contains(&order.destination_region) {
        return rej(
            Code::RegionNotServed,
            format!(
                "profile v{v} of node {node} serves {}, not the destination {}",
                p.regions.join(", "),
                order.destination_region
            ),
        );
    }
    let req = &order.requirements;
    if req.cold_chain && !p.cold_chain {
        return rej(
            Code::ColdChainRequired,
            format!(
                "order {} needs cold chain; profile v{v} of node {node} has none",
                order.order_id
            ),
        );
    }
    if req.hazmat && !p.hazmat {
        return rej(
            Code::HazmatRequired,
            format!(
                "order {} contains hazardous goods; profile v{v} of node {node} does not handle hazmat",
                order.order_id
            ),
        );
    }
    if !req.category.is_empty() && !p.categories.contains(&req.category) {
        return rej(
            Code::CategoryNotServed,
            format!(
                "order {} is category {}; profile v{v} of node {node} handles [{}]",
                order.order_id,
                req.category,
                p.categories.join(", ")
            ),
        );
    }
    Ok(p)
}

/// Whether `node` could claim `order` now: open (or lapsed), eligible by
/// profile, below capacity. For listings; the ledger decides.
pub fn claimable_by(view: &impl StateView, node: &str, order: &Order, now_ms: u64) -> bool {
    let config = view.config().unwrap_or_default();
    if !order.open_at(now_ms, &config) || order.status == OrderStatus::Cancelled {
        return false;
    }
    if !order.sourcing_allows_claim(node, now_ms, config.rules()) {
        return false;
    }
    let Ok(p) = check_eligible(view, node, order) else {
        return false;
    };
    let stats = view.stats(node).unwrap_or_default();
    stats.open_orders < p.max_open_orders as u64
}
