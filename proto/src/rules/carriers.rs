//! Carriers sign (rules version 3): the records of a tender to an enrolled
//! carrier and of its signed acceptance, and the one-time delivery code's
//! hash. The rules that use them are in `decide/carriers.rs`; the rulings
//! that rest on them in `disputes.rs` (docs/disputes.md §4.7).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::code::{Grade, Rule};
use super::disputes::{custody_after, Ruling};
use super::state::{EventKind, Order};

/// The domain tag of a delivery code's hash.
pub const DELIVERY_CODE_TAG: &[u8] = b"arbor.v3.delivery-code\0";

/// The shortest and longest delivery code a command may present (bytes).
pub const MIN_DELIVERY_CODE_LEN: usize = 8;
pub const MAX_DELIVERY_CODE_LEN: usize = 64;

/// The hash a channel registers for a one-time delivery code:
/// SHA-256 over `"arbor.v3.delivery-code\0" || order_id || "\0" || code`.
pub fn delivery_code_hash(order_id: &str, code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DELIVERY_CODE_TAG);
    h.update(order_id.as_bytes());
    h.update([0u8]);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// A tender of an order to an enrolled carrier, made by the owner's
/// `shipped` (with `tender` set). The owner stays the custodian until the
/// carrier signs [`TenderAcceptance`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tender {
    /// The carrier party it is tendered to.
    pub carrier: String,
    /// The node that tendered it (the owner).
    pub node: String,
    /// The tender entry (the `shipped` milestone).
    pub seq: u64,
    /// Parcels the node tendered (0: not stated).
    pub parcels: u32,
    /// The carrier's signed acceptance; `None` while the tender is pending.
    pub accepted: Option<TenderAcceptance>,
    /// Rules version 4: the carrier must sign by then (the tender entry's
    /// time + its timeout); 0: no deadline (a tender of version 3). Last:
    /// a field that may be left out ends its struct (the replica's binary
    /// order records hold structs as arrays).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expires_ms: u64,
}

/// What the carrier signed for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenderAcceptance {
    /// The `AcceptTender` entry: custody passed to the carrier there.
    pub seq: u64,
    pub tracking_id: String,
    pub parcels: u32,
    pub weight_grams: u64,
    pub damaged: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Rules version 4: how long a tender stands when it names no timeout: 24 h.
pub const DEFAULT_TENDER_TIMEOUT_MS: u64 = 24 * 3_600_000;

/// Rules version 4: the longest timeout a tender may name: 7 days.
pub const MAX_TENDER_TIMEOUT_MS: u64 = 7 * 24 * 3_600_000;

/// A ruling that names nobody liable.
fn ruling(rule: Rule, evidence: Vec<u64>, explanation: String) -> Ruling {
    Ruling {
        liable: String::new(),
        rule,
        evidence,
        explanation,
    }
}

/// Rules version 3: when custody had ended by `t` with a proven delivery,
/// the ruling rests on its grade: nobody is liable, and the evidence is the
/// delivery entry (with the tender acceptance, for a carrier's scan).
pub(super) fn proven_delivery(order: &Order, t: u64, what: &str) -> Option<Ruling> {
    let mut c = None;
    let mut ended = None;
    for e in order.events.iter().filter(|e| e.time_ms <= t) {
        let next = custody_after(c.clone(), e);
        if next.is_none() && c.is_some() {
            ended = Some(e);
        } else if next.is_some() {
            ended = None;
        }
        c = next;
    }
    let e = ended?;
    let EventKind::DeliveryProven { by, grade } = &e.kind else {
        return None;
    };
    let id = &order.order_id;
    Some(match grade {
        Grade::Code | Grade::Word => ruling(
            Rule::DeliveredWithCode,
            vec![e.seq],
            format!(
                "order {id} {what} at {t}: it was delivered before, {by} presenting the recipient's one-time delivery code (entry {}), so nobody in the chain held it",
                e.seq
            ),
        ),
        Grade::Scan => {
            let mut evidence: Vec<u64> = order
                .events
                .iter()
                .rev()
                .filter(|x| x.seq < e.seq)
                .find(|x| matches!(x.kind, EventKind::TenderAccepted { .. }))
                .map(|x| vec![x.seq])
                .unwrap_or_default();
            evidence.push(e.seq);
            ruling(
                Rule::DeliveredByCarrierScan,
                evidence,
                format!(
                    "order {id} {what} at {t}: it was delivered before, by {by}'s signed delivery scan (entry {}), so nobody in the chain held it",
                    e.seq
                ),
            )
        }
    })
}
