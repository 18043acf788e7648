//! The value of a state record the rules read on every command: an order
//! (column family `orders`), a party (`parties`), a node's profile
//! (`profiles`) or its counters (`node_stats`).
//!
//! Written as the byte [`BINARY`] followed by the value in MessagePack with
//! structs as arrays (`rmp_serde`): no field names, integers in their
//! shortest form. The benchmark's orders are about a quarter of their JSON
//! (332 bytes against 1 210 on average, docs/performance.md); every claim reads and rewrites its
//! order and its node's counters, and reads the node's profile and the
//! signer's party; orders are most of what the `orders` column family
//! flushes, compacts and caches.
//!
//! Records written before this encoding are JSON objects (their first byte
//! is `{`, JSON allows no leading 0x01) and are still read: a data
//! directory or a snapshot from an earlier build needs no conversion, and
//! each record is rewritten in the new form the next time an entry changes
//! it.
//!
//! Structs as arrays put one constraint on `rules` types: a field that
//! `skip_serializing_if` may leave out must be the last of its struct (or
//! enum variant) and carry `#[serde(default)]`, so that a shorter array
//! decodes to the default. A field left out in the middle would shift the
//! ones after it; the tests round-trip records with every such field both
//! left out and present.

use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of a binary record.
pub const BINARY: u8 = 0x01;

