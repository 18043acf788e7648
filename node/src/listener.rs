//! The accept loop and the per-connection limits of a listener.
//!
//! [`Incoming`] is the stream of connections a tonic server serves
//! (`serve_with_incoming_shutdown`). It
//!
//! - holds at most `limits.max-connections` open connections: each [`Conn`]
//!   carries a permit of the listener's semaphore, given back when hyper
//!   drops the connection. A connection beyond the limit is accepted and
//!   closed at once, so the kernel's backlog does not fill up with
//!   connections nobody will serve and the loop does not spin on a listener
//!   that stays readable;
//! - backs off for [`ACCEPT_BACKOFF`] when `accept` fails for want of
//!   resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) instead of retrying
//!   at once, which used to keep a core busy at 100 % while the connections
//!   already open went on being served by their own tasks;
//! - logs both conditions as warnings at most every [`WARN_EVERY`], with the
//!   number of occurrences since the last one.
//!
//! [`Conn`] implements tonic's `Connected` by delegating to the TCP stream's
//! (`TcpConnectInfo`), so `Request::remote_addr` works, and so does
//! `peer_certs` when the connection is wrapped in TLS.
//!
//! Idle connections (`limits.idle-timeout-ms`): the server's [`TrackLayer`]
//! counts the calls open on each connection (found by its local and remote
//! address in the listener's [`Tracker`]); a connection that has had no call
//! open for the idle timeout, and has sent nothing for a second, is closed
//! (its reads end, and hyper drops it). A connection on which no call was
//! ever seen is closed only if it has also sent nothing for the idle timeout:
//! a TCP connection that never speaks HTTP/2 holds a slot no longer than that.
//! HTTP/2 keepalive pings (`limits.keepalive-*`) close connections whose
//! peer has gone away.
//!
//! [`raise_fd_limit`] raises the soft `RLIMIT_NOFILE` to the hard limit at
//! start-up.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::Status;

use crate::limits::{exhausted, Limits};

/// Pause of the accept loop after an `accept` that failed for want of resources.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Warnings about refused connections or failing accepts, at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A connection that sent something this recently is not closed as idle
/// (a call may be on its way to the service).
const READ_GRACE: Duration = Duration::from_secs(1);

