//! `arbor party`: enrol and look up parties.

use std::path::PathBuf;

use anyhow::{Context, Result};
use arbor_client::pb;
use arbor_client::Commands;
use clap::{Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::json;

use super::output::{kind_name, kv, render, role_name, submit_reply, Reply};
use super::{operator_signer, Ctx};
use crate::exit::usage;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Operator,
    Channel,
    Node,
    Auditor,
    /// A replica's checkpoint-signing identity (enrolled by `arbor-node dev` or by an operator)
    Replica,
    /// A carrier (rules version 3): takes custody only by signing a tender acceptance
    Carrier,
    /// Signs sourcing decisions for any order (rules version 3)
    Broker,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Store,
    Warehouse,
    #[value(name = "3pl")]
    ThreePl,
    Carrier,
}

#[derive(Subcommand)]
pub enum PartyCmd {
    /// Enrol a party's public key with a role (operator-signed)
    #[command(
        long_about = "Enrol a party's public key with a role (operator-signed).\n\n\
Roles: operator, channel (registers orders), node (claims and fulfils orders; needs \
--kind), auditor, carrier (rules version 3: signs tender acceptances and delivery scans; no --kind), broker (signs sourcing decisions, rules version 3). The public key comes from --public-key HEX or from the party's public \
key file (--public-key-file, written by `arbor keys export-public`; --id defaults to its \
party id). A secret key file is refused: the secret stays with its party.\n\n\
Prints `seq N: accepted` or `seq N: rejected (code): reason`; a rejected outcome exits with code 2.\n\n\
Example:\n  arbor party enroll --key operator.key --role node --kind store --public-key-file store-17.pub"
    )]
    Enroll {
        /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
        #[arg(long, value_name = "OPKEY")]
        key: Option<PathBuf>,
        /// Party id to enrol [default: the party id in --public-key-file]
        #[arg(long, value_name = "PARTY")]
        id: Option<String>,
        /// Role the party gets
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Kind of fulfilment node; required with --role node, refused otherwise
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// With --role channel: a channel name its orders' external references may use
        /// (repeatable) [default: the party id only]
        #[arg(long = "channel-name", value_name = "NAME")]
        channel_names: Vec<String>,
        #[command(flatten)]
        new_key: PublicKeyArgs,
    },
    /// Replace a party's key (operator-signed); also reinstates a revoked party
    #[command(
        long_about = "Replace a party's key (operator-signed). From this entry on, commands signed \
with the old key are refused; entries it signed before stay valid (verifiers judge each entry \
by the key in force at its position). Keys are never reused. Rotating a revoked party's key \
reinstates it. The new key comes from --public-key HEX or a key file made with \
`arbor keys generate --party SAME_ID`.\n\n\
Example:\n  arbor party rotate-key store-17 --public-key-file store-17-new.pub --key operator.key"
    )]
    RotateKey {
        /// Party id
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        new_key: PublicKeyArgs,
        /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
        #[arg(long, value_name = "OPKEY")]
        key: Option<PathBuf>,
    },
    /// Revoke a party's key (operator-signed): it signs nothing from now on
    #[command(
        long_about = "Revoke a party's key (operator-signed), with a reason. Commands it signs \
afterwards are refused and never reach the ledger; its earlier entries stay valid. The last \
operator whose key is not revoked cannot be revoked. `arbor party rotate-key` reinstates the \
party with a new key.\n\n\
Example:\n  arbor party revoke store-17 --reason \"key leaked\" --key operator.key"
    )]
    Revoke {
        /// Party id
        #[arg(value_name = "ID")]
        id: String,
        /// Why the key is revoked (recorded in the ledger)
        #[arg(long)]
        reason: String,
        /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
        #[arg(long, value_name = "OPKEY")]
        key: Option<PathBuf>,
    },
    /// Show an enrolled party
    #[command(
        long_about = "Show an enrolled party: role, kind, public key and the ledger entry that enrolled it.\n\n\
Example:\n  arbor party get store-17"
    )]
    Get {
        /// Party id
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// A party's public key: given in hex, or read from its key file.
#[derive(clap::Args)]
pub struct PublicKeyArgs {
    /// The party's ed25519 public key, 64 hex characters
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "public_key_file",
        conflicts_with = "public_key_file"
    )]
    public_key: Option<String>,
    /// The party's public key file (written by `arbor keys export-public`; a secret key file is refused)
    #[arg(long, value_name = "PUBFILE")]
    public_key_file: Option<PathBuf>,
}

impl PublicKeyArgs {
    /// The party id and key: `id` if given (it must match a key file's party
    /// id), else the key file's party id.
    fn resolve(self, id: Option<String>) -> Result<(String, [u8; 32])> {
        match (self.public_key, self.public_key_file) {
            (Some(hex), _) => {
                let Some(id) = id else {
                    usage!("--id is required with --public-key")
                };
                Ok((id, parse_public_key(&hex).context("--public-key")?))
            }
            (None, Some(file)) => {
                let (file_id, pk) = read_public_key_file(&file)?;
                match id {
                    Some(id) if id != file_id => usage!(
                        "party {id:?} differs from the party id {file_id:?} in {}; the party would sign as {file_id:?} (generate its key with --party {id})",
                        file.display(),
                    ),
                    _ => Ok((file_id, pk)),
                }
            }
            (None, None) => usage!("give --public-key HEX or --public-key-file KEYFILE"),
        }
    }
}

/// The public half of a key file; the secret, if present, is not read.
#[derive(Deserialize)]
struct PublicKeyFile {
    party_id: String,
    public_key: String,
}

