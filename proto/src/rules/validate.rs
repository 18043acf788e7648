//! Structural checks: a command that fails these is malformed and refused,
//! never appended. They depend only on the command itself.

use super::state::{CURRENT_RULES_VERSION, MAX_FENCE_MS};
use super::Refusal;
use crate::pb;
use crate::pb::command::Body;

pub const MAX_ID_LEN: usize = 128;
const MAX_LINES: usize = 1000;
const MAX_REFS: usize = 16;

pub(super) fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::Malformed(msg.into())
}

/// Ids: 1-128 chars of ASCII letters, digits and `_ - . : @ /`.
pub(super) fn check_id(what: &str, id: &str) -> Result<(), Refusal> {
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
    let point = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| bad("public key is not a valid ed25519 point"))?;
    // RFC 8032 §5.1.3: an encoding whose y is not reduced mod p (or that sets
    // the sign bit of x = 0) is invalid. The decoder accepts it, so a party
    // could enrol a second spelling of a key another party holds: compare the
    // bytes with the point's one canonical encoding.
    if point.to_edwards().compress().to_bytes() != key {
        return Err(bad(
            "public key is not canonically encoded (RFC 8032 5.1.3): the same point has another, canonical encoding",
        ));
    }
    if point.is_weak() {
        return Err(bad("public key is a weak (small-order) ed25519 key"));
    }
    Ok(())
}

/// The longest address a membership command may name.
pub const MAX_ADDR_LEN: usize = 255;

/// Replica addresses: `HOST:PORT`, the host a DNS name (letters, digits,
/// `.` and `-`), an IPv4 address or a bracketed IPv6 address, the port 1-65535.
pub fn check_addr(what: &str, addr: &str) -> Result<(), Refusal> {
    let malformed = || {
        bad(format!(
            "{what} {addr:?} is not HOST:PORT (a host name, IPv4 or [IPv6] address, and a port 1-65535)"
        ))
    };
    if addr.len() > MAX_ADDR_LEN {
        return Err(bad(format!("{what} is longer than {MAX_ADDR_LEN} bytes")));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(malformed)?;
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && !host.starts_with(['.', '-'])
        }
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(malformed())
    }
}

/// A replica named by a membership command: node id > 0, both addresses `HOST:PORT`.
fn check_replica(node_id: u64, addr: &str, peer_addr: &str) -> Result<(), Refusal> {
    if node_id == 0 {
        return Err(bad("replica node id must be > 0"));
    }
    check_addr("client address", addr)?;
    check_addr("peer address", peer_addr)
}

/// A rules version this code knows, and a fence within bounds.
fn check_rules_version(what: &str, version: u32, fence_ms: u64) -> Result<(), Refusal> {
    if version > CURRENT_RULES_VERSION {
        return Err(bad(format!(
            "{what} names rules version {version}; this code knows versions 1 to {CURRENT_RULES_VERSION}"
        )));
    }
    if fence_ms > MAX_FENCE_MS {
        return Err(bad(format!(
            "{what} sets a fence of {fence_ms} ms, over the limit of {MAX_FENCE_MS} ms (30 days)"
        )));
    }
    if version < 2 && fence_ms != 0 {
        return Err(bad(format!(
            "{what} sets a fence under rules version {version}; fences exist from version 2"
        )));
    }
    Ok(())
}

/// Rules version 3: claim deadlines within bounds, and only from version 3
/// (`deadlines.rs`).
fn check_claim_deadlines(
    what: &str,
    version: u32,
    d: &Option<pb::ClaimDeadlines>,
) -> Result<(), Refusal> {
    let d = super::ClaimDeadlines::from_pb(d.as_ref());
    if d.max() > super::MAX_CLAIM_DEADLINE_MS {
        return Err(bad(format!(
            "{what} sets a claim deadline of {} ms, over the limit of {} ms (10 years)",
            d.max(),
            super::MAX_CLAIM_DEADLINE_MS
        )));
    }
    if version < 3 && d.is_set() {
        return Err(bad(format!(
            "{what} sets claim deadlines under rules version {version}; claim deadlines exist from version 3"
        )));
    }
    Ok(())
}

