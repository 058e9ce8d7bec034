//! OAuth 2.0 in domain terms: the client credentials grant (RFC 6749 §4.4)
//! issuing RFC 9068 JWT access tokens, introspection (RFC 7662) and
//! revocation (RFC 7009), with the RFC 6749 §5.2 error codes both doors
//! carry.
//!
//! Client authentication, its argon2 guard and the rate limits are the same
//! ones `POST /auth` uses (`issuance`); which keys sign is the key ring's.
//! How a request arrives (a form, gRPC fields, Basic or body credentials)
//! and how an [`OAuthError`] is shown are the transports'.

use std::{borrow::Cow, collections::HashMap, fmt, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Map, Value};

use super::{
    KeyService, MAX_AUDIENCES, MAX_CLAIM_LEN,
    claims::{check_custom_claims, claims_for},
    defects::{Defect, TokenShape, TokenSpec},
};
use crate::{
    access::{AddressGroup, Caller, Client},
    error::Error,
    keys::{Algorithm, crypto::random_id},
    time::Timestamp,
};

/// The one grant this server serves.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 9068 section 2.1: the `typ` of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Claims a client's static `claims` may not set: the JWT registered claims
/// (RFC 7519 section 4.1), RFC 9068's, and those RFC 7662 answers with.
pub const RESERVED_CLAIMS: [&str; 13] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "acr",
    "amr",
    "cnf",
];
/// Static extra claims a client may carry, serialised (bounded: every token
/// repeats them).
const MAX_STATIC_CLAIMS_BYTES: usize = 4096;

/// The RFC 6749 section 5.2 error codes (and RFC 8707's `invalid_target`),
/// plus the few answers the RFC leaves to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthErrorCode {
    /// A parameter is missing, repeated, malformed or unsupported.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The grant is invalid, expired or revoked.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The server does not support this grant type.
    UnsupportedGrantType,
    /// A scope is unknown or not the client's.
    InvalidScope,
    /// RFC 8707 section 2: a `resource` or `audience` the client may not have.
    InvalidTarget,
    /// Too many requests from this client or address (RFC 8628's word for it).
    SlowDown,
    /// No key can sign, or the secret checks are queued up, or the store did
    /// not take a revocation.
    TemporarilyUnavailable,
    /// A fault on our side; the cause is logged, not told.
    ServerError,
}

impl OAuthErrorCode {
    /// The code as the RFCs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::SlowDown => "slow_down",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
        }
    }
}

/// An OAuth error: its code, a description for the developer reading it,
/// and for refusals that pass how long to wait.
#[derive(Debug)]
pub struct OAuthError {
    /// The `error` member.
    pub code: OAuthErrorCode,
    /// The `error_description` member.
    pub description: String,
    /// Seconds until a retry may succeed, for refusals that pass.
    pub retry_after_secs: Option<u64>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl OAuthError {
    /// An error with `code` and `description`, and no wait.
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after_secs: None,
        }
    }

    /// An `invalid_request` error.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }
}

/// The domain's errors in OAuth words. No catch-all arm: a new variant must
/// be decided here too.
impl From<Error> for OAuthError {
    fn from(err: Error) -> Self {
        let retry_after_secs = err.retry_after_secs();
        let code = match &err {
            Error::InvalidRequest { .. }
            | Error::ExpiredTokensDisabled
            | Error::TestTokensDisabled(_) => OAuthErrorCode::InvalidRequest,
            Error::ClientNotAuthenticated(_) => OAuthErrorCode::InvalidClient,
            Error::AudienceNotPermitted { .. } => OAuthErrorCode::InvalidTarget,
            Error::RateLimited { .. } => OAuthErrorCode::SlowDown,
            Error::Busy | Error::NoSigningKey | Error::NoExpiredKey => {
                OAuthErrorCode::TemporarilyUnavailable
            }
            Error::SignerUnavailable(_) => {
                tracing::warn!(error = %err.chain(), "oauth request refused: signing key unavailable");
                OAuthErrorCode::TemporarilyUnavailable
            }
            Error::Internal(_) => {
                tracing::error!(error = %err.chain(), "oauth request failed");
                OAuthErrorCode::ServerError
            }
        };
        Self {
            code,
            description: err.client_message(),
            retry_after_secs,
        }
    }
}

