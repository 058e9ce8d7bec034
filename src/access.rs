//! Who may issue tokens, and how often: opt-in client authentication (a file
//! of client ids with argon2 secret hashes) and opt-in rate limiting.
//!
//! Both are off by default (anyone who can reach `/auth` gets a token, which
//! is what teams testing their verifiers want). The service consults them for
//! every token, whichever door the request came through.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{PasswordHashString, SaltString},
};
use aws_lc_rs::{constant_time::verify_slices_are_equal, digest};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Credentials a caller presented (HTTP Basic, form fields, gRPC metadata).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads an `Authorization` header value. `Ok(None)` for other schemes
    /// (Bearer carries no credentials of ours); `Err` for malformed Basic.
    pub fn from_authorization(value: &str) -> Result<Option<Self>, &'static str> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        const MALFORMED: &str =
            "malformed Authorization header: expected Basic base64(id:secret) or Bearer TOKEN";
        let value = value.trim();
        let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| MALFORMED)?;
        let decoded = String::from_utf8(decoded).map_err(|_| MALFORMED)?;
        let (id, secret) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
        Ok((!id.is_empty()).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        }))
    }
}

/// Who is asking, as far as the transport can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub credentials: Option<Credentials>,
    /// The peer's address, for per-address rate limits without client auth.
    pub addr: Option<IpAddr>,
}

/// One registered client.
#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    secret_hash: PasswordHashString,
    /// Audiences it may ask for; empty means any.
    pub audiences: Vec<String>,
    /// The algorithm its tokens are signed with when it names none.
    pub alg: Option<crate::keys::Algorithm>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("cannot read clients file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("clients file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Why authentication failed (all become one vague answer to the client).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    UnknownClient,
    WrongSecret,
}

#[derive(Deserialize)]
struct ClientsFile {
    clients: Vec<ClientEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    id: String,
    secret_hash: String,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    alg: Option<String>,
}

/// The registered clients. Verifying a secret runs argon2 (deliberately slow),
/// so a successful check is remembered as a SHA-256 digest and later requests
/// compare digests in constant time.
///
/// An unknown client id costs exactly what a known one with a wrong secret
/// does: an argon2 check (against a decoy hash made with the clients' own
/// parameters), the same answer and the same per-address budget. Otherwise
/// the speed of the answer, or which ids ever get a 429, would tell an
/// attacker which ids exist.
pub struct ClientRegistry {
    clients: HashMap<String, Client>,
    verified: Mutex<HashMap<String, digest::Digest>>,
    /// Matches no secret; checked for unknown ids.
    decoy_hash: PasswordHashString,
    /// argon2 verifications run so far (known and unknown ids alike).
    checks_run: AtomicU64,
}

