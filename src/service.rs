//! The domain service behind both transports: publishes the JWKS, issues
//! tokens, rotates and reloads keys, and reports health.
//!
//! REST and gRPC hold no key or token logic; they translate to a
//! [`TokenRequest`] and back and call the same methods here. Every method that
//! depends on time takes `now`. Shared state is one [`ArcSwap`] of an immutable
//! [`KeyRing`]: the token and JWKS paths never lock and never touch the store.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use serde::Serialize;
use zeroize::Zeroize;

pub use crate::access::Access;
use crate::{
    access::{AddressGroup, AuthFailure, Caller, CheckRefused, Client, ClientRegistry},
    error::Error,
    keys::{
        KeyMeta, KeyState,
        crypto::{SigningKey, random_id},
        policy::{Policy, Trigger, plan_rotation},
        ring::{JwksDocument, KeyRing, LoadedKey},
        seal::KekRing,
    },
    store::{KeyStore, NewKeyMaterial, RotateOutcome, StoreError, StoredKey},
    time::Timestamp,
};

/// Limits on caller-supplied claim values.
pub const MAX_CLAIM_LEN: usize = 256;
pub const MAX_AUDIENCES: usize = 16;
/// The `sub` of a token whose caller named nobody.
pub const DEFAULT_SUBJECT: &str = "anonymous";
/// A store call that takes longer than this counts as the store being down.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a caller asks for; the same whichever transport it came through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// Sign with an expired key and put `exp` in the past.
    pub expired: bool,
    /// The `sub` claim; [`DEFAULT_SUBJECT`] when absent.
    pub subject: Option<String>,
    /// The `aud` claim; omitted when empty.
    pub audience: Vec<String>,
    /// Lifetime in seconds; the policy's `token_ttl` when absent.
    pub lifetime_seconds: Option<i64>,
}

/// A signed token and what a caller needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub kid: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// Seconds from issue until `exp`; negative for an expired token.
    pub expires_in: i64,
}

impl IssuedToken {
    pub const TOKEN_TYPE: &'static str = "Bearer";
}

#[derive(Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<Audience<'a>>,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: &'a str,
}

/// Whether the store answered the last time it was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    Reachable,
    /// Unreachable since the given instant, with the last error.
    Unreachable {
        since: Timestamp,
        error: String,
    },
}

/// What `/health` and gRPC health report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// A key can sign right now.
    pub can_sign: bool,
    pub store: StoreHealth,
    /// The last instant this replica can sign with the keys it holds, if the
    /// store stays away.
    pub signing_until: Option<Timestamp>,
}

/// One key as the operator listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    pub meta: KeyMeta,
    pub state: KeyState,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load or create signing keys: {0}")]
    Keys(String),
}

/// The handle both transports and the background tasks share. Cloning is cheap.
#[derive(Clone)]
pub struct KeyService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    keks: KekRing,
    policy: Policy,
    issuer: String,
    access: Access,
    ring: ArcSwap<KeyRing>,
    store_health: Mutex<StoreHealth>,
}