/// Raises the soft limit on open files to the hard limit. Returns the
/// (soft, hard) limits now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// [`raise_fd_limit`], logging what it did.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit_logged() {
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local rlimit.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) } == 0;
    match raise_fd_limit() {
        Ok((soft, hard)) if known && before.rlim_cur as u64 != soft => {
            tracing::info!(
                soft,
                hard,
                "raised the open-file limit (was {})",
                before.rlim_cur
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// A warning that is logged at most every [`WARN_EVERY`].
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    since: u64,
}

impl RateLimited {
    /// Counts one occurrence; `Some(n)` (occurrences since the last
    /// warning) when it is time to warn again.
    fn hit(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// The connections a listener holds open now (for the metrics).
#[derive(Clone)]
pub struct OpenCount {
    slots: Arc<Semaphore>,
    max: usize,
}

impl OpenCount {
    pub fn get(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// The connections a listener accepts, within `limits.max-connections`.
pub struct Incoming {
    listener: TcpListener,
    /// The peer port: every service is held to `max-peer-message-bytes`.
    peer: bool,
    slots: Arc<Semaphore>,
    limits: Limits,
    tracker: Tracker,
    backoff: Option<Pin<Box<Sleep>>>,
    refused: RateLimited,
    failed: RateLimited,
}

impl Incoming {
    pub fn new(listener: TcpListener, limits: &Limits) -> Incoming {
        Incoming {
            listener,
            peer: false,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits: *limits,
            tracker: Tracker::default(),
            backoff: None,
            refused: RateLimited::default(),
            failed: RateLimited::default(),
        }
    }

    /// The peer port's listener: message limits are `max-peer-message-bytes`.
    pub fn for_peers(mut self) -> Incoming {
        self.peer = true;
        self
    }

    /// A server configured with the per-connection limits, counting calls
    /// per connection of this listener (see the module docs).
    pub fn server(
        &self,
    ) -> tonic::transport::Server<tower_layer::Stack<TrackLayer, tower_layer::Identity>> {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            .http2_keepalive_interval(self.limits.keepalive_interval())
            .http2_keepalive_timeout(self.limits.keepalive_timeout())
            .layer(TrackLayer {
                tracker: self.tracker.clone(),
                limits: self.limits,
                peer: self.peer,
            })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.slots.available_permits()
    }

    /// A handle that reads [`Incoming::open`] after the listener moved into its server.
    pub fn open_counter(&self) -> OpenCount {
        OpenCount {
            slots: self.slots.clone(),
            max: self.limits.max_connections,
        }
    }

    fn accepted(&mut self, stream: TcpStream) -> Option<Conn> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            drop(stream);
            if let Some(n) = self.refused.hit() {
                tracing::warn!(
                    refused = n,
                    "connection limit reached (limits.max-connections = {}): closing new connections",
                    self.limits.max_connections
                );
            }
            return None;
        };
        let _ = stream.set_nodelay(true);
        let idle = self.limits.idle_timeout().map(|timeout| {
            let activity = self.tracker.register(&stream);
            Idle {
                timeout,
                sleep: Box::pin(tokio::time::sleep(timeout)),
                last_read: Instant::now(),
                activity,
                tracker: self.tracker.clone(),
                key: key_of(&stream),
            }
        });
        Some(Conn {
            stream,
            _permit: permit,
            idle,
        })
    }
}

/// Errors after which accepting again at once is fine.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.backoff.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.backoff = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, _)) => {
                    if let Some(conn) = this.accepted(stream) {
                        return Poll::Ready(Some(Ok(conn)));
                    }
                }
                Err(e) if transient(&e) => {}
                Err(e) => {
                    if let Some(n) = this.failed.hit() {
                        tracing::warn!(
                            error = %e,
                            failures = n,
                            open = this.open(),
                            "cannot accept connections (out of file descriptors?); \
                             retrying every {} ms, open connections are still served",
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                }
            }
        }
    }
}

type ConnKey = (Option<SocketAddr>, Option<SocketAddr>);

fn key_of(stream: &TcpStream) -> ConnKey {
    (stream.local_addr().ok(), stream.peer_addr().ok())
}

/// What the server knows of one connection's calls.
struct Activity {
    /// Calls open now.
    calls: AtomicUsize,
    /// A call was seen on this connection.
    seen: AtomicBool,
    /// Since when no call is open.
    idle_since: Mutex<Instant>,
}

/// The connections of one listener, by local and remote address, for the
/// server's [`TrackLayer`].
#[derive(Clone, Default)]
pub struct Tracker {
    conns: Arc<Mutex<HashMap<ConnKey, Arc<Activity>>>>,
}

impl Tracker {
    fn register(&self, stream: &TcpStream) -> Arc<Activity> {
        let a = Arc::new(Activity {
            calls: AtomicUsize::new(0),
            seen: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
        });
        self.lock().insert(key_of(stream), a.clone());
        a
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnKey, Arc<Activity>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call on the connection it arrived on, until the guard drops
    /// (plain `TcpConnectInfo`, or `TlsConnectInfo<TcpConnectInfo>` over TLS).
    fn call_started(&self, ext: &http::Extensions) -> Option<CallGuard> {
        let info = ext.get::<TcpConnectInfo>().or_else(|| {
            ext.get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
                .map(|t| t.get_ref())
        })?;
        let a = self
            .lock()
            .get(&(info.local_addr, info.remote_addr))?
            .clone();
        a.seen.store(true, Ordering::Relaxed);
        a.calls.fetch_add(1, Ordering::SeqCst);
        Some(CallGuard(a))
    }
}

struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// The idle timer of one connection.
struct Idle {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    last_read: Instant,
    activity: Arc<Activity>,
    tracker: Tracker,
    key: ConnKey,
}

impl Idle {
    /// Whether the connection is to be closed now; otherwise the timer is
    /// set for the next time it could be, and registered with `cx`.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let due = if self.activity.calls.load(Ordering::SeqCst) > 0 {
                now + self.timeout
            } else {
                let since = *self
                    .activity
                    .idle_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let quiet = if self.activity.seen.load(Ordering::Relaxed) {
                    READ_GRACE
                } else {
                    self.timeout
                };
                (since + self.timeout).max(self.last_read + quiet)
            };
            if due <= now {
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let mut conns = self.tracker.lock();
        if conns
            .get(&self.key)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            conns.remove(&self.key);
        }
    }
}

/// An accepted connection: the TCP stream, its slot of the listener's
/// connection limit and its idle timer.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Option<Idle>,
}

impl Conn {
    /// The TCP stream (e.g. for a TLS acceptor's diagnostics).
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(idle) = this.idle.as_mut() {
            if idle.expired(cx) {
                tracing::debug!(peer = ?idle.key.1, "closing an idle connection");
                // End of stream: hyper closes the connection.
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(idle)) = (&r, this.idle.as_mut()) {
            if buf.filled().len() > before {
                idle.last_read = Instant::now();
            }
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Server layer: counts the calls open on each connection (idle timeout)
/// and renames tonic's refusal of an oversized request so that it names the
/// limit's config key.
#[derive(Clone)]
pub struct TrackLayer {
    tracker: Tracker,
    limits: Limits,
    peer: bool,
}

impl<S> tower_layer::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            tracker: self.tracker.clone(),
            limits: self.limits,
            peer: self.peer,
        }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    tracker: Tracker,
    limits: Limits,
    peer: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tonic::codegen::Service<http::Request<B>> for Track<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = self.tracker.call_started(req.extensions());
        let limit = message_limit(req.uri().path(), &self.limits, self.peer);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some((key, limit)) = limit {
                rename_size_refusal(resp.headers_mut(), key, limit);
            }
            Ok(match guard {
                None => resp,
                Some(g) => resp.map(|b| tonic::body::Body::new(Guarded { body: b, _guard: g })),
            })
        })
    }
}

