//! Read-only access to the replica's ledger state, shared by the state
//! machine (the rules decide against it) and the gRPC API.
//!
//! Every read goes straight to RocksDB, so a reader always sees what the
//! state machine has written so far (not a linearizable read: the API asks
//! raft for that first). The state machine's own reader also sees the writes
//! of the batch it is building (see [`super::overlay`]): every point read
//! goes through [`LedgerReader::get`], which asks the overlay first. A record that does not decode, or a ledger entry
//! whose stored hash or sequence does not match its contents, is a
//! [`ReadError::Corrupt`] naming the column family and key: never data that
//! is silently wrong.

use std::sync::Arc;

use arbor_proto::ledger::{Entry, Head};
use arbor_proto::pb;
use arbor_proto::rules::{ClusterConfig, Membership, NodeStats, Order, Party, Profile};
use openraft::alias::{LogIdOf, StoredMembershipOf};
use prost::Message;
use rocksdb::{Direction, IteratorMode, DB};
use serde::de::DeserializeOwned;

use super::cf;
use super::keys::{self, *};
use super::overlay::Overlay;
use crate::types::TypeConfig;

/// A failed or corrupted read of one record.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("rocksdb read of {cf}/{key} failed: {source}")]
    Db {
        cf: &'static str,
        key: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("{cf}/{key} is corrupted: {reason}")]
    Corrupt {
        cf: &'static str,
        key: String,
        reason: String,
    },
}

impl ReadError {
    fn corrupt(cf: &'static str, key: &[u8], reason: impl ToString) -> Self {
        ReadError::Corrupt {
            cf,
            key: keys::display_key(key),
            reason: reason.to_string(),
        }
    }
}

/// Read-only view of the ledger, orders and parties. Cheap to clone.
#[derive(Clone)]
pub struct LedgerReader {
    pub(super) db: Arc<DB>,
    /// Raised when RocksDB reports corruption on a read.
    fault: super::Fault,
    /// Writes not yet in RocksDB, read first (the state machine's reader only).
    overlay: Option<Arc<Overlay>>,
}

impl LedgerReader {
    pub(crate) fn new(db: Arc<DB>, fault: super::Fault) -> Self {
        LedgerReader {
            db,
            fault,
            overlay: None,
        }
    }

    /// The storage fault this reader raises (and the database it reads),
    /// for the replica's health and its start-up scrub.
    pub fn fault(&self) -> &super::Fault {
        &self.fault
    }

    /// Reads every record once (see [`super::scrub`]); blocking.
    pub fn scrub(&self) -> Result<u64, String> {
        super::scrub(&self.db, &self.fault)
    }

    /// Flushes memtables to SST files (see [`super::flush`]); blocking.
    pub fn flush(&self) -> Result<(), String> {
        super::flush(&self.db).map_err(|e| e.to_string())
    }

    /// RocksDB's running compactions and whether one is pending.
    pub fn compaction_state(&self) -> (u64, u64) {
        let prop = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        (
            prop("rocksdb.num-running-compactions"),
            prop("rocksdb.compaction-pending"),
        )
    }

    fn db_err(&self, cf_name: &'static str, key: &[u8], source: rocksdb::Error) -> ReadError {
        self.fault.check(
            format_args!("read of {cf_name}/{}", keys::display_key(key)),
            &source,
        );
        ReadError::Db {
            cf: cf_name,
            key: keys::display_key(key),
            source,
        }
    }

    /// This reader, seeing `overlay`'s pending writes over RocksDB.
    pub(crate) fn with_overlay(&self, overlay: Arc<Overlay>) -> Self {
        LedgerReader {
            db: self.db.clone(),
            fault: self.fault.clone(),
            overlay: Some(overlay),
        }
    }

    /// The one point read every typed read goes through: the overlay's
    /// pending value if it has one, else RocksDB's.
    fn get(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        if let Some(pending) = self.overlay.as_ref().and_then(|o| o.get(cf_name, key)) {
            return Ok(pending);
        }
        let value = self
            .db
            .get_cf(cf(&self.db, cf_name), key)
            .map_err(|source| self.db_err(cf_name, key, source))?;
        if let Some(o) = &self.overlay {
            o.remember(cf_name, key, value.as_deref());
        }
        Ok(value)
    }

