//! The bench against arbor: the production configuration (replica identities
//! enrolled, so the leader's lease sweep runs), then a fresh channel and
//! fresh fulfilment nodes with profiles; claims are signed commands.

use anyhow::{bail, Context, Result};
use arbor_client::{pb, Client, Commands, Identity, Signer};
use serde_json::{json, Value};

use super::{order_line, order_total, progress, Answer, BenchArgs, Target};
use crate::{operator_key, Ctx};

/// The destination region of every bench order, served by every bench node.
const REGION: &str = "cn-sh";

pub(crate) struct ArborTarget {
    clients: Vec<Client>,
    channel: Signer,
    nodes: Vec<Signer>,
    leader_addr: String,
    leader_id: u64,
    /// Where requests go ("leader" or "follower") and its address.
    via: String,
    target_addr: String,
    /// What happened to each replica's identity: enrolled before, now, or
    /// another key enrolled under its name (then its sweep cannot run).
    replicas: Vec<Value>,
}

impl ArborTarget {
    pub async fn connect(ctx: &Ctx, args: &BenchArgs, run_id: &str) -> Result<ArborTarget> {
        let operator_id = operator_key(args.key.clone())?;
        // Straight to the leader, over several connections.
        let probe = ctx.client().await?;
        let status = probe
            .cluster_status()
            .await
            .context("reading the cluster status")?;
        let leader_addr = status
            .members
            .iter()
            .find(|m| m.node_id == status.leader_id)
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        // `--via follower`: the first member that does not lead.
        let target_addr = match args.via.as_str() {
            "follower" => status
                .members
                .iter()
                .find(|m| m.node_id != status.leader_id)
                .map(|m| m.addr.clone())
                .context("the cluster has no follower to send requests to")?,
            _ => leader_addr.clone(),
        };
        let endpoints = leader_first(probe.endpoints(), &target_addr);
        let cluster_id = match &ctx.cluster_id {
            Some(id) => id.clone(),
            None => status
                .replicas
                .iter()
                .map(|r| r.cluster_id.clone())
                .find(|id| !id.is_empty())
                .context("the cluster has no genesis entry yet")?,
        };
        let operator = operator_id.for_cluster(&cluster_id);
        let transport = ctx.transport()?;
        let mut clients = Vec::new();
        for _ in 0..args.connections {
            clients.push(
                Client::connect(&endpoints, &transport)
                    .await?
                    .with_timeout(ctx.timeout),
            );
        }
        let client = clients[0].clone();

        // The production configuration: every member's identity enrolled.
        let mut replicas = Vec::new();
        for m in &status.members {
            let addr = m.addr.clone();
            let ident = Client::get_replica_identity(&transport, &addr)
                .await
                .with_context(|| {
                    format!("reading the identity of replica {} at {addr}", m.node_id)
                })?;
            let state = match client.get_party(&ident.name).await {
                Ok(p)
                    if p.role == pb::Role::Replica as i32
                        && p.public_key == ident.public_key
                        && !p.revoked =>
                {
                    "enrolled"
                }
                Ok(_) => {
                    progress(&format!(
                        "warning: {} is enrolled with another key or role (or revoked): its lease sweep cannot run",
                        ident.name
                    ));
                    "other_key"
                }
                Err(_) => {
                    let r = client
                        .submit(operator.enroll_party(
                            &ident.name,
                            pb::Role::Replica,
                            pb::NodeKind::Unspecified,
                            &ident.public_key,
                        ))
                        .await
                        .with_context(|| format!("enrolling {}", ident.name))?;
                    let o = r.outcome.unwrap_or_default();
                    if !o.accepted {
                        bail!(
                            "enrolling {} rejected ({}): {}",
                            ident.name,
                            o.code,
                            o.message
                        );
                    }
                    "enrolled_now"
                }
            };
            replicas.push(json!({"node_id": m.node_id, "name": ident.name, "identity": state}));
        }

        // Parties.
        let channel =
            Identity::generate(&format!("bench-{run_id}-channel")).for_cluster(&cluster_id);
        let nodes: Vec<Signer> = (0..args.nodes)
            .map(|i| {
                Identity::generate(&format!("bench-{run_id}-node-{i}")).for_cluster(&cluster_id)
            })
            .collect();
        progress(&format!(
            "run {run_id}: {} replica identities enrolled; enrolling 1 channel and {} nodes (with profiles)",
            replicas.iter().filter(|r| r["identity"] != "other_key").count(),
            nodes.len()
        ));
        let mut enrolments = vec![operator.enroll_party(
            &channel.party_id,
            pb::Role::Channel,
            pb::NodeKind::Unspecified,
            &channel.public_key(),
        )];
        for n in &nodes {
            enrolments.push(operator.enroll_party(
                &n.party_id,
                pb::Role::Node,
                pb::NodeKind::Store,
                &n.public_key(),
            ));
        }
        let replies =
            futures::future::try_join_all(enrolments.into_iter().map(|c| client.submit(c))).await?;
        for r in replies {
            let o = r.outcome.unwrap_or_default();
            if !o.accepted {
                bail!("enrolment rejected ({}): {}", o.code, o.message);
            }
        }
        // Each node publishes a profile serving the orders' region with room
        // for every order, so claims are decided on ownership and price alone.
        let profiles = nodes.iter().map(|n| {
            client.submit(n.publish_profile(pb::PublishProfile {
                regions: vec![REGION.into()],
                max_open_orders: u32::MAX,
                dispatch_time_ms: 24 * 3_600_000,
                ..Default::default()
            }))
        });
        for r in futures::future::try_join_all(profiles).await? {
            let o = r.outcome.unwrap_or_default();
            if !o.accepted {
                bail!("profile rejected ({}): {}", o.code, o.message);
            }
        }
        Ok(ArborTarget {
            clients,
            channel,
            nodes,
            leader_addr,
            leader_id: status.leader_id,
            via: args.via.clone(),
            target_addr,
            replicas,
        })
    }
}

