//! Token issuance: what a caller may ask for ([`TokenRequest`] and its
//! checks), who may ask (client authentication and rate limits, through the
//! `Access` bundle), which algorithm signs, and the claims of `/auth` tokens.
//! The header, times and the one signature per token (and any test-token
//! defect) are `defects`'s `sign_claims`, shared with the token endpoint.
//!
//! Which key signs is the key ring's decision (see `lifecycle`); how a request
//! arrives and how errors are shown to callers are the transports'.

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value};

use super::{
    KeyService,
    claims::{check_custom_claims, claims_for},
    defects::{Defect, TokenShape, TokenSpec},
};
use crate::{
    access::{AddressGroup, AuthFailure, Caller, CheckRefused, Client, ClientRegistry},
    error::{AuthProblem, Error},
    keys::{Algorithm, crypto::random_id, policy::Policy},
    time::Timestamp,
};

/// Limits on caller-supplied claim values: the longest `sub` or audience, in bytes.
pub const MAX_CLAIM_LEN: usize = 256;
/// The most audiences one token may carry.
pub const MAX_AUDIENCES: usize = 16;
/// The `sub` of a token whose caller named nobody.
pub const DEFAULT_SUBJECT: &str = "anonymous";

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
    /// The algorithm to sign with, as the caller spelled it (`alg`, RFC 7518
    /// §3.1); the client's default, else the first configured, when absent.
    pub alg: Option<String>,
    /// A defective test token by its catalogue name (`defect=NAME`); see
    /// [`super::Defect`]. `expired` is the same as `defect=expired`.
    pub defect: Option<String>,
    /// Claims to add beside the registered ones (see [`super::claims`]).
    pub claims: Map<String, Value>,
}

/// A signed token and what a caller needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS (RFC 7515 §7.1).
    pub token: String,
    /// The algorithm that signed it.
    pub alg: Algorithm,
    /// The kid of the key that signed it, as in its header.
    pub kid: String,
    /// Its `iat`.
    pub issued_at: Timestamp,
    /// Its `exp`.
    pub expires_at: Timestamp,
    /// Seconds from issue until `exp`; negative for an expired token.
    pub expires_in: i64,
    /// The defect built in, for a test token.
    pub defect: Option<Defect>,
}

impl IssuedToken {
    /// The `token_type` to report with it (RFC 6750).
    pub const TOKEN_TYPE: &'static str = "Bearer";
}

impl KeyService {
    /// Issues a token for `caller`: validation, access checks (client
    /// authentication and rate limits, when configured), claims, and one
    /// signature.
    ///
    /// # Errors
    ///
    /// A request the policy refuses ([`Error::InvalidRequest`]), a caller
    /// access refuses, no key to sign with, or an internal fault (the RNG or
    /// the signature failed).
    pub async fn issue_token(
        &self,
        request: &TokenRequest,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<IssuedToken, Error> {
        let lifetime = self.check_request(request)?;
        let asked_alg = self.requested_alg(request)?;
        let defect =
            self.requested_defect(request.defect.as_deref(), request.expired, TokenShape::Auth)?;
        let access = &self.inner.access;
        let (subject, audience, limit_key, client) = match &access.clients {
            None => {
                let subject = request
                    .subject
                    .clone()
                    .or_else(|| caller.credentials.as_ref().map(|c| c.id.clone()))
                    .unwrap_or_else(|| DEFAULT_SUBJECT.to_owned());
                check_claim("subject", &subject)?;
                // Only with rate limits on: formatting the address costs more
                // than the rest of this check.
                let key = access
                    .rate_limits
                    .as_ref()
                    .and(caller.addr)
                    .map(|addr| AddressGroup::from(addr).to_string());
                (subject, request.audience.clone(), key, None)
            }
            Some(registry) => {
                let client = self.authenticate(registry, caller).await?;
                let audience = permitted_audience(&client, &request.audience)?;
                (
                    client.id.clone(),
                    audience,
                    Some(client.id.clone()),
                    Some(client),
                )
            }
        };
        let client_alg = client.as_ref().and_then(|c| c.alg);
        let extra = claims_for(client.as_ref(), &request.claims)?;
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
        let alg = self.signing_alg(asked_alg, client_alg)?;
        let alg = self.defect_alg(defect, asked_alg, alg)?;
        let jti = random_id().map_err(Error::internal)?;
        // The registered claims (RFC 7519 §4.1) beside the added ones, which
        // may not name them (`claims`); the times are `sign_claims`'s.
        let mut claims = extra;
        claims.insert("iss".into(), self.inner.issuer.as_str().into());
        claims.insert("sub".into(), subject.into());
        match audience.as_slice() {
            [] => {}
            [one] => {
                claims.insert("aud".into(), one.as_str().into());
            }
            many => {
                claims.insert("aud".into(), many.into());
            }
        }
        claims.insert("jti".into(), jti.into());
        let signed = self
            .sign_claims(TokenSpec {
                alg,
                shape: TokenShape::Auth,
                claims,
                lifetime,
                defect,
                now,
            })
            .await?;
        Ok(IssuedToken {
            token: signed.token,
            alg,
            kid: signed.kid,
            issued_at: signed.issued_at,
            expires_at: signed.expires_at,
            expires_in: signed.expires_at.unix() - now.unix(),
            defect,
        })
    }

    /// Which algorithm signs: the one the request names, else the client's
    /// default (which must be configured), else [`Self::default_alg`].
    pub(super) fn signing_alg(
        &self,
        asked: Option<Algorithm>,
        client_default: Option<Algorithm>,
    ) -> Result<Algorithm, Error> {
        match (asked, client_default) {
            (Some(alg), _) => Ok(alg),
            (None, Some(alg)) => self.configured(alg),
            (None, None) => Ok(self.default_alg()),
        }
    }

    /// The algorithm that signs requests that name none (the first configured).
    pub fn default_alg(&self) -> Algorithm {
        self.algorithms()
            .first()
            .copied()
            .unwrap_or(Algorithm::Rs256)
    }

    /// The algorithms this service signs with, the default first.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.inner.policy.algorithms
    }