/// The config key limiting request messages of the service at `path`
/// (every service on the peer port is held to `max-peer-message-bytes`).
fn message_limit(path: &str, l: &Limits, peer: bool) -> Option<(&'static str, usize)> {
    if peer && (path.starts_with("/arbor.v1.Arbor/") || path.starts_with("/arbor.v1.Raft/")) {
        Some(("max-peer-message-bytes", l.max_peer_message_bytes))
    } else if path.starts_with("/arbor.v1.Arbor/") {
        Some(("max-client-message-bytes", l.max_client_message_bytes))
    } else {
        None
    }
}

/// tonic refuses a request message over its decode limit with
/// `OUT_OF_RANGE` and a message of its own, in the response headers (a
/// trailers-only response); made `RESOURCE_EXHAUSTED` naming the key here.
fn rename_size_refusal(headers: &mut http::HeaderMap, key: &str, limit: usize) {
    if !headers.contains_key("grpc-status") {
        return;
    }
    let Some(s) = Status::from_header_map(headers) else {
        return;
    };
    if s.code() != tonic::Code::OutOfRange
        || !s.message().contains("decoded message length too large")
    {
        return;
    }
    let renamed = exhausted(
        key,
        limit,
        format_args!("request too large: {}", s.message()),
    );
    headers.remove("grpc-status-details-bin");
    let _ = renamed.add_header(headers);
}

/// A response body holding its connection's call count until it is dropped.
struct Guarded {
    body: tonic::body::Body,
    _guard: CallGuard,
}

impl http_body::Body for Guarded {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status;

    #[test]
    fn warnings_are_rate_limited() {
        let mut w = RateLimited::default();
        assert_eq!(w.hit(), Some(1));
        assert_eq!(w.hit(), None);
        assert_eq!(w.hit(), None);
        w.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(w.hit(), Some(3));
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let (soft, hard) = raise_fd_limit().unwrap();
        assert_eq!(soft, hard);
    }

    #[test]
    fn oversized_requests_name_the_key() {
        let mut h = http::HeaderMap::new();
        status::out_of_range(
            "Error, decoded message length too large: found 9000 bytes, the limit is: 4096 bytes",
        )
        .add_header(&mut h)
        .unwrap();
        rename_size_refusal(&mut h, "max-client-message-bytes", 4096);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message()
                .contains("limits.max-client-message-bytes = 4096"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("found 9000 bytes"), "{}", s.message());

        // Other refusals are left alone.
        let mut h = http::HeaderMap::new();
        status::out_of_range("from_seq is too far ahead")
            .add_header(&mut h)
            .unwrap();
        rename_size_refusal(&mut h, "max-client-message-bytes", 4096);
        assert_eq!(
            Status::from_header_map(&h).unwrap().code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn services_have_their_message_limits() {
        let l = Limits::default();
        assert_eq!(
            message_limit("/arbor.v1.Arbor/Submit", &l, false),
            Some(("max-client-message-bytes", l.max_client_message_bytes))
        );
        assert_eq!(
            message_limit("/grpc.health.v1.Health/Check", &l, false),
            None
        );
        assert_eq!(
            message_limit("/arbor.v1.Raft/AppendEntries", &l, true),
            Some(("max-peer-message-bytes", l.max_peer_message_bytes))
        );
        assert_eq!(
            message_limit("/arbor.v1.Raft/AppendEntries", &l, false),
            None
        );
    }

    /// Connections beyond the limit are closed at once; those within it stay.
    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed() {
        use futures::StreamExt;
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let mut incoming = Incoming::new(listener, &limits);
        let a = TcpStream::connect(addr).await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        let held = vec![
            incoming.next().await.unwrap().unwrap(),
            incoming.next().await.unwrap().unwrap(),
        ];
        assert_eq!(incoming.open(), 2);
        let mut c = TcpStream::connect(addr).await.unwrap();
        let accept = tokio::spawn(async move {
            let next = incoming.next().await;
            (incoming, next.map(|r| r.is_ok()))
        });
        // The third is closed by the server: its read ends.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("the connection over the limit is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // A slot given back is used again.
        drop(held);
        let _d = TcpStream::connect(addr).await.unwrap();
        let (incoming, next) = tokio::time::timeout(Duration::from_secs(10), accept)
            .await
            .expect("accepted after a slot was freed")
            .unwrap();
        assert_eq!(next, Some(true));
        assert_eq!(
            incoming.open(),
            0,
            "the accepted Conn was dropped by the task"
        );
        drop((a, b));
    }
}
