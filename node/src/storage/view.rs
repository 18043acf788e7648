//! The rules' read-only view of the replica's state ([`StateView`]) over
//! RocksDB, without panics: a failed read is kept and reported after the
//! rules return.

use std::cell::RefCell;

use arbor_proto::rules::{ClusterConfig, Membership, NodeStats, Order, Party, Profile, StateView};

use super::{LedgerReader, ReadError};

/// A [`StateView`] over the reader that remembers the first failed read
/// instead of panicking: the rules see "absent", and the caller, after the
/// rules return, asks [`CheckedView::finish`] whether every read succeeded
/// (the state machine then stops with an error; the API answers
/// UNAVAILABLE). The only `StateView` over RocksDB.
pub struct CheckedView<'a> {
    reader: &'a LedgerReader,
    failed: RefCell<Option<ReadError>>,
    /// Each order the rules read, with its hold deadline as read
    /// ([`Order::hold_deadline`]): the lease index's "before", so the state
    /// machine need not read and decode the order a second time.
    holds: RefCell<Vec<(String, Option<u64>)>>,
}

impl<'a> CheckedView<'a> {
    pub fn new(reader: &'a LedgerReader) -> Self {
        CheckedView {
            reader,
            failed: RefCell::new(None),
            holds: RefCell::new(Vec::new()),
        }
    }

    /// Each order read so far with the hold deadline it had when first
    /// read (`None`: not held, or absent), and forgets them.
    pub fn take_holds(&self) -> Vec<(String, Option<u64>)> {
        self.holds.take()
    }

    fn keep<T>(&self, r: Result<Option<T>, ReadError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            self.failed.borrow_mut().get_or_insert(e);
            None
        })
    }

    /// The first read that failed, if any.
    pub fn finish(self) -> Result<(), ReadError> {
        self.failed.into_inner().map_or(Ok(()), Err)
    }
}

impl StateView for CheckedView<'_> {
    fn party(&self, party_id: &str) -> Option<Party> {
        self.keep(self.reader.party(party_id))
    }
    fn order(&self, order_id: &str) -> Option<Order> {
        let o = self.keep(self.reader.order(order_id));
        let mut holds = self.holds.borrow_mut();
        if !holds.iter().any(|(id, _)| id == order_id) {
            holds.push((
                order_id.to_string(),
                o.as_ref().and_then(Order::hold_deadline),
            ));
        }
        o
    }
    fn order_by_ref(&self, channel: &str, external_id: &str) -> Option<String> {
        self.keep(self.reader.order_by_ref(channel, external_id))
    }
    fn party_by_key(&self, public_key: &[u8]) -> Option<String> {
        self.keep(self.reader.party_by_key(public_key))
    }
    fn has_genesis(&self) -> bool {
        self.keep(self.reader.head()).is_some()
    }
    fn profile(&self, node: &str) -> Option<Profile> {
        self.keep(self.reader.profile(node))
    }
    fn stats(&self, node: &str) -> Option<NodeStats> {
        self.keep(self.reader.stats(node))
    }
    fn config(&self) -> Option<ClusterConfig> {
        self.keep(self.reader.config())
    }
    fn membership(&self) -> Option<Membership> {
        self.keep(self.reader.desired_membership())
    }
    fn order_by_delivery_code(&self, hash: &[u8]) -> Option<String> {
        self.keep(self.reader.order_by_delivery_code(hash))
    }
    fn profiled_nodes(&self) -> Vec<String> {
        let all = self.reader.profiled_nodes("", usize::MAX);
        self.keep(all.map(|(nodes, _)| Some(nodes)))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::keys::CF_PARTIES;
    use crate::storage::{cf, open};

    /// A corrupted record reaches the rules as "absent" and is reported
    /// afterwards, instead of panicking (admission then answers UNAVAILABLE).
    #[test]
    fn a_failed_read_is_kept_and_reported_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let db = sm.db.clone();
        db.put_cf(cf(&db, CF_PARTIES), b"store-1", b"{not json")
            .unwrap();
        let reader = sm.reader();
        let view = CheckedView::new(&reader);
        assert!(view.party("store-1").is_none());
        assert!(view.party("nobody").is_none());
        let e = view.finish().unwrap_err().to_string();
        assert!(e.contains("parties/store-1"), "{e}");

        let view = CheckedView::new(&reader);
        assert!(view.party("nobody").is_none());
        view.finish().expect("an absent record is no error");
    }

    /// The nodes with a profile (rules version 4 sourcing decisions): a
    /// scan of the profile index merged with the batch's pending writes, in
    /// id order, paged by the reader.
    #[test]
    fn profiled_nodes_see_rocksdb_and_the_pending_batch_in_id_order() {
        use crate::storage::keys::CF_PROFILES;
        use crate::storage::overlay::PendingWrites;
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let db = sm.db.clone();
        for n in ["n2", "n0"] {
            db.put_cf(cf(&db, CF_PROFILES), n.as_bytes(), b"{}")
                .unwrap();
        }
        let mut w = PendingWrites::new(db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        w.put(CF_PROFILES, b"n1", b"{}");
        w.put(CF_PROFILES, b"n3", b"{}");
        // A point read of a node without one is remembered as absent.
        assert!(reader.profile("n9").unwrap().is_none());
        let view = CheckedView::new(&reader);
        assert_eq!(view.profiled_nodes(), vec!["n0", "n1", "n2", "n3"]);
        view.finish().unwrap();
        assert_eq!(
            reader.profiled_nodes("", 2).unwrap(),
            (vec!["n0".to_string(), "n1".to_string()], true)
        );
        assert_eq!(
            reader.profiled_nodes("n1", 2).unwrap(),
            (vec!["n2".to_string(), "n3".to_string()], false)
        );
        // Without the overlay: RocksDB only.
        assert_eq!(
            sm.reader().profiled_nodes("", 10).unwrap(),
            (vec!["n0".to_string(), "n2".to_string()], false)
        );
    }
}
