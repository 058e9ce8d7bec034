//! The catalogue of test tokens: named defects that a correct verifier must
//! refuse, each otherwise identical to a valid token this server would issue
//! for the same request (same issuer, a live `exp`, the requested audience),
//! so the defect is the only reason to refuse it.
//!
//! This file owns the names, what each defect is and which weakness it
//! exercises ([`Defect`], [`DefectInfo`]), which apply to this server's
//! configuration, and the one place every token is put together and signed
//! ([`KeyService::sign_claims`]): `/auth` tokens (`issuance`) and RFC 9068
//! access tokens (`oauth`) both come through it, valid or not. The JWS bytes
//! themselves are `keys::crypto`'s; which door asked, and how the catalogue
//! is shown, are the transports'.
//!
//! Keys that must never verify (`unknown-kid`, `embedded-jwk`, `jku`) are
//! made once per algorithm per process, never published and never stored.

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::KeyService;
use crate::{
    error::Error,
    keys::{
        Algorithm,
        algorithm::RsaKeySize,
        crypto::{SigningKey, alter_signature, compact_jws},
    },
    time::Timestamp,
};

/// How far ahead `not-yet-valid` puts `nbf` and `iat`.
pub const NOT_YET_VALID_BY: Duration = Duration::from_secs(3600);
/// How long before the request `exp-in-past` puts `exp`: far past any
/// verifier's clock-skew leeway.
pub const EXP_IN_PAST_BY: Duration = Duration::from_secs(3600);
/// The `iss` of `wrong-issuer` tokens: a host that is never this server.
pub const WRONG_ISSUER: &str = "https://wrong-issuer.example";
/// The `aud` of `wrong-audience` tokens.
pub const WRONG_AUDIENCE: &str = "https://wrong-audience.example";
/// The `jku` header of `jku` tokens (RFC 7515 §4.1.2): a key set elsewhere.
pub const FOREIGN_JKU: &str = "https://attacker.example/jwks.json";
/// The extension `crit-unknown` tokens name and carry (RFC 7515 §4.1.11).
pub const UNKNOWN_CRITICAL: &str = "urn:example:unknown";

/// Which kind of token a route issues: the defect is built into that shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenShape {
    /// `POST /auth` and `IssueToken`: `typ: JWT`.
    Auth,
    /// The token endpoint and `Token`: an RFC 9068 access token, `typ: at+jwt`.
    Access,
}

impl TokenShape {
    /// The header's `typ` (RFC 7515 §4.1.9; RFC 9068 §2.1 for access tokens).
    pub fn typ(self) -> &'static str {
        match self {
            Self::Auth => "JWT",
            Self::Access => super::oauth::ACCESS_TOKEN_TYP,
        }
    }
}

/// A named defect. Every one is a token a correct verifier refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Defect {
    /// Signed by an expired, unpublished key; `exp` in the past (the seed's
    /// `expired=true`). RFC 7519 §4.1.4.
    Expired,
    /// Signed by the active, published key; `exp` one hour in the past (`iat`
    /// and `nbf` a lifetime before it). Unlike `expired`, whose unknown `kid`
    /// a verifier refuses before reading `exp`, only the clock refuses this
    /// one. RFC 7519 §4.1.4.
    ExpInPast,
    /// `nbf` and `iat` one hour ahead, `exp` a lifetime after them. RFC 7519 §4.1.5.
    NotYetValid,
    /// Signed by a fresh key never published, its own thumbprint as `kid`.
    UnknownKid,
    /// Signed by the active key; the header has no `kid`.
    NoKid,
    /// The active key's `kid`, a signature with one byte changed.
    BadSignature,
    /// `alg: none` and an empty signature: an unsecured JWT (RFC 7519 §6).
    AlgNone,
    /// HS256, keyed with the PEM of the active RSA public key: the
    /// algorithm-confusion attack (RFC 8725 §2.1, §3.1).
    Hs256PublicKey,
    /// Signed by a fresh unpublished key carried in a `jwk` header (RFC 7515
    /// §4.1.3), public members only.
    EmbeddedJwk,
    /// Signed by a fresh unpublished key; a `jku` header (RFC 7515 §4.1.2)
    /// points to a key set elsewhere.
    Jku,
    /// `crit` names an extension no verifier understands (RFC 7515 §4.1.11).
    CritUnknown,
    /// Another `iss` (RFC 7519 §4.1.1, RFC 8725 §3.8).
    WrongIssuer,
    /// Another `aud` than the one requested (RFC 7519 §4.1.3, RFC 8725 §3.9).
    WrongAudience,
    /// No `exp` at all (RFC 9068 §2.2 requires it; RFC 8725 §3.10).
    MissingExp,
    /// An access token with `typ: JWT` where RFC 9068 §4 requires `at+jwt`
    /// (RFC 8725 §3.11). Token endpoint only.
    WrongTyp,
    /// ES256 with r = s = 0 (64 zero bytes): CVE-2022-21449, "psychic
    /// signatures". Only when ES256 is configured.
    EcdsaZeroSignature,
}

