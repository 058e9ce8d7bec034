//! The registered clients ([`ClientRegistry`]): reading the clients file,
//! checking a presented secret against its argon2 hash (with a decoy hash for
//! unknown ids, so they cost what a wrong secret costs), and the cache of
//! proven secrets kept as digests. Making a hash for the file
//! ([`hash_secret`]) lives here too. How many checks may run, and how often,
//! is the secret checks' and rate limits' business.

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{PasswordHashString, SaltString},
};
use aws_lc_rs::{constant_time::verify_slices_are_equal, digest};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::credentials::Credentials;

/// One registered client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its `client_id` (RFC 6749 §2.2), also the `sub` of its tokens.
    pub id: String,
    secret_hash: PasswordHashString,
    /// Audiences it may ask for; empty means any.
    pub audiences: Vec<String>,
    /// What the OAuth 2.0 token endpoint may grant it (see `crate::service::oauth`).
    pub grants: crate::service::ClientGrants,
    /// The algorithm its tokens are signed with when it names none.
    pub alg: Option<crate::keys::Algorithm>,
}

/// Why the client registry could not be loaded, or a secret hashed.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The clients file could not be read.
    #[error("cannot read clients file {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The clients file was read but is not a valid registry.
    #[error("clients file {path} is not valid: {reason}")]
    Invalid {
        /// The file, as given.
        path: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// A secret could not be hashed (no randomness for the salt).
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Why authentication failed (all become one vague answer to the client).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials were presented.
    Missing,
    /// No client has that id.
    UnknownClient,
    /// The client exists; the secret is not its secret.
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
    scopes: Vec<String>,
    default_audience: Option<String>,
    max_lifetime_seconds: Option<u64>,
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    allowed_claims: Vec<String>,
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
    ///
    /// # Errors
    ///
    /// [`ClientsError::Read`] when the file cannot be read,
    /// [`ClientsError::Invalid`] for bad JSON, an unknown member, a repeated
    /// id or a `secret_hash` that is not an argon2 PHC string.
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
            let grants = crate::service::ClientGrants::new(
                entry.scopes,
                entry.default_audience,
                entry.max_lifetime_seconds,
                entry.claims,
            )
            .and_then(|grants| grants.with_allowed_claims(entry.allowed_claims))
            .map_err(|reason| invalid(format!("client {}: {reason}", entry.id)))?;
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
                grants,
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

    /// How many clients are registered.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// The registered clients, in no particular order.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }

    /// Whether no client is registered.
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
    ///
    /// # Errors
    ///
    /// The [`AuthFailure`]: no credentials, an unknown id, or a wrong secret.
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
            .verify_password(
                credentials.secret.expose_secret().as_bytes(),
                &hash.password_hash(),
            )
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
    let costliest = clients
        .values()
        .filter_map(|client| {
            let hash = client.secret_hash.password_hash();
            let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
            let params = Params::try_from(&hash).ok()?;
            let version = hash
                .version
                .and_then(|v| Version::try_from(v).ok())
                .unwrap_or_default();
            Some((algorithm, version, params))
        })
        .max_by_key(|(_, _, params)| u64::from(params.m_cost()) * u64::from(params.t_cost()));
    let argon2 = costliest.map_or_else(Argon2::default, |(algorithm, version, params)| {
        Argon2::new(algorithm, version, params)
    });
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
        &[
            client.id.as_bytes(),
            b"\0",
            credentials.secret.expose_secret().as_bytes(),
        ]
        .concat(),
    )
}

/// An argon2id PHC string for `secret`, for the clients file.
///
/// # Errors
///
/// [`ClientsError::Hash`] when no randomness is available for the salt, or
/// argon2 refuses.
pub fn hash_secret(secret: &str) -> Result<String, ClientsError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| ClientsError::Hash("no randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ClientsError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ClientsError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(json: &str) -> Result<ClientRegistry, ClientsError> {
        // Removed when dropped: test runs leave no clients files behind.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        std::fs::write(&path, json).unwrap();
        ClientRegistry::load(&path)
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

    /// A cheap argon2id hash of `secret` with memory `m_cost` KiB and `t_cost`
    /// passes, so tests stay quick and parameters show.
    fn cheap_hash(secret: &str, m_cost: u32, t_cost: u32) -> String {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(m_cost, t_cost, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2
            .hash_password(secret.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_decoy_costs_what_the_costliest_client_costs() {
        // Cost is memory x passes: (64 KiB, 4) outweighs (128 KiB, 1), though
        // it has less memory and a smaller sum.
        let clients = registry(&format!(
            r#"{{"clients":[{{"id":"big","secret_hash":"{}"}},{{"id":"long","secret_hash":"{}"}}]}}"#,
            cheap_hash("a", 128, 1),
            cheap_hash("b", 64, 4),
        ))
        .unwrap();
        let decoy = clients.decoy_hash.password_hash();
        let params = Params::try_from(&decoy).unwrap();
        assert_eq!((params.m_cost(), params.t_cost()), (64, 4), "{decoy}");
    }

    #[test]
    fn the_registry_counts_its_clients_and_debug_shows_ids_not_hashes() {
        let empty = registry(r#"{"clients":[]}"#).unwrap();
        assert_eq!((empty.len(), empty.is_empty()), (0, true));

        let hash = cheap_hash("s3cret", 64, 1);
        let clients = registry(&format!(
            r#"{{"clients":[{{"id":"svc","secret_hash":"{hash}"}},{{"id":"ops","secret_hash":"{hash}"}}]}}"#
        ))
        .unwrap();
        assert_eq!((clients.len(), clients.is_empty()), (2, false));
        let shown = format!("{clients:?}");
        assert!(shown.contains("svc") && shown.contains("ops"), "{shown}");
        assert!(!shown.contains("argon2"), "no hash in {shown}");
    }

    #[test]
    fn bad_clients_files_are_refused_with_the_reason() {
        for (json, reason) in [
            ("not json", "expected"),
            (r#"{"clients":[{"id":"a","secret_hash":"plain"}]}"#, "PHC"),
            (r#"{"clients":[{"id":"a:b","secret_hash":"x"}]}"#, "':'"),
            (r#"{"clients":[{"id":"","secret_hash":"x"}]}"#, "non-empty"),
            (
                r#"{"clients":[{"id":"a","secret_hash":"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}]}"#,
                "must be argon2",
            ),
            (
                &format!(
                    r#"{{"clients":[{{"id":"a","secret_hash":"{0}"}},{{"id":"a","secret_hash":"{0}"}}]}}"#,
                    cheap_hash("s", 64, 1)
                ),
                "listed twice",
            ),
            (
                r#"{"clients":[{"id":"a","secret_hash":"x","extra":1}]}"#,
                "unknown field",
            ),
        ] {
            let err = registry(json).unwrap_err().to_string();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }
}
