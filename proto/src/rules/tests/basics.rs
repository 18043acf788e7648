//! The first rules: the first claim wins, a claim must quote the locked
//! price, external references are unique, resends are duplicates; and a
//! property test of single ownership and the chain's links.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

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