/// What the clients file says a client may be granted, beside its id, secret
/// and `audiences`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientGrants {
    /// The scopes it may ask for; with none it may ask for none.
    pub scopes: Vec<String>,
    /// `aud` when the request names none.
    pub default_audience: Option<String>,
    /// The longest lifetime its tokens get (the server's `token_ttl` caps it too).
    pub max_lifetime: Option<Duration>,
    /// Static extra claims every token of its carries (roles, a tenant…).
    pub claims: Map<String, Value>,
    /// The custom claim names its requests may add (`allowed_claims`; see
    /// `service::claims`). Empty: none.
    pub allowed_claims: Vec<String>,
}

impl ClientGrants {
    /// Checks a clients-file entry: scope tokens by RFC 6749 section 3.3,
    /// visible text, a positive lifetime, and no reserved claim names.
    ///
    /// # Errors
    ///
    /// What is wrong, for the start-up error naming the file and client.
    pub fn new(
        scopes: Vec<String>,
        default_audience: Option<String>,
        max_lifetime_seconds: Option<u64>,
        claims: Map<String, Value>,
    ) -> Result<Self, String> {
        for scope in &scopes {
            check_scope_token(scope).map_err(|reason| format!("scopes: {reason}"))?;
        }
        if let Some(audience) = &default_audience {
            check_text("default_audience", audience).map_err(|e| e.to_string())?;
        }
        let max_lifetime = match max_lifetime_seconds {
            Some(0) => return Err("max_lifetime_seconds must be at least 1".into()),
            other => other.map(Duration::from_secs),
        };
        if let Some(reserved) = claims
            .keys()
            .find(|name| RESERVED_CLAIMS.contains(&name.as_str()))
        {
            return Err(format!(
                "claims: {reserved:?} is a registered claim the server sets itself; \
                 static claims may not name any of {}",
                RESERVED_CLAIMS.join(", ")
            ));
        }
        if serde_json::to_vec(&claims).map_or(0, |json| json.len()) > MAX_STATIC_CLAIMS_BYTES {
            return Err(format!(
                "claims: at most {MAX_STATIC_CLAIMS_BYTES} bytes of JSON"
            ));
        }
        Ok(Self {
            scopes,
            default_audience,
            max_lifetime,
            claims,
            allowed_claims: Vec::new(),
        })
    }

    /// The same grants, letting requests add the claims `names` lists.
    ///
    /// # Errors
    ///
    /// A registered claim among `names` (no request may set those).
    pub fn with_allowed_claims(mut self, names: Vec<String>) -> Result<Self, String> {
        if let Some(reserved) = names
            .iter()
            .find(|name| RESERVED_CLAIMS.contains(&name.as_str()))
        {
            return Err(format!(
                "allowed_claims: {reserved:?} is a registered claim the server sets itself"
            ));
        }
        self.allowed_claims = names;
        Ok(self)
    }
}

/// A token request at the token endpoint, whichever door it came through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantRequest {
    /// `grant_type`; empty when the caller sent none.
    pub grant_type: String,
    /// `scope`, space-delimited (RFC 6749 section 3.3).
    pub scope: Option<String>,
    /// `audience` values (the `aud` asked for by name).
    pub audience: Vec<String>,
    /// RFC 8707 `resource` values: absolute URIs, also put in `aud`.
    pub resource: Vec<String>,
    /// The algorithm to sign with (RFC 7518 `alg`); the client's default, else
    /// the server's first configured algorithm, when absent.
    pub alg: Option<String>,
    /// A defective test access token by its catalogue name (see
    /// [`super::Defect`]).
    pub defect: Option<String>,
    /// Claims to add beside the registered ones (see [`super::claims`]).
    pub claims: Map<String, Value>,
}

