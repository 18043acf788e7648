//! The reference broker (rules version 3): makes a sourcing decision for an
//! order from what the cluster says about each candidate node — its
//! enrolment, its profile in force and its counters — scoring the eligible
//! ones by distance to the destination region, headroom and health.
//!
//! Eligibility is computed by the ledger's own rules
//! ([`arbor_proto::rules::sourcing::check_candidate`]), so a decision made
//! from fresh reads is the one the rules recompute; reads that go stale
//! before the decision is committed are rejected (`eligibility_mismatch`,
//! `trigger_mismatch`) and the broker decides again.
//!
//! The score, policy [`POLICY`] version [`POLICY_VERSION`], is, for an
//! eligible candidate:
//!
//! ```text
//! score = 100 * min(headroom, 50) - 1000 * distance + health
//! ```
//!
//! - `headroom`: capacity left (max open orders less open orders), which
//!   the rules recompute and check;
//! - `distance`: from a [`Distance`] (the default: the position of the
//!   destination region in the node's profile regions, which a node lists
//!   nearest first — 0 for its home region);
//! - `health`: from a [`Health`] (the default, [`NeutralHealth`], is 0 for
//!   every node: it changes no ranking); [`Candidates::ledger_health`]
//!   gives the ledger's own health fold (`(health_score - 1000) / 2`, 0 for
//!   a clean record down to -500), which `arbor order source` uses.
//!
//! An ineligible candidate scores 0. The highest score wins; ties go to the
//! smallest node id. A node that declined this order's assignment before
//! (the order's view lists its declines under rules version 4) is listed
//! with its eligibility and score, since the rules of version 4 reject a
//! decision that omits an eligible node, but not selected: its candidate's
//! `basis` says so. [`Candidates::read_all`] lists every node with a
//! profile, as version 4 requires.

use std::collections::BTreeMap;

use arbor_proto::pb;
use arbor_proto::rules::sourcing::{check_candidate, order_for_sourcing, Trigger, HEADROOM};
use arbor_proto::rules::{ClusterConfig, Membership, NodeStats, Order, Party, Profile, StateView};

use crate::{Client, ClientError};

/// The policy name decisions name.
pub const POLICY: &str = "reference";
/// Its version.
pub const POLICY_VERSION: u32 = 1;
/// How long the selected node has to answer, by default: 5 minutes.
pub const DEFAULT_OFFER_MS: u64 = 5 * 60_000;

/// A node's health score for the broker: higher is better. The neutral
/// default is 0.
pub trait Health {
    fn health(&self, node: &str) -> i64;
}

/// Health 0 for every node.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeutralHealth;

impl Health for NeutralHealth {
    fn health(&self, _node: &str) -> i64 {
        0
    }
}

impl<F: Fn(&str) -> i64> Health for F {
    fn health(&self, node: &str) -> i64 {
        self(node)
    }
}

/// How far a node is from a destination region (0: its home region).
pub trait Distance {
    fn distance(&self, profile: &Profile, region: &str) -> i64;
}

/// The position of the region in the node's profile regions (listed
/// nearest first); 0 when it lists none of them (it is then ineligible).
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionOrder;

impl Distance for RegionOrder {
    fn distance(&self, profile: &Profile, region: &str) -> i64 {
        profile
            .regions
            .iter()
            .position(|r| r == region)
            .unwrap_or(0) as i64
    }
}

/// What the cluster says about the candidates: their enrolment, profile in
/// force and counters.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    parties: BTreeMap<String, Party>,
    profiles: BTreeMap<String, Profile>,
    stats: BTreeMap<String, NodeStats>,
    nodes: Vec<String>,
}