    /// A point read of RocksDB alone, without copying the value out of its
    /// block (only for a reader without an overlay: the API's).
    fn get_pinned(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, ReadError> {
        debug_assert!(self.overlay.is_none());
        self.db
            .get_pinned_cf(cf(&self.db, cf_name), key)
            .map_err(|source| self.db_err(cf_name, key, source))
    }

    /// A point read of a raw value (through the overlay, as every read).
    pub(super) fn raw(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, ReadError> {
        self.get(cf_name, key)
    }

    pub(super) fn corrupt_err(cf: &'static str, key: &[u8], reason: impl ToString) -> ReadError {
        ReadError::corrupt(cf, key, reason)
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, ReadError> {
        self.get_decoded(cf_name, key, |v| {
            serde_json::from_slice(v).map_err(|e| e.to_string())
        })
    }

    /// A state record (`super::record`: binary, or JSON from an earlier build).
    fn get_record<T: DeserializeOwned>(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, ReadError> {
        self.get_decoded(cf_name, key, super::record::decode)
    }

    /// A point read decoded by `decode`; a value it refuses is corrupt.
    fn get_decoded<T>(
        &self,
        cf_name: &'static str,
        key: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, ReadError> {
        let checked = |v: &[u8]| decode(v).map_err(|e| ReadError::corrupt(cf_name, key, e));
        if self.overlay.is_none() {
            // The API's reader: decode from RocksDB's pinned block, no copy.
            return self
                .get_pinned(cf_name, key)?
                .map(|v| checked(&v))
                .transpose();
        }
        self.get(cf_name, key)?.map(|v| checked(&v)).transpose()
    }

    fn get_string(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<String>, ReadError> {
        match self.get(cf_name, key)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|e| ReadError::corrupt(cf_name, key, e)),
        }
    }

    /// The chain head, `None` before genesis.
    pub fn head(&self) -> Result<Option<Head>, ReadError> {
        self.get_json(CF_SM_META, KEY_HEAD)
    }

    /// The ledger entry at `seq`.
    pub fn entry(&self, seq: u64) -> Result<Option<Entry>, ReadError> {
        let key = u64_key(seq);
        match self.get(CF_LEDGER, &key)? {
            None => Ok(None),
            Some(v) => decode_entry(&key, &v).map(Some),
        }
    }

    /// The links of the ledger entry at `key` (see [`EntryLinks`]), its
    /// sequence number checked against the key.
    fn entry_links(&self, key: &[u8]) -> Result<Option<EntryLinks>, ReadError> {
        let decode = |v: &[u8]| {
            let seq = decode_u64_key(key)
                .ok_or_else(|| ReadError::corrupt(CF_LEDGER, key, "key is not a u64"))?;
            let l = EntryLinks::decode(v).map_err(|e| ReadError::corrupt(CF_LEDGER, key, e))?;
            if l.seq != seq {
                return Err(ReadError::corrupt(
                    CF_LEDGER,
                    key,
                    format!("holds entry {}", l.seq),
                ));
            }
            Ok(l)
        };
        if self.overlay.is_none() {
            return self
                .get_pinned(CF_LEDGER, key)?
                .map(|v| decode(&v))
                .transpose();
        }
        self.get(CF_LEDGER, key)?.map(|v| decode(&v)).transpose()
    }

    /// Up to `limit` entries from `from_seq` on, in order.
    pub fn entries(&self, from_seq: u64, limit: usize) -> Result<Vec<Entry>, ReadError> {
        let from = u64_key(from_seq);
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_LEDGER), mode)
            .take(limit)
        {
            let (k, v) = item.map_err(|source| {
                self.fault
                    .check(format_args!("scan of {CF_LEDGER}"), &source);
                ReadError::Db {
                    cf: CF_LEDGER,
                    key: format!("{from_seq}.."),
                    source,
                }
            })?;
            out.push(decode_entry(&k, &v)?);
        }
        Ok(out)
    }

    /// As [`LedgerReader::entries`], stopping before the entry that would
    /// take their total size past `max_bytes`; an entry of `n` bytes (its
    /// protobuf encoding, as stored) counts `size(n)`. The first entry is
    /// returned whatever its size. Returns the entries and their total size.
    pub fn entries_within(
        &self,
        from_seq: u64,
        limit: usize,
        max_bytes: usize,
        size: impl Fn(usize) -> usize,
    ) -> Result<(Vec<Entry>, usize), ReadError> {
        let from = u64_key(from_seq);
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut out = Vec::new();
        let mut total = 0usize;
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_LEDGER), mode)
            .take(limit)
        {
            let (k, v) = item.map_err(|source| {
                self.fault
                    .check(format_args!("scan of {CF_LEDGER}"), &source);
                ReadError::Db {
                    cf: CF_LEDGER,
                    key: format!("{from_seq}.."),
                    source,
                }
            })?;
            let n = size(v.len());
            if !out.is_empty() && total.saturating_add(n) > max_bytes {
                break;
            }
            total = total.saturating_add(n);
            out.push(decode_entry(&k, &v)?);
        }
        Ok((out, total))
    }

