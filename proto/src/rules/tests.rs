//! The rules, tested as rules: unit cases for every outcome and property
//! tests over random command sequences.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use prost::Message;

use super::mem::Applied;
use super::*;
use crate::ledger::{sign_command, Entry};
use crate::pb::command::Body;

pub(super) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(super) fn genesis(op: &SigningKey) -> Vec<u8> {
    genesis_nonce(op, 0)
}

pub(super) fn genesis_nonce(op: &SigningKey, nonce: u64) -> Vec<u8> {
    let cmd = pb::Command {
        nonce,
        body: Some(Body::Genesis(pb::Genesis {
            cluster_id: "test".into(),
            lease_grace_ms: 1_000,
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

pub(super) fn signed(k: &SigningKey, signer: &str, nonce: u64, body: Body) -> Vec<u8> {
    sign_command(
        k,
        signer,
        &pb::Command {
            nonce,
            body: Some(body),
        },
    )
    .encode_to_vec()
}

pub(super) fn enroll(
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
        }),
    )
}

pub(super) fn order(id: &str, ext: &str, price: i64) -> pb::RegisterOrder {
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

pub(super) fn claim(
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
pub(super) fn setup(nodes: u8) -> (MemState, SigningKey, SigningKey, Vec<SigningKey>) {
    let op = key(1);
    let ch = key(2);
    let mut s = MemState::default();
    assert!(matches!(
        s.apply(&genesis(&op), 10, true),
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
pub(super) fn profile() -> pb::PublishProfile {
    pb::PublishProfile {
        regions: vec!["cn-sh".into()],
        max_open_orders: 100,
        dispatch_time_ms: 3_600_000,
        ..Default::default()
    }
}

pub(super) fn appended(a: Applied) -> Entry {
    match a {
        Applied::Appended(e) => e,
        other => panic!("expected an appended entry, got {other:?}"),
    }
}

#[test]
fn first_claim_wins_and_later_claims_name_the_owner() {
    let (mut s, _, ch, nodes) = setup(2);
    let e = appended(s.apply(
        &signed(&ch, "shop", 1, Body::RegisterOrder(order("o1", "m-1", 500))),
        20,
        false,
    ));
    assert!(e.accepted);
    let first = appended(s.apply(&claim(&nodes[0], "n0", 1, "o1", 1, 1000), 21, false));
    assert!(first.accepted);
    let second = appended(s.apply(&claim(&nodes[1], "n1", 1, "o1", 1, 1000), 22, false));
    assert!(!second.accepted);
    assert_eq!(second.code, Code::AlreadyOwned.as_str());
    assert!(second.message.contains("owned by n0"), "{}", second.message);
    assert_eq!(s.orders["o1"].owner.as_deref(), Some("n0"));
    // The rejected claim is linked into the order's history.
    assert_eq!(second.order_prev_seq, first.seq);
    assert_eq!(s.orders["o1"].last_seq, second.seq);
}

#[test]
fn a_claim_quoting_another_price_is_rejected_naming_the_locked_one() {
    let (mut s, _, ch, nodes) = setup(1);
    s.apply(
        &signed(&ch, "shop", 1, Body::RegisterOrder(order("o1", "m-1", 500))),
        20,
        false,
    );
    let e = appended(s.apply(&claim(&nodes[0], "n0", 1, "o1", 1, 999), 21, false));
    assert_eq!(e.code, Code::PriceMismatch.as_str());
    assert!(
        e.message.contains("version 1 total 1000 CNY"),
        "{}",
        e.message
    );
    let e = appended(s.apply(&claim(&nodes[0], "n0", 2, "o1", 2, 1000), 22, false));
    assert_eq!(e.code, Code::PriceMismatch.as_str());
    assert!(s.orders["o1"].owner.is_none());
}

#[test]
fn an_external_reference_belongs_to_one_order() {
    let (mut s, _, ch, _) = setup(0);
    s.apply(
        &signed(&ch, "shop", 1, Body::RegisterOrder(order("o1", "m-1", 500))),
        20,
        false,
    );
    let dup = appended(s.apply(
        &signed(&ch, "shop", 2, Body::RegisterOrder(order("o2", "m-1", 500))),
        21,
        false,
    ));
    assert_eq!(dup.code, Code::ExternalRefTaken.as_str());
    assert!(dup.message.contains("belongs to order o1"));
    assert!(!s.orders.contains_key("o2"));
    let again = appended(s.apply(
        &signed(&ch, "shop", 3, Body::RegisterOrder(order("o1", "m-2", 500))),
        22,
        false,
    ));
    assert_eq!(again.code, Code::DuplicateOrder.as_str());
    assert_eq!(s.order_by_ref("meituan", "m-1").as_deref(), Some("o1"));
    assert_eq!(s.order_by_ref("meituan", "m-2"), None);
}

#[test]
fn resending_the_same_bytes_is_a_duplicate() {
    let (mut s, _, ch, _) = setup(0);
    let cmd = signed(&ch, "shop", 1, Body::RegisterOrder(order("o1", "m-1", 500)));
    let e = appended(s.apply(&cmd, 20, false));
    let n = s.entries.len();
    assert_eq!(s.apply(&cmd, 30, false), Applied::Duplicate(e.seq));
    assert_eq!(s.entries.len(), n);
}

#[test]
fn refusals_append_nothing() {
    let (mut s, op, ch, nodes) = setup(1);
    let n = s.entries.len();
    let cases: Vec<(Vec<u8>, RefusalKind)> = vec![
        (vec![0xff, 0x01, 0x02], RefusalKind::Malformed),
        (genesis_nonce(&op, 5), RefusalKind::GenesisNotAllowed),
        // A node may not register orders.
        (
            signed(
                &nodes[0],
                "n0",
                1,
                Body::RegisterOrder(order("o9", "m-9", 5)),
            ),
            RefusalKind::WrongRole,
        ),
        (
            signed(
                &key(99),
                "ghost",
                1,
                Body::RegisterOrder(order("o9", "m-9", 5)),
            ),
            RefusalKind::UnknownSigner,
        ),
        (
            pb::SignedCommand {
                command: pb::Command {
                    nonce: 1,
                    body: Some(Body::RegisterOrder(order("o9", "m-9", 5))),
                }
                .encode_to_vec(),
                signer: "shop".into(),
                signature: vec![],
            }
            .encode_to_vec(),
            RefusalKind::Unsigned,
        ),
        (
            {
                let mut o = order("o9", "m-9", 5);
                o.total = 11;
                signed(&ch, "shop", 1, Body::RegisterOrder(o))
            },
            RefusalKind::Malformed,
        ),
        (
            signed(
                &op,
                "ops",
                1,
                Body::EnrollParty(pb::EnrollParty {
                    party_id: "x".into(),
                    role: 3,
                    kind: 0,
                    public_key: vec![1; 32],
                }),
            ),
            RefusalKind::Malformed,
        ),
    ];
    for (bytes, code) in cases {
        match s.apply(&bytes, 50, false) {
            Applied::Refused(r) => assert_eq!(r.kind(), code, "{r}"),
            other => panic!("expected refusal {code}, got {other:?}"),
        }
    }
    assert_eq!(s.entries.len(), n);
}

#[test]
fn admission_checks_the_signature() {
    let (s, _, ch, _) = setup(0);
    let good = signed(&ch, "shop", 1, Body::RegisterOrder(order("o1", "m-1", 5)));
    assert!(admit(&s, &good).is_ok());
    // Signed by another key under the channel's name.
    let forged = signed(
        &key(77),
        "shop",
        1,
        Body::RegisterOrder(order("o1", "m-1", 5)),
    );
    assert_eq!(
        admit(&s, &forged).unwrap_err().kind(),
        RefusalKind::BadSignature
    );
    // One flipped byte in the command.
    let mut env = pb::SignedCommand::decode(good.as_slice()).unwrap();
    let mut cmd = pb::Command::decode(env.command.as_slice()).unwrap();
    cmd.nonce ^= 1;
    env.command = cmd.encode_to_vec();
    assert_eq!(
        admit(&s, &env.encode_to_vec()).unwrap_err().kind(),
        RefusalKind::BadSignature
    );
}

#[derive(Clone, Debug)]
enum Op {
    Register {
        order: u8,
        ext: u8,
        price: u8,
    },
    Claim {
        node: u8,
        order: u8,
        version: u8,
        price: u8,
    },
    Resend(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u8..8, 1u8..4).prop_map(|(order, ext, price)| Op::Register { order, ext, price }),
        (0u8..4, 0u8..6, 0u8..3, 1u8..4).prop_map(|(node, order, version, price)| Op::Claim {
            node,
            order,
            version,
            price
        }),
        (0usize..64).prop_map(Op::Resend),
    ]
}

fn run(ops: &[Op]) -> MemState {
    let (mut s, _, ch, nodes) = setup(4);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let t = 100 + (i as u64 * 7) % 13; // clock jitters: time must still never go backwards
        let bytes = match o {
            Op::Register {
                order: n,
                ext,
                price,
            } => signed(
                &ch,
                "shop",
                i as u64,
                Body::RegisterOrder(order(&format!("o{n}"), &format!("m-{ext}"), *price as i64)),
            ),
            Op::Claim {
                node,
                order,
                version,
                price,
            } => claim(
                &nodes[*node as usize],
                &format!("n{node}"),
                i as u64,
                &format!("o{order}"),
                *version as u64,
                2 * *price as i64,
            ),
            Op::Resend(k) if !sent.is_empty() => sent[k % sent.len()].clone(),
            Op::Resend(_) => continue,
        };
        sent.push(bytes.clone());
        s.apply(&bytes, t, false);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ownership_and_chain_invariants(ops in proptest::collection::vec(op(), 0..60)) {
        let s = run(&ops);
        // Replay gives the same entries byte for byte.
        let again = run(&ops);
        prop_assert_eq!(&s.entries, &again.entries);

        let mut owner: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut prev: Option<crate::ledger::Head> = None;
        for e in &s.entries {
            prop_assert!(e.verify_link(prev.as_ref()).is_ok());
            prev = Some(e.head());
            let a = decode(&e.command).unwrap();
            if let Some(Body::ClaimOrder(c)) = &a.command.body {
                if e.accepted {
                    // Never two owners: an accepted claim only on an unowned order.
                    prop_assert!(!owner.contains_key(&c.order_id), "second owner for {}", c.order_id);
                    owner.insert(c.order_id.clone(), (a.envelope.signer.clone(), e.seq));
                } else if e.code == Code::AlreadyOwned.as_str() {
                    let (who, _) = owner.get(&c.order_id).expect("rejected as owned but no owner");
                    let expected = format!("owned by {who}");
                    prop_assert!(e.message.contains(&expected));
                }
            }
        }
        for (id, o) in &s.orders {
            prop_assert_eq!(o.owner.clone(), owner.get(id).map(|(w, _)| w.clone()));
            prop_assert_eq!(o.claimed_seq, owner.get(id).map(|(_, q)| *q).unwrap_or(0));
            // Walking the order's history links ends at its registration.
            let mut seq = o.last_seq;
            let mut steps = 0;
            loop {
                let e = &s.entries[seq as usize];
                prop_assert_eq!(&e.order_id, id);
                if e.order_prev_seq == 0 { prop_assert_eq!(seq, o.registered_seq); break; }
                prop_assert!(e.order_prev_seq < seq);
                seq = e.order_prev_seq;
                steps += 1;
                prop_assert!(steps < 1000);
            }
        }
    }
}
