//! The cluster invariants, one function each, over a chain fetched from the
//! replicas. Pure: they take entries and return `Err(description)` naming the
//! first violation, so they are unit-tested here against hand-made chains and
//! the cluster harness turns an `Err` into a panic.
//!
//! - [`check_identical`]: every replica holds the same chain.
//! - [`check_links`]: every entry hashes and links to its predecessor.
//! - [`check_replay`]: replaying every command through [`MemState`] (the
//!   reference state machine) reproduces byte-identical entries.
//! - [`check_signatures`]: every command but genesis verifies against the key
//!   enrolled for its signer.
//! - [`check_single_owner`]: at most one accepted claim per order, the owner is
//!   the first accepted claim, every `already_owned` names that owner.
//! - [`check_acknowledged`]: every acknowledged `(seq, hash)` is in the chain.

use arbor_proto::ledger::{verify_command, Entry, Head};
use arbor_proto::pb;
use arbor_proto::pb::command::Body;
use arbor_proto::rules::{Code, MemState};

use crate::acks::Ack;
use crate::fixtures::decode_envelope;

/// Every replica's chain equals the first one's. `chains` is `(replica id, chain)`.
pub fn check_identical(chains: &[(u64, Vec<pb::LedgerEntry>)]) -> Result<(), String> {
    let Some((first_id, first)) = chains.first() else {
        return Err("no replica to compare".into());
    };
    for (id, chain) in &chains[1..] {
        if let Some(i) = (0..first.len().min(chain.len())).find(|i| first[*i] != chain[*i]) {
            return Err(format!(
                "replica {id} differs from replica {first_id} at seq {}: {:?} vs {:?}",
                first[i].seq,
                short(&chain[i]),
                short(&first[i])
            ));
        }
        if first.len() != chain.len() {
            return Err(format!(
                "replica {id} has {} entries, replica {first_id} has {}",
                chain.len(),
                first.len()
            ));
        }
    }
    Ok(())
}

fn short(e: &pb::LedgerEntry) -> String {
    let o = e.outcome.clone().unwrap_or_default();
    format!(
        "seq {} time {} {} {} order {:?} hash {}",
        e.seq,
        e.time_ms,
        o.code,
        o.message,
        e.order_id,
        hex::encode(&e.hash)
    )
}

/// Converts the chain and checks every hash and link, starting at sequence 0.
pub fn check_links(chain: &[pb::LedgerEntry]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::with_capacity(chain.len());
    let mut prev: Option<Head> = None;
    for p in chain {
        let e = Entry::from_pb(p)?;
        e.verify_link(prev.as_ref())?;
        prev = Some(e.head());
        out.push(e);
    }
    Ok(out)
}

/// Replays every command (entry 0 as genesis) and compares each produced
/// entry byte for byte. Returns the replayed state.
pub fn check_replay(entries: &[Entry]) -> Result<MemState, String> {
    let mut state = MemState::default();
    for (i, e) in entries.iter().enumerate() {
        // `rules::Applied` is not re-exported by arbor-proto, so look at the
        // chain instead of matching on the result.
        let before = state.entries.len();
        let result = state.apply(&e.command, e.time_ms, i == 0);
        if state.entries.len() != before + 1 {
            return Err(format!(
                "entry {}: replay does not append it: {result:?}",
                e.seq
            ));
        }
        let r = state.entries.last().expect("just appended");
        if r != e {
            return Err(format!("entry {}: replay differs: {}", e.seq, diff(e, r)));
        }
    }
    Ok(state)
}

fn diff(stored: &Entry, replayed: &Entry) -> String {
    let mut d = Vec::new();
    if stored.seq != replayed.seq {
        d.push(format!("seq {} vs replayed {}", stored.seq, replayed.seq));
    }
    if stored.time_ms != replayed.time_ms {
        d.push(format!(
            "time {} vs replayed {}",
            stored.time_ms, replayed.time_ms
        ));
    }
    if (stored.accepted, &stored.code, &stored.message)
        != (replayed.accepted, &replayed.code, &replayed.message)
    {
        d.push(format!(
            "outcome {} {:?} vs replayed {} {:?}",
            stored.code, stored.message, replayed.code, replayed.message
        ));
    }
    if stored.order_id != replayed.order_id || stored.order_prev_seq != replayed.order_prev_seq {
        d.push(format!(
            "order link {:?}@{} vs replayed {:?}@{}",
            stored.order_id, stored.order_prev_seq, replayed.order_id, replayed.order_prev_seq
        ));
    }
    if stored.prev_hash != replayed.prev_hash {
        d.push("prev_hash".into());
    }
    if d.is_empty() {
        d.push("hash".into());
    }
    d.join("; ")
}

