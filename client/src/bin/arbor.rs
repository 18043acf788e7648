//! `arbor`: the command line client. Argument parsing, the runtime, printing
//! and exit codes live here; the commands are in `src/cli/`.

#[path = "../cli/mod.rs"]
mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(1)
                }
                _ => fail(&cli::clap_error_line(&e)),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(cli::run(args)) {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`arbor ledger entries | head`) is not an error.
            let _ = out
                .write_all(reply.text.as_bytes())
                .and_then(|_| out.flush());
            if let Some(e) = &reply.failed {
                fail(e)
            } else if reply.rejected {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&chain(&e)),
    }
}

/// The error and its causes joined by `: `, skipping causes already in the text
/// (library errors often print their source too).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}

/// Prints one `error:` line on stderr and exits with code 1.
fn fail(msg: &str) -> ExitCode {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {line}");
    ExitCode::from(1)
}
