//! The rules, tested as rules: unit cases for every outcome, grouped by
//! command family like `decide/`, and property tests over random command
//! sequences. This file holds the fixtures every group uses (keys, signed
//! commands, a state with genesis, a channel and nodes).

use ed25519_dalek::SigningKey;
use prost::Message;

use super::mem::Applied;
use super::*;
use crate::ledger::{sign_command, Entry};
use crate::pb::command::Body;

mod basics;
mod carriers;
mod claims;
mod disputes;
mod encoding;
mod fences;
mod handoffs;
mod health;
mod keys;
mod membership;
mod milestones;
mod orders;
mod profiles;
mod property;
mod refusals;
mod returns;
mod sla;
mod sourcing;
mod versions;
mod world;

/// Admission as the leader does it (there with signatures checked in
/// batches): decode, validate, authorize, verify. Returns the command and the
/// key its signature was verified against (`None` for genesis), which the
/// proposal carries to [`apply`].
fn admit(view: &impl StateView, bytes: &[u8]) -> Result<(Admitted, Option<Vec<u8>>), Refusal> {
    let a = decode(bytes)?;
    let party = authorize(view, &a, false)?;
    let key = match party {
        Some(p) => {
            let cluster = view.config().map(|c| c.cluster_id).unwrap_or_default();
            check_signature(&a, &p, &cluster)?;
            Some(p.public_key)
        }
        None => None,
    };
    Ok((a, key))
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn genesis_nonce(op: &SigningKey, nonce: u64) -> Vec<u8> {
    genesis_with(op, nonce, 0, 0)
}

/// Genesis under rules version `rules_version` (0: version 1) with fence `fence_ms`.
fn genesis_with(op: &SigningKey, nonce: u64, rules_version: u32, fence_ms: u64) -> Vec<u8> {
    let cmd = pb::Command {
        nonce,
        body: Some(Body::Genesis(pb::Genesis {
            claim_deadlines: None,
            cluster_id: "test".into(),
            lease_grace_ms: 1_000,
            rules_version,
            fence_ms,
            members: Vec::new(),
            operators: vec![pb::GenesisOperator {
                party_id: "ops".into(),
                public_key: op.verifying_key().to_bytes().to_vec(),
            }],
        })),
    };
    pb::SignedCommand {
        command: cmd.encode_to_vec(),
        signer: String::new(),
        signature: vec![],
    }
    .encode_to_vec()
}

fn signed(k: &SigningKey, signer: &str, nonce: u64, body: Body) -> Vec<u8> {
    sign_command(
        k,
        "test",
        signer,
        &pb::Command {
            nonce,
            body: Some(body),
        },
    )
    .encode_to_vec()
}

fn enroll(
    op: &SigningKey,
    nonce: u64,
    id: &str,
    role: pb::Role,
    kind: pb::NodeKind,
    k: &SigningKey,
) -> Vec<u8> {
    signed(
        op,
        "ops",
        nonce,
        Body::EnrollParty(pb::EnrollParty {
            party_id: id.into(),
            role: role as i32,
            kind: kind as i32,
            public_key: k.verifying_key().to_bytes().to_vec(),
            // The test channel "shop" sells on the marketplace "meituan".
            channel_names: if role == pb::Role::Channel {
                vec!["meituan".into()]
            } else {
                Vec::new()
            },
        }),
    )
}

fn order(id: &str, ext: &str, price: i64) -> pb::RegisterOrder {
    pb::RegisterOrder {
        order_id: id.into(),
        external_refs: vec![pb::ExternalRef {
            channel: "meituan".into(),
            external_id: ext.into(),
        }],
        lines: vec![pb::OrderLine {
            sku: "sku-1".into(),
            quantity: 2,
            unit_price: price,
        }],
        currency: "CNY".into(),
        total: 2 * price,
        destination_region: "cn-sh".into(),
        ..Default::default()
    }
}

fn claim(
    k: &SigningKey,
    node: &str,
    nonce: u64,
    order_id: &str,
    version: u64,
    total: i64,
) -> Vec<u8> {
    signed(
        k,
        node,
        nonce,
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: order_id.into(),
            price_version: version,
            total,
        }),
    )
}

/// A state with genesis, a channel "shop" and nodes "n0".."n{nodes-1}".
fn setup(nodes: u8) -> (MemState, SigningKey, SigningKey, Vec<SigningKey>) {
    setup_with(nodes, 0, 0)
}

/// [`setup`] under rules version `rules_version` (0: version 1) with fence `fence_ms`.
fn setup_with(
    nodes: u8,
    rules_version: u32,
    fence_ms: u64,
) -> (MemState, SigningKey, SigningKey, Vec<SigningKey>) {
    let op = key(1);
    let ch = key(2);
    let mut s = MemState::default();
    assert!(matches!(
        s.apply(&genesis_with(&op, 0, rules_version, fence_ms), 10, true),
        Applied::Appended(_)
    ));
    s.apply(
        &enroll(
            &op,
            1,
            "shop",
            pb::Role::Channel,
            pb::NodeKind::Unspecified,
            &ch,
        ),
        11,
        false,
    );
    let mut keys = Vec::new();
    for i in 0..nodes {
        let k = key(10 + i);
        s.apply(
            &enroll(
                &op,
                100 + i as u64,
                &format!("n{i}"),
                pb::Role::Node,
                pb::NodeKind::Store,
                &k,
            ),
            12,
            false,
        );
        let profile = appended(s.apply(
            &signed(&k, &format!("n{i}"), 1, Body::PublishProfile(profile())),
            12,
            false,
        ));
        assert!(profile.accepted, "{profile:?}");
        keys.push(k);
    }
    (s, op, ch, keys)
}

/// The profile every test node publishes: serves cn-sh, 100 open orders,
/// dispatch within an hour.
fn profile() -> pb::PublishProfile {
    pb::PublishProfile {
        regions: vec!["cn-sh".into()],
        max_open_orders: 100,
        dispatch_time_ms: 3_600_000,
        ..Default::default()
    }
}

fn appended(a: Applied) -> Entry {
    match a {
        Applied::Appended(e) => e,
        other => panic!("expected an appended entry, got {other:?}"),
    }
}
