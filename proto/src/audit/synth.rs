//! Deterministic synthetic ledgers, for the verifier's tests and benchmark.
//!
//! Keys are fixed (`SigningKey::from_bytes([seed; 32])`), times and nonces are
//! derived from the position, and every entry is produced by the reference
//! replay ([`MemState`]), so a synthetic ledger is exactly what a cluster
//! would have written for the same commands. The workload mixes accepted and
//! rejected outcomes: registrations, winning claims, claims that lose to the
//! owner, claims quoting the wrong price, claims of unknown orders and
//! registrations whose external reference is taken.

use ed25519_dalek::SigningKey;
use prost::Message;

use super::export::{ExportHeader, ExportWriter};
use crate::ledger::checkpoint::{Checkpoint, NoteKey};
use crate::ledger::merkle::{consistency_proof, inclusion_proof, leaf_hash, root, Hash};
use crate::ledger::{sign_command, Entry};
use crate::pb;
use crate::pb::command::Body;
use crate::rules::{Applied, MemState};

/// The time of entry 0; entry `i` is stamped `T0 + 3 i` ms.
pub const T0: u64 = 1_765_000_000_000;
/// The cluster id in the genesis entry.
pub const CLUSTER_ID: &str = "synth";
const NODE_KINDS: [pb::NodeKind; 4] = [
    pb::NodeKind::Store,
    pb::NodeKind::Warehouse,
    pb::NodeKind::ThreePl,
    pb::NodeKind::Carrier,
];

/// A fixed test key.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A synthetic ledger and the keys that made it.
pub struct Synth {
    /// Operator `ops` (genesis) is `key(1)`.
    pub operator: SigningKey,
    /// Channel `shop` is `key(2)`.
    pub channel: SigningKey,
    /// Nodes `n0`.. are `key(10 + i)`.
    pub nodes: Vec<SigningKey>,
    /// Replica identities `arbor-replica-1`.. are `key(40 + i)`.
    pub replicas: Vec<(String, SigningKey)>,
    pub entries: Vec<Entry>,
}

/// One command of the workload, before signing.
enum Op {
    Genesis,
    Enroll(String, pb::Role, pb::NodeKind, [u8; 32]),
    Register { order: u64, ext: u64 },
    Claim { node: usize, order: u64, total: i64 },
    Profile(usize),
}

fn price(order: u64) -> i64 {
    100 + (order % 50) as i64
}

impl Synth {
    /// A ledger of `n` entries (at least the setup: genesis, a second
    /// operator, the channel, four nodes and the replicas) with `replicas`
    /// replica identities enrolled.
    pub fn build(n: u64, replicas: usize) -> Synth {
        let replicas = (0..replicas)
            .map(|i| (format!("arbor-replica-{}", i + 1), key(40 + i as u8)))
            .collect();
        Synth::build_keyed(n, key(1), replicas)
    }

    /// As [`Synth::build`], with another operator key (so another genesis)
    /// and the given replica identities: what a forger who holds these
    /// keys can build with the same names and cluster id.
    pub fn build_keyed(n: u64, operator: SigningKey, replicas: Vec<(String, SigningKey)>) -> Synth {
        let mut s = Synth {
            operator,
            channel: key(2),
            nodes: (0..4).map(|i| key(10 + i)).collect(),
            replicas,
            entries: Vec::new(),
        };
        let ops = s.workload(n);
        let cmds = s.sign_all(&ops);
        s.entries = replay(&cmds);
        s
    }

