//! The deterministic arbitration state machine.
//!
//! [`apply`] turns the bytes of a committed command into a [`Decision`]
//! against a read-only [`StateView`]: either a *refusal* (malformed, unknown
//! signer, wrong role: nothing is appended) or an *outcome* (accepted or
//! rejected with a reason: appended to the ledger either way) plus the state
//! [`Effect`]s.
//! The caller (a replica's RocksDB store, or an auditor's in-memory replay)
//! writes the entry and the effects. Nothing here reads a clock or does I/O:
//! the time is the leader's stamp carried in the raft log.
//!
//! Signatures are checked where a command enters the cluster, not on every
//! apply: the leader admits a command with [`decode`], [`authorize`] and
//! [`check_signature`] (batched, in `node/src/api/admission.rs`) before it
//! proposes it; the offline verifier checks them all again.
//!
//! The rooms: `code` names every outcome code, rule, incident, exception and
//! refusal kind ([`Code`], [`Rule`], [`Incident`], [`Exception`],
//! [`RefusalKind`]); `validate` checks
//! a command's structure; `decide/` holds the business rules by command
//! family; `disputes` the responsibility rules; `state` the records the rules
//! keep; `mem` the in-memory state that replay and the tests apply to.

pub mod carriers;
mod code;
pub mod custody;
mod deadlines;
mod decide;
mod disputes;
pub mod health;
mod mem;
pub mod sla;
pub mod sourcing;
mod state;
mod validate;

pub use code::{Code, Exception, Grade, Incident, RefusalKind, Rule};
pub use deadlines::{claim_anchor, parse_claim_deadline, ClaimDeadlines, MAX_CLAIM_DEADLINE_MS};
pub use decide::{check_eligible, claimable_by, decide, order_id_of};
pub use disputes::{rule_on, Ruling};
pub use health::{health_at, health_score, HealthCounters, MAX_HEALTH_SCORE};
pub use mem::{Applied, MemState};
pub use state::{
    lines_from_pb, lines_to_pb, ClusterConfig, Dispute, Event, EventKind, Fence, Lease, Line,
    Membership, NodeStats, Offer, Order, OrderStatus, Party, Profile, Replica, Requirements,
    RulingRecord, Tender, TenderAcceptance, CURRENT_RULES_VERSION, DEFAULT_FENCE_MS, MAX_FENCE_MS,
};
pub use validate::{check_addr, validate_command, MAX_ADDR_LEN, MAX_ID_LEN};

use prost::Message;

use crate::ledger::{self, SignatureError};
use crate::pb;

/// Read access to the state the rules decide against.
pub trait StateView {
    fn party(&self, party_id: &str) -> Option<Party>;
    fn order(&self, order_id: &str) -> Option<Order>;
    /// An order's last entry ([`Order::last_seq`]) without the rest of the
    /// order; the default reads the whole order.
    fn order_last_seq(&self, order_id: &str) -> Option<u64> {
        self.order(order_id).map(|o| o.last_seq)
    }
    /// The canonical order id an external reference belongs to.
    fn order_by_ref(&self, channel: &str, external_id: &str) -> Option<String>;
    /// The party id a public key is enrolled under.
    fn party_by_key(&self, public_key: &[u8]) -> Option<String>;
    /// Whether the genesis entry has been applied.
    fn has_genesis(&self) -> bool;
    /// A node's capability profile in force (its latest version).
    fn profile(&self, node: &str) -> Option<Profile>;
    /// A node's counters; `None` before anything was counted.
    fn stats(&self, node: &str) -> Option<NodeStats>;
    /// The cluster configuration genesis fixed (`None` before genesis).
    fn config(&self) -> Option<ClusterConfig>;
    /// The desired membership the ledger records (`None` before genesis).
    fn membership(&self) -> Option<Membership>;
    /// Rules version 4: the order that registered delivery code hash `hash`
    /// (an index of the hashes registered under version 4 and later, one
    /// lookup whatever the ledger's length). The replicas' views and the
    /// in-memory state answer it; a view that cannot know it (a client's
    /// pre-check) keeps this default, "none".
    fn order_by_delivery_code(&self, _hash: &[u8]) -> Option<String> {
        None
    }
    /// Rules version 4 (sourcing): every node that has a profile, in id
    /// order. A scan of the profile index only (one key per node that
    /// published one), never of orders; read by a sourcing decision.
    fn profiled_nodes(&self) -> Vec<String>;
}