/// What the catalogue says of a defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefectInfo {
    /// Its name, as requests spell it (`defect=NAME`).
    pub name: &'static str,
    /// What the token is.
    pub description: &'static str,
    /// The weakness or advisory class a verifier that accepts it has.
    pub weakness: &'static str,
    /// Which kinds of token it is offered for.
    pub shapes: &'static [TokenShape],
}

const BOTH: &[TokenShape] = &[TokenShape::Auth, TokenShape::Access];
const ACCESS_ONLY: &[TokenShape] = &[TokenShape::Access];

impl Defect {
    /// Every defect, in the catalogue's order.
    pub const ALL: [Defect; 16] = [
        Self::Expired,
        Self::ExpInPast,
        Self::NotYetValid,
        Self::UnknownKid,
        Self::NoKid,
        Self::BadSignature,
        Self::AlgNone,
        Self::Hs256PublicKey,
        Self::EmbeddedJwk,
        Self::Jku,
        Self::CritUnknown,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::MissingExp,
        Self::WrongTyp,
        Self::EcdsaZeroSignature,
    ];

    /// Its catalogue entry.
    pub fn info(self) -> DefectInfo {
        let (name, description, weakness, shapes) = match self {
            Self::Expired => (
                "expired",
                "signed by an expired key no longer in the JWKS; exp is in the past",
                "CWE-613 (insufficient session expiration); RFC 7519 section 4.1.4",
                BOTH,
            ),
            Self::ExpInPast => (
                "exp-in-past",
                "signed by the active, published key; exp one hour in the past",
                "CWE-613 (insufficient session expiration); RFC 7519 section 4.1.4",
                BOTH,
            ),
            Self::NotYetValid => (
                "not-yet-valid",
                "nbf and iat one hour in the future",
                "CWE-613; RFC 7519 section 4.1.5",
                BOTH,
            ),
            Self::UnknownKid => (
                "unknown-kid",
                "signed by a key never published, whose thumbprint is the kid",
                "CWE-347 (improper verification of cryptographic signature)",
                BOTH,
            ),
            Self::NoKid => (
                "no-kid",
                "signed by the active key, but the header has no kid",
                "CWE-347; RFC 8725 section 3.1 (a verifier that then tries keys loosely)",
                BOTH,
            ),
            Self::BadSignature => (
                "bad-signature",
                "the active key's kid, with one byte of the signature changed",
                "CWE-347",
                BOTH,
            ),
            Self::AlgNone => (
                "alg-none",
                "an unsecured JWT: alg none and an empty signature (RFC 7519 section 6)",
                "CWE-347, CWE-327; RFC 8725 section 3.1",
                BOTH,
            ),
            Self::Hs256PublicKey => (
                "hs256-public-key",
                "HS256 keyed with the PEM of the active RSA public key (algorithm confusion)",
                "CWE-327 (broken or risky algorithm), CVE-2015-9235 class; RFC 8725 sections \
                 2.1 and 3.1",
                BOTH,
            ),
            Self::EmbeddedJwk => (
                "embedded-jwk",
                "signed by a key never published, carried in the jwk header",
                "CWE-347, CVE-2018-0114 class; RFC 8725 section 3.1",
                BOTH,
            ),
            Self::Jku => (
                "jku",
                "signed by a key never published; the jku header points to another key set",
                "CWE-347, CWE-918 (server-side request forgery)",
                BOTH,
            ),
            Self::CritUnknown => (
                "crit-unknown",
                "crit names an extension no verifier understands (RFC 7515 section 4.1.11)",
                "CWE-347 (RFC 7515 section 4.1.11 requires refusal)",
                BOTH,
            ),
            Self::WrongIssuer => (
                "wrong-issuer",
                "iss is another issuer's",
                "CWE-345 (insufficient verification of data authenticity); RFC 8725 section 3.8",
                BOTH,
            ),
            Self::WrongAudience => (
                "wrong-audience",
                "aud is not the audience requested",
                "CWE-345; RFC 8725 section 3.9",
                BOTH,
            ),
            Self::MissingExp => (
                "missing-exp",
                "no exp claim: a token that never expires",
                "CWE-613; RFC 9068 section 2.2",
                BOTH,
            ),
            Self::WrongTyp => (
                "wrong-typ",
                "an access token with typ JWT where RFC 9068 section 4 requires at+jwt",
                "CWE-345 (token confusion); RFC 8725 section 3.11",
                ACCESS_ONLY,
            ),
            Self::EcdsaZeroSignature => (
                "ecdsa-zero-signature",
                "ES256 with r = s = 0 (64 zero bytes)",
                "CWE-347, CVE-2022-21449 (psychic signatures)",
                BOTH,
            ),
        };
        DefectInfo {
            name,
            description,
            weakness,
            shapes,
        }
    }

