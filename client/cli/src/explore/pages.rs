//! The explorer's pages, rendered with maud. Every `(expr)` is escaped;
//! `PreEscaped` appears nowhere, so nothing read from the ledger can become
//! markup.

use arbor_client::audit::TrustedCheckpoint;
use arbor_client::pb;
use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};
use pb::command::Body;

use super::node::NodePage;
use super::svg::{custody_bar, is_carrier};
use super::tail::Row;
use super::Trust;
use crate::output::utc;
use crate::trace::{custody, describe, interval_proofs_ok, Step};

/// Percent-encodes `s` for a query string (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn order_link(id: &str) -> Markup {
    html! { a.order href=(format!("/order?id={}", enc(id))) { (id) } }
}

fn party_link(id: &str) -> Markup {
    if id.is_empty() || id == "-" || id == "?" {
        return html! { span.muted { "-" } };
    }
    html! { a.party href=(format!("/node?id={}", enc(id))) { (id) } }
}

fn seq_link(seq: u64) -> Markup {
    html! { a.seq href=(format!("#e{seq}")) { "seq " (seq) } }
}

fn ok_mark(ok: bool, yes: &str, no: &str) -> Markup {
    html! {
        @if ok { span.ok { "✔ " (yes) } } @else { span.bad { "✘ " (no) } }
    }
}

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · arbor explorer" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                header {
                    a.brand href="/" { "arbor explorer" }
                    nav {
                        a href="/" { "Cluster" }
                        a href="/tail" { "Live tail" }
                    }
                    form action="/search" method="get" {
                        input type="search" name="q" placeholder="order id, channel/external-id or party" aria-label="search";
                        button type="submit" { "Search" }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn error(status: StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("error"),
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (message) }
            p { a href="/" { "Back to the cluster" } }
        },
    )
}

fn checkpoint_box(trust: &Trust, tc: &Result<TrustedCheckpoint, String>) -> Markup {
    html! {
        section.checkpoint {
            h2 { "Latest checkpoint" }
            @match tc {
                Ok(tc) => {
                    p #checkpoint-status { (ok_mark(true, "verified", "")) }
                    table.kv {
                        tr { th { "origin" } td { (tc.checkpoint.origin) } }
                        tr { th { "size" } td { (tc.checkpoint.size) " entries" } }
                        tr { th { "root" } td.hash { (hex::encode(tc.checkpoint.root)) } }
                        tr { th { "time" } td { (utc(tc.checkpoint.time_ms)) } }
                        tr { th { "cosigned by" } td { (tc.signed_by.join(", ")) " (quorum " (tc.quorum) " of " (tc.keys.len()) " replica keys)" } }
                        tr { th { "trust" } td.muted { (trust.describe()) } }
                    }
                }
                Err(e) => {
                    p #checkpoint-status { (ok_mark(false, "", "NOT verified")) }
                    p.error { (e) }
                }
            }
        }
    }
}

pub fn cluster(
    trust: &Trust,
    status: &Result<pb::ClusterStatusReply, arbor_client::ClientError>,
    tc: &Result<TrustedCheckpoint, String>,
) -> Markup {
    layout(
        "Cluster",
        html! {
            h1 { "Cluster" }
            @match status {
                Ok(s) => {
                    p { "Leader: " strong #leader { "replica " (s.leader_id) } ", term " (s.term) }
                    table.list #members {
                        thead { tr { th { "replica" } th { "client address" } th { "voter" } th { "state" } th { "head" } th { "applied" } } }
                        tbody {
                            @for m in &s.members {
                                @let r = s.replicas.iter().find(|r| r.node_id == m.node_id);
                                tr data-node-id=(m.node_id) {
                                    td { (m.node_id) @if m.node_id == s.leader_id { " (leader)" } }
                                    td { (m.addr) }
                                    td { @if m.voter { "voter" } @else { "learner" } }
                                    td { @match r { Some(r) => (r.state), None => span.bad { "unreachable" } } }
                                    td { @if let Some(r) = r { "seq " (r.head_seq) } }
                                    td { @if let Some(r) = r { (r.last_applied) } }
                                }
                            }
                        }
                    }
                    @for u in &s.unreachable { p.error { "unreachable: " (u) } }
                    @if let Some(id) = s.replicas.iter().map(|r| r.cluster_id.as_str()).find(|c| !c.is_empty()) {
                        p.muted { "cluster id " (id) }
                    }
                }
                Err(e) => { p.error { "cluster status: " (e) } }
            }
            (checkpoint_box(trust, tc))
        },
    )
}

