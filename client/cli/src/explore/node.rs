//! A party's page: who it is, and for a fulfilment node its profile
//! versions, counters, lapses and late shipments.
//!
//! The counters are the cluster's (`GetNodeStats`). The profile versions,
//! lapses and shipments are read from the ledger itself, one scan of its
//! entries (up to [`SCAN_LIMIT`]), each entry's hash checked against its
//! contents and its link to the previous one.

use std::collections::HashMap;

use arbor_client::{pb, Client};
use arbor_proto::ledger::Entry;
use arbor_proto::rules::custody::LapseNote;
use pb::command::Body;
use prost::Message;

/// Entries read at most for one page (the newest ones when the ledger is longer).
pub const SCAN_LIMIT: u64 = 100_000;

pub struct ProfileVersion {
    pub version: u64,
    pub seq: u64,
    pub time_ms: u64,
    pub profile: pb::PublishProfile,
}

pub struct Lapse {
    pub seq: u64,
    pub time_ms: u64,
    pub order_id: String,
    pub note: LapseNote,
}

pub struct Shipment {
    pub seq: u64,
    pub time_ms: u64,
    pub order_id: String,
    pub carrier: String,
    /// The lease's start (claim or accepted handoff) and the dispatch time then promised.
    pub lease: Option<(u64, u64, u64)>,
}

impl Shipment {
    /// Shipped after the lease's start + the profile's dispatch time (as the rules count it).
    pub fn late_by_ms(&self) -> Option<u64> {
        let (_, start, dispatch) = self.lease?;
        self.time_ms
            .checked_sub(start.saturating_add(dispatch))
            .filter(|d| *d > 0)
    }
}

pub struct NodePage {
    pub party: pb::PartyView,
    pub profile: Option<pb::ProfileView>,
    pub stats: Result<pb::NodeStatsView, String>,
    pub versions: Vec<ProfileVersion>,
    pub lapses: Vec<Lapse>,
    pub shipments: Vec<Shipment>,
    /// Entries scanned, `from..=to`, and any problem that stopped the scan.
    pub scanned: (u64, u64),
    pub scan_error: Option<String>,
}

pub async fn gather(client: &Client, party: pb::PartyView) -> NodePage {
    let node = party.party_id.clone();
    let is_node = party.role == pb::Role::Node as i32;
    let profile = if is_node {
        client.get_profile(&node).await.ok()
    } else {
        None
    };
    let stats = if is_node {
        client.node_stats(&node).await.map_err(|e| e.to_string())
    } else {
        Err("not a fulfilment node".into())
    };
    let mut page = NodePage {
        party,
        profile,
        stats,
        versions: Vec::new(),
        lapses: Vec::new(),
        shipments: Vec::new(),
        scanned: (0, 0),
        scan_error: None,
    };
    if let Err(e) = scan(client, &node, &mut page).await {
        page.scan_error = Some(e);
    }
    page
}

async fn scan(client: &Client, node: &str, page: &mut NodePage) -> Result<(), String> {
    let head = client.get_entries(0, 1).await.map_err(|e| e.to_string())?;
    if head.empty {
        return Ok(());
    }
    let from = (head.head_seq + 1).saturating_sub(SCAN_LIMIT);
    page.scanned = (from, from);
    // Per order: the node's lease start (seq, time) while it holds the order.
    let mut lease: HashMap<String, (u64, u64)> = HashMap::new();
    let mut next = from;
    let mut prev: Option<[u8; 32]> = None;
    while next <= head.head_seq {
        let r = client
            .get_entries(next, 1000)
            .await
            .map_err(|e| e.to_string())?;
        if r.entries.is_empty() {
            break;
        }
        for pe in &r.entries {
            let e = Entry::from_pb(pe).map_err(|e| format!("entry {}: {e}", pe.seq))?;
            if e.seq != next || e.compute_hash() != e.hash || prev.is_some_and(|p| p != e.prev_hash)
            {
                return Err(format!(
                    "entry {} does not verify (hash or link); scan stopped",
                    pe.seq
                ));
            }
            prev = Some(e.hash);
            next += 1;
            page.scanned.1 = e.seq;
            if e.accepted {
                if let Some(n) = LapseNote::parse(&e.message).filter(|n| n.owner == node) {
                    lease.remove(&e.order_id);
                    page.lapses.push(Lapse {
                        seq: e.seq,
                        time_ms: e.time_ms,
                        order_id: e.order_id.clone(),
                        note: n,
                    });
                }
            }
            let Some((signer, body)) = decode(&e.command) else {
                continue;
            };
            if !e.accepted {
                continue;
            }
            match body {
                Body::PublishProfile(p) if signer == node => page.versions.push(ProfileVersion {
                    version: page.versions.len() as u64 + 1,
                    seq: e.seq,
                    time_ms: e.time_ms,
                    profile: p,
                }),
                Body::ClaimOrder(_) | Body::AcceptHandoff(_) if signer == node => {
                    lease.insert(e.order_id.clone(), (e.seq, e.time_ms));
                }
                Body::AcceptHandoff(_) => {
                    // Someone else accepted it: if it was ours, our lease ended.
                    lease.remove(&e.order_id);
                }
                Body::ReleaseOrder(_) if signer == node => {
                    lease.remove(&e.order_id);
                }
                Body::ReportMilestone(m)
                    if signer == node && m.milestone == pb::Milestone::Shipped as i32 =>
                {
                    let l = lease.remove(&e.order_id).map(|(seq, start)| {
                        let dispatch = page
                            .versions
                            .iter()
                            .rev()
                            .find(|v| v.time_ms <= start)
                            .map(|v| v.profile.dispatch_time_ms)
                            .unwrap_or(0);
                        (seq, start, dispatch)
                    });
                    page.shipments.push(Shipment {
                        seq: e.seq,
                        time_ms: e.time_ms,
                        order_id: e.order_id.clone(),
                        carrier: m.carrier.clone(),
                        lease: l,
                    });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn decode(command: &[u8]) -> Option<(String, Body)> {
    let env = pb::SignedCommand::decode(command).ok()?;
    let cmd = pb::Command::decode(env.command.as_slice()).ok()?;
    Some((env.signer, cmd.body?))
}
