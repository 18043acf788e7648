//! The bench against etcd v3 (`--etcd ENDPOINTS`): the same workload shape,
//! for a side-by-side figure (scripts/bench-etcd.sh, scripts/bench-compare.sh).
//!
//! - registering order `o` puts `bench/RUN/order/o` (a small JSON record of
//!   the order's fields);
//! - a claim by node `n` is one transaction: if `bench/RUN/owner/o` has never
//!   been created (`create_revision == 0`) put it with value `n`, else read
//!   it — accepted if the compare held, rejected `already_owned` otherwise;
//! - reading back is a linearizable `Range` of the owner key.
//!
//! Plaintext gRPC straight to the leader (found by `Maintenance.Status`) over
//! `--connections` HTTP/2 connections. Nothing is signed: etcd has no
//! signed commands, which is part of what the comparison shows.

use anyhow::{bail, Context, Result};
use arbor_client::pb;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

use super::{order_line, order_total, progress, Answer, BenchArgs, Target};
use crate::Ctx;

#[allow(clippy::all, clippy::pedantic)]
mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}
use etcdpb::cluster_client::ClusterClient;
use etcdpb::kv_client::KvClient;
use etcdpb::maintenance_client::MaintenanceClient;

pub(crate) struct EtcdTarget {
    kv: Vec<KvClient<Channel>>,
    prefix: String,
    nodes: Vec<String>,
    leader_endpoint: String,
    leader_name: Option<String>,
    members: Vec<Value>,
}