/// The price versions an order went through: the registration (version 1)
/// and every accepted amendment.
fn price_versions(steps: &[Step]) -> Vec<(u64, i64, String, u64, u64)> {
    let mut out = Vec::new();
    for s in steps.iter().filter(|s| s.accepted()) {
        match &s.body {
            Some(Body::RegisterOrder(r)) => {
                out.push((1, r.total, "registered".to_string(), s.seq, s.time_ms()))
            }
            Some(Body::AmendPrice(a)) => out.push((
                a.base_version + 1,
                a.total,
                a.reason.clone(),
                s.seq,
                s.time_ms(),
            )),
            _ => {}
        }
    }
    out
}

fn statement_of(steps: &[Step], seq: u64) -> Option<&str> {
    steps
        .iter()
        .find(|s| s.seq == seq)
        .and_then(|s| match &s.body {
            Some(Body::OpenDispute(d)) => Some(d.statement.as_str()),
            _ => None,
        })
}

fn evidence(steps: &[Step], seqs: &[u64]) -> Markup {
    html! {
        ul.evidence {
            @for seq in seqs {
                @match steps.iter().find(|s| s.seq == *seq) {
                    Some(s) => li data-evidence-seq=(seq) {
                        (seq_link(*seq)) " " (utc(s.time_ms())) " — " (describe(s, steps).0) " "
                        (ok_mark(s.proof_ok(), "proof verified", "proof FAILED"))
                    },
                    None => li data-evidence-seq=(seq) { "seq " (seq) " (not in this order's history)" },
                }
            }
        }
    }
}

fn ruling(r: &pb::Ruling, steps: &[Step]) -> Markup {
    html! {
        p { strong.liable { @if r.liable.is_empty() { "nobody" } @else { (party_link(&r.liable)) } }
            " liable by rule " code { (r.rule) } }
        @if !r.explanation.is_empty() { p.explanation { (r.explanation) } }
        p { "Evidence:" }
        (evidence(steps, &r.evidence))
    }
}