    /// Its name, as requests spell it.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The defect called `name`, if there is one (names are case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether it is offered for `shape` of token.
    pub fn offered_for(self, shape: TokenShape) -> bool {
        self.info().shapes.contains(&shape)
    }
}

/// `GET /test-tokens` in domain terms: whether test tokens are issued, and
/// the defects that apply to this server's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestTokenCatalogue {
    /// Whether this server issues defective tokens at all.
    pub enabled: bool,
    /// The defects this server can issue (for example `ecdsa-zero-signature`
    /// only with ES256 configured).
    pub defects: Vec<DefectInfo>,
}

/// The per-process keys that sign the tokens no verifier should trust: one
/// per algorithm, made on first use, never published or stored.
#[derive(Debug, Default)]
pub(super) struct UnpublishedKeys {
    keys: [OnceCell<Arc<SigningKey>>; 4],
}

impl UnpublishedKeys {
    async fn get(&self, alg: Algorithm) -> Result<Arc<SigningKey>, Error> {
        let index = Algorithm::ALL.iter().position(|a| *a == alg).unwrap_or(0);
        let Some(cell) = self.keys.get(index) else {
            return Err(Error::NoSigningKey);
        };
        cell.get_or_try_init(|| async move {
            // RSA generation takes tens of milliseconds or more: off the workers.
            tokio::task::spawn_blocking(move || {
                SigningKey::generate_for(alg, RsaKeySize::default())
            })
            .await
            .map_err(Error::internal)?
            .map(Arc::new)
            .map_err(Error::internal)
        })
        .await
        .cloned()
    }
}

/// What [`KeyService::sign_claims`] makes: the token and what callers report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedToken {
    /// The compact JWS.
    pub token: String,
    /// The `kid` in its header; empty when the header has none.
    pub kid: String,
    /// Its `iat`.
    pub issued_at: Timestamp,
    /// Its `exp` (also for `missing-exp`, whose claims omit it: the time it
    /// would have had).
    pub expires_at: Timestamp,
}

/// What a token is asked to be, before its times and signature.
pub(super) struct TokenSpec {
    /// Which algorithm signs (for defects, which algorithm the token is built for).
    pub alg: Algorithm,
    /// `/auth`'s token or an access token.
    pub shape: TokenShape,
    /// Every claim but `iat`, `nbf` and `exp`, which are set here.
    pub claims: Map<String, Value>,
    /// From `iat` to `exp`.
    pub lifetime: Duration,
    /// The defect to build in; `None` for a valid token.
    pub defect: Option<Defect>,
    /// The instant of issue.
    pub now: Timestamp,
}

