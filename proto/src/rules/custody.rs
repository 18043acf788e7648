//! Who held an order's goods when, laid out over the order's ledger entries:
//! the custody the responsibility rules judge by ([`super::disputes`]), as
//! intervals an auditor can check entry by entry (`arbor audit trace`).
//!
//! Everything here is computed from the entries alone — their outcome and
//! their decoded command — so anyone holding an order's entries (verified
//! against a checkpoint) gets the same intervals without trusting a
//! replica's view of the order. Only accepted entries move custody: a
//! rejected claim never makes its signer a holder. A lease lapse is the one
//! fact a command does not carry: the rules record it with the first
//! accepted command on the order after the deadline and name it in that
//! entry's message, in the wording of [`LapseNote`].

use std::fmt;

use super::code::Grade;
pub use super::disputes::How;
use super::disputes::{custody_after, Custody};
use super::state::{Event, EventKind};
use crate::pb;
use crate::pb::command::Body;

/// One entry of an order's history, as an auditor has it.
#[derive(Clone, Copy, Debug)]
pub struct OrderEntry<'a> {
    pub seq: u64,
    /// The entry's (leader) time.
    pub time_ms: u64,
    /// The party that signed the command.
    pub signer: &'a str,
    pub accepted: bool,
    /// The outcome's message (where an accepted entry names a lapse).
    pub message: &'a str,
    /// The decoded command (`None` if it does not decode).
    pub body: Option<&'a Body>,
}

impl OrderEntry<'_> {
    /// The lapse this entry recorded, if any: only an accepted entry records
    /// one, and its message then starts with exactly the rules' [`LapseNote`].
    pub fn lapse(&self) -> Option<LapseNote> {
        if !self.accepted {
            return None;
        }
        self.message.split("; ").find_map(LapseNote::parse)
    }

    /// Rules version 4: the unsigned hand-off this entry recorded, if any:
    /// the [`UnsignedNote`] in an accepted entry's message.
    pub fn unsigned(&self) -> Option<UnsignedNote> {
        if !self.accepted {
            return None;
        }
        self.message.split("; ").find_map(UnsignedNote::parse)
    }

    /// The fence expiry this entry recorded, if any (rules version 2): the
    /// [`FenceExpiryNote`] in an accepted entry's message.
    pub fn fence_expiry(&self) -> Option<FenceExpiryNote> {
        if !self.accepted {
            return None;
        }
        self.message.split("; ").find_map(FenceExpiryNote::parse)
    }
}

/// Reads a note's number: ASCII digits only.
fn num(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The note the rules write into the entry that records the end of a
/// fence (rules version 2): `fence of NODE expired at UNTIL (lapsed at
/// entry SEQ)`. After a [`LapseNote`] in the same message, joined by "; ",
/// when one entry records both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceExpiryNote {
    /// The old owner the order was fenced for.
    pub node: String,
    pub until_ms: u64,
    /// The entry that recorded the lapse and began the fence.
    pub lapsed_seq: u64,
}

impl FenceExpiryNote {
    /// Reads a note back; `None` unless `message` is a whole fence expiry note.
    pub fn parse(message: &str) -> Option<FenceExpiryNote> {
        let rest = message.strip_prefix("fence of ")?.strip_suffix(")")?;
        let (node, rest) = rest.rsplit_once(" expired at ")?;
        let (until, seq) = rest.split_once(" (lapsed at entry ")?;
        if node.is_empty() {
            return None;
        }
        Some(FenceExpiryNote {
            node: node.to_string(),
            until_ms: num(until)?,
            lapsed_seq: num(seq)?,
        })
    }
}

impl fmt::Display for FenceExpiryNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fence of {} expired at {} (lapsed at entry {})",
            self.node, self.until_ms, self.lapsed_seq
        )
    }
}

/// The note the rules write into an accepted plain `shipped` from rules
/// version 4 on, when the carrier it names is not an enrolled carrier:
/// `unsigned hand-off: CARRIER is not an enrolled carrier, so NODE stays the
/// custodian until delivery`. The carrier carries as the node's agent
/// ([`How::ShippersAgent`]). After any lapse note, joined by "; ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedNote {
    pub carrier: String,
    /// The node that shipped (and stays the custodian).
    pub node: String,
}

