//! The audit client and `arbor audit` against an in-process server that
//! serves a synthetic ledger: export, offline verify, proofs, checkpoints.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arbor_client::audit::{verify_checkpoint, verify_consistency, verify_inclusion};
use arbor_client::pb::arbor_server::{Arbor, ArborServer};
use arbor_client::{pb, Client, Transport};
use arbor_proto::audit::synth::{key, rehash_from, Synth};
use arbor_proto::ledger::merkle::{consistency_proof, inclusion_proof, leaf_hash, Hash};
use arbor_proto::ledger::Entry;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const N: u64 = 300;

/// Serves `entries` with a checkpoint over the honest ledger `synth`.
#[derive(Clone)]
struct Ledger {
    synth: Arc<Synth>,
    entries: Arc<Vec<Entry>>,
}

impl Ledger {
    fn honest() -> Ledger {
        let s = Synth::build(N, 3);
        Ledger {
            entries: Arc::new(s.entries.clone()),
            synth: Arc::new(s),
        }
    }

    /// The real genesis (the forger holds the operator key), replicas with
    /// the forger's keys under the real names: a lying replica that answers
    /// with keys it chose and a checkpoint they signed.
    fn forged_replicas() -> Ledger {
        let forged = (1..=3)
            .map(|i| (format!("arbor-replica-{i}"), key(90 + i)))
            .collect();
        let s = Synth::build_keyed(N, key(1), forged);
        Ledger {
            entries: Arc::new(s.entries.clone()),
            synth: Arc::new(s),
        }
    }

    fn leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|e| leaf_hash(&e.hash)).collect()
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("mock"))
}

