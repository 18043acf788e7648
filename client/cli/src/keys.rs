//! `arbor keys`: make and inspect key files. No server involved.

use std::path::{Path, PathBuf};

use anyhow::Result;
use arbor_client::Identity;
use clap::Subcommand;
use serde_json::json;

use super::output::{kv, render, Format, Reply};

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate a new ed25519 key for a party and write it to a key file
    #[command(
        long_about = "Generate a new ed25519 key for a party and write it to a key file.\n\n\
The file is JSON (party_id, public_key, secret_key), created with mode 0600; an \
existing file is never overwritten. Give the public key (or the file) to an \
operator, who enrols the party with `arbor party enroll`.\n\n\
Example:\n  arbor keys generate --party store-17 --out store-17.key"
    )]
    Generate {
        /// Party id the key signs as (e.g. store-17, meituan, ops-alice)
        #[arg(long, value_name = "ID")]
        party: String,
        /// Key file to create (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
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
                crate::exit::usage!("--party must not be empty");
            }
            let id = Identity::generate(&party);
            id.save(&out)?;
            Ok(Reply::new(describe(format, &id, &out)))
        }
        KeysCmd::Show { file } => {
            let id = Identity::load(&file)?;
            Ok(Reply::new(describe(format, &id, &file)))
        }
    }
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
