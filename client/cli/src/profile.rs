//! `arbor profile` and `arbor node`: capability profiles and node statistics.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arbor_client::pb;
use arbor_client::Commands;
use clap::Subcommand;
use serde::Deserialize;
use serde_json::json;

use super::output::{kv, render, submit_reply, Reply};
use super::{signing_key, Ctx};

#[derive(Subcommand)]
pub enum ProfileCmd {
    /// Publish the signing node's capability profile from a TOML file (node-signed)
    #[command(
        long_about = "Publish the signing node's capability profile from a TOML file \
(node-signed). Each publication is the next version; claims are admitted only if the profile \
in force serves the order's region, meets every requirement and has capacity left, and the \
version in force at claim time is what the lease and SLA are judged against.\n\n\
The file (unknown keys are an error):\n\n  \
regions = [\"CN-31\", \"CN-32\"]     # destination regions served (required)\n  \
max-open-orders = 200             # capacity: claimed and not yet shipped (required)\n  \
dispatch-time = \"4h\"              # promise from claim to hand-off to the carrier (required;\n  \
                                  # a duration: 30m, 4h, 1h30m; or dispatch-time-ms = 14400000)\n  \
handles-returns = false\n  \
cold-chain = false\n  \
hazmat = false\n  \
categories = [\"tea\", \"fresh-food\"]   # an order with a category needs it listed\n\n\
Prints `seq N: accepted`; a rejected outcome exits with code 2.\n\n\
Example:\n  arbor profile publish --key store-17.key --file profile.toml"
    )]
    Publish {
        /// Node key file
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        /// The profile as TOML (see above)
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Show a node's capability profile in force
    #[command(
        long_about = "Show a node's capability profile in force: version, the entry \
that published it, regions, capacity, dispatch time and capabilities.\n\n\
Example:\n  arbor profile show store-17"
    )]
    Show {
        /// Node party id
        #[arg(value_name = "NODE")]
        node: String,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// A node's open orders against capacity, claims, releases, lapses, handoffs, late shipments
    #[command(
        long_about = "A node's counters as the ledger keeps them: open orders (claimed \
or received, not yet shipped) against the capacity of its profile in force, claims, releases, \
lease lapses, handoffs out and in, shipments and shipments later than the declared dispatch \
time, deliveries, fence expiries; and its health: a score out of 1000 folded from the \
ledger's facts (dispatch on time against the declared time from its first lease start on each \
order, lapses, releases, declines, fence expiries, damage noted by receivers, dispute rulings \
against it), as of the replica's applied entry (docs/disputes.md §9).\n\n\
Example:\n  arbor node stats store-17"
    )]
    Stats {
        /// Node party id
        #[arg(value_name = "NODE")]
        node: String,
    },
}

/// `profile.toml` as `arbor profile publish` reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProfileFile {
    regions: Vec<String>,
    max_open_orders: u32,
    #[serde(default)]
    dispatch_time_ms: Option<u64>,
    /// The same as a duration: "4h", "30m".
    #[serde(default)]
    dispatch_time: Option<String>,
    #[serde(default)]
    handles_returns: bool,
    #[serde(default)]
    cold_chain: bool,
    #[serde(default)]
    hazmat: bool,
    #[serde(default)]
    categories: Vec<String>,
}

fn parse_profile(text: &str) -> Result<pb::PublishProfile, toml::de::Error> {
    use serde::de::Error;
    let f: ProfileFile = toml::from_str(text)?;
    let dispatch_time_ms = match (f.dispatch_time_ms, &f.dispatch_time) {
        (Some(ms), None) => ms,
        (None, Some(d)) => crate::time::parse_duration(d)
            .map_err(|e| toml::de::Error::custom(format!("dispatch-time: {e}")))?
            .as_millis() as u64,
        (Some(_), Some(_)) => {
            return Err(toml::de::Error::custom(
                "give dispatch-time (a duration, e.g. \"4h\") or dispatch-time-ms, not both",
            ))
        }
        (None, None) => {
            return Err(toml::de::Error::custom(
                "missing field `dispatch-time` (a duration, e.g. \"4h\"; or dispatch-time-ms)",
            ))
        }
    };
    Ok(pb::PublishProfile {
        regions: f.regions,
        max_open_orders: f.max_open_orders,
        dispatch_time_ms,
        handles_returns: f.handles_returns,
        cold_chain: f.cold_chain,
        hazmat: f.hazmat,
        categories: f.categories,
    })
}

/// Reads a profile file; errors name the file.
pub fn load_profile_file(path: &Path) -> Result<pb::PublishProfile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read profile file {}", path.display()))?;
    parse_profile(&text).with_context(|| format!("profile file {} is not valid", path.display()))
}

