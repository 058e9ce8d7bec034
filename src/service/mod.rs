//! The domain service behind both transports: one cheap-to-clone handle,
//! [`KeyService`], that both doors and the background refresher hold.
//!
//! This file owns the handle, its shared state, and the accessors; the work
//! is split by concern:
//! - [`issuance`]: token requests, their checks, claims and the signature;
//! - [`lifecycle`]: starting, rotating, reloading and unsealing keys;
//! - [`refresher`]: the supervised background loop that keeps doing it;
//! - [`health`]: whether the store answers and what `/health` reports;
//! - [`defects`]: the catalogue of test tokens, and the one place every token
//!   is assembled and signed;
//! - [`claims`]: the custom claims a request may add, and their bounds;
//! - [`token`]: whether the PKCS#11 token holding keys (if any) answers.
//!
//! REST and gRPC hold no key or token logic; they translate to a
//! [`TokenRequest`] and back and call the same methods here. Every method that
//! depends on time takes `now`: nothing below the edges reads a clock. Shared
//! state is one [`ArcSwap`] of an immutable [`KeyRing`]: the token and JWKS
//! paths never lock and never touch the store.

pub mod claims;
pub mod defects;
mod health;
mod issuance;
mod lifecycle;
pub mod oauth;
mod refresher;
#[cfg(test)]
mod tests;
mod token;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;

pub use self::{
    defects::{Defect, DefectInfo, TestTokenCatalogue, TokenShape},
    health::{Health, StoreHealth},
    issuance::{
        DEFAULT_SUBJECT, IssuedToken, MAX_AUDIENCES, MAX_CLAIM_LEN, TokenRequest, validate_request,
    },
    lifecycle::{
        KeyFault, KeyStatus, PublishedKeyUnreadable, StartError, Unopenable, UnreadableKey,
        open_key, open_stored,
    },
    oauth::{
        AccessToken, ActiveToken, ClientGrants, GrantRequest, Introspection, OAuthError,
        OAuthErrorCode,
    },
    refresher::RefreshObserver,
};
/// Who may issue tokens and how often; re-exported where the service is built.
pub use crate::access::Access;
use crate::{
    faults::Faults,
    keys::{
        policy::Policy,
        ring::{JwksDocument, KeyRing},
        seal::KekRing,
    },
    store::KeyStore,
    time::Timestamp,
};

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
    /// Expired keys in the store that do not open, by kid; not in the ring.
    unreadable: Mutex<HashMap<String, UnreadableKey>>,
    faults: Faults,
    /// Revoked access tokens this replica knows of (`oauth`).
    revoked: oauth::RevokedTokens,
    /// Keys that sign the test tokens no verifier may trust (`defects`).
    unpublished: defects::UnpublishedKeys,
    /// The PKCS#11 token new keys are generated in, if one is configured.
    token: Option<Arc<crate::keys::pkcs11::Token>>,
}

impl KeyService {
    /// A service holding no key yet, over `store`; [`KeyService::start`]
    /// loads (or creates) the keys.
    fn new(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        policy: Policy,
        issuer: String,
        access: Access,
        now: Timestamp,
    ) -> Self {
        let empty = KeyRing::new(Vec::new(), now, &policy);
        Self {
            inner: Arc::new(Inner {
                store,
                keks,
                policy,
                issuer,
                access,
                ring: ArcSwap::from_pointee(empty),
                store_health: Mutex::new(StoreHealth::Reachable),
                unreadable: Mutex::new(HashMap::new()),
                faults: Faults::default(),
                revoked: oauth::RevokedTokens::default(),
                unpublished: defects::UnpublishedKeys::default(),
                token: None,
            }),
        }
    }

    /// The key-lifecycle policy it rotates by.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The `iss` of the tokens it issues (RFC 7519 §4.1.1).
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

    /// What the background upkeep has recorded going wrong.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }
}
