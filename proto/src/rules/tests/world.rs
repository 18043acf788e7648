//! The protocol test world: a state with genesis, a channel and nodes, and
//! one method per command a test sends, each returning the appended entry.

use ed25519_dalek::SigningKey;

use super::*;

pub(super) const HOUR: u64 = 3_600_000;
pub(super) const GRACE: u64 = 1_000; // the tests' genesis lease grace

pub(super) struct World {
    pub(super) s: MemState,
    pub(super) op: SigningKey,
    pub(super) ch: SigningKey,
    pub(super) nodes: Vec<SigningKey>,
    pub(super) nonce: u64,
}

impl World {
    pub(super) fn new(nodes: u8) -> World {
        World::with_rules(nodes, 0, 0)
    }

    /// A world whose genesis names rules version `version` and fence `fence_ms`.
    pub(super) fn with_rules(nodes: u8, version: u32, fence_ms: u64) -> World {
        let (s, op, ch, nodes) = setup_with(nodes, version, fence_ms);
        World {
            s,
            op,
            ch,
            nodes,
            nonce: 1000,
        }
    }

    pub(super) fn next_nonce(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce
    }

    /// Applies a command signed by node `n` at time `t`.
    pub(super) fn node(&mut self, n: usize, t: u64, body: Body) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(&self.nodes[n], &format!("n{n}"), nonce, body);
        appended(self.s.apply(&bytes, t, false))
    }

    pub(super) fn channel(&mut self, t: u64, body: Body) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(&self.ch, "shop", nonce, body);
        appended(self.s.apply(&bytes, t, false))
    }

    pub(super) fn operator(&mut self, t: u64, body: Body) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(&self.op, "ops", nonce, body);
        appended(self.s.apply(&bytes, t, false))
    }

    pub(super) fn register(&mut self, id: &str, t: u64) -> Entry {
        let e = self.channel(t, Body::RegisterOrder(order(id, &format!("m-{id}"), 500)));
        assert!(e.accepted, "{e:?}");
        e
    }

    pub(super) fn register_with(&mut self, o: pb::RegisterOrder, t: u64) -> Entry {
        let e = self.channel(t, Body::RegisterOrder(o));
        assert!(e.accepted, "{e:?}");
        e
    }

    pub(super) fn claim(&mut self, n: usize, id: &str, t: u64) -> Entry {
        let o = &self.s.orders[id];
        let (version, total) = (o.price_version, o.total);
        self.node(
            n,
            t,
            Body::ClaimOrder(pb::ClaimOrder {
                order_id: id.into(),
                price_version: version,
                total,
            }),
        )
    }

    pub(super) fn milestone(&mut self, n: usize, id: &str, t: u64, m: pb::Milestone) -> Entry {
        let mut body = pb::ReportMilestone {
            order_id: id.into(),
            milestone: m as i32,
            ..Default::default()
        };
        if m == pb::Milestone::Shipped {
            body.carrier = "sf-express".into();
            body.tracking_id = "SF123".into();
        }
        if m == pb::Milestone::Delivered {
            body.proof_of_delivery = "pod/photo-1".into();
        }
        self.node(n, t, Body::ReportMilestone(body))
    }

    pub(super) fn offer(&mut self, n: usize, id: &str, to: &str, t: u64, ttl: u64) -> Entry {
        self.node(
            n,
            t,
            Body::OfferHandoff(pb::OfferHandoff {
                order_id: id.into(),
                to: to.into(),
                expires_in_ms: ttl,
            }),
        )
    }

    pub(super) fn accept(
        &mut self,
        n: usize,
        id: &str,
        offer_seq: u64,
        t: u64,
        damaged: bool,
    ) -> Entry {
        self.node(
            n,
            t,
            Body::AcceptHandoff(pb::AcceptHandoff {
                order_id: id.into(),
                offer_seq,
                damaged,
                note: if damaged {
                    "box crushed".into()
                } else {
                    String::new()
                },
            }),
        )
    }

    pub(super) fn publish(&mut self, n: usize, t: u64, p: pb::PublishProfile) -> Entry {
        let e = self.node(n, t, Body::PublishProfile(p));
        assert!(e.accepted);
        e
    }

    /// Enrols the replica party "arbor-replica-1" (whose key signs the sweep's
    /// `RecordLapse`) and returns its key.
    pub(super) fn replica(&mut self, t: u64) -> SigningKey {
        let rk = key(90);
        let e = self.operator(
            t,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "arbor-replica-1".into(),
                role: pb::Role::Replica as i32,
                kind: 0,
                public_key: rk.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        );
        assert!(e.accepted, "{e:?}");
        rk
    }

    /// The leader's sweep records the lapse (or fence expiry) of `id` at `t`.
    pub(super) fn sweep(&mut self, rk: &SigningKey, id: &str, t: u64) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(
            rk,
            "arbor-replica-1",
            nonce,
            Body::RecordLapse(pb::RecordLapse {
                order_id: id.into(),
            }),
        );
        appended(self.s.apply(&bytes, t, false))
    }

    pub(super) fn release(&mut self, n: usize, id: &str, t: u64) -> Entry {
        self.node(
            n,
            t,
            Body::ReleaseOrder(pb::ReleaseOrder {
                shortage: false,
                order_id: id.into(),
                reason: "did not ship".into(),
            }),
        )
    }

    pub(super) fn stats(&self, n: usize) -> NodeStats {
        self.s
            .stats
            .get(&format!("n{n}"))
            .cloned()
            .unwrap_or_default()
    }
}

pub(super) fn rejected(e: &Entry, code: Code, needle: &str) {
    assert!(!e.accepted, "expected {code}, got accepted: {e:?}");
    assert_eq!(e.code, code.as_str(), "{}", e.message);
    assert!(
        e.message.contains(needle),
        "{:?} does not contain {needle:?}",
        e.message
    );
}