    /// The algorithm a request names, if it names one this service signs with.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] on `alg` naming those that are configured.
    pub fn requested_alg(&self, request: &TokenRequest) -> Result<Option<Algorithm>, Error> {
        self.named_alg(request.alg.as_deref())
    }

    /// The algorithm `name` (a request's `alg`), if it is one this service
    /// signs with; `None` for none named.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] on `alg` naming those that are configured.
    pub fn named_alg(&self, name: Option<&str>) -> Result<Option<Algorithm>, Error> {
        let Some(name) = name else {
            return Ok(None);
        };
        match name.parse::<Algorithm>() {
            Ok(alg) => self.configured(alg).map(Some),
            Err(_) => Err(self.not_configured(&crate::text::for_log(name, 32))),
        }
    }

    fn configured(&self, alg: Algorithm) -> Result<Algorithm, Error> {
        if self.algorithms().contains(&alg) {
            Ok(alg)
        } else {
            Err(self.not_configured(alg.as_str()))
        }
    }

    fn not_configured(&self, name: &str) -> Error {
        // `es256` for `ES256`: say that only the case is wrong.
        let hint = Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() != name && alg.as_str().eq_ignore_ascii_case(name))
            .map(|alg| format!(" (names are case-sensitive: {alg})"))
            .unwrap_or_default();
        Error::invalid(
            "alg",
            format!(
                "{name:?} is not an algorithm this server signs with; it signs with {}{hint}",
                Algorithm::list(self.algorithms())
            ),
        )
    }

    /// Validates what the caller asked for; returns the token lifetime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming the field that is wrong.
    pub fn check_request(&self, request: &TokenRequest) -> Result<Duration, Error> {
        validate_request(request, &self.inner.policy)
    }

    /// Checks the caller's credentials against the registered clients, off the
    /// async workers unless the answer is already known (argon2 is slow on
    /// purpose).
    pub(super) async fn authenticate(
        &self,
        registry: &Arc<ClientRegistry>,
        caller: &Caller,
    ) -> Result<Client, Error> {
        let unauthenticated = |failure: AuthFailure| {
            log_auth_failure(caller, &failure);
            Error::ClientNotAuthenticated(match failure {
                AuthFailure::Missing => AuthProblem::Missing,
                AuthFailure::UnknownClient | AuthFailure::WrongSecret => AuthProblem::Rejected,
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
}

/// The audience an authenticated client gets: what it asked for, if its
/// registration allows all of it (a client registered with no audiences may
/// ask for any), or its registered audiences when it asked for none.
fn permitted_audience(client: &Client, asked: &[String]) -> Result<Vec<String>, Error> {
    if asked.is_empty() {
        return Ok(client.audiences.clone());
    }
    if let Some(denied) = asked
        .iter()
        .find(|aud| !client.audiences.is_empty() && !client.audiences.contains(aud))
    {
        return Err(Error::AudienceNotPermitted {
            client: client.id.clone(),
            audience: denied.clone(),
        });
    }
    Ok(asked.to_vec())
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
///
/// # Errors
///
/// [`Error::InvalidRequest`] naming the field that is wrong and why.
pub fn validate_request(request: &TokenRequest, policy: &Policy) -> Result<Duration, Error> {
    let max = policy.token_ttl.as_secs();
    let lifetime = match request.lifetime_seconds {
        None => policy.token_ttl,
        Some(secs) => match u64::try_from(secs) {
            Ok(s) if (1..=max).contains(&s) => Duration::from_secs(s),
            _ => {
                return Err(Error::invalid(
                    "lifetime_seconds",
                    format!(
                        "must be between 1 and {max} (the server's maximum token lifetime), \
                         got {secs}"
                    ),
                ));
            }
        },
    };
    if let Some(subject) = &request.subject {
        check_claim("subject", subject)?;
    }
    check_custom_claims(&request.claims)?;
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
            Error::InvalidRequest { field, reason } if request.audience.len() > 1 => {
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
