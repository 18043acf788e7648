//! Rendering: aligned plain-text tables for people, JSON for scripts.

use arbor_client::pb;
use serde_json::{json, Value};

use crate::exit::Exit;

/// What a command prints, already rendered in the chosen format.
pub struct Reply {
    pub text: String,
    /// The cluster recorded the command as rejected: exit code 2.
    pub rejected: bool,
    /// Printed after `text` as the one-line error, exit code 1 unless `exit`
    /// says otherwise (a check that failed after its report was made, e.g. a
    /// proof in `arbor audit trace`).
    pub failed: Option<String>,
    /// The exit code, when not the one `rejected`/`failed` imply (see
    /// [`crate::exit`]): e.g. 6 for a dry run predicting a rejection.
    pub exit: Option<Exit>,
    /// The entry's seq when a submitted command was accepted.
    pub accepted_seq: Option<u64>,
    /// Printed after `text` as a `warning:` line, exit code 7: an audit
    /// result that shows internal consistency only (no pinned trust).
    pub unverified: Option<String>,
}

impl Reply {
    pub fn new(text: String) -> Reply {
        Reply {
            text,
            rejected: false,
            failed: None,
            exit: None,
            accepted_seq: None,
            unverified: None,
        }
    }

    /// The exit code this reply ends the process with.
    pub fn exit_code(&self) -> Exit {
        match (self.exit, &self.failed, &self.unverified, self.rejected) {
            (Some(e), _, _, _) => e,
            (None, Some(_), _, _) => Exit::Failure,
            (None, None, Some(_), _) => Exit::Unverified,
            (None, None, None, true) => Exit::Rejected,
            (None, None, None, false) => Exit::Success,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// One pretty-printed JSON value for scripts.
    Json,
}

/// Renders `json` or the table, whichever `format` asks for.
pub fn render(format: Format, json: Value, table: impl FnOnce() -> String) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(&json).expect("json value serializes") + "\n",
        Format::Table => table(),
    }
}

/// Columns separated by two spaces; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = width[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines with the keys aligned.
pub fn kv(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n"))
        .collect()
}

/// The first 12 hex digits of a hash, or "-" when there is none.
pub fn short_hash(h: &[u8]) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        let mut s = hex::encode(h);
        s.truncate(12);
        s
    }
}

/// A submit's outcome: `seq N: accepted` or `seq N: rejected (code): message`.
pub fn submit_reply(format: Format, r: &pb::SubmitReply) -> Reply {
    let o = r.outcome.clone().unwrap_or_default();
    let json = json!({
        "seq": r.seq,
        "accepted": o.accepted,
        "code": o.code,
        "message": o.message,
        "duplicate": r.duplicate,
        "entry_hash": hex::encode(&r.entry_hash),
        "owner": r.owner,
    });
    let text = render(format, json, || {
        let mut line = if o.accepted {
            format!("seq {}: accepted", r.seq)
        } else if o.message.is_empty() {
            format!("seq {}: rejected ({})", r.seq, o.code)
        } else {
            format!("seq {}: rejected ({}): {}", r.seq, o.code, o.message)
        };
        if r.duplicate {
            line.push_str(" (duplicate of an earlier submission)");
        }
        line + "\n"
    });
    let mut reply = Reply::new(text);
    reply.rejected = !o.accepted;
    reply.accepted_seq = o.accepted.then_some(r.seq);
    reply
}

pub fn role_name(role: i32) -> String {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Operator) => "operator".into(),
        Ok(pb::Role::Channel) => "channel".into(),
        Ok(pb::Role::Node) => "node".into(),
        Ok(pb::Role::Auditor) => "auditor".into(),
        Ok(pb::Role::Replica) => "replica".into(),
        Ok(pb::Role::Carrier) => "carrier".into(),
        Ok(pb::Role::Broker) => "broker".into(),
        Ok(pb::Role::Unspecified) => "unspecified".into(),
        Err(_) => format!("unknown ({role})"),
    }
}

pub fn kind_name(kind: i32) -> String {
    match pb::NodeKind::try_from(kind) {
        Ok(pb::NodeKind::Store) => "store".into(),
        Ok(pb::NodeKind::Warehouse) => "warehouse".into(),
        Ok(pb::NodeKind::ThreePl) => "3pl".into(),
        Ok(pb::NodeKind::Carrier) => "carrier".into(),
        Ok(pb::NodeKind::Unspecified) => "-".into(),
        Err(_) => format!("unknown ({kind})"),
    }
}

/// Milliseconds since the epoch as UTC RFC 3339, e.g. `2025-12-07T15:23:44.123Z`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_765_121_024_123), "2025-12-07T15:23:44.123Z");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["ID", "ADDR"]);
        t.row(vec!["10".into(), "h:1".into()]);
        assert_eq!(t.render(), "ID  ADDR\n10  h:1\n");
    }

    #[test]
    fn submit_lines() {
        let mut r = pb::SubmitReply {
            seq: 7,
            outcome: Some(pb::Outcome {
                accepted: true,
                code: "accepted".into(),
                message: String::new(),
            }),
            entry_hash: vec![1; 32],
            duplicate: false,
            owner: String::new(),
        };
        let ok = submit_reply(Format::Table, &r);
        assert_eq!(ok.text, "seq 7: accepted\n");
        assert!(!ok.rejected);

        r.outcome = Some(pb::Outcome {
            accepted: false,
            code: "already_owned".into(),
            message: "order o-1 is owned by store-1".into(),
        });
        r.owner = "store-1".into();
        r.duplicate = true;
        let no = submit_reply(Format::Table, &r);
        assert_eq!(
            no.text,
            "seq 7: rejected (already_owned): order o-1 is owned by store-1 (duplicate of an earlier submission)\n"
        );
        assert!(no.rejected);
        let j: Value = serde_json::from_str(&submit_reply(Format::Json, &r).text).unwrap();
        assert_eq!(j["code"], "already_owned");
        assert_eq!(j["duplicate"], true);
        assert_eq!(j["owner"], "store-1");
    }
}
