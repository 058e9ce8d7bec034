//! Where keys live between restarts: the [`KeyStore`] trait and its SQL
//! implementation (SQLite by default, PostgreSQL for replicas).
//!
//! A store keeps each key's schedule and public half in the clear and its
//! private half only sealed ([`SealedKey`]); it never sees a KEK. Deciding what
//! to create is the policy's job: [`KeyStore::rotate`] only guarantees that the
//! decision is re-made and applied atomically, under a lock, so exactly one
//! process fills each rotation slot.

pub mod memory;
mod sql;
mod url;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::{MemoryStore, StoreFailure};
pub use sql::SqlStore;
pub use url::{StoreUrl, redact};

use crate::{
    keys::{Algorithm, Backend, KeyMeta, crypto::PublicMembers, policy::Plan, seal::SealedKey},
    time::Timestamp,
};

/// A key as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// Its kid, algorithm, state and times.
    pub meta: KeyMeta,
    /// The public members of its JWK, kept in the clear.
    pub public: PublicMembers,
    /// The private key, sealed under a KEK ([`SealedKey::none`] for a key
    /// held in a token: the store holds nothing private of it).
    pub sealed: SealedKey,
    /// Where its private half lives.
    pub backend: Backend,
}

/// A freshly generated key, sealed, waiting for a plan to give it a schedule.
#[derive(Clone, Debug)]
pub struct NewKeyMaterial {
    /// The algorithm it signs with: it fills a planned key of that algorithm only.
    pub alg: Algorithm,
    /// Its `kid` (RFC 7517 §4.5).
    pub kid: String,
    /// The public members of its JWK.
    pub public: PublicMembers,
    /// The private key, sealed under a KEK ([`SealedKey::none`] for a key
    /// held in a token).
    pub sealed: SealedKey,
    /// Where its private half lives.
    pub backend: Backend,
}

/// Pairs each planned key with the first unused material of its algorithm;
/// `Err` lists the algorithms of every planned key when some lack material.
/// # Errors
///
/// The algorithms of every planned key, when some planned key has no
/// material of its algorithm.
pub fn match_material(
    create: &[crate::keys::policy::NewKey],
    fresh: Vec<NewKeyMaterial>,
) -> Result<Vec<NewKeyMaterial>, Vec<Algorithm>> {
    let mut fresh: Vec<Option<NewKeyMaterial>> = fresh.into_iter().map(Some).collect();
    let mut matched = Vec::with_capacity(create.len());
    for planned in create {
        let found = fresh
            .iter_mut()
            .find(|m| m.as_ref().is_some_and(|m| m.alg == planned.alg))
            .and_then(Option::take);
        match found {
            Some(material) => matched.push(material),
            None => return Err(create.iter().map(|k| k.alg).collect()),
        }
    }
    Ok(matched)
}

/// What a [`KeyStore::rotate`] call did.
#[derive(Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The plan (possibly empty) was committed.
    Applied {
        /// The keys inserted, with their schedules.
        created: Vec<KeyMeta>,
        /// The kids of the keys deleted.
        pruned: Vec<String>,
    },
    /// The plan, re-made under the lock, wants keys that were not supplied:
    /// one of each algorithm listed.
    NeedKeys(Vec<Algorithm>),
}

/// What a [`KeyStore::remove`] call did.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The key was deleted; this is what it was.
    Removed(KeyMeta),
    /// No key has that kid.
    NotFound,
    /// The check refused, saying why; nothing was deleted.
    Refused(String),
}

/// Decides, holding the lock, whether a key (the first argument) may be
/// removed from the keys the store holds (the second); `Err` says why not.
pub type RemoveCheck<'a> = dyn Fn(&KeyMeta, &[KeyMeta]) -> Result<(), String> + Send + Sync + 'a;

/// Re-plans against the keys the store holds at the moment it holds the lock.
pub type Planner<'a> = dyn Fn(&[KeyMeta]) -> Plan + Send + Sync + 'a;

/// Re-seals one key; `None` leaves it as it is.
pub type Resealer<'a> = dyn Fn(&StoredKey) -> Result<Option<SealedKey>, crate::keys::seal::SealError>
    + Send
    + Sync
    + 'a;

/// Why the store could not do what was asked. Unreachable (and timed-out)
/// stores are told apart from failed queries: the first is an outage the
/// keys in memory ride out, the second a fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--store` names a scheme we do not speak.
    #[error("unsupported store URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The store could not be reached.
    #[error("store unreachable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store did not answer in time: as good as unreachable.
    #[error("store unreachable: no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    /// The store answered with an error.
    #[error("store query failed: {0}")]
    Query(#[source] BoxError),
    /// The schema could not be brought up to date.
    #[error("store schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An operator command found no store at that path.
    #[error(
        "no key store there ({0}); operator commands never create one: check --store / JWKS_STORE"
    )]
    Missing(String),
    /// A row does not decode (a damaged or foreign row).
    #[error("store row is not valid: {0}")]
    Corrupt(String),
    /// A key could not be re-sealed under the new KEK.
    #[error("re-sealing failed: {0}")]
    Reseal(#[from] crate::keys::seal::SealError),
}

/// The cause under a store error, whichever implementation raised it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// The store could not be reached (or did not answer): the keys held in
    /// memory keep serving, and health says the store is away.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(err)),
            other => StoreError::Query(Box::new(other)),
        }
    }
}

/// Where keys (and revoked tokens) live: SQLite or PostgreSQL in service,
/// [`memory::MemoryStore`] in tests. Every call that changes the key set
/// holds the store's rotation lock, so replicas sharing a store agree.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key in the store.
    async fn load(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Atomically, holding the store's rotation lock: re-reads the keys, asks
    /// `plan` what to do, inserts the new keys (taking material from `fresh`,
    /// first to last) and deletes the pruned ones. Nothing is published until
    /// this commits.
    async fn rotate(
        &self,
        plan: &Planner<'_>,
        fresh: Vec<NewKeyMaterial>,
    ) -> Result<RotateOutcome, StoreError>;

    /// Re-seals every key for which `reseal` returns a new sealing, in one
    /// transaction. Returns how many were re-sealed.
    async fn reseal(&self, reseal: &Resealer<'_>) -> Result<usize, StoreError>;

    /// Deletes the key `kid` if `check` allows it, holding the rotation lock so
    /// the check sees the keys as they are when the row goes.
    async fn remove(&self, kid: &str, check: &RemoveCheck<'_>)
    -> Result<RemoveOutcome, StoreError>;

    /// Records that the token `jti` is revoked until `expires_at` (its
    /// `exp`); recording it again changes nothing. The default keeps nothing
    /// and says so, for stores that hold keys only.
    async fn revoke(&self, jti: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        let _ = (jti, expires_at);
        Err(StoreError::Query(
            "this store keeps no token revocations".into(),
        ))
    }

    /// The revocations still in force at `now`, after deleting those that are
    /// not (their tokens have expired, so they need no record).
    async fn revocations(&self, now: Timestamp) -> Result<Vec<Revocation>, StoreError> {
        let _ = now;
        Ok(Vec::new())
    }
}

/// A revoked token: its `jti` and its `exp`, after which the record is pruned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked token's `jti` (RFC 7519 §4.1.7).
    pub jti: String,
    /// Its `exp`: after this the record is pruned.
    pub expires_at: Timestamp,
}