impl KeyService {
    /// The catalogue as this server's configuration offers it.
    pub fn test_tokens(&self) -> TestTokenCatalogue {
        TestTokenCatalogue {
            enabled: self.inner.access.test_tokens,
            defects: Defect::ALL
                .into_iter()
                .filter(|defect| self.applies(*defect))
                .map(Defect::info)
                .collect(),
        }
    }

    /// Whether this server's algorithms can make `defect` at all.
    fn applies(&self, defect: Defect) -> bool {
        match defect {
            Defect::EcdsaZeroSignature => self.algorithms().contains(&Algorithm::Es256),
            Defect::Hs256PublicKey => self.algorithms().iter().any(|alg| alg.is_rsa()),
            _ => true,
        }
    }

    /// The defect a request asks for (`defect`, or the seed's `expired`),
    /// checked against the shape of token the route issues, this server's
    /// configuration and the test-token switch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] (field `defect`) for an unknown name, one
    /// that conflicts with `expired`, or one that does not apply;
    /// [`Error::ExpiredTokensDisabled`] / [`Error::TestTokensDisabled`] when
    /// test tokens are off.
    pub fn requested_defect(
        &self,
        name: Option<&str>,
        expired: bool,
        shape: TokenShape,
    ) -> Result<Option<Defect>, Error> {
        let named = match name.filter(|n| !n.is_empty()) {
            None => None,
            Some(name) => Some(Defect::from_name(name).ok_or_else(|| {
                Error::invalid(
                    "defect",
                    format!(
                        "{:?} is not a defect this server makes; it makes {}",
                        crate::text::for_log(name, 32),
                        self.names_for(shape)
                    ),
                )
            })?),
        };
        let defect = match (named, expired) {
            (Some(defect), true) if defect != Defect::Expired => {
                return Err(Error::invalid(
                    "defect",
                    format!(
                        "expired=true and defect={} ask for two defects; ask for one",
                        defect.name()
                    ),
                ));
            }
            (None, true) => Some(Defect::Expired),
            (named, _) => named,
        };
        let Some(defect) = defect else {
            return Ok(None);
        };
        if !defect.offered_for(shape) {
            return Err(Error::invalid(
                "defect",
                format!(
                    "{} is made only for access tokens from the token endpoint (RFC 9068 \
                     section 4); here it makes {}",
                    defect.name(),
                    self.names_for(shape)
                ),
            ));
        }
        if !self.applies(defect) {
            let why = match defect {
                Defect::EcdsaZeroSignature => "it is an ES256 token, and ES256 is not configured",
                _ => "it is made from an RSA public key, and no RSA algorithm is configured",
            };
            return Err(Error::invalid(
                "defect",
                format!(
                    "{} does not apply to this server: {why} (it signs with {})",
                    defect.name(),
                    Algorithm::list(self.algorithms())
                ),
            ));
        }
        let access = &self.inner.access;
        match defect {
            Defect::Expired if !access.test_tokens => Err(Error::ExpiredTokensDisabled),
            Defect::Expired => Ok(Some(defect)),
            _ if !access.test_tokens => Err(Error::TestTokensDisabled(defect.name())),
            _ => Ok(Some(defect)),
        }
    }