impl UnsignedNote {
    /// Reads a note back; `None` unless `message` is a whole unsigned note.
    pub fn parse(message: &str) -> Option<UnsignedNote> {
        let rest = message
            .strip_prefix("unsigned hand-off: ")?
            .strip_suffix(" stays the custodian until delivery")?;
        let (carrier, node) = rest.split_once(" is not an enrolled carrier, so ")?;
        if carrier.is_empty() || node.is_empty() || node.contains(' ') {
            return None;
        }
        Some(UnsignedNote {
            carrier: carrier.to_string(),
            node: node.to_string(),
        })
    }
}

impl fmt::Display for UnsignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsigned hand-off: {} is not an enrolled carrier, so {} stays the custodian until delivery",
            self.carrier, self.node
        )
    }
}

/// The note the rules write into the entry that records a lapsed lease:
/// `lease of OWNER lapsed at DEADLINE (owner since entry SEQ, dispatch time
/// MS ms of profile vN + grace)`, and from rules version 2, when the order
/// was picked or packed, `, fenced until UNTIL` after it.
/// [`fmt::Display`] gives that text back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapseNote {
    /// The owner whose lease lapsed.
    pub owner: String,
    pub deadline_ms: u64,
    /// The entry that began the lease (claim or accepted handoff).
    pub since_seq: u64,
    pub dispatch_time_ms: u64,
    pub profile_version: u64,
    /// Rules version 2: the lapse fenced the order for its owner until then.
    pub fenced_until_ms: Option<u64>,
}

impl LapseNote {
    /// Reads a note back; `None` unless `message` is a whole lapse note.
    pub fn parse(message: &str) -> Option<LapseNote> {
        let rest = message.strip_prefix("lease of ")?;
        let (rest, fenced_until_ms) = match rest.rsplit_once(" + grace), fenced until ") {
            Some((rest, until)) => (rest, Some(num(until)?)),
            None => (rest.strip_suffix(" + grace)")?, None),
        };
        let (owner, rest) = rest.rsplit_once(" lapsed at ")?;
        let (deadline, rest) = rest.split_once(" (owner since entry ")?;
        let (since, rest) = rest.split_once(", dispatch time ")?;
        let (dispatch, version) = rest.split_once(" ms of profile v")?;
        if owner.is_empty() {
            return None;
        }
        Some(LapseNote {
            owner: owner.to_string(),
            deadline_ms: num(deadline)?,
            since_seq: num(since)?,
            dispatch_time_ms: num(dispatch)?,
            profile_version: num(version)?,
            fenced_until_ms,
        })
    }
}

impl fmt::Display for LapseNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease of {} lapsed at {} (owner since entry {}, dispatch time {} ms of profile v{} + grace)",
            self.owner, self.deadline_ms, self.since_seq, self.dispatch_time_ms, self.profile_version
        )?;
        if let Some(until) = self.fenced_until_ms {
            write!(f, ", fenced until {until}")?;
        }
        Ok(())
    }
}

/// A span of custody: one holder from the entry that gave it the goods to
/// the entry that took them away (`end` is `None` while it still holds them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub holder: String,
    /// How it came to hold them ([`How::Claim`], an acceptance, [`How::Carrier`]
    /// or, rules version 3, [`How::SignedTender`]).
    pub how: How,
    pub from_seq: u64,
    pub from_ms: u64,
    pub end: Option<End>,
    /// Entries that reported delivery without proof while it held them
    /// (custody stays with the carrier).
    pub deliveries_without_proof: Vec<u64>,
}

/// The entry that ended an interval, and the fact it recorded there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    pub seq: u64,
    pub time_ms: u64,
    /// [`EventKind::Lapsed`], [`EventKind::Released`],
    /// [`EventKind::HandedOff`], [`EventKind::Shipped`],
    /// [`EventKind::Delivered`] with proof, or (rules version 2, after a
    /// [`EventKind::Fenced`] lapse that keeps custody)
    /// [`EventKind::FenceCleared`] or [`EventKind::FenceExpired`].
    pub fact: EventKind,
}