impl Candidates {
    /// Reads each node's party, profile and counters from the cluster (a
    /// node that is not enrolled, or has no profile, is listed ineligible).
    pub async fn read(client: &Client, nodes: &[String]) -> Result<Candidates, ClientError> {
        let mut c = Candidates::default();
        for node in nodes {
            if c.nodes.contains(node) {
                continue;
            }
            c.nodes.push(node.clone());
            match client.get_party(node).await {
                Ok(p) => {
                    c.parties.insert(node.clone(), party_from_view(&p));
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(e),
            }
            match client.get_profile(node).await {
                Ok(v) => {
                    c.profiles.insert(node.clone(), profile_from_view(&v));
                }
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e),
            }
            match client.node_stats(node).await {
                Ok(s) => {
                    c.stats.insert(node.clone(), stats_from_view(&s));
                }
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(c)
    }

    /// `first` (in that order, listed even without a profile: ineligible),
    /// then every other node with a profile in force, in id order (rules
    /// version 4: a decision lists every eligible node), each with its
    /// party, profile and counters.
    pub async fn read_all(client: &Client, first: &[String]) -> Result<Candidates, ClientError> {
        let profiles = client.list_profiles().await?;
        let mut nodes: Vec<String> = Vec::new();
        for n in first.iter().chain(profiles.iter().map(|p| &p.node)) {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        let mut c = Candidates::default();
        for p in &profiles {
            c.profiles.insert(p.node.clone(), profile_from_view(p));
        }
        for node in &nodes {
            c.nodes.push(node.clone());
            match client.get_party(node).await {
                Ok(p) => {
                    c.parties.insert(node.clone(), party_from_view(&p));
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(e),
            }
            if !c.profiles.contains_key(node) {
                match client.get_profile(node).await {
                    Ok(v) => {
                        c.profiles.insert(node.clone(), profile_from_view(&v));
                    }
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            match client.node_stats(node).await {
                Ok(s) => {
                    c.stats.insert(node.clone(), stats_from_view(&s));
                }
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(c)
    }

    /// The nodes listed, in the order they are listed.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Candidates from views already read (for tests and offline use).
    pub fn from_views(
        nodes: &[String],
        parties: &[pb::PartyView],
        profiles: &[pb::ProfileView],
        stats: &[pb::NodeStatsView],
    ) -> Candidates {
        let mut c = Candidates {
            nodes: Vec::new(),
            ..Default::default()
        };
        for n in nodes {
            if !c.nodes.contains(n) {
                c.nodes.push(n.clone());
            }
        }
        for p in parties {
            c.parties.insert(p.party_id.clone(), party_from_view(p));
        }
        for p in profiles {
            c.profiles.insert(p.node.clone(), profile_from_view(p));
        }
        for s in stats {
            c.stats.insert(s.node.clone(), stats_from_view(s));
        }
        c
    }
}

impl StateView for Candidates {
    fn party(&self, party_id: &str) -> Option<Party> {
        self.parties.get(party_id).cloned()
    }
    fn order(&self, _: &str) -> Option<Order> {
        None
    }
    fn order_by_ref(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn party_by_key(&self, _: &[u8]) -> Option<String> {
        None
    }
    fn has_genesis(&self) -> bool {
        true
    }
    fn profile(&self, node: &str) -> Option<Profile> {
        self.profiles.get(node).cloned()
    }
    fn stats(&self, node: &str) -> Option<NodeStats> {
        self.stats.get(node).cloned()
    }
    fn config(&self) -> Option<ClusterConfig> {
        None
    }
    fn membership(&self) -> Option<Membership> {
        None
    }
    fn profiled_nodes(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }
}

/// Why the broker made no decision.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("order {order_id} awaits no sourcing decision (status {status}{assigned})")]
    NotAwaiting {
        order_id: String,
        status: String,
        assigned: String,
    },
    #[error("no candidate is eligible for order {order_id}: {why}")]
    NoEligible { order_id: String, why: String },
    #[error("a sourcing decision lists 1 to {max} candidates; {got} were given")]
    Candidates { got: usize, max: usize },
}

/// The reference broker, with its health and distance inputs.
#[derive(Clone, Debug)]
pub struct ReferenceBroker<H = NeutralHealth, D = RegionOrder> {
    pub health: H,
    pub distance: D,
    /// The assignment offer's lifetime.
    pub expires_in_ms: u64,
}

impl Default for ReferenceBroker {
    fn default() -> Self {
        ReferenceBroker {
            health: NeutralHealth,
            distance: RegionOrder,
            expires_in_ms: DEFAULT_OFFER_MS,
        }
    }
}

impl<H: Health, D: Distance> ReferenceBroker<H, D> {
    /// A broker taking its health scores from `health`.
    pub fn with_health<H2: Health>(self, health: H2) -> ReferenceBroker<H2, D> {
        ReferenceBroker {
            health,
            distance: self.distance,
            expires_in_ms: self.expires_in_ms,
        }
    }

    /// The decision for `order` (as the cluster serves it now) among
    /// `candidates`: its trigger is the one the order's view says it awaits.
    pub fn decide(
        &self,
        order: &pb::OrderView,
        candidates: &Candidates,
    ) -> Result<pb::SourceOrder, BrokerError> {
        let n = candidates.nodes.len();
        let max = arbor_proto::rules::sourcing::MAX_CANDIDATES;
        if n == 0 || n > max {
            return Err(BrokerError::Candidates { got: n, max });
        }
        let Some(trigger) = Trigger::parse(&order.awaiting_trigger) else {
            return Err(BrokerError::NotAwaiting {
                order_id: order.order_id.clone(),
                status: order.status.clone(),
                assigned: order
                    .assignment
                    .as_ref()
                    .map(|a| format!(", offered to {} by decision {}", a.to, a.decision_seq))
                    .unwrap_or_default(),
            });
        };
        let o = order_for_sourcing(order);
        // Rules version 4: the nodes that declined this order are listed
        // (as the rules require every eligible node) but not selected.
        let declined = |node: &str| {
            order
                .sourcing_declines
                .iter()
                .rev()
                .find(|d| d.node == node)
                .map(|d| d.seq)
        };
        let mut listed = Vec::new();
        for node in &candidates.nodes {
            let open = candidates.stats(node).unwrap_or_default().open_orders;
            let check = check_candidate(candidates, node, &o, open);
            let eligible = check.ineligible.is_empty();
            let distance = candidates
                .profile(node)
                .map(|p| self.distance.distance(&p, &o.destination_region))
                .unwrap_or(0);
            let health = self.health.health(node);
            let score = if eligible {
                100 * check.headroom.min(50) - 1000 * distance + health
            } else {
                0
            };
            let component = |name: &str, value: i64| pb::ScoreComponent {
                name: name.to_string(),
                value,
            };
            listed.push(pb::SourcingCandidate {
                node: node.clone(),
                profile_version: check.profile_version,
                eligible,
                ineligible: check.ineligible.to_string(),
                score,
                components: vec![
                    component("distance", distance),
                    component(HEADROOM, check.headroom),
                    component("health", health),
                ],
                basis: match declined(node) {
                    Some(seq) if eligible => {
                        format!("declined this order at entry {seq}: not selected")
                    }
                    _ => String::new(),
                },
            });
        }
        let best = listed
            .iter()
            .filter(|c| c.eligible && declined(&c.node).is_none())
            .max_by(|a, b| a.score.cmp(&b.score).then_with(|| b.node.cmp(&a.node)));
        let Some(best) = best else {
            return Err(BrokerError::NoEligible {
                order_id: order.order_id.clone(),
                why: listed
                    .iter()
                    .map(|c| match (c.eligible, declined(&c.node)) {
                        (true, Some(seq)) => format!("{} declined at entry {seq}", c.node),
                        _ => format!("{} {}", c.node, c.ineligible),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        Ok(pb::SourceOrder {
            order_id: order.order_id.clone(),
            trigger: trigger.to_pb() as i32,
            trigger_seq: order.awaiting_trigger_seq,
            policy: POLICY.to_string(),
            policy_version: POLICY_VERSION,
            selected: best.node.clone(),
            candidates: listed,
            expires_in_ms: self.expires_in_ms,
        })
    }
}

fn not_found(e: &ClientError) -> bool {
    e.code() == Some(tonic::Code::NotFound)
}

fn party_from_view(p: &pb::PartyView) -> Party {
    Party {
        party_id: p.party_id.clone(),
        role: p.role,
        kind: p.kind,
        public_key: p.public_key.clone(),
        enrolled_seq: p.enrolled_seq,
        key_seq: p.key_seq,
        revoked: p.revoked,
        channel_names: p.channel_names.clone(),
    }
}

fn profile_from_view(v: &pb::ProfileView) -> Profile {
    let p = v.profile.clone().unwrap_or_default();
    Profile {
        node: v.node.clone(),
        version: v.version,
        published_seq: v.published_seq,
        regions: p.regions,
        max_open_orders: p.max_open_orders,
        dispatch_time_ms: p.dispatch_time_ms,
        handles_returns: p.handles_returns,
        cold_chain: p.cold_chain,
        hazmat: p.hazmat,
        categories: p.categories,
    }
}

fn stats_from_view(s: &pb::NodeStatsView) -> NodeStats {
    NodeStats {
        open_orders: s.open_orders,
        health: s
            .health
            .as_ref()
            .map(arbor_proto::rules::HealthCounters::from_pb)
            .unwrap_or_default(),
        ..NodeStats::default()
    }
}

/// Health from the ledger's own fold ([`arbor_proto::rules::health_score`],
/// 0 to 1000 from each candidate's counters as read), as the broker's
/// health component `(score - 1000) / 2`: a node with a clean record (or no
/// record yet) adds 0, one at score 0 loses 500, half of one step of
/// region distance.
#[derive(Clone, Debug, Default)]
pub struct LedgerHealth(BTreeMap<String, i64>);

impl Health for LedgerHealth {
    fn health(&self, node: &str) -> i64 {
        self.0.get(node).copied().unwrap_or(0)
    }
}

impl Candidates {
    /// The candidates' health as folded by the ledger, for
    /// [`ReferenceBroker::with_health`].
    pub fn ledger_health(&self) -> LedgerHealth {
        LedgerHealth(
            self.stats
                .iter()
                .map(|(node, s)| {
                    let score = i64::from(arbor_proto::rules::health_score(&s.health));
                    (node.clone(), (score - 1000) / 2)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(id: &str, role: pb::Role) -> pb::PartyView {
        pb::PartyView {
            party_id: id.into(),
            role: role as i32,
            ..Default::default()
        }
    }

    fn profile(node: &str, version: u64, regions: &[&str], max: u32) -> pb::ProfileView {
        pb::ProfileView {
            node: node.into(),
            version,
            published_seq: 1,
            profile: Some(pb::PublishProfile {
                regions: regions.iter().map(|r| r.to_string()).collect(),
                max_open_orders: max,
                dispatch_time_ms: 3_600_000,
                ..Default::default()
            }),
        }
    }

    fn order() -> pb::OrderView {
        pb::OrderView {
            order_id: "o1".into(),
            destination_region: "cn-sh".into(),
            status: "open".into(),
            sourcing_mode: "brokered".into(),
            awaiting_trigger: "declined".into(),
            awaiting_trigger_seq: 9,
            price_version: 1,
            ..Default::default()
        }
    }

    fn nodes(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_nearest_eligible_node_with_room_and_lists_every_candidate() {
        let c = Candidates::from_views(
            &nodes(&["far", "near", "full", "bj", "ghost", "shop"]),
            &[
                party("far", pb::Role::Node),
                party("near", pb::Role::Node),
                party("full", pb::Role::Node),
                party("bj", pb::Role::Node),
                party("shop", pb::Role::Channel),
            ],
            &[
                profile("far", 2, &["cn-bj", "cn-sh"], 10),
                profile("near", 1, &["cn-sh"], 3),
                profile("full", 1, &["cn-sh"], 1),
                profile("bj", 4, &["cn-bj"], 10),
            ],
            &[pb::NodeStatsView {
                node: "full".into(),
                open_orders: 1,
                ..Default::default()
            }],
        );
        let d = ReferenceBroker::default().decide(&order(), &c).unwrap();
        assert_eq!(
            (d.trigger, d.trigger_seq),
            (pb::SourcingTrigger::Declined as i32, 9)
        );
        assert_eq!(
            (d.policy.as_str(), d.policy_version),
            (POLICY, POLICY_VERSION)
        );
        let why: Vec<_> = d
            .candidates
            .iter()
            .map(|c| (c.node.as_str(), c.profile_version, c.ineligible.as_str()))
            .collect();
        assert_eq!(
            why,
            vec![
                ("far", 2, ""),
                ("near", 1, ""),
                ("full", 1, "at_capacity"),
                ("bj", 4, "region_not_served"),
                ("ghost", 0, "unknown_party"),
                ("shop", 0, "not_a_node"),
            ]
        );
        // far: 100*10 - 1000 = 0; near: 100*3 = 300.
        assert_eq!(d.selected, "near");
        assert_eq!(d.candidates[0].score, 0);
        assert_eq!(d.candidates[1].score, 300);
    }

    #[test]
    fn ledger_health_follows_the_counters_a_node_stats_view_carries() {
        let stats = |node: &str, on_time: u64, lapses: u64| pb::NodeStatsView {
            node: node.into(),
            health: Some(pb::HealthView {
                shipped: on_time,
                on_time,
                lapses,
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let c = Candidates::from_views(&nodes, &[], &[], &[stats("a", 8, 0), stats("b", 0, 8)]);
        let h = c.ledger_health();
        // A clean record and no record both add nothing; lapses cost.
        assert_eq!(h.health("a"), 0);
        assert_eq!(h.health("c"), 0);
        // score = 1000 * 2 / (2 + 8) = 200, so (200 - 1000) / 2.
        assert_eq!(h.health("b"), -400);
    }

    #[test]
    fn health_is_an_input_and_neutral_by_default() {
        let c = Candidates::from_views(
            &nodes(&["a", "b"]),
            &[party("a", pb::Role::Node), party("b", pb::Role::Node)],
            &[
                profile("a", 1, &["cn-sh"], 5),
                profile("b", 1, &["cn-sh"], 5),
            ],
            &[],
        );
        // A tie goes to the smallest node id.
        let d = ReferenceBroker::default().decide(&order(), &c).unwrap();
        assert_eq!(d.selected, "a");
        let health = |n: &str| if n == "b" { 250 } else { -250 };
        let d = ReferenceBroker::default()
            .with_health(health)
            .decide(&order(), &c)
            .unwrap();
        assert_eq!(d.selected, "b");
        let h = d.candidates[1]
            .components
            .iter()
            .find(|k| k.name == "health");
        assert_eq!(h.map(|k| k.value), Some(250));
    }

    #[test]
    fn a_node_that_declined_the_order_is_listed_but_not_selected() {
        let c = Candidates::from_views(
            &nodes(&["a", "b"]),
            &[party("a", pb::Role::Node), party("b", pb::Role::Node)],
            &[
                profile("a", 1, &["cn-sh"], 5),
                profile("b", 1, &["cn-bj", "cn-sh"], 5),
            ],
            &[],
        );
        // a scores higher (nearer) but declined at entry 9.
        let mut o = order();
        o.sourcing_declines.push(pb::SourcingDecline {
            seq: 9,
            node: "a".into(),
            shortage: false,
        });
        let d = ReferenceBroker::default().decide(&o, &c).unwrap();
        assert_eq!(d.selected, "b");
        assert!(d.candidates[0].eligible);
        assert_eq!(
            d.candidates[0].basis,
            "declined this order at entry 9: not selected"
        );
        assert_eq!(d.candidates[1].basis, "");
        // When every eligible node declined, no decision, and it says why.
        o.sourcing_declines.push(pb::SourcingDecline {
            seq: 12,
            node: "b".into(),
            shortage: true,
        });
        let e = ReferenceBroker::default().decide(&o, &c).unwrap_err();
        assert!(e.to_string().contains("b declined at entry 12"), "{e}");
        // Without declines, a wins.
        let d = ReferenceBroker::default().decide(&order(), &c).unwrap();
        assert_eq!(d.selected, "a");
    }

    #[test]
    fn no_decision_without_a_trigger_or_an_eligible_candidate() {
        let c = Candidates::from_views(
            &nodes(&["bj"]),
            &[party("bj", pb::Role::Node)],
            &[profile("bj", 1, &["cn-bj"], 5)],
            &[],
        );
        let e = ReferenceBroker::default().decide(&order(), &c).unwrap_err();
        assert!(matches!(e, BrokerError::NoEligible { .. }), "{e}");
        let mut owned = order();
        owned.awaiting_trigger.clear();
        owned.status = "claimed".into();
        let e = ReferenceBroker::default().decide(&owned, &c).unwrap_err();
        assert!(matches!(e, BrokerError::NotAwaiting { .. }), "{e}");
        let none = Candidates::default();
        let e = ReferenceBroker::default()
            .decide(&order(), &none)
            .unwrap_err();
        assert!(matches!(e, BrokerError::Candidates { got: 0, .. }), "{e}");
    }
}
