//! Endpoint lists: `host:port` (or with `https://` / `http://` matching the
//! transport), comma-separated or not.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::transport::Transport;

/// How long to wait for a TCP connection before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Splits, trims and checks a list of endpoints. Each string may itself be a
/// comma-separated list; empty items are skipped. Returns the endpoints as
/// written (without an added scheme). Errors if nothing is left or one is invalid.
pub fn parse_endpoints(list: &[String]) -> Result<Vec<String>, ClientError> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        check(item)?;
        if !out.iter().any(|e: &String| key(e) == key(item)) {
            out.push(item.to_string());
        }
    }
    if out.is_empty() {
        return Err(ClientError::InvalidInput("no endpoints given".into()));
    }
    Ok(out)
}

/// An endpoint without its scheme: what identifies a replica (leader hints
/// name `host:port`).
pub(crate) fn key(endpoint: &str) -> &str {
    endpoint
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(endpoint)
}

/// Checks the shape of an endpoint (any transport).
fn check(addr: &str) -> Result<(), ClientError> {
    let scheme = addr.split_once("://").map(|(s, _)| s).unwrap_or("https");
    endpoint_with(addr, scheme).map(|_| ())
}

/// A configured (not yet connected) tonic endpoint for `transport`.
pub(crate) fn endpoint(addr: &str, transport: &Transport) -> Result<Endpoint, ClientError> {
    let ep = endpoint_with(addr, transport.scheme())?;
    match transport {
        Transport::Tls(t) => ep
            .tls_config(t.config())
            .map_err(|e| ClientError::InvalidInput(format!("invalid endpoint {addr:?}: tls: {e}"))),
        Transport::InsecurePlaintext => Ok(ep),
    }
}

fn endpoint_with(addr: &str, scheme: &str) -> Result<Endpoint, ClientError> {
    let invalid =
        |why: String| ClientError::InvalidInput(format!("invalid endpoint {addr:?}: {why}"));
    if let Some((written, _)) = addr.split_once("://") {
        if written != "http" && written != "https" {
            return Err(invalid(format!(
                "scheme {written:?} is not supported, use host:port"
            )));
        }
        if written != scheme {
            return Err(invalid(format!(
                "{written}:// does not match the transport ({scheme}): write host:port"
            )));
        }
    }
    let u = format!("{scheme}://{}", key(addr));
    let ep = Endpoint::from_shared(u.clone()).map_err(|e| invalid(e.to_string()))?;
    let parsed = ep.uri();
    if parsed.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    if parsed.port_u16().is_none() {
        return Err(invalid("no port".into()));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid("a path is not allowed".into()));
    }
    Ok(ep
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// A lazily connecting channel: no I/O until the first call.
pub(crate) fn lazy_channel(addr: &str, transport: &Transport) -> Result<Channel, ClientError> {
    Ok(endpoint(addr, transport)?.connect_lazy())
}

/// A lazily connecting channel to one replica, for raw generated clients
/// (`arbor_proto::pb::arbor_client::ArborClient::new(channel)`).
pub fn channel(addr: &str, transport: &Transport) -> Result<Channel, ClientError> {
    lazy_channel(addr, transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn accepts_plain_and_http_and_comma_lists() {
        let got = parse_endpoints(&s(&[
            "127.0.0.1:7101, 127.0.0.1:7102,",
            "http://localhost:7103",
        ]))
        .unwrap();
        assert_eq!(
            got,
            s(&["127.0.0.1:7101", "127.0.0.1:7102", "http://localhost:7103"])
        );
        assert_eq!(key("127.0.0.1:7101"), "127.0.0.1:7101");
        assert_eq!(key("http://h:1"), "h:1");
    }

    #[test]
    fn drops_duplicates() {
        let got = parse_endpoints(&s(&["a:1,http://a:1,a:1"])).unwrap();
        assert_eq!(got, s(&["a:1"]));
    }

    #[test]
    fn refuses_empty_and_malformed() {
        for bad in [vec![], s(&[""]), s(&[" , ,"])] {
            let err = parse_endpoints(&bad).unwrap_err();
            assert!(matches!(err, ClientError::InvalidInput(_)));
            assert_eq!(err.to_string(), "no endpoints given");
        }
        for bad in [
            "127.0.0.1",
            "ftp://h:1",
            "h:1/x",
            "h:notaport",
            "a b:1",
            ":1",
        ] {
            let err = parse_endpoints(&s(&[bad])).unwrap_err();
            assert!(matches!(err, ClientError::InvalidInput(_)), "{bad}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
