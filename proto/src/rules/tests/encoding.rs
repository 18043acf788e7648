//! What admission refuses before any rule runs: commands over the size
//! limit, bytes that are not the canonical encoding of what they decode to
//! (unknown fields, overlong varints, repeated or reordered fields, defaults
//! written out), and signatures made for another cluster. Each is tried as an
//! attacker would, on an otherwise valid command, and must append nothing.

use super::*;

/// A signed claim by n0 for "o1" whose *command* bytes are `edit`ed and
/// then signed again (so only the encoding is wrong, never the signature).
fn claim_with(k: &SigningKey, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let cmd = pb::Command {
        nonce: 7,
        body: Some(Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1000,
        })),
    };
    let mut command = cmd.encode_to_vec();
    edit(&mut command);
    let signature = ed25519_dalek::Signer::sign(k, &ledger::command_message("test", &command))
        .to_bytes()
        .to_vec();
    pb::SignedCommand {
        command,
        signer: "n0".into(),
        signature,
    }
    .encode_to_vec()
}

fn registered() -> (MemState, Vec<SigningKey>) {
    let (mut s, _, ch, nodes) = setup(1);
    let e = appended(s.apply(
        &signed(&ch, "shop", 1, Body::RegisterOrder(order("o1", "m-1", 500))),
        20,
        false,
    ));
    assert!(e.accepted);
    (s, nodes)
}

/// Refused as malformed with a message containing `needle`; nothing appended.
fn assert_refused(s: &mut MemState, bytes: &[u8], needle: &str) {
    let before = (s.entries.len(), s.commands.len(), s.orders.clone());
    match admit(s, bytes) {
        Err(r) => {
            assert_eq!(r.kind(), RefusalKind::Malformed, "{r}");
            assert!(r.to_string().contains(needle), "{needle:?} not in {r}");
        }
        Ok(_) => panic!("admitted; expected a refusal containing {needle:?}"),
    }
    assert!(matches!(s.apply(bytes, 30, false), Applied::Refused(_)));
    assert_eq!(
        before,
        (s.entries.len(), s.commands.len(), s.orders.clone())
    );
}

#[test]
fn the_canonical_claim_is_admitted() {
    let (mut s, nodes) = registered();
    let bytes = claim_with(&nodes[0], |_| {});
    admit(&s, &bytes).unwrap();
    assert!(appended(s.apply(&bytes, 30, false)).accepted);
}

#[test]
fn unknown_fields_in_the_command_are_refused() {
    let (mut s, nodes) = registered();
    // Field 99 (length-delimited) at the end of Command: what the 1 GB attack used.
    let bytes = claim_with(&nodes[0], |c| {
        c.extend_from_slice(&[0x9a, 0x06, 3, b'x', b'y', b'z'])
    });
    assert_refused(
        &mut s,
        &bytes,
        "command payload is not in canonical encoding",
    );
    // An unknown varint field inside the nested ClaimOrder.
    let bytes = claim_with(&nodes[0], |c| {
        // Command = 08 07 | 9a 01 len ClaimOrder...; rewrite the body with a field 15 appended.
        let body = pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1000,
        }
        .encode_to_vec();
        let mut inner = body.clone();
        inner.extend_from_slice(&[0x78, 0x01]);
        let pos = c
            .windows(body.len())
            .position(|w| w == body.as_slice())
            .expect("body inside the command");
        c.truncate(pos - 1);
        c.push(inner.len() as u8);
        c.extend_from_slice(&inner);
    });
    assert_refused(&mut s, &bytes, "not in canonical encoding");
}

#[test]
fn overlong_varints_repeats_defaults_and_reordering_are_refused() {
    let (mut s, nodes) = registered();
    // nonce 7 as a two-byte varint (0x87 0x00).
    let bytes = claim_with(&nodes[0], |c| {
        assert_eq!(&c[..2], &[0x08, 0x07]);
        c.splice(0..2, [0x08, 0x87, 0x00]);
    });
    assert_refused(&mut s, &bytes, "not in canonical encoding");
    // nonce written twice (prost keeps the last).
    let bytes = claim_with(&nodes[0], |c| c.splice(0..0, [0x08, 0x07]).for_each(drop));
    assert_refused(&mut s, &bytes, "not in canonical encoding");
    // nonce moved after the body.
    let bytes = claim_with(&nodes[0], |c| {
        let nonce: Vec<u8> = c.drain(0..2).collect();
        c.extend(nonce);
    });
    assert_refused(&mut s, &bytes, "fields out of order");
    // A default value written out: price_version 0 ... use an explicit nonce 0 field first.
    let bytes = claim_with(&nodes[0], |c| c.splice(0..0, [0x08, 0x00]).for_each(drop));
    assert_refused(&mut s, &bytes, "not in canonical encoding");
}