/// The record of `value`.
pub fn encode(value: &impl Serialize) -> Result<Vec<u8>, String> {
    let mut out = vec![BINARY];
    rmp_serde::encode::write(&mut out, value).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The value of a record, binary or (from an earlier build) JSON.
pub fn decode<T: DeserializeOwned>(record: &[u8]) -> Result<T, String> {
    match record.first() {
        Some(&BINARY) => {
            let body = &record[1..];
            let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
            let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
            let rest = body.len() as u64 - de.position();
            if rest != 0 {
                return Err(format!("{rest} bytes after the record"));
            }
            Ok(value)
        }
        Some(b'{') => serde_json::from_slice(record).map_err(|e| e.to_string()),
        Some(b) => Err(format!("unknown record format (first byte {b:#04x})")),
        None => Err("empty record".into()),
    }
}

#[cfg(test)]
mod tests {
    use arbor_proto::rules::health::HealthCounters;
    use arbor_proto::rules::sla::SlaTerms;
    use arbor_proto::rules::sourcing::{Assignment, Sourcing, SourcingMode};
    use arbor_proto::rules::{
        Dispute, Event, EventKind, Fence, Grade, Lease, Line, NodeStats, Offer, Order, OrderStatus,
        Party, Profile, Requirements, RulingRecord, Tender, TenderAcceptance,
    };

    use super::*;

    /// An order with every optional part present; `sparse` leaves each field
    /// that `skip_serializing_if` may drop at the value that drops it.
    fn full(sparse: bool) -> Order {
        let n = |v: u64| if sparse { 0 } else { v };
        let pairs = |v: Vec<(u64, String)>| if sparse { Vec::new() } else { v };
        let event = |seq, kind| Event {
            seq,
            time_ms: 1_700_000_000_000 + seq,
            kind,
        };
        Order {
            order_id: "o-1".into(),
            external_refs: vec![("web".into(), "42".into()), ("app".into(), "x".into())],
            lines: vec![Line {
                sku: "sku-1".into(),
                quantity: 3,
                unit_price: -1999,
            }],
            currency: "CNY".into(),
            total: 5997,
            destination_region: "cn-sh".into(),
            requirements: Requirements {
                cold_chain: true,
                hazmat: false,
                category: "food".into(),
            },
            promised_delivery_ms: u64::MAX,
            price_version: 7,
            status: OrderStatus::Fenced,
            owner: Some("wh-east".into()),
            custodian: Some("carrier-1".into()),
            registered_by: "meituan".into(),
            registered_seq: 3,
            claimed_seq: 4,
            lease: Some(Lease {
                start_ms: 1,
                deadline_ms: 2,
                profile_version: 3,
                dispatch_time_ms: 4,
            }),
            offer: Some(Offer {
                to: "store-sh".into(),
                offer_seq: 9,
                expires_ms: 10,
            }),
            fence: Some(Fence {
                node: "wh-east".into(),
                status: OrderStatus::Packed,
                lapsed_seq: 11,
                from_ms: 12,
                until_ms: 13,
            }),
            carrier: "carrier-1".into(),
            tracking_id: "T-1".into(),
            proof_of_delivery: "sig".into(),
            last_lapsed_owner: "store-sh".into(),
            return_node: "wh-west".into(),
            refund: 100,
            exceptions: vec![("damaged".into(), "carrier-1".into(), 20)],
            events: vec![
                event(
                    4,
                    EventKind::Claimed {
                        node: "wh-east".into(),
                        profile_version: 3,
                        dispatch_time_ms: 4,
                    },
                ),
                event(
                    5,
                    EventKind::Shipped {
                        node: "wh-east".into(),
                        carrier: "carrier-1".into(),
                        agent: !sparse,
                    },
                ),
                event(6, EventKind::Cancelled),
                event(
                    7,
                    EventKind::DeliveryProven {
                        by: "carrier-1".into(),
                        grade: Grade::Scan,
                    },
                ),
            ],
            disputes: vec![Dispute {
                seq: 30,
                kind: "lost".into(),
                incident_ms: 31,
                opened_by: "meituan".into(),
                ruling: Some(RulingRecord {
                    liable: "carrier-1".into(),
                    rule: "custody".into(),
                    evidence: vec![4, 5],
                    seq: 32,
                }),
                known_good_ms: 33,
                parcels: n(2) as u32,
            }],
            sla: Some(SlaTerms {
                sourceable_ms: 40,
                ship_by_ms: 41,
            }),
            sourcing: Some(Sourcing {
                mode: SourcingMode::Brokered,
                assignment: Some(Assignment {
                    to: "wh-east".into(),
                    decision_seq: 50,
                    expires_ms: 51,
                }),
                decisions: vec![50],
                declines: vec![(52, true)],
                shortages: vec![53],
                reassigns: vec![54],
                declined_by: pairs(vec![(52, "store-sh".into())]),
                reassigned_from: pairs(vec![(54, "wh-west".into())]),
            }),
            last_seq: 60,
            tender: Some(Tender {
                carrier: "carrier-1".into(),
                node: "wh-east".into(),
                seq: 61,
                parcels: 2,
                accepted: Some(TenderAcceptance {
                    seq: 62,
                    tracking_id: "T-1".into(),
                    parcels: 2,
                    weight_grams: 1500,
                    damaged: false,
                }),
                expires_ms: n(63),
            }),
            delivery_code_sha256: vec![0xab; 32],
            delivery_code_used_seq: 64,
            delivery_grade: Some(Grade::Code),
        }
    }

    #[test]
    fn orders_round_trip_with_fields_left_out_and_present() {
        for sparse in [false, true] {
            let order = full(sparse);
            let record = encode(&order).unwrap();
            assert_eq!(record[0], BINARY);
            assert_eq!(decode::<Order>(&record).unwrap(), order, "sparse: {sparse}");
            let json = serde_json::to_vec(&order).unwrap();
            assert!(
                record.len() * 2 < json.len(),
                "{} vs {} bytes",
                record.len(),
                json.len()
            );
        }
    }

    #[test]
    fn json_records_of_earlier_builds_are_read() {
        for sparse in [false, true] {
            let order = full(sparse);
            let json = serde_json::to_vec(&order).unwrap();
            assert_eq!(decode::<Order>(&json).unwrap(), order);
        }
    }

    /// A party, a profile and a node's counters, each with its optional
    /// part left out and present.
    #[test]
    fn parties_profiles_and_counters_round_trip() {
        for sparse in [false, true] {
            let party = Party {
                party_id: "wh-east".into(),
                role: 2,
                kind: 1,
                public_key: (0..32).map(|i| i * 8).collect(),
                enrolled_seq: 3,
                key_seq: 4,
                revoked: !sparse,
                channel_names: vec!["web".into()],
            };
            let profile = Profile {
                node: "wh-east".into(),
                version: 2,
                published_seq: 5,
                regions: vec!["cn-sh".into(), "cn-bj".into()],
                max_open_orders: 1000,
                dispatch_time_ms: 3_600_000,
                handles_returns: true,
                cold_chain: false,
                hazmat: true,
                categories: vec!["food".into()],
            };
            let stats = NodeStats {
                open_orders: 7,
                claims: 300,
                health: HealthCounters {
                    reassigned: if sparse { 0 } else { 9 },
                    damage_noted: 1,
                    ..HealthCounters::default()
                },
                assignments_expired: 2,
                ..NodeStats::default()
            };
            let (p, f, n) = (
                encode(&party).unwrap(),
                encode(&profile).unwrap(),
                encode(&stats).unwrap(),
            );
            assert_eq!(decode::<Party>(&p).unwrap(), party);
            assert_eq!(decode::<Profile>(&f).unwrap(), profile);
            assert_eq!(decode::<NodeStats>(&n).unwrap(), stats, "sparse: {sparse}");
            let json = serde_json::to_vec(&stats).unwrap();
            assert_eq!(decode::<NodeStats>(&json).unwrap(), stats);
            assert!(
                n.len() * 4 < json.len(),
                "{} vs {} bytes",
                n.len(),
                json.len()
            );
        }
    }

    #[test]
    fn damaged_records_are_refused_by_name() {
        let record = encode(&full(false)).unwrap();
        let mut longer = record.clone();
        longer.push(0);
        assert_eq!(
            decode::<Order>(&longer).unwrap_err(),
            "1 bytes after the record"
        );
        assert!(decode::<Order>(&record[..record.len() - 5]).is_err());
        assert_eq!(
            decode::<Order>(b"\x07abc").unwrap_err(),
            "unknown record format (first byte 0x07)"
        );
        assert_eq!(decode::<Order>(b"").unwrap_err(), "empty record");
        assert!(decode::<Order>(b"{not json").is_err());
        // A record of one type is not read as another.
        let stats = encode(&NodeStats::default()).unwrap();
        assert!(decode::<Order>(&stats).is_err());
    }
}
