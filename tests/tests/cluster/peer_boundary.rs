//! The cluster's trust boundary, tried as an attacker on the same network
//! would: peers without a certificate, with one from another CA, with a valid
//! certificate of a non-member, and a member's certificate used to claim
//! another replica's identity or an impossible term. Every attempt is
//! refused, changes nothing (term, leader, members, ledger head), and the
//! cluster keeps serving claims throughout.

use std::path::Path;
use std::time::Duration;

use arbor_client::{Client, Commands, TlsOptions, Transport};
use arbor_node::types::{Member, TypeConfig};
use arbor_proto::pb;
use arbor_proto::pb::raft_client::RaftClient;
use arbor_tests::cluster::{node_cert, TestCluster};
use arbor_tests::wait::TIMEOUT;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::impls::Vote;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::type_config::alias::{DefaultEntryOf, SnapshotMetaOf};
use openraft::{EntryPayload, LogId, Membership};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// A raft client to `addr` presenting `cert`/`key` (if any), trusting `ca`.
fn raft_client(
    addr: &str,
    ca: &[u8],
    id: Option<(&Path, &Path)>,
    domain: &str,
) -> RaftClient<tonic::transport::Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(domain);
    if let Some((cert, key)) = id {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    RaftClient::new(ch)
}

fn payload<T: serde::Serialize>(v: &T) -> pb::RaftPayload {
    pb::RaftPayload {
        data: arbor_node::raft::codec::encode(v).unwrap(),
        blob: Vec::new(),
    }
}

fn vote(term: u64, node: u64) -> pb::RaftPayload {
    let v: VoteRequest<TypeConfig> = VoteRequest::new(Vote::new(term, node), None);
    payload(&v)
}

/// An append from "leader" `node` at `term` carrying an enrolment of an
/// operator with a zero signature, and a membership naming replicas that do
/// not exist.
fn appends(term: u64, node: u64) -> Vec<pb::RaftPayload> {
    let cmd = pb::Command {
        nonce: 7,
        body: Some(pb::command::Body::EnrollParty(pb::EnrollParty {
            party_id: "mallory".into(),
            role: pb::Role::Operator as i32,
            kind: pb::NodeKind::Unspecified as i32,
            public_key: vec![7; 32],
            channel_names: Vec::new(),
        })),
    };
    let signed = pb::SignedCommand {
        command: prost::Message::encode_to_vec(&cmd),
        signer: "operator".into(),
        signature: vec![0; 64],
    };
    let leader = LeaderId {
        term,
        node_id: node,
    };
    let normal = DefaultEntryOf::<TypeConfig> {
        log_id: LogId::new(leader, 1_000),
        payload: EntryPayload::Normal(arbor_node::types::Request {
            command: prost::Message::encode_to_vec(&signed),
            time_ms: 1,
            genesis: false,
            verified_key: vec![7; 32],
        }),
    };
    let nodes = (1..=3u64)
        .chain(77..=79)
        .map(|i| {
            (
                i,
                Member {
                    addr: format!("127.0.0.1:{i}"),
                    peer_addr: format!("127.0.0.1:{i}"),
                },
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    let voters = nodes
        .keys()
        .copied()
        .collect::<std::collections::BTreeSet<_>>();
    let membership = DefaultEntryOf::<TypeConfig> {
        log_id: LogId::new(leader, 1_001),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes).unwrap()),
    };
    [normal, membership]
        .into_iter()
        .map(|e| {
            let rpc = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(term, node),
                prev_log_id: None,
                entries: vec![e],
                leader_commit: Some(LogId::new(leader, 1_001)),
            };
            payload(&rpc)
        })
        .collect()
}

fn snapshot(term: u64, node: u64, blob: Vec<u8>) -> pb::RaftPayload {
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(LogId::new(
            LeaderId {
                term,
                node_id: node,
            },
            5,
        )),
        last_membership: Default::default(),
    };
    let v = Vote::<LeaderId<u64, u64>>::new_committed(term, node);
    pb::RaftPayload {
        data: arbor_node::raft::codec::encode(&(&v, &meta)).unwrap(),
        blob,
    }
}

fn cosign() -> pb::CosignRequest {
    pb::CosignRequest {
        origin: "arbor".into(),
        size: 1,
        root: vec![0; 32],
        time_ms: 4_102_444_800_000, // 2100-01-01
        ..Default::default()
    }
}

/// What must not change: each replica's term, leader, members and head.
async fn views(c: &TestCluster) -> Vec<(u64, u64, u64, Vec<pb::Member>, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for id in c.ids() {
        let s = c.status(id).await.expect("status");
        out.push((id, s.term, s.leader_id, s.members, s.head_seq, s.head_hash));
    }
    out
}

