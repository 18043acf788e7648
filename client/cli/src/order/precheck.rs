//! Checking before signing: the order commands that would be rejected (and
//! so recorded against the signer as evidence) are caught on this side.
//!
//! The CLI reads the order, the parties the command names and the signer's
//! profile and counters, builds a [`StateView`] of them and asks the real
//! rules ([`arbor_proto::rules::decide`]) what they would decide. A
//! predicted rejection refuses locally (exit code 6) with the rules' own
//! reason, which names the expected value; `--force` signs and submits
//! anyway; `--dry-run` shows the command and the prediction and signs
//! nothing.
//!
//! The prediction is made from a linearizable read at this moment, so it
//! can be overtaken (another node claims first, a lease lapses): the
//! cluster's outcome is the one that counts.

use std::collections::BTreeMap;

use anyhow::Result;
use arbor_client::pb::command::Body;
use arbor_client::{pb, Client, ClientError};
use arbor_proto::rules::{
    self, ClusterConfig, Dispute, Lease, Membership, NodeStats, Offer, Order, OrderStatus, Party,
    Profile, Requirements, RulingRecord, StateView,
};
use clap::Args;
use prost::Message;
use serde_json::{json, Value};

use crate::decode::decode_signed;
use crate::exit::{CliError, Exit};
use crate::output::{render, Format, Reply};

/// `--force` and `--dry-run`, on every order command the CLI checks first.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct SignOpts {
    /// Sign and submit even when the pre-check predicts a rejection (the rejection is then recorded in the ledger, on purpose)
    #[arg(long)]
    pub force: bool,
    /// Show the command that would be signed and its predicted outcome; sign and send nothing (exit 0 if it would be accepted, 6 if rejected)
    #[arg(long, conflicts_with = "force")]
    pub dry_run: bool,
}

/// What the rules would decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub accepted: bool,
    pub code: String,
    pub message: String,
}

impl Prediction {
    fn json(&self) -> Value {
        json!({"accepted": self.accepted, "code": self.code, "message": self.message})
    }
}

/// The state a command is decided against, as read from the cluster.
#[derive(Clone, Default)]
pub struct Remote {
    pub order: Option<Order>,
    pub parties: BTreeMap<String, Party>,
    pub profiles: BTreeMap<String, Profile>,
    pub stats: BTreeMap<String, NodeStats>,
    /// The rules in force, as the cluster's status names them (`None`:
    /// version 1).
    pub config: Option<ClusterConfig>,
}

impl StateView for Remote {
    fn party(&self, party_id: &str) -> Option<Party> {
        self.parties.get(party_id).cloned()
    }
    fn order(&self, order_id: &str) -> Option<Order> {
        self.order.clone().filter(|o| o.order_id == order_id)
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
        self.config.clone()
    }
    fn membership(&self) -> Option<Membership> {
        None
    }
    fn profiled_nodes(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }
}

