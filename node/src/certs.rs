//! Certificates for a cluster: its CA, each replica's certificate and client
//! certificates (`arbor-node cert ...`, and `arbor-node dev` on first start).
//!
//! Keys are ECDSA P-256 (rcgen with ring). A replica certificate names
//! `arbor-replica-<id>` (what peers check) plus the hosts clients reach it
//! by, and may act as TLS server and client. Private keys are written with
//! mode 0600; nothing is ever overwritten.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::tls::replica_dns_name;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
/// Default validity of replica and client certificates.
pub const DEFAULT_DAYS: u32 = 365;
const CA_DAYS: u32 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists already: refusing to overwrite it")]
    Exists(PathBuf),
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_path_buf())
        } else {
            CertError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that run behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("arbor cluster CA {name}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, CA_DAYS);
    p
}

/// Creates `dir/ca.pem` and `dir/ca.key` (a new CA named after the cluster).
pub fn create_ca(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return Err(CertError::Exists(key_path));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(name).self_signed(&key)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

fn load_issuer(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let cert_path = ca_dir.join(CA_CERT);
    let key_path = ca_dir.join(CA_KEY);
    let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key = KeyPair::from_pem(&key)
        .map_err(|e| CertError::Invalid(format!("{}: {e}", key_path.display())))?;
    Issuer::from_ca_cert_pem(&cert, key)
        .map_err(|e| CertError::Invalid(format!("{}: {e}", cert_path.display())))
}

fn issue(
    ca_dir: &Path,
    common_name: &str,
    sans: Vec<String>,
    server: bool,
    out_dir: &Path,
    stem: &str,
    days: u32,
) -> Result<(PathBuf, PathBuf), CertError> {
    if days == 0 {
        return Err(CertError::Invalid("--days must be > 0".into()));
    }
    let issuer = load_issuer(ca_dir)?;
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let cert_path = out_dir.join(format!("{stem}.pem"));
    let key_path = out_dir.join(format!("{stem}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::Exists(p.clone()));
        }
    }
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Issues `out_dir/replica-<id>.pem` and `.key`: names `arbor-replica-<id>`
/// and every host in `hosts` (IP addresses or DNS names clients use).
pub fn issue_replica(
    ca_dir: &Path,
    id: u64,
    hosts: &[String],
    out_dir: &Path,
    days: u32,
) -> Result<(PathBuf, PathBuf), CertError> {
    if id == 0 {
        return Err(CertError::Invalid("--id must be > 0".into()));
    }
    let mut sans = vec![replica_dns_name(id)];
    sans.extend(hosts.iter().cloned());
    issue(
        ca_dir,
        &replica_dns_name(id),
        sans,
        true,
        out_dir,
        &format!("replica-{id}"),
        days,
    )
}

/// Issues `out_dir/client-<name>.pem` and `.key` (client authentication only).
pub fn issue_client(
    ca_dir: &Path,
    name: &str,
    out_dir: &Path,
    days: u32,
) -> Result<(PathBuf, PathBuf), CertError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(CertError::Invalid(format!(
            "client name {name:?}: use letters, digits, '-', '_' or '.'"
        )));
    }
    issue(
        ca_dir,
        name,
        Vec::new(),
        false,
        out_dir,
        &format!("client-{name}"),
        days,
    )
}

/// The first certificate in a PEM file.
pub fn first_cert_der(pem: &[u8]) -> Option<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path(), "t").unwrap();
        assert!(matches!(
            create_ca(dir.path(), "t"),
            Err(CertError::Exists(_))
        ));
        issue_replica(dir.path(), 1, &[], dir.path(), 1).unwrap();
        assert!(matches!(
            issue_replica(dir.path(), 1, &[], dir.path(), 1),
            Err(CertError::Exists(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("replica-1.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
        assert!(issue_client(dir.path(), "a b", dir.path(), 1).is_err());
        issue_client(dir.path(), "auditor", dir.path(), 1).unwrap();
    }
}