pub fn order(
    trust: &Trust,
    tc: &TrustedCheckpoint,
    order: &pb::OrderView,
    steps: &[Step],
    previews: &[(u64, Result<pb::Ruling, String>)],
    now_ms: u64,
) -> Markup {
    let intervals = custody(order, steps);
    let proofs = steps.iter().filter(|s| s.proof_ok()).count();
    let sigs = steps.iter().filter(|s| s.signature.ok()).count();
    let all = proofs == steps.len() && sigs == steps.len();
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    layout(
        &format!("Order {}", order.order_id),
        html! {
            h1 { "Order " span #order-id { (order.order_id) } }
            p #order-verified data-verified=(all) {
                @if all {
                    (ok_mark(true, &format!("verified: all {} entries proven in the checkpoint of size {}, every signature checked", steps.len(), tc.checkpoint.size), ""))
                } @else {
                    (ok_mark(false, "", &format!("NOT verified: {proofs} of {} proofs and {sigs} signatures verified", steps.len())))
                }
            }
            table.kv {
                tr { th { "status" } td { (order.status) } }
                tr { th { "owner" } td { (party_link(&order.owner)) } }
                tr { th { "custodian" } td { (party_link(&order.custodian)) } }
                tr { th { "total" } td { (order.total) " " (order.currency) " (price version " (order.price_version) ")" } }
                tr { th { "destination" } td { (order.destination_region) } }
                tr { th { "registered by" } td { (party_link(&order.registered_by)) " at " (seq_link(order.registered_seq)) } }
                tr { th { "external references" } td {
                    @for (i, x) in order.external_refs.iter().enumerate() {
                        @if i > 0 { ", " }
                        span.ref { (x.channel) "/" (x.external_id) }
                    }
                } }
                @if !order.carrier.is_empty() {
                    tr { th { "carrier" } td { (party_link(&order.carrier)) ", tracking " (dash(&order.tracking_id)) } }
                }
                @if order.lease_deadline_ms != 0 {
                    tr { th { "lease deadline" } td { (utc(order.lease_deadline_ms)) @if order.lease_lapsed { " (passed)" } } }
                }
            }

            section #custody {
                h2 { "Custody" }
                (custody_bar(&intervals, now_ms))
                table.list {
                    thead { tr { th { "holder" } th { "from" } th { "to" } th { "began" } th { "ended" } th { "proofs" } } }
                    tbody {
                        @for i in &intervals {
                            tr.custody-interval data-holder=(i.holder) data-from-seq=(i.from_seq)
                                data-to-seq=(i.to.map(|t| t.0.to_string()).unwrap_or_else(|| "open".into()))
                                data-carrier=(is_carrier(i)) {
                                td { (party_link(&i.holder)) @if is_carrier(i) { " " span.tag { "carrier window" } } }
                                td { (utc(i.from_ms)) " " (seq_link(i.from_seq)) }
                                td { @match i.to { Some((seq, ms)) => { (utc(ms)) " " (seq_link(seq)) }, None => "still held" } }
                                td { (i.started_by) }
                                td { (i.ended_by) @for n in &i.notes { br; span.muted { (n) } } }
                                td { (ok_mark(interval_proofs_ok(i, steps), "verified", "FAILED")) }
                            }
                        }
                    }
                }
            }

            section #prices {
                h2 { "Price versions" }
                table.list {
                    thead { tr { th { "version" } th { "total" } th { "reason" } th { "entry" } th { "time" } } }
                    tbody {
                        @for (v, total, reason, seq, ms) in price_versions(steps) {
                            tr data-price-version=(v) { td { (v) } td { (total) " " (order.currency) } td { (reason) } td { (seq_link(seq)) } td { (utc(ms)) } }
                        }
                    }
                }
            }

            section #disputes {
                h2 { "Disputes" }
                @if order.disputes.is_empty() { p.muted { "No dispute on this order." } }
                @for d in &order.disputes {
                    article.dispute data-dispute-seq=(d.seq) data-resolved=(d.resolved) {
                        h3 { (d.kind) " dispute opened by " (party_link(&d.opened_by)) " at " (seq_link(d.seq)) }
                        p { "Incident at " (utc(d.incident_ms)) }
                        @if let Some(st) = statement_of(steps, d.seq).filter(|s| !s.is_empty()) {
                            blockquote.statement { (st) }
                        }
                        @match (&d.ruling, d.resolved) {
                            (Some(r), true) => {
                                p { span.tag.ok { "resolved" } " ruling recorded at " (seq_link(r.resolved_seq)) }
                                (ruling(r, steps))
                            }
                            _ => {
                                p { span.tag { "open" } " the rules compute now (preview, not recorded):" }
                                @match previews.iter().find(|p| p.0 == d.seq).map(|p| &p.1) {
                                    Some(Ok(r)) => (ruling(r, steps)),
                                    Some(Err(e)) => p.error { (e) },
                                    None => p.muted { "no preview" },
                                }
                                p.muted { "Resolve with: arbor audit dispute " (order.order_id) " --dispute " (d.seq) " --resolve --key AUDITOR.key" }
                            }
                        }
                    }
                }
            }

            section #timeline {
                h2 { "Timeline" }
                table.list {
                    thead { tr { th { "seq" } th { "time (UTC)" } th { "signer" } th { "command" } th { "outcome" } th { "proof" } th { "signature" } } }
                    tbody {
                        @for s in steps {
                            tr.entry id=(format!("e{}", s.seq)) data-seq=(s.seq) data-proof=(if s.proof_ok() { "verified" } else { "failed" })
                                data-signature=(if s.signature.ok() { "verified" } else { "failed" }) {
                                td { (s.seq) }
                                td.time { (utc(s.time_ms())) }
                                td { (party_link(&s.signer)) }
                                td { code { (s.kind) } br; (describe(s, steps).0)
                                    @if let Some(l) = s.lapse() { br; span.tag { "lapse" } " " (l) } }
                                td { @if s.accepted() { span.ok { "accepted" } } @else { span.bad { (s.outcome()) } } }
                                td { @match &s.proof { Ok(()) => span.ok { "✔ verified" }, Err(e) => span.bad { "✘ " (e) } } }
                                td { @if s.signature.ok() { span.ok { "✔ " (s.signature.text()) } } @else { span.bad { "✘ " (s.signature.text()) } } }
                            }
                        }
                    }
                }
                @if let Some(e) = steps.first().and_then(|s| s.entry.as_ref()) {
                    p.muted { "Hashes: first entry " span.hash { (hex::encode(e.hash)) } }
                }
            }
            (checkpoint_box(trust, &Ok(tc.clone())))
        },
    )
}

