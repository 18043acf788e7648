//! `arbor cluster`: health and membership.

use std::path::PathBuf;

use anyhow::Result;
use arbor_client::{pb, MembershipChange};
use clap::Subcommand;
use serde_json::json;

use super::output::{kv, render, short_hash, submit_reply, Reply, Table};
use super::{operator_signer, Ctx};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Show the cluster id, the leader, the term and every replica's state and chain head
    #[command(
        long_about = "Show the cluster id (which every command signature names), the leader, \
the term, and one row per replica: id, address, raft state, \
voter or learner, last applied log index, and the sequence number and hash prefix of \
its chain head. Replicas that did not answer are listed with the error. Identical \
head seq and hash on all replicas mean their chains agree up to there.\n\n\
Exits 4 (unavailable) naming the replicas when any member did not answer, no leader is \
known, or a replica's applied log index is more than --max-lag entries behind the most \
advanced one; 0 when all is well.\n\n\
Example:\n  arbor cluster status --max-lag 500"
    )]
    Status {
        /// Most raft log entries a replica may be behind the most advanced one before the
        /// status is unhealthy (exit 4)
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LAG)]
        max_lag: u64,
    },
    /// Add a replica to the cluster (an operator-signed AddReplica ledger command)
    #[command(
        long_about = "Add a replica to the cluster: submits an operator-signed AddReplica command, \
recorded in the ledger (accepted or rejected, e.g. replica_exists). The new replica must already \
be running with ADDR (host:port of its client API) and PEER_ADDR (host:port of its peer port), \
with a certificate from the cluster CA naming arbor-replica-ID; once accepted, the leader adds it \
as a learner and promotes it to voter when it has caught up. Prints the entry's outcome and \
whether raft's membership already shows the replica as a voter (waited for up to --timeout), \
or that the change is still in progress.\n\n\
Example:\n  arbor cluster add-node 4 10.0.0.14:7101 10.0.0.14:7201 --key operator.key"
    )]
    AddNode {
        /// Raft node id of the new replica (unique in the cluster)
        #[arg(value_name = "ID")]
        node_id: u64,
        /// host:port of the replica's client API
        #[arg(value_name = "ADDR")]
        addr: String,
        /// host:port of the replica's peer port (mutual TLS)
        #[arg(value_name = "PEER_ADDR")]
        peer_addr: String,
        /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
        #[arg(long, value_name = "OPKEY")]
        key: Option<PathBuf>,
    },
    /// Remove a replica from the cluster (an operator-signed RemoveReplica ledger command)
    #[command(
        long_about = "Remove a replica from the cluster: submits an operator-signed RemoveReplica \
command, recorded in the ledger (rejected unknown_replica for a non-member, last_replica for the \
only one left). Once accepted, the leader removes it from raft. Its data is kept on its disk.\n\n\
Example:\n  arbor cluster remove-node 4 --key operator.key"
    )]
    RemoveNode {
        /// Raft node id of the replica to remove
        #[arg(value_name = "ID")]
        node_id: u64,
        /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
        #[arg(long, value_name = "OPKEY")]
        key: Option<PathBuf>,
    },
    /// Show the rules version in force, its fence, the lease grace and the claim deadlines
    #[command(
        long_about = "Show the rules the cluster decides by, as the replica answering has \
applied them: the rules version and the entry that set it, the lease grace, the fence of a \
lapsed picked or packed order (version 2 and later) and each dispute kind's claim deadline \
(version 3). The CLI's pre-check decides by the same.\n\n\
Example:\n  arbor cluster rules --output json"
    )]
    Rules,
    /// Raise the rules version, set the fence and the claim deadlines (an operator-signed SetRulesVersion ledger command)
    #[command(
        long_about = "Submit an operator-signed SetRulesVersion: from its entry on the cluster \
decides by rules version VERSION (never lower than the one in force: rejected \
rules_version_lowered), with the fence --fence (version 2 and later; absent: 2h) and, from \
version 3, the claim deadline of each dispute kind named by --claim-deadline (a kind not \
named gets its default: lost 60d, damaged 30d, late 30d, duplicate_processing 90d, \
price_mismatch 90d). Each command replaces the fence and the deadlines recorded before. \
Running leases and fences keep their deadlines.\n\n\
Example:\n  arbor cluster set-rules 3 --fence 4h --claim-deadline damaged=14d --claim-deadline lost=45d --key operator.key"
    )]
    SetRules(crate::cluster_rules::SetRulesArgs),
}

