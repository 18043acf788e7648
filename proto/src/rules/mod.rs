//! The deterministic arbitration state machine.
//!
//! [`admit`] turns the bytes of a signed command into a [`Decision`] against a
//! read-only [`StateView`]: either a *refusal* (malformed, unknown signer,
//! wrong role: nothing is appended) or an *outcome* (accepted or rejected with
//! a reason: appended to the ledger either way) plus the state [`Effect`]s.
//! The caller (a replica's RocksDB store, or an auditor's in-memory replay)
//! writes the entry and the effects. Nothing here reads a clock or does I/O:
//! the time is the leader's stamp carried in the raft log.
//!
//! Signatures are checked where a command enters the cluster
//! ([`check_signature`]), not on every apply; the offline verifier checks them
//! all again.

mod decide;
mod mem;
mod state;
mod validate;

pub use decide::decide;
pub use mem::{Applied, MemState};
pub use state::{Order, OrderStatus, Party};
pub use validate::{validate_command, MAX_ID_LEN};

use prost::Message;

use crate::ledger::{self, SignatureError};
use crate::pb;

/// Read access to the state the rules decide against.
pub trait StateView {
    fn party(&self, party_id: &str) -> Option<Party>;
    fn order(&self, order_id: &str) -> Option<Order>;
    /// The canonical order id an external reference belongs to.
    fn order_by_ref(&self, channel: &str, external_id: &str) -> Option<String>;
    /// The party id a public key is enrolled under.
    fn party_by_key(&self, public_key: &[u8]) -> Option<String>;
    /// Whether the genesis entry has been applied.
    fn has_genesis(&self) -> bool;
}

/// A state change produced by an accepted (or rejected) command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    PutParty(Party),
    PutOrder(Order),
    PutRef { channel: String, external_id: String, order_id: String },
}

/// A command that is recorded in the ledger, with what it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub accepted: bool,
    pub code: String,
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
            code: "accepted".into(),
            message: String::new(),
            order_id: order_id.into(),
            order_prev_seq: 0,
            effects,
        }
    }

    pub fn reject(code: &str, message: impl Into<String>, order_id: impl Into<String>) -> Self {
        Decision {
            accepted: false,
            code: code.into(),
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
        needed: &'static str,
    },
    #[error("bad signature: {0}")]
    BadSignature(#[from] SignatureError),
    #[error("cluster has no genesis entry yet")]
    NoGenesis,
    #[error("genesis can only be the first entry and is never submitted by a client")]
    GenesisNotAllowed,
}

impl Refusal {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownSigner(_) => "unknown_signer",
            Refusal::WrongRole { .. } => "wrong_role",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::NoGenesis => "no_genesis",
            Refusal::GenesisNotAllowed => "genesis_not_allowed",
        }
    }
}

/// A decoded, structurally valid command envelope.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub envelope: pb::SignedCommand,
    pub command: pb::Command,
}

/// Decodes the envelope and the command, and checks its structure.
pub fn decode(bytes: &[u8]) -> Result<Admitted, Refusal> {
    let envelope = pb::SignedCommand::decode(bytes)
        .map_err(|e| Refusal::Malformed(format!("signed command envelope does not decode: {e}")))?;
    let command = pb::Command::decode(envelope.command.as_slice())
        .map_err(|e| Refusal::Malformed(format!("command payload does not decode: {e}")))?;
    validate_command(&command)?;
    Ok(Admitted { envelope, command })
}

/// The role a command body requires of its signer.
pub fn required_role(cmd: &pb::Command) -> Option<(pb::Role, &'static str)> {
    use pb::command::Body;
    match cmd.body.as_ref()? {
        Body::Genesis(_) => None,
        Body::EnrollParty(_) => Some((pb::Role::Operator, "EnrollParty")),
        Body::RegisterOrder(_) => Some((pb::Role::Channel, "RegisterOrder")),
        Body::ClaimOrder(_) => Some((pb::Role::Node, "ClaimOrder")),
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
pub fn authorize(view: &impl StateView, a: &Admitted, allow_genesis: bool) -> Result<Option<Party>, Refusal> {
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
    if let Some((needed, command)) = required_role(&a.command) {
        if party.role != needed as i32 {
            return Err(Refusal::WrongRole {
                signer: party.party_id.clone(),
                role: role_name(pb::Role::try_from(party.role).unwrap_or(pb::Role::Unspecified)),
                command,
                needed: role_name(needed),
            });
        }
    }
    Ok(Some(party))
}

/// Verifies the envelope's signature against the signer's enrolled key.
pub fn check_signature(a: &Admitted, party: &Party) -> Result<(), Refusal> {
    ledger::verify_command(&a.envelope, &party.public_key).map_err(Refusal::from)
}

/// Everything a replica does before proposing: decode, validate, authorize, verify.
pub fn admit(view: &impl StateView, bytes: &[u8]) -> Result<Admitted, Refusal> {
    let a = decode(bytes)?;
    let party = authorize(view, &a, false)?;
    if let Some(p) = party {
        check_signature(&a, &p)?;
    }
    Ok(a)
}

/// What the state machine does with a committed command, given its sequence
/// number if it is appended. Signatures were checked at admission.
pub fn apply(view: &impl StateView, bytes: &[u8], seq: u64, allow_genesis: bool) -> Result<Decision, Refusal> {
    let a = decode(bytes)?;
    authorize(view, &a, allow_genesis)?;
    Ok(decide(view, &a.envelope.signer, &a.command, seq))
}

#[cfg(test)]
mod tests;