/// An order as the rules see it, from the view a replica serves. Only what
/// the rules decide on is carried (events and exceptions are not needed to
/// decide the commands checked here).
pub fn order_from_view(v: &pb::OrderView) -> Order {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let req = v.requirements.clone().unwrap_or_default();
    Order {
        sla: None,
        order_id: v.order_id.clone(),
        external_refs: v
            .external_refs
            .iter()
            .map(|r| (r.channel.clone(), r.external_id.clone()))
            .collect(),
        lines: rules::lines_from_pb(&v.lines),
        currency: v.currency.clone(),
        total: v.total,
        destination_region: v.destination_region.clone(),
        requirements: Requirements {
            cold_chain: req.cold_chain,
            hazmat: req.hazmat,
            category: req.category,
        },
        promised_delivery_ms: v.promised_delivery_ms,
        price_version: v.price_version,
        status: OrderStatus::parse(&v.status).unwrap_or(OrderStatus::Open),
        owner: some(&v.owner),
        custodian: some(&v.custodian),
        registered_by: v.registered_by.clone(),
        registered_seq: v.registered_seq,
        claimed_seq: v.claimed_seq,
        lease: (v.lease_deadline_ms != 0).then_some(Lease {
            start_ms: 0,
            deadline_ms: v.lease_deadline_ms,
            profile_version: v.claim_profile_version,
            dispatch_time_ms: 0,
        }),
        // The view names the fenced node and the fence's end, enough for
        // what a claim or a milestone is decided on.
        fence: (!v.fenced_node.is_empty()).then(|| rules::Fence {
            node: v.fenced_node.clone(),
            status: OrderStatus::Packed,
            lapsed_seq: 0,
            from_ms: 0,
            until_ms: v.fence_until_ms,
        }),
        offer: v.offer.as_ref().map(|o| Offer {
            to: o.to.clone(),
            offer_seq: o.offer_seq,
            expires_ms: o.expires_ms,
        }),
        carrier: v.carrier.clone(),
        tracking_id: v.tracking_id.clone(),
        proof_of_delivery: v.proof_of_delivery.clone(),
        last_lapsed_owner: v.last_lapsed_owner.clone(),
        return_node: v.return_node.clone(),
        refund: v.refund,
        exceptions: Vec::new(),
        // The one fact a check here reads: where the claim deadlines run
        // from (an OpenDispute under rules version 3).
        events: (v.claim_from_seq != 0)
            .then(|| rules::Event {
                seq: v.claim_from_seq,
                time_ms: v.claim_from_ms,
                kind: if v.claim_from_delivery {
                    rules::EventKind::Delivered {
                        node: String::new(),
                        proof: true,
                    }
                } else {
                    rules::EventKind::Shipped {
                        node: String::new(),
                        carrier: String::new(),
                        agent: false,
                    }
                },
            })
            .into_iter()
            .collect(),
        disputes: v
            .disputes
            .iter()
            .map(|d| Dispute {
                seq: d.seq,
                kind: d.kind.clone(),
                incident_ms: d.incident_ms,
                known_good_ms: d.known_good_ms,
                parcels: d.parcels,
                opened_by: d.opened_by.clone(),
                ruling: d.ruling.as_ref().map(|r| RulingRecord {
                    liable: r.liable.clone(),
                    rule: r.rule.clone(),
                    evidence: r.evidence.clone(),
                    seq: r.resolved_seq,
                }),
            })
            .collect(),
        // Rules version 3: the mode and the live assignment are what a
        // claim is decided on.
        sourcing: rules::sourcing::Sourcing::from_view(v),
        last_seq: v.history.last().copied().unwrap_or(0),
        // Rules version 3: the tender and its acceptance as the view shows them.
        tender: (v.tender_seq != 0).then(|| rules::Tender {
            carrier: v.tender_carrier.clone(),
            node: v.owner.clone(),
            seq: v.tender_seq,
            parcels: v.tender_parcels,
            // Rules version 4: the pending tender's deadline (`tender_expired`).
            expires_ms: v.tender_expires_ms,
            accepted: (v.tender_accepted_seq != 0).then(|| rules::TenderAcceptance {
                seq: v.tender_accepted_seq,
                tracking_id: v.tracking_id.clone(),
                parcels: v.received_parcels,
                weight_grams: v.received_weight_grams,
                damaged: false,
            }),
        }),
        delivery_code_sha256: v.delivery_code_sha256.clone(),
        delivery_code_used_seq: v.delivery_code_used_seq,
        delivery_grade: rules::Grade::parse(&v.delivery_grade),
    }
}

fn party_from_view(v: pb::PartyView) -> Party {
    Party {
        party_id: v.party_id,
        role: v.role,
        kind: v.kind,
        public_key: v.public_key,
        enrolled_seq: v.enrolled_seq,
        key_seq: v.key_seq,
        revoked: v.revoked,
        channel_names: v.channel_names,
    }
}

