//! The claim schedule of `arbor bench`: which node claims which order, and in
//! what order the claims are sent. Pure and seeded, so a run can be repeated.
//!
//! Every order gets one *primary* claim, by node `order % nodes`, sent in
//! order-id order. A share of all claims are *duplicates*: a different node
//! claiming an order that already has a primary claim. A duplicate is sent
//! shortly after its primary — within the next `in_flight` primaries — so the
//! two usually race inside the cluster at the same time. Whichever is decided
//! first wins; the other must be rejected `already_owned`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One claim to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Index of the order (`0..orders`).
    pub order: usize,
    /// Index of the claiming node (`0..nodes`).
    pub node: usize,
    /// A second node racing for an order that already has a claim.
    pub duplicate: bool,
}

/// How many duplicates make up `share` of all claims when there are `orders`
/// primaries: `orders * share / (1 - share)`, rounded.
pub fn duplicate_count(orders: usize, share: f64) -> usize {
    if share <= 0.0 {
        return 0;
    }
    (orders as f64 * share / (1.0 - share)).round() as usize
}

/// The claims in sending order. Needs `nodes >= 2` when `share > 0`.
pub fn schedule(
    orders: usize,
    nodes: usize,
    share: f64,
    in_flight: usize,
    seed: u64,
) -> Vec<Claim> {
    // Sort keys: primary `j` at `j * SPACING`, its duplicates a random distance
    // after it, up to `in_flight` primaries later.
    const SPACING: u64 = 1024;
    let mut rng = StdRng::seed_from_u64(seed);
    let dups = duplicate_count(orders, share);
    let mut keyed: Vec<(u64, Claim)> = Vec::with_capacity(orders + dups);
    for order in 0..orders {
        keyed.push((
            order as u64 * SPACING,
            Claim {
                order,
                node: order % nodes,
                duplicate: false,
            },
        ));
    }
    // Which orders get a duplicate: distinct orders while there are enough,
    // then round after round.
    let mut targets = Vec::with_capacity(dups);
    while targets.len() < dups {
        let take = (dups - targets.len()).min(orders);
        targets.extend(rand::seq::index::sample(&mut rng, orders, take));
    }
    let window = in_flight.max(1) as u64 * SPACING;
    for order in targets {
        let primary = order % nodes;
        let node = (primary + rng.gen_range(1..nodes)) % nodes;
        let key = order as u64 * SPACING + rng.gen_range(1..=window);
        keyed.push((
            key,
            Claim {
                order,
                node,
                duplicate: true,
            },
        ));
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// The nodes that claim preload order `j` of `orders`, in sending order:
/// its primary (`j % nodes`), then its share of `dups` duplicates spread
/// evenly over the orders, each from a node other than the primary. Needs
/// `nodes >= 2` when `dups > 0`.
pub fn preload_claimants(j: usize, orders: usize, nodes: usize, dups: usize) -> Vec<usize> {
    let primary = j % nodes;
    let mine = match ((j + 1) * dups).checked_div(orders) {
        Some(upto) => upto - j * dups / orders,
        None => 0,
    };
    let mut out = Vec::with_capacity(1 + mine);
    out.push(primary);
    for k in 0..mine {
        out.push((primary + 1 + k % (nodes - 1)) % nodes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_claims_spread_the_duplicates_over_other_nodes() {
        let (orders, nodes) = (1000, 8);
        let dups = duplicate_count(orders, 0.2);
        let mut total = 0;
        for j in 0..orders {
            let c = preload_claimants(j, orders, nodes, dups);
            assert_eq!(c[0], j % nodes, "the primary first");
            assert!(
                c.len() <= 2,
                "at most one duplicate per order at this share"
            );
            assert!(c[1..].iter().all(|&n| n != c[0] && n < nodes));
            total += c.len();
        }
        assert_eq!(total, orders + dups);
        // More duplicates than orders: several per order, none from the primary.
        let many: Vec<Vec<usize>> = (0..10).map(|j| preload_claimants(j, 10, 3, 40)).collect();
        assert_eq!(many.iter().map(Vec::len).sum::<usize>(), 50);
        assert!(many.iter().all(|c| c[1..].iter().all(|&n| n != c[0])));
        assert_eq!(preload_claimants(3, 10, 1, 0), vec![0]);
    }

    #[test]
    fn duplicate_share_is_of_all_claims() {
        assert_eq!(duplicate_count(20_000, 0.2), 5_000);
        assert_eq!(duplicate_count(100, 0.0), 0);
        assert_eq!(duplicate_count(100, 0.5), 100);
        assert_eq!(duplicate_count(100, 0.75), 300);
    }

    #[test]
    fn every_order_is_claimed_and_duplicates_race_a_different_node() {
        let (orders, nodes, in_flight) = (1000, 8, 16);
        let plan = schedule(orders, nodes, 0.2, in_flight, 7);
        assert_eq!(plan.len(), 1250);
        assert_eq!(plan.iter().filter(|c| c.duplicate).count(), 250);

        let mut primary_at = vec![usize::MAX; orders];
        for (i, c) in plan.iter().enumerate() {
            if !c.duplicate {
                assert_eq!(primary_at[c.order], usize::MAX, "two primaries");
                assert_eq!(c.node, c.order % nodes);
                primary_at[c.order] = i;
            }
        }
        assert!(primary_at.iter().all(|&i| i != usize::MAX));
        let mut seen = std::collections::HashSet::new();
        for (i, c) in plan.iter().enumerate().filter(|(_, c)| c.duplicate) {
            assert!(
                seen.insert(c.order),
                "one duplicate per order at this share"
            );
            assert_ne!(
                c.node,
                c.order % nodes,
                "a duplicate comes from another node"
            );
            let p = primary_at[c.order];
            assert!(i > p, "a duplicate follows its primary");
            // At most `in_flight` primaries (plus the duplicates among them) later.
            assert!(
                i - p <= 2 * in_flight,
                "duplicate {i} too far from primary {p}"
            );
        }
    }

    #[test]
    fn seeded_and_wraps_when_duplicates_outnumber_orders() {
        assert_eq!(schedule(50, 3, 0.2, 4, 1), schedule(50, 3, 0.2, 4, 1));
        assert_ne!(schedule(50, 3, 0.2, 4, 1), schedule(50, 3, 0.2, 4, 2));
        let plan = schedule(10, 2, 0.8, 4, 3);
        assert_eq!(plan.len(), 50);
        for c in plan.iter().filter(|c| c.duplicate) {
            assert_ne!(c.node, c.order % 2);
        }
        assert_eq!(schedule(10, 1, 0.0, 1, 0).len(), 10);
    }
}
