//! The records the rules keep: parties, profiles, node statistics, orders and
//! the cluster configuration fixed at genesis.

use serde::{Deserialize, Serialize};

pub use super::carriers::{Tender, TenderAcceptance};
use super::code::Grade;
use super::sourcing::Sourcing;
use crate::pb;

/// An enrolled party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub party_id: String,
    /// `pb::Role` as i32.
    pub role: i32,
    /// `pb::NodeKind` as i32.
    pub kind: i32,
    /// The key in force. Keys a party held before stay reserved to it.
    pub public_key: Vec<u8>,
    pub enrolled_seq: u64,
    /// The entry that set `public_key` (the enrolment or the last rotation).
    #[serde(default)]
    pub key_seq: u64,
    /// The key was revoked: nothing it signs is admitted until a rotation.
    #[serde(default)]
    pub revoked: bool,
    /// A channel's names for external references, as enrolled (empty: its
    /// own party id). See [`Party::may_use_channel`].
    #[serde(default)]
    pub channel_names: Vec<String>,
}

impl Party {
    pub fn to_pb(&self) -> pb::PartyView {
        pb::PartyView {
            party_id: self.party_id.clone(),
            role: self.role,
            kind: self.kind,
            public_key: self.public_key.clone(),
            enrolled_seq: self.enrolled_seq,
            revoked: self.revoked,
            key_seq: self.key_seq,
            channel_names: if self.role == pb::Role::Channel as i32 {
                self.reference_channels().map(str::to_string).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The channel names this party may register external references under:
    /// those its enrolment named, or its own party id when it named none.
    pub fn reference_channels(&self) -> impl Iterator<Item = &str> {
        let own = self
            .channel_names
            .is_empty()
            .then_some(self.party_id.as_str());
        self.channel_names.iter().map(String::as_str).chain(own)
    }

    /// Whether this party may register an external reference under `channel`.
    pub fn may_use_channel(&self, channel: &str) -> bool {
        self.reference_channels().any(|c| c == channel)
    }
}

/// What genesis fixed for the whole cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster_id: String,
    /// Added to the declared dispatch time to give a lease deadline.
    pub lease_grace_ms: u64,
    /// Operators whose key is not revoked (the last one cannot be revoked).
    pub active_operators: u64,
    /// The rules version in force (0, as in a ledger written before
    /// versions existed, is version 1): see [`ClusterConfig::rules`].
    #[serde(default)]
    pub rules_version: u32,
    /// The entry that set the rules version (genesis or a `SetRulesVersion`).
    #[serde(default)]
    pub rules_seq: u64,
    /// The fence of version 2 and later, as recorded (0: [`DEFAULT_FENCE_MS`]).
    #[serde(default)]
    pub fence_ms: u64,
    /// Rules version 3: the claim deadline of each dispute kind, as
    /// recorded (0s: the defaults; [`super::deadlines`]).
    #[serde(default)]
    pub claim_deadlines: super::deadlines::ClaimDeadlines,
}

/// The newest rules version this code knows; new clusters start at it.
pub const CURRENT_RULES_VERSION: u32 = 4;

/// The fence when genesis or `SetRulesVersion` names none: 2 h.
pub const DEFAULT_FENCE_MS: u64 = 2 * 3_600_000;

/// The longest fence genesis or `SetRulesVersion` may set: 30 days.
pub const MAX_FENCE_MS: u64 = 30 * 24 * 3_600_000;

impl ClusterConfig {
    /// The rules version in force: 1 (the rules as first written) until
    /// genesis or a `SetRulesVersion` names a later one.
    pub fn rules(&self) -> u32 {
        self.rules_version.max(1)
    }

    /// How long a lapsed order that was picked or packed stays fenced
    /// (version 2 and later).
    pub fn fence(&self) -> u64 {
        if self.fence_ms == 0 {
            DEFAULT_FENCE_MS
        } else {
            self.fence_ms
        }
    }
}

/// A replica of the desired membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub node_id: u64,
    /// Client API address (`HOST:PORT`).
    pub addr: String,
    /// Peer address (`HOST:PORT`, mutual TLS).
    pub peer_addr: String,
    /// The entry that added it (genesis or an `AddReplica`).
    pub added_seq: u64,
}

impl Replica {
    pub fn to_pb(&self) -> pb::ReplicaMember {
        pb::ReplicaMember {
            node_id: self.node_id,
            addr: self.addr.clone(),
            peer_addr: self.peer_addr.clone(),
        }
    }
}

/// The membership the ledger says the cluster should have: genesis's
/// members, then every accepted `AddReplica` and `RemoveReplica`. Every
/// replica in it is meant to be a voter; the leader moves raft's
/// membership towards it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub replicas: std::collections::BTreeMap<u64, Replica>,
    /// The entry that last changed it (0: genesis, or never recorded).
    pub changed_seq: u64,
}

