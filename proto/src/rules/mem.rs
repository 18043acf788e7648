//! An in-memory state and chain: the reference implementation of applying
//! commands, used by property tests and by offline replay. Offline replay
//! uses [`MemState::append`]: the command decoded once by the caller, the
//! appended entry left in place instead of copied out, and the recorded
//! entry's checked hash reused when the replayed entry has its contents.

use std::collections::{BTreeMap, HashMap};

use super::{
    Admitted, ClusterConfig, Effect, Membership, NodeStats, Order, Party, Profile, Refusal,
    StateView,
};
use crate::ledger::{command_id, Entry, Head};

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Appended as a new entry.
    Appended(Entry),
    /// A resend of the command at this sequence number: nothing appended.
    Duplicate(u64),
    /// Refused: nothing appended.
    Refused(Refusal),
}

#[derive(Clone, Debug, Default)]
pub struct MemState {
    pub parties: BTreeMap<String, Party>,
    pub keys: HashMap<Vec<u8>, String>,
    pub orders: BTreeMap<String, Order>,
    pub refs: HashMap<(String, String), String>,
    /// Rules version 4: delivery code hash -> order id.
    pub delivery_codes: HashMap<Vec<u8>, String>,
    pub commands: HashMap<[u8; 32], u64>,
    pub profiles: BTreeMap<String, Profile>,
    pub stats: BTreeMap<String, NodeStats>,
    pub config: Option<ClusterConfig>,
    pub membership: Option<Membership>,
    pub entries: Vec<Entry>,
}

impl StateView for MemState {
    fn party(&self, party_id: &str) -> Option<Party> {
        self.parties.get(party_id).cloned()
    }
    fn order(&self, order_id: &str) -> Option<Order> {
        self.orders.get(order_id).cloned()
    }
    fn order_last_seq(&self, order_id: &str) -> Option<u64> {
        self.orders.get(order_id).map(|o| o.last_seq)
    }
    fn order_by_ref(&self, channel: &str, external_id: &str) -> Option<String> {
        self.refs
            .get(&(channel.to_string(), external_id.to_string()))
            .cloned()
    }
    fn party_by_key(&self, public_key: &[u8]) -> Option<String> {
        self.keys.get(public_key).cloned()
    }
    fn has_genesis(&self) -> bool {
        !self.entries.is_empty()
    }
    fn profile(&self, node: &str) -> Option<Profile> {
        self.profiles.get(node).cloned()
    }
    fn stats(&self, node: &str) -> Option<NodeStats> {
        self.stats.get(node).cloned()
    }
    fn config(&self) -> Option<ClusterConfig> {
        self.config.clone()
    }
    fn profiled_nodes(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }
    fn membership(&self) -> Option<Membership> {
        self.membership.clone()
    }
    fn order_by_delivery_code(&self, hash: &[u8]) -> Option<String> {
        self.delivery_codes.get(hash).cloned()
    }
}

impl MemState {
    pub fn head(&self) -> Option<Head> {
        self.entries.last().map(|e| e.head())
    }

    /// Applies a committed command stamped `time_ms`, exactly as a replica does.
    pub fn apply(&mut self, command: &[u8], time_ms: u64, allow_genesis: bool) -> Applied {
        let a = match super::decode(command) {
            Ok(a) => a,
            Err(r) => return Applied::Refused(r),
        };
        match self.append(&a, command, time_ms, allow_genesis, None) {
            None => Applied::Appended(self.entries.last().expect("just appended").clone()),
            Some(not_appended) => not_appended,
        }
    }

    /// [`MemState::apply`] for a command already decoded by
    /// [`super::decode`] from `command`: `None` when an entry was appended
    /// (it is `entries.last()`, not copied), else what happened instead.
    ///
    /// `recorded` is the entry a ledger records at this position, whose
    /// `hash` the caller has checked to be the hash of its contents: when
    /// the appended entry has the same contents, it has that hash, which is
    /// then not computed a second time (offline replay).
    pub(crate) fn append(
        &mut self,
        a: &Admitted,
        command: &[u8],
        time_ms: u64,
        allow_genesis: bool,
        recorded: Option<&Entry>,
    ) -> Option<Applied> {
        let id = command_id(&a.envelope.signer, &a.envelope.command);
        if let Some(seq) = self.commands.get(&id) {
            return Some(Applied::Duplicate(*seq));
        }
        let head = self.head();
        let seq = head.map(|h| h.seq + 1).unwrap_or(0);
        let time_ms = crate::ledger::entry_time(head.as_ref(), time_ms);
        let d = match super::apply_admitted(self, a, seq, time_ms, allow_genesis, None) {
            Ok(d) => d,
            Err(r) => return Some(Applied::Refused(r)),
        };
        let entry = match recorded {
            Some(r) => {
                let mut e = Entry {
                    seq,
                    time_ms,
                    command: command.to_vec(),
                    accepted: d.accepted,
                    code: d.code.as_str().into(),
                    message: d.message,
                    order_id: d.order_id,
                    order_prev_seq: d.order_prev_seq,
                    prev_hash: head.map_or([0; 32], |h| h.hash),
                    hash: r.hash,
                };
                if !same_contents(&e, r) {
                    e.hash = e.compute_hash();
                }
                e
            }
            None => Entry::next(
                head.as_ref(),
                time_ms,
                command.to_vec(),
                d.accepted,
                d.code.as_str().into(),
                d.message,
                d.order_id,
                d.order_prev_seq,
            ),
        };
        for e in d.effects {
            self.put(e);
        }
        self.commands.insert(id, seq);
        self.entries.push(entry);
        None
    }

    fn put(&mut self, e: Effect) {
        match e {
            Effect::PutParty(p) => {
                self.keys.insert(p.public_key.clone(), p.party_id.clone());
                put_keyed(&mut self.parties, p, |p| &p.party_id);
            }
            // Replaced in place: no new key for an order that is there.
            Effect::PutOrder(o) => put_keyed(&mut self.orders, o, |o| &o.order_id),
            Effect::PutRef {
                channel,
                external_id,
                order_id,
            } => {
                self.refs.insert((channel, external_id), order_id);
            }
            Effect::PutProfile(p) => {
                self.profiles.insert(p.node.clone(), p);
            }
            Effect::PutStats { node, stats } => {
                self.stats.insert(node, stats);
            }
            Effect::PutConfig(c) => self.config = Some(c),
            Effect::PutMembership(m) => self.membership = Some(m),
            Effect::PutDeliveryCode { hash, order_id } => {
                self.delivery_codes.insert(hash, order_id);
            }
        }
    }
}

/// Whether two entries agree in everything their hash covers.
fn same_contents(a: &Entry, b: &Entry) -> bool {
    a.seq == b.seq
        && a.time_ms == b.time_ms
        && a.command == b.command
        && a.accepted == b.accepted
        && a.code == b.code
        && a.message == b.message
        && a.order_id == b.order_id
        && a.order_prev_seq == b.order_prev_seq
        && a.prev_hash == b.prev_hash
}

/// `map.insert(key(v).clone(), v)`, without cloning the key when it is there.
fn put_keyed<V>(map: &mut BTreeMap<String, V>, v: V, key: impl Fn(&V) -> &String) {
    match map.get_mut(key(&v).as_str()) {
        Some(slot) => *slot = v,
        None => {
            map.insert(key(&v).clone(), v);
        }
    }
}