/// An access token and what RFC 6749 section 5.1 tells the client about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The token, a JWT (RFC 9068).
    pub access_token: String,
    /// The kid of the key that signed it.
    pub kid: String,
    /// The algorithm that signed it.
    pub alg: Algorithm,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scopes granted, space-delimited; `None` when none were.
    pub scope: Option<String>,
    /// The defect built in, for a test token.
    pub defect: Option<Defect>,
}

impl AccessToken {
    /// The `token_type` (RFC 6750).
    pub const TOKEN_TYPE: &'static str = "Bearer";
}

/// RFC 7662 section 2.2: what introspection says of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Introspection {
    /// Expired, revoked, malformed, foreign or badly signed: nothing more is said.
    Inactive,
    /// Active: what it says.
    Active(ActiveToken),
}

/// The members of an active introspection answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveToken {
    /// The scopes it grants, space-delimited.
    pub scope: Option<String>,
    /// The client it was issued to.
    pub client_id: Option<String>,
    /// Its `sub`.
    pub sub: Option<String>,
    /// Its audiences; empty when it names none.
    pub aud: Vec<String>,
    /// Its `iss`.
    pub iss: String,
    /// Its `exp`, in seconds since the epoch.
    pub exp: i64,
    /// Its `iat`, in seconds since the epoch.
    pub iat: Option<i64>,
    /// Its `nbf`, in seconds since the epoch.
    pub nbf: Option<i64>,
    /// Its `jti`.
    pub jti: String,
    /// `Bearer`.
    pub token_type: &'static str,
}

/// The JOSE header members introspection and revocation read (RFC 7515
/// section 4.1), borrowed from the decoded header where no escapes need
/// undoing. A member given twice makes the header unreadable.
#[derive(Deserialize)]
struct OwnHeader<'a> {
    #[serde(borrow, default)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    /// RFC 7515 section 4.1.11: this server sets no `crit`, so a token that
    /// carries one is not one of its own.
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// `aud`: one audience or several (RFC 7519 section 4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The claims of a token this server signed, as far as introspection and
/// revocation need them (others are not read). `exp` and `jti` are required
/// of a token to count as this server's.
#[derive(Deserialize)]
struct OwnClaims {
    iss: Option<String>,
    exp: Option<i64>,
    jti: Option<String>,
    nbf: Option<i64>,
    iat: Option<i64>,
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    aud: Option<OneOrMany>,
}

/// A token this server signed: its claims, with the required `jti` and `exp`.
struct VerifiedToken {
    claims: OwnClaims,
    jti: String,
    exp: i64,
}

impl VerifiedToken {
    /// The client a token was issued to: `client_id`, or `sub` for the
    /// `POST /auth` tokens that carry none.
    fn client(&self) -> Option<&str> {
        self.claims
            .client_id
            .as_deref()
            .or(self.claims.sub.as_deref())
    }
}

/// Revoked `jti`s this replica knows of, each with its token's `exp`.
#[derive(Debug, Default)]
pub struct RevokedTokens {
    jtis: std::sync::Mutex<HashMap<String, Timestamp>>,
}

impl RevokedTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Timestamp>> {
        self.jtis
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, jti: &str) -> bool {
        self.lock().contains_key(jti)
    }
}