pub fn node(p: &NodePage) -> Markup {
    let party = &p.party;
    let name = |n: &str, prefix: &str| n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase();
    let role = pb::Role::try_from(party.role)
        .map(|r| name(r.as_str_name(), "ROLE_"))
        .unwrap_or_else(|_| "unknown".into());
    let kind = pb::NodeKind::try_from(party.kind)
        .map(|k| name(k.as_str_name(), "NODE_KIND_"))
        .unwrap_or_else(|_| "unknown".into());
    layout(
        &format!("Party {}", party.party_id),
        html! {
            h1 { "Party " span #party-id { (party.party_id) } }
            table.kv {
                tr { th { "role" } td { (role) } }
                tr { th { "kind" } td { (kind) } }
                tr { th { "enrolled at" } td { "seq " (party.enrolled_seq) } }
                tr { th { "key set at" } td { "seq " (party.key_seq) } }
                tr { th { "public key" } td.hash { (hex::encode(&party.public_key)) } }
                tr { th { "revoked" } td { @if party.revoked { span.bad { "revoked" } } @else { "no" } } }
            }
            @match &p.stats {
                Ok(s) => {
                    section #counters {
                        h2 { "Counters" }
                        table.kv {
                            tr { th { "open orders" } td { (s.open_orders) " of capacity " (s.capacity) } }
                            tr { th { "claims" } td { (s.claims) } }
                            tr { th { "releases" } td { (s.releases) } }
                            tr { th { "lapses" } td data-counter="lapses" { (s.lapses) } }
                            tr { th { "handoffs out / in" } td { (s.handoffs_out) " / " (s.handoffs_in) } }
                            tr { th { "shipped" } td { (s.shipped) } }
                            tr { th { "late shipments" } td data-counter="late_shipments" { (s.late_shipments) } }
                            tr { th { "delivered" } td { (s.delivered) } }
                            tr { th { "profile version" } td { (s.profile_version) } }
                        }
                    }
                }
                Err(e) => { p.muted { "No counters: " (e) } }
            }
            section #profiles {
                h2 { "Profile versions" }
                @if p.versions.is_empty() { p.muted { "No profile published (in the entries scanned)." } }
                table.list {
                    thead { tr { th { "version" } th { "entry" } th { "time" } th { "regions" } th { "capacity" } th { "dispatch time" } th { "handles" } } }
                    tbody {
                        @for v in p.versions.iter().rev() {
                            @let f = &v.profile;
                            tr data-profile-version=(v.version) {
                                td { (v.version) @if p.profile.as_ref().is_some_and(|c| c.published_seq == v.seq) { " " span.tag.ok { "in force" } } }
                                td { "seq " (v.seq) }
                                td { (utc(v.time_ms)) }
                                td { (f.regions.join(", ")) }
                                td { (f.max_open_orders) }
                                td { (f.dispatch_time_ms / 60_000) " min" }
                                td { @if f.handles_returns { "returns " } @if f.cold_chain { "cold chain " } @if f.hazmat { "hazmat " } (f.categories.join(", ")) }
                            }
                        }
                    }
                }
            }
            section #lapses {
                h2 { "Lapses" }
                @if p.lapses.is_empty() { p.muted { "No lease of this party lapsed (in the entries scanned)." } }
                ul { @for l in &p.lapses {
                    li data-lapse-seq=(l.seq) { (utc(l.time_ms)) " order " (order_link(&l.order_id)) ": lease since seq " (l.note.since_seq)
                        " lapsed at " (utc(l.note.deadline_ms)) ", recorded at seq " (l.seq) }
                } }
            }
            section #shipments {
                h2 { "Shipments" }
                table.list {
                    thead { tr { th { "entry" } th { "time" } th { "order" } th { "carrier" } th { "lease from" } th { "late" } } }
                    tbody {
                        @for s in &p.shipments {
                            tr data-shipment-seq=(s.seq) data-late=(s.late_by_ms().is_some()) {
                                td { "seq " (s.seq) }
                                td { (utc(s.time_ms)) }
                                td { (order_link(&s.order_id)) }
                                td { (party_link(&s.carrier)) }
                                td { @if let Some((seq, ms, _)) = s.lease { (utc(ms)) " (seq " (seq) ")" } }
                                td { @match s.late_by_ms() { Some(d) => span.bad { "late by " (d / 1000) " s" }, None => "on time" } }
                            }
                        }
                    }
                }
            }
            p.muted { "Profile versions, lapses and shipments read from ledger entries " (p.scanned.0) "–" (p.scanned.1)
                ", each entry's hash and link checked." }
            @if let Some(e) = &p.scan_error { p.error { (e) } }
        },
    )
}