impl fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRegistry")
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClientRegistry {
    /// Each client that has a default algorithm, with it.
    pub fn default_algs(&self) -> impl Iterator<Item = (&str, crate::keys::Algorithm)> {
        self.clients
            .values()
            .filter_map(|c| c.alg.map(|alg| (c.id.as_str(), alg)))
    }

    /// Reads a clients file:
    /// `{"clients": [{"id": "…", "secret_hash": "$argon2id$…", "audiences": ["…"]}]}`.
    pub fn load(path: &Path) -> Result<Self, ClientsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ClientsError::Read {
            path: shown.clone(),
            source,
        })?;
        let invalid = |reason: String| ClientsError::Invalid {
            path: shown.clone(),
            reason,
        };
        let file: ClientsFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut clients = HashMap::new();
        for entry in file.clients {
            if entry.id.is_empty() || entry.id.contains(':') {
                return Err(invalid(format!(
                    "client id {:?} must be non-empty, without ':'",
                    entry.id
                )));
            }
            // The id becomes `sub`: it must read as what it is.
            crate::text::check_visible(&entry.id)
                .map_err(|hidden| invalid(format!("client id {:?}: {hidden}", entry.id)))?;
            for audience in &entry.audiences {
                crate::text::check_visible(audience).map_err(|hidden| {
                    invalid(format!(
                        "client {:?}: audience {audience:?}: {hidden}",
                        entry.id
                    ))
                })?;
            }
            let hash = PasswordHash::new(&entry.secret_hash)
                .map_err(|e| invalid(format!("client {}: secret_hash is not a PHC string ({e}); make one with `jwks-server hash-secret`", entry.id)))?;
            if !hash.algorithm.as_str().starts_with("argon2") {
                return Err(invalid(format!(
                    "client {}: secret_hash must be argon2",
                    entry.id
                )));
            }
            let alg = entry
                .alg
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| invalid(format!("client {}: alg: {e}", entry.id)))?;
            let client = Client {
                id: entry.id.clone(),
                secret_hash: hash.serialize(),
                audiences: entry.audiences,
                alg,
            };
            if clients.insert(entry.id.clone(), client).is_some() {
                return Err(invalid(format!("client {} is listed twice", entry.id)));
            }
        }
        let decoy_hash = decoy_hash(&clients)?;
        Ok(Self {
            clients,
            verified: Mutex::new(HashMap::new()),
            decoy_hash,
            checks_run: AtomicU64::new(0),
        })
    }

    /// argon2 verifications run so far, for unknown and known ids alike.
    pub fn checks_run(&self) -> u64 {
        self.checks_run.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Answers what can be answered without argon2: missing credentials, or
    /// the secret this client last proved (compared in constant time). `None`
    /// means only [`Self::authenticate`] can tell, which includes every wrong
    /// secret and every unknown client id (so both cost the same).
    pub fn check_cached(
        &self,
        credentials: Option<&Credentials>,
    ) -> Option<Result<&Client, AuthFailure>> {
        let Some(credentials) = credentials else {
            return Some(Err(AuthFailure::Missing));
        };
        let client = self.clients.get(&credentials.id)?;
        let known = self.lock().get(&client.id).copied()?;
        let presented = presented_digest(client, credentials);
        verify_slices_are_equal(known.as_ref(), presented.as_ref())
            .is_ok()
            .then_some(Ok(client))
    }

    /// Checks credentials. Takes tens of milliseconds and ~19 MiB (argon2)
    /// unless [`Self::check_cached`] can answer: call from a blocking thread.
    pub fn authenticate(&self, credentials: Option<&Credentials>) -> Result<&Client, AuthFailure> {
        if let Some(answer) = self.check_cached(credentials) {
            return answer;
        }
        let credentials = credentials.ok_or(AuthFailure::Missing)?;
        let client = self.clients.get(&credentials.id);
        // The same argon2 work whether or not the id exists.
        let hash = client.map_or(&self.decoy_hash, |c| &c.secret_hash);
        self.checks_run.fetch_add(1, Ordering::Relaxed);
        let verified = Argon2::default()
            .verify_password(credentials.secret.as_bytes(), &hash.password_hash())
            .is_ok();
        let client = client.ok_or(AuthFailure::UnknownClient)?;
        if !verified {
            return Err(AuthFailure::WrongSecret);
        }
        self.lock()
            .insert(client.id.clone(), presented_digest(client, credentials));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, digest::Digest>> {
        match self.verified.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A hash of a random secret nobody knows, made with the costliest argon2
/// parameters among `clients` (the defaults when there are none), so checking
/// a secret against it takes what checking a real client's does.
fn decoy_hash(clients: &HashMap<String, Client>) -> Result<PasswordHashString, ClientsError> {
    let hash_error = |e: argon2::password_hash::Error| ClientsError::Hash(e.to_string());
    let mut costliest: Option<(u64, Argon2<'static>)> = None;
    for client in clients.values() {
        let hash = client.secret_hash.password_hash();
        let (Ok(algorithm), Ok(params)) =
            (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
        else {
            continue;
        };
        let version = hash
            .version
            .and_then(|v| Version::try_from(v).ok())
            .unwrap_or_default();
        let cost = u64::from(params.m_cost()) * u64::from(params.t_cost());
        if costliest.as_ref().is_none_or(|(most, _)| cost > *most) {
            costliest = Some((cost, Argon2::new(algorithm, version, params)));
        }
    }
    let argon2 = costliest.map_or_else(Argon2::default, |(_, argon2)| argon2);
    let mut secret = [0u8; 32];
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| ClientsError::Hash("no randomness".into()))?;
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| ClientsError::Hash("no randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(hash_error)?;
    let hash = argon2.hash_password(&secret, &salt).map_err(hash_error)?;
    Ok(hash.serialize())
}

/// What the cache remembers of a proven secret: a digest bound to the client id.
fn presented_digest(client: &Client, credentials: &Credentials) -> digest::Digest {
    digest::digest(
        &digest::SHA256,
        &[client.id.as_bytes(), b"\0", credentials.secret.as_bytes()].concat(),
    )
}

/// Guards the slow path of client authentication, where a secret the server
/// has not seen before is checked with argon2 (tens of milliseconds and
/// ~19 MiB each, on purpose). Legitimate clients take that path once per
/// process; a stream of wrong secrets takes it every time, so it is bounded
/// three ways: one check per core at a time, a short queue beyond that
/// (callers past it are told to retry), and a budget of checks per source
/// address ([`SecretChecks::PER_ADDRESS_BURST`], refilled at
/// [`SecretChecks::PER_ADDRESS_PER_MINUTE`] a minute). Answers from the cache
/// are never limited, so a proven client keeps working during a flood.
pub struct SecretChecks {
    running: Semaphore,
    admitted: Semaphore,
    per_address: RateLimits,
}

/// Why a secret check was not run.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckRefused {
    /// This address has used its budget; it may try again after the wait.
    AddressOverBudget(Duration),
    /// The queue of checks is full (the server is under a flood).
    Busy,
}

/// Permission to run one secret check; hold it while the check runs.
#[derive(Debug)]
pub struct CheckPermit<'a> {
    _running: SemaphorePermit<'a>,
    _admitted: SemaphorePermit<'a>,
}

impl fmt::Debug for SecretChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretChecks")
            .field("running", &self.running.available_permits())
            .field("admitted", &self.admitted.available_permits())
            .finish_non_exhaustive()
    }
}

impl SecretChecks {
    /// Uncached secret checks an address may make at once.
    pub const PER_ADDRESS_BURST: u32 = 20;
    /// How fast an address's budget refills.
    pub const PER_ADDRESS_PER_MINUTE: u32 = 30;
    /// Checks that may wait for a core, per core.
    const QUEUE_PER_CORE: usize = 16;

    pub fn new(cores: usize) -> Self {
        let cores = cores.max(1);
        let per_minute = NonZeroU32::new(Self::PER_ADDRESS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(Self::PER_ADDRESS_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            running: Semaphore::new(cores),
            admitted: Semaphore::new(cores * (1 + Self::QUEUE_PER_CORE)),
            per_address: RateLimits::from_quota(Quota::per_minute(per_minute).allow_burst(burst)),
        }
    }

    /// Waits for a core to check a secret from `addr` (unknown for in-process
    /// callers, which only the queue bounds).
    pub async fn admit(&self, addr: Option<IpAddr>) -> Result<CheckPermit<'_>, CheckRefused> {
        if let Some(addr) = addr {
            self.per_address
                .check(&AddressGroup::from(addr).to_string())
                .map_err(CheckRefused::AddressOverBudget)?;
        }
        let admitted = self
            .admitted
            .try_acquire()
            .map_err(|_| CheckRefused::Busy)?;
        let running = self
            .running
            .acquire()
            .await
            .map_err(|_| CheckRefused::Busy)?;
        Ok(CheckPermit {
            _running: running,
            _admitted: admitted,
        })
    }

    /// Forgets addresses whose budgets are full again (bounded memory).
    pub fn forget_idle(&self) {
        self.per_address.forget_idle();
    }
}

/// The unit a per-address budget counts: an IPv4 address, or the /64 an IPv6
/// address is in. One IPv6 host usually holds a whole /64 (SLAAC, privacy
/// addresses), so counting single IPv6 addresses would give each attacker
/// 2^64 budgets. An IPv4-mapped IPv6 address (a dual-stack listener) is its
/// IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressGroup {
    V4(Ipv4Addr),
    /// The network address of a /64.
    V6Net64(Ipv6Addr),
}

