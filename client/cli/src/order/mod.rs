//! `arbor order`: register, claim and look up orders.

use std::path::PathBuf;

use anyhow::Result;
use arbor_client::pb;
use arbor_client::Commands;
use clap::Subcommand;

use super::output::{submit_reply, Reply};
use super::{signing_key, Ctx};

#[derive(Subcommand)]
pub enum OrderCmd {
    /// Register an order from a JSON file (channel-signed)
    #[command(
        long_about = "Register an order from a JSON file (channel-signed). This locks its price at version 1.\n\n\
The file holds one JSON object; unknown fields are an error, and every field shown is \
required except `requirements` (cold_chain, hazmat, category: what a claiming node's profile \
must offer) and `promised_delivery_ms` (Unix ms):\n\n  \
{\n    \"order_id\": \"o-20251207-0001\",\n    \
\"external_refs\": [{\"channel\": \"meituan\", \"external_id\": \"meituan_20251207152344_8892\"}],\n    \
\"lines\": [{\"sku\": \"tea-500g\", \"quantity\": 2, \"unit_price\": 1299}],\n    \
\"currency\": \"CNY\",\n    \"total\": 2598,\n    \"destination_region\": \"cn-sh\",\n    \
\"requirements\": {\"cold_chain\": false, \"hazmat\": false, \"category\": \"tea\"},\n    \
\"promised_delivery_ms\": 1765180800000\n  }\n\n\
Prices are in minor units (fen, cents). Prints `seq N: accepted` or \
`seq N: rejected (code): reason`; a rejected outcome exits with code 2.\n\n\
Example:\n  arbor order register --key meituan.key --file order.json"
    )]
    Register {
        /// Channel key file
        #[arg(long, env = "ARBOR_KEY", value_name = "CHANNELKEY")]
        key: Option<PathBuf>,
        /// The order as JSON (see above)
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Claim an open order at the locked price (node-signed)
    #[command(
        long_about = "Claim an open order at the locked price (node-signed).\n\n\
The claim quotes the price version and total the node will fulfil at; both must match \
the order's locked price. The first admissible claim wins; later claims are rejected \
naming the owner. Prints `seq N: accepted` or `seq N: rejected (code): reason`; a \
rejected outcome exits with code 2.\n\n\
Example:\n  arbor order claim o-20251207-0001 --price-version 1 --total 2598 --key store-17.key"
    )]
    Claim {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Price version the claim quotes (see `arbor order get`)
        #[arg(long, value_name = "N")]
        price_version: u64,
        /// Order total the claim quotes, in minor units
        #[arg(long, value_name = "AMOUNT", allow_negative_numbers = true)]
        total: i64,
        /// Node key file
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
    },
    /// Show an order: state, owner, price, references, lines and history
    #[command(
        long_about = "Show an order: state, owner, price version and total, external references, \
lines, and the sequence numbers of its ledger entries. The read is linearizable.\n\n\
Example:\n  arbor order get o-20251207-0001"
    )]
    Get {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
    },
    /// List orders by state, owner, region, or claimable by a node
    #[command(
        long_about = "List orders, filtered by state, owner, destination region, and \"claimable by \
node N\" (open or lapsed, eligible by N's profile in force, N below capacity). Pages of \
--limit orders in id order; the last line says how to continue (--after).\n\n\
Example:\n  arbor order list --claimable-by store-17 --region CN-31"
    )]
    List {
        /// open, claimed, picked, packed, shipped, delivered, cancelled, return_requested, return_claimed, returned
        #[arg(long, value_name = "STATE")]
        status: Option<String>,
        /// Only orders this node owns
        #[arg(long, value_name = "NODE")]
        owner: Option<String>,
        /// Only orders to this destination region
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// Only orders this node may claim now
        #[arg(long, value_name = "NODE")]
        claimable_by: Option<String>,
        /// Continue after this order id
        #[arg(long, value_name = "ORDER_ID")]
        after: Option<String>,
        /// Orders per page (at most 1000)
        #[arg(long, default_value = "100")]
        limit: u32,
    },
    /// Amend an order's price (channel-signed, bumps the price version)
    #[command(
        long_about = "Amend an order's price (signed by the channel that registered it), with a reason. \
The new lines replace the old ones and the price version goes up by one; claims, milestones \
and refunds quoting an older version are rejected naming the current one. --base-version \
must be the current version, so two amendments cannot silently overwrite each other.\n\n\
Example:\n  arbor order amend-price o-1 --base-version 1 --line tea-500g:2:1199 --reason \"coupon\" --key meituan.key"
    )]
    AmendPrice {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The price version being amended (the current one)
        #[arg(long, value_name = "N")]
        base_version: u64,
        /// A line as SKU:QUANTITY:UNIT_PRICE (repeat for each line)
        #[arg(long = "line", value_name = "SKU:QTY:PRICE", required = true, value_parser = parse_line)]
        lines: Vec<pb::OrderLine>,
        /// Why the price changes (recorded in the ledger)
        #[arg(long)]
        reason: String,
        /// Channel key file
        #[arg(long, env = "ARBOR_KEY", value_name = "CHANNELKEY")]
        key: Option<PathBuf>,
    },
    /// Cancel an order that has not shipped (channel-signed)
    #[command(
        long_about = "Cancel an order that has not shipped (signed by the channel that \
registered it). Nothing can happen to a cancelled order afterwards.\n\n\
Example:\n  arbor order cancel o-1 --reason \"customer cancelled\" --key meituan.key"
    )]
    Cancel {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "CHANNELKEY")]
        key: Option<PathBuf>,
    },
    /// Give an owned order back: it is open again (owner-signed)
    #[command(
        long_about = "Give an owned, unshipped order back, with a reason (signed by the \
owner). The order is open again and the release is counted in the node's statistics.\n\n\
Example:\n  arbor order release o-1 --reason \"out of stock\" --key store-17.key"
    )]
    Release {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
    },
    /// Offer custody of an owned order to another node (owner-signed)
    #[command(
        long_about = "Offer custody of an owned, unshipped order to another node (signed \
by the owner). Custody moves only when the receiver accepts (`arbor order accept`); until then, \
and if it declines or the offer expires, the sender keeps it. Prints the offer's sequence \
number, which the receiver names when it answers.\n\n\
Example:\n  arbor order offer o-1 --to wh-shanghai --expires-in 3600 --key store-17.key"
    )]
    Offer {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The receiving node's party id
        #[arg(long, value_name = "NODE")]
        to: String,
        /// Seconds until the offer expires
        #[arg(long, value_name = "SECS", default_value = "3600")]
        expires_in: u64,
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
    },
    /// Accept a handoff offer: custody and ownership move to you (receiver-signed)
    #[command(
        long_about = "Accept the handoff offer made at entry --offer-seq (signed by the \
receiver, who must be eligible for the order like a claimant). --damaged and --note record \
exceptions seen at acceptance, such as visible damage.\n\n\
Example:\n  arbor order accept o-1 --offer-seq 42 --damaged --note \"box crushed\" --key wh-shanghai.key"
    )]
    Accept {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(long, value_name = "SEQ")]
        offer_seq: u64,
        /// Visible damage noted at acceptance
        #[arg(long)]
        damaged: bool,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
    },
    /// Decline a handoff offer (receiver-signed)
    #[command(
        long_about = "Decline the handoff offer made at entry --offer-seq (signed by the \
receiver). The sender keeps the order.\n\n\
Example:\n  arbor order decline o-1 --offer-seq 42 --reason \"no space\" --key wh-shanghai.key"
    )]
    Decline {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(long, value_name = "SEQ")]
        offer_seq: u64,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
    },
    /// Report a milestone: picked, packed, shipped, delivered (owner-signed)
    #[command(
        long_about = "Report a milestone of an owned order (signed by the owner). \
Milestones only move forward: picked, packed, shipped (needs --carrier and --tracking-id; \
ends the lease), delivered (only after shipped; --proof-of-delivery names the proof, without \
it custody stays with the carrier).\n\n\
Example:\n  arbor order milestone o-1 shipped --carrier sf-express --tracking-id SF1234 --key store-17.key"
    )]
    Milestone {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(value_enum)]
        milestone: MilestoneArg,
        #[arg(long, default_value = "")]
        carrier: String,
        #[arg(long, default_value = "")]
        tracking_id: String,
        #[arg(long, default_value = "")]
        proof_of_delivery: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
    },
    /// Report an exception: damaged, lost, delayed (owner or channel)
    #[command(
        long_about = "Report an exception on an order (signed by its owner or by the \
channel that registered it). Exceptions are recorded; they do not change the lifecycle.\n\n\
Example:\n  arbor order exception o-1 delayed --note \"truck broke down\" --key store-17.key"
    )]
    Exception {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(value_enum)]
        kind: ExceptionArg,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
    },
    /// Returns: request (channel), claim (a node handling returns), receive (with the refund)
    #[command(
        long_about = "Returns of delivered orders. `request`: the registering channel asks \
for a return. `claim`: a node whose profile handles returns for the order's region takes it. \
`receive`: that node reports the goods received and the refund, which must quote the current \
price version and may not exceed the total paid at it.\n\n\
Example:\n  arbor order return o-1 receive --refund 3000 --price-version 1 --key wh-returns.key"
    )]
    Return {
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[arg(value_enum)]
        step: ReturnStep,
        #[arg(long, default_value = "")]
        reason: String,
        /// receive: the refund in minor units
        #[arg(long, default_value = "0")]
        refund: i64,
        /// receive: the price version the refund is computed at
        #[arg(long, default_value = "0")]
        price_version: u64,
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
    },
    /// Open a dispute on an order: lost, damaged, late, ... (any enrolled party)
    #[command(
        long_about = "Open a dispute on an order (signed by any enrolled party: operator, channel, \
node or auditor), naming what happened and when: --incident-ms is the incident time in Unix \
milliseconds and may not be later than the entry's own time. Prints the dispute's sequence \
number; `arbor audit dispute ORDER --dispute SEQ` previews the ruling the responsibility \
rules compute, and an auditor resolves it with --resolve.\n\n\
Example:\n  arbor order dispute ord-1001 --kind damaged --incident-ms 1765121024123 --statement \"box crushed on arrival\" --key meituan.key"
    )]
    Dispute {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// What happened
        #[arg(long, value_enum)]
        kind: IncidentArg,
        /// When it happened (Unix ms)
        #[arg(long, value_name = "MS")]
        incident_ms: u64,
        /// What the party says happened (recorded in the ledger)
        #[arg(long, default_value = "")]
        statement: String,
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
    },
    /// Find the order a channel's external reference belongs to
    #[command(
        long_about = "Find the order a channel's external reference belongs to and show it \
(same output as `arbor order get`).\n\n\
Example:\n  arbor order resolve meituan meituan_20251207152344_8892"
    )]
    Resolve {
        /// Channel name, e.g. meituan
        #[arg(value_name = "CHANNEL")]
        channel: String,
        /// The channel's own order id
        #[arg(value_name = "EXTERNAL_ID")]
        external_id: String,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MilestoneArg {
    Picked,
    Packed,
    Shipped,
    Delivered,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExceptionArg {
    Damaged,
    Lost,
    Delayed,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IncidentArg {
    Lost,
    Damaged,
    Late,
    DuplicateProcessing,
    PriceMismatch,
}

impl IncidentArg {
    fn to_pb(self) -> pb::IncidentKind {
        match self {
            IncidentArg::Lost => pb::IncidentKind::Lost,
            IncidentArg::Damaged => pb::IncidentKind::Damaged,
            IncidentArg::Late => pb::IncidentKind::Late,
            IncidentArg::DuplicateProcessing => pb::IncidentKind::DuplicateProcessing,
            IncidentArg::PriceMismatch => pb::IncidentKind::PriceMismatch,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ReturnStep {
    Request,
    Claim,
    Receive,
}

/// `SKU:QUANTITY:UNIT_PRICE`.
fn parse_line(s: &str) -> std::result::Result<pb::OrderLine, String> {
    let parts: Vec<&str> = s.rsplitn(3, ':').collect();
    let [price, qty, sku] = parts[..] else {
        return Err(format!("{s:?} is not SKU:QUANTITY:UNIT_PRICE"));
    };
    Ok(pb::OrderLine {
        sku: sku.to_string(),
        quantity: qty
            .parse()
            .map_err(|_| format!("quantity {qty:?} is not a positive integer"))?,
        unit_price: price
            .parse()
            .map_err(|_| format!("unit price {price:?} is not an integer (minor units)"))?,
    })
}

pub async fn run(ctx: &Ctx, cmd: OrderCmd) -> Result<Reply> {
    match cmd {
        OrderCmd::List {
            status,
            owner,
            region,
            claimable_by,
            after,
            limit,
        } => {
            let reply = ctx
                .client()
                .await?
                .list_orders(pb::ListOrdersRequest {
                    status: status.unwrap_or_default(),
                    owner: owner.unwrap_or_default(),
                    region: region.unwrap_or_default(),
                    claimable_by: claimable_by.unwrap_or_default(),
                    after: after.unwrap_or_default(),
                    limit,
                    local: false,
                })
                .await?;
            Ok(Reply::new(list_orders(ctx, &reply)))
        }
        OrderCmd::AmendPrice {
            order_id,
            base_version,
            lines,
            reason,
            key,
        } => {
            let cmd =
                signing_key(ctx, key)
                    .await?
                    .amend_price(&order_id, base_version, lines, &reason);
            submit(ctx, cmd).await
        }
        OrderCmd::Cancel {
            order_id,
            reason,
            key,
        } => {
            submit(
                ctx,
                signing_key(ctx, key)
                    .await?
                    .cancel_order(&order_id, &reason),
            )
            .await
        }
        OrderCmd::Release {
            order_id,
            reason,
            key,
        } => {
            submit(
                ctx,
                signing_key(ctx, key)
                    .await?
                    .release_order(&order_id, &reason),
            )
            .await
        }
        OrderCmd::Offer {
            order_id,
            to,
            expires_in,
            key,
        } => {
            let ms = expires_in.saturating_mul(1000);
            submit(
                ctx,
                signing_key(ctx, key)
                    .await?
                    .offer_handoff(&order_id, &to, ms),
            )
            .await
        }
        OrderCmd::Accept {
            order_id,
            offer_seq,
            damaged,
            note,
            key,
        } => {
            let cmd = signing_key(ctx, key)
                .await?
                .accept_handoff(&order_id, offer_seq, damaged, &note);
            submit(ctx, cmd).await
        }
        OrderCmd::Decline {
            order_id,
            offer_seq,
            reason,
            key,
        } => {
            let cmd = signing_key(ctx, key)
                .await?
                .decline_handoff(&order_id, offer_seq, &reason);
            submit(ctx, cmd).await
        }
        OrderCmd::Milestone {
            order_id,
            milestone,
            carrier,
            tracking_id,
            proof_of_delivery,
            key,
        } => {
            let id = signing_key(ctx, key).await?;
            let cmd = match milestone {
                MilestoneArg::Picked => id.report_milestone(&order_id, pb::Milestone::Picked),
                MilestoneArg::Packed => id.report_milestone(&order_id, pb::Milestone::Packed),
                MilestoneArg::Shipped => id.report_shipped(&order_id, &carrier, &tracking_id),
                MilestoneArg::Delivered => id.report_delivered(&order_id, &proof_of_delivery),
            };
            submit(ctx, cmd).await
        }
        OrderCmd::Dispute {
            order_id,
            kind,
            incident_ms,
            statement,
            key,
        } => {
            let cmd = signing_key(ctx, key).await?.open_dispute(
                &order_id,
                kind.to_pb(),
                incident_ms,
                &statement,
            );
            submit(ctx, cmd).await
        }
        OrderCmd::Exception {
            order_id,
            kind,
            note,
            key,
        } => {
            let kind = match kind {
                ExceptionArg::Damaged => pb::ExceptionKind::Damaged,
                ExceptionArg::Lost => pb::ExceptionKind::Lost,
                ExceptionArg::Delayed => pb::ExceptionKind::Delayed,
            };
            submit(
                ctx,
                signing_key(ctx, key)
                    .await?
                    .report_exception(&order_id, kind, &note),
            )
            .await
        }
        OrderCmd::Return {
            order_id,
            step,
            reason,
            refund,
            price_version,
            key,
        } => {
            let id = signing_key(ctx, key).await?;
            let cmd = match step {
                ReturnStep::Request => id.request_return(&order_id, &reason),
                ReturnStep::Claim => id.claim_return(&order_id),
                ReturnStep::Receive => id.receive_return(&order_id, refund, price_version),
            };
            submit(ctx, cmd).await
        }
        OrderCmd::Register { key, file } => {
            let order = load_order_file(&file)?;
            let channel = signing_key(ctx, key).await?;
            let reply = ctx
                .client()
                .await?
                .submit(channel.register_order(order))
                .await?;
            Ok(submit_reply(ctx.format, &reply))
        }
        OrderCmd::Claim {
            order_id,
            price_version,
            total,
            key,
        } => {
            let node = signing_key(ctx, key).await?;
            let reply = ctx
                .client()
                .await?
                .submit(node.claim_order(&order_id, price_version, total))
                .await?;
            Ok(submit_reply(ctx.format, &reply))
        }
        OrderCmd::Get { order_id } => {
            let o = ctx.client().await?.get_order(&order_id).await?;
            Ok(Reply::new(show_order(ctx, &o)))
        }
        OrderCmd::Resolve {
            channel,
            external_id,
        } => {
            let o = ctx
                .client()
                .await?
                .resolve_ref(&channel, &external_id)
                .await?;
            Ok(Reply::new(show_order(ctx, &o)))
        }
    }
}

async fn submit(ctx: &Ctx, cmd: pb::SignedCommand) -> Result<Reply> {
    let reply = ctx.client().await?.submit(cmd).await?;
    Ok(submit_reply(ctx.format, &reply))
}

mod file;
mod show;

pub use file::load_order_file;
use show::{list_orders, show_order};

#[cfg(test)]
mod tests {
    use super::file::parse_order;
    use super::*;

    const GOOD: &str = r#"{
        "order_id": "o-1",
        "external_refs": [{"channel": "meituan", "external_id": "meituan_20251207152344_8892"}],
        "lines": [{"sku": "tea-500g", "quantity": 2, "unit_price": 1299}],
        "currency": "CNY",
        "total": 2598,
        "destination_region": "cn-sh"
    }"#;

    #[test]
    fn good_order_file() {
        let o = parse_order(GOOD).unwrap();
        assert_eq!(o.order_id, "o-1");
        assert_eq!(o.external_refs[0].channel, "meituan");
        assert_eq!(
            o.external_refs[0].external_id,
            "meituan_20251207152344_8892"
        );
        assert_eq!(o.lines[0].sku, "tea-500g");
        assert_eq!(o.lines[0].quantity, 2);
        assert_eq!(o.lines[0].unit_price, 1299);
        assert_eq!(o.currency, "CNY");
        assert_eq!(o.total, 2598);
        assert_eq!(o.destination_region, "cn-sh");
    }

    #[test]
    fn unknown_and_missing_fields_are_errors() {
        let extra = GOOD.replace("\"total\"", "\"discount\": 1, \"total\"");
        assert!(parse_order(&extra)
            .unwrap_err()
            .to_string()
            .contains("unknown field `discount`"));
        let extra_line = GOOD.replace("\"sku\"", "\"colour\": \"red\", \"sku\"");
        assert!(parse_order(&extra_line)
            .unwrap_err()
            .to_string()
            .contains("unknown field `colour`"));
        let missing = GOOD.replace("\"currency\": \"CNY\",", "");
        assert!(parse_order(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing field `currency`"));
        let negative = GOOD.replace("\"quantity\": 2", "\"quantity\": -2");
        assert!(parse_order(&negative).is_err());
    }

    #[test]
    fn bad_json_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broken-order.json");
        std::fs::write(&p, "{\"order_id\": \"o-1\",").unwrap();
        let msg = format!("{:#}", load_order_file(&p).unwrap_err());
        assert!(msg.contains("broken-order.json"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");

        let msg = format!(
            "{:#}",
            load_order_file(&dir.path().join("absent.json")).unwrap_err()
        );
        assert!(
            msg.contains("cannot read order file") && msg.contains("absent.json"),
            "{msg}"
        );

        let p = dir.path().join("good.json");
        std::fs::write(&p, GOOD).unwrap();
        assert_eq!(load_order_file(&p).unwrap().total, 2598);
    }
}
