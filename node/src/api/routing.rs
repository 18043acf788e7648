//! Where a request is served, and for how long.
//!
//! Every client-API call has a deadline ([`Deadline`]): the caller's
//! `grpc-timeout`, capped by `limits.request-timeout-ms`. A call still running
//! at its deadline is answered `DEADLINE_EXCEEDED` ([`within`]).
//!
//! A call is served on this replica if it leads, else forwarded to the
//! leader's peer port (mutual TLS) over a cached channel, carrying what is left
//! of the deadline. A forward that the leader does not answer — its process is
//! gone, frozen, or it lost leadership — is abandoned as soon as another
//! leader is known and sent there instead (a `Submit` sent twice is answered
//! once: the command id deduplicates it). A request that was already forwarded
//! once is never forwarded again: it is answered `UNAVAILABLE` with the
//! leader's address, and the client library retries there.
//!
//! `UNAVAILABLE` carries the best hint this replica has in `x-arbor-leader`:
//! the client address of the leader it knows, never one it has just failed to
//! reach, and nothing when it knows no (other) leader.

use openraft::async_runtime::WatchReceiver;
use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use arbor_proto::pb::arbor_client::ArborClient;
use openraft::ServerState;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::status::{self, FORWARDED_HEADER};
use crate::net::Peers;
use crate::types::{Member, NodeId};
use crate::Raft;

/// When a call must be answered by: the caller's `grpc-timeout` capped by the
/// server's `limits.request-timeout-ms`.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    /// The budget it was given (for messages).
    budget: Duration,
}

impl Deadline {
    /// The caller's deadline is brought forward by a small margin so that the
    /// answer is this replica's `DEADLINE_EXCEEDED`, sent before tonic's own
    /// enforcement of `grpc-timeout` would end the call as `CANCELLED`.
    pub fn of<T>(req: &Request<T>, cap: Duration) -> Deadline {
        let budget = match grpc_timeout(req.metadata()) {
            Some(t) => {
                let margin = (t / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
                t.saturating_sub(margin.min(t / 2)).min(cap)
            }
            None => cap,
        };
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        self.left().is_zero()
    }

    fn exceeded(&self, what: &str) -> Status {
        status::deadline_exceeded(format!(
            "{what}: no answer within the request's deadline ({} ms)",
            self.budget.as_millis()
        ))
    }
}

/// The `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits and a unit).
pub fn grpc_timeout(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Runs `fut` until `deadline`; past it the answer is `DEADLINE_EXCEEDED`.
pub async fn within<T>(
    deadline: Deadline,
    what: &str,
    fut: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout_at(deadline.at, fut).await {
        Ok(r) => r,
        Err(_) => Err(deadline.exceeded(what)),
    }
}

/// Who leads, as this replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leader {
    Me,
    Other { id: NodeId, member: Member },
    Unknown,
}

/// A leader this replica failed to get an answer from, in the term it led.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lost {
    id: NodeId,
    term: u64,
}

/// The leader and the term it leads in.
///
/// From openraft's server metrics (vote, state, leader, membership), which
/// change only when one of those does: the waits below are woken by a
/// change of leader or term, not by every append and apply (the full
/// metrics change on each, and with thousands of forwards in flight each
/// change woke every one of them).
fn observe(raft: &Raft) -> (Leader, u64) {
    // Read in place: this runs on every routed request.
    let metrics = raft.server_metrics();
    let m = metrics.borrow_watched();
    let term = m.vote.leader_id.term;
    if m.state == ServerState::Leader {
        return (Leader::Me, term);
    }
    let l = match m.current_leader {
        Some(id) => match m.membership_config.membership().get_node(&id) {
            Some(n) => Leader::Other {
                id,
                member: n.clone(),
            },
            None => Leader::Unknown,
        },
        None => Leader::Unknown,
    };
    (l, term)
}

pub fn leader(raft: &Raft) -> Leader {
    observe(raft).0
}

/// The client address of the leader this replica knows (for hints).
pub fn leader_addr(raft: &Raft) -> Option<String> {
    match leader(raft) {
        Leader::Other { member, .. } => Some(member.addr),
        Leader::Me | Leader::Unknown => None,
    }
}

/// Whether `l` (seen in `term`) is the leader that was lost.
fn is_lost(l: &Leader, term: u64, lost: Option<Lost>) -> bool {
    match (l, lost) {
        (Leader::Other { id, .. }, Some(x)) => *id == x.id && term <= x.term,
        _ => false,
    }
}

/// Waits until `until` for a leader to be known, other than `lost`.
async fn wait_leader_other(raft: &Raft, lost: Option<Lost>, until: Instant) -> (Leader, u64) {
    let mut rx = raft.server_metrics();
    loop {
        let (l, term) = observe(raft);
        if l != Leader::Unknown && !is_lost(&l, term, lost) {
            return (l, term);
        }
        if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
            return (Leader::Unknown, term);
        }
    }
}

