//! Capability profiles: the profile in force gates every claim.

use super::world::*;
use super::*;

#[test]
fn the_profile_in_force_gates_every_claim() {
    let mut w = World::new(2);
    // A node without a profile.
    let k = key(50);
    let e = w.operator(
        13,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "bare".into(),
            role: pb::Role::Node as i32,
            kind: pb::NodeKind::Store as i32,
            public_key: k.verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    );
    assert!(e.accepted);
    w.register("o1", 20);
    let bytes = signed(
        &k,
        "bare",
        1,
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1000,
        }),
    );
    rejected(
        &appended(w.s.apply(&bytes, 21, false)),
        Code::NoProfile,
        "bare",
    );

    let mut far = order("o-bj", "m-bj", 5);
    far.destination_region = "cn-bj".into();
    w.register_with(far, 22);
    rejected(&w.claim(0, "o-bj", 23), Code::RegionNotServed, "cn-bj");

    let mut cold = order("o-cold", "m-cold", 5);
    cold.requirements = Some(pb::Requirements {
        cold_chain: true,
        ..Default::default()
    });
    w.register_with(cold, 24);
    rejected(
        &w.claim(0, "o-cold", 25),
        Code::ColdChainRequired,
        "cold chain",
    );

    let mut haz = order("o-haz", "m-haz", 5);
    haz.requirements = Some(pb::Requirements {
        hazmat: true,
        ..Default::default()
    });
    w.register_with(haz, 26);
    rejected(&w.claim(0, "o-haz", 27), Code::HazmatRequired, "hazmat");

    let mut cat = order("o-cat", "m-cat", 5);
    cat.requirements = Some(pb::Requirements {
        category: "fresh-food".into(),
        ..Default::default()
    });
    w.register_with(cat, 28);
    rejected(
        &w.claim(0, "o-cat", 29),
        Code::CategoryNotServed,
        "fresh-food",
    );

    // Version 2 of n0's profile covers all of it, with capacity 2.
    let e = w.publish(
        0,
        30,
        pb::PublishProfile {
            regions: vec!["cn-sh".into(), "cn-bj".into()],
            max_open_orders: 2,
            dispatch_time_ms: HOUR,
            cold_chain: true,
            hazmat: true,
            categories: vec!["fresh-food".into()],
            ..Default::default()
        },
    );
    assert_eq!(w.s.profiles["n0"].version, 2);
    assert_eq!(w.s.profiles["n0"].published_seq, e.seq);
    assert!(w.claim(0, "o-bj", 31).accepted);
    assert!(w.claim(0, "o-cold", 32).accepted);
    rejected(&w.claim(0, "o-haz", 33), Code::AtCapacity, "2 open orders");
    assert_eq!(w.stats(0).open_orders, 2);
    assert_eq!(
        w.s.orders["o-cold"].lease.as_ref().unwrap().profile_version,
        2
    );
    // Shipping one frees capacity.
    assert!(
        w.milestone(0, "o-cold", 34, pb::Milestone::Shipped)
            .accepted
    );
    assert!(w.claim(0, "o-haz", 35).accepted);
    assert_eq!(w.stats(0).open_orders, 2);
    assert_eq!(w.stats(0).claims, 3);
}