/// A state change produced by an accepted (or rejected) command.
#[allow(clippy::large_enum_variant)] // short-lived, a handful per entry
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    PutParty(Party),
    PutOrder(Order),
    PutRef {
        channel: String,
        external_id: String,
        order_id: String,
    },
    PutProfile(Profile),
    PutStats {
        node: String,
        stats: NodeStats,
    },
    PutConfig(ClusterConfig),
    PutMembership(Membership),
    /// Rules version 4: the delivery code hash index (`order_by_delivery_code`).
    PutDeliveryCode {
        hash: Vec<u8>,
        order_id: String,
    },
}

/// A command that is recorded in the ledger, with what it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub accepted: bool,
    pub code: Code,
    pub message: String,
    /// The order this entry concerns ("" if none): the entry is linked into its history.
    pub order_id: String,
    /// The order's previous entry (0 if none); filled in by [`decide`].
    pub order_prev_seq: u64,
    pub effects: Vec<Effect>,
}

impl Decision {
    pub fn accept(order_id: impl Into<String>, effects: Vec<Effect>) -> Self {
        Decision {
            accepted: true,
            code: Code::Accepted,
            message: String::new(),
            order_id: order_id.into(),
            order_prev_seq: 0,
            effects,
        }
    }

    pub fn reject(code: Code, message: impl Into<String>, order_id: impl Into<String>) -> Self {
        Decision {
            accepted: false,
            code,
            message: message.into(),
            order_id: order_id.into(),
            order_prev_seq: 0,
            effects: Vec::new(),
        }
    }
}

/// Why a command is refused outright (not recorded in the ledger).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("malformed command: {0}")]
    Malformed(String),
    #[error("command is not signed")]
    Unsigned,
    #[error("unknown party {0:?}: no key is enrolled under that id")]
    UnknownSigner(String),
    #[error("party {signer:?} has role {role} but {command} needs role {needed}")]
    WrongRole {
        signer: String,
        role: &'static str,
        command: &'static str,
        needed: String,
    },
    #[error("the key of party {0:?} is revoked: it signs nothing until an operator rotates it")]
    RevokedKey(String),
    #[error("party {0:?} changed its key before the command was committed: sign it again with the key in force")]
    KeyChanged(String),
    #[error("bad signature: {0}")]
    BadSignature(#[from] SignatureError),
    #[error("cluster has no genesis entry yet")]
    NoGenesis,
    #[error("genesis can only be the first entry and is never submitted by a client")]
    GenesisNotAllowed,
    #[error("channel {party:?} may not register external references under channel {channel:?}; its enrolment allows: {allowed}")]
    ForeignReference {
        party: String,
        channel: String,
        allowed: String,
    },
}

impl Refusal {
    /// What kind of refusal this is (what the API layer maps to a status code).
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Malformed(_) => RefusalKind::Malformed,
            Refusal::Unsigned => RefusalKind::Unsigned,
            Refusal::UnknownSigner(_) => RefusalKind::UnknownSigner,
            Refusal::WrongRole { .. } => RefusalKind::WrongRole,
            Refusal::RevokedKey(_) => RefusalKind::RevokedKey,
            Refusal::KeyChanged(_) => RefusalKind::KeyChanged,
            Refusal::BadSignature(_) => RefusalKind::BadSignature,
            Refusal::NoGenesis => RefusalKind::NoGenesis,
            Refusal::GenesisNotAllowed => RefusalKind::GenesisNotAllowed,
            Refusal::ForeignReference { .. } => RefusalKind::ForeignReference,
        }
    }

    /// The kind's stable machine-readable name.
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// A decoded, structurally valid command envelope.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub envelope: pb::SignedCommand,
    pub command: pb::Command,
}

/// The most bytes an encoded `SignedCommand` may have (256 KiB, a sixteenth
/// of the client port's default message limit; the largest command the
/// structural limits allow, a `RegisterOrder` of 1000 lines, is about 150
/// KB): larger ones are refused before they are decoded
/// (docs/ledger-format.md §1, "Size and encoding").
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// Decodes the envelope and the command, and checks its size, its encoding
/// and its structure.
///
/// Both the envelope and the command must be exactly the canonical
/// encoding of what they decode to (prost's: each field once, in field
/// number order, minimal varints, no field at its default value, no unknown
/// field), so that no bytes ride along a signature unread and one command
/// has exactly one encoding (docs/ledger-format.md §1, "Size and encoding").
pub fn decode(bytes: &[u8]) -> Result<Admitted, Refusal> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(Refusal::Malformed(format!(
            "signed command is {} bytes, over the command size limit \
             MAX_COMMAND_BYTES = {MAX_COMMAND_BYTES} bytes",
            bytes.len()
        )));
    }
    let envelope = pb::SignedCommand::decode(bytes)
        .map_err(|e| Refusal::Malformed(format!("signed command envelope does not decode: {e}")))?;
    check_canonical("signed command envelope", bytes, &envelope)?;
    let command = pb::Command::decode(envelope.command.as_slice())
        .map_err(|e| Refusal::Malformed(format!("command payload does not decode: {e}")))?;
    check_canonical("command payload", &envelope.command, &command)?;
    validate_command(&command)?;
    Ok(Admitted { envelope, command })
}