/// A node's capability profile, as published (the latest version).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub node: String,
    pub version: u64,
    pub published_seq: u64,
    pub regions: Vec<String>,
    pub max_open_orders: u32,
    pub dispatch_time_ms: u64,
    pub handles_returns: bool,
    pub cold_chain: bool,
    pub hazmat: bool,
    pub categories: Vec<String>,
}

impl Profile {
    pub fn to_pb(&self) -> pb::ProfileView {
        pb::ProfileView {
            node: self.node.clone(),
            version: self.version,
            published_seq: self.published_seq,
            profile: Some(pb::PublishProfile {
                regions: self.regions.clone(),
                max_open_orders: self.max_open_orders,
                dispatch_time_ms: self.dispatch_time_ms,
                handles_returns: self.handles_returns,
                cold_chain: self.cold_chain,
                hazmat: self.hazmat,
                categories: self.categories.clone(),
            }),
        }
    }
}

/// Counters kept per node; `open_orders` is what capacity is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Orders this node owns that have not shipped (claimed or received by
    /// handoff). A lapsed lease is taken off when the lapse is recorded.
    pub open_orders: u64,
    pub claims: u64,
    pub releases: u64,
    pub lapses: u64,
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub shipped: u64,
    pub late_shipments: u64,
    pub delivered: u64,
    /// Fences that ran out on this node: it neither confirmed that a lapsed
    /// order it had picked or packed did not ship nor reported it shipped
    /// (rules version 2).
    #[serde(default)]
    pub fence_expiries: u64,
    /// The node's health counters, folded from the facts of every entry
    /// applied so far ([`super::health`]).
    #[serde(default)]
    pub health: super::health::HealthCounters,
    /// Rules version 3: assignment offers it accepted, declined, or let run out.
    #[serde(default)]
    pub assignments_accepted: u64,
    #[serde(default)]
    pub assignments_declined: u64,
    #[serde(default)]
    pub assignments_expired: u64,
}

impl NodeStats {
    pub fn to_pb(&self, node: &str, profile: Option<&Profile>) -> pb::NodeStatsView {
        pb::NodeStatsView {
            node: node.to_string(),
            open_orders: self.open_orders,
            capacity: profile.map(|p| p.max_open_orders).unwrap_or(0),
            claims: self.claims,
            releases: self.releases,
            lapses: self.lapses,
            handoffs_out: self.handoffs_out,
            handoffs_in: self.handoffs_in,
            shipped: self.shipped,
            late_shipments: self.late_shipments,
            delivered: self.delivered,
            profile_version: profile.map(|p| p.version).unwrap_or(0),
            fence_expiries: self.fence_expiries,
            health: Some(self.health.to_pb(0)),
            assignments_accepted: self.assignments_accepted,
            assignments_declined: self.assignments_declined,
            assignments_expired: self.assignments_expired,
        }
    }
}