impl KeyService {
    /// The client credentials grant (RFC 6749 section 4.4): authenticates the
    /// client (any id is accepted without registered clients, as `/auth`
    /// accepts anyone), checks scope and audience against its registration,
    /// and signs an RFC 9068 access token.
    ///
    /// The audience is what the request names (`audience` and `resource`),
    /// else the client's `default_audience`, else its registered `audiences`,
    /// else this server's issuer.
    ///
    /// # Errors
    ///
    /// An [`OAuthError`] with the RFC 6749 section 5.2 code.
    pub async fn grant_client_credentials(
        &self,
        request: &GrantRequest,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<AccessToken, OAuthError> {
        if request.grant_type.is_empty() {
            return Err(OAuthError::invalid_request(
                "grant_type is required; this server grants client_credentials",
            ));
        }
        if request.grant_type != CLIENT_CREDENTIALS {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!(
                    "grant_type {:?} is not served; this server grants client_credentials",
                    crate::text::for_log(&request.grant_type, 64)
                ),
            ));
        }
        let asked_scopes = parse_scope(request.scope.as_deref())?;
        let asked_audience = asked_audience(request)?;
        let asked_alg = self.named_alg(request.alg.as_deref())?;
        check_custom_claims(&request.claims)?;
        let defect = self.requested_defect(request.defect.as_deref(), false, TokenShape::Access)?;
        let (client_id, client) = self.oauth_client(caller).await?;
        let alg = self.signing_alg(asked_alg, client.as_ref().and_then(|c| c.alg))?;
        let alg = self.defect_alg(defect, asked_alg, alg)?;
        let grants = client.as_ref().map(|c| &c.grants);
        let scopes = match grants {
            None => asked_scopes,
            Some(grants) => granted_scopes(grants, asked_scopes)?,
        };
        let audience = match &client {
            None if asked_audience.is_empty() => vec![self.issuer().to_owned()],
            None => asked_audience,
            Some(client) => audience_for(client, asked_audience, self.issuer())?,
        };
        self.check_token_rate(caller, client.as_ref())?;
        let mut lifetime = self.policy().token_ttl;
        if let Some(max) = grants.and_then(|g| g.max_lifetime) {
            lifetime = lifetime.min(max);
        }
        let scope = (!scopes.is_empty()).then(|| scopes.join(" "));
        let extra = claims_for(client.as_ref(), &request.claims)?;
        self.sign_access_token(
            alg,
            &client_id,
            &audience,
            scope,
            Some(&extra),
            lifetime,
            defect,
            now,
        )
        .await
    }

    /// Who is calling an OAuth endpoint: its client id and, with a clients
    /// file, its registration. Without a clients file any id is accepted with
    /// any secret (or none), but an id is still required.
    async fn oauth_client(&self, caller: &Caller) -> Result<(String, Option<Client>), OAuthError> {
        match &self.inner.access.clients {
            Some(registry) => {
                let client = self.authenticate(registry, caller).await?;
                Ok((client.id.clone(), Some(client)))
            }
            None => {
                let credentials = caller.credentials.as_ref().ok_or_else(|| {
                    OAuthError::new(
                        OAuthErrorCode::InvalidClient,
                        "client_id is required (HTTP Basic, or the client_id form field)",
                    )
                })?;
                check_text("client_id", &credentials.id)?;
                Ok((credentials.id.clone(), None))
            }
        }
    }

    /// The same per-client (or, without client auth, per-address) token
    /// budget `/auth` spends.
    fn check_token_rate(&self, caller: &Caller, client: Option<&Client>) -> Result<(), OAuthError> {
        let Some(limits) = &self.inner.access.rate_limits else {
            return Ok(());
        };
        let key = match client {
            Some(client) => Some(client.id.clone()),
            None => caller.addr.map(|addr| AddressGroup::from(addr).to_string()),
        };
        let Some(key) = key else { return Ok(()) };
        limits.check(&key).map_err(|retry_after| {
            tracing::warn!(
                client_id = client.map(|c| crate::text::for_log(&c.id, 64)),
                "request rate limited: too many tokens requested"
            );
            OAuthError::from(Error::RateLimited {
                what: "tokens requested",
                retry_after,
            })
        })
    }

    /// Builds the RFC 9068 claims and signs them with the active key (or
    /// builds in the test token's `defect`).
    #[allow(clippy::too_many_arguments)]
    async fn sign_access_token(
        &self,
        alg: Algorithm,
        client_id: &str,
        audience: &[String],
        scope: Option<String>,
        extra: Option<&Map<String, Value>>,
        lifetime: Duration,
        defect: Option<Defect>,
        now: Timestamp,
    ) -> Result<AccessToken, OAuthError> {
        let jti = random_id().map_err(Error::internal)?;
        let mut claims = extra.cloned().unwrap_or_default();
        claims.insert("iss".into(), self.issuer().into());
        claims.insert("sub".into(), client_id.into());
        claims.insert(
            "aud".into(),
            match audience {
                [one] => Value::from(one.as_str()),
                many => Value::from(many.to_vec()),
            },
        );
        claims.insert("jti".into(), jti.into());
        claims.insert("client_id".into(), client_id.into());
        if let Some(scope) = &scope {
            claims.insert("scope".into(), scope.as_str().into());
        }
        let signed = self
            .sign_claims(TokenSpec {
                alg,
                shape: TokenShape::Access,
                claims,
                lifetime,
                defect,
                now,
            })
            .await?;
        Ok(AccessToken {
            access_token: signed.token,
            kid: signed.kid,
            alg,
            expires_in: signed.expires_at.unix() - now.unix(),
            scope,
            defect,
        })
    }

    /// RFC 7662: whether `token` is a live token of this issuer: signed by a
    /// key this server holds, with this issuer, not expired, not revoked.
    /// With registered clients the caller must authenticate as one.
    ///
    /// # Errors
    ///
    /// `invalid_client` (and the secret-check refusals) for the caller only;
    /// anything wrong with the token is [`Introspection::Inactive`].
    pub async fn introspect(
        &self,
        token: &str,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<Introspection, OAuthError> {
        if self.inner.access.clients.is_some() {
            self.oauth_client(caller).await?;
        }
        let Some(verified) = self.verify_own_token(token) else {
            return Ok(Introspection::Inactive);
        };
        if verified.exp <= now.unix()
            || verified.claims.nbf.is_some_and(|nbf| nbf > now.unix())
            || self.inner.revoked.contains(&verified.jti)
        {
            return Ok(Introspection::Inactive);
        }
        let VerifiedToken { claims, jti, exp } = verified;
        let aud = match claims.aud {
            Some(OneOrMany::One(one)) => vec![one],
            Some(OneOrMany::Many(many)) => many,
            None => Vec::new(),
        };
        Ok(Introspection::Active(ActiveToken {
            scope: claims.scope,
            client_id: claims.client_id,
            sub: claims.sub,
            aud,
            iss: self.issuer().to_owned(),
            exp,
            iat: claims.iat,
            nbf: claims.nbf,
            jti,
            token_type: AccessToken::TOKEN_TYPE,
        }))
    }

    /// RFC 7009: records `token`'s `jti` as revoked until its `exp`, in the
    /// store (so every replica learns it at its next reload) and here at once.
    /// A token that is not ours, malformed or already expired needs nothing
    /// and is not an error (section 2.2). With registered clients the caller
    /// must authenticate, and may revoke only tokens issued to it (section 2.1).
    ///
    /// # Errors
    ///
    /// `invalid_client` for the caller, `unauthorized_client` for another
    /// client's token, `temporarily_unavailable` when the store did not take it.
    pub async fn revoke(
        &self,
        token: &str,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let client = match &self.inner.access.clients {
            Some(_) => self.oauth_client(caller).await?.1,
            None => None,
        };
        let Some(verified) = self.verify_own_token(token) else {
            return Ok(());
        };
        if let Some(client) = &client
            && verified.client() != Some(client.id.as_str())
        {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "this token was issued to another client; a client may revoke only its own",
            ));
        }
        if verified.exp <= now.unix() {
            return Ok(());
        }
        let expires_at = Timestamp::from_unix(verified.exp);
        self.inner
            .store
            .revoke(&verified.jti, expires_at)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "revocation not recorded: the store did not take it");
                OAuthError::new(
                    OAuthErrorCode::TemporarilyUnavailable,
                    "the revocation could not be recorded; retry",
                )
            })?;
        self.inner
            .revoked
            .lock()
            .insert(verified.jti.clone(), expires_at);
        Ok(())
    }

    /// Whether callers of the OAuth endpoints must prove a client secret.
    pub fn requires_client_auth(&self) -> bool {
        self.inner.access.clients.is_some()
    }

    /// Every scope some registered client may ask for, sorted; empty
    /// without a clients file (any scope is granted as asked).
    pub fn scopes_supported(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .inner
            .access
            .clients
            .iter()
            .flat_map(|registry| registry.clients())
            .flat_map(|client| client.grants.scopes.iter().cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// Re-reads the revocations from the store (other replicas' too) and
    /// forgets the expired ones; on failure keeps what it holds.
    pub async fn reload_revocations(&self, now: Timestamp) {
        match self.inner.store.revocations(now).await {
            Ok(revocations) => {
                let mut held = self.inner.revoked.lock();
                held.retain(|_, expires_at| *expires_at > now);
                for revocation in revocations {
                    held.insert(revocation.jti, revocation.expires_at);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "revocations not reloaded; keeping those held");
            }
        }
    }

    /// The claims of `token` if it is a compact JWS signed, with the key's own
    /// algorithm, by a key in
    /// the ring, naming this issuer and carrying a `jti` and an integer `exp`.
    fn verify_own_token(&self, token: &str) -> Option<VerifiedToken> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header_json = B64.decode(header).ok()?;
        let fields: OwnHeader<'_> = serde_json::from_slice(&header_json).ok()?;
        if fields.crit.is_some() {
            return None;
        }
        let ring = self.ring();
        let key = ring.get(fields.kid.as_deref()?)?;
        // The header's `alg` must be the key's own: no algorithm confusion
        // (RFC 8725 section 3.1).
        if fields.alg.as_deref() != Some(key.key.alg().as_str()) {
            return None;
        }
        let signing_input = token.get(..header.len() + 1 + payload.len())?;
        let signature = B64.decode(signature).ok()?;
        if !key.key.verifies(signing_input.as_bytes(), &signature) {
            return None;
        }
        let mut claims: OwnClaims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        if claims.iss.as_deref() != Some(self.issuer()) {
            return None;
        }
        let exp = claims.exp?;
        let jti = claims.jti.take()?;
        Some(VerifiedToken { claims, jti, exp })
    }
}

