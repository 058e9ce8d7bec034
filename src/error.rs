//! The one domain error. Transports map it exhaustively (no catch-all arm) to
//! HTTP statuses in `transport/http` and gRPC codes in `transport/grpc.rs`,
//! so a new variant does not compile until both have decided what it means.
//!
//! Variants and messages speak of domain facts (a request, a client, a key);
//! nothing here knows axum or tonic, names a flag or an environment variable,
//! or says which door a caller came through: the edge that knows those adds
//! how to change things.

use std::fmt;

/// What went wrong with a request, in domain words; each door maps every
/// variant to its status (HTTP and gRPC), with no catch-all arm.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent a value the service cannot accept.
    #[error("{field}: {reason}")]
    InvalidRequest {
        /// The request field at fault, as the caller named it.
        field: &'static str,
        /// What is wrong with it, for the caller.
        reason: String,
    },
    /// Issuing needs client credentials, and the caller's are missing or wrong.
    #[error("{0}")]
    ClientNotAuthenticated(AuthProblem),
    /// The caller asked for an expired token, and this server issues none.
    #[error("expired tokens are disabled on this server")]
    ExpiredTokensDisabled,
    /// The caller asked for a defective test token (the named defect), and
    /// this server issues none.
    #[error("test tokens (defect {0}) are disabled on this server")]
    TestTokensDisabled(&'static str),
    /// An authenticated client asked for an audience it may not have.
    #[error("client {client} may not ask for audience {audience:?}")]
    AudienceNotPermitted {
        /// The client's id.
        client: String,
        /// The audience it asked for.
        audience: String,
    },
    /// The caller asked too often; it may try again after `retry_after`.
    #[error("too many {what}; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited {
        /// What was asked too often, plural ("token requests").
        what: &'static str,
        /// How long until the next attempt may succeed.
        retry_after: std::time::Duration,
    },
    /// Too many client secrets are waiting to be checked; retry shortly.
    #[error("too many client authentications in progress; retry in 1s")]
    Busy,
    /// No key is in its signing window (for example, the store has been
    /// unreachable for longer than a key signs).
    #[error("no signing key is active")]
    NoSigningKey,
    /// No expired key is held, so `expired=true` cannot be honoured.
    #[error("no expired key is available to sign an expired token")]
    NoExpiredKey,
    /// The key that signs is held in a hardware token that cannot be reached
    /// right now; signing resumes when it is back. The cause is logged.
    #[error("the signing key's token is unavailable; retry in {RETRY_SIGNER_SECS}s")]
    SignerUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A fault on our side. Clients are told only "internal"; the cause is logged.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How long a caller waits before retrying while the signing key's token is
/// away, in seconds: about the interval at which the service checks it again.
pub const RETRY_SIGNER_SECS: u64 = 5;

impl From<crate::keys::crypto::CryptoError> for Error {
    /// A token that cannot be reached is an outage the caller may wait out;
    /// every other crypto failure is a fault.
    fn from(err: crate::keys::crypto::CryptoError) -> Self {
        match err {
            crate::keys::crypto::CryptoError::TokenUnavailable(..) => {
                Self::SignerUnavailable(Box::new(err))
            }
            other => Self::internal(other),
        }
    }
}

/// Why a caller's client credentials were not accepted. An unknown client and
/// a wrong secret are one answer, so the two cannot be told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthProblem {
    /// The caller presented no credentials.
    Missing,
    /// The client id is unknown or the secret is wrong.
    Rejected,
}

impl fmt::Display for AuthProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "client credentials required",
            Self::Rejected => "unknown client or wrong secret",
        })
    }
}

impl Error {
    /// [`Error::InvalidRequest`] for `field`, saying why.
    pub fn invalid(field: &'static str, reason: impl fmt::Display) -> Self {
        Self::InvalidRequest {
            field,
            reason: reason.to_string(),
        }
    }

    /// [`Error::Internal`] carrying `cause`, which only the log sees.
    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(cause))
    }

    /// A short, stable, machine-readable code (the `error` member of REST bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ClientNotAuthenticated(_) => "unauthenticated",
            Self::ExpiredTokensDisabled
            | Self::TestTokensDisabled(_)
            | Self::AudienceNotPermitted { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::NoSigningKey | Self::NoExpiredKey | Self::Busy | Self::SignerUnavailable(_) => {
                "unavailable"
            }
            Self::Internal(_) => "internal",
        }
    }

    /// What the client is told. Internal causes are logged, never sent.
    pub fn client_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// For [`Error::RateLimited`] and [`Error::Busy`]: whole seconds to wait, rounded up (retrying
    /// early only earns another refusal), at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => {
                let rounded_up = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(rounded_up.max(1))
            }
            Self::Busy => Some(1),
            Self::SignerUnavailable(_) => Some(RETRY_SIGNER_SECS),
            _ => None,
        }
    }

    /// The full cause chain, for the log line at the edge.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}