/// Default of `arbor cluster status --max-lag`.
pub const DEFAULT_MAX_LAG: u64 = 1000;

pub async fn run(ctx: &Ctx, cmd: ClusterCmd) -> Result<Reply> {
    match cmd {
        ClusterCmd::Status { max_lag } => {
            let s = ctx.client().await?.cluster_status().await?;
            let problems = problems(&s, max_lag);
            let mut reply = Reply::new(show_status(ctx, &s, &problems));
            if !problems.is_empty() {
                reply.failed = Some(format!("cluster unhealthy: {}", problems.join("; ")));
                reply.exit = Some(crate::exit::Exit::Unavailable);
            }
            Ok(reply)
        }
        ClusterCmd::AddNode {
            node_id,
            addr,
            peer_addr,
            key,
        } => {
            let op = operator_signer(ctx, key).await?;
            let r = ctx
                .client()
                .await?
                .add_replica(&op, node_id, &addr, &peer_addr)
                .await?;
            Ok(show_change(ctx, &r))
        }
        ClusterCmd::RemoveNode { node_id, key } => {
            let op = operator_signer(ctx, key).await?;
            let r = ctx.client().await?.remove_replica(&op, node_id).await?;
            Ok(show_change(ctx, &r))
        }
        ClusterCmd::Rules => crate::cluster_rules::show(ctx).await,
        ClusterCmd::SetRules(a) => crate::cluster_rules::set(ctx, a).await,
    }
}

fn members_json(members: &[pb::Member]) -> Vec<serde_json::Value> {
    members
        .iter()
        .map(|m| json!({"node_id": m.node_id, "addr": m.addr, "peer_addr": m.peer_addr, "voter": m.voter}))
        .collect()
}

fn role(voter: Option<bool>) -> String {
    match voter {
        Some(true) => "voter".into(),
        Some(false) => "learner".into(),
        None => "-".into(),
    }
}

/// What is wrong with the cluster, one line per problem (empty: healthy).
fn problems(s: &pb::ClusterStatusReply, max_lag: u64) -> Vec<String> {
    let mut out = Vec::new();
    if s.leader_id == 0 {
        out.push("no leader known".to_string());
    }
    for m in &s.members {
        if !s.replicas.iter().any(|r| r.node_id == m.node_id) {
            out.push(format!("replica {} ({}) unreachable", m.node_id, m.addr));
        }
    }
    if s.members.is_empty() {
        // Without the member list, the unreachable entries are all we know.
        for u in &s.unreachable {
            out.push(format!("unreachable: {}", u.replace('\n', " ")));
        }
    }
    let newest = s.replicas.iter().map(|r| r.last_applied).max().unwrap_or(0);
    let mut rows: Vec<&pb::LocalStatusReply> = s.replicas.iter().collect();
    rows.sort_by_key(|r| r.node_id);
    for r in rows {
        let lag = newest.saturating_sub(r.last_applied);
        if lag > max_lag {
            out.push(format!(
                "replica {} ({}) lags {lag} entries behind (applied {}, newest {newest}; --max-lag {max_lag})",
                r.node_id, r.addr, r.last_applied
            ));
        }
    }
    out
}