/// Waits up to `patience` for a leader to be known (elections take ~1 s).
pub async fn wait_leader(raft: &Raft, patience: Duration) -> Leader {
    wait_leader_other(raft, None, Instant::now() + patience)
        .await
        .0
}

/// Resolves once this replica sees a leader other than `lost` (a new term or
/// another node), for abandoning a forward the old leader does not answer.
async fn leader_moved(raft: &Raft, lost: Lost) {
    let mut rx = raft.server_metrics();
    loop {
        let (l, term) = observe(raft);
        let other = term > lost.term || matches!(l, Leader::Other { id, .. } if id != lost.id);
        if other && l != Leader::Unknown {
            return;
        }
        if rx.changed().await.is_err() {
            // Raft stopped: nothing will move; the deadline ends the wait.
            std::future::pending::<()>().await;
        }
    }
}

/// How long this leader has not heard from a quorum, if longer than twice
/// the leader lease (`election-timeout-max-ms`): by then the others have
/// elected a new leader if they can, so a call is better sent elsewhere than
/// left waiting here for a commit that cannot come.
fn quorum_silence(raft: &Raft) -> Option<Duration> {
    match quorum_heard(raft) {
        Quorum::SilentFor(since) => Some(since),
        Quorum::Heard { .. } | Quorum::NotLeading => None,
    }
}

/// What this replica knows of its quorum's silence.
enum Quorum {
    /// It leads and has not heard from a quorum for longer than the limit.
    SilentFor(Duration),
    /// It leads, heard from a quorum lately: silence could pass the limit
    /// no sooner than `left` from now.
    Heard { left: Duration },
    /// It does not lead (or leads alone): no silence to count.
    NotLeading,
}

fn quorum_heard(raft: &Raft) -> Quorum {
    use openraft::Instant as _;
    let limit = Duration::from_millis(raft.config().election_timeout_max.saturating_mul(2));
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().count() < 2 {
        return Quorum::NotLeading;
    }
    let Some(acked) = m.last_quorum_acked.as_ref() else {
        return Quorum::NotLeading;
    };
    let since = acked.elapsed();
    if since > limit {
        Quorum::SilentFor(since)
    } else {
        Quorum::Heard {
            left: limit - since,
        }
    }
}

/// Resolves once this leader has not heard from a quorum for longer than
/// [`quorum_silence`] allows. It sleeps until the silence could first pass
/// the limit (at least a heartbeat interval), not every heartbeat: each
/// command waiting to commit runs one of these, and a healthy leader's
/// commands are committed long before.
pub async fn quorum_lost(raft: &Raft) -> Duration {
    let every = Duration::from_millis(raft.config().heartbeat_interval.max(10));
    loop {
        let nap = match quorum_heard(raft) {
            Quorum::SilentFor(since) => return since,
            Quorum::Heard { left } => left.max(every),
            Quorum::NotLeading => every,
        };
        tokio::time::sleep(nap).await;
    }
}

/// How long to keep hoping for a new leader after the known one failed to
/// answer, before handing its address to the client: an election's worth.
fn election_window(raft: &Raft) -> Duration {
    let c = raft.config();
    Duration::from_millis(c.election_timeout_max.saturating_mul(2) + c.election_timeout_min)
}

/// Serves here (returns `Ok(None)`) or forwards to the leader (returns its
/// answer), re-routing to a new leader if the one it forwards to stops
/// answering, until `deadline`.
pub async fn route<Req, T, F, Fut>(
    raft: &Raft,
    peers: &Peers,
    req: &Request<Req>,
    deadline: Deadline,
    call: F,
) -> Result<Option<Response<T>>, Status>
where
    Req: Clone,
    F: Fn(ArborClient<Channel>, Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let forwarded = req.metadata().get(FORWARDED_HEADER).is_some();
    let body = req.get_ref();
    // The leader that last failed to answer, in its term.
    let mut lost: Option<Lost> = None;
    // The last leader that failed to answer, and why (for the final answer).
    let mut last_failure: Option<(String, String)> = None;
    loop {
        // After a failure, wait for someone else only for an election's
        // worth (then the client is told to try another replica).
        let until = match lost {
            Some(_) => (Instant::now() + election_window(raft)).min(deadline.at),
            None => deadline.at,
        };
        let (l, term) = wait_leader_other(raft, lost, until).await;
        match l {
            Leader::Me => {
                if let Some(since) = quorum_silence(raft) {
                    return Err(status::unavailable(
                        format!(
                            "this replica leads but has not heard from a quorum of replicas for {} ms \
                             (cut off from them?); retry on another replica",
                            since.as_millis()
                        ),
                        None,
                    ));
                }
                return Ok(None);
            }
            Leader::Unknown => {
                if deadline.passed() {
                    return Err(deadline.exceeded("no leader elected"));
                }
                // Not the leader that just failed to answer as a hint: it is
                // gone, or cut off from this replica (and likely from others).
                return Err(match last_failure {
                    Some((addr, why)) => status::unavailable(
                        format!(
                            "the leader at {addr} did not answer ({why}) and no other leader \
                             is elected yet; retry shortly"
                        ),
                        None,
                    ),
                    None => status::unavailable("no leader elected yet; retry shortly", None),
                });
            }
            Leader::Other { id, member } => {
                if forwarded {
                    return Err(status::unavailable(
                        "this replica is not the leader",
                        Some(&member.addr),
                    ));
                }
                let this = Lost { id, term };
                match forward_once(peers, id, &member, body.clone(), deadline, &call, || {
                    leader_moved(raft, this)
                })
                .await
                {
                    Forwarded::Answer(r) => return r.map(Some),
                    Forwarded::Lost(why) => {
                        tracing::debug!(leader = id, term, %why, "forward abandoned; re-routing");
                        lost = Some(this);
                        last_failure = Some((member.addr.clone(), why));
                        if deadline.passed() {
                            return Err(deadline.exceeded("forward to the leader"));
                        }
                    }
                }
            }
        }
    }
}