/// Refuses `bytes` unless they are the canonical encoding of `decoded`.
fn check_canonical(what: &str, bytes: &[u8], decoded: &impl Message) -> Result<(), Refusal> {
    let canonical = decoded.encode_to_vec();
    if canonical == bytes {
        return Ok(());
    }
    let why = if canonical.len() < bytes.len() {
        "unknown fields, a field repeated or set to its default value, or an overlong varint"
    } else {
        "fields out of order or a non-canonical encoding"
    };
    Err(Refusal::Malformed(format!(
        "{what} is not in canonical encoding: its {} bytes re-encode to {} ({why}); \
         encode it with a protobuf encoder that writes known fields only, in field number order",
        bytes.len(),
        canonical.len()
    )))
}

/// The roles a command body allows its signer to have, and the command's name.
pub fn required_role(cmd: &pb::Command) -> Option<(&'static [pb::Role], &'static str)> {
    use pb::command::Body;
    use pb::Role::{Auditor, Broker, Carrier, Channel, Node, Operator, Replica};
    Some(match cmd.body.as_ref()? {
        Body::Genesis(_) => return None,
        Body::EnrollParty(_) => (&[Operator], "EnrollParty"),
        Body::RotateKey(_) => (&[Operator], "RotateKey"),
        Body::RevokeKey(_) => (&[Operator], "RevokeKey"),
        Body::RegisterOrder(_) => (&[Channel], "RegisterOrder"),
        Body::AmendPrice(_) => (&[Channel], "AmendPrice"),
        Body::CancelOrder(_) => (&[Channel], "CancelOrder"),
        Body::RequestReturn(_) => (&[Channel], "RequestReturn"),
        Body::ClaimOrder(_) => (&[Node], "ClaimOrder"),
        Body::PublishProfile(_) => (&[Node], "PublishProfile"),
        Body::ReleaseOrder(_) => (&[Node], "ReleaseOrder"),
        Body::OfferHandoff(_) => (&[Node], "OfferHandoff"),
        Body::AcceptHandoff(_) => (&[Node], "AcceptHandoff"),
        Body::DeclineHandoff(_) => (&[Node], "DeclineHandoff"),
        Body::ReportMilestone(_) => (&[Node], "ReportMilestone"),
        Body::ClaimReturn(_) => (&[Node], "ClaimReturn"),
        Body::ReceiveReturn(_) => (&[Node], "ReceiveReturn"),
        Body::ReportException(_) => (&[Node, Channel], "ReportException"),
        Body::OpenDispute(_) => (&[Operator, Channel, Node, Auditor, Carrier], "OpenDispute"),
        Body::ResolveDispute(_) => (&[Auditor], "ResolveDispute"),
        Body::RecordLapse(_) => (&[Replica], "RecordLapse"),
        Body::AddReplica(_) => (&[Operator], "AddReplica"),
        Body::RemoveReplica(_) => (&[Operator], "RemoveReplica"),
        Body::SetRulesVersion(_) => (&[Operator], "SetRulesVersion"),
        Body::AcceptTender(_) => (&[Carrier], "AcceptTender"),
        Body::ScanDelivery(_) => (&[Carrier], "ScanDelivery"),
        // Rules version 3: sourcing.
        Body::SourceOrder(_) => (&[Broker, Channel], "SourceOrder"),
        Body::AcceptAssignment(_) => (&[Node], "AcceptAssignment"),
        Body::DeclineAssignment(_) => (&[Node], "DeclineAssignment"),
        Body::ReassignOrder(_) => (&[Channel, Operator], "ReassignOrder"),
    })
}

/// The command's name, for messages and listings ("" when it has no body).
pub fn command_name(cmd: &pb::Command) -> &'static str {
    match cmd.body {
        Some(pb::command::Body::Genesis(_)) => "Genesis",
        _ => required_role(cmd).map(|(_, name)| name).unwrap_or(""),
    }
}