fn show_status(ctx: &Ctx, s: &pb::ClusterStatusReply, problems: &[String]) -> String {
    let leader_addr = s
        .members
        .iter()
        .find(|m| m.node_id == s.leader_id)
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    let replicas: Vec<_> = s
        .replicas
        .iter()
        .map(|r| {
            json!({
                "node_id": r.node_id,
                "cluster_id": r.cluster_id,
                "addr": r.addr,
                "state": r.state,
                "term": r.term,
                "leader_id": r.leader_id,
                "last_applied": r.last_applied,
                "last_log": r.last_log,
                "has_entries": r.has_entries,
                "head_seq": r.has_entries.then_some(r.head_seq),
                "head_hash": hex::encode(&r.head_hash),
            })
        })
        .collect();
    let cluster_id = s
        .replicas
        .iter()
        .map(|r| r.cluster_id.as_str())
        .find(|id| !id.is_empty())
        .unwrap_or_default();
    let json = json!({
        "cluster_id": cluster_id,
        "leader_id": s.leader_id,
        "leader_addr": leader_addr,
        "term": s.term,
        "members": members_json(&s.members),
        "replicas": replicas,
        "unreachable": s.unreachable,
        "healthy": problems.is_empty(),
        "problems": problems,
    });
    render(ctx.format, json, || {
        let leader = if s.leader_id == 0 {
            "none known".to_string()
        } else if leader_addr.is_empty() {
            s.leader_id.to_string()
        } else {
            format!("{} ({leader_addr})", s.leader_id)
        };
        let cluster = if cluster_id.is_empty() {
            "- (no genesis yet)".to_string()
        } else {
            cluster_id.to_string()
        };
        let mut out = kv(&[
            ("cluster", cluster),
            ("leader", leader),
            ("term", s.term.to_string()),
        ]);
        out.push('\n');
        let mut rows: Vec<&pb::LocalStatusReply> = s.replicas.iter().collect();
        rows.sort_by_key(|r| r.node_id);
        let mut t = Table::new(&[
            "ID",
            "ADDR",
            "STATE",
            "MEMBER",
            "APPLIED",
            "HEAD SEQ",
            "HEAD HASH",
        ]);
        for r in rows {
            let voter = s
                .members
                .iter()
                .find(|m| m.node_id == r.node_id)
                .map(|m| m.voter);
            let (seq, hash) = if r.has_entries {
                (r.head_seq.to_string(), short_hash(&r.head_hash))
            } else {
                ("-".into(), "-".into())
            };
            t.row(vec![
                r.node_id.to_string(),
                r.addr.clone(),
                r.state.clone(),
                role(voter),
                r.last_applied.to_string(),
                seq,
                hash,
            ]);
        }
        out.push_str(&t.render());
        if !s.unreachable.is_empty() {
            out.push_str("\nunreachable:\n");
            for u in &s.unreachable {
                out.push_str(&format!("  {}\n", u.replace('\n', " ")));
            }
        }
        out
    })
}

/// The ledger outcome, then whether raft's membership shows it yet.
fn show_change(ctx: &Ctx, r: &MembershipChange) -> Reply {
    let mut reply = submit_reply(ctx.format, &r.reply);
    let accepted = r.reply.outcome.as_ref().is_some_and(|o| o.accepted);
    let state = if !accepted {
        "not changed"
    } else if r.reply.duplicate {
        "duplicate: nothing done again"
    } else if r.in_effect {
        "in effect"
    } else {
        "in progress"
    };
    let o = r.reply.outcome.clone().unwrap_or_default();
    let json = json!({
        "seq": r.reply.seq,
        "accepted": o.accepted,
        "code": o.code,
        "message": o.message,
        "duplicate": r.reply.duplicate,
        "entry_hash": hex::encode(&r.reply.entry_hash),
        "in_effect": r.in_effect,
        "members": members_json(&r.members),
    });
    reply.text = render(ctx.format, json, || {
        let mut out = reply.text.clone();
        if accepted && !o.message.is_empty() {
            out.push_str(&format!("{}\n", o.message));
        }
        out.push_str(&format!("membership: {state}\n"));
        if !r.members.is_empty() {
            let mut t = Table::new(&["ID", "ADDR", "PEER ADDR", "MEMBER"]);
            for m in &r.members {
                t.row(vec![
                    m.node_id.to_string(),
                    m.addr.clone(),
                    m.peer_addr.clone(),
                    role(Some(m.voter)),
                ]);
            }
            out.push('\n');
            out.push_str(&t.render());
        }
        out
    });
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: u64, applied: u64) -> pb::LocalStatusReply {
        pb::LocalStatusReply {
            node_id: id,
            addr: format!("h:{id}"),
            last_applied: applied,
            ..Default::default()
        }
    }

    fn member(id: u64) -> pb::Member {
        pb::Member {
            node_id: id,
            addr: format!("h:{id}"),
            ..Default::default()
        }
    }

    #[test]
    fn unreachable_lagging_and_leaderless_are_problems() {
        let mut s = pb::ClusterStatusReply {
            leader_id: 1,
            term: 3,
            members: vec![member(1), member(2), member(3)],
            replicas: vec![replica(1, 500), replica(2, 500), replica(3, 499)],
            unreachable: vec![],
        };
        assert!(problems(&s, 1).is_empty());
        assert_eq!(
            problems(&s, 0),
            ["replica 3 (h:3) lags 1 entries behind (applied 499, newest 500; --max-lag 0)"]
        );
        s.replicas.remove(1);
        s.unreachable = vec!["2 h:2: connection refused".into()];
        assert_eq!(problems(&s, 1), ["replica 2 (h:2) unreachable"]);
        s.leader_id = 0;
        assert_eq!(problems(&s, 1)[0], "no leader known");
    }
}