enum Forwarded<T> {
    /// The leader's answer (success or a status of its own).
    Answer(Result<Response<T>, Status>),
    /// No answer from it: unreachable, gone, not leading any more, or another
    /// leader appeared while waiting.
    Lost(String),
}

/// One forward to replica `id`'s peer port, marked as forwarded, until the
/// deadline or until `moved` resolves.
async fn forward_once<Req, T, F, Fut, M, MF>(
    peers: &Peers,
    id: NodeId,
    member: &Member,
    body: Req,
    deadline: Deadline,
    call: &F,
    moved: M,
) -> Forwarded<T>
where
    F: Fn(ArborClient<Channel>, Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
    M: FnOnce() -> MF,
    MF: Future<Output = ()>,
{
    let client = match peers.arbor(id, &member.peer_addr) {
        Ok(c) => c,
        Err(e) => return Forwarded::Answer(Err(status::internal(e))),
    };
    let mut fwd = Request::new(body);
    fwd.metadata_mut()
        .insert(FORWARDED_HEADER, "1".parse().expect("static header"));
    let left = deadline.left();
    if left.is_zero() {
        return Forwarded::Answer(Err(deadline.exceeded("forward to the leader")));
    }
    fwd.set_timeout(left);
    let answer = tokio::select! {
        r = tokio::time::timeout_at(deadline.at, call(client, fwd)) => r,
        () = moved() => return Forwarded::Lost("another leader was elected".into()),
    };
    match answer {
        Err(_) => Forwarded::Answer(Err(deadline.exceeded("forward to the leader"))),
        Ok(Ok(r)) => Forwarded::Answer(Ok(r)),
        Ok(Err(s)) => {
            // A status with a source was made on this side from a transport failure.
            let transport = s.source().is_some()
                || matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled);
            // A leader that lost leadership answers UNAVAILABLE naming another.
            let stepped_down = s.code() == tonic::Code::Unavailable
                && s.metadata().contains_key(status::LEADER_HEADER);
            if transport || stepped_down {
                if deadline.passed() {
                    return Forwarded::Answer(Err(deadline.exceeded("forward to the leader")));
                }
                Forwarded::Lost(first_line(s.message()))
            } else {
                Forwarded::Answer(Err(s))
            }
        }
    }
}

fn first_line(s: &str) -> String {
    let s = s.lines().next().unwrap_or("").trim();
    if s.is_empty() {
        "connection failed".into()
    } else {
        s.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout(&md("5S")), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(&md("250m")), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&md("2M")), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout(&md("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(&md("7u")), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(&md("9n")), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn grpc_timeout_hostile() {
        for bad in ["", "S", "5", "5s", "-5S", "123456789S", "5 S", "ffS", "5SS"] {
            assert_eq!(grpc_timeout(&md(bad)), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }

    #[test]
    fn deadline_is_capped() {
        let mut r = Request::new(());
        r.set_timeout(Duration::from_secs(3600));
        let d = Deadline::of(&r, Duration::from_secs(2));
        assert!(d.left() <= Duration::from_secs(2));
        let mut r = Request::new(());
        r.set_timeout(Duration::from_millis(100));
        let d = Deadline::of(&r, Duration::from_secs(2));
        assert!(d.left() <= Duration::from_millis(100));
        let d = Deadline::of(&Request::new(()), Duration::from_secs(2));
        assert!(d.left() > Duration::from_millis(100));
    }
}
