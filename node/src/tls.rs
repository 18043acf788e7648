//! TLS for both ports.
//!
//! - The **peer port** (raft traffic, checkpoint cosigning, forwarded client
//!   requests) runs mutual TLS: each side presents a certificate issued by the
//!   cluster CA (`tls.ca-file`) and checks the other's. A replica's
//!   certificate names it with the DNS name `arbor-replica-<node id>`
//!   ([`replica_dns_name`]); that name, not the address, is what a caller is
//!   checked against ([`cert_names_replica`]), and what an outgoing peer
//!   connection expects of the server it reaches.
//! - The **client port** serves the same replica certificate (it also names
//!   the hosts clients use); client certificates are optional unless
//!   `tls.client-cert-required`, checked against `tls.client-ca-file` (the
//!   cluster CA when unset).
//!
//! Plaintext on both ports only with `insecure-plaintext`, for experiments:
//! anyone who reaches the peer port can then rewrite the ledger.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::ConfigError;

/// The DNS name a replica's certificate carries, binding it to its node id.
pub fn replica_dns_name(node_id: u64) -> String {
    format!("arbor-replica-{node_id}")
}

/// `[tls]` in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The cluster CA (PEM) that issued every replica's certificate.
    pub ca_file: Option<PathBuf>,
    /// This replica's certificate (PEM; names `arbor-replica-<id>` and the hosts clients use).
    pub cert_file: Option<PathBuf>,
    /// This replica's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA that issues client certificates (default: the cluster CA).
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients that present no certificate from the client CA.
    pub client_cert_required: bool,
}

/// Loaded PEM material, ready for tonic.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Vec<u8>,
    client_cert_required: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::Invalid(format!("tls.{what} {}: cannot read: {e}", path.display()))
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ConfigError::Invalid(format!(
            "tls.{what} {}: not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

impl TlsConfig {
    /// Reads the files; an unset or unreadable one is an error naming the key.
    pub fn load(&self) -> Result<TlsMaterial, ConfigError> {
        let need = |p: &Option<PathBuf>, what: &str| {
            p.clone().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "tls.{what} is not set: replicas talk TLS only (create the cluster CA and \
                     this replica's certificate with `arbor-node cert`, docs/operations.md), or \
                     run with --insecure-plaintext for a throwaway experiment"
                ))
            })
        };
        let ca = read(&need(&self.ca_file, "ca-file")?, "ca-file")?;
        let cert = read(&need(&self.cert_file, "cert-file")?, "cert-file")?;
        let key = read(&need(&self.key_file, "key-file")?, "key-file")?;
        let client_ca = match &self.client_ca_file {
            Some(p) => read(p, "client-ca-file")?,
            None => ca.clone(),
        };
        Ok(TlsMaterial {
            ca,
            cert,
            key,
            client_ca,
            client_cert_required: self.client_cert_required,
        })
    }
}

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl TlsMaterial {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }

    /// The peer port: a certificate from the cluster CA is required.
    pub fn peer_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client port: server authentication; client certificates as configured.
    pub fn client_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.client_ca))
            .client_auth_optional(!self.client_cert_required)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// An outgoing connection to replica `node_id`'s peer port: it must
    /// present `arbor-replica-<node_id>`, and we present our own certificate.
    pub fn peer_client(&self, node_id: u64) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(self.identity())
            .domain_name(replica_dns_name(node_id))
    }
}

/// Whether `cert` (already verified against the cluster CA by the TLS layer)
/// names replica `node_id`.
pub fn cert_names_replica(cert: &CertificateDer<'_>, node_id: u64) -> bool {
    cert_names_any(cert, [node_id])
}

/// Whether `cert` names any of the replicas `node_ids` (parsed once).
pub fn cert_names_any(cert: &CertificateDer<'_>, node_ids: impl IntoIterator<Item = u64>) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    node_ids.into_iter().any(|id| {
        ServerName::try_from(replica_dns_name(id))
            .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&name).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_certificate_names_its_own_id_only() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::create_ca(dir.path(), "test").unwrap();
        let (cert, _) =
            crate::certs::issue_replica(dir.path(), 2, &["127.0.0.1".into()], dir.path(), 30)
                .unwrap();
        let pem = std::fs::read(cert).unwrap();
        let der = crate::certs::first_cert_der(&pem).unwrap();
        assert!(cert_names_replica(&der, 2));
        assert!(!cert_names_replica(&der, 1));
        assert!(!cert_names_replica(&der, 22));
        assert!(cert_names_any(&der, [1, 2, 3]));
        assert!(!cert_names_any(&der, [1, 3]));
    }

    #[test]
    fn missing_files_name_the_key() {
        let err = TlsConfig::default().load().err().unwrap().to_string();
        assert!(err.contains("tls.ca-file"), "{err}");
        let c = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            cert_file: Some("x".into()),
            key_file: Some("y".into()),
            ..TlsConfig::default()
        };
        let err = c.load().err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