pub async fn run(ctx: &Ctx, cmd: PartyCmd) -> Result<Reply> {
    match cmd {
        PartyCmd::Enroll {
            key,
            id,
            role,
            kind,
            channel_names,
            new_key,
        } => {
            let (role, kind) = match (role, kind) {
                (RoleArg::Node, None) => {
                    usage!("--role node needs --kind store|warehouse|3pl|carrier")
                }
                (RoleArg::Node, Some(k)) => (pb::Role::Node, kind_pb(k)),
                (r, Some(_)) => usage!(
                    "--kind applies to --role node only, not {}",
                    role_name(role_pb(r) as i32)
                ),
                (r, None) => (role_pb(r), pb::NodeKind::Unspecified),
            };
            if !channel_names.is_empty() && role != pb::Role::Channel {
                usage!("--channel-name applies to --role channel only");
            }
            let (party_id, public_key) = new_key.resolve(id)?;
            let operator = operator_signer(ctx, key).await?;
            let cmd = if channel_names.is_empty() {
                operator.enroll_party(&party_id, role, kind, &public_key)
            } else {
                operator.enroll_channel(&party_id, &public_key, &channel_names)
            };
            let reply = ctx.client().await?.submit(cmd).await?;
            Ok(submit_reply(ctx.format, &reply))
        }
        PartyCmd::RotateKey { id, new_key, key } => {
            let (id, pk) = new_key.resolve(Some(id))?;
            let cmd = operator_signer(ctx, key).await?.rotate_key(&id, &pk);
            let reply = ctx.client().await?.submit(cmd).await?;
            Ok(submit_reply(ctx.format, &reply))
        }
        PartyCmd::Revoke { id, reason, key } => {
            let cmd = operator_signer(ctx, key).await?.revoke_key(&id, &reason);
            let reply = ctx.client().await?.submit(cmd).await?;
            Ok(submit_reply(ctx.format, &reply))
        }
        PartyCmd::Get { id } => {
            let p = ctx.client().await?.get_party(&id).await?;
            let json = json!({
                "party_id": p.party_id,
                "role": role_name(p.role),
                "kind": (p.kind != 0).then(|| kind_name(p.kind)),
                "public_key": hex::encode(&p.public_key),
                "enrolled_seq": p.enrolled_seq,
                "key_seq": p.key_seq,
                "revoked": p.revoked,
                "channel_names": p.channel_names,
            });
            Ok(Reply::new(render(ctx.format, json, || {
                let mut pairs = vec![("party", p.party_id.clone()), ("role", role_name(p.role))];
                if p.kind != 0 {
                    pairs.push(("kind", kind_name(p.kind)));
                }
                pairs.push(("public key", hex::encode(&p.public_key)));
                pairs.push(("enrolled", format!("seq {}", p.enrolled_seq)));
                pairs.push(("key set", format!("seq {}", p.key_seq)));
                if !p.channel_names.is_empty() {
                    pairs.push(("reference channels", p.channel_names.join(", ")));
                }
                if p.revoked {
                    pairs.push(("revoked", "yes: signs nothing until rotated".into()));
                }
                kv(&pairs)
            })))
        }
    }
}

/// The party id and public key of a key file (its secret is not used).
fn read_public_key_file(file: &std::path::Path) -> Result<(String, [u8; 32])> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read key file {}", file.display()))?;
    // A secret key stays with its party: the operator gets the public half.
    if serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("secret_key").is_some())
    {
        usage!(
            "{} holds a secret key; give the operator only its public half: \
             arbor keys export-public {} --out PUBFILE, then --public-key-file PUBFILE",
            file.display(),
            file.display()
        );
    }
    let f: PublicKeyFile = serde_json::from_str(&text)
        .with_context(|| format!("key file {} is not a valid key file", file.display()))?;
    let pk = parse_public_key(&f.public_key)
        .with_context(|| format!("key file {}: public_key", file.display()))?;
    Ok((f.party_id, pk))
}

fn parse_public_key(s: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(s.trim()).map_err(|e| anyhow::anyhow!("not hex: {e}"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!("{} bytes, expected 32 (64 hex characters)", b.len())
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| anyhow::anyhow!("not a valid ed25519 public key"))?;
    Ok(key)
}

fn role_pb(r: RoleArg) -> pb::Role {
    match r {
        RoleArg::Operator => pb::Role::Operator,
        RoleArg::Channel => pb::Role::Channel,
        RoleArg::Node => pb::Role::Node,
        RoleArg::Auditor => pb::Role::Auditor,
        RoleArg::Replica => pb::Role::Replica,
        RoleArg::Carrier => pb::Role::Carrier,
        RoleArg::Broker => pb::Role::Broker,
    }
}

fn kind_pb(k: KindArg) -> pb::NodeKind {
    match k {
        KindArg::Store => pb::NodeKind::Store,
        KindArg::Warehouse => pb::NodeKind::Warehouse,
        KindArg::ThreePl => pb::NodeKind::ThreePl,
        KindArg::Carrier => pb::NodeKind::Carrier,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_parsing() {
        let id = arbor_client::Identity::generate("p");
        assert_eq!(
            parse_public_key(&id.public_key_hex()).unwrap(),
            id.public_key()
        );
        assert!(format!("{:#}", parse_public_key("zz").unwrap_err()).contains("not hex"));
        assert!(
            format!("{:#}", parse_public_key("abcd").unwrap_err()).contains("2 bytes, expected 32")
        );
    }
}
