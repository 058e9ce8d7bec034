//! Configuration: one clap struct whose doc comments are `--help`. Every
//! setting is a flag with a `JWKS_*` environment variable and a default.
//! Secrets (KEKs, a store URL's password) are `secrecy` types: never printed,
//! zeroized on drop.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::keys::{
    algorithm::{Algorithm, RsaKeySize},
    policy::{Policy, PolicyError},
};
/// Where `--store` points; the type lives with the store (see [`crate::store::StoreUrl`]).
pub use crate::store::StoreUrl;

/// `--algorithms`: a non-empty list without repeats, the default first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Algorithms(pub Vec<Algorithm>);

/// The command line: the settings, and which command to run.
#[derive(Debug, Parser)]
#[command(
    name = "jwks-server",
    version,
    about = "Owns signing keys, publishes them as a JWKS and issues JWTs (RS256 by default; PS256, ES256, EdDSA) and OAuth 2.0 access tokens over REST and gRPC.",
    long_about = None,
)]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)] // A doc comment here would change `--help`.
    pub config: Config,
    #[command(subcommand)]
    #[allow(missing_docs)] // A doc comment here would change `--help`.
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // A doc comment here would change `--help`.
pub enum Command {
    /// Run the server (what happens with no subcommand).
    Serve,
    /// Inspect and manage the keys in the store; safe while servers are running.
    Keys {
        #[command(subcommand)]
        #[allow(missing_docs)] // A doc comment here would change `--help`.
        action: KeysCommand,
    },
    /// Read a client secret from standard input and print its argon2id hash,
    /// for the `secret_hash` of a --clients-file entry.
    HashSecret,
    /// Test a verifier: send a valid token and every defective token of a
    /// running jwks-server's catalogue to URL, and check that only the valid
    /// one is accepted. Exit status 0: all as expected; 1: the valid token
    /// was refused or a defective one accepted; 2: the probe could not run.
    Probe(ProbeArgs),
}

/// `jwks-server probe`: where the tokens come from and how they are sent.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Probe options")]
pub struct ProbeArgs {
    /// The protected URL of the service under test; each token is sent to it
    /// in a GET request.
    pub url: String,

    /// Base URL of the running jwks-server that makes the tokens.
    #[arg(
        long,
        env = "JWKS_PROBE_SERVER",
        default_value = "http://localhost:8080"
    )]
    pub server: String,

    /// The `aud` of every token (the audience the service expects); default:
    /// the server's default for the route.
    #[arg(long, env = "JWKS_PROBE_AUDIENCE")]
    pub audience: Option<String>,

    /// The signing algorithm (one of the server's --algorithms); default:
    /// the server's first.
    #[arg(long, env = "JWKS_PROBE_ALG", value_parser = bounds::algorithm)]
    pub alg: Option<Algorithm>,

    /// Probe with RFC 9068 access tokens from /oauth2/token (client
    /// credentials grant) instead of /auth tokens.
    #[arg(long)]
    pub token_endpoint: bool,

    /// The client id for --token-endpoint (a server without --clients-file
    /// takes any).
    #[arg(
        long,
        env = "JWKS_PROBE_CLIENT_ID",
        default_value = "jwks-server-probe"
    )]
    pub client_id: String,

    /// The client's secret (prefer the environment variable; flags show up
    /// in `ps`). Never printed.
    #[arg(long, env = "JWKS_PROBE_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<Secret>,

    /// Send the token in this header, as the bare token, instead of
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, env = "JWKS_PROBE_HEADER", value_name = "NAME")]
    pub header: Option<String>,

    /// Another header for every request to URL, as `Name: value`; repeatable.
    #[arg(long = "extra-header", value_name = "NAME: VALUE")]
    pub extra_headers: Vec<String>,

    /// Only these defects, comma-separated [default: every defect the server
    /// offers for the route].
    #[arg(long, env = "JWKS_PROBE_DEFECTS", value_delimiter = ',')]
    pub defects: Vec<String>,

    /// A PEM file of CA certificates to trust for https URLs (the server's
    /// or the service's), besides the system's.
    #[arg(long, env = "JWKS_PROBE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// How long each request (to the server or to URL) may take (1s to 1h).
    #[arg(long, env = "JWKS_PROBE_TIMEOUT", default_value = "10s", value_parser = bounds::request_timeout)]
    pub timeout: Duration,

    /// Print the results as JSON: `{"results": [{"defect", "expected",
    /// "status", "verdict"}], "passed", "failed"}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // A doc comment here would change `--help`.
