//! `arbor audit serve`: the audit explorer, a local web app for an auditor
//! or an operator.
//!
//! It talks to the cluster over gRPC with the CLI's connection options and
//! verifies on its own side everything it marks verified ([`verify`]): the
//! checkpoint's signatures, each entry's inclusion proof, hash and
//! signature. Pages are rendered on the server with maud (which escapes
//! every interpolated string: party ids, references, notes and statements
//! come from the ledger and are attacker-controlled); the CSS and the one
//! small script of the live tail are compiled into the binary and every
//! response forbids anything else (`Content-Security-Policy`). It has no
//! login, so it listens on loopback unless `--allow-remote`, and answers only
//! requests whose `Host` names its own address (a page elsewhere that
//! rebinds its domain to 127.0.0.1 cannot read it).
//!
//! Routes: `/` the cluster, `/search?q=` an order id, an external
//! reference (`channel/external-id`) or a party, `/order?id=` an order's
//! timeline, custody, prices and disputes, `/node?id=` a party's page,
//! `/tail` the live tail (rows from [`Client::watch`], polled by
//! `tail.js` at `/tail/rows?after=SEQ`; `/tail?upto=SEQ` starts it at SEQ).

mod node;
mod pages;
mod svg;
mod tail;
mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use arbor_client::{code_name, Client, ClientError};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use maud::Markup;
use serde::Deserialize;

use super::output::Reply;
use super::Ctx;
pub(crate) use verify::{cluster_id, Trust};

const CSS: &str = include_str!("assets/style.css");
const TAIL_JS: &str = include_str!("assets/tail.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Args)]
pub struct ServeArgs {
    /// Address to serve the explorer on (use port 0 for any free port; the address is printed)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Allow a non-loopback --listen address and any Host header (the explorer has no login: anyone who can reach it reads the ledger)
    #[arg(long)]
    pub allow_remote: bool,
    /// Ledger entries the live tail keeps in memory and shows
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub tail: u64,
    #[command(flatten)]
    pub trust: crate::audit::TrustArg,
}

/// What every handler shares.
pub(crate) struct Explorer {
    pub client: Client,
    pub trust: Trust,
    pub cluster_id: Option<String>,
    pub tail: tail::Tail,
}

type Shared = Arc<Explorer>;

pub async fn serve(ctx: &Ctx, args: ServeArgs) -> Result<Reply> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        anyhow::bail!(
            "{} is not a loopback address; the explorer has no login, pass --allow-remote to serve it there anyway",
            args.listen
        );
    }
    let trust = match args.trust.load()? {
        Some(t) => Trust::Pinned(Box::new(t)),
        None => {
            eprintln!("warning: {}", crate::audit::UNVERIFIED_CLUSTER);
            Trust::Ledger
        }
    };
    let client = ctx.client().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Explorer {
        tail: tail::Tail::start(client.clone(), args.tail as usize),
        client,
        trust,
        cluster_id: ctx.cluster_id.clone(),
    });
    // Only requests naming this address in `Host` (a page of another site
    // that rebinds its name to 127.0.0.1 names its own).
    let hosts = if args.allow_remote {
        Vec::new()
    } else {
        allowed_hosts(addr)
    };
    let app = router(state).layer(axum::middleware::from_fn_with_state(
        Arc::new(hosts),
        check_host,
    ));
    // The one line a script waits for (tests read the address from it).
    println!("arbor explorer listening on http://{addr}/ (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the explorer")?;
    Ok(Reply::new(String::new()))
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(cluster_page))
        .route("/search", get(search))
        .route("/order", get(order_page))
        .route("/node", get(node_page))
        .route("/tail", get(tail_page))
        .route("/tail/rows", get(tail_rows))
        .route(
            "/assets/style.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/assets/tail.js",
            get(|| async { asset(TAIL_JS, "text/javascript") }),
        )
        .fallback(|| async { error_page(StatusCode::NOT_FOUND, "No such page.") })
        .with_state(state)
}

/// The `Host` values a browser sends for the loopback address `addr`.
fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut v = vec![addr.to_string(), format!("localhost:{port}")];
    if addr.is_ipv4() {
        v.push(format!("127.0.0.1:{port}"));
    } else {
        v.push(format!("[::1]:{port}"));
    }
    v
}

/// Refuses a request whose `Host` is not one of `allowed` (empty: any).
async fn check_host(
    State(allowed): State<Arc<Vec<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        next.run(req).await
    } else {
        error_page(
            StatusCode::FORBIDDEN,
            "This explorer answers only requests for its own loopback address (Host header).",
        )
    }
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    secure(([(header::CONTENT_TYPE, kind)], body).into_response())
}