/// Sends every forged raft call with `client`; returns each refusal's code.
async fn every_attack(
    c: &TestCluster,
    client: &mut RaftClient<tonic::transport::Channel>,
    claimed: u64,
) -> Vec<(String, Code)> {
    let term = c.status(1).await.unwrap().term;
    let mut codes = Vec::new();
    let mut note = |what: &str, r: Result<tonic::Response<pb::RaftPayload>, tonic::Status>| match r
    {
        Ok(_) => panic!("{what}: accepted"),
        Err(s) => codes.push((format!("{what}: {}", s.message()), s.code())),
    };
    note("vote", client.vote(vote(term + 1, claimed)).await);
    note("vote u64::MAX", client.vote(vote(u64::MAX, claimed)).await);
    for (i, a) in appends(term + 1, claimed).into_iter().enumerate() {
        note(&format!("append {i}"), client.append_entries(a).await);
    }
    note(
        "snapshot garbage",
        client
            .install_snapshot(futures::stream::iter([snapshot(
                term + 1,
                claimed,
                vec![0xAB; 4096],
            )]))
            .await,
    );
    match client.cosign_checkpoint(cosign()).await {
        Ok(_) => panic!("cosign: accepted"),
        Err(s) => codes.push((format!("cosign: {}", s.message()), s.code())),
    }
    codes
}

async fn claims_still_served(c: &TestCluster, tag: &str) {
    let shop = c.enroll_channel(&format!("shop-{tag}")).await;
    let node = c.enroll_node(&format!("store-{tag}")).await;
    let order = format!("o-{tag}");
    c.register_order(&shop, &order).await;
    let reply = c
        .client()
        .await
        .submit(node.claim_order(&order, 1, arbor_tests::fixtures::sample_order(&order).total))
        .await
        .expect("claim served");
    assert!(
        reply.outcome.as_ref().is_some_and(|o| o.accepted),
        "claim {order}: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_member_certificate_change_nothing() {
    let c = TestCluster::voters(3).await;
    claims_still_served(&c, "before").await;
    let before = views(&c).await;
    let pki = c.pki_dir();
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();

    // Another CA, and a valid certificate of a replica that is no member.
    let other = c.dir().join("other-ca");
    node_cert(
        &arbor_tests::bins::node_bin(),
        &["ca", "--dir", &other.display().to_string()],
    );
    node_cert(
        &arbor_tests::bins::node_bin(),
        &[
            "replica",
            "--dir",
            &other.display().to_string(),
            "--id",
            "1",
        ],
    );
    node_cert(
        &arbor_tests::bins::node_bin(),
        &["replica", "--dir", &pki.display().to_string(), "--id", "99"],
    );

    for id in c.ids() {
        let addr = c.peer_addr(id).to_string();
        let domain = format!("arbor-replica-{id}");

        // No certificate: the TLS handshake fails (or the call is refused).
        let mut anon = raft_client(&addr, &ca, None, &domain);
        let err = anon.vote(vote(u64::MAX, 99)).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok);

        // A certificate from another CA.
        let mut foreign = raft_client(
            &addr,
            &ca,
            Some((&other.join("replica-1.pem"), &other.join("replica-1.key"))),
            &domain,
        );
        let err = foreign.vote(vote(u64::MAX, 1)).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok, "{err}");

        // A valid certificate of a non-member: refused before anything is decoded.
        let mut stranger = raft_client(
            &addr,
            &ca,
            Some((&pki.join("replica-99.pem"), &pki.join("replica-99.key"))),
            &domain,
        );
        for (what, code) in every_attack(&c, &mut stranger, 99).await {
            assert_eq!(code, Code::PermissionDenied, "{what}");
        }

        // Plaintext to the TLS peer port and client port fails cleanly.
        let plain = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let err = RaftClient::new(plain).vote(vote(1, 99)).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok);
        let err = Client::local_status(&Transport::InsecurePlaintext, &c.endpoint(id))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unavailable"), "{err}");
    }
    claims_still_served(&c, "during").await;
    let after = views(&c).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.0, b.1, b.2, &b.3),
            (a.0, a.1, a.2, &a.3),
            "term/leader/members changed"
        );
    }
    c.assert_alive();
    let audit = c.check_invariants().await;
    assert!(
        !audit.state.parties.contains_key("mallory"),
        "the forged enrolment reached the ledger"
    );
}

/// A follower (`insider`) whose certificate an attacker holds, speaking to
/// the other follower (`target`).
struct Insider {
    leader: u64,
    insider: u64,
    target: u64,
    client: RaftClient<tonic::transport::Channel>,
}

