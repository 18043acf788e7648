//! Replica configuration.
//!
//! Precedence: built-in defaults < TOML file (`--config`) < `ARBOR_*`
//! environment < command-line flags. Unknown TOML keys are an error. See
//! docs/arbor-node.example.toml for every key with a comment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::tls::TlsConfig;
use crate::types::Member;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, > 0.
    pub id: u64,
    /// Client API listen address (TLS). Port 0 picks a free port.
    pub listen: String,
    /// Address clients use to reach this one; defaults to `listen`.
    pub advertise: Option<String>,
    /// Peer listen address: raft traffic, cosigning and forwarded requests,
    /// mutual TLS, members only. Port 0 picks a free port.
    pub peer_listen: String,
    /// Address other replicas use to reach this one; defaults to `peer-listen`.
    pub peer_advertise: Option<String>,
    /// Certificates (`[tls]`): required unless `insecure-plaintext`.
    pub tls: TlsConfig,
    /// Serve both ports without TLS and without authenticating peers: anyone
    /// who reaches the peer port can then rewrite the ledger. Experiments only.
    pub insecure_plaintext: bool,
    /// Local IP that connections to other replicas leave from (multi-homed
    /// hosts; the test harness gives each replica its own loopback address
    /// so that it can cut links between replicas). Default: chosen by the OS.
    pub source_ip: Option<String>,
    /// Directory holding this replica's RocksDB and snapshots.
    pub data_dir: PathBuf,
    /// Initialise a new cluster from this replica (first start only).
    pub bootstrap: bool,
    /// Initial members as `ID=CLIENT_HOST:PORT/PEER_HOST:PORT` (with `bootstrap`;
    /// must include this replica).
    pub members: Vec<String>,
    /// Genesis operator keys as `PARTY_ID=PUBLIC_KEY_HEX` (with `bootstrap`).
    pub operators: Vec<String>,
    /// Cluster name recorded in the genesis entry.
    pub cluster_id: String,
    /// Lease grace recorded in the genesis entry (ms): added to a node's
    /// declared dispatch time before its ownership of an order lapses.
    pub lease_grace_ms: u64,
    /// The fence recorded in the genesis entry (ms; rules version 2): how
    /// long a lapsed order that was picked or packed stays held for its old
    /// owner before another node may claim it. 0: the rules' default, 2 h.
    pub fence_ms: u64,
    /// The claim deadlines recorded in the genesis entry (rules version 3
    /// and later), as `KIND=DURATION` (e.g. `damaged=14d`; kinds lost,
    /// damaged, late, duplicate_processing, price_mismatch). A kind not
    /// named gets its default. Empty: the defaults.
    pub claim_deadlines: Vec<String>,
    /// Every this many ms the leader records the lapse of orders whose lease
    /// has run out (signed with its replica identity, which must be enrolled).
    /// 0 turns the sweep off: lapses are then recorded only by the next
    /// command on the order.
    pub lapse_sweep_ms: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot every this many raft log entries. Each build flushes
    /// every memtable (a RocksDB checkpoint), so a small value turns the
    /// memtables into many small SST files that compaction rewrites again
    /// and again; the log is kept `keep_logs` entries behind anyway.
    pub snapshot_every: u64,
    /// Raft log entries kept after a snapshot, for followers that lag: one
    /// further behind is sent a whole snapshot (O(ledger)), so this covers
    /// tens of seconds of claims at full rate (~70 MB of raft log).
    pub keep_logs: u64,
    /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP).
    /// None: no endpoint. Port 0 picks a free port.
    pub metrics_listen: Option<String>,
    /// Resource limits (`[limits]`; see `limits.rs`).
    pub limits: crate::limits::Limits,
    /// RocksDB's memory (`[storage]`; see `storage::StorageConfig`).
    pub storage: crate::storage::StorageConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            listen: "127.0.0.1:7101".into(),
            advertise: None,
            peer_listen: "127.0.0.1:7201".into(),
            peer_advertise: None,
            tls: TlsConfig::default(),
            insecure_plaintext: false,
            source_ip: None,
            data_dir: PathBuf::from("arbor-data/node-1"),
            bootstrap: false,
            members: Vec::new(),
            operators: Vec::new(),
            cluster_id: "arbor".into(),
            lease_grace_ms: 300_000,
            fence_ms: 0,
            claim_deadlines: Vec::new(),
            lapse_sweep_ms: 1_000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 350,
            snapshot_every: 100_000,
            keep_logs: 100_000,
            metrics_listen: None,
            limits: Default::default(),
            storage: Default::default(),
        }
    }
}