/// Where an order is in its life. Milestones only move forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrderStatus {
    Open,
    Claimed,
    Picked,
    Packed,
    /// Rules version 2: lapsed while picked or packed, held for the old
    /// owner until its fence runs out ([`Order::fence`]).
    Fenced,
    Shipped,
    Delivered,
    Cancelled,
    ReturnRequested,
    ReturnClaimed,
    Returned,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::Claimed => "claimed",
            OrderStatus::Picked => "picked",
            OrderStatus::Packed => "packed",
            OrderStatus::Fenced => "fenced",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::ReturnRequested => "return_requested",
            OrderStatus::ReturnClaimed => "return_claimed",
            OrderStatus::Returned => "returned",
        }
    }

    pub const ALL: [OrderStatus; 11] = [
        OrderStatus::Open,
        OrderStatus::Claimed,
        OrderStatus::Picked,
        OrderStatus::Packed,
        OrderStatus::Fenced,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::ReturnRequested,
        OrderStatus::ReturnClaimed,
        OrderStatus::Returned,
    ];

    pub fn parse(s: &str) -> Option<OrderStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Owned and not yet handed to the carrier: a lease runs.
    pub fn is_leased(&self) -> bool {
        matches!(
            self,
            OrderStatus::Claimed | OrderStatus::Picked | OrderStatus::Packed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    pub cold_chain: bool,
    pub hazmat: bool,
    pub category: String,
}

/// The owner's lease: it lapses at `deadline_ms` unless the order shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// When the lease started (claim or accepted handoff), leader time.
    pub start_ms: u64,
    pub deadline_ms: u64,
    /// The owner's profile version in force when the lease started.
    pub profile_version: u64,
    pub dispatch_time_ms: u64,
}

/// Rules version 2: a lapsed order that its old owner had picked or packed,
/// held for it. The old owner confirms it did not ship (`ReleaseOrder`: the
/// order opens) or reports the hand-off to the carrier (`shipped`, counted
/// late); nobody else may claim it until `until_ms` has passed, and then
/// the expiry is recorded against the old owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The old owner (and still the custodian).
    pub node: String,
    /// What it had reported before the lapse: picked or packed.
    pub status: OrderStatus,
    /// The entry that recorded the lapse.
    pub lapsed_seq: u64,
    /// The lease deadline the order lapsed at: the fence starts there,
    /// whenever the lapse was recorded.
    pub from_ms: u64,
    /// `from_ms` plus the fence in force at the lapse.
    pub until_ms: u64,
}

/// A handoff offered and not yet accepted or declined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub to: String,
    pub offer_seq: u64,
    pub expires_ms: u64,
}

/// A fact about an order that the responsibility rules use, with the
/// entry it comes from (the evidence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A node claimed the order (custody and a lease start).
    Claimed {
        node: String,
        profile_version: u64,
        dispatch_time_ms: u64,
    },
    /// A countersigned handoff was accepted (custody and a lease start).
    HandedOff {
        from: String,
        to: String,
        damaged: bool,
        profile_version: u64,
        dispatch_time_ms: u64,
    },
    Released {
        node: String,
    },
    /// The owner's lease ran out (recorded by entry `seq`).
    Lapsed {
        node: String,
        deadline_ms: u64,
    },
    /// Handed to the carrier.
    Shipped {
        node: String,
        carrier: String,
        /// Rules version 4: the carrier is not an enrolled carrier and
        /// signed nothing: it carries as the node's agent, and the node
        /// stays the custodian until delivery.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        agent: bool,
    },
    Delivered {
        node: String,
        proof: bool,
    },
    Cancelled,
    /// A rejected command quoted another price (or amended a stale version).
    WrongPrice {
        party: String,
    },
    /// A rejected milestone reported by a node that did not own the order.
    MilestoneWithoutOwnership {
        party: String,
    },
    /// Rules version 2: the owner's lease ran out while the order was
    /// picked or packed; it is fenced for the owner, which keeps custody
    /// (recorded by entry `seq`). Counts as a lapse.
    Fenced {
        node: String,
        deadline_ms: u64,
        until_ms: u64,
    },
    /// The fenced old owner confirmed it did not ship: custody ends.
    FenceCleared {
        node: String,
    },
    /// The fence ran out with neither a confirmation nor a shipment: custody
    /// ends, and the fact stands against the old owner.
    FenceExpired {
        node: String,
        until_ms: u64,
    },
    /// Rules version 3: the owner tendered the order to an enrolled
    /// carrier; it keeps custody until the carrier signs.
    Tendered {
        node: String,
        carrier: String,
    },
    /// Rules version 3: the carrier signed the tender acceptance; custody
    /// passes to it.
    TenderAccepted {
        node: String,
        carrier: String,
        damaged: bool,
    },
    /// Rules version 3: a delivery proven by a carrier's signed scan or the
    /// recipient's one-time code; custody ends.
    DeliveryProven {
        by: String,
        grade: Grade,
    },
    /// Rules version 3: the channel or an operator took the order back from
    /// `node` (its owner, or the node an assignment offered it to): custody
    /// ends as with a release.
    Reassigned {
        node: String,
        by: String,
    },
}

