//! A closed-loop gRPC load generator for `benches/load.sh`: opens N HTTP/2
//! connections to a jwks-server, keeps C requests in flight for D seconds, and
//! prints requests/s, p50 and p99 latency, and every non-OK status by code
//! (h2load would count a gRPC error as a success, since it arrives as HTTP 200
//! with the status in the trailers).
//!
//! ```sh
//! cargo bench --bench grpc_load -- --addr 127.0.0.1:50051 --rpc issue \
//!     --connections 64 --concurrency 64 --duration 10
//! ```
//!
//! It is a `[[bench]]` target with its own `main` (`harness = false`), not an
//! example for readers: `cargo build --release` and `cargo test` leave it out,
//! it may use the dev-dependencies (`h2`, `hdrhistogram`) without adding them to
//! the server's, and `bench = false` keeps a plain `cargo bench` (the criterion
//! benches) from starting it without a server to load.
//!
//! Two clients, the same checks: `--client tonic` (the default) is the
//! generated tonic client, what a Rust caller of the service runs;
//! `--client h2` speaks gRPC over the `h2` crate directly (a pre-encoded
//! request, the status read from the trailers, the answer decoded with prost),
//! which costs the generator about half the CPU per call, so that on one core
//! it can keep up with a server on another.
//!
//! The last line is for scripts: `RESULT rps=… p50_us=… p99_us=… ok=… errors=…`.
//! Latency runs from sending a request to receiving its whole answer, and the
//! next request on that slot waits for it (closed loop), as with wrk: a
//! stalled server shows up as lower throughput rather than as a longer tail.
//!
//! It only targets loopback addresses, and every run is bounded in time, in
//! request count and by a per-request timeout.
// Tests and tools: a failed assumption should stop them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use jwks_server::proto::{
    GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse,
    key_service_client::KeyServiceClient,
};
use jwks_server::transport::grpc::code_name;
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, transport::Channel};

/// An answer slower than this counts as an error (`timeout`), as in wrk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Rpc {
    /// `IssueToken {}`: a valid token.
    Issue,
    /// `IssueToken {"expired": true}`.
    IssueExpired,
    /// `GetJwks {}`: the whole key set.
    Jwks,
    /// `GetJwks` with the current `etag`: `not_modified`, no keys.
    JwksEtag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// The generated tonic client.
    Tonic,
    /// gRPC framing over the h2 crate, lighter on the generator's CPU.
    H2,
}