    /// The signed commands of the entries, in order.
    pub fn commands(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|e| e.command.clone()).collect()
    }

    fn workload(&self, n: u64) -> Vec<Op> {
        let mut ops = vec![
            Op::Genesis,
            Op::Enroll(
                "ops-2".into(),
                pb::Role::Operator,
                pb::NodeKind::Unspecified,
                key(3).verifying_key().to_bytes(),
            ),
            Op::Enroll(
                "shop".into(),
                pb::Role::Channel,
                pb::NodeKind::Unspecified,
                self.channel.verifying_key().to_bytes(),
            ),
        ];
        for (i, k) in self.nodes.iter().enumerate() {
            ops.push(Op::Enroll(
                format!("n{i}"),
                pb::Role::Node,
                NODE_KINDS[i],
                k.verifying_key().to_bytes(),
            ));
        }
        for i in 0..self.nodes.len() {
            ops.push(Op::Profile(i));
        }
        for (name, k) in &self.replicas {
            ops.push(Op::Enroll(
                name.clone(),
                pb::Role::Replica,
                pb::NodeKind::Unspecified,
                k.verifying_key().to_bytes(),
            ));
        }
        let nodes = self.nodes.len();
        let mut order = 0u64;
        while (ops.len() as u64) < n {
            let o = order;
            ops.push(Op::Register { order: o, ext: o });
            if o % 7 == 3 {
                ops.push(Op::Claim {
                    node: (o as usize + 2) % nodes,
                    order: o,
                    total: 2 * price(o) + 1,
                });
            }
            ops.push(Op::Claim {
                node: o as usize % nodes,
                order: o,
                total: 2 * price(o),
            });
            ops.push(Op::Claim {
                node: (o as usize + 1) % nodes,
                order: o,
                total: 2 * price(o),
            });
            if o % 11 == 5 {
                // The same external reference again, under a new order id.
                ops.push(Op::Register {
                    order: o + 1_000_000_000,
                    ext: o,
                });
            }
            if o % 13 == 7 {
                ops.push(Op::Claim {
                    node: 0,
                    order: o + 2_000_000_000,
                    total: 2,
                });
            }
            order += 1;
        }
        ops.truncate(n.max(3 + (2 * nodes + self.replicas.len()) as u64) as usize);
        ops
    }

    /// Signs the workload on every core (signing dominates building).
    fn sign_all(&self, ops: &[Op]) -> Vec<Vec<u8>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = ops.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = ops
                .chunks(chunk)
                .enumerate()
                .map(|(c, part)| {
                    s.spawn(move || {
                        part.iter()
                            .enumerate()
                            .map(|(j, op)| self.sign(c * chunk + j, op))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().expect("signing thread"))
                .collect()
        })
    }

    fn sign(&self, nonce: usize, op: &Op) -> Vec<u8> {
        let nonce = nonce as u64;
        let (k, signer, body) = match op {
            Op::Genesis => return genesis(&self.operator),
            Op::Enroll(id, role, kind, pk) => (
                &self.operator,
                "ops".to_string(),
                Body::EnrollParty(pb::EnrollParty {
                    party_id: id.clone(),
                    role: *role as i32,
                    kind: *kind as i32,
                    public_key: pk.to_vec(),
                    // The channel "shop" sells on the marketplace "meituan".
                    channel_names: if *role == pb::Role::Channel {
                        vec!["meituan".into()]
                    } else {
                        Vec::new()
                    },
                }),
            ),
            Op::Register { order, ext } => (
                &self.channel,
                "shop".to_string(),
                Body::RegisterOrder(register(*order, *ext)),
            ),
            Op::Profile(node) => (
                &self.nodes[*node],
                format!("n{node}"),
                Body::PublishProfile(pb::PublishProfile {
                    regions: vec![REGION.into()],
                    max_open_orders: u32::MAX,
                    dispatch_time_ms: 3_600_000,
                    ..Default::default()
                }),
            ),
            Op::Claim { node, order, total } => (
                &self.nodes[*node],
                format!("n{node}"),
                Body::ClaimOrder(pb::ClaimOrder {
                    order_id: format!("o-{order}"),
                    price_version: 1,
                    total: *total,
                }),
            ),
        };
        sign_command(
            k,
            CLUSTER_ID,
            &signer,
            &pb::Command {
                nonce,
                body: Some(body),
            },
        )
        .encode_to_vec()
    }

    /// The Merkle leaves of every entry.
    pub fn leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|e| leaf_hash(&e.hash)).collect()
    }

    /// The checkpoint of the first `size` entries (at the time of entry `size - 1`).
    pub fn checkpoint(&self, size: u64) -> Checkpoint {
        Checkpoint {
            origin: format!("arbor/{CLUSTER_ID}"),
            size,
            root: root(&self.leaves(), size),
            time_ms: T0 + 3 * size,
            map: None,
        }
    }

    /// The checkpoint as a signed note, signed by the replicas at `signers`.
    pub fn note(&self, cp: &Checkpoint, signers: &[usize]) -> String {
        let lines: Vec<String> = signers
            .iter()
            .map(|i| cp.sign_line(&self.replicas[*i].0, &self.replicas[*i].1))
            .collect();
        cp.note(&lines)
    }

    /// The replica identities as note keys.
    pub fn replica_note_keys(&self) -> Vec<NoteKey> {
        self.replicas
            .iter()
            .map(|(n, k)| NoteKey {
                name: n.clone(),
                public_key: k.verifying_key().to_bytes(),
            })
            .collect()
    }

    /// An export of `entries[from ..= to]` against `note`, a checkpoint of
    /// the first `size` entries (prefix and consistency proof computed here).
    pub fn export_with(
        &self,
        entries: &[Entry],
        from: u64,
        to: u64,
        size: u64,
        note: &str,
    ) -> Vec<u8> {
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.hash)).collect();
        let prefix = if from > 0 {
            inclusion_proof(&leaves, from, from + 1).expect("from < len")
        } else {
            Vec::new()
        };
        let consistency = if to + 1 < size {
            consistency_proof(&leaves, to + 1, size).expect("to < size")
        } else {
            Vec::new()
        };
        let header = ExportHeader::new(from, to, note.to_string(), &prefix, &consistency);
        let mut w = ExportWriter::new(Vec::new(), header).expect("valid header");
        for e in &entries[from as usize..=to as usize] {
            w.write(e).expect("in order");
        }
        w.finish().expect("complete")
    }

    /// The whole ledger, checkpointed at its size and signed by every replica.
    pub fn full_export(&self) -> Vec<u8> {
        let n = self.entries.len() as u64;
        let all: Vec<usize> = (0..self.replicas.len()).collect();
        let note = self.note(&self.checkpoint(n), &all);
        self.export_with(&self.entries, 0, n - 1, n, &note)
    }
}

