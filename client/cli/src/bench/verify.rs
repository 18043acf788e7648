//! The check after the claims: every order has exactly one owner, and it is
//! the node whose claim was acknowledged as accepted.

use arbor_client::pb;

/// What the benchmark saw for one order during the claims.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Party ids of the nodes whose claim was answered `accepted`.
    pub accepted_by: Vec<String>,
    /// Some claim of this order got no answer (its outcome is unknown).
    pub unanswered: bool,
}

/// The violation for one order, if any. `view` is the order as read back.
pub fn check_order(order_id: &str, view: &pb::OrderView, seen: &Seen) -> Option<String> {
    if seen.accepted_by.len() > 1 {
        return Some(format!(
            "order {order_id}: {} claims acknowledged as accepted ({})",
            seen.accepted_by.len(),
            seen.accepted_by.join(", ")
        ));
    }
    if view.owner.is_empty() || view.status != "claimed" {
        return Some(format!(
            "order {order_id} has no owner (status {:?})",
            view.status
        ));
    }
    match seen.accepted_by.first() {
        Some(node) if *node != view.owner => Some(format!(
            "order {order_id} is owned by {} but the accepted claim was {node}'s",
            view.owner
        )),
        // Owned although every claim was answered and none was accepted.
        None if !seen.unanswered => Some(format!(
            "order {order_id} is owned by {} but no claim was acknowledged as accepted",
            view.owner
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(owner: &str) -> pb::OrderView {
        pb::OrderView {
            order_id: "o-1".into(),
            status: if owner.is_empty() { "open" } else { "claimed" }.into(),
            owner: owner.into(),
            ..Default::default()
        }
    }

    fn seen(accepted: &[&str], unanswered: bool) -> Seen {
        Seen {
            accepted_by: accepted.iter().map(|s| s.to_string()).collect(),
            unanswered,
        }
    }

    #[test]
    fn one_owner_matching_the_acknowledged_claim_passes() {
        assert_eq!(
            check_order("o-1", &view("n-1"), &seen(&["n-1"], false)),
            None
        );
        // The accepted answer was lost: the owner cannot be cross-checked.
        assert_eq!(check_order("o-1", &view("n-2"), &seen(&[], true)), None);
    }

    #[test]
    fn violations_are_named() {
        let cases = [
            (view(""), seen(&[], true), "has no owner"),
            (view(""), seen(&["n-1"], false), "has no owner"),
            (
                view("n-2"),
                seen(&["n-1"], false),
                "accepted claim was n-1's",
            ),
            (
                view("n-1"),
                seen(&["n-1", "n-2"], false),
                "2 claims acknowledged",
            ),
            (view("n-1"), seen(&[], false), "no claim was acknowledged"),
        ];
        for (v, s, expect) in cases {
            let got = check_order("o-1", &v, &s).expect(expect);
            assert!(got.contains(expect), "{got}");
            assert!(got.contains("o-1"), "{got}");
        }
    }
}
