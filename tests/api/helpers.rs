//! `spawn_app()` and the independent verifier every test leans on.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, DecodingKey, TokenData, Validation, decode, decode_header};
use jwks_server::{
    config::{Config, Secret, StoreUrl},
    proto::key_service_client::KeyServiceClient,
    startup::Application,
};
use serde_json::Value;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// A running server on ephemeral ports with its own temporary store.
pub struct TestApp {
    pub http: String,
    pub grpc_addr: SocketAddr,
    pub client: reqwest::Client,
    pub config: Config,
    /// Kept alive for the test's duration; holds the SQLite store.
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), jwks_server::startup::StartupError>>>,
}

/// A KEK for tests (fixed, so restarts in one test open the same keys).
pub const TEST_KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Defaults, on 127.0.0.1 port 0, with a store in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::defaults();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    let path = dir.join("jwks.db");
    config.store = StoreUrl::Sqlite {
        url: format!("sqlite://{}", path.display()),
        path,
    };
    config.kek = vec![TEST_KEK.parse::<Secret>().unwrap()];
    config.kek_file = None;
    config.issuer = "https://issuer.test".to_owned();
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    adjust(&mut config);
    start(config, dir).await
}

/// Starts a server on `config` (its store may already hold keys).
pub async fn start(config: Config, dir: TempDir) -> TestApp {
    init_test_log();
    let app = Application::build(config.clone())
        .await
        .expect("server starts");
    run_app(app, config, dir)
}

/// Serves an already built `app` (e.g. one over an injected store).
pub fn run_app(app: Application, config: Config, dir: TempDir) -> TestApp {
    let http = format!("http://{}", app.http_addr());
    let grpc_addr = app.grpc_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    TestApp {
        http,
        grpc_addr,
        client: reqwest::Client::new(),
        config,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// `GET {path}` as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn jwks(&self) -> Value {
        let response = self
            .client
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `POST /auth{query}` and the plain-text token it returns.
    pub async fn token(&self, query: &str) -> String {
        let response = self
            .client
            .post(self.url(&format!("/auth{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "POST /auth{query}");
        response.text().await.unwrap()
    }

    /// `GET {path}`, to add headers to before `.response()`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// `POST {path}`, to add headers or a body to before `.response()`.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// `{method} {path}`, to add to before `.response()`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `POST /auth{query}` with no body, whatever the status.
    pub async fn post_auth(&self, query: &str) -> reqwest::Response {
        self.post(&format!("/auth{query}")).response().await
    }

    /// `POST /auth` with `body` as `content_type`, whatever the status.
    pub async fn post_auth_body(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post("/auth")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .response()
            .await
    }

    pub async fn grpc(&self) -> KeyServiceClient<Channel> {
        KeyServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("gRPC connects")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub fn store_path(&self) -> PathBuf {
        match &self.config.store {
            StoreUrl::Sqlite { path, .. } => path.clone(),
            StoreUrl::Postgres(_) => panic!("not a sqlite store"),
        }
    }

    /// Stops the server gracefully and returns its store directory for a restart.
    pub async fn stop(mut self) -> (Config, TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within the drain timeout")
                .expect("server task did not panic")
                .expect("server exits cleanly");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (self.config.clone(), dir)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends a request the tests built and returns the response, whatever its
/// status; only a request that gets no response at all fails the test.
pub trait Respond {
    async fn response(self) -> reqwest::Response;
}

impl Respond for reqwest::RequestBuilder {
    async fn response(self) -> reqwest::Response {
        self.send().await.expect("the server answers")
    }
}

/// Verifies `token` the way a relying party would: find its `kid` in `jwks`,
/// build the key from the JWK's `n` and `e` alone, check RS256 and the times.
pub fn verify(token: &str, jwks: &Value) -> Result<TokenData<Value>, String> {
    verify_with(token, jwks, |_| {})
}

pub fn verify_with(
    token: &str,
    jwks: &Value,
    adjust: impl FnOnce(&mut Validation),
) -> Result<TokenData<Value>, String> {
    let header = decode_header(token).map_err(|e| format!("bad header: {e}"))?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .ok_or("no keys array")?
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().ok_or("no n")?,
        jwk["e"].as_str().ok_or("no e")?,
    )
    .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "sub", "jti"]);
    adjust(&mut validation);
    decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())
}

/// The claims of a token, read without verifying (to inspect expired ones).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three segments");
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

pub fn header(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(header).unwrap()).unwrap()
}

pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The real binary in its own process (for replicas, signals and crashes).
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub http: String,
    pub grpc: SocketAddr,
    /// Every log line it has written so far (JSON).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The task copying its stderr into `log`; it ends at end of file.
    drain: tokio::task::JoinHandle<()>,
}

impl ServerProcess {
    /// Starts `jwks-server` with `env` on top of a clean environment with
    /// loopback port-0 listeners, the test KEK and JSON logs, and waits until
    /// it listens.
    pub async fn spawn(env: &[(&str, &str)]) -> Self {
        Self::spawn_program(&[env!("CARGO_BIN_EXE_jwks-server")], env).await
    }

    /// Like [`Self::spawn`], with the command line `program` instead of the
    /// test build's binary: another build, or the binary behind a wrapper
    /// such as `prlimit --nofile=256:256 --`.
    pub async fn spawn_program(program: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut command = tokio::process::Command::new(program[0]);
        command
            .args(&program[1..])
            .env_clear()
            .envs(crate::helpers::passthrough_env())
            .env("JWKS_KEK", TEST_KEK)
            .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
            .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
            .env("JWKS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("server process starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "jwks-server listening"
                {
                    return event;
                }
            }
            panic!("server exited before listening: {:?}", log.lock().unwrap());
        })
        .await
        .expect("server listens within 30 s");
        // Keep draining (and keeping) its log so the pipe never fills.
        let sink = log.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            http: format!("http://{}", listening["http_addr"].as_str().unwrap()),
            grpc: listening["grpc_addr"].as_str().unwrap().parse().unwrap(),
            log,
            drain,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (at most `limit`) until a log line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.log_text().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?} within {limit:?}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most `limit`) for the process to exit and for every line it
    /// wrote to be read, then returns its exit status and whole log.
    pub async fn exited(self, limit: Duration) -> (std::process::ExitStatus, String) {
        let Self {
            mut child,
            log,
            drain,
            ..
        } = self;
        tokio::time::timeout(limit, async {
            let status = child.wait().await.expect("wait for the server process");
            drain.await.expect("log reader");
            let text = log.lock().unwrap().join("\n");
            (status, text)
        })
        .await
        .expect("the server exits in time")
    }
}