/// Checks a command's structure.
pub fn validate_command(cmd: &pb::Command) -> Result<(), Refusal> {
    match cmd.body.as_ref() {
        None => Err(bad("command has no body")),
        Some(Body::Genesis(g)) => {
            // Signatures name the cluster id followed by a NUL (ledger::command_message).
            check_id("cluster id", &g.cluster_id)?;
            if g.operators.is_empty() {
                return Err(bad("genesis names no operator"));
            }
            for (i, op) in g.operators.iter().enumerate() {
                check_id("operator party id", &op.party_id)?;
                check_public_key(&op.public_key)?;
                if g.operators[..i]
                    .iter()
                    .any(|o| o.party_id == op.party_id || o.public_key == op.public_key)
                {
                    return Err(bad(format!(
                        "genesis lists operator {} (or its key) twice",
                        op.party_id
                    )));
                }
            }
            for (i, m) in g.members.iter().enumerate() {
                check_replica(m.node_id, &m.addr, &m.peer_addr)?;
                if g.members[..i].iter().any(|o| o.node_id == m.node_id) {
                    return Err(bad(format!("genesis lists replica {} twice", m.node_id)));
                }
            }
            check_rules_version("genesis", g.rules_version.max(1), g.fence_ms)?;
            check_claim_deadlines("genesis", g.rules_version.max(1), &g.claim_deadlines)
        }
        Some(Body::SetRulesVersion(r)) => {
            if r.version == 0 {
                return Err(bad(
                    "SetRulesVersion names no version (versions start at 1)",
                ));
            }
            check_rules_version("SetRulesVersion", r.version, r.fence_ms)?;
            check_claim_deadlines("SetRulesVersion", r.version, &r.claim_deadlines)
        }
        Some(Body::AddReplica(a)) => check_replica(a.node_id, &a.addr, &a.peer_addr),
        Some(Body::RemoveReplica(r)) => {
            if r.node_id == 0 {
                return Err(bad("replica node id must be > 0"));
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
            if !e.channel_names.is_empty() && role != pb::Role::Channel {
                return Err(bad("only channel parties name reference channels"));
            }
            if e.channel_names.len() > MAX_REFS {
                return Err(bad(format!(
                    "a channel names more than {MAX_REFS} reference channels"
                )));
            }
            for (i, c) in e.channel_names.iter().enumerate() {
                check_id("reference channel name", c)?;
                if e.channel_names[..i].contains(c) {
                    return Err(bad(format!("reference channel {c} is listed twice")));
                }
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
            check_lines(&r.lines, r.total)?;
            if r.currency.len() != 3 || !r.currency.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(bad(format!(
                    "currency {:?} is not a 3-letter ISO 4217 code",
                    r.currency
                )));
            }
            check_id("destination region", &r.destination_region)?;
            if !r.delivery_code_sha256.is_empty() && r.delivery_code_sha256.len() != 32 {
                return Err(bad(format!(
                    "delivery code hash is {} bytes, expected 32 (SHA-256)",
                    r.delivery_code_sha256.len()
                )));
            }
            if let Some(req) = &r.requirements {
                if !req.category.is_empty() {
                    check_id("required category", &req.category)?;
                }
            }
            if r.ship_by_ms != 0
                && r.promised_delivery_ms != 0
                && r.ship_by_ms > r.promised_delivery_ms
            {
                return Err(bad(format!(
                    "the ship-by {} is after the promised delivery {}",
                    r.ship_by_ms, r.promised_delivery_ms
                )));
            }
            Ok(())
        }
        Some(Body::ClaimOrder(c)) => {
            check_id("order id", &c.order_id)?;
            if c.price_version == 0 {
                return Err(bad("price version is 0; versions start at 1"));
            }
            Ok(())
        }
        Some(Body::RotateKey(r)) => {
            check_id("party id", &r.party_id)?;
            check_public_key(&r.public_key)
        }
        Some(Body::RevokeKey(r)) => {
            check_id("party id", &r.party_id)?;
            check_text("reason", &r.reason, true)
        }
        Some(Body::PublishProfile(p)) => {
            check_id_list("region", &p.regions, true)?;
            check_id_list("category", &p.categories, false)?;
            if p.max_open_orders == 0 {
                return Err(bad(
                    "max open orders is 0: a node must be able to hold one order",
                ));
            }
            if p.dispatch_time_ms == 0 || p.dispatch_time_ms > MAX_DISPATCH_MS {
                return Err(bad(format!(
                    "dispatch time {} ms is outside 1 ms .. 30 days",
                    p.dispatch_time_ms
                )));
            }
            Ok(())
        }
        Some(Body::AmendPrice(a)) => {
            check_id("order id", &a.order_id)?;
            if a.base_version == 0 {
                return Err(bad("base price version is 0; versions start at 1"));
            }
            check_lines(&a.lines, a.total)?;
            check_text("reason", &a.reason, true)
        }
        Some(Body::CancelOrder(c)) => {
            check_id("order id", &c.order_id)?;
            check_text("reason", &c.reason, false)
        }
        Some(Body::ReleaseOrder(r)) => {
            check_id("order id", &r.order_id)?;
            check_text("reason", &r.reason, true)
        }
        Some(Body::OfferHandoff(o)) => {
            check_id("order id", &o.order_id)?;
            check_id("receiving node", &o.to)?;
            if o.expires_in_ms == 0 || o.expires_in_ms > MAX_OFFER_MS {
                return Err(bad(format!(
                    "offer expiry {} ms is outside 1 ms .. 7 days",
                    o.expires_in_ms
                )));
            }
            Ok(())
        }
        Some(Body::AcceptHandoff(a)) => {
            check_id("order id", &a.order_id)?;
            check_offer_seq(a.offer_seq)?;
            check_text("note", &a.note, false)
        }
        Some(Body::DeclineHandoff(d)) => {
            check_id("order id", &d.order_id)?;
            check_offer_seq(d.offer_seq)?;
            check_text("reason", &d.reason, false)
        }
        Some(Body::ReportMilestone(m)) => {
            check_id("order id", &m.order_id)?;
            let milestone = pb::Milestone::try_from(m.milestone)
                .map_err(|_| bad(format!("unknown milestone {}", m.milestone)))?;
            let shipped = milestone == pb::Milestone::Shipped;
            match milestone {
                pb::Milestone::Unspecified => return Err(bad("milestone is not set")),
                pb::Milestone::Shipped => {
                    check_id("carrier", &m.carrier)?;
                    check_text("tracking id", &m.tracking_id, true)?;
                }
                _ => {}
            }
            if !shipped && (!m.carrier.is_empty() || !m.tracking_id.is_empty()) {
                return Err(bad(
                    "carrier and tracking id belong to the shipped milestone only",
                ));
            }
            if !shipped && (m.tender || m.parcels != 0) {
                return Err(bad("a tender belongs to the shipped milestone only"));
            }
            if m.parcels != 0 && !m.tender {
                return Err(bad("parcels are stated with a tender only"));
            }
            check_parcels(m.parcels)?;
            // Rules version 4: a tender's own timeout.
            if m.tender_timeout_ms != 0 && !m.tender {
                return Err(bad("a tender timeout is stated with a tender only"));
            }
            if m.tender_timeout_ms > super::carriers::MAX_TENDER_TIMEOUT_MS {
                return Err(bad(format!(
                    "a tender timeout of {} ms is over the limit of {} ms (7 days)",
                    m.tender_timeout_ms,
                    super::carriers::MAX_TENDER_TIMEOUT_MS
                )));
            }
            if !m.delivery_code.is_empty() {
                if milestone != pb::Milestone::Delivered {
                    return Err(bad(
                        "a delivery code belongs to the delivered milestone only",
                    ));
                }
                check_delivery_code(&m.delivery_code)?;
            }
            if milestone != pb::Milestone::Delivered && !m.proof_of_delivery.is_empty() {
                return Err(bad(
                    "proof of delivery belongs to the delivered milestone only",
                ));
            }
            check_text("proof of delivery", &m.proof_of_delivery, false)?;
            if m.price_version == 0 && m.total != 0 {
                return Err(bad("a total is quoted without its price version"));
            }
            Ok(())
        }
        Some(Body::ReportException(e)) => {
            check_id("order id", &e.order_id)?;
            match pb::ExceptionKind::try_from(e.kind) {
                Ok(pb::ExceptionKind::Unspecified) => Err(bad("exception kind is not set")),
                Ok(_) => check_text("note", &e.note, false),
                Err(_) => Err(bad(format!("unknown exception kind {}", e.kind))),
            }
        }
        Some(Body::RequestReturn(r)) => {
            check_id("order id", &r.order_id)?;
            check_text("reason", &r.reason, false)
        }
        Some(Body::ClaimReturn(c)) => check_id("order id", &c.order_id),
        Some(Body::RecordLapse(c)) => check_id("order id", &c.order_id),
        Some(Body::OpenDispute(d)) => {
            check_id("order id", &d.order_id)?;
            match pb::IncidentKind::try_from(d.kind) {
                Ok(pb::IncidentKind::Unspecified) => return Err(bad("incident kind is not set")),
                Ok(_) => {}
                Err(_) => return Err(bad(format!("unknown incident kind {}", d.kind))),
            }
            if d.incident_ms == 0 {
                return Err(bad("incident time is not set"));
            }
            if d.known_good_ms > d.incident_ms {
                return Err(bad(format!(
                    "the window's known-good time {} is after its known-bad time {}",
                    d.known_good_ms, d.incident_ms
                )));
            }
            if d.known_good_ms != 0
                && !matches!(
                    pb::IncidentKind::try_from(d.kind),
                    Ok(pb::IncidentKind::Lost | pb::IncidentKind::Damaged)
                )
            {
                return Err(bad("only lost and damaged disputes name a window"));
            }
            // Rules version 4: the parcels a lost dispute is about.
            if d.parcels != 0 && pb::IncidentKind::try_from(d.kind) != Ok(pb::IncidentKind::Lost) {
                return Err(bad("only a lost dispute names parcels"));
            }
            check_parcels(d.parcels)?;
            check_text("statement", &d.statement, false)
        }
        Some(Body::ResolveDispute(r)) => {
            check_id("order id", &r.order_id)?;
            if r.dispute_seq == 0 {
                return Err(bad("dispute seq is 0: name the entry that opened it"));
            }
            if !r.liable.is_empty() {
                check_id("liable party", &r.liable)?;
            }
            check_id("rule", &r.rule)?;
            if r.evidence.len() > MAX_LIST {
                return Err(bad(format!("more than {MAX_LIST} evidence entries")));
            }
            Ok(())
        }
        Some(Body::AcceptTender(a)) => {
            check_id("order id", &a.order_id)?;
            if a.tender_seq == 0 {
                return Err(bad("tender seq is 0: name the entry of the tender"));
            }
            check_text("tracking id", &a.tracking_id, true)?;
            if a.parcels == 0 {
                return Err(bad("a tender acceptance signs for at least one parcel"));
            }
            check_parcels(a.parcels)?;
            if a.weight_grams > MAX_WEIGHT_GRAMS {
                return Err(bad(format!(
                    "weight {} g is over {MAX_WEIGHT_GRAMS} g",
                    a.weight_grams
                )));
            }
            check_text("description", &a.description, false)?;
            check_text("note", &a.note, false)
        }
        Some(Body::ScanDelivery(d)) => {
            check_id("order id", &d.order_id)?;
            check_text("tracking id", &d.tracking_id, true)?;
            if !d.delivery_code.is_empty() {
                check_delivery_code(&d.delivery_code)?;
            }
            check_text("note", &d.note, false)
        }
        Some(Body::ReceiveReturn(r)) => {
            check_id("order id", &r.order_id)?;
            if r.refund < 0 {
                return Err(bad(format!("refund {} is negative", r.refund)));
            }
            if r.price_version == 0 {
                return Err(bad("price version is 0; versions start at 1"));
            }
            Ok(())
        }
        // Rules version 3: sourcing (super::sourcing).
        Some(
            body @ (Body::SourceOrder(_)
            | Body::AcceptAssignment(_)
            | Body::DeclineAssignment(_)
            | Body::ReassignOrder(_)),
        ) => super::sourcing::validate(body).unwrap_or(Ok(())),
    }
}

const MAX_TEXT: usize = 1024;
/// Rules version 3: the most parcels a tender names, and the heaviest
/// weight a tender acceptance states (100 t).
const MAX_PARCELS: u32 = 10_000;
const MAX_WEIGHT_GRAMS: u64 = 100_000_000;

fn check_parcels(parcels: u32) -> Result<(), Refusal> {
    if parcels > MAX_PARCELS {
        return Err(bad(format!(
            "{parcels} parcels is over the limit of {MAX_PARCELS}"
        )));
    }
    Ok(())
}

/// A one-time delivery code: 8-64 printable ASCII characters, no spaces.
fn check_delivery_code(code: &str) -> Result<(), Refusal> {
    use super::carriers::{MAX_DELIVERY_CODE_LEN, MIN_DELIVERY_CODE_LEN};
    if code.len() < MIN_DELIVERY_CODE_LEN || code.len() > MAX_DELIVERY_CODE_LEN {
        return Err(bad(format!(
            "delivery code is {} bytes; codes have {MIN_DELIVERY_CODE_LEN}-{MAX_DELIVERY_CODE_LEN}",
            code.len()
        )));
    }
    if !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "delivery code has a character other than printable ASCII (no spaces)",
        ));
    }
    Ok(())
}
const MAX_LIST: usize = 256;
const MAX_DISPATCH_MS: u64 = 30 * 24 * 3600 * 1000;
pub(super) const MAX_OFFER_MS: u64 = 7 * 24 * 3600 * 1000;