pub enum KeysCommand {
    /// List every key with its state and times.
    List,
    /// Create the next key now, of every configured algorithm or of one. It
    /// is published at once and signs after --publish-ahead; running servers
    /// pick it up within --reload-every.
    Rotate {
        /// Rotate only this algorithm (one of --algorithms); default: all.
        #[arg(long, value_parser = bounds::algorithm)]
        alg: Option<Algorithm>,
    },
    /// Re-seal every key under the first configured KEK (after adding a new one).
    Reseal,
    /// Delete one key from the store (for example an expired key whose row is
    /// damaged); running servers drop it within --reload-every.
    Remove {
        /// The key's `kid`, as `keys list` shows it. A kid is base64url and
        /// may start with `-`, so it is never read as a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Also remove a key that signs now or whose tokens may still be in
        /// use: verifiers then reject every token it signed.
        #[arg(long)]
        force: bool,
    },
}

/// `--log-format`: how log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the server and its subcommands.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// REST listen address.
    #[arg(
        long,
        env = "JWKS_HTTP_ADDR",
        default_value = "0.0.0.0:8080",
        global = true
    )]
    pub http_addr: SocketAddr,

    /// gRPC listen address.
    #[arg(
        long,
        env = "JWKS_GRPC_ADDR",
        default_value = "0.0.0.0:50051",
        global = true
    )]
    pub grpc_addr: SocketAddr,

    /// Key store URL: sqlite://PATH (embedded, the default) or
    /// postgres://USER:PASSWORD@HOST/DB (shared by replicas).
    #[arg(
        long,
        env = "JWKS_STORE",
        default_value = "sqlite://jwks.db",
        global = true
    )]
    pub store: StoreUrl,

    /// The `iss` claim of issued tokens and the base of every URL discovery
    /// advertises. Empty (the default): `http://HOST:PORT` of where
    /// --http-addr actually listens, `localhost` for an unspecified address.
    #[arg(long, env = "JWKS_ISSUER", default_value = "", global = true)]
    pub issuer: String,

    /// Default and maximum token lifetime (1s to 365d).
    #[arg(long, env = "JWKS_TOKEN_TTL", default_value = "15m", value_parser = bounds::token_ttl, global = true)]
    pub token_ttl: Duration,

    /// How long each key signs before the next one takes over (1s to 3650d).
    #[arg(long, env = "JWKS_ROTATE_EVERY", default_value = "30m", value_parser = bounds::key_period, global = true)]
    pub rotate_every: Duration,

    /// How long verifiers may cache the JWKS (Cache-Control max-age; 0s to 30d).
    #[arg(long, env = "JWKS_JWKS_MAX_AGE", default_value = "10m", value_parser = bounds::jwks_max_age, global = true)]
    pub jwks_max_age: Duration,

    /// How often to reload keys from the store (replicas see each other's
    /// rotations within this; 1s to 1d).
    #[arg(long, env = "JWKS_RELOAD_EVERY", default_value = "10s", value_parser = bounds::reload_every, global = true)]
    pub reload_every: Duration,

    /// Clock difference tolerated between this service and verifiers (0s to 1d).
    #[arg(long, env = "JWKS_CLOCK_SKEW", default_value = "5m", value_parser = bounds::clock_skew, global = true)]
    pub clock_skew: Duration,

    /// How long before it signs a new key is published [default and minimum:
    /// jwks-max-age + reload-every; at most 3650d].
    #[arg(long, env = "JWKS_PUBLISH_AHEAD", value_parser = bounds::key_window, global = true)]
    pub publish_ahead: Option<Duration>,

    /// How long a key stays published after it stops signing [default and
    /// minimum: token-ttl + jwks-max-age + clock-skew; at most 3650d].
    #[arg(long, env = "JWKS_RETAIN_AFTER", value_parser = bounds::key_window, global = true)]
    pub retain_after: Option<Duration>,

    /// How many expired keys to keep for `expired=true` tokens (1 to 10000).
    #[arg(long, env = "JWKS_KEEP_EXPIRED", default_value_t = 3, value_parser = bounds::keep_expired, global = true)]
    pub keep_expired: usize,

    /// The algorithms that sign, comma-separated: RS256, PS256, ES256 (P-256),
    /// EdDSA (Ed25519). Each has its own keys; the first signs requests that
    /// name none.
    #[arg(long, env = "JWKS_ALGORITHMS", default_value = "RS256", value_parser = bounds::algorithms, global = true)]
    pub algorithms: Algorithms,

    /// The modulus size of new RSA keys: 2048, 3072 or 4096. Stored keys of
    /// every size keep working when it changes.
    #[arg(long, env = "JWKS_RSA_KEY_BITS", default_value = "2048", value_parser = bounds::rsa_key_bits, global = true)]
    pub rsa_key_bits: RsaKeySize,

    /// Key-encryption keys: base64 of 32 bytes, comma-separated. The first seals
    /// new keys; all open existing ones. Prefer the environment variable or
    /// --kek-file over the flag (flags show up in `ps`).
    #[arg(
        long,
        env = "JWKS_KEK",
        hide_env_values = true,
        value_delimiter = ',',
        global = true
    )]
    pub kek: Vec<Secret>,

    /// File of key-encryption keys, one base64 KEK per line (first seals). With
    /// neither this nor JWKS_KEK, a SQLite store gets a generated KEK file
    /// beside it (PATH.kek, mode 0600).
    #[arg(long, env = "JWKS_KEK_FILE", global = true)]
    pub kek_file: Option<PathBuf>,

    /// The old name of --test-tokens, kept working: `--expired-tokens=false`
    /// refuses `expired=true` and every other test token with 403 /
    /// PERMISSION_DENIED. --test-tokens wins when both are given.
    #[arg(long, env = "JWKS_EXPIRED_TOKENS", action = clap::ArgAction::Set, global = true)]
    pub expired_tokens: Option<bool>,

    /// Issue test tokens: `expired=true` and every `defect=NAME` of
    /// `GET /test-tokens`, all or none. Unset: on without --clients-file, off
    /// with it (a registered client's test token is signed by a real key).
    /// Off, they are refused with 403 / PERMISSION_DENIED (`invalid_request`
    /// at the token endpoint).
    #[arg(long, env = "JWKS_TEST_TOKENS", action = clap::ArgAction::Set, global = true)]
    pub test_tokens: Option<bool>,

    /// Require client credentials to issue tokens: a JSON file of clients,
    /// `{"clients":[{"id":"…","secret_hash":"$argon2id$…","audiences":["…"]}]}`
    /// (make hashes with `jwks-server hash-secret`). Off when unset.
    #[arg(long, env = "JWKS_CLIENTS_FILE", global = true)]
    pub clients_file: Option<PathBuf>,

    /// PKCS#11 module (shared library) holding new signing keys, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so. Unset: keys are made in software and
    /// sealed in the store. Set: every new key is generated in the token,
    /// never extractable; software keys already stored sign until they retire.
    #[arg(long, env = "JWKS_PKCS11_MODULE", global = true)]
    pub pkcs11_module: Option<PathBuf>,

    /// The label of the PKCS#11 token holding the keys (or --pkcs11-slot).
    #[arg(
        long,
        env = "JWKS_PKCS11_TOKEN_LABEL",
        conflicts_with = "pkcs11_slot",
        global = true
    )]
    pub pkcs11_token_label: Option<String>,

    /// The slot id of the PKCS#11 token holding the keys (or --pkcs11-token-label).
    #[arg(long, env = "JWKS_PKCS11_SLOT", global = true)]
    pub pkcs11_slot: Option<u64>,

    /// The token's user PIN. Prefer --pkcs11-pin-file or the environment
    /// variable (flags show up in `ps`); never printed or logged.
    #[arg(
        long,
        env = "JWKS_PKCS11_PIN",
        hide_env_values = true,
        conflicts_with = "pkcs11_pin_file",
        global = true
    )]
    pub pkcs11_pin: Option<Secret>,

    /// File holding the token's user PIN (its first line).
    #[arg(long, env = "JWKS_PKCS11_PIN_FILE", global = true)]
    pub pkcs11_pin_file: Option<PathBuf>,

    /// Tokens a second each client (or, without --clients-file, each source
    /// address) may be issued; 0 turns rate limiting off (at most 1000000). The
    /// JWKS is never limited.
    #[arg(long, env = "JWKS_RATE_LIMIT", default_value_t = 0, value_parser = bounds::rate_limit, global = true)]
    pub rate_limit: u32,

    /// Burst allowed above --rate-limit (1 to 1000000) [default: the rate].
    #[arg(long, env = "JWKS_RATE_BURST", value_parser = bounds::rate_burst, global = true)]
    pub rate_burst: Option<u32>,

    /// How long a request (REST: headers and body; gRPC: the whole call) may
    /// take to arrive and be answered before it gets 408 / DEADLINE_EXCEEDED,
    /// and how long a new connection may take to send its first request; slow
    /// clients do not hold connections forever (1s to 1h).
    #[arg(long, env = "JWKS_REQUEST_TIMEOUT", default_value = "10s", value_parser = bounds::request_timeout, global = true)]
    pub request_timeout: Duration,

    /// Connections each port (REST and gRPC) serves at once; more wait in the
    /// listen queue until one closes [default: what the open-file limit
    /// leaves after 64 descriptors for the rest of the process, halved, at
    /// most 1024].
    #[arg(long, env = "JWKS_MAX_CONNECTIONS", value_parser = bounds::max_connections, global = true)]
    pub max_connections: Option<u32>,

    /// Requests one HTTP/2 connection may have in flight at once (the
    /// smallest RFC 9113 recommends is 100).
    #[arg(long, env = "JWKS_MAX_STREAMS_PER_CONNECTION", default_value_t = 100, value_parser = bounds::max_streams, global = true)]
    pub max_streams_per_connection: u32,

    /// How long a connection with no request in flight stays open, on both
    /// ports. Longer than the 60 s idle timeout of common load balancers, so
    /// they close first. A new connection gets --request-timeout to send its
    /// first request.
    #[arg(long, env = "JWKS_IDLE_TIMEOUT", default_value = "2m", value_parser = bounds::idle_timeout, global = true)]
    pub idle_timeout: Duration,

    /// How often a quiet HTTP/2 connection is pinged; a peer that does not
    /// answer within --keepalive-timeout is disconnected (a half-open
    /// connection is found without waiting for --idle-timeout).
    #[arg(long, env = "JWKS_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = bounds::keepalive, global = true)]
    pub keepalive_interval: Duration,

    /// How long a pinged HTTP/2 peer has to answer.
    #[arg(long, env = "JWKS_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = bounds::keepalive, global = true)]
    pub keepalive_timeout: Duration,

    /// How long shutdown waits for in-flight requests (0s to 1h).
    #[arg(long, env = "JWKS_DRAIN_TIMEOUT", default_value = "10s", value_parser = bounds::drain_timeout, global = true)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(
        long,
        env = "JWKS_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

