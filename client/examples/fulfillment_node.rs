//! A fulfillment node's main loop, in about 300 lines: follow the ledger,
//! claim the orders this node can serve at the locked price (new ones, and
//! ones that come back after a lapse, a release or a reassignment), answer
//! the assignment offers of sourcing decisions (rules version 3), and report
//! picked, packed and shipped for each.
//!
//! ```text
//! cargo run --example fulfillment_node -- \
//!     --endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
//!     --cacert arbor-data/tls/ca.pem --key store-sh.key \
//!     [--from SEQ] [--max N] [--carrier sf-express [--tender]]
//! ```
//!
//! - `--cacert`: the cluster CA (default `$ARBOR_CACERT`; `--insecure-plaintext`
//!   for a cluster run without TLS).
//! - `--key`: the node's key file (`arbor keys generate`); the node must be
//!   enrolled and have published a capability profile (`arbor profile publish`).
//! - `--from SEQ`: where to start reading the ledger (default 0: orders
//!   registered before the node started are considered too; those already
//!   taken are skipped).
//! - `--max N`: exit after shipping N orders (default: run until Ctrl-C).
//! - `--carrier`: the carrier the node hands its parcels to.
//! - `--tender`: the carrier is an enrolled carrier party: each shipment is
//!   a tender to it (rules version 3), and the node stays the custodian
//!   until the carrier signs `AcceptTender`. Without it the carrier is a
//!   name; from rules version 4 the node then stays liable until delivery
//!   (the carrier is its agent), and a plain shipment to an enrolled
//!   carrier is rejected `tender_required`.
//!
//! How it works:
//!
//! 1. [`Client::watch`] streams every committed ledger entry from `--from` on,
//!    each exactly once and in order, resuming on another replica if the one
//!    it reads dies.
//! 2. For each accepted entry about an order it reads the order
//!    ([`Client::get_order`]) and does what the order's state asks of it:
//!    - an assignment offer to this node (a sourcing decision selected it):
//!      it accepts when its profile serves the order (the cluster checks
//!      eligibility and capacity again), and declines otherwise, naming why;
//!    - an order fenced for this node (its lease lapsed while it was picked
//!      or packed, rules version 2): it still holds the parcel, so it ships
//!      it (a node that put the goods back would release it instead: the
//!      order opens for others);
//!    - an open order (new, or back after a lapse, a release or a
//!      reassignment) that is not brokered: it checks it may claim it (the
//!      destination region served, cold chain / hazmat / category offered)
//!      and claims it quoting the price version and total it just read. The
//!      first admissible claim in log order wins; a rejection
//!      (`already_owned` when another node was faster, `stale_price_version`
//!      when the channel amended the price in between, `at_capacity`, ...)
//!      is logged and the order skipped — never retried blindly. A brokered
//!      order is taken only through an assignment offer.
//! 3. It reports picked, packed and shipped (with carrier and tracking id;
//!    with `--tender`, as a tender of one parcel to the enrolled carrier).
//!    Shipping ends the lease; a node that does not ship within its declared
//!    dispatch time loses the order (or, once picked or packed, is fenced).
//!
//! Every command is signed once; [`Client::submit`] resends the same bytes on
//! leader changes and the cluster applies them once, so a timeout never
//! claims or ships twice.

use std::path::PathBuf;
use std::process::ExitCode;

use arbor_client::pb::command::Body;
use arbor_client::{pb, Client, ClientError, Commands, Identity, Signer, Transport};
use futures::StreamExt;
use prost::Message;

const USAGE: &str =
    "usage: fulfillment_node --endpoints LIST --key FILE [--from SEQ] [--max N] [--carrier NAME [--tender]]";

struct Args {
    endpoints: String,
    cacert: Option<PathBuf>,
    insecure_plaintext: bool,
    key: PathBuf,
    from: u64,
    max: Option<u64>,
    carrier: Carrier,
}

/// Who the node hands its parcels to, and how.
struct Carrier {
    name: String,
    /// Tender to the enrolled carrier `name` (it signs for the goods).
    tender: bool,
}