pub fn role_name(r: pb::Role) -> &'static str {
    match r {
        pb::Role::Unspecified => "unspecified",
        pb::Role::Operator => "operator",
        pb::Role::Channel => "channel",
        pb::Role::Node => "node",
        pb::Role::Auditor => "auditor",
        pb::Role::Replica => "replica",
        pb::Role::Carrier => "carrier",
        pb::Role::Broker => "broker",
    }
}

pub fn kind_name(k: pb::NodeKind) -> &'static str {
    match k {
        pb::NodeKind::Unspecified => "",
        pb::NodeKind::Store => "store",
        pb::NodeKind::Warehouse => "warehouse",
        pb::NodeKind::ThreePl => "3pl",
        pb::NodeKind::Carrier => "carrier",
    }
}

/// Checks the signer is enrolled with the role the command needs.
/// Genesis is only admitted when `allow_genesis` (the replica's own bootstrap).
pub fn authorize(
    view: &impl StateView,
    a: &Admitted,
    allow_genesis: bool,
) -> Result<Option<Party>, Refusal> {
    let is_genesis = matches!(a.command.body, Some(pb::command::Body::Genesis(_)));
    if is_genesis {
        return if allow_genesis && !view.has_genesis() {
            Ok(None)
        } else {
            Err(Refusal::GenesisNotAllowed)
        };
    }
    if !view.has_genesis() {
        return Err(Refusal::NoGenesis);
    }
    if a.envelope.signer.is_empty() || a.envelope.signature.is_empty() {
        return Err(Refusal::Unsigned);
    }
    let party = view
        .party(&a.envelope.signer)
        .ok_or_else(|| Refusal::UnknownSigner(a.envelope.signer.clone()))?;
    if party.revoked {
        return Err(Refusal::RevokedKey(party.party_id));
    }
    if let Some((allowed, command)) = required_role(&a.command) {
        if !allowed.iter().any(|r| party.role == *r as i32) {
            return Err(Refusal::WrongRole {
                signer: party.party_id.clone(),
                role: role_name(pb::Role::try_from(party.role).unwrap_or(pb::Role::Unspecified)),
                command,
                needed: allowed
                    .iter()
                    .map(|r| role_name(*r))
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
    }
    if let Some(pb::command::Body::RegisterOrder(r)) = &a.command.body {
        if let Some(x) = r
            .external_refs
            .iter()
            .find(|x| !party.may_use_channel(&x.channel))
        {
            return Err(Refusal::ForeignReference {
                party: party.party_id.clone(),
                channel: x.channel.clone(),
                allowed: party.reference_channels().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(Some(party))
}

/// Verifies the envelope's signature, for the cluster `cluster_id` (the one
/// genesis fixed, [`ClusterConfig::cluster_id`]), against the signer's
/// enrolled key.
pub fn check_signature(a: &Admitted, party: &Party, cluster_id: &str) -> Result<(), Refusal> {
    ledger::verify_command(&a.envelope, cluster_id, &party.public_key).map_err(Refusal::from)
}

/// What the state machine does with a committed command appended at `seq`
/// with (already monotonic) leader time `time_ms`.
///
/// Signatures were checked at admission against `verified_key`; if the
/// signer's key changed (rotated, revoked) between admission and commit the
/// command is refused here, so every appended entry is signed with the key
/// in force at its position in the ledger. `None` skips that comparison
/// (offline replay, which checks every signature itself).
pub fn apply(
    view: &impl StateView,
    bytes: &[u8],
    seq: u64,
    time_ms: u64,
    allow_genesis: bool,
    verified_key: Option<&[u8]>,
) -> Result<Decision, Refusal> {
    let a = decode(bytes)?;
    apply_admitted(view, &a, seq, time_ms, allow_genesis, verified_key)
}

/// [`apply`] for a command already decoded by [`decode`] (the caller keeps
/// the decoded envelope and command, so they are decoded once).
pub fn apply_admitted(
    view: &impl StateView,
    a: &Admitted,
    seq: u64,
    time_ms: u64,
    allow_genesis: bool,
    verified_key: Option<&[u8]>,
) -> Result<Decision, Refusal> {
    let party = authorize(view, a, allow_genesis)?;
    if let (Some(p), Some(k)) = (&party, verified_key) {
        if p.public_key != k {
            return Err(Refusal::KeyChanged(p.party_id.clone()));
        }
    }
    Ok(decide(view, &a.envelope.signer, &a.command, seq, time_ms))
}

#[cfg(test)]
mod tests;