/// Free text (reasons, notes): at most 1 KiB, no control characters.
pub(super) fn check_text(what: &str, text: &str, required: bool) -> Result<(), Refusal> {
    if required && text.trim().is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if text.len() > MAX_TEXT {
        return Err(bad(format!("{what} is longer than {MAX_TEXT} bytes")));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(bad(format!("{what} contains a control character")));
    }
    Ok(())
}

fn check_id_list(what: &str, ids: &[String], required: bool) -> Result<(), Refusal> {
    if required && ids.is_empty() {
        return Err(bad(format!("no {what} is listed")));
    }
    if ids.len() > MAX_LIST {
        return Err(bad(format!("more than {MAX_LIST} {what}s are listed")));
    }
    for (i, id) in ids.iter().enumerate() {
        check_id(what, id)?;
        if ids[..i].contains(id) {
            return Err(bad(format!("{what} {id} is listed twice")));
        }
    }
    Ok(())
}

fn check_offer_seq(seq: u64) -> Result<(), Refusal> {
    if seq == 0 {
        return Err(bad("offer seq is 0: name the entry of the offer"));
    }
    Ok(())
}

/// Order lines and their total: quantities and prices in range, the total
/// the exact sum.
fn check_lines(lines: &[pb::OrderLine], total: i64) -> Result<(), Refusal> {
    if lines.is_empty() {
        return Err(bad("order has no lines"));
    }
    if lines.len() > MAX_LINES {
        return Err(bad(format!("order has more than {MAX_LINES} lines")));
    }
    let mut sum: i64 = 0;
    for (i, l) in lines.iter().enumerate() {
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
    if sum != total {
        return Err(bad(format!(
            "total {total} does not equal the sum of the lines {sum}"
        )));
    }
    Ok(())
}