#[test]
fn a_non_canonical_envelope_is_refused() {
    let (mut s, nodes) = registered();
    let good = claim_with(&nodes[0], |_| {});
    // An unknown field appended to the envelope.
    let mut bytes = good.clone();
    bytes.extend_from_slice(&[0x20, 0x01]);
    assert_refused(
        &mut s,
        &bytes,
        "signed command envelope is not in canonical encoding",
    );
    // The envelope's fields in reverse order.
    let env = pb::SignedCommand::decode(good.as_slice()).unwrap();
    let mut rev = Vec::new();
    pb::SignedCommand {
        signature: env.signature.clone(),
        ..Default::default()
    }
    .encode(&mut rev)
    .unwrap();
    pb::SignedCommand {
        signer: env.signer.clone(),
        ..Default::default()
    }
    .encode(&mut rev)
    .unwrap();
    pb::SignedCommand {
        command: env.command.clone(),
        ..Default::default()
    }
    .encode(&mut rev)
    .unwrap();
    assert_eq!(pb::SignedCommand::decode(rev.as_slice()).unwrap(), env);
    assert_refused(&mut s, &rev, "fields out of order");
}

#[test]
fn a_command_over_the_size_limit_is_refused_before_it_is_decoded() {
    let (mut s, nodes) = registered();
    // 3.9 MB of unknown fields inside a signed claim.
    let bytes = claim_with(&nodes[0], |c| {
        let junk = vec![b'j'; 3_900_000];
        c.extend_from_slice(&[0x9a, 0x06]);
        prost::encoding::encode_varint(junk.len() as u64, c);
        c.extend_from_slice(&junk);
    });
    assert_refused(
        &mut s,
        &bytes,
        "command size limit MAX_COMMAND_BYTES = 262144",
    );
    // Just over the limit, however well formed, is refused; at the limit the
    // size check passes (and the encoding check decides).
    let mut over = vec![0u8; MAX_COMMAND_BYTES + 1];
    over[0] = 0x0a;
    assert_refused(&mut s, &over, "262145 bytes");
    let at = vec![0u8; MAX_COMMAND_BYTES];
    let r = decode(&at).unwrap_err().to_string();
    assert!(!r.contains("size limit"), "{r}");
}

#[test]
fn the_largest_valid_command_fits_the_limit() {
    // RegisterOrder is the largest command: 1000 lines of maximal skus and
    // prices, 16 references of maximal ids, every text field full.
    let (_, _, ch, _) = setup(0);
    let id = |c: char| c.to_string().repeat(MAX_ID_LEN);
    let o = pb::RegisterOrder {
        ship_by_ms: 0,
        sourcing_mode: 0,
        order_id: id('o'),
        external_refs: (0..16)
            .map(|i| pb::ExternalRef {
                channel: id('c'),
                external_id: format!("{i:03}{}", "e".repeat(MAX_ID_LEN - 3)),
            })
            .collect(),
        lines: (0..1000)
            .map(|_| pb::OrderLine {
                sku: id('s'),
                quantity: 1,
                unit_price: 9_000_000_000_000_000,
            })
            .collect(),
        currency: "CNY".into(),
        total: 9_000_000_000_000_000_000,
        destination_region: id('r'),
        requirements: Some(pb::Requirements {
            cold_chain: true,
            hazmat: true,
            category: id('k'),
        }),
        promised_delivery_ms: u64::MAX,
        delivery_code_sha256: vec![0xff; 32],
    };
    let cmd = pb::Command {
        nonce: u64::MAX,
        body: Some(Body::RegisterOrder(o)),
    };
    let signed = ledger::sign_command(&ch, "test", &id('p'), &cmd).encode_to_vec();
    assert!(signed.len() < MAX_COMMAND_BYTES, "{} bytes", signed.len());
    // Structurally valid: the limit never refuses a command the rules allow.
    decode(&signed).unwrap();
}

#[test]
fn a_signature_for_another_cluster_is_refused() {
    let (s, nodes) = registered();
    let cmd = pb::Command {
        nonce: 7,
        body: Some(Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1000,
        })),
    };
    let other = ledger::sign_command(&nodes[0], "prod", "n0", &cmd).encode_to_vec();
    let r = admit(&s, &other).unwrap_err();
    assert_eq!(r.kind(), RefusalKind::BadSignature, "{r}");
    let same = ledger::sign_command(&nodes[0], "test", "n0", &cmd).encode_to_vec();
    admit(&s, &same).unwrap();
}

#[test]
fn a_genesis_cluster_id_that_could_blur_the_signed_message_is_refused() {
    for bad in ["", "a\0b", "with space", &"x".repeat(MAX_ID_LEN + 1)] {
        let cmd = pb::Command {
            nonce: 0,
            body: Some(Body::Genesis(pb::Genesis {
                claim_deadlines: None,
                cluster_id: bad.to_string(),
                lease_grace_ms: 0,
                rules_version: 0,
                fence_ms: 0,
                members: Vec::new(),
                operators: vec![pb::GenesisOperator {
                    party_id: "ops".into(),
                    public_key: key(1).verifying_key().to_bytes().to_vec(),
                }],
            })),
        };
        let r = validate_command(&cmd).unwrap_err().to_string();
        assert!(r.contains("cluster id"), "{bad:?}: {r}");
    }
}