pub fn tail_rows(rows: &[Row]) -> Markup {
    html! {
        @for r in rows {
            tr data-seq=(r.seq) class=(if r.accepted { "accepted" } else { "rejected" }) {
                td { (r.seq) }
                td.time { (utc(r.time_ms)) }
                td { @if r.order_id.is_empty() { span.muted { "-" } } @else { (order_link(&r.order_id)) } }
                td { (party_link(&r.signer)) }
                td { code { (r.kind) } }
                td { (r.code) @if !r.message.is_empty() { br; span.muted { (r.message) } } }
                td.hash { (&r.hash[..16.min(r.hash.len())]) }
            }
        }
    }
}

pub fn tail(rows: &[Row], error: Option<&str>) -> Markup {
    layout(
        "Live tail",
        html! {
            h1 { "Live tail" }
            p.muted { "Newest first. Entries come from the ledger's watch feed, each hash and link to the previous entry checked; open an order for inclusion proofs. "
                span #tail-state { "live" } }
            noscript { p { "Without JavaScript, reload the page for new entries." } }
            @if let Some(e) = error { p.error { (e) } }
            table.list {
                thead { tr { th { "seq" } th { "time (UTC)" } th { "order" } th { "signer" } th { "command" } th { "outcome" } th { "hash" } } }
                tbody #tail-rows { (tail_rows(rows)) }
            }
            script src="/assets/tail.js" {}
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(enc("o-1.a_b~"), "o-1.a_b~");
        assert_eq!(enc("shop/ext 1&x=<"), "shop%2Fext%201%26x%3D%3C");
    }

    #[test]
    fn ledger_strings_render_inert() {
        let evil = "<script>document.title='owned'</script>";
        let rows = vec![Row {
            seq: 7,
            time_ms: 1,
            order_id: format!("o\"><img src=x onerror=alert(1)>{evil}"),
            signer: evil.into(),
            kind: "claim_order".into(),
            accepted: false,
            code: "already_owned".into(),
            message: evil.into(),
            hash: "ab".repeat(32),
        }];
        let page = tail(&rows, Some(evil)).into_string();
        assert!(!page.contains("<script>document"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;document.title="), "{page}");
        // The only script is the compiled-in asset.
        assert_eq!(page.matches("<script").count(), 1, "{page}");

        let page = error(StatusCode::NOT_FOUND, evil).into_string();
        assert!(!page.contains("<script>"), "{page}");
    }
}
