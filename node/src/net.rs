//! Connections this replica opens to other replicas' peer ports (raft
//! traffic, checkpoint cosigning, forwarded client requests): one lazily
//! connected tonic channel per member, over mutual TLS (we present our
//! replica certificate and expect `arbor-replica-<id>`), optionally from a
//! fixed local IP (`source-ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_proto::pb::arbor_client::ArborClient;
use arbor_proto::pb::raft_client::RaftClient;
use tonic::transport::{Channel, Endpoint};

use crate::tls::TlsMaterial;

/// The pool of peer channels, shared by the raft network and the API.
#[derive(Clone)]
pub struct Peers {
    /// By replica id: the address the channel connects to, and the channel.
    channels: Arc<Mutex<HashMap<u64, (String, Channel)>>>,
    source_ip: Option<IpAddr>,
    /// `None` only with `insecure-plaintext`.
    tls: Option<TlsMaterial>,
    /// Largest message sent to or accepted from a peer.
    max_message: usize,
}

impl Peers {
    pub fn new(source_ip: Option<IpAddr>, tls: Option<TlsMaterial>, max_message: usize) -> Peers {
        Peers {
            channels: Arc::default(),
            source_ip,
            tls,
            max_message,
        }
    }

    /// The channel to replica `id`'s peer port at `addr`.
    pub fn channel(&self, id: u64, addr: &str) -> Result<Channel, String> {
        // Looked up on every forward and raft client: no allocation when cached.
        let mut map = self.channels.lock().expect("peer map poisoned");
        if let Some((a, c)) = map.get(&id) {
            if a == addr {
                return Ok(c.clone());
            }
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .local_address(self.source_ip);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.peer_client(id))
                .map_err(|e| format!("tls for peer {id} at {addr}: {e}"))?;
        }
        let c = ep.connect_lazy();
        map.insert(id, (addr.to_string(), c.clone()));
        Ok(c)
    }

    pub fn raft(&self, id: u64, addr: &str) -> Result<RaftClient<Channel>, String> {
        Ok(RaftClient::new(self.channel(id, addr)?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    pub fn arbor(&self, id: u64, addr: &str) -> Result<ArborClient<Channel>, String> {
        Ok(ArborClient::new(self.channel(id, addr)?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }
}