/// A parsed `PARTY=PUBHEX` operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorKey {
    pub party_id: String,
    pub public_key: [u8; 32],
}

impl NodeConfig {
    /// Reads a TOML file; unknown keys are an error naming the key.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The claim deadlines genesis records (`claim-deadlines`, parsed as
    /// `arbor cluster set-rules --claim-deadline` parses them).
    pub fn parsed_claim_deadlines(
        &self,
    ) -> Result<arbor_proto::rules::ClaimDeadlines, ConfigError> {
        arbor_proto::rules::ClaimDeadlines::parse_all(&self.claim_deadlines)
            .map_err(|e| ConfigError::Invalid(format!("claim-deadlines: {e}")))
    }

    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }

    pub fn peer_advertise_addr(&self) -> String {
        self.peer_advertise
            .clone()
            .unwrap_or_else(|| self.peer_listen.clone())
    }

    pub fn parsed_members(&self) -> Result<BTreeMap<u64, Member>, ConfigError> {
        let mut out = BTreeMap::new();
        for m in &self.members {
            let shape = || {
                ConfigError::Invalid(format!(
                    "member {m:?} is not ID=CLIENT_HOST:PORT/PEER_HOST:PORT"
                ))
            };
            let (id, addrs) = m.split_once('=').ok_or_else(shape)?;
            let (addr, peer_addr) = addrs.split_once('/').ok_or_else(shape)?;
            let member = Member {
                addr: addr.trim().to_string(),
                peer_addr: peer_addr.trim().to_string(),
            };
            if member.addr.is_empty() || member.peer_addr.is_empty() {
                return Err(shape());
            }
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("member {m:?}: id is not a number")))?;
            if id == 0 {
                return Err(ConfigError::Invalid(format!(
                    "member {m:?}: id must be > 0"
                )));
            }
            for a in [&member.addr, &member.peer_addr] {
                arbor_proto::rules::check_addr("address", a)
                    .map_err(|e| ConfigError::Invalid(format!("member {m:?}: {e}")))?;
            }
            if out.insert(id, member).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "member id {id} is listed twice"
                )));
            }
        }
        Ok(out)
    }

    pub fn parsed_operators(&self) -> Result<Vec<OperatorKey>, ConfigError> {
        self.operators
            .iter()
            .map(|o| {
                let (party, hexkey) = o.split_once('=').ok_or_else(|| {
                    ConfigError::Invalid(format!("operator {o:?} is not PARTY=PUBLIC_KEY_HEX"))
                })?;
                let bytes = hex::decode(hexkey.trim()).map_err(|_| {
                    ConfigError::Invalid(format!("operator {party}: public key is not hex"))
                })?;
                let public_key: [u8; 32] = bytes.try_into().map_err(|_| {
                    ConfigError::Invalid(format!("operator {party}: public key is not 32 bytes"))
                })?;
                Ok(OperatorKey {
                    party_id: party.trim().to_string(),
                    public_key,
                })
            })
            .collect()
    }

    /// `source-ip` parsed.
    pub fn parsed_source_ip(&self) -> Result<Option<std::net::IpAddr>, ConfigError> {
        self.source_ip
            .as_deref()
            .map(|s| {
                s.trim().parse().map_err(|_| {
                    ConfigError::Invalid(format!("source-ip {s:?} is not an IP address"))
                })
            })
            .transpose()
    }

    /// Checks the configuration is usable; the message names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.parsed_source_ip()?;
        self.limits.validate()?;
        self.storage.validate().map_err(ConfigError::Invalid)?;
        if self.id == 0 {
            return bad("id must be > 0".into());
        }
        self.parsed_claim_deadlines()?;
        let id_char = |c: char| c.is_ascii_alphanumeric() || "_-.:@/".contains(c);
        if self.cluster_id.is_empty()
            || self.cluster_id.len() > arbor_proto::rules::MAX_ID_LEN
            || !self.cluster_id.chars().all(id_char)
        {
            return bad(format!(
                "cluster-id {:?} must be 1-{} ASCII letters, digits or _ - . : @ / \
                 (every command signature names it)",
                self.cluster_id,
                arbor_proto::rules::MAX_ID_LEN
            ));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "listen {:?} is not HOST:PORT with a numeric IP",
                self.listen
            ));
        }
        if self.peer_listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "peer-listen {:?} is not HOST:PORT with a numeric IP",
                self.peer_listen
            ));
        }
        if self.listen == self.peer_listen && !self.listen.ends_with(":0") {
            return bad(format!(
                "listen and peer-listen are both {:?}: the peer port must be its own",
                self.listen
            ));
        }
        if !self.insecure_plaintext {
            self.tls.load()?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data-dir is empty".into());
        }
        if self.heartbeat_ms == 0 || self.election_timeout_min_ms <= self.heartbeat_ms {
            return bad("election-timeout-min-ms must be greater than heartbeat-ms (> 0)".into());
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return bad(
                "election-timeout-max-ms must be greater than election-timeout-min-ms".into(),
            );
        }
        if let Some(m) = &self.metrics_listen {
            if m.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!(
                    "metrics-listen {m:?} is not HOST:PORT with a numeric IP"
                ));
            }
        }
        if self.snapshot_every == 0 {
            return bad("snapshot-every must be > 0".into());
        }
        let members = self.parsed_members()?;
        let operators = self.parsed_operators()?;
        if self.bootstrap {
            if operators.is_empty() {
                return bad(
                    "bootstrap needs at least one operator key (--operator PARTY=PUBLIC_KEY_HEX)"
                        .into(),
                );
            }
            if !members.is_empty() && !members.contains_key(&self.id) {
                return bad(format!(
                    "members must include this replica's id {}",
                    self.id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "id = 2\nlisten = \"127.0.0.1:1\"\nhearbeat-ms = 5\n").unwrap();
        let err = NodeConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("hearbeat-ms"), "{err}");
    }

    #[test]
    fn the_example_config_is_the_defaults() {
        let text = include_str!("../../docs/arbor-node.example.toml");
        let c: NodeConfig = toml::from_str(text).expect("docs/arbor-node.example.toml parses");
        assert_eq!(c, NodeConfig::default());
    }

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "id = 2\nmembers = [\"1=127.0.0.1:1/127.0.0.1:11\", \"2=127.0.0.1:2/127.0.0.1:12\"]\n",
        )
        .unwrap();
        let c = NodeConfig::from_file(&p).unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.heartbeat_ms, NodeConfig::default().heartbeat_ms);
        let members = c.parsed_members().unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[&2].peer_addr, "127.0.0.1:12");
    }

    #[test]
    fn claim_deadlines_parse_as_set_rules_parses_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "claim-deadlines = [\"damaged=14d\", \"lost=45d\"]\ninsecure-plaintext = true\n",
        )
        .unwrap();
        let c = NodeConfig::from_file(&p).unwrap();
        c.validate().unwrap();
        let d = c.parsed_claim_deadlines().unwrap();
        const DAY: u64 = 86_400_000;
        assert_eq!(
            (d.damaged_ms, d.lost_ms, d.late_ms),
            (14 * DAY, 45 * DAY, 0)
        );
        for bad in ["stolen=1d", "late", "late=0s", "late=1d late=2d"] {
            let c = NodeConfig {
                claim_deadlines: bad.split(' ').map(String::from).collect(),
                insecure_plaintext: true,
                ..NodeConfig::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("claim-deadlines"), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let c = NodeConfig {
            bootstrap: true,
            insecure_plaintext: true,
            ..NodeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("operator"));
        let c = NodeConfig::default();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.ca-file"));
        let c = NodeConfig {
            members: vec!["1=127.0.0.1:1".into()],
            insecure_plaintext: true,
            ..NodeConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("PEER_HOST:PORT"));
        for bad_id in ["", "a b", "nul\0"] {
            let c = NodeConfig {
                cluster_id: bad_id.into(),
                insecure_plaintext: true,
                ..NodeConfig::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("cluster-id"), "{bad_id:?}: {e}");
        }
        let c = NodeConfig {
            listen: "nowhere".into(),
            ..NodeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("listen"));
        let c = NodeConfig {
            members: vec!["x=1/2".into()],
            insecure_plaintext: true,
            ..NodeConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        let c = NodeConfig {
            members: vec!["2=127.0.0.1:7102/127.0.0.1:0".into()],
            insecure_plaintext: true,
            ..NodeConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("is not HOST:PORT"), "{err}");
    }
}