    pub fn order(&self, order_id: &str) -> Result<Option<Order>, ReadError> {
        self.get_record(CF_ORDERS, order_id.as_bytes())
    }

    /// The sequence numbers of an order's entries, oldest first (empty for
    /// an unknown order), found by following `order_prev_seq` links back
    /// from the order's last entry.
    pub fn order_history(&self, order_id: &str) -> Result<Vec<u64>, ReadError> {
        match self.order(order_id)? {
            Some(order) => self.order_history_of(&order),
            None => Ok(Vec::new()),
        }
    }

    /// [`LedgerReader::order_history`] of an order already read: only its
    /// entries' links are read (sequence number, order id, previous entry
    /// of the order), each checked as the full read checks them — the key's
    /// sequence number, the order it concerns, a link that goes back —
    /// without decoding the rest of the entry or hashing it (a served read
    /// that returns an entry, [`LedgerReader::entry`], checks its hash).
    pub fn order_history_of(&self, order: &Order) -> Result<Vec<u64>, ReadError> {
        let order_id = order.order_id.as_str();
        let mut seqs = Vec::new();
        let mut seq = order.last_seq;
        loop {
            let key = u64_key(seq);
            let entry = self.entry_links(&key)?.ok_or_else(|| {
                ReadError::corrupt(
                    CF_LEDGER,
                    &key,
                    format!("missing, order {order_id} links to it"),
                )
            })?;
            if entry.order_id != order_id {
                let why = format!(
                    "order {order_id} links to it but it concerns order {:?}",
                    entry.order_id
                );
                return Err(ReadError::corrupt(CF_LEDGER, &key, why));
            }
            seqs.push(seq);
            // 0 ends the chain: entry 0 is genesis, which concerns no order.
            if entry.order_prev_seq == 0 {
                break;
            }
            if entry.order_prev_seq >= seq {
                let why = format!("order_prev_seq {} does not go back", entry.order_prev_seq);
                return Err(ReadError::corrupt(CF_LEDGER, &key, why));
            }
            seq = entry.order_prev_seq;
        }
        seqs.reverse();
        Ok(seqs)
    }