fn html(status: StatusCode, page: Markup) -> Response {
    secure(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page.into_string(),
        )
            .into_response(),
    )
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html(status, pages::error(status, message))
}

/// A cluster error as a page: 404 for not found, 502 for anything else.
fn cluster_error(what: &str, e: &ClientError) -> Response {
    let status = if is_not_found(e) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    error_page(status, &format!("{what}: {e}"))
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { code, .. } if code_name(*code) == "not found")
}

#[derive(Deserialize)]
struct Id {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
struct Q {
    #[serde(default)]
    q: String,
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: Option<u64>,
}

async fn cluster_page(State(x): State<Shared>) -> Response {
    let status = x.client.cluster_status().await;
    let tc = x.trust.checkpoint(&x.client).await;
    html(StatusCode::OK, pages::cluster(&x.trust, &status, &tc))
}

/// An order id, else an external reference `channel/external-id` (ids may
/// contain `/`, so every split is tried), else a party.
async fn search(State(x): State<Shared>, Query(Q { q }): Query<Q>) -> Response {
    let q = q.trim();
    if q.is_empty() {
        return secure(Redirect::to("/").into_response());
    }
    if x.client.get_order(q).await.is_ok() {
        return secure(Redirect::to(&format!("/order?id={}", pages::enc(q))).into_response());
    }
    for (i, _) in q.match_indices('/') {
        let (channel, ext) = (&q[..i], &q[i + 1..]);
        if channel.is_empty() || ext.is_empty() {
            continue;
        }
        if let Ok(o) = x.client.resolve_ref(channel, ext).await {
            return secure(
                Redirect::to(&format!("/order?id={}", pages::enc(&o.order_id))).into_response(),
            );
        }
    }
    if x.client.get_party(q).await.is_ok() {
        return secure(Redirect::to(&format!("/node?id={}", pages::enc(q))).into_response());
    }
    error_page(
        StatusCode::NOT_FOUND,
        &format!("No order, external reference (channel/external-id) or party is named {q:?}."),
    )
}

async fn order_page(State(x): State<Shared>, Query(Id { id }): Query<Id>) -> Response {
    let order = match x.client.get_order(&id).await {
        Ok(o) => o,
        Err(e) => return cluster_error(&format!("order {id:?}"), &e),
    };
    // Fetched after the order, so it covers every entry of its history.
    let tc = match x.trust.checkpoint(&x.client).await {
        Ok(tc) => tc,
        Err(e) => {
            return error_page(
                StatusCode::BAD_GATEWAY,
                &format!("the checkpoint could not be verified, so nothing can be: {e}"),
            )
        }
    };
    let cluster_id = match verify::cluster_id(&x.client, x.cluster_id.as_deref(), &tc).await {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, &format!("cluster id: {e}")),
    };
    let steps = verify::order_steps(&x.client, &tc, &cluster_id, &order).await;
    let mut previews = Vec::new();
    for d in order.disputes.iter().filter(|d| !d.resolved) {
        previews.push((
            d.seq,
            x.client
                .preview_ruling(&order.order_id, d.seq)
                .await
                .map_err(|e| e.to_string()),
        ));
    }
    html(
        StatusCode::OK,
        pages::order(&x.trust, &tc, &order, &steps, &previews, now_ms()),
    )
}

async fn node_page(State(x): State<Shared>, Query(Id { id }): Query<Id>) -> Response {
    let party = match x.client.get_party(&id).await {
        Ok(p) => p,
        Err(e) => return cluster_error(&format!("party {id:?}"), &e),
    };
    let page = node::gather(&x.client, party).await;
    html(StatusCode::OK, pages::node(&page))
}

#[derive(Deserialize)]
struct Upto {
    #[serde(default)]
    upto: Option<u64>,
}

/// The tail; `?upto=SEQ` renders it as of entry SEQ, the script then
/// fetches everything newer (how the browser test checks the script).
async fn tail_page(State(x): State<Shared>, Query(Upto { upto }): Query<Upto>) -> Response {
    let (mut rows, error) = x.tail.snapshot(None);
    if let Some(u) = upto {
        rows.retain(|r| r.seq <= u);
    }
    html(StatusCode::OK, pages::tail(&rows, error.as_deref()))
}

async fn tail_rows(State(x): State<Shared>, Query(After { after }): Query<After>) -> Response {
    let (rows, _) = x.tail.snapshot(after);
    html(StatusCode::OK, pages::tail_rows(&rows))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn a_non_loopback_address_needs_allow_remote() {
        let cli = crate::Cli::try_parse_from(["arbor", "audit", "serve", "--listen", "0.0.0.0:0"])
            .expect("parses");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt.block_on(crate::run(cli)).err().expect("refused");
        assert!(err.to_string().contains("--allow-remote"), "{err}");
    }
}