pub async fn run(ctx: &Ctx, cmd: ProfileCmd) -> Result<Reply> {
    match cmd {
        ProfileCmd::Publish { key, file } => {
            let profile = load_profile_file(&file)?;
            let node = signing_key(ctx, key).await?;
            let reply = ctx
                .client()
                .await?
                .submit(node.publish_profile(profile))
                .await?;
            Ok(submit_reply(ctx.format, &reply))
        }
        ProfileCmd::Show { node } => {
            let v = ctx.client().await?.get_profile(&node).await?;
            let p = v.profile.unwrap_or_default();
            let json = json!({
                "node": v.node,
                "version": v.version,
                "published_seq": v.published_seq,
                "regions": p.regions,
                "max_open_orders": p.max_open_orders,
                "dispatch_time_ms": p.dispatch_time_ms,
                "handles_returns": p.handles_returns,
                "cold_chain": p.cold_chain,
                "hazmat": p.hazmat,
                "categories": p.categories,
            });
            Ok(Reply::new(render(ctx.format, json, || {
                let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
                kv(&[
                    ("node", v.node.clone()),
                    (
                        "version",
                        format!("{} (published at seq {})", v.version, v.published_seq),
                    ),
                    ("regions", p.regions.join(", ")),
                    ("max open orders", p.max_open_orders.to_string()),
                    (
                        "dispatch time",
                        crate::time::format_duration_ms(p.dispatch_time_ms),
                    ),
                    ("handles returns", yes(p.handles_returns)),
                    ("cold chain", yes(p.cold_chain)),
                    ("hazmat", yes(p.hazmat)),
                    ("categories", p.categories.join(", ")),
                ])
            })))
        }
    }
}

pub async fn run_node(ctx: &Ctx, cmd: NodeCmd) -> Result<Reply> {
    match cmd {
        NodeCmd::Stats { node } => {
            let s = ctx.client().await?.node_stats(&node).await?;
            let json = json!({
                "node": s.node,
                "open_orders": s.open_orders,
                "capacity": s.capacity,
                "profile_version": s.profile_version,
                "claims": s.claims,
                "releases": s.releases,
                "lapses": s.lapses,
                "handoffs_out": s.handoffs_out,
                "handoffs_in": s.handoffs_in,
                "shipped": s.shipped,
                "late_shipments": s.late_shipments,
                "delivered": s.delivered,
                "fence_expiries": s.fence_expiries,
                "health": s.health.as_ref().map(health_json),
            });
            Ok(Reply::new(render(ctx.format, json, || {
                kv(&[
                    ("node", s.node.clone()),
                    (
                        "open orders",
                        format!(
                            "{} of {} (profile v{})",
                            s.open_orders, s.capacity, s.profile_version
                        ),
                    ),
                    ("claims", s.claims.to_string()),
                    ("releases", s.releases.to_string()),
                    ("lapses", s.lapses.to_string()),
                    (
                        "handoffs",
                        format!("{} out, {} in", s.handoffs_out, s.handoffs_in),
                    ),
                    (
                        "shipped",
                        format!("{} ({} late)", s.shipped, s.late_shipments),
                    ),
                    ("delivered", s.delivered.to_string()),
                    ("fence expiries", s.fence_expiries.to_string()),
                    (
                        "health",
                        s.health
                            .as_ref()
                            .map(health_text)
                            .unwrap_or_else(|| "-".into()),
                    ),
                ])
            })))
        }
    }
}

/// The node's health as `arbor node stats --output json` shows it.
fn health_json(h: &pb::HealthView) -> serde_json::Value {
    json!({
        "score": h.score,
        "as_of_seq": h.as_of_seq,
        "taken_on": h.taken_on,
        "shipped": h.shipped,
        "on_time": h.on_time,
        "lapses": h.lapses,
        "releases": h.releases,
        "declines": h.declines,
        "fence_expiries": h.fence_expiries,
        "damage_noted": h.damage_noted,
        "rulings_against": h.rulings_against,
    })
}

/// One line: the score out of 1000 and the counters it rests on.
fn health_text(h: &pb::HealthView) -> String {
    format!(
        "{} of {} as of entry {} ({} taken on; {} of {} shipped on time; {} lapses, {} releases, {} declines, {} fence expiries, {} damage noted, {} rulings against)",
        h.score,
        arbor_proto::rules::MAX_HEALTH_SCORE,
        h.as_of_seq,
        h.taken_on,
        h.on_time,
        h.shipped,
        h.lapses,
        h.releases,
        h.declines,
        h.fence_expiries,
        h.damage_noted,
        h.rulings_against
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_files_parse_and_unknown_keys_are_errors() {
        let p = parse_profile(
            "regions = [\"CN-31\"]\nmax-open-orders = 5\ndispatch-time-ms = 1000\ncold-chain = true\n",
        )
        .unwrap();
        assert_eq!(p.regions, vec!["CN-31"]);
        assert_eq!(p.max_open_orders, 5);
        assert!(p.cold_chain && !p.hazmat);
        let e = parse_profile(
            "regions = []\nmax-open-orders = 5\ndispatch-time-ms = 1\ncapacity = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("capacity"), "{e}");
        let e = parse_profile("regions = []\n").unwrap_err().to_string();
        assert!(e.contains("max-open-orders"), "{e}");
        let p =
            parse_profile("regions = []\nmax-open-orders = 5\ndispatch-time = \"4h\"\n").unwrap();
        assert_eq!(p.dispatch_time_ms, 14_400_000);
        for bad in [
            "regions = []\nmax-open-orders = 5\n",
            "regions = []\nmax-open-orders = 5\ndispatch-time = \"4 hours\"\n",
            "regions = []\nmax-open-orders = 5\ndispatch-time = \"4h\"\ndispatch-time-ms = 1\n",
        ] {
            let e = parse_profile(bad).unwrap_err().to_string();
            assert!(e.contains("dispatch-time"), "{bad}: {e}");
        }
    }
}