impl Config {
    /// The defaults, as if no flag or variable were set (for tests and tools).
    /// The issuer: `--issuer` when given, else the URL of `listening` (the
    /// REST listener's real address), so discovery names what verifiers
    /// can reach.
    pub fn issuer_for(&self, listening: SocketAddr) -> String {
        if !self.issuer.is_empty() {
            return self.issuer.clone();
        }
        let host = match listening.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        format!("http://{host}:{}", listening.port())
    }

    /// Every setting at its default, as with no flags and no environment
    /// (tests and tools start from this).
    pub fn defaults() -> Self {
        Cli::parse_from(["jwks-server"]).config
    }

    /// The key-lifecycle policy these settings describe (not yet validated).
    pub fn policy(&self) -> Policy {
        let mut policy = Policy::new(
            self.token_ttl,
            self.rotate_every,
            self.jwks_max_age,
            self.reload_every,
            self.clock_skew,
        );
        if let Some(ahead) = self.publish_ahead {
            policy.publish_ahead = ahead;
        }
        if let Some(after) = self.retain_after {
            policy.retain_after = after;
        }
        policy.keep_expired = self.keep_expired;
        policy.algorithms = self.algorithms.0.clone();
        policy.rsa_key_size = self.rsa_key_bits;
        policy
    }