    /// The names offered for `shape` on this server, for error messages.
    fn names_for(&self, shape: TokenShape) -> String {
        Defect::ALL
            .into_iter()
            .filter(|d| d.offered_for(shape) && self.applies(*d))
            .map(Defect::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The algorithm a defect is built for: most defects take the one the
    /// request signs with; `hs256-public-key` needs an RSA key (the one asked
    /// for, else the first RSA algorithm configured) and
    /// `ecdsa-zero-signature` is ES256.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the request names an algorithm the
    /// defect cannot be built for.
    pub(super) fn defect_alg(
        &self,
        defect: Option<Defect>,
        asked: Option<Algorithm>,
        chosen: Algorithm,
    ) -> Result<Algorithm, Error> {
        let refuse = |defect: Defect, needs: &str| {
            Error::invalid(
                "alg",
                format!(
                    "{} is built for {needs}, not {chosen}; ask for it without alg or with \
                     alg={needs}",
                    defect.name()
                ),
            )
        };
        match defect {
            Some(d @ Defect::EcdsaZeroSignature) => match asked {
                None | Some(Algorithm::Es256) => Ok(Algorithm::Es256),
                Some(_) => Err(refuse(d, "ES256")),
            },
            Some(d @ Defect::Hs256PublicKey) => {
                if chosen.is_rsa() {
                    return Ok(chosen);
                }
                match (asked, self.algorithms().iter().find(|a| a.is_rsa())) {
                    (None, Some(rsa)) => Ok(*rsa),
                    _ => Err(refuse(d, "an RSA algorithm (RS256 or PS256)")),
                }
            }
            _ => Ok(chosen),
        }
    }

    /// Sets the times, builds in the defect (if any) and signs: the one
    /// place a token of this server is put together.
    ///
    /// # Errors
    ///
    /// [`Error::NoSigningKey`] / [`Error::NoExpiredKey`] without a key to
    /// sign with, or an internal fault (the RNG or the signature failed).
    pub(super) async fn sign_claims(&self, spec: TokenSpec) -> Result<SignedToken, Error> {
        let TokenSpec {
            alg,
            shape,
            mut claims,
            lifetime,
            defect,
            now,
        } = spec;
        let ring = self.ring();
        let active = || ring.signer_for(alg, now).ok_or(Error::NoSigningKey);
        let expired_key = match defect {
            Some(Defect::Expired) => Some(
                ring.expired_signer_for(alg, now)
                    .ok_or(Error::NoExpiredKey)?,
            ),
            _ => None,
        };
        let (issued_at, expires_at) = match (defect, expired_key) {
            (_, Some(key)) => {
                // The last token this key could have signed: it expired when
                // the key retired, at least the retention period ago.
                let expires_at = key.meta.retires_at.min(now);
                (expires_at - lifetime, expires_at)
            }
            (Some(Defect::NotYetValid), None) => {
                let issued_at = now + NOT_YET_VALID_BY;
                (issued_at, issued_at + lifetime)
            }
            (Some(Defect::ExpInPast), None) => {
                let expires_at = now - EXP_IN_PAST_BY;
                (expires_at - lifetime, expires_at)
            }
            _ => (now, now + lifetime),
        };
        claims.insert("iat".into(), issued_at.unix().into());
        claims.insert("nbf".into(), issued_at.unix().into());
        claims.insert("exp".into(), expires_at.unix().into());
        match defect {
            Some(Defect::WrongIssuer) => {
                claims.insert("iss".into(), WRONG_ISSUER.into());
            }
            Some(Defect::WrongAudience) => {
                claims.insert("aud".into(), WRONG_AUDIENCE.into());
            }
            Some(Defect::MissingExp) => {
                claims.remove("exp");
            }
            _ => {}
        }
        let json = serde_json::to_vec(&claims).map_err(Error::internal)?;
        let typ = match defect {
            Some(Defect::WrongTyp) => "JWT",
            _ => shape.typ(),
        };
        let header = |alg: &str, kid: &str| json!({"alg": alg, "typ": typ, "kid": kid});
        let signed = |token: String, kid: &str| SignedToken {
            token,
            kid: kid.to_owned(),
            issued_at,
            expires_at,
        };
        match defect {
            Some(Defect::Expired) => {
                let key = expired_key.ok_or(Error::NoExpiredKey)?;
                let token = key.key.sign_typed_jwt(typ, &json).map_err(Error::from)?;
                Ok(signed(token, &key.meta.kid))
            }
            Some(defect @ (Defect::UnknownKid | Defect::EmbeddedJwk | Defect::Jku)) => {
                let key = self.inner.unpublished.get(alg).await?;
                let mut header = header(alg.as_str(), key.kid());
                if let Some(members) = header.as_object_mut() {
                    match defect {
                        Defect::EmbeddedJwk => {
                            // The public JWK only: it has no private members to leak.
                            let jwk = serde_json::to_value(key.jwk()).map_err(Error::internal)?;
                            members.insert("jwk".into(), jwk);
                        }
                        Defect::Jku => {
                            members.insert("jku".into(), FOREIGN_JKU.into());
                        }
                        _ => {}
                    }
                }
                let token = key
                    .sign_with_header_json(&header, &json)
                    .map_err(Error::from)?;
                Ok(signed(token, key.kid()))
            }
            Some(Defect::NoKid) => {
                let key = active()?;
                let header = json!({"alg": alg.as_str(), "typ": typ});
                let token = key
                    .key
                    .sign_with_header_json(&header, &json)
                    .map_err(Error::from)?;
                Ok(signed(token, ""))
            }
            Some(Defect::BadSignature) => {
                let key = active()?;
                let token = key
                    .key
                    .sign_with_header_json(&header(alg.as_str(), &key.meta.kid), &json)
                    .map_err(Error::from)?;
                Ok(signed(alter_signature(&token), &key.meta.kid))
            }
            Some(Defect::AlgNone) => {
                // RFC 7519 §6.1: no kid, nothing to verify; `typ` kept so the
                // defect is the only reason to refuse it.
                let header = json!({"alg": "none", "typ": typ});
                Ok(signed(compact_jws(&header, &json, |_| Vec::new()), ""))
            }
            Some(Defect::Hs256PublicKey) => {
                let key = active()?;
                let pem = key.key.public_key_pem().ok_or(Error::NoSigningKey)?;
                let secret =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, pem.as_bytes());
                let token = compact_jws(&header("HS256", &key.meta.kid), &json, |input| {
                    aws_lc_rs::hmac::sign(&secret, input).as_ref().to_vec()
                });
                Ok(signed(token, &key.meta.kid))
            }
            Some(Defect::CritUnknown) => {
                let key = active()?;
                let mut header = header(alg.as_str(), &key.meta.kid);
                if let Some(members) = header.as_object_mut() {
                    members.insert("crit".into(), json!([UNKNOWN_CRITICAL]));
                    members.insert(UNKNOWN_CRITICAL.into(), true.into());
                }
                let token = key
                    .key
                    .sign_with_header_json(&header, &json)
                    .map_err(Error::from)?;
                Ok(signed(token, &key.meta.kid))
            }
            Some(Defect::EcdsaZeroSignature) => {
                let key = active()?;
                let header = header(Algorithm::Es256.as_str(), &key.meta.kid);
                Ok(signed(
                    compact_jws(&header, &json, |_| vec![0; 64]),
                    &key.meta.kid,
                ))
            }
            Some(
                Defect::ExpInPast
                | Defect::NotYetValid
                | Defect::WrongIssuer
                | Defect::WrongAudience
                | Defect::MissingExp
                | Defect::WrongTyp,
            )
            | None => {
                let key = active()?;
                let token = key.key.sign_typed_jwt(typ, &json).map_err(Error::from)?;
                Ok(signed(token, &key.meta.kid))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_are_unique_and_case_sensitive() {
        let mut names: Vec<&str> = Defect::ALL.iter().map(|d| d.name()).collect();
        for defect in Defect::ALL {
            assert_eq!(Defect::from_name(defect.name()), Some(defect));
        }
        assert_eq!(Defect::from_name("ALG-NONE"), None);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Defect::ALL.len());
    }

    #[test]
    fn every_defect_names_its_weakness_and_only_wrong_typ_is_access_only() {
        for defect in Defect::ALL {
            let info = defect.info();
            assert!(
                info.weakness.contains("CWE-") || info.weakness.contains("RFC"),
                "{info:?}"
            );
            assert!(defect.offered_for(TokenShape::Access), "{info:?}");
            assert_eq!(
                defect.offered_for(TokenShape::Auth),
                defect != Defect::WrongTyp,
                "{info:?}"
            );
        }
    }

    #[test]
    fn an_altered_signature_differs_in_its_signature_only() {
        let token = "aGVhZGVy.Y2xhaW1z.AAECAwQF";
        let altered = alter_signature(token);
        assert_ne!(altered, token);
        assert!(altered.starts_with("aGVhZGVy.Y2xhaW1z."));
    }
}