/// `host:port` or `http://host:port` as a URL.
fn url(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// The comma-separated endpoints, trimmed, none empty.
pub fn parse_endpoints(s: &str) -> Result<Vec<String>> {
    let eps: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if eps.is_empty() {
        bail!("--etcd: no endpoints in {s:?}");
    }
    Ok(eps)
}

async fn channel(ctx: &Ctx, endpoint: &str) -> Result<Channel> {
    Endpoint::from_shared(url(endpoint))
        .with_context(|| format!("--etcd endpoint {endpoint:?}"))?
        .timeout(ctx.timeout)
        .connect_timeout(ctx.timeout)
        .connect()
        .await
        .with_context(|| format!("connecting to etcd at {endpoint}"))
}

impl EtcdTarget {
    pub async fn connect(
        ctx: &Ctx,
        endpoints: &str,
        args: &BenchArgs,
        run_id: &str,
    ) -> Result<EtcdTarget> {
        let eps = parse_endpoints(endpoints)?;
        // Which member leads: each endpoint says who it is and who leads.
        let mut leader_endpoint = None;
        let mut leader_id = 0;
        let mut names = std::collections::HashMap::new();
        for ep in &eps {
            let ch = channel(ctx, ep).await?;
            let st = MaintenanceClient::new(ch.clone())
                .status(etcdpb::StatusRequest {})
                .await
                .with_context(|| format!("etcd status at {ep}"))?
                .into_inner();
            let me = st.header.map(|h| h.member_id).unwrap_or_default();
            if st.leader != 0 && st.leader == me {
                leader_endpoint = Some(ep.clone());
                leader_id = me;
            }
            if names.is_empty() {
                let ml = ClusterClient::new(ch)
                    .member_list(etcdpb::MemberListRequest {})
                    .await
                    .with_context(|| format!("etcd member list at {ep}"))?
                    .into_inner();
                for m in ml.members {
                    names.insert(m.id, (m.name, m.client_urls));
                }
            }
        }
        let leader_endpoint =
            leader_endpoint.context("no etcd endpoint given is the leader (is the cluster up?)")?;
        let leader_name = names.get(&leader_id).map(|(n, _)| n.clone());
        let mut members: Vec<Value> = names
            .iter()
            .map(|(id, (name, urls))| {
                json!({"id": format!("{id:x}"), "name": name, "client_urls": urls, "leader": *id == leader_id})
            })
            .collect();
        members.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut kv = Vec::new();
        for _ in 0..args.connections {
            kv.push(KvClient::new(channel(ctx, &leader_endpoint).await?));
        }
        progress(&format!(
            "run {run_id}: etcd leader {} at {leader_endpoint}, {} members",
            leader_name.as_deref().unwrap_or("?"),
            members.len()
        ));
        Ok(EtcdTarget {
            kv,
            prefix: format!("bench/{run_id}"),
            nodes: (0..args.nodes)
                .map(|i| format!("bench-{run_id}-node-{i}"))
                .collect(),
            leader_endpoint,
            leader_name,
            members,
        })
    }

    fn owner_key(&self, order_id: &str) -> Vec<u8> {
        format!("{}/owner/{order_id}", self.prefix).into_bytes()
    }
}

/// The claim transaction of `owner` for the order whose owner key is `key`.
pub fn claim_txn(key: Vec<u8>, owner: &str) -> etcdpb::TxnRequest {
    use etcdpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use etcdpb::request_op::Request;
    etcdpb::TxnRequest {
        compare: vec![etcdpb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        }],
        success: vec![etcdpb::RequestOp {
            request: Some(Request::RequestPut(etcdpb::PutRequest {
                key: key.clone(),
                value: owner.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![etcdpb::RequestOp {
            request: Some(Request::RequestRange(etcdpb::RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// What a claim transaction's reply means.
pub fn claim_answer(r: &etcdpb::TxnResponse) -> Answer {
    use etcdpb::response_op::Response;
    if r.succeeded {
        return Answer::Accepted;
    }
    let owned = r.responses.iter().any(|op| match &op.response {
        Some(Response::ResponseRange(rr)) => rr.kvs.iter().any(|kv| !kv.value.is_empty()),
        _ => false,
    });
    if owned {
        Answer::Rejected("already_owned".into())
    } else {
        Answer::Failed("the compare failed but the owner key reads empty".into())
    }
}

/// The order record put at registration: the fields arbor's order carries.
fn order_record(order_id: &str, j: usize) -> Vec<u8> {
    let (quantity, unit_price) = order_line(j);
    json!({
        "order_id": order_id,
        "external_id": order_id,
        "lines": [{"sku": format!("sku-{}", j % 97), "quantity": quantity, "unit_price": unit_price}],
        "currency": "CNY",
        "total": order_total(j),
        "destination_region": "cn-sh",
    })
    .to_string()
    .into_bytes()
}

impl Target for EtcdTarget {
    type Claim = etcdpb::TxnRequest;

    fn system(&self) -> &'static str {
        "etcd"
    }

    fn connections(&self) -> usize {
        self.kv.len()
    }

    fn leader_process(&self) -> Option<String> {
        self.leader_name.clone()
    }

    fn describe(&self) -> Value {
        json!({
            "leader": self.leader_endpoint,
            "leader_name": self.leader_name,
            "members": self.members,
        })
    }

    fn node_name(&self, node: usize) -> &str {
        &self.nodes[node]
    }

    async fn register(&self, conn: usize, order_id: &str, j: usize) -> Result<()> {
        let req = etcdpb::PutRequest {
            key: format!("{}/order/{order_id}", self.prefix).into_bytes(),
            value: order_record(order_id, j),
            ..Default::default()
        };
        self.kv[conn]
            .clone()
            .put(req)
            .await
            .map_err(|s| anyhow::anyhow!("etcd put: {}", s.message()))?;
        Ok(())
    }

    fn prepare(&self, order_id: &str, _j: usize, node: usize) -> etcdpb::TxnRequest {
        claim_txn(self.owner_key(order_id), &self.nodes[node])
    }

    async fn claim(&self, conn: usize, c: etcdpb::TxnRequest) -> Answer {
        match self.kv[conn].clone().txn(c).await {
            Ok(r) => claim_answer(&r.into_inner()),
            Err(s) => Answer::Failed(format!("etcd txn: {:?}: {}", s.code(), s.message())),
        }
    }

    async fn read(&self, conn: usize, order_id: &str) -> Result<pb::OrderView, String> {
        let r = self.kv[conn]
            .clone()
            .range(etcdpb::RangeRequest {
                key: self.owner_key(order_id),
                serializable: false,
                ..Default::default()
            })
            .await
            .map_err(|s| format!("etcd range: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let owner = r
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default();
        Ok(pb::OrderView {
            order_id: order_id.to_string(),
            status: if owner.is_empty() { "open" } else { "claimed" }.into(),
            owner,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn endpoints_and_urls() {
        assert_eq!(
            parse_endpoints(" 127.0.0.1:1, ,127.0.0.1:2").unwrap(),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert!(parse_endpoints(" , ").is_err());
        assert_eq!(url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(url("http://h:1"), "http://h:1");
    }

    #[test]
    fn the_claim_is_one_compare_and_set_on_the_owner_key() {
        use etcdpb::compare::TargetUnion;
        use etcdpb::request_op::Request;
        let t = claim_txn(b"bench/r/owner/o1".to_vec(), "node-1");
        assert_eq!(t.compare.len(), 1);
        let c = &t.compare[0];
        assert_eq!(c.key, b"bench/r/owner/o1");
        assert_eq!(c.target, etcdpb::compare::CompareTarget::Create as i32);
        assert_eq!(c.result, etcdpb::compare::CompareResult::Equal as i32);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));
        match &t.success[..] {
            [etcdpb::RequestOp {
                request: Some(Request::RequestPut(p)),
            }] => assert_eq!((&p.key[..], &p.value[..]), (&c.key[..], &b"node-1"[..])),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &t.failure[..],
            [etcdpb::RequestOp { request: Some(Request::RequestRange(r)) }] if r.key == c.key && !r.serializable
        ));
        // On the wire, as etcd's rpc.proto numbers it: compare = 1 (key = 3,
        // create_revision = 5, target CREATE = 1), success = 2, failure = 3.
        let bytes = t.encode_to_vec();
        assert_eq!(bytes[0], 0x0a, "field 1, length-delimited");
        let compare = etcdpb::Compare::decode(&bytes[2..2 + bytes[1] as usize]).unwrap();
        assert_eq!(&compare, c);
        let raw = c.encode_to_vec();
        assert!(
            raw.windows(2).any(|w| w == [0x10, 0x01]),
            "target = CREATE: {raw:x?}"
        );
        assert!(
            raw.windows(2).any(|w| w == [0x28, 0x00]),
            "create_revision = 0: {raw:x?}"
        );
    }

    #[test]
    fn claim_answers() {
        use etcdpb::response_op::Response;
        let ok = etcdpb::TxnResponse {
            succeeded: true,
            ..Default::default()
        };
        assert!(matches!(claim_answer(&ok), Answer::Accepted));
        let owned = etcdpb::TxnResponse {
            succeeded: false,
            responses: vec![etcdpb::ResponseOp {
                response: Some(Response::ResponseRange(etcdpb::RangeResponse {
                    kvs: vec![etcdpb::KeyValue {
                        value: b"node-2".to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        assert!(matches!(claim_answer(&owned), Answer::Rejected(c) if c == "already_owned"));
        let odd = etcdpb::TxnResponse::default();
        assert!(matches!(claim_answer(&odd), Answer::Failed(_)));
    }

    #[test]
    fn order_records_are_json() {
        let v: Value = serde_json::from_slice(&order_record("o-7", 7)).unwrap();
        assert_eq!(v["total"], order_total(7));
        assert_eq!(v["order_id"], "o-7");
    }
}