/// Every entry but genesis carries a signature that verifies against the key
/// its signer had at that point of the chain (replayed step by step, so
/// rotated keys are judged by the key in force, and a revoked key signs
/// nothing after its revocation). The replayed `state` is not needed.
pub fn check_signatures(entries: &[Entry], _state: &MemState) -> Result<(), String> {
    let mut s = MemState::default();
    let mut cluster_id = String::new();
    for e in entries {
        let (env, cmd) = decode_envelope(&e.command);
        if e.seq == 0 {
            let Some(Body::Genesis(g)) = &cmd.body else {
                return Err("entry 0 is not the genesis command".into());
            };
            // Every later signature names the cluster id genesis fixed.
            cluster_id = g.cluster_id.clone();
        } else {
            if matches!(cmd.body, Some(Body::Genesis(_))) {
                return Err(format!("entry {}: a second genesis", e.seq));
            }
            let party = s.parties.get(&env.signer).ok_or_else(|| {
                format!(
                    "entry {}: signer {:?} is not enrolled before it",
                    e.seq, env.signer
                )
            })?;
            if party.revoked {
                return Err(format!(
                    "entry {}: signer {} has a revoked key",
                    e.seq, env.signer
                ));
            }
            verify_command(&env, &cluster_id, &party.public_key)
                .map_err(|err| format!("entry {}: {err}", e.seq))?;
        }
        s.apply(&e.command, e.time_ms, e.seq == 0);
    }
    Ok(())
}

/// Never two owners: replaying step by step, a claim is only accepted on an
/// order nobody owns (or whose owner's lease ran out by the entry's time)
/// and that is not fenced for its old owner (rules version 2),
/// and every claim rejected as `already_owned` names the owner at that point.
pub fn check_single_owner(entries: &[Entry], _state: &MemState) -> Result<(), String> {
    let mut s = MemState::default();
    for e in entries {
        let (env, cmd) = decode_envelope(&e.command);
        if let Some(Body::ClaimOrder(c)) = &cmd.body {
            let owner = s.orders.get(&c.order_id).and_then(|o| {
                o.owner
                    .clone()
                    .filter(|_| !o.lease_lapsed(e.time_ms))
                    .map(|w| (w, o.claimed_seq))
            });
            // Rules version 2: never claimed while fenced for its old owner.
            let fenced = s.orders.get(&c.order_id).and_then(|o| {
                let config = s.config.clone().unwrap_or_default();
                o.fence
                    .as_ref()
                    .filter(|_| o.owner.is_none() && !o.open_at(e.time_ms, &config))
                    .map(|f| (f.node.clone(), f.until_ms))
            });
            if let (true, Some((node, until))) = (e.accepted, &fenced) {
                return Err(format!(
                    "entry {} accepted a claim of {} by {} while it was fenced for {node} until {until}",
                    e.seq, c.order_id, env.signer
                ));
            }
            if e.accepted {
                if let Some((owner, seq)) = owner {
                    return Err(format!(
                        "order {} has two owners: entry {} accepted a claim by {} while {owner} owned it (since entry {seq})",
                        c.order_id, e.seq, env.signer
                    ));
                }
            } else if e.code == Code::AlreadyOwned.as_str() {
                let Some((owner, seq)) = owner else {
                    return Err(format!(
                        "entry {}: claim on {} rejected as already_owned but nobody owned it",
                        e.seq, c.order_id
                    ));
                };
                if !e.message.contains(owner.as_str()) {
                    return Err(format!(
                        "entry {}: already_owned message {:?} does not name the owner {owner} (entry {seq})",
                        e.seq, e.message
                    ));
                }
            }
        }
        s.apply(&e.command, e.time_ms, e.seq == 0);
    }
    Ok(())
}

