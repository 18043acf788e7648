//! Who may speak on the peer port, and what a peer may claim.
//!
//! The TLS layer has already checked the caller's certificate chains to the
//! cluster CA. Here (before a request body is decoded, as a tonic
//! interceptor) the certificate must name a current member or learner
//! (`arbor-replica-<id>`); a replica that has no membership yet (a fresh one
//! waiting to be added) accepts any replica certificate of the CA. Each raft
//! call is then checked against the id it claims: a vote or an append names
//! its sender, and that must be the certificate's replica.
//!
//! Refusals are logged (at most once a second) and change nothing.

use super::status;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use rustls_pki_types::CertificateDer;
use tonic::{Request, Status};
use tracing::warn;

use super::client_api::now_ms;
use crate::tls::{cert_names_any, cert_names_replica};
use crate::types::NodeId;
use crate::Raft;

#[derive(Clone)]
pub struct PeerAuth {
    raft: Raft,
    /// False only with `insecure-plaintext`: nobody is authenticated.
    tls: bool,
    last_warn_ms: Arc<AtomicU64>,
}

impl PeerAuth {
    pub fn new(raft: Raft, tls: bool) -> PeerAuth {
        PeerAuth {
            raft,
            tls,
            last_warn_ms: Arc::default(),
        }
    }

    fn refuse(&self, status: Status, peer: Option<std::net::SocketAddr>) -> Status {
        let now = now_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(peer = ?peer, code = ?status.code(), reason = status.message(), "peer request refused");
        }
        status
    }

    /// The caller's certificate chain (its first entry is the caller's own);
    /// `None` without TLS.
    fn certs<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Option<Arc<Vec<CertificateDer<'static>>>>, Status> {
        if !self.tls {
            return Ok(None);
        }
        match req.peer_certs().filter(|c| !c.is_empty()) {
            Some(c) => Ok(Some(c)),
            None => Err(self.refuse(
                status::unauthenticated("the peer port needs a replica certificate"),
                req.remote_addr(),
            )),
        }
    }

    /// Refuses a caller whose certificate names no current member.
    pub fn member<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(certs) = self.certs(req)? else {
            return Ok(());
        };
        let ids: Vec<NodeId> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        if ids.is_empty() {
            // Not yet part of a cluster: any replica of this CA may add us.
            return Ok(());
        }
        if cert_names_any(&certs[0], ids) {
            return Ok(());
        }
        Err(self.refuse(
            status::permission_denied(
                "the caller's certificate does not name a current member of this cluster",
            ),
            req.remote_addr(),
        ))
    }

    /// Refuses a raft message whose claimed sender is not the certificate's replica.
    pub fn claims<T>(&self, req: &Request<T>, claimed: NodeId) -> Result<(), Status> {
        let Some(certs) = self.certs(req)? else {
            return Ok(());
        };
        if cert_names_replica(&certs[0], claimed) {
            return Ok(());
        }
        Err(self.refuse(
            status::permission_denied(format!(
                "the message claims to come from replica {claimed}, the caller's certificate does not name it"
            )),
            req.remote_addr(),
        ))
    }

    /// Logs and returns a refusal of a message that cannot be right.
    pub fn implausible<T>(&self, req: &Request<T>, why: String) -> Status {
        self.refuse(status::invalid(why), req.remote_addr())
    }
}
