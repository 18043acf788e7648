//! The records the rules keep: parties and orders.

use serde::{Deserialize, Serialize};

use crate::pb;

/// An enrolled party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub party_id: String,
    /// `pb::Role` as i32.
    pub role: i32,
    /// `pb::NodeKind` as i32.
    pub kind: i32,
    pub public_key: Vec<u8>,
    pub enrolled_seq: u64,
}

impl Party {
    pub fn to_pb(&self) -> pb::PartyView {
        pb::PartyView {
            party_id: self.party_id.clone(),
            role: self.role,
            kind: self.kind,
            public_key: self.public_key.clone(),
            enrolled_seq: self.enrolled_seq,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Open,
    Claimed,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::Claimed => "claimed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: i64,
}

/// An order as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    /// (channel, external id) pairs.
    pub external_refs: Vec<(String, String)>,
    pub lines: Vec<Line>,
    pub currency: String,
    pub total: i64,
    pub destination_region: String,
    pub price_version: u64,
    pub status: OrderStatus,
    pub owner: Option<String>,
    pub registered_by: String,
    pub registered_seq: u64,
    pub claimed_seq: u64,
    /// The last ledger entry of this order (the head of its history links).
    pub last_seq: u64,
}

impl Order {
    pub fn to_pb(&self, history: Vec<u64>) -> pb::OrderView {
        pb::OrderView {
            order_id: self.order_id.clone(),
            external_refs: self
                .external_refs
                .iter()
                .map(|(c, e)| pb::ExternalRef {
                    channel: c.clone(),
                    external_id: e.clone(),
                })
                .collect(),
            lines: self
                .lines
                .iter()
                .map(|l| pb::OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                })
                .collect(),
            currency: self.currency.clone(),
            total: self.total,
            destination_region: self.destination_region.clone(),
            price_version: self.price_version,
            status: self.status.as_str().to_string(),
            owner: self.owner.clone().unwrap_or_default(),
            registered_by: self.registered_by.clone(),
            registered_seq: self.registered_seq,
            claimed_seq: self.claimed_seq,
            history,
        }
    }
}
