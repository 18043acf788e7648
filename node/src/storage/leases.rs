//! The lease index: every order under a lease, by lease deadline.
//!
//! The leader's lease sweep (`crate::sweep`) asks which leases have run out.
//! Reading every order for that costs O(orders) per tick, so the state
//! machine keeps an index, `leases`: key `u64be(deadline_ms) || order id`,
//! empty value, one record for each order whose status holds a lease
//! (`claimed`, `picked`, `packed`) or, from rules version 2, a fence
//! (`fenced`, keyed by the fence's end: [`Order::hold_deadline`]) — exactly
//! the orders [`Order::hold_expired`] can select. The sweep walks it from the start to
//! the current time, so its cost is proportional to the leases that ran
//! out, not to the ledger.
//!
//! The index is derived state: it is written in the same atomic batch as
//! the order ([`index_writes`] from the state machine's one effect writer),
//! it is not part of a snapshot (installing one rebuilds it from the
//! snapshot's orders as they are written, the marker in the install's last
//! batch), and a database written before the
//! index existed has it built once when it is opened ([`ensure_built`]; the
//! empty key marks it built).

use std::io;

use arbor_proto::rules::Order;
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use super::keys::{CF_LEASES, CF_ORDERS};
use super::{cf, io_err};

/// Marks the index as built (sorts before every lease key).
pub(crate) const KEY_BUILT: &[u8] = b"";

/// The index key of an order held until `deadline`.
fn key(deadline: u64, order_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + order_id.len());
    k.extend_from_slice(&deadline.to_be_bytes());
    k.extend_from_slice(order_id.as_bytes());
    k
}

/// The index key of an order, `None` when it holds no lease.
pub(crate) fn lease_key(o: &Order) -> Option<Vec<u8>> {
    o.hold_deadline().map(|d| key(d, &o.order_id))
}

/// The index key to delete and the one to put when the order, held until
/// `before` (its hold deadline as it was; `None`: not held or new), becomes
/// `new`; both `None` when the key is unchanged.
pub(crate) fn index_writes(before: Option<u64>, new: &Order) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let after = new.hold_deadline();
    if before == after {
        (None, None)
    } else {
        (
            before.map(|d| key(d, &new.order_id)),
            after.map(|d| key(d, &new.order_id)),
        )
    }
}

/// Splits an index key into deadline and order id.
pub(crate) fn parse_key(k: &[u8]) -> Option<(u64, &str)> {
    let (deadline, id) = k.split_first_chunk::<8>()?;
    let id = std::str::from_utf8(id).ok().filter(|s| !s.is_empty())?;
    Some((u64::from_be_bytes(*deadline), id))
}

/// Adds to `batch` the clearing of the index.
pub(crate) fn clear_into(db: &DB, batch: &mut WriteBatch) -> io::Result<()> {
    let handle = cf(db, CF_LEASES);
    if let Some(item) = db.iterator_cf(handle, IteratorMode::End).next() {
        let (last, _) = item.map_err(|e| io_err("read the lease index", e))?;
        batch.delete_range_cf(handle, &[][..], &last[..]);
        batch.delete_cf(handle, &last);
    }
    Ok(())
}

/// Adds to `batch` the index record of one encoded order record, if leased.
pub(crate) fn put_order_record(
    db: &DB,
    batch: &mut WriteBatch,
    k: &[u8],
    v: &[u8],
) -> io::Result<bool> {
    let o: Order = super::record::decode(v).map_err(|e| {
        io_err(
            format_args!("decode order {}", String::from_utf8_lossy(k)),
            e,
        )
    })?;
    match lease_key(&o) {
        Some(key) => {
            batch.put_cf(cf(db, CF_LEASES), key, []);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Builds the index from the orders if this database has none yet (written
/// by a version without it), streaming the orders in bounded batches; the
/// marker is written last, so an interrupted build starts over.
pub(crate) fn ensure_built(db: &DB) -> io::Result<()> {
    let built = db
        .get_cf(cf(db, CF_LEASES), KEY_BUILT)
        .map_err(|e| io_err("read the lease index", e))?
        .is_some();
    if built {
        return Ok(());
    }
    let write = |batch: WriteBatch| {
        db.write(batch)
            .map_err(|e| io_err("write the lease index", e))
    };
    let mut batch = WriteBatch::default();
    clear_into(db, &mut batch)?;
    let (mut n, mut pending) = (0usize, 0usize);
    for item in db.iterator_cf(cf(db, CF_ORDERS), IteratorMode::Start) {
        let (k, v) = item.map_err(|e| io_err("read orders for the lease index", e))?;
        n += usize::from(put_order_record(db, &mut batch, &k, &v)?);
        pending += 1;
        if pending == 10_000 {
            write(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    batch.put_cf(cf(db, CF_LEASES), KEY_BUILT, []);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .map_err(|e| io_err("write the lease index", e))?;
    tracing::info!(leases = n, "lease index built");
    Ok(())
}
