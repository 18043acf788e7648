//! Structural checks: a command that fails these is malformed and refused,
//! never appended. They depend only on the command itself.

use super::Refusal;
use crate::pb;
use crate::pb::command::Body;

pub const MAX_ID_LEN: usize = 128;
const MAX_LINES: usize = 1000;
const MAX_REFS: usize = 16;

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::Malformed(msg.into())
}

/// Ids: 1-128 chars of ASCII letters, digits and `_ - . : @ /`.
fn check_id(what: &str, id: &str) -> Result<(), Refusal> {
    if id.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(bad(format!("{what} is longer than {MAX_ID_LEN} bytes")));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.:@/".contains(*c)))
    {
        return Err(bad(format!(
            "{what} {id:?} contains {c:?}; allowed: letters, digits, _ - . : @ /"
        )));
    }
    Ok(())
}

fn check_public_key(bytes: &[u8]) -> Result<(), Refusal> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad(format!("public key is {} bytes, expected 32", bytes.len())))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| bad("public key is not a valid ed25519 point"))?;
    if key.is_weak() {
        return Err(bad("public key is a weak (small-order) ed25519 key"));
    }
    Ok(())
}

/// Checks a command's structure.
pub fn validate_command(cmd: &pb::Command) -> Result<(), Refusal> {
    match cmd.body.as_ref() {
        None => Err(bad("command has no body")),
        Some(Body::Genesis(g)) => {
            if g.operators.is_empty() {
                return Err(bad("genesis names no operator"));
            }
            for op in &g.operators {
                check_id("operator party id", &op.party_id)?;
                check_public_key(&op.public_key)?;
            }
            Ok(())
        }
        Some(Body::EnrollParty(e)) => {
            check_id("party id", &e.party_id)?;
            let role =
                pb::Role::try_from(e.role).map_err(|_| bad(format!("unknown role {}", e.role)))?;
            let kind = pb::NodeKind::try_from(e.kind)
                .map_err(|_| bad(format!("unknown node kind {}", e.kind)))?;
            match (role, kind) {
                (pb::Role::Unspecified, _) => return Err(bad("role is not set")),
                (pb::Role::Node, pb::NodeKind::Unspecified) => {
                    return Err(bad(
                        "a node party needs a kind: store, warehouse, 3pl or carrier",
                    ))
                }
                (pb::Role::Node, _) => {}
                (_, pb::NodeKind::Unspecified) => {}
                (_, _) => return Err(bad("only node parties have a kind")),
            }
            check_public_key(&e.public_key)
        }
        Some(Body::RegisterOrder(r)) => {
            check_id("order id", &r.order_id)?;
            if r.external_refs.is_empty() {
                return Err(bad("order has no external reference"));
            }
            if r.external_refs.len() > MAX_REFS {
                return Err(bad(format!(
                    "order has more than {MAX_REFS} external references"
                )));
            }
            for (i, x) in r.external_refs.iter().enumerate() {
                check_id("external reference channel", &x.channel)?;
                check_id("external reference id", &x.external_id)?;
                if r.external_refs[..i]
                    .iter()
                    .any(|y| y.channel == x.channel && y.external_id == x.external_id)
                {
                    return Err(bad(format!(
                        "external reference {}/{} is listed twice",
                        x.channel, x.external_id
                    )));
                }
            }
            if r.lines.is_empty() {
                return Err(bad("order has no lines"));
            }
            if r.lines.len() > MAX_LINES {
                return Err(bad(format!("order has more than {MAX_LINES} lines")));
            }
            let mut sum: i64 = 0;
            for (i, l) in r.lines.iter().enumerate() {
                check_id(&format!("line {} sku", i + 1), &l.sku)?;
                if l.quantity == 0 {
                    return Err(bad(format!("line {} has quantity 0", i + 1)));
                }
                if l.unit_price < 0 {
                    return Err(bad(format!("line {} has a negative unit price", i + 1)));
                }
                let amount = (l.quantity as i64)
                    .checked_mul(l.unit_price)
                    .ok_or_else(|| bad(format!("line {} amount overflows", i + 1)))?;
                sum = sum
                    .checked_add(amount)
                    .ok_or_else(|| bad("order total overflows"))?;
            }
            if sum != r.total {
                return Err(bad(format!(
                    "total {} does not equal the sum of the lines {}",
                    r.total, sum
                )));
            }
            if r.currency.len() != 3 || !r.currency.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(bad(format!(
                    "currency {:?} is not a 3-letter ISO 4217 code",
                    r.currency
                )));
            }
            check_id("destination region", &r.destination_region)
        }
        Some(Body::ClaimOrder(c)) => {
            check_id("order id", &c.order_id)?;
            if c.price_version == 0 {
                return Err(bad("price version is 0; versions start at 1"));
            }
            Ok(())
        }
    }
}