/// Every acknowledged `(seq, hash)` is in the chain with the acknowledged outcome.
pub fn check_acknowledged(entries: &[Entry], acks: &[Ack]) -> Result<(), String> {
    for a in acks {
        let Some(e) = entries.get(a.seq as usize) else {
            return Err(format!(
                "acknowledged entry {} ({}) is missing: the chain ends at {}",
                a.seq,
                a.code,
                entries.len() as i64 - 1
            ));
        };
        if e.hash.as_slice() != a.hash.as_slice() {
            return Err(format!(
                "acknowledged entry {} had hash {}, the chain has {} ({} {:?})",
                a.seq,
                hex::encode(&a.hash),
                hex::encode(e.hash),
                e.code,
                e.message
            ));
        }
        if e.accepted != a.accepted || e.code != a.code {
            return Err(format!(
                "acknowledged entry {} had outcome {}, the chain has {}",
                a.seq, a.code, e.code
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{sample_order, sample_profile_body, SAMPLE_TOTAL};
    use arbor_proto::ledger::sign_command;
    use ed25519_dalek::SigningKey;
    use prost::Message;

    struct Fixture {
        entries: Vec<Entry>,
        state: MemState,
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn cmd(nonce: u64, body: Body) -> pb::Command {
        pb::Command {
            nonce,
            body: Some(body),
        }
    }

    fn enroll(id: &str, role: pb::Role, kind: pb::NodeKind, k: &SigningKey) -> Body {
        Body::EnrollParty(pb::EnrollParty {
            party_id: id.into(),
            role: role as i32,
            kind: kind as i32,
            public_key: k.verifying_key().to_bytes().to_vec(),
            channel_names: if role == pb::Role::Channel {
                vec![crate::fixtures::CHANNEL_NAME.into()]
            } else {
                Vec::new()
            },
        })
    }

    fn claim(order: &str) -> Body {
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: order.into(),
            price_version: 1,
            total: SAMPLE_TOTAL,
        })
    }

    /// genesis, enrol channel and two nodes, their profiles, register o-1, claim by a (accepted), claim by b (already_owned).
    fn fixture() -> Fixture {
        let (op, ch, a, b) = (key(1), key(2), key(3), key(4));
        let genesis = pb::SignedCommand {
            command: cmd(
                0,
                Body::Genesis(pb::Genesis {
                    claim_deadlines: None,
                    cluster_id: "t".into(),
                    lease_grace_ms: 0,
                    rules_version: 0,
                    fence_ms: 0,
                    members: Vec::new(),
                    operators: vec![pb::GenesisOperator {
                        party_id: "operator".into(),
                        public_key: op.verifying_key().to_bytes().to_vec(),
                    }],
                }),
            )
            .encode_to_vec(),
            signer: String::new(),
            signature: Vec::new(),
        };
        let cmds = [
            genesis,
            sign_command(
                &op,
                "t",
                "operator",
                &cmd(
                    1,
                    enroll("shop", pb::Role::Channel, pb::NodeKind::Unspecified, &ch),
                ),
            ),
            sign_command(
                &op,
                "t",
                "operator",
                &cmd(
                    2,
                    enroll("store-a", pb::Role::Node, pb::NodeKind::Store, &a),
                ),
            ),
            sign_command(
                &op,
                "t",
                "operator",
                &cmd(
                    3,
                    enroll("store-b", pb::Role::Node, pb::NodeKind::Store, &b),
                ),
            ),
            sign_command(&a, "t", "store-a", &cmd(4, sample_profile_body())),
            sign_command(&b, "t", "store-b", &cmd(5, sample_profile_body())),
            sign_command(
                &ch,
                "t",
                "shop",
                &cmd(6, Body::RegisterOrder(sample_order("o-1"))),
            ),
            sign_command(&a, "t", "store-a", &cmd(7, claim("o-1"))),
            sign_command(&b, "t", "store-b", &cmd(8, claim("o-1"))),
        ];
        let mut state = MemState::default();
        for (i, c) in cmds.iter().enumerate() {
            let r = state.apply(&c.encode_to_vec(), 1000 + i as u64, i == 0);
            assert_eq!(state.entries.len(), i + 1, "fixture command {i}: {r:?}");
        }
        Fixture {
            entries: state.entries.clone(),
            state,
        }
    }

    fn to_pb(entries: &[Entry]) -> Vec<pb::LedgerEntry> {
        entries.iter().map(|e| e.to_pb()).collect()
    }

    /// Recomputes every hash and link after a tampering, so only deeper checks can find it.
    fn relink(entries: &mut [Entry]) {
        for i in 0..entries.len() {
            if i > 0 {
                entries[i].prev_hash = entries[i - 1].hash;
            }
            entries[i].hash = entries[i].compute_hash();
        }
    }

    fn ack(e: &Entry) -> Ack {
        Ack {
            seq: e.seq,
            hash: e.hash.to_vec(),
            accepted: e.accepted,
            code: e.code.clone(),
        }
    }

    #[test]
    fn a_good_chain_passes_every_check() {
        let f = fixture();
        assert_eq!(f.entries[8].code, "already_owned");
        let chain = to_pb(&f.entries);
        check_identical(&[(1, chain.clone()), (2, chain.clone())]).unwrap();
        let entries = check_links(&chain).unwrap();
        let state = check_replay(&entries).unwrap();
        check_signatures(&entries, &state).unwrap();
        check_single_owner(&entries, &state).unwrap();
        let acks: Vec<Ack> = entries.iter().map(ack).collect();
        check_acknowledged(&entries, &acks).unwrap();
        assert_eq!(state.orders["o-1"].owner.as_deref(), Some("store-a"));
        assert_eq!(f.state.entries.len(), 9);
    }

    #[test]
    fn a_divergent_replica_is_named() {
        let f = fixture();
        let chain = to_pb(&f.entries);
        let mut other = chain.clone();
        other[4].time_ms += 1;
        let err = check_identical(&[(1, chain.clone()), (3, other)]).unwrap_err();
        assert!(err.contains("replica 3") && err.contains("seq 4"), "{err}");
        let err = check_identical(&[(1, chain.clone()), (2, chain[..5].to_vec())]).unwrap_err();
        assert!(err.contains("5 entries"), "{err}");
    }

    #[test]
    fn a_flipped_byte_breaks_the_links() {
        let f = fixture();
        let mut chain = to_pb(&f.entries);
        chain[3].command[10] ^= 1;
        let err = check_links(&chain).unwrap_err();
        assert!(err.contains("entry 3"), "{err}");
    }

    #[test]
    fn a_rewritten_outcome_fails_replay_even_with_valid_hashes() {
        let f = fixture();
        let mut entries = f.entries.clone();
        entries[8].accepted = true;
        entries[8].code = "accepted".into();
        entries[8].message.clear();
        relink(&mut entries);
        let chain = to_pb(&entries);
        let entries = check_links(&chain).unwrap();
        let err = check_replay(&entries).unwrap_err();
        assert!(err.contains("entry 8") && err.contains("outcome"), "{err}");
    }

    #[test]
    fn a_forged_signature_is_found() {
        let f = fixture();
        let mut entries = f.entries.clone();
        let (mut env, _) = decode_envelope(&entries[7].command);
        env.signature[0] ^= 1;
        entries[7].command = env.encode_to_vec();
        relink(&mut entries);
        let state = check_replay(&entries).unwrap();
        let err = check_signatures(&entries, &state).unwrap_err();
        assert!(err.contains("entry 7") && err.contains("store-a"), "{err}");
    }

    #[test]
    fn two_accepted_claims_are_found() {
        let f = fixture();
        let mut entries = f.entries.clone();
        entries[8].accepted = true;
        entries[8].code = "accepted".into();
        let err = check_single_owner(&entries, &f.state).unwrap_err();
        assert!(err.contains("two owners"), "{err}");

        let mut entries = f.entries.clone();
        entries[8].message = "order o-1 is owned by someone".into();
        let err = check_single_owner(&entries, &f.state).unwrap_err();
        assert!(err.contains("does not name the owner"), "{err}");
    }

    #[test]
    fn a_lost_acknowledgement_is_found() {
        let f = fixture();
        let mut gone = ack(&f.entries[8]);
        gone.seq = 9;
        let err = check_acknowledged(&f.entries, &[gone]).unwrap_err();
        assert!(err.contains("entry 9") && err.contains("missing"), "{err}");
        let mut replaced = ack(&f.entries[7]);
        replaced.hash[0] ^= 1;
        let err = check_acknowledged(&f.entries, &[replaced]).unwrap_err();
        assert!(err.contains("entry 7"), "{err}");
    }
}