    /// The order an external reference belongs to.
    pub fn order_by_ref(
        &self,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<String>, ReadError> {
        self.get_string(CF_REFS, &ref_key(channel, external_id))
    }

    /// Rules version 4: the order that registered a delivery code hash.
    pub fn order_by_delivery_code(&self, hash: &[u8]) -> Result<Option<String>, ReadError> {
        self.get_string(CF_REFS, &delivery_code_key(hash))
    }

    pub fn party(&self, party_id: &str) -> Result<Option<Party>, ReadError> {
        self.get_record(CF_PARTIES, party_id.as_bytes())
    }

    /// A node's capability profile in force.
    pub fn profile(&self, node: &str) -> Result<Option<Profile>, ReadError> {
        self.get_record(CF_PROFILES, node.as_bytes())
    }

    pub fn stats(&self, node: &str) -> Result<Option<NodeStats>, ReadError> {
        self.get_record(CF_STATS, node.as_bytes())
    }

    /// The configuration genesis fixed (`None` before genesis).
    pub fn config(&self) -> Result<Option<ClusterConfig>, ReadError> {
        self.get_json(CF_SM_META, KEY_CONFIG)
    }

    /// The desired membership the ledger records (`None` before genesis).
    pub fn desired_membership(&self) -> Result<Option<Membership>, ReadError> {
        self.get_json(CF_SM_META, KEY_REPLICAS)
    }

    /// Up to `limit` orders whose lease (or fence) has run out by `now_ms`
    /// ([`Order::hold_expired`]), earliest deadline first, read through the
    /// lease index: the cost is proportional to the lapsed leases, not to
    /// the orders.
    pub fn lapsed_leases(&self, now_ms: u64, limit: usize) -> Result<Vec<Order>, ReadError> {
        let mut out = Vec::new();
        let handle = cf(&self.db, keys::CF_LEASES);
        for item in self.db.iterator_cf(handle, IteratorMode::Start) {
            let (k, _) = item.map_err(|source| ReadError::Db {
                cf: keys::CF_LEASES,
                key: "..".into(),
                source,
            })?;
            if k.as_ref() == super::leases::KEY_BUILT {
                continue;
            }
            let (deadline, order_id) = super::leases::parse_key(&k).ok_or_else(|| {
                ReadError::corrupt(keys::CF_LEASES, &k, "not deadline || order id")
            })?;
            if deadline >= now_ms || out.len() >= limit {
                break;
            }
            match self.order(order_id)? {
                Some(o) if o.hold_expired(now_ms) => out.push(o),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Orders in id order after `after` (exclusive; "" from the start) that
    /// `keep` selects, up to `limit`, scanning at most `scan_limit` records.
    /// Returns the orders and the id to continue after (None at the end).
    pub fn scan_orders(
        &self,
        after: &str,
        limit: usize,
        scan_limit: usize,
        mut keep: impl FnMut(&Order) -> bool,
    ) -> Result<(Vec<Order>, Option<String>), ReadError> {
        let mode = IteratorMode::From(after.as_bytes(), Direction::Forward);
        let mut out = Vec::new();
        let mut last = None;
        for (scanned, item) in self
            .db
            .iterator_cf(super::cf(&self.db, CF_ORDERS), mode)
            .enumerate()
        {
            let (k, v) = item.map_err(|source| {
                self.fault
                    .check(format_args!("scan of {CF_ORDERS}"), &source);
                ReadError::Db {
                    cf: CF_ORDERS,
                    key: format!("{after}.."),
                    source,
                }
            })?;
            if k.as_ref() == after.as_bytes() {
                continue;
            }
            if out.len() >= limit || scanned >= scan_limit {
                return Ok((out, last));
            }
            let order: Order =
                super::record::decode(&v).map_err(|e| ReadError::corrupt(CF_ORDERS, &k, e))?;
            last = Some(order.order_id.clone());
            if keep(&order) {
                out.push(order);
            }
        }
        Ok((out, None))
    }

    /// Up to `limit` node ids with a profile, in id order, after `after`
    /// (exclusive; "" from the start), and whether more follow. A scan of
    /// the `profiles` column family's keys only (one per node that
    /// published a profile; values are not decoded), seeing the overlay's
    /// pending writes: the cost is proportional to the nodes, never to the
    /// orders. Sourcing decisions (rules version 4) read them all.
    pub fn profiled_nodes(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<String>, bool), ReadError> {
        let mut nodes = std::collections::BTreeSet::new();
        let mode = IteratorMode::From(after.as_bytes(), Direction::Forward);
        let handle = super::cf(&self.db, CF_PROFILES);
        let pending = self
            .overlay
            .as_ref()
            .map(|o| o.keys(CF_PROFILES))
            .unwrap_or_default();
        let scan = limit.saturating_add(pending.len()).saturating_add(1);
        for item in self.db.iterator_cf(handle, mode) {
            let (k, _) = item.map_err(|source| {
                self.fault
                    .check(format_args!("scan of {CF_PROFILES}"), &source);
                ReadError::Db {
                    cf: CF_PROFILES,
                    key: format!("{after}.."),
                    source,
                }
            })?;
            if k.as_ref() == after.as_bytes() {
                continue;
            }
            if nodes.len() >= scan {
                break;
            }
            let node = std::str::from_utf8(&k)
                .map_err(|e| ReadError::corrupt(CF_PROFILES, &k, e))?
                .to_string();
            nodes.insert(node);
        }
        for (k, present) in pending {
            let Ok(node) = String::from_utf8(k) else {
                continue;
            };
            if node.as_str() <= after {
                continue;
            }
            if present {
                nodes.insert(node);
            } else {
                nodes.remove(&node);
            }
        }
        let more = nodes.len() > limit;
        Ok((nodes.into_iter().take(limit).collect(), more))
    }

    /// The party a public key is enrolled under.
    pub fn party_by_key(&self, public_key: &[u8]) -> Result<Option<String>, ReadError> {
        self.get_string(CF_PARTY_KEYS, public_key)
    }

    /// The ledger sequence number of an applied command, by command id.
    pub fn command_seq(&self, command_id: &[u8; 32]) -> Result<Option<u64>, ReadError> {
        match self.get(CF_COMMANDS, command_id)? {
            None => Ok(None),
            Some(v) => decode_u64_key(&v)
                .map(Some)
                .ok_or_else(|| ReadError::corrupt(CF_COMMANDS, command_id, "value is not a u64")),
        }
    }

    /// The raft log index of the last applied entry.
    pub fn last_applied(&self) -> Result<Option<u64>, ReadError> {
        Ok(self.last_applied_log_id()?.map(|id| id.index))
    }

    /// The raft log id of the last applied entry.
    pub fn last_applied_log_id(&self) -> Result<Option<LogIdOf<TypeConfig>>, ReadError> {
        self.get_json(CF_SM_META, KEY_LAST_APPLIED)
    }

    /// The last applied membership (the default before any was applied).
    pub fn membership(&self) -> Result<StoredMembershipOf<TypeConfig>, ReadError> {
        Ok(self
            .get_json(CF_SM_META, KEY_MEMBERSHIP)?
            .unwrap_or_default())
    }
}

/// The fields of a stored `LedgerEntry` (`arbor.proto`) that link an
/// order's entries, under the same field numbers: decoding a record as this
/// skips the command, outcome and hashes without copying them.
#[derive(Clone, PartialEq, prost::Message)]
struct EntryLinks {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "5")]
    order_id: String,
    #[prost(uint64, tag = "6")]
    order_prev_seq: u64,
}

/// Decodes a `ledger` record and checks it is the entry its key names and
/// that its hash matches its contents.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, ReadError> {
    let seq = decode_u64_key(key)
        .ok_or_else(|| ReadError::corrupt(CF_LEDGER, key, "key is not a u64"))?;
    let p = pb::LedgerEntry::decode(value).map_err(|e| ReadError::corrupt(CF_LEDGER, key, e))?;
    let e = Entry::from_pb(&p).map_err(|e| ReadError::corrupt(CF_LEDGER, key, e))?;
    if e.seq != seq {
        return Err(ReadError::corrupt(
            CF_LEDGER,
            key,
            format!("holds entry {}", e.seq),
        ));
    }
    if e.compute_hash() != e.hash {
        return Err(ReadError::corrupt(
            CF_LEDGER,
            key,
            "hash does not match its contents",
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open;

    #[test]
    fn corrupted_records_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let db = sm.db.clone();
        db.put_cf(cf(&db, CF_ORDERS), b"o-1", b"{not json").unwrap();
        db.put_cf(cf(&db, CF_LEDGER), u64_key(3), b"\xff\xff")
            .unwrap();
        db.put_cf(cf(&db, CF_SM_META), KEY_HEAD, b"[]").unwrap();
        let r = sm.reader();

        let e = r.order("o-1").unwrap_err().to_string();
        assert!(e.starts_with("orders/o-1 is corrupted"), "{e}");
        let e = r.entry(3).unwrap_err().to_string();
        assert!(
            e.starts_with("ledger/0x0000000000000003 is corrupted"),
            "{e}"
        );
        assert!(r.entries(0, 10).is_err());
        assert!(r.head().is_err());

        // The state machine stops instead of deciding on a corrupted head.
        use arbor_proto::pb::command::Body;
        use openraft::entry::RaftEntry;
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let genesis = pb::Command {
            nonce: 1,
            body: Some(Body::Genesis(pb::Genesis {
                claim_deadlines: None,
                cluster_id: "test".into(),
                operators: vec![pb::GenesisOperator {
                    party_id: "ops".into(),
                    public_key: key.verifying_key().to_bytes().to_vec(),
                }],
                lease_grace_ms: 0,
                rules_version: 0,
                fence_ms: 0,
                members: Vec::new(),
            })),
        };
        let command = pb::SignedCommand {
            command: genesis.encode_to_vec(),
            signer: String::new(),
            signature: vec![],
        }
        .encode_to_vec();
        let request = crate::types::Request {
            command,
            time_ms: 1,
            genesis: true,
            verified_key: Vec::new(),
        };
        let leader = openraft::impls::leader_id_adv::LeaderId {
            term: 1,
            node_id: 1,
        };
        let entry = openraft::Entry::new_normal(openraft::LogId::new(leader, 1), request);
        let e = sm.apply_entry(&entry).unwrap_err().to_string();
        assert!(e.contains("sm_meta/head is corrupted"), "{e}");
        assert_eq!(
            r.last_applied().unwrap(),
            None,
            "nothing of the entry was written"
        );
    }
}
