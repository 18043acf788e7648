//! Membership: genesis's members, AddReplica and RemoveReplica.

use super::world::*;
use super::*;

fn member(node_id: u64, port: u16) -> pb::ReplicaMember {
    pb::ReplicaMember {
        node_id,
        addr: format!("10.0.0.{node_id}:{port}"),
        peer_addr: format!("10.0.0.{node_id}:{}", port + 100),
    }
}

/// A genesis naming operator `ops` (key 1) and `members`.
fn genesis_with(members: Vec<pb::ReplicaMember>) -> Vec<u8> {
    let cmd = pb::Command {
        nonce: 0,
        body: Some(Body::Genesis(pb::Genesis {
            claim_deadlines: None,
            cluster_id: "test".into(),
            lease_grace_ms: 1_000,
            rules_version: 0,
            fence_ms: 0,
            members,
            operators: vec![pb::GenesisOperator {
                party_id: "ops".into(),
                public_key: key(1).verifying_key().to_bytes().to_vec(),
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

/// The test world with replicas 1, 2 and 3 recorded at genesis.
fn world() -> World {
    let mut w = World::new(1);
    let mut s = MemState::default();
    appended(s.apply(
        &genesis_with(vec![member(1, 7101), member(2, 7101), member(3, 7101)]),
        10,
        true,
    ));
    w.s = s;
    w
}

fn add(id: u64, addr: &str, peer_addr: &str) -> Body {
    Body::AddReplica(pb::AddReplica {
        node_id: id,
        addr: addr.into(),
        peer_addr: peer_addr.into(),
    })
}

fn remove(id: u64) -> Body {
    Body::RemoveReplica(pb::RemoveReplica { node_id: id })
}

fn ids(s: &MemState) -> Vec<u64> {
    s.membership
        .as_ref()
        .map(|m| m.replicas.keys().copied().collect())
        .unwrap_or_default()
}

#[test]
fn genesis_records_the_first_members() {
    let w = world();
    let m = w.s.membership.as_ref().unwrap();
    assert_eq!(ids(&w.s), vec![1, 2, 3]);
    assert_eq!(m.replicas[&2].addr, "10.0.0.2:7101");
    assert_eq!(m.replicas[&2].peer_addr, "10.0.0.2:7201");
    assert_eq!(m.replicas[&2].added_seq, 0);
    // A genesis without members records an empty membership.
    let (s, ..) = setup(0);
    assert_eq!(s.membership, Some(Membership::default()));
}

#[test]
fn genesis_members_are_checked() {
    for (members, needle) in [
        (vec![member(1, 7101), member(1, 7102)], "replica 1 twice"),
        (vec![member(0, 7101)], "node id must be > 0"),
        (
            vec![pb::ReplicaMember {
                node_id: 1,
                addr: "10.0.0.1".into(),
                peer_addr: "10.0.0.1:7201".into(),
            }],
            "not HOST:PORT",
        ),
    ] {
        let mut s = MemState::default();
        match s.apply(&genesis_with(members), 10, true) {
            Applied::Refused(Refusal::Malformed(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected malformed genesis, got {other:?}"),
        }
    }
}

#[test]
fn add_replica() {
    let mut w = world();
    let e = w.operator(20, add(4, "10.0.0.4:7101", "10.0.0.4:7201"));
    assert!(e.accepted, "{e:?}");
    assert!(e.message.contains("{1, 2, 3, 4}"), "{}", e.message);
    assert_eq!(e.order_id, "");
    assert_eq!(ids(&w.s), vec![1, 2, 3, 4]);
    let m = w.s.membership.as_ref().unwrap();
    assert_eq!(m.replicas[&4].added_seq, e.seq);
    assert_eq!(m.changed_seq, e.seq);

    // Already a member.
    let again = w.operator(21, add(4, "10.0.0.9:7101", "10.0.0.9:7201"));
    rejected(&again, Code::ReplicaExists, "replica 4 is already a member");
    // Another member's address (client or peer, either way round).
    let taken = w.operator(22, add(5, "10.0.0.5:7101", "10.0.0.2:7101"));
    rejected(&taken, Code::ReplicaAddressInUse, "replica 2");
    let taken = w.operator(23, add(5, "10.0.0.3:7201", "10.0.0.5:7201"));
    rejected(&taken, Code::ReplicaAddressInUse, "replica 3");
    assert_eq!(ids(&w.s), vec![1, 2, 3, 4], "rejections change nothing");
    // Host names and IPv6 addresses are addresses too.
    let e = w.operator(24, add(6, "replica-6.example:7101", "[::1]:7201"));
    assert!(e.accepted, "{e:?}");
}

#[test]
fn remove_replica() {
    let mut w = world();
    let e = w.operator(20, remove(9));
    rejected(&e, Code::UnknownReplica, "replica 9 is not a member");
    let e = w.operator(21, remove(2));
    assert!(e.accepted, "{e:?}");
    assert!(e.message.contains("{1, 3}"), "{}", e.message);
    assert_eq!(ids(&w.s), vec![1, 3]);
    assert_eq!(w.s.membership.as_ref().unwrap().changed_seq, e.seq);
    let e = w.operator(22, remove(2));
    rejected(&e, Code::UnknownReplica, "replica 2 is not a member");
    assert!(w.operator(23, remove(1)).accepted);
    // The last voter stays.
    let e = w.operator(24, remove(3));
    rejected(&e, Code::LastReplica, "replica 3 is the last voter");
    assert_eq!(ids(&w.s), vec![3]);
    // A removed replica may be added again (by a new command).
    let e = w.operator(25, add(2, "10.0.0.2:7101", "10.0.0.2:7201"));
    assert!(e.accepted, "{e:?}");
    assert_eq!(ids(&w.s), vec![2, 3]);
}

#[test]
fn a_resend_or_a_replay_is_the_first_command() {
    let mut w = world();
    let rm = signed(&w.op, "ops", 77, remove(3));
    let first = appended(w.s.apply(&rm, 20, false));
    assert!(first.accepted);
    assert_eq!(w.s.apply(&rm, 21, false), Applied::Duplicate(first.seq));
    // Re-added; the captured RemoveReplica replayed later changes nothing.
    assert!(
        w.operator(22, add(3, "10.0.0.3:7101", "10.0.0.3:7201"))
            .accepted
    );
    let len = w.s.entries.len();
    assert_eq!(w.s.apply(&rm, 23, false), Applied::Duplicate(first.seq));
    assert_eq!(w.s.entries.len(), len);
    assert_eq!(ids(&w.s), vec![1, 2, 3]);
}

#[test]
fn only_operators_change_the_membership() {
    let mut w = world();
    // Enrol a channel and a node in this world (it has only the operator).
    let ch = key(2);
    let n = key(10);
    assert!(
        w.operator(
            11,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "shop".into(),
                role: pb::Role::Channel as i32,
                kind: 0,
                public_key: ch.verifying_key().to_bytes().to_vec(),
                channel_names: vec!["meituan".into()],
            }),
        )
        .accepted
    );
    assert!(
        w.operator(
            12,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "n0".into(),
                role: pb::Role::Node as i32,
                kind: pb::NodeKind::Store as i32,
                public_key: n.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        )
        .accepted
    );
    for (k, who) in [(&ch, "shop"), (&n, "n0")] {
        for body in [add(4, "10.0.0.4:7101", "10.0.0.4:7201"), remove(1)] {
            let bytes = signed(k, who, 5, body);
            let r = admit(&w.s, &bytes).unwrap_err();
            assert_eq!(r.kind(), RefusalKind::WrongRole, "{r}");
            assert!(r.to_string().contains("needs role operator"), "{r}");
            assert!(matches!(w.s.apply(&bytes, 20, false), Applied::Refused(_)));
        }
    }
    // Signed by nobody enrolled.
    let bytes = signed(&key(99), "mallory", 5, remove(1));
    assert_eq!(
        admit(&w.s, &bytes).unwrap_err().kind(),
        RefusalKind::UnknownSigner
    );
    assert_eq!(ids(&w.s), vec![1, 2, 3]);
}

#[test]
fn replica_structure_is_checked() {
    let w = world();
    let bad_adds = [
        (0, "10.0.0.4:7101", "10.0.0.4:7201", "node id must be > 0"),
        (4, "10.0.0.4", "10.0.0.4:7201", "client address"),
        (4, "10.0.0.4:0", "10.0.0.4:7201", "client address"),
        (4, "10.0.0.4:65536", "10.0.0.4:7201", "client address"),
        (4, ":7101", "10.0.0.4:7201", "client address"),
        (4, "a b:7101", "10.0.0.4:7201", "client address"),
        (4, "-x:7101", "10.0.0.4:7201", "client address"),
        (4, "10.0.0.4:+80", "10.0.0.4:7201", "client address"),
        (4, "[zz]:7101", "10.0.0.4:7201", "client address"),
        (4, "10.0.0.4:7101", "", "peer address"),
        (4, "10.0.0.4:7101", "10.0.0.4:7201/x", "peer address"),
    ];
    for (id, addr, peer, needle) in bad_adds {
        let bytes = signed(&w.op, "ops", 5, add(id, addr, peer));
        match decode(&bytes) {
            Err(Refusal::Malformed(m)) => assert!(m.contains(needle), "{addr} {peer}: {m}"),
            other => panic!("{addr} {peer}: expected malformed, got {other:?}"),
        }
    }
    let long = format!("{}:7101", "a".repeat(MAX_ADDR_LEN));
    assert!(decode(&signed(&w.op, "ops", 5, add(4, &long, "10.0.0.4:7201"))).is_err());
    assert!(decode(&signed(&w.op, "ops", 5, remove(0))).is_err());
    for ok in [
        "10.0.0.4:1",
        "[::1]:65535",
        "replica-4.arbor.internal:7101",
        "localhost:7101",
    ] {
        assert_eq!(check_addr("address", ok), Ok(()), "{ok}");
    }
}