#[derive(Debug, Parser)]
#[command(about = "Closed-loop gRPC load against a jwks-server on loopback")]
struct Args {
    /// The server's gRPC address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Which call to repeat.
    #[arg(long, value_enum, default_value = "issue")]
    rpc: Rpc,
    /// Which client sends it.
    #[arg(long, value_enum, default_value = "tonic")]
    client: ClientKind,
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests kept in flight, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run (at most 600).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests, whatever the duration.
    #[arg(long, default_value_t = 20_000_000)]
    max_requests: u64,
    /// The algorithm `issue` asks for (IssueTokenRequest.alg); default: the server's first.
    #[arg(long)]
    alg: Option<String>,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one worker saw.
struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    /// Non-OK statuses by code, plus answers that were OK but wrong.
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 µs to 60 s at 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        for (what, n) in other.errors {
            *self.errors.entry(what).or_default() += n;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("grpc_load: {} is not a loopback address", args.addr);
        return ExitCode::FAILURE;
    }
    if args.connections == 0
        || args.concurrency == 0
        || !args.duration.is_finite()
        || args.duration <= 0.0
    {
        eprintln!("grpc_load: connections, concurrency and duration must be positive");
        return ExitCode::FAILURE;
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("grpc_load: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpc_load: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(Client::connect(args.client, args.addr).await?);
    }
    let etag = match args.rpc {
        Rpc::JwksEtag => {
            let mut tonic = Client::connect(ClientKind::Tonic, args.addr).await?;
            match tonic.call(Rpc::Jwks, &Call::new(Rpc::Jwks, "", None)).await {
                Ok(Answer::Jwks(jwks)) => jwks.etag,
                _ => return Err("cannot read the current etag".into()),
            }
        }
        _ => String::new(),
    };
    let call = Call::new(args.rpc, &etag, args.alg.clone());

    let duration = Duration::from_secs_f64(args.duration.min(600.0));
    let per_worker = (args.max_requests / args.concurrency as u64).max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let call = call.clone();
            tokio::spawn(worker(client, args.rpc, call, deadline, per_worker))
        })
        .collect();
    let mut total = Tally::new();
    for worker in workers {
        total.merge(worker.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let errors: u64 = total.errors.values().sum();
    let requests = total.ok + errors;
    let rps = requests as f64 / elapsed;
    let p50 = total.latency_us.value_at_quantile(0.50);
    let p99 = total.latency_us.value_at_quantile(0.99);
    println!(
        "{:?} with the {:?} client on {} connections, {} in flight, {elapsed:.2} s: \
         {requests} requests, {rps:.1} req/s",
        args.rpc, args.client, args.connections, args.concurrency
    );
    println!(
        "latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        total.latency_us.max() as f64 / 1000.0
    );
    for (what, n) in &total.errors {
        println!("error {what}: {n}");
    }
    println!(
        "RESULT rps={rps:.1} p50_us={p50} p99_us={p99} ok={} errors={errors}",
        total.ok
    );
    Ok(())
}

/// Sends one request after another until the deadline or the count.
async fn worker(
    mut client: Client,
    rpc: Rpc,
    call: Call,
    deadline: Instant,
    max_requests: u64,
) -> Tally {
    let mut tally = Tally::new();
    for _ in 0..max_requests {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, client.call(rpc, &call))
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()))
            .and_then(|answer| judge(rpc, &answer));
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.latency_us.saturating_record(micros);
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(what) => tally.error(what),
        }
    }
    tally
}

/// The request of a run, ready for either client.
#[derive(Clone)]
struct Call {
    issue: IssueTokenRequest,
    jwks: GetJwksRequest,
    /// `/jwks.v1.KeyService/…`, for the h2 client.
    path: &'static str,
    /// The request message in gRPC framing, for the h2 client.
    frame: Bytes,
}

impl Call {
    fn new(rpc: Rpc, etag: &str, alg: Option<String>) -> Self {
        let issue = IssueTokenRequest {
            expired: rpc == Rpc::IssueExpired,
            alg,
            ..IssueTokenRequest::default()
        };
        let jwks = GetJwksRequest {
            if_none_match: etag.to_owned(),
        };
        let (path, message) = match rpc {
            Rpc::Issue | Rpc::IssueExpired => {
                ("/jwks.v1.KeyService/IssueToken", issue.encode_to_vec())
            }
            Rpc::Jwks | Rpc::JwksEtag => ("/jwks.v1.KeyService/GetJwks", jwks.encode_to_vec()),
        };
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0); // not compressed
        frame.put_u32(u32::try_from(message.len()).expect("a small message"));
        frame.put_slice(&message);
        Self {
            issue,
            jwks,
            path,
            frame: frame.freeze(),
        }
    }
}

/// A decoded OK answer.
enum Answer {
    Token(IssueTokenResponse),
    Jwks(GetJwksResponse),
}

/// `Err` names an OK answer that is not what was asked for.
fn judge(rpc: Rpc, answer: &Answer) -> Result<(), String> {
    match (rpc, answer) {
        (Rpc::Issue | Rpc::IssueExpired, Answer::Token(t)) if !t.token.is_empty() => Ok(()),
        (Rpc::Jwks, Answer::Jwks(j)) if !j.keys.is_empty() && !j.not_modified => Ok(()),
        (Rpc::JwksEtag, Answer::Jwks(j)) if j.not_modified && j.keys.is_empty() => Ok(()),
        _ => Err("OK but the wrong answer".to_owned()),
    }
}

