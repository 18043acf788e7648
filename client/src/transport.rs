//! How the client reaches replicas: TLS (the default and the only choice a
//! real cluster offers) or, for clusters started with `--insecure-plaintext`,
//! plaintext.
//!
//! TLS checks the replica's certificate against the cluster CA
//! (`--cacert` / `ARBOR_CACERT`) and the address's host (an IP address or a
//! DNS name the replica's certificate names); a client certificate
//! (`--tls-cert` / `--tls-key`) is presented when the cluster requires one.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::ClientError;

/// Transport settings shared by every channel of a [`crate::Client`].
#[derive(Clone, Debug)]
pub enum Transport {
    Tls(TlsOptions),
    /// No TLS: only for clusters run with `--insecure-plaintext`.
    InsecurePlaintext,
}

/// PEM material for TLS.
#[derive(Clone)]
pub struct TlsOptions {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("client_cert", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    let bytes = std::fs::read(path).map_err(|source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ClientError::InvalidInput(format!(
            "{what} {} is not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

impl TlsOptions {
    /// Trusts the CA certificate(s) in `ca_pem`.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> TlsOptions {
        TlsOptions {
            ca: ca_pem.into(),
            identity: None,
            domain: None,
        }
    }

    /// Reads the CA and, when both are given, a client certificate and key.
    pub fn from_files(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsOptions, ClientError> {
        let mut t = TlsOptions::new(read_pem(ca, "CA certificate")?);
        match (cert, key) {
            (Some(c), Some(k)) => {
                t = t.with_client_cert(
                    read_pem(c, "client certificate")?,
                    read_pem(k, "client key")?,
                );
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::InvalidInput(
                    "a client certificate needs both --tls-cert and --tls-key".into(),
                ))
            }
        }
        Ok(t)
    }

    /// Presents this certificate and key to replicas that ask for one.
    pub fn with_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> TlsOptions {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Expects this name in every replica's certificate instead of the address's host.
    pub fn with_domain(mut self, domain: impl Into<String>) -> TlsOptions {
        self.domain = Some(domain.into());
        self
    }

    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}

impl Transport {
    /// The transport the CLI and examples configure: TLS with the CA at
    /// `cacert` (and an optional client certificate), or plaintext when
    /// `insecure_plaintext`. Neither is an error naming both options.
    pub fn from_options(
        cacert: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        insecure_plaintext: bool,
    ) -> Result<Transport, ClientError> {
        match (cacert, insecure_plaintext) {
            (Some(_), true) => Err(ClientError::InvalidInput(
                "--cacert and --insecure-plaintext exclude each other".into(),
            )),
            (Some(ca), false) => Ok(Transport::Tls(TlsOptions::from_files(ca, cert, key)?)),
            (None, true) => Ok(Transport::InsecurePlaintext),
            (None, false) => Err(ClientError::InvalidInput(
                "no CA certificate to check replicas against: set --cacert FILE or ARBOR_CACERT \
                 (arbor-node dev writes it to arbor-data/dev.env), or --insecure-plaintext for a \
                 cluster run without TLS"
                    .into(),
            )),
        }
    }

    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Transport::Tls(_) => "https",
            Transport::InsecurePlaintext => "http",
        }
    }
}