#[tonic::async_trait]
impl Arbor for Ledger {
    async fn submit(
        &self,
        _: Request<pb::SignedCommand>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        unimplemented()
    }
    async fn get_order(
        &self,
        r: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        let id = r.into_inner().order_id;
        let history: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.order_id == id)
            .map(|e| e.seq)
            .collect();
        if history.is_empty() {
            return Err(Status::not_found(format!("no order {id:?}")));
        }
        Ok(Response::new(pb::OrderView {
            order_id: id,
            status: "claimed".into(),
            history,
            ..Default::default()
        }))
    }
    async fn resolve_ref(
        &self,
        _: Request<pb::ResolveRefRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        unimplemented()
    }
    async fn get_party(
        &self,
        r: Request<pb::GetPartyRequest>,
    ) -> Result<Response<pb::PartyView>, Status> {
        let id = r.into_inner().party_id;
        let (i, (name, key)) = self
            .synth
            .replicas
            .iter()
            .enumerate()
            .find(|(_, (n, _))| *n == id)
            .ok_or_else(|| Status::not_found(format!("no party {id:?}")))?;
        Ok(Response::new(pb::PartyView {
            party_id: name.clone(),
            role: pb::Role::Replica as i32,
            kind: 0,
            public_key: key.verifying_key().to_bytes().to_vec(),
            enrolled_seq: 11 + i as u64,
            key_seq: 11 + i as u64,
            revoked: false,
            channel_names: Vec::new(),
        }))
    }
    async fn get_profile(
        &self,
        _: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::ProfileView>, Status> {
        unimplemented()
    }
    async fn list_profiles(
        &self,
        _: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesReply>, Status> {
        unimplemented()
    }
    async fn list_orders(
        &self,
        _: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersReply>, Status> {
        unimplemented()
    }
    async fn preview_ruling(
        &self,
        _: Request<pb::PreviewRulingRequest>,
    ) -> Result<Response<pb::Ruling>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_node_stats(
        &self,
        _: Request<pb::GetNodeStatsRequest>,
    ) -> Result<Response<pb::NodeStatsView>, Status> {
        unimplemented()
    }
    async fn get_entries(
        &self,
        r: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesReply>, Status> {
        let r = r.into_inner();
        let limit = if r.limit == 0 {
            1000
        } else {
            r.limit.min(1000)
        } as usize;
        // Pages of at most 64, to exercise paging.
        let entries = self
            .entries
            .iter()
            .skip(r.from_seq as usize)
            .take(limit.min(64))
            .map(Entry::to_pb)
            .collect();
        Ok(Response::new(pb::GetEntriesReply {
            entries,
            head_seq: self.entries.len() as u64 - 1,
            empty: false,
        }))
    }
    async fn local_status(
        &self,
        _: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusReply>, Status> {
        unimplemented()
    }
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        Ok(Response::new(pb::ClusterStatusReply {
            members: (1..=3)
                .map(|id| pb::Member {
                    node_id: id,
                    addr: String::new(),
                    voter: true,
                    peer_addr: String::new(),
                })
                .collect(),
            ..Default::default()
        }))
    }
    async fn get_checkpoint(
        &self,
        _: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointReply>, Status> {
        let cp = self.synth.checkpoint(N);
        Ok(Response::new(pb::CheckpointReply {
            note: self.synth.note(&cp, &[0, 2]),
            size: N,
            root: cp.root.to_vec(),
            signed_by: vec!["arbor-replica-1".into(), "arbor-replica-3".into()],
        }))
    }
    async fn get_inclusion_proof(
        &self,
        r: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofReply>, Status> {
        let r = r.into_inner();
        let size = if r.tree_size == 0 { N } else { r.tree_size };
        let path = inclusion_proof(&self.leaves(), r.seq, size).map_err(Status::out_of_range)?;
        Ok(Response::new(pb::InclusionProofReply {
            entry: Some(self.entries[r.seq as usize].to_pb()),
            tree_size: size,
            path: path.iter().map(|h| h.to_vec()).collect(),
        }))
    }
    async fn get_order_map_proof(
        &self,
        _: Request<pb::OrderMapProofRequest>,
    ) -> Result<Response<pb::OrderMapProofReply>, Status> {
        Err(Status::unimplemented("no order map in this fake"))
    }

    async fn get_consistency_proof(
        &self,
        r: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofReply>, Status> {
        let r = r.into_inner();
        let new = if r.new_size == 0 { N } else { r.new_size };
        let path =
            consistency_proof(&self.leaves(), r.old_size, new).map_err(Status::out_of_range)?;
        Ok(Response::new(pb::ConsistencyProofReply {
            old_size: r.old_size,
            new_size: new,
            path: path.iter().map(|h| h.to_vec()).collect(),
        }))
    }
    async fn get_replica_identity(
        &self,
        _: Request<pb::ReplicaIdentityRequest>,
    ) -> Result<Response<pb::ReplicaIdentity>, Status> {
        let (name, key) = &self.synth.replicas[0];
        Ok(Response::new(pb::ReplicaIdentity {
            node_id: 1,
            name: name.clone(),
            public_key: key.verifying_key().to_bytes().to_vec(),
        }))
    }

    type WatchEntriesStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LedgerEntry, Status>> + Send>>;

    async fn watch_entries(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        unimplemented()
    }
}

async fn serve(ledger: Ledger) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ArborServer::new(ledger))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// Runs `arbor` off the runtime's threads, so the in-process server keeps answering.
async fn arbor(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_arbor"))
            .args(&args)
            .env_remove("ARBOR_ENDPOINTS")
            .env_remove("ARBOR_CACERT")
            .env("ARBOR_INSECURE_PLAINTEXT", "true")
            .output()
            .expect("run arbor")
    })
    .await
    .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Asserts exit code 1 and exactly one `error:` line on stderr; returns it.
fn one_error_line(o: &Output) -> String {
    error_line_with_code(o, 1)
}

/// Asserts exit code `code` and exactly one error on stderr: an `error:`
/// line, or with `--output json` one JSON object (returned as `error: MESSAGE`).
fn error_line_with_code(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    if err.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&err).expect("one JSON error object");
        assert_eq!(v["exit_code"], code, "stderr: {err}");
        return format!("error: {}", v["error"].as_str().expect("error message"));
    }
    assert!(err.starts_with("error: "), "stderr: {err}");
    err
}

/// (offset, length) of every frame after the magic.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 16;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 4 + len;
    }
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_and_checkpoints_from_a_replica_are_checked_not_trusted() {
    let ledger = Ledger::honest();
    let addr = serve(ledger.clone()).await;
    let client = Client::connect(std::slice::from_ref(&addr), &Transport::InsecurePlaintext)
        .await
        .unwrap();

    let reply = client.get_checkpoint().await.unwrap();
    let keys = ledger.synth.replica_note_keys();
    let cp = verify_checkpoint(&reply, &keys, 2).unwrap();
    assert_eq!(cp.signed_by, ["arbor-replica-1", "arbor-replica-3"]);
    assert!(verify_checkpoint(&reply, &keys, 3).is_err());
    let cp = cp.checkpoint;

    let proof = client.get_inclusion_proof(123, cp.size).await.unwrap();
    let e = verify_inclusion(&proof, 123, cp.size, &cp.root).unwrap();
    assert_eq!(e, ledger.entries[123]);

    let old = ledger.synth.checkpoint(200);
    let c = client.get_consistency_proof(200, cp.size).await.unwrap();
    verify_consistency(&c, 200, &old.root, cp.size, &cp.root).unwrap();
    let mut wrong = old.root;
    wrong[0] ^= 1;
    assert!(verify_consistency(&c, 200, &wrong, cp.size, &cp.root).is_err());

    let id = Client::get_replica_identity(&Transport::InsecurePlaintext, &addr)
        .await
        .unwrap();
    assert_eq!(id.name, "arbor-replica-1");
    assert_eq!(id.public_key, keys[0].public_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_verify_offline() {
    let addr = serve(Ledger::honest()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.arbor");
    let f = path_str(&file);

    let o = arbor(&["audit", "export", "--out", f, "--endpoints", &addr]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("0..=299 ({N})")),
        "{}",
        stdout(&o)
    );

    let trust = trust_init(&dir, &addr).await;
    let t = path_str(&trust);

    // Verify needs no server: no --endpoints given, nothing listens on the default ones.
    let o = arbor(&["audit", "verify", f, "--trust", t]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "no progress line when stderr is not a terminal"
    );
    let text = stdout(&o);
    assert!(
        text.contains("result      valid: verified against pinned trust"),
        "{text}"
    );
    assert!(
        text.contains("arbor-replica-1, arbor-replica-3 (quorum 2 of 3 pinned keys)"),
        "{text}"
    );

    let o = arbor(&["audit", "verify", f, "--trust", t, "--output", "json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["complete"], true);
    assert_eq!(v["entries"], N);
    assert_eq!(v["signatures_verified"], N - 1);
    assert_eq!(v["checkpoint"]["quorum"], 2);
    assert_eq!(
        v["trust"]["anchored"], N,
        "the saved checkpoint is this one"
    );

    // --save-checkpoint into a trust file that pins the keys only: the
    // checkpoint is saved, the fingerprint (the keys) unchanged.
    let text = std::fs::read_to_string(&trust).unwrap();
    let keys_only: String = text
        .lines()
        .filter(|l| !l.starts_with("checkpoint "))
        .map(|l| format!("{l}\n"))
        .collect();
    let bare = dir.path().join("keys-only.trust");
    std::fs::write(&bare, keys_only).unwrap();
    let before = arbor_proto::audit::Trust::load(&bare).unwrap();
    assert!(before.checkpoint.is_none());
    let o = arbor(&[
        "audit",
        "verify",
        f,
        "--trust",
        path_str(&bare),
        "--save-checkpoint",
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("pinned keys unchanged"),
        "{}",
        stdout(&o)
    );
    let after = arbor_proto::audit::Trust::load(&bare).unwrap();
    assert_eq!(after.checkpoint.as_ref().unwrap().checkpoint.size, N);
    assert_eq!(after.fingerprint(), before.fingerprint());
    let o = arbor(&["audit", "verify", f, "--save-checkpoint"]).await;
    assert_eq!(
        o.status.code().map(|c| c != 0 && c != 7),
        Some(true),
        "needs --trust"
    );

    // Without trust: the same checks, said loudly to be internal consistency only, exit 7.
    let o = arbor(&["audit", "verify", f]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("warning: UNVERIFIED: no --trust given"),
        "{}",
        stderr(&o)
    );
    let text = stdout(&o);
    assert!(
        text.contains("result      UNVERIFIED: internally consistent only"),
        "{text}"
    );
    assert!(
        text.contains("arbor-replica-1, arbor-replica-3 (quorum 2 of 3 enrolled replicas)"),
        "{text}"
    );
    let o = arbor(&["audit", "verify", f, "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(7));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["internally_consistent"], true);
    assert!(v["trust"].is_null());

    // Never overwritten.
    let before = std::fs::read(&file).unwrap();
    let o = arbor(&["audit", "export", "--out", f, "--endpoints", &addr]).await;
    assert!(
        one_error_line(&o).contains("already exists"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // One flipped byte: the last byte of entry 211's frame is the last byte of its hash.
    let mut bytes = before.clone();
    let (at, len) = frames(&bytes)[1 + 211];
    bytes[at + 4 + len - 1] ^= 1;
    let bad = dir.path().join("bad.arbor");
    std::fs::write(&bad, &bytes).unwrap();
    let o = arbor(&["audit", "verify", path_str(&bad)]).await;
    let err = one_error_line(&o);
    assert!(
        err.starts_with("error: entry 211: hash does not match its contents"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());

    // Cut short.
    std::fs::write(&bad, &before[..before.len() / 2]).unwrap();
    let o = arbor(&["audit", "verify", path_str(&bad), "--output", "json"]).await;
    let err = one_error_line(&o);
    assert!(
        err.contains("truncated") && err.contains("byte offset"),
        "{err}"
    );

    // Not an export at all.
    std::fs::write(&bad, b"hello").unwrap();
    let err = one_error_line(&arbor(&["audit", "verify", path_str(&bad)]).await);
    assert!(err.contains("offset 0: not an arbor export"), "{err}");
    // A missing file is "not found" (exit 3).
    let err = error_line_with_code(
        &arbor(&["audit", "verify", path_str(&dir.path().join("missing"))]).await,
        3,
    );
    assert!(err.contains("cannot open"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_export_is_tied_to_the_checkpoint_and_reported_as_partial() {
    let addr = serve(Ledger::honest()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mid.arbor");
    let f = path_str(&file);
    let o = arbor(&[
        "audit",
        "export",
        "--out",
        f,
        "--from",
        "100",
        "--to",
        "250",
        "--endpoints",
        &addr,
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    // Without trust a partial export is never valid.
    let o = arbor(&["audit", "verify", f, "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["complete"], false);
    assert_eq!(v["entries"], 151);
    assert!(
        v["notes"][0].as_str().unwrap().contains("not at genesis"),
        "{v}"
    );
    // With trust: the checkpoint is checked by the pinned keys and tied to the saved one.
    let trust = trust_init(&dir, &addr).await;
    let o = arbor(&[
        "audit",
        "verify",
        f,
        "--trust",
        path_str(&trust),
        "--output",
        "json",
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["complete"], false);
    assert_eq!(
        v["trust"]["signed_by"],
        serde_json::json!(["arbor-replica-1", "arbor-replica-3"])
    );

    // The same range with an outcome changed and the checkpoint's root
    // replaced: the replicas' signatures no longer hold.
    let s = Synth::build(N, 3);
    let mut entries = s.entries.clone();
    entries[150].accepted ^= true;
    rehash_from(&mut entries, 150);
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.hash)).collect();
    let real = s.checkpoint(N);
    let forged = arbor_proto::ledger::checkpoint::Checkpoint {
        root: arbor_proto::ledger::merkle::root(&leaves, N),
        ..real.clone()
    };
    let real_note = s.note(&real, &[0, 2]);
    let lines = &real_note[real_note.find("\n\n").unwrap() + 2..];
    let note = format!("{}\n{lines}", forged.body());
    let bad = dir.path().join("forged-mid.arbor");
    std::fs::write(&bad, s.export_with(&entries, 100, 250, N, &note)).unwrap();
    let o = arbor(&["audit", "verify", path_str(&bad), "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(7), "never valid: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    let err = one_error_line(
        &arbor(&[
            "audit",
            "verify",
            path_str(&bad),
            "--trust",
            path_str(&trust),
        ])
        .await,
    );
    assert!(
        err.contains("checkpoint: the ledger does not extend the trusted checkpoint of size 300"),
        "the saved checkpoint finds it first: {err}"
    );
    // A trust with no saved checkpoint: the pinned keys' signatures fail.
    let text = std::fs::read_to_string(&trust).unwrap();
    let keys_only: String = text
        .lines()
        .filter(|l| !l.starts_with("checkpoint "))
        .map(|l| format!("{l}\n"))
        .collect();
    let bare = dir.path().join("keys-only.trust");
    std::fs::write(&bare, keys_only).unwrap();
    let err = one_error_line(
        &arbor(&[
            "audit",
            "verify",
            path_str(&bad),
            "--trust",
            path_str(&bare),
        ])
        .await,
    );
    assert!(
        err.contains("checkpoint: ")
            && err.contains("checkpoint signature of arbor-replica-1 does not verify"),
        "{err}"
    );

    let o = arbor(&[
        "audit",
        "export",
        "--out",
        path_str(&dir.path().join("x")),
        "--to",
        "300",
        "--endpoints",
        &addr,
    ])
    .await;
    assert!(
        one_error_line(&o).contains("cannot export entries 0..=300"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_entries_that_do_not_match_the_checkpoint_fails_and_leaves_no_file() {
    let mut ledger = Ledger::honest();
    let mut entries = ledger.synth.entries.clone();
    entries[150].accepted ^= true;
    rehash_from(&mut entries, 150);
    ledger.entries = Arc::new(entries);
    let addr = serve(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forged.arbor");
    let o = arbor(&[
        "audit",
        "export",
        "--out",
        path_str(&file),
        "--endpoints",
        &addr,
    ])
    .await;
    let err = one_error_line(&o);
    assert!(
        err.contains("do not hash to the root of the checkpoint of size 300"),
        "{err}"
    );
    assert!(err.contains("file removed"), "{err}");
    assert!(!file.exists());
}

/// `arbor audit trust init` against `addr`, into a new file in `dir`.
async fn trust_init(dir: &tempfile::TempDir, addr: &str) -> std::path::PathBuf {
    let mut n = 0;
    let file = loop {
        let f = dir.path().join(format!("t{n}.trust"));
        if !f.exists() {
            break f;
        }
        n += 1;
    };
    let o = arbor(&[
        "audit",
        "trust",
        "init",
        "--out",
        path_str(&file),
        "--endpoints",
        addr,
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OUT OF BAND"), "{}", stdout(&o));
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_file_is_made_once_and_shown_by_fingerprint() {
    let addr = serve(Ledger::honest()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = trust_init(&dir, &addr).await;
    let text = std::fs::read_to_string(&t).unwrap();
    assert!(
        text.contains("\narbor-trust v1\ncluster synth\ngenesis "),
        "{text}"
    );
    assert_eq!(
        text.matches("\nreplica arbor-replica-").count(),
        3,
        "{text}"
    );
    let s = Synth::build(N, 3);
    assert!(text.contains(&hex::encode(s.entries[0].hash)), "{text}");
    let parsed = arbor_proto::audit::Trust::parse(&text).unwrap();
    assert_eq!(parsed.replicas, s.replica_note_keys());
    assert_eq!(parsed.checkpoint.as_ref().unwrap().checkpoint.size, N);

    let o = arbor(&[
        "audit",
        "trust",
        "fingerprint",
        path_str(&t),
        "--output",
        "json",
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["fingerprint"], parsed.fingerprint());
    assert!(v["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(v["quorum"], 2);
    // Two auditors who pin the same ledger see the same fingerprint.
    let t2 = trust_init(&dir, &addr).await;
    assert_eq!(
        arbor_proto::audit::Trust::load(&t2).unwrap().fingerprint(),
        parsed.fingerprint()
    );
    // Never overwritten.
    let o = arbor(&[
        "audit",
        "trust",
        "init",
        "--out",
        path_str(&t),
        "--endpoints",
        &addr,
    ])
    .await;
    assert!(one_error_line(&o).contains("already exists"));
}

/// A replica that serves a checkpoint signed by keys it chose (and reports
/// those keys as the replicas'): accepted only as unverified without trust,
/// refused with the trust of the real ledger — by `checkpoint` and `trace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serving_a_checkpoint_signed_by_keys_it_chose_is_refused() {
    let honest = serve(Ledger::honest()).await;
    let liar = serve(Ledger::forged_replicas()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = trust_init(&dir, &honest).await;
    let t = path_str(&t);

    let o = arbor(&["audit", "checkpoint", "--endpoints", &liar]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("UNVERIFIED"), "{}", stderr(&o));

    let o = arbor(&["audit", "checkpoint", "--endpoints", &liar, "--trust", t]).await;
    let err = one_error_line(&o);
    assert!(
        err.contains("keys the trust does not pin: arbor-replica-1"),
        "{err}"
    );
    let o = arbor(&["audit", "trace", "o-5", "--endpoints", &liar, "--trust", t]).await;
    let err = one_error_line(&o);
    assert!(
        err.contains("not signed by a quorum of the pinned replica keys"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "nothing shown as proven");

    // The honest replica passes and the checkpoint can be saved.
    let o = arbor(&[
        "audit",
        "checkpoint",
        "--endpoints",
        &honest,
        "--trust",
        t,
        "--save-checkpoint",
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("valid: verified against pinned trust"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("left unchanged"),
        "same size as saved: {}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_command_checks_signers_against_enrolled_replica_keys() {
    let addr = serve(Ledger::honest()).await;
    let o = arbor(&[
        "audit",
        "checkpoint",
        "--endpoints",
        &addr,
        "--output",
        "json",
    ])
    .await;
    // The keys came from the cluster itself: unverified.
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["size"], N);
    assert_eq!(v["quorum"], 2);
    assert_eq!(
        v["signed_by"],
        serde_json::json!(["arbor-replica-1", "arbor-replica-3"])
    );
    assert!(v["note"]
        .as_str()
        .unwrap()
        .starts_with("arbor/synth\n300\n"));
}

#[test]
fn bench_verify_runs_without_a_server() {
    let o = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args([
            "audit",
            "bench-verify",
            "--entries",
            "500",
            "--runs",
            "1",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["entries"], 500);
    assert!(v["best_entries_per_second"].as_f64().unwrap() > 0.0);
}

/// The committed vector's ledger revokes a pinned replica key after the
/// trust was made: verifying it with --save-checkpoint pins the keys its
/// checkpoint (signed by the pinned keys) vouched for, and says so.
#[test]
fn saving_a_checkpoint_moves_the_pinned_keys_to_those_it_vouched_for() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/tests/vectors");
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("t.trust");
    std::fs::copy(vectors.join("cluster-v1.trust"), &trust).unwrap();
    let before = arbor_proto::audit::Trust::load(&trust).unwrap();
    let export = vectors.join("cluster-v1.export");
    let o = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args([
            "audit",
            "verify",
            path_str(&export),
            "--trust",
            path_str(&trust),
        ])
        .arg("--save-checkpoint")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let after = arbor_proto::audit::Trust::load(&trust).unwrap();
    assert_ne!(after.fingerprint(), before.fingerprint());
    assert!(
        stdout(&o).contains(&format!(
            "fingerprint {} -> {}",
            before.fingerprint(),
            after.fingerprint()
        )),
        "{}",
        stdout(&o)
    );
    let names: Vec<&str> = after.replicas.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["arbor-replica-1", "arbor-replica-2"]);
    assert!(after.checkpoint.unwrap().checkpoint.size > before.checkpoint.unwrap().checkpoint.size);
    // The saved trust still judges the same export valid.
    let o = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args([
            "audit",
            "verify",
            path_str(&export),
            "--trust",
            path_str(&trust),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