/// RFC 6749 section 3.3: space-delimited scope tokens of NQCHARs; each
/// granted once, in the order asked.
fn parse_scope(scope: Option<&str>) -> Result<Vec<String>, OAuthError> {
    let mut scopes: Vec<String> = Vec::new();
    for token in scope.unwrap_or_default().split(' ') {
        if token.is_empty() {
            continue;
        }
        check_scope_token(token)
            .map_err(|reason| OAuthError::new(OAuthErrorCode::InvalidScope, reason))?;
        if !scopes.iter().any(|s| s == token) {
            scopes.push(token.to_owned());
        }
    }
    Ok(scopes)
}

fn check_scope_token(token: &str) -> Result<(), String> {
    let nqchar = |c: char| matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
    if token.is_empty() || token.len() > MAX_CLAIM_LEN || !token.chars().all(nqchar) {
        return Err(format!(
            "scope {:?} is not a scope token (1 to {MAX_CLAIM_LEN} printable ASCII \
             characters, no space, quote or backslash)",
            crate::text::for_log(token, 64)
        ));
    }
    Ok(())
}

/// What a registered client gets: what it asked for if its registration
/// lists all of it, or everything it is registered for when it asked for
/// nothing (RFC 6749 section 3.3's documented default).
fn granted_scopes(grants: &ClientGrants, asked: Vec<String>) -> Result<Vec<String>, OAuthError> {
    if asked.is_empty() {
        return Ok(grants.scopes.clone());
    }
    if let Some(denied) = asked.iter().find(|s| !grants.scopes.contains(s)) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidScope,
            format!("this client may not ask for scope {denied:?}"),
        ));
    }
    Ok(asked)
}