impl Target for ArborTarget {
    type Claim = pb::SignedCommand;

    fn system(&self) -> &'static str {
        "arbor"
    }

    fn connections(&self) -> usize {
        self.clients.len()
    }

    fn leader_process(&self) -> Option<String> {
        Some(format!("replica-{}", self.leader_id))
    }

    fn describe(&self) -> Value {
        json!({
            "leader": self.leader_addr,
            "leader_id": self.leader_id,
            "via": self.via,
            "target": self.target_addr,
            "replicas": self.replicas,
            "production_config": self.replicas.iter().all(|r| r["identity"] != "other_key"),
        })
    }

    fn node_name(&self, node: usize) -> &str {
        &self.nodes[node].party_id
    }

    async fn register(&self, conn: usize, order_id: &str, j: usize) -> Result<()> {
        let cmd = self
            .channel
            .register_order(sample_order(order_id, &self.channel.party_id, j));
        let o = self.clients[conn]
            .submit(cmd)
            .await
            .context("registering an order")?
            .outcome
            .unwrap_or_default();
        if !o.accepted {
            bail!("order registration rejected ({}): {}", o.code, o.message);
        }
        Ok(())
    }

    fn prepare(&self, order_id: &str, j: usize, node: usize) -> pb::SignedCommand {
        self.nodes[node].claim_order(order_id, 1, order_total(j))
    }

    async fn claim(&self, conn: usize, c: pb::SignedCommand) -> Answer {
        match self.clients[conn].submit(c).await {
            Ok(r) => {
                let o = r.outcome.unwrap_or_default();
                if o.accepted {
                    Answer::Accepted
                } else {
                    Answer::Rejected(o.code)
                }
            }
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    async fn read(&self, conn: usize, order_id: &str) -> Result<pb::OrderView, String> {
        self.clients[conn]
            .get_order(order_id)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The configured endpoints with the leader's address moved to the front.
fn leader_first(endpoints: &[String], leader: &str) -> Vec<String> {
    let bare = |s: &str| {
        s.trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    };
    let mut out: Vec<String> = endpoints.to_vec();
    if let Some(i) = out.iter().position(|e| bare(e) == bare(leader)) {
        let l = out.remove(i);
        out.insert(0, l);
    } else if !leader.is_empty() {
        out.insert(0, leader.to_string());
    }
    out
}

/// Order `j`: one line, `1 + j % 3` units at `1000 + j % 500` minor units.
fn sample_order(order_id: &str, channel: &str, j: usize) -> pb::RegisterOrder {
    let (quantity, unit_price) = order_line(j);
    pb::RegisterOrder {
        order_id: order_id.to_string(),
        external_refs: vec![pb::ExternalRef {
            channel: channel.to_string(),
            external_id: order_id.to_string(),
        }],
        lines: vec![pb::OrderLine {
            sku: format!("sku-{}", j % 97),
            quantity,
            unit_price,
        }],
        currency: "CNY".into(),
        total: order_total(j),
        destination_region: REGION.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_goes_first() {
        let eps: Vec<String> = ["a:1", "http://b:2", "c:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(leader_first(&eps, "b:2"), ["http://b:2", "a:1", "c:3"]);
        assert_eq!(
            leader_first(&eps, "d:4"),
            ["d:4", "a:1", "http://b:2", "c:3"]
        );
        assert_eq!(leader_first(&eps, ""), eps);
    }

    #[test]
    fn sample_orders_are_valid() {
        for j in [0, 1, 2, 499, 500, 19_999] {
            let o = sample_order("bench-x-o1", "bench-x-channel", j);
            let cmd = pb::Command {
                nonce: 1,
                body: Some(pb::command::Body::RegisterOrder(o.clone())),
            };
            arbor_proto::rules::validate_command(&cmd).unwrap();
            assert_eq!(o.total, order_total(j));
        }
    }
}