impl Carrier {
    /// The shipped milestone: a tender of one parcel, or a plain hand-off.
    fn shipped(&self, me: &Signer, order_id: &str, tracking: &str) -> pb::SignedCommand {
        if self.tender {
            me.report_tender(order_id, &self.name, tracking, 1)
        } else {
            me.report_shipped(order_id, &self.name, tracking)
        }
    }

    fn how(&self) -> &'static str {
        if self.tender {
            "tendered to"
        } else {
            "shipped with"
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoints: std::env::var("ARBOR_ENDPOINTS").unwrap_or_default(),
        cacert: std::env::var_os("ARBOR_CACERT").map(PathBuf::from),
        insecure_plaintext: false,
        key: PathBuf::new(),
        from: 0,
        max: None,
        carrier: Carrier {
            name: "sf-express".into(),
            tender: false,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => args.endpoints = value()?,
            "--key" => args.key = PathBuf::from(value()?),
            "--cacert" => args.cacert = Some(PathBuf::from(value()?)),
            "--insecure-plaintext" => args.insecure_plaintext = true,
            "--from" => args.from = value()?.parse().map_err(|e| format!("--from: {e}"))?,
            "--max" => args.max = Some(value()?.parse().map_err(|e| format!("--max: {e}"))?),
            "--carrier" => args.carrier.name = value()?,
            "--tender" => args.carrier.tender = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.endpoints.is_empty() || args.key.as_os_str().is_empty() {
        return Err("--endpoints and --key are required".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    match run(args).await {
        Ok(shipped) => {
            println!("done: shipped {shipped} order(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<u64, ClientError> {
    let key = Identity::load(&args.key)?;
    let transport =
        Transport::from_options(args.cacert.as_deref(), None, None, args.insecure_plaintext)?;
    let client = Client::connect(std::slice::from_ref(&args.endpoints), &transport).await?;
    // Commands are signed for this cluster: its id, from the cluster itself.
    let me = key.for_cluster(&client.cluster_id().await?);
    println!(
        "{}: watching the ledger from entry {}",
        me.party_id, args.from
    );
    let mut feed = client.watch(args.from);
    let mut shipped = 0;
    while let Some(entry) = feed.next().await {
        let Some((order_id, registered)) = order_entry(&entry?) else {
            continue;
        };
        if handle(&client, &me, &order_id, registered, &args.carrier).await? {
            shipped += 1;
            if args.max.is_some_and(|max| shipped >= max) {
                break;
            }
        }
    }
    Ok(shipped)
}

/// The order an accepted entry concerns, and whether the entry registered it.
fn order_entry(e: &pb::LedgerEntry) -> Option<(String, bool)> {
    if !e.outcome.as_ref().is_some_and(|o| o.accepted) || e.order_id.is_empty() {
        return None;
    }
    let env = pb::SignedCommand::decode(e.command.as_slice()).ok()?;
    let body = pb::Command::decode(env.command.as_slice()).ok()?.body?;
    Some((e.order_id.clone(), matches!(body, Body::RegisterOrder(_))))
}

/// Why this node's profile does not serve `order` (None: it does).
async fn not_served(
    client: &Client,
    me: &Signer,
    order: &pb::OrderView,
) -> Result<Option<String>, ClientError> {
    let profile = client.get_profile(&me.party_id).await?.profile;
    let Some(p) = profile else {
        return Ok(Some("this node has no capability profile".into()));
    };
    let req = order.requirements.clone().unwrap_or_default();
    Ok(if !p.regions.contains(&order.destination_region) {
        Some(format!("region {} not served", order.destination_region))
    } else if req.cold_chain && !p.cold_chain {
        Some("needs cold chain".into())
    } else if req.hazmat && !p.hazmat {
        Some("needs hazmat handling".into())
    } else if !req.category.is_empty() && !p.categories.contains(&req.category) {
        Some(format!("category {} not handled", req.category))
    } else {
        None
    })
}

/// Why this node should not even try to claim `order` (None: try).
async fn not_for_me(
    client: &Client,
    me: &Signer,
    order: &pb::OrderView,
) -> Result<Option<String>, ClientError> {
    if order.status != "open" && !order.lease_lapsed {
        return Ok(Some(format!("already {} by {}", order.status, order.owner)));
    }
    if order.sourcing_mode == "brokered" {
        return Ok(Some(
            "brokered: taken only through a sourcing decision".into(),
        ));
    }
    not_served(client, me, order).await
}

/// Submits `cmd`; Ok(true) when accepted, Ok(false) (logged) when rejected.
async fn step(
    client: &Client,
    order_id: &str,
    what: &str,
    cmd: pb::SignedCommand,
) -> Result<bool, ClientError> {
    let reply = client.submit(cmd).await?;
    let o = reply.outcome.unwrap_or_default();
    if o.accepted {
        println!("{order_id}: {what} (seq {})", reply.seq);
    } else {
        println!(
            "{order_id}: {what} rejected at seq {} ({}): {}",
            reply.seq, o.code, o.message
        );
    }
    Ok(o.accepted)
}

/// Does what the order asks of this node now; Ok(true) when it shipped it.
async fn handle(
    client: &Client,
    me: &Signer,
    order_id: &str,
    registered: bool,
    carrier: &Carrier,
) -> Result<bool, ClientError> {
    let order = client.get_order(order_id).await?;
    // A sourcing decision offers the order to this node.
    if let Some(a) = order.assignment.as_ref().filter(|a| a.to == me.party_id) {
        let seq = a.decision_seq;
        if let Some(why) = not_served(client, me, &order).await? {
            let no = me.decline_assignment(order_id, seq, &why, false);
            step(
                client,
                order_id,
                &format!("declined decision {seq}: {why}"),
                no,
            )
            .await?;
            return Ok(false);
        }
        let yes = me.accept_assignment(order_id, seq, order.price_version, order.total);
        if !step(client, order_id, &format!("accepted decision {seq}"), yes).await? {
            let no = me.decline_assignment(order_id, seq, "could not take it on", false);
            step(client, order_id, &format!("declined decision {seq}"), no).await?;
            return Ok(false);
        }
        return ship(client, me, order_id, carrier).await;
    }
    // Fenced for this node: it still holds the parcel, so it ships it.
    if order.status == "fenced" && order.fenced_node == me.party_id {
        let tracking = format!("TRK-{order_id}");
        let cmd = carrier.shipped(me, order_id, &tracking);
        let what = format!(
            "{} {} while fenced (counted late)",
            carrier.how(),
            carrier.name
        );
        return step(client, order_id, &what, cmd).await;
    }
    if let Some(why) = not_for_me(client, me, &order).await? {
        // Only a new order is worth a line; entries on orders that are not
        // for this node are many.
        if registered {
            println!("{order_id}: skipped: {why}");
        }
        return Ok(false);
    }
    let claim = me.claim_order(order_id, order.price_version, order.total);
    let what = format!(
        "claimed at price version {}, total {} {}",
        order.price_version, order.total, order.currency
    );
    if !step(client, order_id, &what, claim).await? {
        return Ok(false);
    }
    ship(client, me, order_id, carrier).await
}

/// Reports picked, packed and shipped; Ok(true) when shipped.
async fn ship(
    client: &Client,
    me: &Signer,
    order_id: &str,
    carrier: &Carrier,
) -> Result<bool, ClientError> {
    for (name, m) in [
        ("picked", pb::Milestone::Picked),
        ("packed", pb::Milestone::Packed),
    ] {
        if !step(client, order_id, name, me.report_milestone(order_id, m)).await? {
            return Ok(false);
        }
    }
    let tracking = format!("TRK-{order_id}");
    let ship = carrier.shipped(me, order_id, &tracking);
    step(
        client,
        order_id,
        &format!("{} {}, tracking {tracking}", carrier.how(), carrier.name),
        ship,
    )
    .await
}