impl KeyService {
    /// Loads the keys (creating the first ones in an empty store), ready to serve.
    pub async fn start(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        policy: Policy,
        issuer: String,
        access: Access,
        now: Timestamp,
    ) -> Result<Self, StartError> {
        let empty = KeyRing::new(Vec::new(), now, &policy);
        let service = Self {
            inner: Arc::new(Inner {
                store,
                keks,
                policy,
                issuer,
                access,
                ring: ArcSwap::from_pointee(empty),
                store_health: Mutex::new(StoreHealth::Reachable),
            }),
        };
        // Open every stored key first, so a wrong or missing KEK stops the
        // start-up before anything new is written.
        let stored = service.inner.store.load().await?;
        service
            .install(stored, now)
            .map_err(|e| StartError::Keys(e.chain()))?;
        service
            .rotate(Trigger::Schedule, now)
            .await
            .map_err(|e| StartError::Keys(e.chain()))?;
        Ok(service)
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The current key ring (a cheap snapshot).
    pub fn ring(&self) -> Arc<KeyRing> {
        self.inner.ring.load_full()
    }

    /// The published JWKS at `now`. Rendered once per key change; this is a
    /// pointer copy unless a key has just expired.
    pub fn jwks(&self, now: Timestamp) -> Arc<JwksDocument> {
        let ring = self.inner.ring.load();
        if ring.is_current(now) {
            return Arc::clone(ring.jwks());
        }
        // A key expired since the ring was built: rebuild from the same keys.
        let rebuilt = Arc::new(KeyRing::new(ring.keys().to_vec(), now, &self.inner.policy));
        let jwks = Arc::clone(rebuilt.jwks());
        self.inner.ring.compare_and_swap(&ring, rebuilt);
        jwks
    }

    /// Issues a token for `caller`: validation, access checks (client
    /// authentication and rate limits, when configured), claims, and one RSA
    /// signature.
    pub async fn issue_token(
        &self,
        request: &TokenRequest,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<IssuedToken, Error> {
        let lifetime = self.check_request(request)?;
        let access = &self.inner.access;
        if request.expired && !access.allow_expired {
            return Err(Error::PermissionDenied(
                "expired tokens are disabled on this server; start it with \
                 --expired-tokens=true (JWKS_EXPIRED_TOKENS=true) to allow them"
                    .into(),
            ));
        }
        let (subject, audience, limit_key) = match &access.clients {
            None => {
                let subject = request
                    .subject
                    .clone()
                    .or_else(|| caller.credentials.as_ref().map(|c| c.id.clone()))
                    .unwrap_or_else(|| DEFAULT_SUBJECT.to_owned());
                check_claim("subject", &subject)?;
                let key = caller.addr.map(|addr| AddressGroup::from(addr).to_string());
                (subject, request.audience.clone(), key)
            }
            Some(registry) => {
                let client = self.authenticate(registry, caller).await?;
                let audience =
                    if request.audience.is_empty() {
                        client.audiences.clone()
                    } else {
                        if let Some(denied) = request.audience.iter().find(|aud| {
                            !client.audiences.is_empty() && !client.audiences.contains(aud)
                        }) {
                            return Err(Error::PermissionDenied(format!(
                                "client {} may not ask for audience {denied:?}",
                                client.id
                            )));
                        }
                        request.audience.clone()
                    };
                (client.id.clone(), audience, Some(client.id.clone()))
            }
        };
        if let (Some(limits), Some(key)) = (&access.rate_limits, limit_key) {
            limits.check(&key).map_err(|retry_after| {
                let err = Error::RateLimited {
                    what: "tokens requested",
                    retry_after,
                };
                log_refusal(caller, &err);
                err
            })?;
        }
        self.sign(&subject, &audience, lifetime, request.expired, now)
    }

    /// Validates what the caller asked for; returns the token lifetime.
    pub fn check_request(&self, request: &TokenRequest) -> Result<Duration, Error> {
        validate_request(request, &self.inner.policy)
    }

    /// Checks the caller's credentials against the registered clients, off the
    /// async workers unless the answer is already known (argon2 is slow on
    /// purpose).
    async fn authenticate(
        &self,
        registry: &Arc<ClientRegistry>,
        caller: &Caller,
    ) -> Result<Client, Error> {
        let unauthenticated = |failure: AuthFailure| {
            log_auth_failure(caller, &failure);
            Error::Unauthenticated(match failure {
                AuthFailure::Missing => {
                    "client credentials required: HTTP Basic (client_id:client_secret), \
                                         form fields client_id and client_secret, or gRPC metadata"
                        .to_owned()
                }
                AuthFailure::UnknownClient | AuthFailure::WrongSecret => {
                    "unknown client or wrong secret".to_owned()
                }
            })
        };
        if let Some(answer) = registry.check_cached(caller.credentials.as_ref()) {
            return answer.cloned().map_err(unauthenticated);
        }
        // argon2 takes ~19 MiB and tens of milliseconds per check: admitted
        // per core, per address and through a bounded queue, on a blocking
        // thread, so a flood of wrong secrets never stalls other requests.
        let _permit = self
            .inner
            .access
            .secret_checks
            .admit(caller.addr)
            .await
            .map_err(|refused| {
                let err = match refused {
                    CheckRefused::AddressOverBudget(retry_after) => Error::RateLimited {
                        what: "client authentication attempts from this address",
                        retry_after,
                    },
                    CheckRefused::Busy => Error::Busy,
                };
                log_refusal(caller, &err);
                err
            })?;
        let credentials = caller.credentials.clone();
        let registry = Arc::clone(registry);
        tokio::task::spawn_blocking(move || registry.authenticate(credentials.as_ref()).cloned())
            .await
            .map_err(Error::internal)?
            .map_err(unauthenticated)
    }

    /// Builds the claims and signs them: the one RSA signature per token.
    fn sign(
        &self,
        subject: &str,
        audience: &[String],
        lifetime: Duration,
        expired: bool,
        now: Timestamp,
    ) -> Result<IssuedToken, Error> {
        let ring = self.inner.ring.load();
        let (key, issued_at, expires_at) = if expired {
            // The last token this key could have signed: it expired when the
            // key retired, at least --retain-after ago.
            let key = ring.expired_signer(now).ok_or(Error::NoExpiredKey)?;
            let expires_at = key.meta.retires_at.min(now);
            (key, expires_at - lifetime, expires_at)
        } else {
            let key = ring.signer(now).ok_or(Error::NoSigningKey)?;
            (key, now, now + lifetime)
        };

        let jti = random_id();
        let claims = Claims {
            iss: &self.inner.issuer,
            sub: subject,
            aud: match audience {
                [] => None,
                [one] => Some(Audience::One(one)),
                many => Some(Audience::Many(many)),
            },
            iat: issued_at.unix(),
            nbf: issued_at.unix(),
            exp: expires_at.unix(),
            jti: &jti,
        };
        let claims_json = serde_json::to_vec(&claims).map_err(Error::internal)?;
        let token = key.key.sign_jwt(&claims_json).map_err(Error::internal)?;
        Ok(IssuedToken {
            token,
            kid: key.meta.kid.clone(),
            issued_at,
            expires_at,
            expires_in: expires_at.unix() - now.unix(),
        })
    }

    /// argon2 checks of client secrets run so far (0 without client auth).
    pub fn client_secret_checks(&self) -> u64 {
        self.inner
            .access
            .clients
            .as_ref()
            .map_or(0, |clients| clients.checks_run())
    }

    /// Forgets idle rate-limit buckets (called by the background loop).
    pub fn forget_idle_callers(&self) {
        if let Some(limits) = &self.inner.access.rate_limits {
            limits.forget_idle();
        }
        self.inner.access.secret_checks.forget_idle();
    }

    /// Health at `now`: whether we can sign, and whether the store answers.
    pub fn health(&self, now: Timestamp) -> Health {
        let ring = self.inner.ring.load();
        Health {
            can_sign: ring.signer(now).is_some(),
            store: self.store_health(),
            signing_until: ring
                .keys()
                .iter()
                .filter(|k| k.meta.is_published(now))
                .map(|k| k.meta.retires_at)
                .max()
                .filter(|until| *until > now),
        }
    }

    fn store_health(&self) -> StoreHealth {
        match self.inner.store_health.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every held key with its state at `now`, newest first.
    pub fn key_statuses(&self, now: Timestamp) -> Vec<KeyStatus> {
        let ring = self.inner.ring.load();
        ring.keys()
            .iter()
            .map(|k| KeyStatus {
                meta: k.meta.clone(),
                state: ring.state_of(&k.meta, now),
            })
            .collect()
    }

    /// When the schedule next wants a key created.
    pub fn next_rotation(&self) -> Option<Timestamp> {
        let ring = self.inner.ring.load();
        let metas: Vec<KeyMeta> = ring.keys().iter().map(|k| k.meta.clone()).collect();
        crate::keys::policy::next_rotation_at(&metas, &self.inner.policy)
    }

    /// When the background loop should next look at the store, at the latest:
    /// the next scheduled rotation or key-set change.
    pub fn next_deadline(&self) -> Timestamp {
        self.inner.ring.load().jwks().next_change
    }

    /// Runs the rotation policy against the store and reloads. Returns the keys
    /// this call created (none when another process got there first, or when
    /// nothing was due).
    pub async fn rotate(&self, trigger: Trigger, now: Timestamp) -> Result<Vec<KeyMeta>, Error> {
        let policy = self.inner.policy.clone();
        let planner = move |keys: &[KeyMeta]| plan_rotation(keys, now, &policy, trigger);

        let stored = self.store_call(self.inner.store.load()).await?;
        let metas: Vec<KeyMeta> = stored.iter().map(|k| k.meta.clone()).collect();
        let plan = planner(&metas);
        let mut count = plan.create.len();
        if plan.is_empty() {
            self.install(stored, now)?;
            return Ok(Vec::new());
        }
        // The plan is re-made under the store's lock; if it then wants more
        // keys than we generated (another process changed the store), retry.
        for _attempt in 0..3 {
            let fresh = self.generate(count).await?;
            match self
                .store_call(self.inner.store.rotate(&planner, fresh))
                .await?
            {
                RotateOutcome::Applied { created, pruned } => {
                    for key in &created {
                        tracing::info!(kid = %key.kid, generation = key.generation,
                            activates_at = %key.activates_at, expires_at = %key.expires_at,
                            "created signing key");
                    }
                    if !pruned.is_empty() {
                        tracing::info!(count = pruned.len(), "pruned old expired keys");
                    }
                    self.reload(now).await?;
                    return Ok(created);
                }
                RotateOutcome::NeedKeys(n) => count = n,
            }
        }
        Err(Error::internal(std::io::Error::other(
            "rotation plan kept changing under the store lock",
        )))
    }

    /// Generates and seals `count` keys on a blocking thread (RSA key
    /// generation would stall an async worker for tens of milliseconds).
    async fn generate(&self, count: usize) -> Result<Vec<NewKeyMaterial>, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|_| {
                    let key = SigningKey::generate().map_err(Error::internal)?;
                    let mut der = key.to_pkcs8_der().map_err(Error::internal)?;
                    let sealed = inner.keks.seal(key.kid(), &der).map_err(Error::internal);
                    der.zeroize();
                    Ok(NewKeyMaterial {
                        kid: key.kid().to_owned(),
                        n: key.jwk().n.clone(),
                        e: key.jwk().e.clone(),
                        sealed: sealed?,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        })
        .await
        .map_err(Error::internal)?
    }

    /// Reloads the keys from the store and swaps in a new ring if they changed.
    pub async fn reload(&self, now: Timestamp) -> Result<(), Error> {
        let stored = self.store_call(self.inner.store.load()).await?;
        self.install(stored, now)
    }

    /// Builds a ring from stored keys, unsealing only keys not already held.
    fn install(&self, stored: Vec<StoredKey>, now: Timestamp) -> Result<(), Error> {
        let current = self.inner.ring.load();
        let unchanged = stored.len() == current.keys().len()
            && stored
                .iter()
                .all(|s| current.get(&s.meta.kid).is_some_and(|k| k.meta == s.meta));
        if unchanged && current.is_current(now) {
            return Ok(());
        }
        let mut loaded = Vec::with_capacity(stored.len());
        for key in stored {
            match current.get(&key.meta.kid) {
                Some(held) if held.meta == key.meta => loaded.push(Arc::clone(held)),
                _ => loaded.push(Arc::new(self.unseal(key)?)),
            }
        }
        self.inner
            .ring
            .store(Arc::new(KeyRing::new(loaded, now, &self.inner.policy)));
        Ok(())
    }

    fn unseal(&self, stored: StoredKey) -> Result<LoadedKey, Error> {
        let kid = stored.meta.kid.clone();
        let mut der = self
            .inner
            .keks
            .open(&kid, &stored.sealed)
            .map_err(Error::internal)?;
        let key = SigningKey::from_pkcs8_der(&der);
        der.zeroize();
        let key = key.map_err(Error::internal)?;
        if key.kid() != kid {
            return Err(Error::internal(std::io::Error::other(format!(
                "stored key {kid} unseals to a different key ({})",
                key.kid()
            ))));
        }
        Ok(LoadedKey {
            meta: stored.meta,
            key,
        })
    }

    /// Runs a store call with a timeout, recording whether the store answered.
    async fn store_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Error> {
        let result = match tokio::time::timeout(STORE_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        };
        let mut health = match self.inner.store_health.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &result {
            Ok(_) => {
                if let StoreHealth::Unreachable { since, .. } = &*health {
                    tracing::info!(down_since = %since, "store reachable again");
                }
                *health = StoreHealth::Reachable;
            }
            Err(StoreError::Unavailable(err)) => {
                if *health == StoreHealth::Reachable {
                    // Logged once per outage, not once per attempt.
                    tracing::warn!(error = %err, "store unreachable; serving the keys held in memory");
                    *health = StoreHealth::Unreachable {
                        since: Timestamp::now(),
                        error: err.to_string(),
                    };
                }
            }
            Err(_) => {}
        }
        drop(health);
        result.map_err(Error::internal)
    }
}

/// The client id a caller presented, bounded and with hidden characters
/// escaped: it is the caller's text, not ours, so it may not shape the line.
fn client_id_for_log(caller: &Caller) -> Option<String> {
    caller
        .credentials
        .as_ref()
        .map(|c| crate::text::for_log(&c.id, 64))
}

fn peer_for_log(caller: &Caller) -> String {
    caller
        .addr
        .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
}

/// Operators see who failed and from where (never the secret); the client
/// only ever hears "unknown client or wrong secret".
fn log_auth_failure(caller: &Caller, failure: &AuthFailure) {
    let client_id = client_id_for_log(caller);
    let peer = peer_for_log(caller);
    match failure {
        AuthFailure::Missing => {
            tracing::info!(peer, "client authentication failed: no credentials");
        }
        AuthFailure::UnknownClient => tracing::warn!(
            client_id,
            peer,
            reason = "unknown client",
            "client authentication failed"
        ),
        AuthFailure::WrongSecret => tracing::warn!(
            client_id,
            peer,
            reason = "wrong secret",
            "client authentication failed"
        ),
    }
}

/// A 429 or a full secret-check queue, with who was refused and from where.
fn log_refusal(caller: &Caller, err: &Error) {
    let refusal = match err {
        Error::Busy => "request refused, secret checks queue full",
        _ => "request rate limited",
    };
    tracing::warn!(
        client_id = client_id_for_log(caller),
        peer = peer_for_log(caller),
        retry_after_secs = err.retry_after_secs(),
        "{refusal}: {err}"
    );
}

/// Validates a token request against the policy; returns the token lifetime.
/// Pure, so it is unit-tested and fuzzed directly.
pub fn validate_request(request: &TokenRequest, policy: &Policy) -> Result<Duration, Error> {
    let max = policy.token_ttl.as_secs();
    let lifetime = match request.lifetime_seconds {
        None => policy.token_ttl,
        Some(secs) => match u64::try_from(secs) {
            Ok(s) if (1..=max).contains(&s) => Duration::from_secs(s),
            _ => {
                return Err(Error::invalid(
                    "lifetime_seconds",
                    format!("must be between 1 and {max} (the server's --token-ttl), got {secs}"),
                ));
            }
        },
    };
    if let Some(subject) = &request.subject {
        check_claim("subject", subject)?;
    }
    if request.audience.len() > MAX_AUDIENCES {
        return Err(Error::invalid(
            "audience",
            format!(
                "at most {MAX_AUDIENCES} values, got {}",
                request.audience.len()
            ),
        ));
    }
    for (index, aud) in request.audience.iter().enumerate() {
        check_claim("audience", aud).map_err(|err| match err {
            Error::InvalidArgument { field, reason } if request.audience.len() > 1 => {
                Error::invalid(
                    field,
                    format!(
                        "value {} of {}: {reason}",
                        index + 1,
                        request.audience.len()
                    ),
                )
            }
            other => other,
        })?;
    }
    Ok(lifetime)
}

fn check_claim(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_CLAIM_LEN {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_CLAIM_LEN} characters"),
        ));
    }
    // Controls, and the invisible and direction-changing characters that
    // would make a claim display as something else (see `crate::text`).
    crate::text::check_visible(value).map_err(|hidden| Error::invalid(field, hidden))
}