/// One HTTP/2 connection, through either client. Clones share the connection.
#[derive(Clone)]
enum Client {
    Tonic(KeyServiceClient<Channel>),
    H2 {
        send: h2::client::SendRequest<Bytes>,
        authority: String,
    },
}

impl Client {
    async fn connect(
        kind: ClientKind,
        addr: SocketAddr,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        match kind {
            ClientKind::Tonic => {
                // A tonic Channel to one address is one HTTP/2 connection.
                let channel = Channel::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await?;
                Ok(Self::Tonic(KeyServiceClient::new(channel)))
            }
            ClientKind::H2 => {
                let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                    .await??;
                tcp.set_nodelay(true)?;
                let (send, connection) = h2::client::handshake(tcp).await?;
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        eprintln!("grpc_load: connection ended: {err}");
                    }
                });
                Ok(Self::H2 {
                    send,
                    authority: addr.to_string(),
                })
            }
        }
    }

    /// Sends one call; `Err` names a non-OK status or a broken exchange.
    async fn call(&mut self, rpc: Rpc, call: &Call) -> Result<Answer, String> {
        match self {
            Self::Tonic(client) => {
                let status = |s: tonic::Status| code_name(s.code()).to_owned();
                Ok(match rpc {
                    Rpc::Issue | Rpc::IssueExpired => Answer::Token(
                        client
                            .issue_token(call.issue.clone())
                            .await
                            .map_err(status)?
                            .into_inner(),
                    ),
                    Rpc::Jwks | Rpc::JwksEtag => Answer::Jwks(
                        client
                            .get_jwks(call.jwks.clone())
                            .await
                            .map_err(status)?
                            .into_inner(),
                    ),
                })
            }
            Self::H2 { send, authority } => {
                let message = h2_call(send, authority, call).await?;
                Ok(match rpc {
                    Rpc::Issue | Rpc::IssueExpired => {
                        Answer::Token(IssueTokenResponse::decode(message).map_err(|_| bad())?)
                    }
                    Rpc::Jwks | Rpc::JwksEtag => {
                        Answer::Jwks(GetJwksResponse::decode(message).map_err(|_| bad())?)
                    }
                })
            }
        }
    }
}

fn bad() -> String {
    "OK but not a valid message".to_owned()
}

/// One unary gRPC exchange over h2: returns the answer's message bytes, or
/// the non-OK `grpc-status` (from the trailers, or from the headers of a
/// trailers-only answer).
async fn h2_call(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    call: &Call,
) -> Result<Bytes, String> {
    let transport = |err: h2::Error| {
        if err.is_io() {
            "transport: io".to_owned()
        } else {
            format!("transport: {:?}", err.reason())
        }
    };
    std::future::poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(transport)?;
    let request = http::Request::post(format!("http://{authority}{}", call.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|err| format!("request: {err}"))?;
    let (response, mut stream) = send.send_request(request, false).map_err(transport)?;
    stream
        .send_data(call.frame.clone(), true)
        .map_err(transport)?;
    let (head, mut body) = response.await.map_err(transport)?.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(format!("HTTP {}", head.status.as_u16()));
    }
    if let Some(status) = head.headers.get("grpc-status") {
        // Trailers-only: no message follows.
        let code = Code::from_bytes(status.as_bytes());
        return Err(if code == Code::Ok {
            "OK without a message".to_owned()
        } else {
            code_name(code).to_owned()
        });
    }
    let mut data = Bytes::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(transport)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data = if data.is_empty() {
            chunk
        } else {
            let mut joined = BytesMut::from(&data[..]);
            joined.extend_from_slice(&chunk);
            joined.freeze()
        };
    }
    let trailers = body.trailers().await.map_err(transport)?;
    let code = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .map_or(Code::Unknown, |s| Code::from_bytes(s.as_bytes()));
    if code != Code::Ok {
        return Err(code_name(code).to_owned());
    }
    // One uncompressed message: flag, big-endian length, bytes.
    if data.len() < 5 || data[0] != 0 {
        return Err(bad());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() != 5 + len {
        return Err(bad());
    }
    Ok(data.slice(5..))
}