/// A dispute opened on an order, and its ruling once resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// The entry that opened it (its id).
    pub seq: u64,
    /// lost, damaged, late, duplicate_processing, price_mismatch
    pub kind: String,
    pub incident_ms: u64,
    pub opened_by: String,
    pub ruling: Option<RulingRecord>,
    /// Rules version 2: the window's start, the goods last known good (0:
    /// no window, the dispute names the instant `incident_ms`).
    #[serde(default)]
    pub known_good_ms: u64,
    /// Rules version 4, lost: the parcels lost (0: the whole order).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parcels: u32,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl Dispute {
    /// The times the dispute is about: its window, or the instant.
    pub fn window(&self) -> (u64, u64) {
        if self.known_good_ms == 0 {
            (self.incident_ms, self.incident_ms)
        } else {
            (self.known_good_ms, self.incident_ms)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulingRecord {
    pub liable: String,
    pub rule: String,
    pub evidence: Vec<u64>,
    pub seq: u64,
}

/// An order as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    /// (channel, external id) pairs.
    pub external_refs: Vec<(String, String)>,
    pub lines: Vec<Line>,
    pub currency: String,
    pub total: i64,
    pub destination_region: String,
    pub requirements: Requirements,
    pub promised_delivery_ms: u64,
    pub price_version: u64,
    pub status: OrderStatus,
    /// The node responsible for fulfilling it (claimant or accepted receiver).
    pub owner: Option<String>,
    /// Who holds the goods: the owner until shipped, then the carrier.
    pub custodian: Option<String>,
    pub registered_by: String,
    pub registered_seq: u64,
    /// The entry that made the current owner the owner (claim or acceptance).
    pub claimed_seq: u64,
    pub lease: Option<Lease>,
    pub offer: Option<Offer>,
    /// Rules version 2: set while the order is [`OrderStatus::Fenced`].
    #[serde(default)]
    pub fence: Option<Fence>,
    pub carrier: String,
    pub tracking_id: String,
    pub proof_of_delivery: String,
    pub last_lapsed_owner: String,
    pub return_node: String,
    pub refund: i64,
    /// (kind, reporting party, entry) of every exception reported.
    pub exceptions: Vec<(String, String, u64)>,
    /// Custody and evidence facts, oldest first (see [`EventKind`]).
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub disputes: Vec<Dispute>,
    /// Rules version 3: the SLA terms the order was registered with (and
    /// when its clock started); `None` for orders registered earlier, whose
    /// late rule stays the one of their version ([`super::sla`]).
    #[serde(default)]
    pub sla: Option<super::sla::SlaTerms>,
    /// Rules version 3: how the order is sourced and its decisions (`None`
    /// for orders registered before).
    #[serde(default)]
    pub sourcing: Option<Sourcing>,
    /// The last ledger entry of this order (the head of its history links).
    pub last_seq: u64,
    /// Rules version 3: the tender to an enrolled carrier, if any.
    #[serde(default)]
    pub tender: Option<Tender>,
    /// Rules version 3: the SHA-256 of the one-time delivery code the
    /// channel registered (empty: none), and the entry that used it (0: unused).
    #[serde(default)]
    pub delivery_code_sha256: Vec<u8>,
    #[serde(default)]
    pub delivery_code_used_seq: u64,
    /// Rules version 3: the grade of the delivery's proof.
    #[serde(default)]
    pub delivery_grade: Option<Grade>,
}

impl Order {
    /// Whether the lease has run out at `now_ms` (and so the owner no longer owns it).
    pub fn lease_lapsed(&self, now_ms: u64) -> bool {
        self.status.is_leased() && self.lease.as_ref().is_some_and(|l| now_ms > l.deadline_ms)
    }

    /// Whether the order is fenced and its fence has run out at `now_ms`
    /// (claimable once that is recorded; rules version 2).
    pub fn fence_expired(&self, now_ms: u64) -> bool {
        self.status == OrderStatus::Fenced
            && self.fence.as_ref().is_some_and(|f| now_ms > f.until_ms)
    }

    /// Whether the owner's hold has run out at `now_ms`: its lease lapsed,
    /// or its fence expired. The leader's sweep records these
    /// (`RecordLapse`).
    pub fn hold_expired(&self, now_ms: u64) -> bool {
        self.lease_lapsed(now_ms) || self.fence_expired(now_ms)
    }

    /// When the hold on the order runs out: the lease deadline while a lease
    /// runs, the fence's end while fenced; `None` otherwise.
    pub fn hold_deadline(&self) -> Option<u64> {
        match (self.status, &self.lease, &self.fence) {
            (s, Some(l), _) if s.is_leased() => Some(l.deadline_ms),
            (OrderStatus::Fenced, _, Some(f)) => Some(f.until_ms),
            _ => None,
        }
    }

    /// Whether a claim at `now_ms` would find the order open, under the
    /// rules of `config` (the version in force decides whether a lapse of a
    /// picked or packed order fences it first).
    pub fn open_at(&self, now_ms: u64, config: &ClusterConfig) -> bool {
        match self.status {
            OrderStatus::Open => true,
            OrderStatus::Fenced => self.fence_expired(now_ms),
            OrderStatus::Picked | OrderStatus::Packed if config.rules() >= 2 => self
                .lease
                .as_ref()
                .is_some_and(|l| now_ms > l.deadline_ms.saturating_add(config.fence())),
            _ => self.lease_lapsed(now_ms),
        }
    }

    pub fn to_pb(&self, history: Vec<u64>, now_ms: u64) -> pb::OrderView {
        pb::OrderView {
            order_id: self.order_id.clone(),
            external_refs: self
                .external_refs
                .iter()
                .map(|(c, e)| pb::ExternalRef {
                    channel: c.clone(),
                    external_id: e.clone(),
                })
                .collect(),
            lines: lines_to_pb(&self.lines),
            currency: self.currency.clone(),
            total: self.total,
            destination_region: self.destination_region.clone(),
            price_version: self.price_version,
            status: self.status.as_str().to_string(),
            owner: self.owner.clone().unwrap_or_default(),
            registered_by: self.registered_by.clone(),
            registered_seq: self.registered_seq,
            claimed_seq: self.claimed_seq,
            history,
            requirements: Some(pb::Requirements {
                cold_chain: self.requirements.cold_chain,
                hazmat: self.requirements.hazmat,
                category: self.requirements.category.clone(),
            }),
            promised_delivery_ms: self.promised_delivery_ms,
            custodian: self.custodian.clone().unwrap_or_default(),
            lease_deadline_ms: match (&self.lease, self.status.is_leased()) {
                (Some(l), true) => l.deadline_ms,
                _ => 0,
            },
            lease_lapsed: self.lease_lapsed(now_ms),
            claim_profile_version: self.lease.as_ref().map(|l| l.profile_version).unwrap_or(0),
            offer: self.offer.as_ref().map(|o| pb::PendingOffer {
                to: o.to.clone(),
                offer_seq: o.offer_seq,
                expires_ms: o.expires_ms,
            }),
            carrier: self.carrier.clone(),
            tracking_id: self.tracking_id.clone(),
            proof_of_delivery: self.proof_of_delivery.clone(),
            last_lapsed_owner: self.last_lapsed_owner.clone(),
            return_node: self.return_node.clone(),
            refund: self.refund,
            exceptions: self
                .exceptions
                .iter()
                .map(|(k, by, seq)| format!("{k} by {by} at {seq}"))
                .collect(),
            disputes: self
                .disputes
                .iter()
                .map(|d| pb::DisputeView {
                    seq: d.seq,
                    kind: d.kind.clone(),
                    incident_ms: d.incident_ms,
                    opened_by: d.opened_by.clone(),
                    resolved: d.ruling.is_some(),
                    known_good_ms: d.known_good_ms,
                    parcels: d.parcels,
                    ruling: d.ruling.as_ref().map(|r| pb::Ruling {
                        liable: r.liable.clone(),
                        rule: r.rule.clone(),
                        evidence: r.evidence.clone(),
                        explanation: String::new(),
                        resolved_seq: r.seq,
                    }),
                })
                .collect(),
            fenced_node: self
                .fence_view()
                .map(|f| f.node.clone())
                .unwrap_or_default(),
            fence_until_ms: self.fence_view().map(|f| f.until_ms).unwrap_or(0),
            fence_expired: self.fence_expired(now_ms),
            tender_carrier: self
                .tender
                .as_ref()
                .map(|t| t.carrier.clone())
                .unwrap_or_default(),
            tender_seq: self.tender.as_ref().map(|t| t.seq).unwrap_or(0),
            tender_accepted_seq: self.acceptance().map(|a| a.seq).unwrap_or(0),
            tender_parcels: self.tender.as_ref().map(|t| t.parcels).unwrap_or(0),
            received_parcels: self.acceptance().map(|a| a.parcels).unwrap_or(0),
            received_weight_grams: self.acceptance().map(|a| a.weight_grams).unwrap_or(0),
            delivery_grade: self
                .delivery_grade
                .map(|g| g.as_str().to_string())
                .unwrap_or_default(),
            delivery_code_registered: !self.delivery_code_sha256.is_empty(),
            delivery_code_used_seq: self.delivery_code_used_seq,
            delivery_code_sha256: self.delivery_code_sha256.clone(),
            ship_by_ms: self.sla.as_ref().map(|t| t.ship_by_ms).unwrap_or(0),
            sourceable_ms: self.sla.as_ref().map(|t| t.sourceable_ms).unwrap_or(0),
            lease_fenced: false,
            claim_from_seq: 0,
            claim_from_ms: 0,
            claim_from_delivery: false,
            tender_expires_ms: self
                .tender
                .as_ref()
                .filter(|t| t.accepted.is_none())
                .map(|t| t.expires_ms)
                .unwrap_or(0),
            ..self.sourcing_view(now_ms)
        }
    }

    /// Rules version 3: the carrier's signed tender acceptance, if any.
    pub fn acceptance(&self) -> Option<&TenderAcceptance> {
        self.tender.as_ref().and_then(|t| t.accepted.as_ref())
    }

    fn fence_view(&self) -> Option<&Fence> {
        self.fence
            .as_ref()
            .filter(|_| self.status == OrderStatus::Fenced)
    }
}

pub fn lines_to_pb(lines: &[Line]) -> Vec<pb::OrderLine> {
    lines
        .iter()
        .map(|l| pb::OrderLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
        })
        .collect()
}

pub fn lines_from_pb(lines: &[pb::OrderLine]) -> Vec<Line> {
    lines
        .iter()
        .map(|l| Line {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
        })
        .collect()
}