/// Recomputes `prev_hash` and `hash` of `entries[from..]`, as a forger who
/// changed entry `from` would.
pub fn rehash_from(entries: &mut [Entry], from: usize) {
    for i in from..entries.len() {
        if i > 0 {
            entries[i].prev_hash = entries[i - 1].hash;
        }
        entries[i].hash = entries[i].compute_hash();
    }
}

/// The entries the rules append for `commands` (signed command bytes; the
/// first is the genesis), entry `i` stamped `T0 + 3 i`. Panics if one is
/// not appended.
pub fn replay(commands: &[Vec<u8>]) -> Vec<Entry> {
    let mut state = MemState::default();
    for (i, c) in commands.iter().enumerate() {
        match state.apply(c, T0 + 3 * i as u64, i == 0) {
            Applied::Appended(_) => {}
            other => panic!("synthetic command {i} was not appended: {other:?}"),
        }
    }
    state.entries
}

/// `body` signed by `signer` with `key` for the synthetic cluster.
pub fn signed(key: &SigningKey, signer: &str, nonce: u64, body: Body) -> Vec<u8> {
    sign_command(
        key,
        CLUSTER_ID,
        signer,
        &pb::Command {
            nonce,
            body: Some(body),
        },
    )
    .encode_to_vec()
}

/// The unsigned genesis command naming operator `ops`.
pub fn genesis(op: &SigningKey) -> Vec<u8> {
    let cmd = pb::Command {
        nonce: 0,
        body: Some(Body::Genesis(pb::Genesis {
            claim_deadlines: None,
            cluster_id: CLUSTER_ID.into(),
            operators: vec![pb::GenesisOperator {
                party_id: "ops".into(),
                public_key: op.verifying_key().to_bytes().to_vec(),
            }],
            lease_grace_ms: 0,
            rules_version: 0,
            fence_ms: 0,
            members: Vec::new(),
        })),
    };
    pb::SignedCommand {
        command: cmd.encode_to_vec(),
        signer: String::new(),
        signature: Vec::new(),
    }
    .encode_to_vec()
}

fn register(order: u64, ext: u64) -> pb::RegisterOrder {
    let p = price(order % 1_000_000_000);
    pb::RegisterOrder {
        order_id: format!("o-{order}"),
        external_refs: vec![pb::ExternalRef {
            channel: "meituan".into(),
            external_id: format!("m-{ext}"),
        }],
        lines: vec![pb::OrderLine {
            sku: "tea-500g".into(),
            quantity: 2,
            unit_price: p,
        }],
        currency: "CNY".into(),
        total: 2 * p,
        destination_region: REGION.into(),
        ..Default::default()
    }
}

const REGION: &str = "cn-sh";

/// An ed25519 point with two 32-byte encodings: its canonical one and a
/// second, non-canonical one (`y + p`, which RFC 8032 §5.1.3 calls invalid
/// but lenient decoders accept). Only points with `y < 19` have such a twin;
/// this is the first of them that is not of small order. Tests use it to try
/// enrolling "another" key that is the same point as an enrolled one.
pub fn non_canonical_twin() -> ([u8; 32], [u8; 32]) {
    for y in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(&canonical) else {
            continue;
        };
        if k.is_weak() {
            continue;
        }
        // p = 2^255 - 19, little-endian: ed ff .. ff 7f; y + p fits since y < 19.
        let mut twin = [0xffu8; 32];
        twin[0] = 0xed + y;
        twin[31] = 0x7f;
        return (canonical, twin);
    }
    unreachable!("some y < 19 gives a point of large order")
}
