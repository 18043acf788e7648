//! Connections this replica opens to other replicas (raft traffic, forwarded
//! requests, checkpoint cosigning): one lazily connected tonic channel per
//! address, optionally from a fixed local IP (`source-ip`).

use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A lazily connecting channel to the replica at `addr` (HOST:PORT).
pub fn peer_channel(addr: &str, source_ip: Option<IpAddr>) -> Result<Channel, String> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .local_address(source_ip)
        .connect_lazy())
}