async fn insider(c: &TestCluster) -> Insider {
    let pki = c.pki_dir();
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let leader = c.wait_leader(TIMEOUT).await;
    let insider = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let target = c
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != insider)
        .unwrap();
    let client = raft_client(
        c.peer_addr(target),
        &ca,
        Some((
            &pki.join(format!("replica-{insider}.pem")),
            &pki.join(format!("replica-{insider}.key")),
        )),
        &format!("arbor-replica-{target}"),
    );
    Insider {
        leader,
        insider,
        target,
        client,
    }
}

/// A member's own certificate cannot speak for another member, nor send a
/// term that would overflow, nor a forged snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_certificate_cannot_impersonate_or_send_impossible_terms() {
    let c = TestCluster::voters(3).await;
    let before = views(&c).await;
    let Insider {
        leader,
        insider,
        target,
        mut client,
    } = insider(&c).await;
    // Claiming to be the leader with the insider's certificate.
    let codes = every_attack(&c, &mut client, leader).await;
    for (what, code) in &codes[..codes.len() - 1] {
        assert_eq!(*code, Code::PermissionDenied, "{what}");
    }
    // The cosign request itself is a member's to make; its time is implausible.
    let (what, code) = codes.last().unwrap();
    assert_eq!(*code, Code::FailedPrecondition, "{what}");
    assert!(what.contains("clock"), "{what}");

    // As itself, with impossible terms: refused before raft sees them.
    let err = client.vote(vote(u64::MAX, insider)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("implausible"), "{err}");
    let term = c.status(target).await.unwrap().term;
    let err = client
        .install_snapshot(futures::stream::iter([snapshot(
            term,
            insider,
            vec![0xAB; 1024],
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("snapshot refused"), "{err}");

    claims_still_served(&c, "after").await;
    let after = views(&c).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.0, b.1, b.2, &b.3),
            (a.0, a.1, a.2, &a.3),
            "term/leader/members changed"
        );
    }
    c.assert_alive();
    c.check_invariants().await;
}

/// Clients need the CA: a client that trusts another CA is refused at the
/// handshake, one with the cluster's CA is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_check_the_cluster_ca() {
    let c = TestCluster::voters(1).await;
    let other = c.dir().join("other-ca");
    node_cert(
        &arbor_tests::bins::node_bin(),
        &["ca", "--dir", &other.display().to_string()],
    );
    let wrong = Transport::Tls(TlsOptions::new(
        std::fs::read(other.join("ca.pem")).unwrap(),
    ));
    let err = Client::local_status(&wrong, &c.endpoint(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    Client::local_status(c.transport(), &c.endpoint(1))
        .await
        .expect("served with the cluster CA");
}

/// A well-formed snapshot from a member that carries another history (here
/// a real snapshot of another cluster) is refused before raft sees it: its
/// ledger does not hold the receiver's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_history_is_refused() {
    let other = TestCluster::start(
        1,
        arbor_tests::cluster::Options {
            snapshot_every: Some(3),
            ..Default::default()
        },
    )
    .await;
    for i in 0..4 {
        other.enroll_channel(&format!("shop-{i}")).await;
    }
    // The bytes a send of its current snapshot carries.
    let dir = other.dir().join("n1/data/snapshots");
    let bytes = other
        .wait_until(
            "the other cluster to build a snapshot",
            TIMEOUT,
            async || {
                let mut bytes = Vec::new();
                arbor_node::storage::snapshot::export_current(&dir, &mut bytes)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .ok_or_else(|| format!("{}: no snapshot", dir.display()))?;
                Ok(bytes)
            },
        )
        .await;
    let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let meta: SnapshotMetaOf<TypeConfig> = serde_json::from_slice(&bytes[12..12 + len]).unwrap();

    let c = TestCluster::voters(3).await;
    let before = views(&c).await;
    let Insider {
        leader: _,
        insider,
        target,
        mut client,
    } = insider(&c).await;
    let term = c.status(target).await.unwrap().term.max(
        meta.last_log_id
            .as_ref()
            .map(|l| l.leader_id.term)
            .unwrap_or(0),
    );
    let v = Vote::<LeaderId<u64, u64>>::new_committed(term, insider);
    let err = client
        .install_snapshot(futures::stream::iter([pb::RaftPayload {
            data: arbor_node::raft::codec::encode(&(&v, &meta)).unwrap(),
            blob: bytes,
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("rewrite history"), "{err}");
    let after = views(&c).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.0, &b.3, b.4, &b.5),
            (a.0, &a.3, a.4, &a.5),
            "members/head changed"
        );
    }
    c.assert_alive();
    c.check_invariants().await;
}
