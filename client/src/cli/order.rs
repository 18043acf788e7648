//! `arbor order`: register, claim and look up orders.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arbor_client::pb;
use clap::Subcommand;
use serde::Deserialize;
use serde_json::json;

use super::output::{kv, render, submit_reply, Reply, Table};
use super::{signing_key, Ctx};

#[derive(Subcommand)]
pub enum OrderCmd {
    /// Register an order from a JSON file (channel-signed)
    #[command(
        long_about = "Register an order from a JSON file (channel-signed). This locks its price at version 1.\n\n\
The file holds one JSON object; every field is required and unknown fields are an error:\n\n  \
{\n    \"order_id\": \"o-20251207-0001\",\n    \
\"external_refs\": [{\"channel\": \"meituan\", \"external_id\": \"meituan_20251207152344_8892\"}],\n    \
\"lines\": [{\"sku\": \"tea-500g\", \"quantity\": 2, \"unit_price\": 1299}],\n    \
\"currency\": \"CNY\",\n    \"total\": 2598,\n    \"destination_region\": \"cn-sh\"\n  }\n\n\
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

pub async fn run(ctx: &Ctx, cmd: OrderCmd) -> Result<Reply> {
    match cmd {
        OrderCmd::Register { key, file } => {
            let order = load_order_file(&file)?;
            let channel = signing_key(key)?;
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
            let node = signing_key(key)?;
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

fn show_order(ctx: &Ctx, o: &pb::OrderView) -> String {
    let json = json!({
        "order_id": o.order_id,
        "status": o.status,
        "owner": o.owner,
        "price_version": o.price_version,
        "currency": o.currency,
        "total": o.total,
        "destination_region": o.destination_region,
        "registered_by": o.registered_by,
        "registered_seq": o.registered_seq,
        "claimed_seq": o.claimed_seq,
        "external_refs": o.external_refs.iter()
            .map(|r| json!({"channel": r.channel, "external_id": r.external_id}))
            .collect::<Vec<_>>(),
        "lines": o.lines.iter()
            .map(|l| json!({"sku": l.sku, "quantity": l.quantity, "unit_price": l.unit_price}))
            .collect::<Vec<_>>(),
        "history": o.history,
    });
    render(ctx.format, json, || {
        let owner = if o.owner.is_empty() {
            "-".to_string()
        } else {
            format!("{} (claimed at seq {})", o.owner, o.claimed_seq)
        };
        let refs: Vec<String> = o
            .external_refs
            .iter()
            .map(|r| format!("{}/{}", r.channel, r.external_id))
            .collect();
        let history: Vec<String> = o.history.iter().map(u64::to_string).collect();
        let mut out = kv(&[
            ("order", o.order_id.clone()),
            ("status", o.status.clone()),
            ("owner", owner),
            (
                "price",
                format!(
                    "version {}, total {} {}",
                    o.price_version, o.total, o.currency
                ),
            ),
            ("region", o.destination_region.clone()),
            (
                "registered",
                format!("seq {} by {}", o.registered_seq, o.registered_by),
            ),
            ("refs", refs.join(", ")),
            ("history", format!("seq {}", history.join(", "))),
        ]);
        let mut t = Table::new(&["SKU", "QTY", "UNIT PRICE", "AMOUNT"]);
        for l in &o.lines {
            let amount = i128::from(l.quantity) * i128::from(l.unit_price);
            t.row(vec![
                l.sku.clone(),
                l.quantity.to_string(),
                l.unit_price.to_string(),
                amount.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
        out
    })
}

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
fn parse_order(text: &str) -> Result<pb::RegisterOrder, serde_json::Error> {
    let f: OrderFile = serde_json::from_str(text)?;
    Ok(pb::RegisterOrder {
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
    })
}

/// Reads an order file; errors name the file.
pub fn load_order_file(path: &Path) -> Result<pb::RegisterOrder> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read order file {}", path.display()))?;
    parse_order(&text).with_context(|| format!("order file {} is not valid", path.display()))
}

#[cfg(test)]
mod tests {
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