    /// The checks that need more than one setting (the publication rules).
    /// Each flag's own range is checked while parsing.
    ///
    /// # Errors
    ///
    /// The [`PolicyError`] of the first rule the settings break.
    pub fn check(&self) -> Result<(), PolicyError> {
        self.policy().validate()
    }
}

/// Parses `90s`, `5m`, `1h`, `1h 30m`, or a bare number of seconds.
///
/// # Errors
///
/// A message with examples, when `text` is neither.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("expected a duration like 90s, 5m or 1h, got {text:?}"))
}

/// The range each bounded setting accepts. The limits are generous, yet keep
/// every key's times (now + publish-ahead + rotate-every + retain-after, about
/// 30 years at most) far from overflow and printable as dates.
pub mod bounds {
    use std::time::Duration;

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    /// The longest a key may sign, or be published ahead or kept after: ten years.
    pub const MAX_KEY_PERIOD: Duration = Duration::from_secs(3650 * 86_400);

    /// `--token-ttl`: 1 second to 365 days.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn token_ttl(text: &str) -> Result<Duration, String> {
        duration_between(text, SECOND, DAY * 365)
    }

    /// `--rotate-every`: 1 second to ten years.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn key_period(text: &str) -> Result<Duration, String> {
        duration_between(text, SECOND, MAX_KEY_PERIOD)
    }

    /// `--publish-ahead` and `--retain-after`: their minimum is a rule the
    /// policy checks against the other settings.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn key_window(text: &str) -> Result<Duration, String> {
        duration_between(text, Duration::ZERO, MAX_KEY_PERIOD)
    }

    /// `--jwks-max-age`: zero to 30 days.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn jwks_max_age(text: &str) -> Result<Duration, String> {
        duration_between(text, Duration::ZERO, DAY * 30)
    }

    /// `--reload-every`: 1 second to a day.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn reload_every(text: &str) -> Result<Duration, String> {
        duration_between(text, SECOND, DAY)
    }

    /// `--clock-skew`: zero to a day.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn clock_skew(text: &str) -> Result<Duration, String> {
        duration_between(text, Duration::ZERO, DAY)
    }

    /// `--request-timeout`: 1 second to an hour.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn request_timeout(text: &str) -> Result<Duration, String> {
        duration_between(text, SECOND, HOUR)
    }

    /// `--drain-timeout`: zero to an hour.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn drain_timeout(text: &str) -> Result<Duration, String> {
        duration_between(text, Duration::ZERO, HOUR)
    }

    /// `--idle-timeout`: zero would close every connection at once.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn idle_timeout(text: &str) -> Result<Duration, String> {
        duration_between(text, SECOND, DAY)
    }

    /// `--keepalive-interval` and `--keepalive-timeout`.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn keepalive(text: &str) -> Result<Duration, String> {
        duration_between(text, SECOND, HOUR)
    }

    /// `--max-connections`: 1 to 1,000,000.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn max_connections(text: &str) -> Result<u32, String> {
        count_between(text, 1, 1_000_000)
    }

    /// `--max-streams`: 1 to 10,000.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn max_streams(text: &str) -> Result<u32, String> {
        count_between(text, 1, 10_000)
    }

    /// `--keep-expired`: 1 to 10,000 keys.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn keep_expired(text: &str) -> Result<usize, String> {
        count_between(text, 1, 10_000)
    }

    /// `--rate-limit`: 0 (off) to 1,000,000 per second.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn rate_limit(text: &str) -> Result<u32, String> {
        count_between(text, 0, 1_000_000)
    }

    /// `--rate-burst`: 1 to 1,000,000.
    ///
    /// # Errors
    ///
    /// The range, in words clap prints after the flag, when `text` is outside it.
    pub fn rate_burst(text: &str) -> Result<u32, String> {
        count_between(text, 1, 1_000_000)
    }

    /// `--algorithms`: names from RS256, PS256, ES256, EdDSA, each once.
    ///
    /// # Errors
    ///
    /// An unknown name, or a name given twice.
    pub fn algorithms(text: &str) -> Result<super::Algorithms, String> {
        let mut algorithms = Vec::new();
        for name in text.split(',').map(str::trim) {
            let alg: super::Algorithm = name
                .parse()
                .map_err(|e| format!("{e}, comma-separated (e.g. RS256,ES256,EdDSA)"))?;
            if algorithms.contains(&alg) {
                return Err(format!("{alg} is named twice; name each algorithm once"));
            }
            algorithms.push(alg);
        }
        Ok(super::Algorithms(algorithms))
    }

    /// One algorithm's name (`keys rotate --alg`).
    ///
    /// # Errors
    ///
    /// An unknown name, with the names we know.
    pub fn algorithm(text: &str) -> Result<super::Algorithm, String> {
        text.trim().parse().map_err(|e| format!("{e}"))
    }

    /// `--rsa-key-bits`: 2048, 3072 or 4096.
    ///
    /// # Errors
    ///
    /// Any other size.
    pub fn rsa_key_bits(text: &str) -> Result<super::RsaKeySize, String> {
        text.trim()
            .parse()
            .ok()
            .and_then(super::RsaKeySize::from_bits)
            .ok_or_else(|| "must be 2048, 3072 or 4096".to_owned())
    }

    /// Clap prefixes this with the flag and the value given, so the one line
    /// names the flag, the value and the range.
    fn duration_between(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
        match super::parse_duration(text) {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(format!(
                "must be a duration between {} and {}, written like 90s, 5m or 1h",
                show(min),
                show(max)
            )),
        }
    }

    fn count_between<T>(text: &str, min: T, max: T) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        match text.trim().parse::<T>() {
            Ok(value) if min <= value && value <= max => Ok(value),
            _ => Err(format!("must be a whole number between {min} and {max}")),
        }
    }

    /// Whole days as `Nd` (humantime would say `9years 11months …`).
    fn show(d: Duration) -> String {
        if d >= DAY && d.as_secs().is_multiple_of(DAY.as_secs()) {
            format!("{}d", d.as_secs() / DAY.as_secs())
        } else {
            humantime::format_duration(d).to_string()
        }
    }
}

