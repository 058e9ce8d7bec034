//! A closed-loop gRPC load generator for `benches/load.sh`: opens N HTTP/2
//! connections to a jwks-server, keeps C requests in flight for D seconds, and
//! prints requests/s, p50 and p99 latency, and every non-OK status by code
//! (h2load would count a gRPC error as a success, since it arrives as HTTP 200).
//!
//! ```sh
//! cargo run --release --example grpc_load -- --addr 127.0.0.1:50051 --rpc issue \
//!     --connections 64 --concurrency 64 --duration 10
//! ```
//!
//! The last line is for scripts: `RESULT rps=… p50_us=… p99_us=… ok=… errors=…`.
//! Latency is measured from sending a request to receiving its answer, and the
//! next request waits for it (closed loop), as with wrk: a stalled server shows
//! up as lower throughput rather than as a longer tail.
//!
//! It only targets loopback addresses, and every run is bounded in time and in
//! request count.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use jwks_server::proto::{GetJwksRequest, IssueTokenRequest, key_service_client::KeyServiceClient};
use tonic::{Code, transport::Channel};

/// An answer slower than this counts as an error (`timeout`), as in wrk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, ValueEnum)]
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

#[derive(Debug, Parser)]
#[command(about = "Closed-loop gRPC load against a jwks-server on loopback")]
struct Args {
    /// The server's gRPC address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Which call to repeat.
    #[arg(long, value_enum, default_value = "issue")]
    rpc: Rpc,
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
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
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
    let uri = format!("http://{}", args.addr);
    // One Channel per connection: a tonic Channel is one HTTP/2 connection.
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = Channel::from_shared(uri.clone())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        clients.push(KeyServiceClient::new(channel));
    }
    let etag = match args.rpc {
        Rpc::JwksEtag => {
            clients[0]
                .get_jwks(GetJwksRequest::default())
                .await?
                .into_inner()
                .etag
        }
        _ => String::new(),
    };

    let duration = Duration::from_secs_f64(args.duration.min(600.0));
    let per_worker = (args.max_requests / args.concurrency as u64).max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let etag = etag.clone();
            tokio::spawn(worker(client, args.rpc, etag, deadline, per_worker))
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
        "{:?} on {} connections, {} in flight, {elapsed:.2} s: {requests} requests, {rps:.1} req/s",
        args.rpc, args.connections, args.concurrency
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
    mut client: KeyServiceClient<Channel>,
    rpc: Rpc,
    etag: String,
    deadline: Instant,
    max_requests: u64,
) -> Tally {
    let mut tally = Tally::new();
    for _ in 0..max_requests {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, call(&mut client, rpc, &etag))
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()));
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.latency_us.saturating_record(micros);
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(what) => tally.error(what),
        }
    }
    tally
}

/// One call; `Err` names a non-OK status or an OK answer that is wrong.
async fn call(client: &mut KeyServiceClient<Channel>, rpc: Rpc, etag: &str) -> Result<(), String> {
    let status = |s: tonic::Status| code_name(s.code()).to_owned();
    match rpc {
        Rpc::Issue | Rpc::IssueExpired => {
            let request = IssueTokenRequest {
                expired: matches!(rpc, Rpc::IssueExpired),
                ..IssueTokenRequest::default()
            };
            let answer = client.issue_token(request).await.map_err(status)?;
            if answer.get_ref().token.is_empty() {
                return Err("OK without a token".to_owned());
            }
        }
        Rpc::Jwks => {
            let answer = client
                .get_jwks(GetJwksRequest::default())
                .await
                .map_err(status)?;
            if answer.get_ref().keys.is_empty() {
                return Err("OK without keys".to_owned());
            }
        }
        Rpc::JwksEtag => {
            let request = GetJwksRequest {
                if_none_match: etag.to_owned(),
            };
            let answer = client.get_jwks(request).await.map_err(status)?;
            if !answer.get_ref().not_modified {
                return Err("OK but not not_modified".to_owned());
            }
        }
    }
    Ok(())
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
