//! The order file `order register --file` reads (JSON).

use std::path::Path;

use anyhow::{Context, Result};
use arbor_client::pb;
use serde::Deserialize;

/// `order.json` as `arbor order register` reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFile {
    order_id: String,
    external_refs: Vec<RefFile>,
    lines: Vec<LineFile>,
    currency: String,
    total: i64,
    destination_region: String,
    #[serde(default)]
    requirements: Option<RequirementsFile>,
    #[serde(default)]
    promised_delivery_ms: u64,
    /// The same as RFC 3339 (`2025-12-08T08:00:00Z`).
    #[serde(default)]
    promised_delivery: Option<String>,
    /// Rules version 3: the recipient's one-time delivery code. Only its
    /// hash (with the order id) is registered; the code itself is not sent.
    #[serde(default)]
    delivery_code: Option<String>,
    /// The same, already hashed (64 hex digits).
    #[serde(default)]
    delivery_code_sha256: Option<String>,
    /// Rules version 3: the latest hand-off to the carrier the channel expects.
    #[serde(default)]
    ship_by_ms: u64,
    /// The same as RFC 3339.
    #[serde(default)]
    ship_by: Option<String>,
    /// Rules version 3: "race" (the default) or "brokered".
    #[serde(default)]
    sourcing: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementsFile {
    #[serde(default)]
    cold_chain: bool,
    #[serde(default)]
    hazmat: bool,
    #[serde(default)]
    category: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefFile {
    channel: String,
    external_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFile {
    sku: String,
    quantity: u32,
    unit_price: i64,
}

/// Parses the text of an order file.
pub(super) fn parse_order(text: &str) -> Result<pb::RegisterOrder, serde_json::Error> {
    use serde::de::Error;
    let f: OrderFile = serde_json::from_str(text)?;
    let promised_delivery_ms = match (&f.promised_delivery, f.promised_delivery_ms) {
        (None, ms) => ms,
        (Some(t), 0) => crate::time::parse_time(t)
            .map_err(|e| serde_json::Error::custom(format!("promised_delivery: {e}")))?,
        (Some(_), _) => {
            return Err(serde_json::Error::custom(
                "give promised_delivery (RFC 3339) or promised_delivery_ms, not both",
            ))
        }
    };
    let delivery_code_sha256 = match (&f.delivery_code, &f.delivery_code_sha256) {
        (None, None) => Vec::new(),
        (Some(code), None) => arbor_client::delivery_code_hash(&f.order_id, code).to_vec(),
        (None, Some(h)) => hex::decode(h)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                serde_json::Error::custom("delivery_code_sha256 is not 64 hex digits")
            })?,
        (Some(_), Some(_)) => {
            return Err(serde_json::Error::custom(
                "give delivery_code or delivery_code_sha256, not both",
            ))
        }
    };
    let ship_by_ms = match (&f.ship_by, f.ship_by_ms) {
        (None, ms) => ms,
        (Some(t), 0) => crate::time::parse_time(t)
            .map_err(|e| serde_json::Error::custom(format!("ship_by: {e}")))?,
        (Some(_), _) => {
            return Err(serde_json::Error::custom(
                "give ship_by (RFC 3339) or ship_by_ms, not both",
            ))
        }
    };
    let sourcing_mode = match f.sourcing.as_deref() {
        None => 0,
        Some("race") => pb::SourcingMode::Race as i32,
        Some("brokered") => pb::SourcingMode::Brokered as i32,
        Some(other) => {
            return Err(serde_json::Error::custom(format!(
                "sourcing: {other:?} is neither \"race\" nor \"brokered\""
            )))
        }
    };
    Ok(pb::RegisterOrder {
        sourcing_mode,
        ship_by_ms,
        order_id: f.order_id,
        external_refs: f
            .external_refs
            .into_iter()
            .map(|r| pb::ExternalRef {
                channel: r.channel,
                external_id: r.external_id,
            })
            .collect(),
        lines: f
            .lines
            .into_iter()
            .map(|l| pb::OrderLine {
                sku: l.sku,
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect(),
        currency: f.currency,
        total: f.total,
        destination_region: f.destination_region,
        requirements: f.requirements.map(|r| pb::Requirements {
            cold_chain: r.cold_chain,
            hazmat: r.hazmat,
            category: r.category,
        }),
        promised_delivery_ms,
        delivery_code_sha256,
    })
}

/// Reads an order file; errors name the file.
pub fn load_order_file(path: &Path) -> Result<pb::RegisterOrder> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read order file {}", path.display()))?;
    parse_order(&text).with_context(|| format!("order file {} is not valid", path.display()))
}
