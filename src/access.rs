//! Who may issue tokens, and how often: opt-in client authentication (a file
//! of client ids with argon2 secret hashes) and opt-in rate limiting.
//!
//! Both are off by default (anyone who can reach `/auth` gets a token, which
//! is what teams testing their verifiers want). The service consults them for
//! every token, whichever door the request came through.

use std::{
    collections::HashMap, fmt, net::IpAddr, num::NonZeroU32, path::Path, sync::Mutex,
    time::Duration,
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{PasswordHashString, SaltString},
};
use aws_lc_rs::{constant_time::verify_slices_are_equal, digest};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use serde::Deserialize;

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
}

/// The registered clients. Verifying a secret runs argon2 (deliberately slow),
/// so a successful check is remembered as a SHA-256 digest and later requests
/// compare digests in constant time.
pub struct ClientRegistry {
    clients: HashMap<String, Client>,
    verified: Mutex<HashMap<String, digest::Digest>>,
}

impl fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRegistry")
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClientRegistry {
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
            if entry.id.is_empty()
                || entry.id.contains(':')
                || entry.id.chars().any(char::is_control)
            {
                return Err(invalid(format!(
                    "client id {:?} must be non-empty, without ':' or control characters",
                    entry.id
                )));
            }
            let hash = PasswordHash::new(&entry.secret_hash)
                .map_err(|e| invalid(format!("client {}: secret_hash is not a PHC string ({e}); make one with `jwks-server hash-secret`", entry.id)))?;
            if !hash.algorithm.as_str().starts_with("argon2") {
                return Err(invalid(format!(
                    "client {}: secret_hash must be argon2",
                    entry.id
                )));
            }
            let client = Client {
                id: entry.id.clone(),
                secret_hash: hash.serialize(),
                audiences: entry.audiences,
            };
            if clients.insert(entry.id.clone(), client).is_some() {
                return Err(invalid(format!("client {} is listed twice", entry.id)));
            }
        }
        Ok(Self {
            clients,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Checks credentials. May take tens of milliseconds (argon2) the first
    /// time a client's secret is seen: call from a blocking thread.
    pub fn authenticate(&self, credentials: Option<&Credentials>) -> Result<&Client, AuthFailure> {
        let credentials = credentials.ok_or(AuthFailure::Missing)?;
        let client = self
            .clients
            .get(&credentials.id)
            .ok_or(AuthFailure::UnknownClient)?;
        let presented = digest::digest(
            &digest::SHA256,
            &[client.id.as_bytes(), b"\0", credentials.secret.as_bytes()].concat(),
        );
        if let Some(known) = self.lock().get(&client.id)
            && verify_slices_are_equal(known.as_ref(), presented.as_ref()).is_ok()
        {
            return Ok(client);
        }
        let hash = client.secret_hash.password_hash();
        Argon2::default()
            .verify_password(credentials.secret.as_bytes(), &hash)
            .map_err(|_| AuthFailure::WrongSecret)?;
        self.lock().insert(client.id.clone(), presented);
        Ok(client)
    }

    /// Whether a check for these credentials would be answered from memory.
    pub fn is_cached(&self, credentials: &Credentials) -> bool {
        self.lock().contains_key(&credentials.id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, digest::Digest>> {
        match self.verified.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
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
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
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
        let dir =
            std::env::temp_dir().join(format!("jwks-access-{}", crate::keys::crypto::random_id()));
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
        assert!(clients.is_cached(&creds("svc", "s3cret")));
        // The cached path still refuses a wrong secret.
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