fn profile_from_view(v: pb::ProfileView) -> Profile {
    let p = v.profile.unwrap_or_default();
    Profile {
        node: v.node,
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

/// `None` when the server says the thing does not exist.
fn found<T>(r: Result<T, ClientError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Status {
            code: tonic::Code::NotFound,
            ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An order by id, `None` when it is not registered.
pub async fn read_order(client: &Client, order_id: &str) -> Result<Option<pb::OrderView>> {
    found(client.get_order(order_id).await)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The outcome the rules predict for `cmd` signed by `signer`, from the
/// state read now. The order's view (if registered) is returned too.
pub async fn predict(
    client: &Client,
    cmd: &pb::SignedCommand,
) -> Result<(Prediction, Option<pb::OrderView>)> {
    let a = match rules::decode(&cmd.encode_to_vec()) {
        Ok(a) => a,
        Err(refusal) => {
            return Ok((
                Prediction {
                    accepted: false,
                    code: refusal.code().to_string(),
                    message: refusal.to_string(),
                },
                None,
            ))
        }
    };
    let signer = a.envelope.signer.clone();
    let Some(body) = a.command.body.as_ref() else {
        anyhow::bail!("the command has no body");
    };
    // The cluster's rules version and configuration decide, not a default.
    let mut view = Remote {
        config: client
            .rules_config()
            .await?
            .map(|(id, r)| ClusterConfig::from_rules_pb(&id, &r)),
        ..Default::default()
    };
    let mut order_view = None;
    if let Some(order_id) = rules::order_id_of(body) {
        order_view = read_order(client, order_id).await?;
        view.order = order_view.as_ref().map(order_from_view);
    }
    let mut parties = vec![signer.clone()];
    if let Body::OfferHandoff(o) = body {
        parties.push(o.to.clone());
    }
    // The carrier a shipment names: a tender needs it enrolled as a carrier.
    if let Body::ReportMilestone(m) = body {
        if !m.carrier.is_empty() {
            parties.push(m.carrier.clone());
        }
    }
    for p in parties {
        if let Some(v) = found(client.get_party(&p).await)? {
            view.parties.insert(p, party_from_view(v));
        }
    }
    if matches!(
        body,
        Body::ClaimOrder(_)
            | Body::AcceptHandoff(_)
            | Body::ClaimReturn(_)
            | Body::AcceptAssignment(_)
    ) {
        if let Some(p) = found(client.get_profile(&signer).await)? {
            view.profiles.insert(signer.clone(), profile_from_view(p));
        }
        if let Some(s) = found(client.node_stats(&signer).await)? {
            view.stats.insert(
                signer.clone(),
                NodeStats {
                    health: Default::default(),
                    assignments_accepted: 0,
                    assignments_declined: 0,
                    assignments_expired: 0,
                    open_orders: s.open_orders,
                    claims: s.claims,
                    releases: s.releases,
                    lapses: s.lapses,
                    handoffs_out: s.handoffs_out,
                    handoffs_in: s.handoffs_in,
                    shipped: s.shipped,
                    late_shipments: s.late_shipments,
                    delivered: s.delivered,
                    fence_expiries: s.fence_expiries,
                },
            );
        }
    }
    // The replica's clock decides lapses; keep ours on the same side of the deadline.
    let mut now = now_ms();
    if let Some(v) = &order_view {
        if v.lease_deadline_ms != 0 {
            now = if v.lease_lapsed || v.lease_fenced {
                now.max(v.lease_deadline_ms + 1)
            } else {
                now.min(v.lease_deadline_ms)
            };
        }
    }
    let d = rules::decide(&view, &signer, &a.command, u64::MAX / 2, now);
    let mut message = d.message;
    if d.code == rules::Code::UnknownOrder {
        message.push_str(
            " (check the id with `arbor order list` or `arbor order resolve CHANNEL EXTERNAL_ID`)",
        );
    }
    if d.code == rules::Code::UnknownParty {
        message.push_str(" (check the id with `arbor party get ID`)");
    }
    Ok((
        Prediction {
            accepted: d.accepted,
            code: d.code.as_str().to_string(),
            message,
        },
        order_view,
    ))
}

/// Runs the pre-check for `cmd`: `Ok(Some(reply))` for a dry run (nothing
/// signed is sent), `Ok(None)` to go on and submit, or a local refusal.
pub async fn gate(
    client: &Client,
    format: Format,
    cmd: &pb::SignedCommand,
    opts: SignOpts,
) -> Result<Option<Reply>> {
    if opts.force {
        return Ok(None);
    }
    let (p, _) = predict(client, cmd).await?;
    let decoded = decode_signed(&cmd.encode_to_vec());
    if opts.dry_run {
        let json = json!({
            "dry_run": true,
            "signer": decoded.signer,
            "command": decoded.json,
            "predicted": p.json(),
        });
        let text = render(format, json, || {
            let mut s = format!(
                "dry run: nothing signed or sent\nwould sign  {} as {}\n",
                decoded.kind, decoded.signer
            );
            if let Value::Object(m) = &decoded.json {
                for (k, v) in m.iter().filter(|(k, _)| *k != "kind" && *k != "nonce") {
                    s.push_str(&format!("  {k}: {v}\n"));
                }
            }
            if p.accepted {
                s.push_str("predicted   accepted\n");
            } else {
                s.push_str(&format!(
                    "predicted   rejected ({}): {}\n",
                    p.code, p.message
                ));
            }
            s
        });
        let mut reply = Reply::new(text);
        if !p.accepted {
            reply.exit = Some(Exit::RefusedLocally);
        }
        return Ok(Some(reply));
    }
    if p.accepted {
        return Ok(None);
    }
    Err(CliError::new(
        Exit::RefusedLocally,
        format!(
            "not signed: the cluster would reject this {} as {}: {}. Nothing was sent; \
             --force signs and records it anyway, --dry-run shows what would be signed",
            decoded.kind, p.code, p.message
        ),
    )
    .with_details(json!({"predicted": p.json(), "command": decoded.json}))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_client::Commands;

    fn view() -> pb::OrderView {
        pb::OrderView {
            order_id: "o-1".into(),
            total: 2598,
            currency: "CNY".into(),
            price_version: 1,
            status: "claimed".into(),
            owner: "n1".into(),
            custodian: "n1".into(),
            registered_by: "ch".into(),
            claimed_seq: 4,
            lease_deadline_ms: u64::MAX / 4,
            destination_region: "cn-sh".into(),
            history: vec![3, 4],
            ..Default::default()
        }
    }

    #[test]
    fn the_rules_decide_against_the_view_read() {
        let mut remote = Remote {
            order: Some(order_from_view(&view())),
            ..Default::default()
        };
        let n1 = arbor_client::Identity::generate("n1").for_cluster("t");
        let n2 = arbor_client::Identity::generate("n2").for_cluster("t");
        let cmd = |c: pb::SignedCommand| pb::Command::decode(c.command.as_slice()).unwrap();
        let d = |signer: &str, c: pb::SignedCommand, r: &Remote| {
            rules::decide(r, signer, &cmd(c), 100, 1000)
        };
        // Not the owner.
        let got = d(
            "n2",
            n2.report_milestone("o-1", pb::Milestone::Picked),
            &remote,
        );
        assert_eq!(got.code, rules::Code::NotOwner);
        assert!(got.message.contains("owned by n1"), "{}", got.message);
        // The owner may.
        assert!(
            d(
                "n1",
                n1.report_milestone("o-1", pb::Milestone::Picked),
                &remote
            )
            .accepted
        );
        // Delivered before shipped: wrong state.
        let got = d("n1", n1.report_delivered("o-1", "pod"), &remote);
        assert_eq!(got.code, rules::Code::MilestoneOutOfOrder);
        // Offer to an unknown party, then to a known node.
        let got = d("n1", n1.offer_handoff("o-1", "wh-typo", 1000), &remote);
        assert_eq!(got.code, rules::Code::UnknownParty);
        remote.parties.insert(
            "wh".into(),
            Party {
                party_id: "wh".into(),
                role: pb::Role::Node as i32,
                kind: pb::NodeKind::Warehouse as i32,
                public_key: vec![1; 32],
                enrolled_seq: 1,
                key_seq: 1,
                revoked: false,
                channel_names: Vec::new(),
            },
        );
        assert!(d("n1", n1.offer_handoff("o-1", "wh", 1000), &remote).accepted);
        // A wrong refund version names the current one.
        let got = d("n1", n1.receive_return("o-1", 100, 7), &remote);
        assert!(!got.accepted);
        // An open order claimed at the wrong total names the locked price.
        let mut open = view();
        open.status = "open".into();
        open.owner.clear();
        open.custodian.clear();
        open.lease_deadline_ms = 0;
        remote.order = Some(order_from_view(&open));
        let got = d("n2", n2.claim_order("o-1", 1, 2599), &remote);
        assert_eq!(got.code, rules::Code::PriceMismatch);
        assert!(got.message.contains("total 2598"), "{}", got.message);
        // Unknown order.
        remote.order = None;
        let got = d("n2", n2.claim_order("o-1", 1, 2598), &remote);
        assert_eq!(got.code, rules::Code::UnknownOrder);
    }

    #[test]
    fn carrier_commands_are_predicted_under_rules_version_3() {
        let n1 = arbor_client::Identity::generate("n1").for_cluster("t");
        let sf = arbor_client::Identity::generate("sf").for_cluster("t");
        let cmd = |c: &pb::SignedCommand| pb::Command::decode(c.command.as_slice()).unwrap();
        let carrier = |role: pb::Role| Party {
            party_id: "sf".into(),
            role: role as i32,
            kind: 0,
            public_key: vec![2; 32],
            enrolled_seq: 1,
            key_seq: 1,
            revoked: false,
            channel_names: Vec::new(),
        };
        let tender = n1.report_tender("o-1", "sf", "N-1", 1);
        let v3 = || {
            Some(ClusterConfig {
                rules_version: 3,
                ..Default::default()
            })
        };
        let mut remote = Remote {
            order: Some(order_from_view(&view())),
            config: v3(),
            ..Default::default()
        };
        // Not enrolled, enrolled as a node, then as a carrier.
        let got = rules::decide(&remote, "n1", &cmd(&tender), 100, 1000);
        assert_eq!(got.code, rules::Code::UnknownParty, "{}", got.message);
        remote.parties.insert("sf".into(), carrier(pb::Role::Node));
        let got = rules::decide(&remote, "n1", &cmd(&tender), 100, 1000);
        assert_eq!(got.code, rules::Code::NotACarrier, "{}", got.message);
        remote
            .parties
            .insert("sf".into(), carrier(pb::Role::Carrier));
        assert!(rules::decide(&remote, "n1", &cmd(&tender), 100, 1000).accepted);
        // A plain shipment to the enrolled carrier needs a tender.
        let plain = n1.report_shipped("o-1", "sf", "N-1");
        let got = rules::decide(
            &Remote {
                config: Some(ClusterConfig {
                    rules_version: 3,
                    ..Default::default()
                }),
                ..remote.clone()
            },
            "n1",
            &cmd(&plain),
            100,
            1000,
        );
        assert_eq!(got.code, rules::Code::TenderRequired, "{}", got.message);
        // The view shows a pending tender: an acceptance naming another entry is caught.
        let mut shipped = view();
        shipped.status = "shipped".into();
        shipped.lease_deadline_ms = 0;
        shipped.tender_carrier = "sf".into();
        shipped.tender_seq = 9;
        remote.order = Some(order_from_view(&shipped));
        let accept = sf.accept_tender(pb::AcceptTender {
            order_id: "o-1".into(),
            tender_seq: 8,
            tracking_id: "SF1".into(),
            parcels: 1,
            ..Default::default()
        });
        remote.config = v3();
        let got = rules::decide(&remote, "sf", &cmd(&accept), 100, 1000);
        assert_eq!(got.code, rules::Code::TenderMismatch, "{}", got.message);
    }

    /// Rules version 4: the view's tender deadline predicts `tender_expired`.
    #[test]
    fn an_expired_tender_is_predicted_from_the_view() {
        let sf = arbor_client::Identity::generate("sf").for_cluster("t");
        let mut shipped = view();
        shipped.status = "shipped".into();
        shipped.lease_deadline_ms = 0;
        shipped.tender_carrier = "sf".into();
        shipped.tender_seq = 9;
        shipped.tender_expires_ms = 500;
        let accept = sf.accept_tender(pb::AcceptTender {
            order_id: "o-1".into(),
            tender_seq: 9,
            tracking_id: "SF1".into(),
            parcels: 1,
            ..Default::default()
        });
        let command = pb::Command::decode(accept.command.as_slice()).unwrap();
        let remote = Remote {
            order: Some(order_from_view(&shipped)),
            config: Some(ClusterConfig {
                rules_version: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = rules::decide(&remote, "sf", &command, 100, 501);
        assert_eq!(got.code, rules::Code::TenderExpired, "{}", got.message);
        assert!(
            got.message.contains("(entry 9) expired at 500"),
            "{}",
            got.message
        );
        assert!(rules::decide(&remote, "sf", &command, 100, 500).accepted);
    }

    #[test]
    fn the_cluster_rules_decide_a_claim_deadline() {
        let mut shipped = view();
        shipped.status = "shipped".into();
        shipped.lease_deadline_ms = 0;
        shipped.claim_from_seq = 9;
        shipped.claim_from_ms = 100;
        let ch = arbor_client::Identity::generate("ch").for_cluster("t");
        let cmd = ch.open_dispute("o-1", pb::IncidentKind::Damaged, 500, "");
        let command = pb::Command::decode(cmd.command.as_slice()).unwrap();
        let status = pb::RulesConfig {
            rules_version: 3,
            claim_deadlines_recorded: Some(pb::ClaimDeadlines {
                damaged_ms: 10,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut remote = Remote {
            order: Some(order_from_view(&shipped)),
            config: Some(ClusterConfig::from_rules_pb("t", &status)),
            ..Default::default()
        };
        let got = rules::decide(&remote, "ch", &command, 1000, 1000);
        assert_eq!(
            got.code,
            rules::Code::ClaimDeadlinePassed,
            "{}",
            got.message
        );
        assert!(got
            .message
            .contains("10 ms after its hand-off to the carrier (entry 9)"));
        // Without the cluster's config the pre-check would decide under
        // version 1, which has no deadlines.
        remote.config = None;
        assert!(rules::decide(&remote, "ch", &command, 1000, 1000).accepted);
    }
}
