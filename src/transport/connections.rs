//! The accept loop both doors share, and the limits every connection lives
//! under: a cap on open connections (a permit held for the connection's life;
//! past the cap new connections wait in the listen queue), bounded backoff on
//! accept errors with a rate-limited log line, a deadline from accept to the
//! first request, an idle timeout, HTTP/2 keepalive pings and a cap on
//! concurrent streams. Graceful shutdown stops accepting and lets every open
//! connection finish what it has started.
//!
//! It knows hyper, not axum or tonic: each door hands in its tower service, a
//! wrapper for the socket and the protocol settings only it cares about.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{Request, Response, body::Incoming};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Descriptors kept back from the connection caps for everything else the
/// process opens: standard streams, both listeners, the runtime's own, the
/// store (SQLite's database and journal files, or a PostgreSQL pool of up to
/// ten), the KEK and clients files.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The most connections a port serves at once by default, however many
/// descriptors there are: plenty for the proxies and verifier pools that call
/// a key service, and a bound on the memory idle connections can hold.
const DEFAULT_CONNECTION_CEILING: u64 = 1024;

/// What each connection on a port may hold, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Requests in flight on one HTTP/2 connection.
    pub max_streams: u32,
    /// From accept to the first request, and for each request to arrive and
    /// be answered.
    pub request_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// How often a quiet HTTP/2 connection is pinged...
    pub keepalive_interval: Duration,
    /// ...and how long the peer has to answer before it is disconnected.
    pub keepalive_timeout: Duration,
}

impl Limits {
    /// A connection builder with these limits: timers, HTTP/1 header-read
    /// timeout, HTTP/2 keepalive and stream cap. Doors add their own settings.
    pub fn builder(&self) -> auto::Builder<StreamExecutor> {
        let mut builder = auto::Builder::new(StreamExecutor::for_this_runtime());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.request_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_streams)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        builder
    }
}

/// Runs the task hyper makes for each HTTP/2 stream (a gRPC call, or a
/// request on an h2c connection to the REST port).
///
/// On a runtime with one worker thread (a one-core machine or container) a
/// spawned task buys no parallelism, only its cost: the allocation, a trip
/// through the scheduler, and a wake of the connection's task to write the
/// answer. There each stream's task is first polled where hyper hands it over,
/// and spawned only if it has to wait (a request body still arriving, a key
/// in a PKCS#11 token busy); a unary call whose message is in hand is answered
/// in that one poll (1.6 µs of CPU less per gRPC call, measured with
/// `benches/load.sh`). With more workers every stream is spawned, so the calls
/// of one connection still run on every core.
#[derive(Clone, Copy, Debug)]
pub struct StreamExecutor {
    poll_first: bool,
}