/// A secret setting (a KEK): held by `secrecy`, so it is zeroized on drop
/// and its `Debug` never shows it.
#[derive(Clone, Debug)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret itself: hand it to what needs it, never to a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(SecretString::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_make_a_valid_policy_with_hour_long_keys() {
        let policy = Config::defaults().policy();
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.key_lifetime(), Duration::from_secs(3600));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn bounded_settings_refuse_values_outside_their_range() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["jwks-server"], args].concat());
        assert!(parse(&["--rotate-every", "3650d", "--token-ttl", "365d"]).is_ok());
        for args in [
            ["--token-ttl", "18446744073709551615"],
            ["--rotate-every", "10000y"],
            ["--keep-expired", "0"],
            ["--rate-burst", "0"],
        ] {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(args[0]) && text.contains("between"), "{text}");
        }
    }

    #[test]
    fn store_urls_are_checked_and_printed_without_passwords() {
        let pg: StoreUrl = "postgres://app:pw@db/keys".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://app:***@db/keys");
        assert_eq!(format!("{pg:?}"), "postgres://app:***@db/keys");
        assert!("mysql://x".parse::<StoreUrl>().is_err());
        let StoreUrl::Sqlite { path, .. } = "sqlite:///tmp/k.db?mode=rwc".parse().unwrap() else {
            panic!("expected sqlite");
        };
        assert_eq!(path, PathBuf::from("/tmp/k.db"));
    }

    #[test]
    fn a_kid_that_starts_with_a_hyphen_is_a_kid_not_a_flag() {
        // base64url thumbprints start with `-` one time in 64.
        let cli = Cli::try_parse_from(["jwks-server", "keys", "remove", "-qX1_kid"]).unwrap();
        let Some(Command::Keys {
            action: KeysCommand::Remove { kid, force },
        }) = cli.command
        else {
            panic!("expected keys remove");
        };
        assert_eq!((kid.as_str(), force), ("-qX1_kid", false));
    }

    #[test]
    fn probe_options_parse_and_its_client_secret_does_not_print() {
        let cli = Cli::try_parse_from([
            "jwks-server",
            "probe",
            "http://127.0.0.1:3000/api",
            "--defects",
            "expired,alg-none",
            "--extra-header",
            "X-A: 1",
            "--extra-header",
            "X-B: 2",
            "--client-secret",
            "c2VjcmV0",
            "--alg",
            "ES256",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("c2VjcmV0"));
        let Some(Command::Probe(args)) = cli.command else {
            panic!("expected probe");
        };
        assert_eq!(args.url, "http://127.0.0.1:3000/api");
        assert_eq!(args.server, "http://localhost:8080");
        assert_eq!(args.defects, ["expired", "alg-none"]);
        assert_eq!(args.extra_headers, ["X-A: 1", "X-B: 2"]);
        assert_eq!(args.alg, Some(Algorithm::Es256));
        assert_eq!(args.timeout, Duration::from_secs(10));
        assert_eq!(args.client_id, "jwks-server-probe");
        let err = Cli::try_parse_from(["jwks-server", "probe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn secrets_do_not_print() {
        let cli = Cli::parse_from(["jwks-server", "--kek", "c2VjcmV0"]);
        assert!(!format!("{cli:?}").contains("c2VjcmV0"));
    }
}
