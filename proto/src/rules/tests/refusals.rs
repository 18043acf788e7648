//! Refusals: commands that are malformed, unsigned, signed by an unknown or
//! wrongly-roled party, or badly signed are refused and append nothing.

use super::world::*;
use super::*;

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
                    channel_names: Vec::new(),
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

#[test]
fn malformed_protocol_commands_are_refused() {
    let mut w = World::new(1);
    let n = w.s.entries.len();
    let bad: Vec<Body> = vec![
        Body::PublishProfile(pb::PublishProfile::default()),
        Body::PublishProfile(pb::PublishProfile {
            regions: vec!["cn-sh".into()],
            max_open_orders: 0,
            dispatch_time_ms: 1,
            ..Default::default()
        }),
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Shipped as i32,
            ..Default::default()
        }),
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Picked as i32,
            tracking_id: "x".into(),
            ..Default::default()
        }),
        Body::ReleaseOrder(pb::ReleaseOrder {
            shortage: false,
            order_id: "o1".into(),
            reason: String::new(),
        }),
        Body::OfferHandoff(pb::OfferHandoff {
            order_id: "o1".into(),
            to: "n0".into(),
            expires_in_ms: 0,
        }),
        Body::ReceiveReturn(pb::ReceiveReturn {
            order_id: "o1".into(),
            refund: -1,
            price_version: 1,
        }),
        Body::ReportException(pb::ReportException {
            order_id: "o1".into(),
            kind: 0,
            note: String::new(),
        }),
    ];
    for body in bad {
        let nonce = w.next_nonce();
        let bytes = signed(&w.nodes[0], "n0", nonce, body.clone());
        match w.s.apply(&bytes, 30, false) {
            Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::Malformed, "{body:?}: {r}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    assert_eq!(w.s.entries.len(), n);
}