/// `audience` and `resource` together, each checked (RFC 8707 section 2: a
/// resource is an absolute URI without a fragment).
fn asked_audience(request: &GrantRequest) -> Result<Vec<String>, OAuthError> {
    let invalid_target = |reason: String| OAuthError::new(OAuthErrorCode::InvalidTarget, reason);
    let mut audience: Vec<String> = Vec::new();
    for value in &request.audience {
        check_text("audience", value).map_err(|e| invalid_target(e.to_string()))?;
        if !audience.contains(value) {
            audience.push(value.clone());
        }
    }
    for value in &request.resource {
        check_text("resource", value).map_err(|e| invalid_target(e.to_string()))?;
        if !is_absolute_uri(value) || value.contains('#') {
            return Err(invalid_target(format!(
                "resource {:?} must be an absolute URI without a fragment (RFC 8707)",
                crate::text::for_log(value, 64)
            )));
        }
        if !audience.contains(value) {
            audience.push(value.clone());
        }
    }
    if audience.len() > MAX_AUDIENCES {
        return Err(invalid_target(format!(
            "at most {MAX_AUDIENCES} audiences and resources together, got {}",
            audience.len()
        )));
    }
    Ok(audience)
}

/// `scheme ":" …` by RFC 3986 section 3.1.
fn is_absolute_uri(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
}

