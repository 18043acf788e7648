//! `arbor order`: register, claim and look up orders.

use std::path::PathBuf;

use anyhow::Result;
use arbor_client::pb;
use arbor_client::Commands;
use clap::Subcommand;

use serde_json::{json, Value};

use super::exit::{fail, Exit};
use super::output::{submit_reply, Format, Reply};
use super::{signing_key, Ctx};
use precheck::SignOpts;

#[derive(Subcommand)]
pub enum OrderCmd {
    /// Register an order from a JSON file (channel-signed)
    #[command(
        long_about = "Register an order from a JSON file (channel-signed). This locks its price at version 1.\n\n\
The file holds one JSON object; unknown fields are an error, and every field shown is \
required except `requirements` (cold_chain, hazmat, category: what a claiming node's profile \
must offer), `promised_delivery` (RFC 3339, or `promised_delivery_ms` in Unix ms) and \
`sourcing` (rules version 3: \"race\", the default, where the first admissible claim wins, \
or \"brokered\", where nodes take it on only through a sourcing decision, `arbor order source`):\n\n  \
{\n    \"order_id\": \"o-20251207-0001\",\n    \
\"external_refs\": [{\"channel\": \"meituan\", \"external_id\": \"meituan_20251207152344_8892\"}],\n    \
\"lines\": [{\"sku\": \"tea-500g\", \"quantity\": 2, \"unit_price\": 1299}],\n    \
\"currency\": \"CNY\",\n    \"total\": 2598,\n    \"destination_region\": \"cn-sh\",\n    \
\"requirements\": {\"cold_chain\": false, \"hazmat\": false, \"category\": \"tea\"},\n    \
\"promised_delivery\": \"2025-12-08T08:00:00Z\"\n  }\n\n\
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
the order's locked price (--at-current-price reads it and quotes it, and prints what it \
quoted). The first admissible claim wins; later claims are rejected naming the owner. \
Prints `seq N: accepted` or `seq N: rejected (code): reason`; a rejected outcome exits \
with code 2.\n\n\
Checked before signing (like offer, accept, decline, milestone, release, cancel, amend-price, \
exception, return and dispute): the CLI reads the order, the parties named and the node's profile and \
counters, and asks the ledger's own rules what they would decide. A predicted rejection \
(unknown order, wrong price or version, not the owner, wrong state, ...) is refused with exit \
code 6 and the reason, naming the expected value, and nothing is signed or sent; --force signs \
and submits it anyway (the rejection is then recorded against the signer), --dry-run shows \
the command that would be signed and the predicted outcome.\n\n\
Examples:\n  arbor order claim o-20251207-0001 --price-version 1 --total 2598 --key store-17.key\n  \
arbor order claim o-20251207-0001 --at-current-price --key store-17.key\n  \
arbor order claim o-20251207-0001 --at-current-price --dry-run --key store-17.key"
    )]
    Claim {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[command(flatten)]
        quote: Quote,
        /// Node key file
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Show an order: state, owner, price, references, lines and history
    #[command(
        long_about = "Show an order: state, owner, price version and total, external references, \
lines, and the sequence numbers of its ledger entries. The read is linearizable.\n\n\
Example:\n  arbor order get o-20251207-0001"
    )]
    Get {
        /// Canonical order id
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
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
        #[arg(long, value_name = "N", default_value = "100")]
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
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
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
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Make a sourcing decision with the reference broker and sign it (broker- or channel-signed; rules version 3)
    #[command(
        long_about = "Make a sourcing decision for an order with the reference broker and sign it \
(signed by a broker, or by the channel that registered the order; rules version 3).\n\n\
The CLI reads the order (the trigger it awaits: registered, lapsed, released, declined, \
offer_expired, shortage or reassigned, with the entry that caused it) and each candidate's \
enrolment, profile in force and counters, lists every candidate with its profile version, \
eligibility (as the ledger's rules compute it) and score, and selects the best eligible one: \
score = 100 * min(headroom, 50) - 1000 * distance + health (distance: the position of the \
destination region in the node's profile regions; health: 0, neutral). The cluster recomputes \
every candidate's eligibility and rejects a decision that disagrees (eligibility_mismatch) or \
that a newer fact has overtaken (trigger_mismatch, stale_decision): read and decide again.\n\n\
An accepted decision offers the order to the selected node for --expires-in; it accepts \
(AcceptAssignment, or a claim) or declines, and a decline or an expiry is the next trigger. \
No eligible candidate, or an order that awaits no decision, exits with code 6 and signs nothing.\n\n\
Under rules version 4 a decision must list every eligible node (candidates_incomplete \
otherwise): the CLI lists every node with a profile in force (and any --candidates besides), \
and a node that declined this order before is listed but not selected (its candidate's basis \
says so). Under version 3 only --candidates are listed, and it is required.\n\n\
Examples:\n  arbor order source o-1 --key broker.key\n  \
arbor order source o-1 --candidates store-17,wh-shanghai --dry-run --key broker.key"
    )]
    Source {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Candidate nodes, comma-separated (1 to 64; each is listed in the decision). Rules version 4 adds every node with a profile; version 3 needs them
        #[arg(long, value_name = "NODES", value_delimiter = ',')]
        candidates: Vec<String>,
        /// How long the selected node has to answer: a duration such as 5m, 90s (a bare number is seconds)
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::time::parse_duration_arg)]
        expires_in: std::time::Duration,
        /// Show the decision that would be signed; sign and send nothing
        #[arg(long)]
        dry_run: bool,
        /// Broker key file (or the key of the channel that registered the order)
        #[arg(long, env = "ARBOR_KEY", value_name = "BROKERKEY")]
        key: Option<PathBuf>,
    },
    /// Cancel an order that has not shipped (channel-signed)
    #[command(
        long_about = "Cancel an order that has not shipped (signed by the channel that \
registered it). Nothing can happen to a cancelled order afterwards.\n\n\
Example:\n  arbor order cancel o-1 --reason \"customer cancelled\" --key meituan.key"
    )]
    Cancel {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Why it is cancelled (recorded in the ledger)
        #[arg(long, default_value = "")]
        reason: String,
        /// Channel key file (the channel that registered the order)
        #[arg(long, env = "ARBOR_KEY", value_name = "CHANNELKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Give an owned order back: it is open again (owner-signed)
    #[command(
        long_about = "Give an owned, unshipped order back, with a reason (signed by the \
owner). The order is open again and the release is counted in the node's statistics.\n\n\
Example:\n  arbor order release o-1 --reason \"out of stock\" --key store-17.key"
    )]
    Release {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Why it is given back (recorded in the ledger)
        #[arg(long)]
        reason: String,
        /// It lacks the stock: the order's next sourcing trigger is a shortage (rules version 3)
        #[arg(long)]
        shortage: bool,
        /// Node key file (the owner)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Take on an order a sourcing decision offered you (node-signed, rules version 3)
    #[command(
        long_about = "Accept the assignment offer of a sourcing decision (signed by the node \
it selected): the order is yours, as by a claim, with a claim's checks (price quote, \
eligibility, capacity). --decision-seq names the decision (default: the live assignment \
`arbor order get` shows); the price is the one given or, with --at-current-price, the \
order's locked price. Refused locally (exit 6, nothing signed) when the offer is not yours, \
ran out or names another decision; --force signs anyway. A rejected outcome exits 2.\n\n\
Examples:\n  arbor order accept-assignment o-1 --at-current-price --key store-17.key\n  \
arbor order accept-assignment o-1 --decision-seq 22 --price-version 1 --total 2598 --key store-17.key"
    )]
    AcceptAssignment {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Entry of the sourcing decision whose offer you accept (default: the order's live assignment)
        #[arg(long, value_name = "SEQ")]
        decision_seq: Option<u64>,
        #[command(flatten)]
        quote: Quote,
        /// Node key file (the node the decision selected)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Decline an order a sourcing decision offered you (node-signed, rules version 3)
    #[command(
        long_about = "Decline the assignment offer of a sourcing decision (signed by the node \
it selected), with a reason; --shortage reports that you lack the stock. The decline is the \
order's next sourcing trigger (declined, or shortage), and the broker decides again for \
someone else. Under rules version 4 the decline is recorded against you and counts in your \
health score (docs/disputes.md). Refused locally (exit 6) when the offer is not yours, ran \
out or names another decision; --force signs anyway.\n\n\
Example:\n  arbor order decline-assignment o-1 --reason \"no picker on shift\" --key store-17.key"
    )]
    DeclineAssignment {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Entry of the sourcing decision whose offer you decline (default: the order's live assignment)
        #[arg(long, value_name = "SEQ")]
        decision_seq: Option<u64>,
        /// Why you decline (recorded in the ledger)
        #[arg(long, default_value = "")]
        reason: String,
        /// You lack the stock: the next sourcing trigger is a shortage
        #[arg(long)]
        shortage: bool,
        /// Node key file (the node the decision selected)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Take a stalled order back from its owner or assignee (channel- or operator-signed, rules version 3)
    #[command(
        long_about = "Reassign a stalled order (signed by the channel that registered it, or \
by an operator), with a reason: a live assignment offer is withdrawn, or a claimed order is \
taken from its owner (custody ends; the order is open again and awaits sourcing, trigger \
reassigned). A picked or packed order is rejected work_in_progress: its lease lapses into \
the fence instead. --from names the node it is taken from (default: the owner or assignee \
the order shows now); under rules version 4 the reassignment counts against that node's \
health. Refused locally (exit 6) when --from is not who holds it; --force signs anyway.\n\n\
Example:\n  arbor order reassign o-1 --reason \"no progress in 2 h\" --key meituan.key"
    )]
    Reassign {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The node the order is taken from (default: its owner or live assignee as read now; "" for nobody)
        #[arg(long, value_name = "NODE")]
        from: Option<String>,
        /// Why it is reassigned (recorded in the ledger)
        #[arg(long)]
        reason: String,
        /// Channel key file (the channel that registered the order) or an operator's
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Offer custody of an owned order to another node (owner-signed)
    #[command(
        long_about = "Offer custody of an owned, unshipped order to another node (signed \
by the owner). Custody moves only when the receiver accepts (`arbor order accept`); until then, \
and if it declines or the offer expires, the sender keeps it. Prints the offer's sequence \
number (the offer seq) and the exact command the receiver accepts it with (`--offer-seq N`); \
with --output json they are `offer_seq` and `accept_command`.\n\n\
Example:\n  arbor order offer o-1 --to wh-shanghai --expires-in 1h --key store-17.key"
    )]
    Offer {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The receiving node's party id
        #[arg(long, value_name = "NODE")]
        to: String,
        /// How long the offer stays open: a duration such as 1h, 30m, 90s (a bare number is seconds)
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::time::parse_duration_arg)]
        expires_in: std::time::Duration,
        /// Node key file (the owner)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Accept a handoff offer: custody and ownership move to you (receiver-signed)
    #[command(
        long_about = "Accept the handoff offer made at entry --offer-seq (signed by the \
receiver, who must be eligible for the order like a claimant). --damaged and --note record \
exceptions seen at acceptance, such as visible damage.\n\n\
Example:\n  arbor order accept o-1 --offer-seq 42 --damaged --note \"box crushed\" --key wh-shanghai.key"
    )]
    Accept {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Sequence number of the offer's ledger entry (printed by `arbor order offer`, shown by `arbor order get`)
        #[arg(long, value_name = "SEQ")]
        offer_seq: u64,
        /// Visible damage noted at acceptance
        #[arg(long)]
        damaged: bool,
        /// Exceptions seen at acceptance (recorded in the ledger)
        #[arg(long, default_value = "")]
        note: String,
        /// Node key file (the receiver)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Decline a handoff offer (receiver-signed)
    #[command(
        long_about = "Decline the handoff offer made at entry --offer-seq (signed by the \
receiver). The sender keeps the order.\n\n\
Example:\n  arbor order decline o-1 --offer-seq 42 --reason \"no space\" --key wh-shanghai.key"
    )]
    Decline {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Sequence number of the offer's ledger entry
        #[arg(long, value_name = "SEQ")]
        offer_seq: u64,
        /// Why it is declined (recorded in the ledger)
        #[arg(long, default_value = "")]
        reason: String,
        /// Node key file (the receiver)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
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
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The milestone reached
        #[arg(value_enum)]
        milestone: MilestoneArg,
        /// shipped: the carrier the order is handed to (its party id when enrolled)
        #[arg(long, value_name = "CARRIER", default_value = "")]
        carrier: String,
        /// shipped: the carrier's tracking id
        #[arg(long, value_name = "ID", default_value = "")]
        tracking_id: String,
        /// delivered: a reference to the proof of delivery (without it custody stays with the carrier)
        #[arg(long, value_name = "REF", default_value = "")]
        proof_of_delivery: String,
        /// shipped (rules version 3): tender to the enrolled carrier --carrier; you stay the custodian until it signs `arbor order accept-tender`
        #[arg(long)]
        tender: bool,
        /// shipped with --tender: the number of parcels tendered
        #[arg(long, value_name = "N", default_value = "0", requires = "tender")]
        parcels: u32,
        /// shipped with --tender (rules version 4): how long the carrier has to sign, in ms (absent: 24 h; at most 7 days); after it the tender expires and you may tender again
        #[arg(long, value_name = "MS", requires = "tender")]
        tender_timeout_ms: Option<u64>,
        /// delivered (rules version 3): the recipient's one-time delivery code, checked against the hash the channel registered
        #[arg(long, value_name = "CODE", default_value = "")]
        delivery_code: String,
        /// Node key file (the owner)
        #[arg(long, env = "ARBOR_KEY", value_name = "NODEKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Sign for a tendered order: custody passes to you (carrier-signed, rules version 3)
    #[command(
        long_about = "Sign the tender acceptance of the tender made at entry --tender-seq (the owner's `arbor order milestone ORDER shipped --tender --carrier YOU`), stating what you received and your tracking id. Custody passes to you with this entry; until then the node holds the goods. Refused unless the tender names you; a second acceptance is rejected tender_already_accepted.\n\n\
Example:\n  arbor order accept-tender o-1 --tender-seq 42 --tracking-id SF1234 --parcels 2 --weight-grams 1800 --description \"2 boxes, sealed\" --key sf-express.key"
    )]
    AcceptTender {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// Sequence number of the tender's ledger entry (shown by `arbor order get` as the tender)
        #[arg(long, value_name = "SEQ")]
        tender_seq: u64,
        /// Your own tracking id for the shipment
        #[arg(long, value_name = "ID")]
        tracking_id: String,
        /// Parcels received (at least 1)
        #[arg(long, value_name = "N", default_value = "1")]
        parcels: u32,
        /// Declared weight received, in grams (0: not stated)
        #[arg(long, value_name = "GRAMS", default_value = "0")]
        weight_grams: u64,
        /// What was received, as you saw it (recorded in the ledger)
        #[arg(long, default_value = "")]
        description: String,
        /// Visible damage noted at pickup (a damaged dispute then points to the node)
        #[arg(long)]
        damaged: bool,
        /// Anything else noted at pickup (recorded in the ledger)
        #[arg(long, default_value = "")]
        note: String,
        /// Carrier key file
        #[arg(long, env = "ARBOR_KEY", value_name = "CARRIERKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Scan a delivery: custody ends, proof graded scan or code (carrier-signed, rules version 3)
    #[command(
        long_about = "Report the delivery of an order you signed for (carrier-signed): custody ends and the proof of delivery is graded `scan`, or `code` with the recipient's one-time delivery code (--delivery-code, checked against the hash the channel registered; a wrong or reused code is rejected). Also accepted after the node reported the delivery on its own word, which does not end your custody.\n\n\
Example:\n  arbor order scan-delivery o-1 --tracking-id SF1234 --delivery-code K7Q2M9XD --key sf-express.key"
    )]
    ScanDelivery {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The tracking id you accepted the tender with
        #[arg(long, value_name = "ID")]
        tracking_id: String,
        /// The recipient's one-time delivery code, if the recipient gave it
        #[arg(long, value_name = "CODE", default_value = "")]
        delivery_code: String,
        /// Where or to whom it was delivered (recorded in the ledger)
        #[arg(long, default_value = "")]
        note: String,
        /// Carrier key file
        #[arg(long, env = "ARBOR_KEY", value_name = "CARRIERKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Report an exception: damaged, lost, delayed (owner or channel)
    #[command(
        long_about = "Report an exception on an order (signed by its owner or by the \
channel that registered it). Exceptions are recorded; they do not change the lifecycle.\n\n\
Example:\n  arbor order exception o-1 delayed --note \"truck broke down\" --key store-17.key"
    )]
    Exception {
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// What went wrong
        #[arg(value_enum)]
        kind: ExceptionArg,
        /// What happened (recorded in the ledger)
        #[arg(long, default_value = "")]
        note: String,
        /// Key file of the owner or the registering channel
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
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
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The step of the return
        #[arg(value_enum)]
        step: ReturnStep,
        /// request: why the goods come back (recorded in the ledger)
        #[arg(long, default_value = "")]
        reason: String,
        /// receive: the refund in minor units
        #[arg(long, value_name = "AMOUNT", default_value = "0")]
        refund: i64,
        /// receive: the price version the refund is computed at
        #[arg(long, value_name = "N", default_value = "0")]
        price_version: u64,
        /// Key file: the channel (request) or the returns node (claim, receive)
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
    },
    /// Open a dispute on an order: lost, damaged, late, ... (any enrolled party)
    #[command(
        long_about = "Open a dispute on an order (signed by any enrolled party: operator, channel, \
node or auditor), naming what happened and when: --at is the incident time (RFC 3339 such as \
2025-12-07T15:23:00Z, or now, now-2h), or --incident-ms in Unix milliseconds (a number that \
can only be seconds is refused); it may not be later than the entry's own time. Prints the \
dispute's sequence number; `arbor audit dispute ORDER --dispute SEQ` previews the ruling the \
responsibility rules compute, and an auditor resolves it with --resolve.\n\n\
For lost and damaged (rules version 2 and later), --known-good (or --known-good-ms) names \
the last time the goods were known good: the dispute is then about the window from it to \
--at, judged by everyone who held the goods in it. Under rules version 3 a dispute opened \
after its kind's claim deadline (from the order's delivery, or its hand-off to the carrier) \
is rejected claim_deadline_passed; `arbor cluster rules` shows the deadlines.\n\n\
Examples:\n  arbor order dispute ord-1001 --kind damaged --at 2025-12-07T15:23:00Z --statement \"box crushed on arrival\" --key meituan.key\n  \
arbor order dispute ord-1001 --kind lost --at now-2h --key meituan.key\n  \
arbor order dispute ord-1001 --kind damaged --known-good 2025-12-07T09:00:00Z --at 2025-12-07T15:23:00Z --key meituan.key"
    )]
    Dispute {
        /// Canonical order id
        /// Canonical order id (see `arbor order list`, `arbor order resolve`)
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// What happened
        #[arg(long, value_enum)]
        kind: IncidentArg,
        /// When it happened: RFC 3339 (2025-12-07T15:23:00Z), `now`, `now-2h`
        #[arg(long, value_name = "TIME", required_unless_present = "incident_ms", conflicts_with = "incident_ms", value_parser = crate::time::parse_time_arg)]
        at: Option<u64>,
        /// When it happened, in Unix milliseconds (a value that can only be seconds is refused)
        #[arg(long, value_name = "MS", value_parser = crate::time::parse_ms_arg)]
        incident_ms: Option<u64>,
        /// Lost and damaged: the last time the goods were known good (RFC 3339, `now-6h`); the dispute names the window from it to --at
        #[arg(long, value_name = "TIME", conflicts_with = "known_good_ms", value_parser = crate::time::parse_time_arg)]
        known_good: Option<u64>,
        /// The same in Unix milliseconds
        #[arg(long, value_name = "MS", value_parser = crate::time::parse_ms_arg)]
        known_good_ms: Option<u64>,
        /// Lost only (rules version 4): how many of the order's parcels are lost (absent: the whole order); a loss of parcels the carrier never signed for is the shipper's
        #[arg(long, value_name = "N", conflicts_with_all = ["known_good", "known_good_ms"])]
        parcels: Option<u32>,
        /// What the party says happened (recorded in the ledger)
        #[arg(long, default_value = "")]
        statement: String,
        /// Key file of any enrolled party
        #[arg(long, env = "ARBOR_KEY", value_name = "KEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        sign: SignOpts,
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

/// The price a claim or an assignment acceptance quotes: a version and a
/// total, or `--at-current-price` to read the order's locked price.
#[derive(clap::Args)]
pub struct Quote {
    /// Price version quoted (see `arbor order get`)
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "at_current_price",
        conflicts_with = "at_current_price"
    )]
    pub price_version: Option<u64>,
    /// Order total quoted, in minor units
    #[arg(
        long,
        value_name = "AMOUNT",
        allow_negative_numbers = true,
        required_unless_present = "at_current_price",
        conflicts_with = "at_current_price"
    )]
    pub total: Option<i64>,
    /// Read the order's locked price and quote it (shown in the output)
    #[arg(long)]
    pub at_current_price: bool,
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
            sign,
        } => {
            let cmd =
                signing_key(ctx, key)
                    .await?
                    .amend_price(&order_id, base_version, lines, &reason);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Source {
            order_id,
            candidates,
            expires_in,
            dry_run,
            key,
        } => {
            let ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
            source::run(ctx, &order_id, &candidates, ms, dry_run, key).await
        }
        OrderCmd::Cancel {
            order_id,
            reason,
            key,
            sign,
        } => {
            let cmd = signing_key(ctx, key)
                .await?
                .cancel_order(&order_id, &reason);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Release {
            order_id,
            reason,
            shortage,
            key,
            sign,
        } => {
            let id = signing_key(ctx, key).await?;
            let cmd = if shortage {
                id.release_shortage(&order_id, &reason)
            } else {
                id.release_order(&order_id, &reason)
            };
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::AcceptAssignment {
            order_id,
            decision_seq,
            quote:
                Quote {
                    price_version,
                    total,
                    at_current_price,
                },
            key,
            sign,
        } => {
            let node = signing_key(ctx, key).await?;
            let o = match (decision_seq, at_current_price) {
                (Some(_), false) => None,
                _ => Some(order_for_answer(ctx, &order_id).await?),
            };
            let seq = decision_seq
                .or_else(|| o.as_ref().and_then(assignment_seq))
                .unwrap_or(0);
            if seq == 0 {
                return no_assignment(&order_id);
            }
            let (version, total) = match (&o, at_current_price) {
                (Some(o), true) => (o.price_version, o.total),
                _ => (price_version.unwrap_or_default(), total.unwrap_or_default()),
            };
            let cmd = node.accept_assignment(&order_id, seq, version, total);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::DeclineAssignment {
            order_id,
            decision_seq,
            reason,
            shortage,
            key,
            sign,
        } => {
            let node = signing_key(ctx, key).await?;
            let seq = match decision_seq {
                Some(s) => s,
                None => {
                    let o = order_for_answer(ctx, &order_id).await?;
                    match assignment_seq(&o) {
                        Some(s) => s,
                        None => return no_assignment(&order_id),
                    }
                }
            };
            let cmd = node.decline_assignment(&order_id, seq, &reason, shortage);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Reassign {
            order_id,
            from,
            reason,
            key,
            sign,
        } => {
            let signer = signing_key(ctx, key).await?;
            let from = match from {
                Some(f) => f,
                None => {
                    let o = order_for_answer(ctx, &order_id).await?;
                    if !o.owner.is_empty() {
                        o.owner.clone()
                    } else {
                        o.assignment.map(|a| a.to).unwrap_or_default()
                    }
                }
            };
            let cmd = signer.reassign_order(&order_id, &from, &reason);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Offer {
            order_id,
            to,
            expires_in,
            key,
            sign,
        } => {
            let ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
            let cmd = signing_key(ctx, key)
                .await?
                .offer_handoff(&order_id, &to, ms);
            let mut reply = submit_checked(ctx, cmd, sign).await?;
            if reply.accepted_seq.is_some() {
                reply = offer_reply(ctx.format, reply, &order_id, &to);
            }
            Ok(reply)
        }
        OrderCmd::Accept {
            order_id,
            offer_seq,
            damaged,
            note,
            key,
            sign,
        } => {
            let cmd = signing_key(ctx, key)
                .await?
                .accept_handoff(&order_id, offer_seq, damaged, &note);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Decline {
            order_id,
            offer_seq,
            reason,
            key,
            sign,
        } => {
            let cmd = signing_key(ctx, key)
                .await?
                .decline_handoff(&order_id, offer_seq, &reason);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Milestone {
            order_id,
            milestone,
            carrier,
            tracking_id,
            proof_of_delivery,
            tender,
            parcels,
            tender_timeout_ms,
            delivery_code,
            key,
            sign,
        } => {
            let id = signing_key(ctx, key).await?;
            let cmd = match milestone {
                MilestoneArg::Picked => id.report_milestone(&order_id, pb::Milestone::Picked),
                MilestoneArg::Packed => id.report_milestone(&order_id, pb::Milestone::Packed),
                MilestoneArg::Shipped if tender => match tender_timeout_ms {
                    Some(ms) => id.report_tender_with_timeout(
                        &order_id,
                        &carrier,
                        &tracking_id,
                        parcels,
                        ms,
                    ),
                    None => id.report_tender(&order_id, &carrier, &tracking_id, parcels),
                },
                MilestoneArg::Shipped => id.report_shipped(&order_id, &carrier, &tracking_id),
                MilestoneArg::Delivered if !delivery_code.is_empty() => {
                    id.report_delivered_with_code(&order_id, &proof_of_delivery, &delivery_code)
                }
                MilestoneArg::Delivered => id.report_delivered(&order_id, &proof_of_delivery),
            };
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::AcceptTender {
            order_id,
            tender_seq,
            tracking_id,
            parcels,
            weight_grams,
            description,
            damaged,
            note,
            key,
            sign,
        } => {
            let cmd = signing_key(ctx, key)
                .await?
                .accept_tender(pb::AcceptTender {
                    order_id,
                    tender_seq,
                    tracking_id,
                    parcels,
                    weight_grams,
                    description,
                    damaged,
                    note,
                });
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::ScanDelivery {
            order_id,
            tracking_id,
            delivery_code,
            note,
            key,
            sign,
        } => {
            let cmd = signing_key(ctx, key).await?.scan_delivery(
                &order_id,
                &tracking_id,
                &delivery_code,
                &note,
            );
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Dispute {
            order_id,
            kind,
            at,
            incident_ms,
            known_good,
            known_good_ms,
            parcels,
            statement,
            key,
            sign,
        } => {
            let incident_ms = at.or(incident_ms).unwrap_or_default();
            let signer = signing_key(ctx, key).await?;
            let cmd = match (known_good.or(known_good_ms), parcels) {
                (_, Some(n)) => {
                    signer.open_dispute_parcels(&order_id, kind.to_pb(), incident_ms, n, &statement)
                }
                (Some(good), None) => signer.open_dispute_window(
                    &order_id,
                    kind.to_pb(),
                    good,
                    incident_ms,
                    &statement,
                ),
                (None, None) => {
                    signer.open_dispute(&order_id, kind.to_pb(), incident_ms, &statement)
                }
            };
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Exception {
            order_id,
            kind,
            note,
            key,
            sign,
        } => {
            let kind = match kind {
                ExceptionArg::Damaged => pb::ExceptionKind::Damaged,
                ExceptionArg::Lost => pb::ExceptionKind::Lost,
                ExceptionArg::Delayed => pb::ExceptionKind::Delayed,
            };
            let cmd = signing_key(ctx, key)
                .await?
                .report_exception(&order_id, kind, &note);
            submit_checked(ctx, cmd, sign).await
        }
        OrderCmd::Return {
            order_id,
            step,
            reason,
            refund,
            price_version,
            key,
            sign,
        } => {
            let id = signing_key(ctx, key).await?;
            let cmd = match step {
                ReturnStep::Request => id.request_return(&order_id, &reason),
                ReturnStep::Claim => id.claim_return(&order_id),
                ReturnStep::Receive => id.receive_return(&order_id, refund, price_version),
            };
            submit_checked(ctx, cmd, sign).await
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
            quote:
                Quote {
                    price_version,
                    total,
                    at_current_price,
                },
            key,
            sign,
        } => {
            let node = signing_key(ctx, key).await?;
            if !at_current_price {
                let cmd = node.claim_order(
                    &order_id,
                    price_version.unwrap_or_default(),
                    total.unwrap_or_default(),
                );
                return submit_checked(ctx, cmd, sign).await;
            }
            let client = ctx.client().await?;
            let Some(o) = precheck::read_order(&client, &order_id).await? else {
                return fail(
                    Exit::NotFound,
                    format!(
                        "order {order_id} is not registered, so it has no price to quote \
                         (check the id with `arbor order list`); nothing was signed"
                    ),
                );
            };
            let quoted =
                json!({"price_version": o.price_version, "total": o.total, "currency": o.currency});
            if ctx.format == Format::Table {
                eprintln!(
                    "quoting the locked price of order {order_id}: version {}, total {} {}",
                    o.price_version, o.total, o.currency
                );
            }
            let cmd = node.claim_order(&order_id, o.price_version, o.total);
            let reply = submit_checked(ctx, cmd, sign).await?;
            Ok(with_json_field(ctx.format, reply, "quoted", quoted))
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

/// Submits `cmd` after the pre-check ([`precheck::gate`]) lets it through.
/// The order an answer or a reassignment reads its defaults from (exit 3
/// when it is not registered).
async fn order_for_answer(ctx: &Ctx, order_id: &str) -> Result<pb::OrderView> {
    let client = ctx.client().await?;
    match precheck::read_order(&client, order_id).await? {
        Some(o) => Ok(o),
        None => fail(
            Exit::NotFound,
            format!(
                "order {order_id} is not registered (check the id with `arbor order list`); \
                 nothing was signed"
            ),
        ),
    }
}

/// The decision seq of the order's live assignment offer, if any.
fn assignment_seq(o: &pb::OrderView) -> Option<u64> {
    o.assignment.as_ref().map(|a| a.decision_seq)
}

fn no_assignment<T>(order_id: &str) -> Result<T> {
    fail(
        Exit::RefusedLocally,
        format!(
            "order {order_id} has no live assignment offer to answer (see `arbor order get`); \
             name the decision with --decision-seq to sign anyway; nothing was signed"
        ),
    )
}

async fn submit_checked(ctx: &Ctx, cmd: pb::SignedCommand, sign: SignOpts) -> Result<Reply> {
    let client = ctx.client().await?;
    if let Some(dry) = precheck::gate(&client, ctx.format, &cmd, sign).await? {
        return Ok(dry);
    }
    let reply = client.submit(cmd).await?;
    Ok(submit_reply(ctx.format, &reply))
}

/// Adds `key: value` to a JSON reply (a table reply is left as it is).
fn with_json_field(format: Format, mut reply: Reply, key: &str, value: Value) -> Reply {
    if format == Format::Json {
        if let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(&reply.text) {
            m.insert(key.to_string(), value);
            reply.text =
                serde_json::to_string_pretty(&Value::Object(m)).expect("serializes") + "\n";
        }
    }
    reply
}

/// An accepted offer: its seq, and the command the receiver accepts it with.
fn offer_reply(format: Format, reply: Reply, order_id: &str, to: &str) -> Reply {
    let seq = reply.accepted_seq.unwrap_or_default();
    let accept = format!("arbor order accept {order_id} --offer-seq {seq} --key keys/{to}.key");
    match format {
        Format::Json => {
            let reply = with_json_field(format, reply, "offer_seq", json!(seq));
            with_json_field(format, reply, "accept_command", json!(accept))
        }
        Format::Table => {
            let mut reply = reply;
            reply.text.push_str(&format!(
                "offer seq {seq}: {to} accepts it with\n  {accept}\n\
                 (or declines with `arbor order decline {order_id} --offer-seq {seq}`)\n"
            ));
            reply
        }
    }
}

mod file;
pub mod precheck;
mod show;
pub mod source;

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
    fn an_accepted_offer_names_its_seq_and_the_accept_command() {
        let r = pb::SubmitReply {
            seq: 12,
            outcome: Some(pb::Outcome {
                accepted: true,
                code: "accepted".into(),
                message: String::new(),
            }),
            entry_hash: vec![1; 32],
            duplicate: false,
            owner: String::new(),
        };
        let text = offer_reply(
            Format::Table,
            submit_reply(Format::Table, &r),
            "o-1",
            "wh-east",
        )
        .text;
        assert!(
            text.starts_with("seq 12: accepted\noffer seq 12: wh-east accepts it with\n"),
            "{text}"
        );
        assert!(
            text.contains("  arbor order accept o-1 --offer-seq 12 --key keys/wh-east.key\n"),
            "{text}"
        );
        let j: Value = serde_json::from_str(
            &offer_reply(
                Format::Json,
                submit_reply(Format::Json, &r),
                "o-1",
                "wh-east",
            )
            .text,
        )
        .unwrap();
        assert_eq!(j["offer_seq"], 12);
        assert_eq!(j["seq"], 12);
        assert_eq!(
            j["accept_command"],
            "arbor order accept o-1 --offer-seq 12 --key keys/wh-east.key"
        );
    }

    #[test]
    fn promised_delivery_as_rfc3339() {
        let t = GOOD.replace(
            "\"total\": 2598,",
            "\"total\": 2598, \"promised_delivery\": \"2025-12-07T15:23:44.123Z\",",
        );
        assert_eq!(
            parse_order(&t).unwrap().promised_delivery_ms,
            1_765_121_024_123
        );
        let bad = GOOD.replace(
            "\"total\": 2598,",
            "\"total\": 2598, \"promised_delivery\": \"tomorrow\",",
        );
        assert!(parse_order(&bad)
            .unwrap_err()
            .to_string()
            .contains("promised_delivery"));
    }

    #[test]
    fn a_delivery_code_is_registered_as_its_hash_only() {
        let t = GOOD.replace(
            "\"total\": 2598,",
            "\"total\": 2598, \"delivery_code\": \"K7Q2M9XD44AB\",",
        );
        let o = parse_order(&t).unwrap();
        assert_eq!(
            o.delivery_code_sha256,
            arbor_client::delivery_code_hash("o-1", "K7Q2M9XD44AB").to_vec()
        );
        let hex = hex::encode(&o.delivery_code_sha256);
        let t = GOOD.replace(
            "\"total\": 2598,",
            &format!("\"total\": 2598, \"delivery_code_sha256\": \"{hex}\","),
        );
        assert_eq!(
            parse_order(&t).unwrap().delivery_code_sha256,
            o.delivery_code_sha256
        );
        let both = GOOD.replace(
            "\"total\": 2598,",
            &format!("\"total\": 2598, \"delivery_code\": \"K7Q2M9XD44AB\", \"delivery_code_sha256\": \"{hex}\","),
        );
        assert!(parse_order(&both)
            .unwrap_err()
            .to_string()
            .contains("not both"));
        let short = GOOD.replace(
            "\"total\": 2598,",
            "\"total\": 2598, \"delivery_code_sha256\": \"abcd\",",
        );
        assert!(parse_order(&short)
            .unwrap_err()
            .to_string()
            .contains("64 hex digits"));
        assert!(parse_order(GOOD).unwrap().delivery_code_sha256.is_empty());
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
