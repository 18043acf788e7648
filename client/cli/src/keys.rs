//! `arbor keys`: make and inspect key files. No server involved.
//!
//! Secret key files are written with mode 0600 (by default under `keys/`,
//! which `.gitignore` covers) and are refused when group or others may read
//! them. `export-public` writes the public half only, which is what an
//! operator needs to enrol the party.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arbor_client::Identity;
use clap::Subcommand;
use serde_json::json;

use super::exit::{fail, usage, Exit};
use super::output::{kv, render, Format, Reply};

/// Where `keys generate` writes when --out is not given.
pub const KEYS_DIR: &str = "keys";

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate a new ed25519 key for a party and write it to a key file
    #[command(
        long_about = "Generate a new ed25519 key for a party and write it to a key file.\n\n\
The file is JSON (party_id, public_key, secret_key), created with mode 0600, by default \
as keys/PARTY.key (the keys/ directory, mode 0700, is in .gitignore); an existing file is \
never overwritten. Keep it to yourself: give the operator the public half only, written by \
`arbor keys export-public`, who enrols the party with `arbor party enroll`.\n\n\
Examples:\n  arbor keys generate --party store-17\n  \
arbor keys generate --party store-17 --out /secure/store-17.key"
    )]
    Generate {
        /// Party id the key signs as (e.g. store-17, meituan, ops-alice)
        #[arg(long, value_name = "ID")]
        party: String,
        /// Key file to create (must not exist) [default: keys/PARTY.key]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write the public half of a key file (party id and public key) for the operator
    #[command(
        long_about = "Write the public half of a key file: its party id and public key, no secret. \
This file is what the operator enrols the party from (`arbor party enroll --public-key-file`); \
it may be shared freely. An existing file is never overwritten.\n\n\
Example:\n  arbor keys export-public keys/store-17.key --out store-17.pub"
    )]
    ExportPublic {
        /// The party's secret key file
        #[arg(value_name = "KEYFILE")]
        file: PathBuf,
        /// Public key file to create [default: KEYFILE with the extension .pub]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show the party id and public key of a key file
    #[command(long_about = "Show the party id and public key of a key file.\n\n\
The file is checked: its public key must match its secret key. The secret is never printed.\n\n\
Example:\n  arbor keys show store-17.key")]
    Show {
        /// Key file to read
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(format: Format, cmd: KeysCmd) -> Result<Reply> {
    match cmd {
        KeysCmd::Generate { party, out } => {
            if party.trim().is_empty() {
                usage!("--party must not be empty");
            }
            let out = match out {
                Some(p) => p,
                None => {
                    if party.contains(['/', '\\']) || party.starts_with('.') {
                        usage!("party id {party:?} cannot name a file under {KEYS_DIR}/: pass --out FILE");
                    }
                    create_keys_dir(Path::new(KEYS_DIR))?;
                    Path::new(KEYS_DIR).join(format!("{party}.key"))
                }
            };
            let id = Identity::generate(&party);
            id.save(&out)?;
            Ok(Reply::new(describe(format, &id, &out)))
        }
        KeysCmd::Show { file } => {
            let id = load_secret(&file)?;
            Ok(Reply::new(describe(format, &id, &file)))
        }
        KeysCmd::ExportPublic { file, out } => {
            let id = load_secret(&file)?;
            let out = out.unwrap_or_else(|| file.with_extension("pub"));
            let text = serde_json::to_string_pretty(&json!({
                "party_id": id.party_id,
                "public_key": id.public_key_hex(),
            }))
            .expect("serializes")
                + "\n";
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            let mut f = opts.open(&out).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("{}: already exists; refusing to overwrite", out.display())
                } else {
                    anyhow::Error::from(e).context(format!("cannot create {}", out.display()))
                }
            })?;
            std::io::Write::write_all(&mut f, text.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            let json = json!({
                "party_id": id.party_id,
                "public_key": id.public_key_hex(),
                "file": out.display().to_string(),
            });
            Ok(Reply::new(render(format, json, || {
                kv(&[
                    ("party", id.party_id.clone()),
                    ("public key", id.public_key_hex()),
                    ("public file", out.display().to_string()),
                    (
                        "next",
                        format!(
                            "the operator enrols it: arbor party enroll --role ROLE --public-key-file {}",
                            out.display()
                        ),
                    ),
                ])
            })))
        }
    }
}

/// `keys/`, mode 0700 on unix.
fn create_keys_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Reads a secret key file, refusing one that group or others may read
/// (on unix): a secret key is for its party alone.
pub fn load_secret(path: &Path) -> Result<Identity> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return fail(
                    Exit::Failure,
                    format!(
                        "key file {} is readable by others (mode {mode:04o}); a secret key must be \
                         private to its owner: chmod 600 {}",
                        path.display(),
                        path.display()
                    ),
                );
            }
        }
    }
    Ok(Identity::load(path)?)
}

fn describe(format: Format, id: &Identity, file: &Path) -> String {
    let json = json!({
        "party_id": id.party_id,
        "public_key": id.public_key_hex(),
        "file": file.display().to_string(),
    });
    render(format, json, || {
        kv(&[
            ("party", id.party_id.clone()),
            ("public key", id.public_key_hex()),
            ("key file", file.display().to_string()),
        ])
    })
}