/// The parts of the test's environment a child server keeps after
/// `env_clear()`: where coverage tools want their profiles written.
pub fn passthrough_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name == "LLVM_PROFILE_FILE" || name == "CARGO_LLVM_COV")
        .collect()
}

/// With `TEST_LOG` set (to anything but empty or `0`), in-process servers log
/// to the test's captured output, which the test harness prints when the test
/// fails (or always, with `-- --nocapture`). `RUST_LOG` filters (default
/// `info`). Off by default: a passing suite stays quiet. Servers started as
/// processes (`ServerProcess`) keep their own log in `ServerProcess::log`.
///
/// The harness captures what the test's own thread prints; `#[tokio::test]`
/// runs the server's tasks on that thread unless a test asks for a
/// multi-threaded runtime.
pub fn init_test_log() {
    let wanted = std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
    if wanted {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Only the first call installs it; later ones find it in place.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init();
    }
}

/// `-----BEGIN PUBLIC KEY-----` PEM of an RSA JWK, written here from `n`
/// and `e` (X.509 SubjectPublicKeyInfo, RFC 8017 appendix A.1.1), as a
/// library's `openssl pkey -pubout` would, so the test does not lean on the
/// server's encoder.
pub fn rsa_public_pem(jwk: &Value) -> String {
    fn len(n: usize) -> Vec<u8> {
        match n {
            0..=127 => vec![n as u8],
            128..=255 => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(len(body.len()));
        out.extend(body);
        out
    }
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if bytes[0] & 0x80 != 0 {
            body.push(0);
        }
        body.extend(bytes);
        tlv(0x02, &body)
    }
    let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = B64.decode(jwk["e"].as_str().unwrap()).unwrap();
    let rsa_public_key = tlv(0x30, &[integer(&n), integer(&e)].concat());
    let mut bits = vec![0u8];
    bits.extend(rsa_public_key);
    let algorithm = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let spki = tlv(0x30, &[algorithm.to_vec(), tlv(0x03, &bits)].concat());
    let text = base64::engine::general_purpose::STANDARD.encode(spki);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}