/// Who held the order's goods when, from its entries oldest first.
pub fn intervals(entries: &[OrderEntry<'_>]) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::new();
    let mut cur: Option<Custody> = None;
    for e in facts(entries) {
        let next = custody_after(cur.clone(), &e);
        if next == cur {
            continue;
        }
        match &next {
            Some(n) if n.how.is_delivery_kept() => {
                if let Some(open) = out.last_mut().filter(|i| i.end.is_none()) {
                    open.deliveries_without_proof.push(e.seq);
                }
            }
            _ => {
                if let Some(open) = out.last_mut().filter(|i| i.end.is_none()) {
                    open.end = Some(End {
                        seq: e.seq,
                        time_ms: e.time_ms,
                        fact: e.kind.clone(),
                    });
                }
                if let Some(n) = &next {
                    out.push(Interval {
                        holder: n.holder.clone(),
                        how: n.how,
                        from_seq: e.seq,
                        from_ms: e.time_ms,
                        end: None,
                        deliveries_without_proof: Vec::new(),
                    });
                }
            }
        }
        cur = next;
    }
    out
}

/// The custody facts the accepted entries recorded, as the rules store them
/// with the order (`Order::events`), in entry order: a lapse first, then
/// what the command itself did. The profile version and dispatch time of a
/// lease start are not in the entries and are left 0 (custody does not use
/// them).
pub fn facts(entries: &[OrderEntry<'_>]) -> Vec<Event> {
    let mut out = Vec::new();
    // Rules version 2: the old owner the order is fenced for.
    let mut fenced: Option<String> = None;
    for e in entries.iter().filter(|e| e.accepted) {
        let mut push = |kind| {
            out.push(Event {
                seq: e.seq,
                time_ms: e.time_ms,
                kind,
            })
        };
        let lapse = e.lapse();
        match &lapse {
            Some(l) if l.fenced_until_ms.is_some() => {
                fenced = Some(l.owner.clone());
                push(EventKind::Fenced {
                    node: l.owner.clone(),
                    deadline_ms: l.deadline_ms,
                    until_ms: l.fenced_until_ms.unwrap_or_default(),
                });
            }
            Some(l) => push(EventKind::Lapsed {
                node: l.owner.clone(),
                deadline_ms: l.deadline_ms,
            }),
            None => {}
        }
        if let Some(x) = e.fence_expiry() {
            fenced = None;
            push(EventKind::FenceExpired {
                node: x.node,
                until_ms: x.until_ms,
            });
        }
        let node = e.signer.to_string();
        let fenced_signer = fenced.as_deref() == Some(e.signer);
        match e.body {
            // The fenced old owner confirms it did not ship.
            Some(Body::ReleaseOrder(_)) if fenced_signer => {
                fenced = None;
                push(EventKind::FenceCleared { node });
            }
            // Rules version 3: an accepted assignment is a claim.
            Some(Body::ClaimOrder(_) | Body::AcceptAssignment(_)) => push(EventKind::Claimed {
                node,
                profile_version: 0,
                dispatch_time_ms: 0,
            }),
            // Rules version 3: the channel or an operator took it back.
            Some(Body::ReassignOrder(r)) if !r.from.is_empty() => push(EventKind::Reassigned {
                node: r.from.clone(),
                by: node,
            }),
            Some(Body::AcceptHandoff(a)) => push(EventKind::HandedOff {
                from: entries
                    .iter()
                    .find(|o| o.seq == a.offer_seq)
                    .map(|o| o.signer.to_string())
                    .unwrap_or_default(),
                to: node,
                damaged: a.damaged,
                profile_version: 0,
                dispatch_time_ms: 0,
            }),
            // The lapsed owner giving the order back only confirms the lapse.
            Some(Body::ReleaseOrder(_)) if lapse.as_ref().is_some_and(|l| l.owner == node) => {}
            Some(Body::ReleaseOrder(_)) => push(EventKind::Released { node }),
            Some(Body::CancelOrder(_)) => {
                fenced = None;
                push(EventKind::Cancelled)
            }
            Some(Body::ReportMilestone(m)) => match pb::Milestone::try_from(m.milestone) {
                // Rules version 3: a tender to an enrolled carrier.
                Ok(pb::Milestone::Shipped) if m.tender => {
                    fenced = None;
                    push(EventKind::Tendered {
                        node,
                        carrier: m.carrier.clone(),
                    })
                }
                Ok(pb::Milestone::Shipped) => {
                    fenced = None;
                    push(EventKind::Shipped {
                        node,
                        carrier: m.carrier.clone(),
                        // Rules version 4: the node stays the custodian.
                        agent: e.unsigned().is_some(),
                    })
                }
                // Rules version 3: accepted, so the code matched.
                Ok(pb::Milestone::Delivered) if !m.delivery_code.is_empty() => {
                    push(EventKind::DeliveryProven {
                        by: node,
                        grade: Grade::Code,
                    })
                }
                Ok(pb::Milestone::Delivered) => push(EventKind::Delivered {
                    node,
                    proof: !m.proof_of_delivery.is_empty(),
                }),
                _ => {}
            },
            // Rules version 3: the carrier's signature moves custody.
            Some(Body::AcceptTender(a)) => push(EventKind::TenderAccepted {
                node: entries
                    .iter()
                    .find(|o| o.seq == a.tender_seq)
                    .map(|o| o.signer.to_string())
                    .unwrap_or_default(),
                carrier: node,
                damaged: a.damaged,
            }),
            Some(Body::ScanDelivery(s)) => push(EventKind::DeliveryProven {
                by: node,
                grade: if s.delivery_code.is_empty() {
                    Grade::Scan
                } else {
                    Grade::Code
                },
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use prost::Message;

    use super::*;
    use crate::ledger::{sign_command, Entry};
    use crate::rules::{Applied, MemState};

    const HOUR: u64 = 3_600_000;
    const GRACE: u64 = 1_000;

    /// A ledger in memory with an operator, channel "shop" and nodes n0..n2.
    struct World {
        s: MemState,
        keys: Vec<(String, SigningKey)>,
        nonce: u64,
    }

    impl World {
        fn new() -> World {
            let op = SigningKey::from_bytes(&[1; 32]);
            let mut w = World {
                s: MemState::default(),
                keys: vec![("ops".into(), op.clone())],
                nonce: 0,
            };
            let genesis = pb::SignedCommand {
                command: pb::Command {
                    nonce: 0,
                    body: Some(Body::Genesis(pb::Genesis {
                        claim_deadlines: None,
                        cluster_id: "test".into(),
                        lease_grace_ms: GRACE,
                        rules_version: 0,
                        fence_ms: 0,
                        members: Vec::new(),
                        operators: vec![pb::GenesisOperator {
                            party_id: "ops".into(),
                            public_key: op.verifying_key().to_bytes().to_vec(),
                        }],
                    })),
                }
                .encode_to_vec(),
                ..Default::default()
            };
            assert!(matches!(
                w.s.apply(&genesis.encode_to_vec(), 10, true),
                Applied::Appended(_)
            ));
            let mut parties = vec![("shop".to_string(), pb::Role::Channel, 2u8)];
            for i in 0..3u8 {
                parties.push((format!("n{i}"), pb::Role::Node, 10 + i));
            }
            for (id, role, seed) in parties {
                let k = SigningKey::from_bytes(&[seed; 32]);
                let kind = if role == pb::Role::Node {
                    pb::NodeKind::Store
                } else {
                    pb::NodeKind::Unspecified
                };
                let e = w.run(
                    "ops",
                    11,
                    Body::EnrollParty(pb::EnrollParty {
                        party_id: id.clone(),
                        role: role as i32,
                        kind: kind as i32,
                        public_key: k.verifying_key().to_bytes().to_vec(),
                        channel_names: if role == pb::Role::Channel {
                            vec!["meituan".into()]
                        } else {
                            Vec::new()
                        },
                    }),
                );
                assert!(e.accepted, "{e:?}");
                w.keys.push((id.clone(), k));
                if role == pb::Role::Node {
                    let e = w.run(
                        &id,
                        12,
                        Body::PublishProfile(pb::PublishProfile {
                            regions: vec!["cn-sh".into()],
                            max_open_orders: 10,
                            dispatch_time_ms: HOUR,
                            ..Default::default()
                        }),
                    );
                    assert!(e.accepted, "{e:?}");
                }
            }
            let e = w.run(
                "shop",
                20,
                Body::RegisterOrder(pb::RegisterOrder {
                    order_id: "o1".into(),
                    external_refs: vec![pb::ExternalRef {
                        channel: "meituan".into(),
                        external_id: "m-1".into(),
                    }],
                    lines: vec![pb::OrderLine {
                        sku: "sku-1".into(),
                        quantity: 2,
                        unit_price: 500,
                    }],
                    currency: "CNY".into(),
                    total: 1000,
                    destination_region: "cn-sh".into(),
                    ..Default::default()
                }),
            );
            assert!(e.accepted, "{e:?}");
            w
        }

        fn run(&mut self, signer: &str, t: u64, body: Body) -> Entry {
            self.nonce += 1;
            let key = &self.keys.iter().find(|(id, _)| id == signer).unwrap().1;
            let cmd = pb::Command {
                nonce: self.nonce,
                body: Some(body),
            };
            let bytes = sign_command(key, "test", signer, &cmd).encode_to_vec();
            match self.s.apply(&bytes, t, false) {
                Applied::Appended(e) => e,
                other => panic!("{other:?}"),
            }
        }

        fn claim(&mut self, node: &str, t: u64) -> Entry {
            let claim = pb::ClaimOrder {
                order_id: "o1".into(),
                price_version: 1,
                total: 1000,
            };
            self.run(node, t, Body::ClaimOrder(claim))
        }

        fn milestone(&mut self, node: &str, t: u64, m: pb::Milestone, pod: &str) -> Entry {
            let shipped = m == pb::Milestone::Shipped;
            let body = Body::ReportMilestone(pb::ReportMilestone {
                order_id: "o1".into(),
                milestone: m as i32,
                carrier: if shipped { "sf" } else { "" }.into(),
                tracking_id: if shipped { "T1" } else { "" }.into(),
                proof_of_delivery: pod.into(),
                ..Default::default()
            });
            self.run(node, t, body)
        }

        /// The order's entries, decoded.
        fn history(&self) -> Vec<Decoded> {
            self.s
                .entries
                .iter()
                .filter(|e| e.order_id == "o1")
                .map(|e| {
                    let env = pb::SignedCommand::decode(e.command.as_slice()).unwrap();
                    let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
                    Decoded {
                        entry: e.clone(),
                        signer: env.signer,
                        body: cmd.body,
                    }
                })
                .collect()
        }
    }

    struct Decoded {
        entry: Entry,
        signer: String,
        body: Option<Body>,
    }

    fn views(h: &[Decoded]) -> Vec<OrderEntry<'_>> {
        h.iter()
            .map(|d| OrderEntry {
                seq: d.entry.seq,
                time_ms: d.entry.time_ms,
                signer: &d.signer,
                accepted: d.entry.accepted,
                message: &d.entry.message,
                body: d.body.as_ref(),
            })
            .collect()
    }

    /// The custody facts of the stored order, as [`facts`] can know them.
    fn stored_facts(w: &World) -> Vec<Event> {
        w.s.orders["o1"]
            .events
            .iter()
            .filter_map(|e| {
                let kind = match &e.kind {
                    EventKind::Claimed { node, .. } => EventKind::Claimed {
                        node: node.clone(),
                        profile_version: 0,
                        dispatch_time_ms: 0,
                    },
                    EventKind::HandedOff {
                        from, to, damaged, ..
                    } => EventKind::HandedOff {
                        from: from.clone(),
                        to: to.clone(),
                        damaged: *damaged,
                        profile_version: 0,
                        dispatch_time_ms: 0,
                    },
                    EventKind::WrongPrice { .. } | EventKind::MilestoneWithoutOwnership { .. } => {
                        return None
                    }
                    other => other.clone(),
                };
                Some(Event { kind, ..e.clone() })
            })
            .collect()
    }

    fn spans(c: &[Interval]) -> Vec<(&str, u64, Option<u64>)> {
        c.iter()
            .map(|i| (i.holder.as_str(), i.from_seq, i.end.as_ref().map(|e| e.seq)))
            .collect()
    }

    #[test]
    fn a_rejected_claim_never_makes_its_signer_a_holder() {
        let mut w = World::new();
        let won = w.claim("n0", 100);
        assert!(won.accepted);
        let lost = w.claim("n1", 101);
        assert_eq!(
            (lost.accepted, lost.code.as_str()),
            (false, "already_owned")
        );
        // Seen by a rejected command, a lapse is not recorded by it.
        let late = 100 + HOUR + GRACE + 1;
        let seen = w.milestone("n0", late, pb::Milestone::Picked, "");
        assert!(!seen.accepted && seen.message.contains("lease of n0 lapsed"));
        let h = w.history();
        let c = intervals(&views(&h));
        assert_eq!(spans(&c), [("n0", won.seq, None)]);
        assert_eq!(c[0].how, How::Claim);
        assert!(views(&h).iter().all(|e| e.lapse().is_none()));
        assert_eq!(facts(&views(&h)), stored_facts(&w));
    }

    #[test]
    fn intervals_follow_the_rules_through_a_lapse_handoff_and_delivery() {
        let mut w = World::new();
        let first = w.claim("n0", 100);
        assert!(first.accepted);
        let release = pb::ReleaseOrder {
            shortage: false,
            order_id: "o1".into(),
            reason: "no stock".into(),
        };
        let released = w.run("n0", 110, Body::ReleaseOrder(release));
        assert!(released.accepted);
        let second = w.claim("n1", 120);
        assert!(second.accepted);
        assert!(!w.claim("n2", 130).accepted); // rejected: n1 still holds
        let late = 120 + HOUR + GRACE + 1;
        let relapse = w.claim("n2", late); // records n1's lapse
        assert!(relapse.accepted, "{relapse:?}");
        let note = LapseNote::parse(&relapse.message).expect("the rules' note parses");
        assert_eq!(note.to_string(), relapse.message);
        assert_eq!(
            (note.owner.as_str(), note.deadline_ms, note.since_seq),
            ("n1", 120 + HOUR + GRACE, second.seq)
        );
        let offer = pb::OfferHandoff {
            order_id: "o1".into(),
            to: "n0".into(),
            expires_in_ms: 60_000,
        };
        let offer = w.run("n2", late + 1, Body::OfferHandoff(offer));
        assert!(offer.accepted, "{offer:?}");
        let accept = pb::AcceptHandoff {
            order_id: "o1".into(),
            offer_seq: offer.seq,
            damaged: true,
            note: "dented".into(),
        };
        let accepted = w.run("n0", late + 2, Body::AcceptHandoff(accept));
        assert!(accepted.accepted, "{accepted:?}");
        let shipped = w.milestone("n0", late + 3, pb::Milestone::Shipped, "");
        assert!(shipped.accepted, "{shipped:?}");
        let delivered = w.milestone("n0", late + 4, pb::Milestone::Delivered, "");
        assert!(delivered.accepted, "{delivered:?}");

        let h = w.history();
        let v = views(&h);
        assert_eq!(facts(&v), stored_facts(&w));
        let c = intervals(&v);
        assert_eq!(
            spans(&c),
            [
                ("n0", first.seq, Some(released.seq)),
                ("n1", second.seq, Some(relapse.seq)),
                ("n2", relapse.seq, Some(accepted.seq)),
                ("n0", accepted.seq, Some(shipped.seq)),
                ("sf", shipped.seq, None),
            ]
        );
        let hows: Vec<How> = c.iter().map(|i| i.how).collect();
        assert_eq!(
            hows,
            [
                How::Claim,
                How::Claim,
                How::Claim,
                How::DamagedAcceptance,
                How::Carrier
            ]
        );
        assert!(matches!(
            c[0].end.as_ref().unwrap().fact,
            EventKind::Released { .. }
        ));
        assert!(
            matches!(&c[1].end.as_ref().unwrap().fact, EventKind::Lapsed { node, .. } if node == "n1")
        );
        assert!(
            matches!(&c[2].end.as_ref().unwrap().fact, EventKind::HandedOff { from, to, .. } if from == "n2" && to == "n0")
        );
        assert_eq!(c[4].deliveries_without_proof, [delivered.seq]);
        // The entry that recorded the lapse is the only one that says so.
        let lapses: Vec<(u64, LapseNote)> =
            v.iter().filter_map(|e| Some((e.seq, e.lapse()?))).collect();
        assert_eq!(lapses, [(relapse.seq, note)]);
    }

    #[test]
    fn a_lapsed_owner_releasing_ends_its_custody_once() {
        let mut w = World::new();
        let claim = w.claim("n0", 100);
        assert!(claim.accepted);
        let late = 100 + HOUR + GRACE + 1;
        let release = pb::ReleaseOrder {
            shortage: false,
            order_id: "o1".into(),
            reason: "too late".into(),
        };
        let r = w.run("n0", late, Body::ReleaseOrder(release));
        assert!(r.accepted && r.message.starts_with("lease of n0"), "{r:?}");
        assert!(w.milestone("n1", late + 1, pb::Milestone::Picked, "").code != "accepted");
        let h = w.history();
        assert_eq!(facts(&views(&h)), stored_facts(&w));
        let c = intervals(&views(&h));
        assert_eq!(spans(&c), [("n0", claim.seq, Some(r.seq))]);
        assert!(matches!(
            c[0].end.as_ref().unwrap().fact,
            EventKind::Lapsed { .. }
        ));
    }

    #[test]
    fn only_a_whole_note_is_a_lapse() {
        let note = LapseNote {
            owner: "store 7".into(),
            deadline_ms: 5,
            since_seq: 3,
            dispatch_time_ms: 4,
            profile_version: 2,
            fenced_until_ms: None,
        };
        assert_eq!(LapseNote::parse(&note.to_string()), Some(note.clone()));
        let fenced = LapseNote {
            fenced_until_ms: Some(9),
            ..note.clone()
        };
        assert_eq!(LapseNote::parse(&fenced.to_string()), Some(fenced.clone()));
        let expiry = FenceExpiryNote {
            node: "n0".into(),
            until_ms: 9,
            lapsed_seq: 3,
        };
        assert_eq!(
            FenceExpiryNote::parse(&expiry.to_string()),
            Some(expiry.clone())
        );
        for m in [
            "fence of n0 expired at 9",
            "fence of  expired at 9 (lapsed at entry 3)",
            "fence of n0 expired at 9 (lapsed at entry x)",
            "lease of n0 lapsed at 5 (owner since entry 3, dispatch time 4 ms of profile v2 + grace), fenced until ",
        ] {
            assert_eq!(FenceExpiryNote::parse(m), None, "{m:?}");
            assert_eq!(LapseNote::parse(m), None, "{m:?}");
        }
        for m in [
            "",
            "lease of n0 lapsed",
            "lease of  lapsed at 5 (owner since entry 3, dispatch time 4 ms of profile v2 + grace)",
            "lease of n0 lapsed at x (owner since entry 3, dispatch time 4 ms of profile v2 + grace)",
            "lease of n0 lapsed at 5 (owner since entry -3, dispatch time 4 ms of profile v2 + grace)",
            "not_owner: lease of n0 lapsed at 5 (owner since entry 3, dispatch time 4 ms of profile v2 + grace)",
            "lease of n0 lapsed at 5 (owner since entry 3, dispatch time 4 ms of profile v2 + grace) and more",
        ] {
            assert_eq!(LapseNote::parse(m), None, "{m:?}");
        }
        fn entry(message: &str, accepted: bool) -> OrderEntry<'_> {
            OrderEntry {
                seq: 1,
                time_ms: 1,
                signer: "n1",
                accepted,
                message,
                body: None,
            }
        }
        let text = note.to_string();
        assert_eq!(entry(&text, true).lapse(), Some(note));
        assert_eq!(entry(&text, false).lapse(), None);
    }
}