fn audience_for(
    client: &Client,
    asked: Vec<String>,
    issuer: &str,
) -> Result<Vec<String>, OAuthError> {
    if asked.is_empty() {
        return Ok(
            match (&client.grants.default_audience, client.audiences.as_slice()) {
                (Some(default), _) => vec![default.clone()],
                (None, []) => vec![issuer.to_owned()],
                (None, registered) => registered.to_vec(),
            },
        );
    }
    if !client.audiences.is_empty()
        && let Some(denied) = asked.iter().find(|aud| !client.audiences.contains(aud))
    {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidTarget,
            format!(
                "client {} may not ask for audience {denied:?}",
                crate::text::for_log(&client.id, 64)
            ),
        ));
    }
    Ok(asked)
}

/// Caller-supplied text that becomes a claim: non-empty, bounded, visible.
fn check_text(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_CLAIM_LEN {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_CLAIM_LEN} characters"),
        ));
    }
    crate::text::check_visible(value).map_err(|hidden| Error::invalid(field, hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_follow_rfc6749_section_3_3() {
        assert_eq!(
            parse_scope(Some("read  write read")).unwrap(),
            ["read", "write"]
        );
        assert_eq!(
            parse_scope(Some("a\"b")).unwrap_err().code,
            OAuthErrorCode::InvalidScope
        );
        assert!(parse_scope(None).unwrap().is_empty());
    }

    #[test]
    fn resources_are_absolute_uris_without_fragments() {
        assert!(is_absolute_uri("https://api.example"));
        assert!(is_absolute_uri("urn:example:api"));
        assert!(!is_absolute_uri("api"));
        assert!(!is_absolute_uri("1http://x"));
        let request = GrantRequest {
            resource: vec!["https://api.example#frag".into()],
            ..GrantRequest::default()
        };
        assert_eq!(
            asked_audience(&request).unwrap_err().code,
            OAuthErrorCode::InvalidTarget
        );
    }

    #[test]
    fn static_claims_may_not_name_registered_claims() {
        let mut claims = Map::new();
        claims.insert("roles".into(), Value::from(vec!["admin"]));
        assert!(ClientGrants::new(vec![], None, None, claims.clone()).is_ok());
        claims.insert("sub".into(), "someone-else".into());
        let err = ClientGrants::new(vec![], None, None, claims).unwrap_err();
        assert!(err.contains("\"sub\""), "{err}");
        assert!(ClientGrants::new(vec!["bad scope".into()], None, None, Map::new()).is_err());
        assert!(ClientGrants::new(vec![], None, Some(0), Map::new()).is_err());
    }
}