impl StreamExecutor {
    /// The executor for the runtime this is called on.
    pub fn for_this_runtime() -> Self {
        let workers = tokio::runtime::Handle::try_current()
            .map_or(0, |runtime| runtime.metrics().num_workers());
        Self {
            poll_first: workers == 1,
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        if !self.poll_first {
            tokio::spawn(task);
            return;
        }
        let mut task = Box::pin(task);
        // A waker that does nothing is enough: a task that is not done is
        // spawned at once, and its first poll there registers the real one.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.as_mut().poll(&mut cx)));
        match polled {
            Ok(Poll::Ready(_)) => {}
            Ok(Poll::Pending) => {
                tokio::spawn(task);
            }
            // As a spawned task's panic would: the stream is reset when its
            // task is dropped, and the connection goes on.
            Err(_) => tracing::error!("a request's task panicked; its stream is reset"),
        }
    }
}

/// The open-file limit, raised first from its soft to its hard value (as Go
/// programs do), so the default caps can use what the operator allowed.
pub fn open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The default connection cap of each of the two ports: what the open-file
/// limit leaves after [`RESERVED_DESCRIPTORS`], halved, at most
/// [`DEFAULT_CONNECTION_CEILING`].
pub fn default_max_connections(open_files: u64) -> usize {
    let per_port = open_files.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    usize::try_from(per_port.clamp(1, DEFAULT_CONNECTION_CEILING)).unwrap_or(1)
}

/// Serves the connections `listener` accepts until `shutdown` resolves, then
/// waits until every open connection has finished (the caller bounds how
/// long). Each connection's socket is wrapped by `wrap` and served by the
/// service `make_service` returns for its peer address.
pub async fn serve<Io, S, B>(
    listener: TcpListener,
    limits: Limits,
    builder: auto::Builder<StreamExecutor>,
    wrap: impl Fn(TcpStream) -> Io,
    make_service: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let mut backoff = AcceptBackoff::default();
    let mut at_cap = Throttled::new(Duration::from_secs(60));
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                at_cap.log(|suppressed| {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        suppressed,
                        "connection limit reached; new connections wait until one closes"
                    );
                });
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    backoff.failed(&err).await;
                    continue;
                }
            },
        };
        backoff.succeeded();
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let watched = activity.clone();
        let service = Tracked {
            inner: make_service(peer),
            activity,
        };
        let connection = builder
            .serve_connection(
                TokioIo::new(wrap(stream)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let stop = stop.clone();
        tokio::spawn(async move {
            // Runs the connection until it ends: closed by the peer, idle past
            // its allowance, or drained at shutdown.
            tokio::pin!(connection);
            let mut closing = false;
            let mut hard_deadline: Option<Instant> = None;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = idle(&watched, &limits), if !closing => {
                        closing = true;
                        // A peer that ignores the GOAWAY gets one more request
                        // timeout to finish, then the socket is closed.
                        hard_deadline = Some(Instant::now() + limits.request_timeout);
                        connection.as_mut().graceful_shutdown();
                    }
                    () = sleep_until(hard_deadline), if hard_deadline.is_some() => {
                        tracing::debug!(%peer, "closed a connection that did not end when asked");
                        break;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the connection has had no request in flight for its
/// allowance: the request timeout from accept when no request has come yet,
/// the idle timeout after the last one finished.
async fn idle(activity: &Activity, limits: &Limits) {
    loop {
        let now = Instant::now();
        let deadline = match activity.quiet_since() {
            // Whatever is in flight ends within its own deadline; look again
            // one allowance from now at the latest.
            Quiet::Busy => now + limits.idle_timeout.max(Duration::from_millis(1)),
            Quiet::SinceAccept => activity.0.accepted + limits.request_timeout,
            Quiet::Since(at) => at + limits.idle_timeout,
        };
        if deadline <= now {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Since when a connection has had nothing in flight.
#[derive(Clone, Copy, Debug)]
enum Quiet {
    /// No request yet.
    SinceAccept,
    /// Since its last request finished.
    Since(Instant),
    /// A request is in flight.
    Busy,
}

/// A connection's requests: how many have started, how many have not
/// finished, and when the last one finished. Counted with atomics, as every
/// request passes through here twice; the connection's task reads them only
/// when its idle timer fires.
struct Counts {
    accepted: Instant,
    started: AtomicU64,
    in_flight: AtomicUsize,
    /// Microseconds from `accepted` to when the last request finished.
    last_finished: AtomicU64,
}

/// The connection's side of [`Counts`], shared by its service's clones.
#[derive(Clone)]
struct Activity(Arc<Counts>);

impl Activity {
    fn new() -> Self {
        Self(Arc::new(Counts {
            accepted: Instant::now(),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_finished: AtomicU64::new(0),
        }))
    }

    fn started(&self) -> InFlight {
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn quiet_since(&self) -> Quiet {
        let counts = &*self.0;
        if counts.in_flight.load(Ordering::Acquire) > 0 {
            return Quiet::Busy;
        }
        if counts.started.load(Ordering::Relaxed) == 0 {
            return Quiet::SinceAccept;
        }
        let micros = counts.last_finished.load(Ordering::Relaxed);
        Quiet::Since(counts.accepted + Duration::from_micros(micros))
    }
}

/// A request in flight; it finishes when dropped (answered or cancelled).
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let counts = &*self.0.0;
        let micros = u64::try_from(counts.accepted.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Before the count drops, so whoever sees nothing in flight also
        // sees when it ended.
        counts.last_finished.fetch_max(micros, Ordering::Relaxed);
        counts.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A service that counts its requests into the connection's [`Activity`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_flight = self.activity.started();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// Waits after accept errors, doubling from 5 ms to 1 s while they last, and
/// logs them at most once a minute. Running out of descriptors makes every
/// accept fail at once; retrying at full speed burns a core and floods the log.
struct AcceptBackoff {
    delay: Duration,
    log: Throttled,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            delay: Self::FIRST,
            log: Throttled::new(Duration::from_secs(60)),
        }
    }
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    async fn failed(&mut self, err: &io::Error) {
        // A peer that gave up before it was accepted costs nothing to skip.
        if matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        ) {
            return;
        }
        self.log.log(|suppressed| {
            tracing::warn!(error = %err, suppressed, "accept failed; backing off");
        });
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    fn succeeded(&mut self) {
        self.delay = Self::FIRST;
    }
}

/// A log line that repeats at most once per `every`, with the number of
/// occurrences it stood for in between.
struct Throttled {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    fn log(&mut self, line: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + self.every) {
            self.suppressed += 1;
            return;
        }
        line(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_leave_descriptors_for_the_rest_of_the_process() {
        assert_eq!(default_max_connections(256), 96);
        assert_eq!(default_max_connections(1024), 480);
        assert_eq!(default_max_connections(1 << 20), 1024);
        assert_eq!(default_max_connections(10), 1);
    }

    #[test]
    fn a_throttled_line_counts_what_it_held_back() {
        let mut throttled = Throttled::new(Duration::from_secs(60));
        let mut lines = Vec::new();
        for _ in 0..5 {
            throttled.log(|suppressed| lines.push(suppressed));
        }
        assert_eq!(lines, vec![0]);
        assert_eq!(throttled.suppressed, 4);
    }
}