impl From<IpAddr> for AddressGroup {
    fn from(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                Self::V6Net64(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)))
            }
        }
    }
}

impl fmt::Display for AddressGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6Net64(net) => write!(f, "{net}/64"),
        }
    }
}

/// An argon2id PHC string for `secret`, for the clients file.
pub fn hash_secret(secret: &str) -> Result<String, ClientsError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| ClientsError::Hash("no randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ClientsError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ClientsError::Hash(e.to_string()))
}

/// Per-key token buckets (a client id, or a peer address without client auth).
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    /// `per_second` tokens a second, bursts of up to `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::from_quota(Quota::per_second(per_second).allow_burst(burst))
    }

    fn from_quota(quota: Quota) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// `Err(wait)` when `key` must wait before its next token.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets keys whose buckets are full again (bounded memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(json: &str) -> Result<ClientRegistry, ClientsError> {
        let dir = tempfile_dir();
        let path = dir.join("clients.json");
        std::fs::write(&path, json).unwrap();
        ClientRegistry::load(&path)
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "jwks-access-{}",
            crate::keys::crypto::random_id().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials {
            id: id.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn secrets_are_stored_hashed_and_checked() {
        let hash = hash_secret("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("s3cret"));
        let clients = registry(&format!(
            r#"{{"clients":[{{"id":"svc","secret_hash":"{hash}","audiences":["api"]}}]}}"#
        ))
        .unwrap();
        let client = clients.authenticate(Some(&creds("svc", "s3cret"))).unwrap();
        assert_eq!(client.audiences, ["api"]);
        assert!(matches!(
            clients.check_cached(Some(&creds("svc", "s3cret"))),
            Some(Ok(_))
        ));
        // A wrong secret for a proven client is not answered from memory: it
        // takes the slow, guarded path, and is refused there.
        assert!(clients.check_cached(Some(&creds("svc", "nope"))).is_none());
        assert_eq!(
            clients
                .authenticate(Some(&creds("svc", "nope")))
                .unwrap_err(),
            AuthFailure::WrongSecret
        );
        assert_eq!(
            clients
                .authenticate(Some(&creds("who", "s3cret")))
                .unwrap_err(),
            AuthFailure::UnknownClient
        );
        assert_eq!(
            clients.authenticate(None).unwrap_err(),
            AuthFailure::Missing
        );
    }

    #[test]
    fn an_unknown_id_takes_the_same_argon2_check_as_a_wrong_secret() {
        // Cheap parameters, so the test is quick and the decoy's are visible.
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = cheap.hash_password(b"s3cret", &salt).unwrap().to_string();
        let clients = registry(&format!(
            r#"{{"clients":[{{"id":"svc","secret_hash":"{hash}"}}]}}"#
        ))
        .unwrap();
        let decoy = clients.decoy_hash.password_hash();
        let params = Params::try_from(&decoy).unwrap();
        assert_eq!((params.m_cost(), params.t_cost()), (64, 1), "{decoy}");

        assert!(
            clients.check_cached(Some(&creds("who", "x"))).is_none(),
            "an unknown id is not answered early"
        );
        assert_eq!(clients.checks_run(), 0);
        assert_eq!(
            clients.authenticate(Some(&creds("who", "x"))).unwrap_err(),
            AuthFailure::UnknownClient
        );
        assert_eq!(
            clients.authenticate(Some(&creds("svc", "x"))).unwrap_err(),
            AuthFailure::WrongSecret
        );
        assert_eq!(clients.checks_run(), 2, "one argon2 check each");
    }

    #[test]
    fn client_ids_and_audiences_that_hide_characters_are_refused() {
        let hash = "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAA";
        for (entry, code_point) in [
            (
                format!(r#"{{"id":"bill\u200bing","secret_hash":"{hash}"}}"#),
                "U+200B",
            ),
            (
                format!(r#"{{"id":"ops\u202e","secret_hash":"{hash}"}}"#),
                "U+202E",
            ),
            (
                format!(r#"{{"id":"ops","secret_hash":"{hash}","audiences":["api\u2066"]}}"#),
                "U+2066",
            ),
        ] {
            let err = registry(&format!(r#"{{"clients":[{entry}]}}"#))
                .unwrap_err()
                .to_string();
            assert!(err.contains(code_point), "{entry}: {err}");
        }
    }

    #[test]
    fn budgets_group_ipv6_by_64_and_read_mapped_ipv4_as_ipv4() {
        let group = |text: &str| AddressGroup::from(text.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(group("192.0.2.7"), "192.0.2.7");
        assert_eq!(group("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(
            group("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("::1"), "::/64");
    }

    #[tokio::test]
    async fn one_ipv6_64_shares_one_secret_check_budget() {
        let checks = SecretChecks::new(1);
        for host in 0..SecretChecks::PER_ADDRESS_BURST {
            let addr: IpAddr = format!("2001:db8::{:x}", host + 1).parse().unwrap();
            drop(checks.admit(Some(addr)).await.unwrap());
        }
        let fresh_host: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(matches!(
            checks.admit(Some(fresh_host)).await,
            Err(CheckRefused::AddressOverBudget(_))
        ));
        let next_net: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(checks.admit(Some(next_net)).await.is_ok());
    }

    #[test]
    fn bad_clients_files_are_refused_with_the_reason() {
        for (json, reason) in [
            ("not json", "expected"),
            (r#"{"clients":[{"id":"a","secret_hash":"plain"}]}"#, "PHC"),
            (r#"{"clients":[{"id":"a:b","secret_hash":"x"}]}"#, "':'"),
            (
                r#"{"clients":[{"id":"a","secret_hash":"x","extra":1}]}"#,
                "unknown field",
            ),
        ] {
            let err = registry(json).unwrap_err().to_string();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn basic_credentials_are_read_and_malformed_ones_refused() {
        assert_eq!(
            Credentials::from_authorization("Basic c3ZjOnMzY3JldA==").unwrap(),
            Some(creds("svc", "s3cret"))
        );
        assert_eq!(
            Credentials::from_authorization("basic c3Zj").unwrap(),
            Some(creds("svc", ""))
        );
        assert_eq!(Credentials::from_authorization("Bearer abc").unwrap(), None);
        assert!(Credentials::from_authorization("Basic !!!").is_err());
        assert!(
            Credentials::from_authorization("Basic /w==").is_err(),
            "not UTF-8"
        );
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        assert!(!format!("{:?}", creds("svc", "s3cret")).contains("s3cret"));
    }

    #[tokio::test]
    async fn secret_checks_are_bounded_per_address_and_by_a_queue() {
        let checks = SecretChecks::new(1);
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..SecretChecks::PER_ADDRESS_BURST {
            drop(checks.admit(Some(attacker)).await.unwrap());
        }
        match checks.admit(Some(attacker)).await {
            Err(CheckRefused::AddressOverBudget(wait)) => {
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(2),
                    "{wait:?}"
                );
            }
            other => panic!("expected the address to be over budget: {other:?}"),
        }
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let running = checks.admit(Some(other)).await.unwrap();

        // With the one core busy, callers queue up to the bound, then are refused.
        let queue = SecretChecks::QUEUE_PER_CORE;
        let waiting: Vec<_> = (0..queue)
            .map(|_| {
                let admitted = checks.admitted.try_acquire().unwrap();
                assert!(checks.running.try_acquire().is_err(), "the core is busy");
                admitted
            })
            .collect();
        assert_eq!(
            checks.admit(None).await.err(),
            Some(CheckRefused::Busy),
            "the queue is full"
        );
        drop(waiting);
        drop(running);
        assert!(checks.admit(None).await.is_ok(), "and drains");
    }

    #[test]
    fn rate_limits_allow_a_burst_then_say_how_long_to_wait() {
        let limits = RateLimits::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(2).unwrap());
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_ok());
        let wait = limits.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check("b").is_ok(), "keys are independent");
    }
}
