//! Key lifecycle: starting the service over a store, rotating (the policy
//! plans, the store applies under its lock), reloading, unsealing and
//! installing keys in the ring, and the stored keys that do not open.
//!
//! The policy itself is `keys::policy` (pure); persistence is the store's;
//! whether the store answers is `health`'s; running all of this on a
//! schedule, and surviving its failures, is `refresher`'s.

use std::{
    collections::HashMap,
    sync::{Arc, MutexGuard},
};

use zeroize::Zeroize;

use super::{Access, KeyService};
use crate::{
    error::Error,
    keys::{
        Algorithm, Backend, KeyMeta, KeyState,
        crypto::{CryptoError, SigningKey},
        pkcs11::Token,
        policy::{Policy, Trigger, plan_rotation},
        ring::{KeyRing, LoadedKey},
        seal::{KekRing, SealError, SealedKey},
    },
    store::{KeyStore, NewKeyMaterial, Planner, RotateOutcome, StoreError, StoredKey},
    time::Timestamp,
};

/// How often a rotation re-plans when the plan, re-made under the store's
/// lock, wants more keys than were generated for it.
const ROTATE_ATTEMPTS: usize = 3;

/// One key as the operator listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// Its kid, algorithm and schedule.
    pub meta: KeyMeta,
    /// Its state at the instant of the listing.
    pub state: KeyState,
}

/// A stored key this process cannot open: its row is damaged, or it was
/// sealed by a KEK this process was not given. An expired one is skipped
/// (reported in the log, `jwks_keys_unreadable` and `keys list`); a published
/// one stops the load, since verifiers may hold tokens it signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableKey {
    /// Its kid, algorithm and schedule.
    pub meta: KeyMeta,
    /// Why it does not open.
    pub reason: String,
    /// The row as read, so a changed row is tried again.
    sealed: SealedKey,
}

/// Why a stored key's private half does not open.
#[derive(Debug, thiserror::Error)]
pub enum Unopenable {
    /// No configured KEK opens it (unknown KEK, or a damaged row).
    #[error(transparent)]
    Sealing(#[from] SealError),
    /// It unseals, but not to a private key.
    #[error("the unsealed private key does not parse: {0}")]
    NotAKey(CryptoError),
    /// It is held in a PKCS#11 token and this process has none configured.
    #[error(
        "it is held in PKCS#11 token {token}, and no PKCS#11 module is configured \
         (keys held in a token sign only through it)"
    )]
    NoToken {
        /// The token that holds it.
        token: String,
    },
    /// It is held in another PKCS#11 token than the one configured.
    #[error("it is held in PKCS#11 token {held}, not in the configured token {configured}")]
    OtherToken {
        /// The token that holds it.
        held: String,
        /// The token this process opened.
        configured: String,
    },
    /// Its public half (from the store) is not a key of its algorithm.
    #[error("its stored public key is not a valid key of its algorithm: {0}")]
    BadPublicKey(CryptoError),
    /// It unseals to a key other than the one its row names: a row copied
    /// over another (the `kid` is the sealing's associated data, so this
    /// takes a KEK that sealed both).
    #[error("it unseals to a different key ({found})")]
    OtherKey {
        /// The kid of the key it unseals to.
        found: String,
    },
}

/// A published key that does not open: the load cannot go on without it.
#[derive(Debug, thiserror::Error)]
#[error("published key {kid} cannot be opened ({reason})")]
pub struct PublishedKeyUnreadable {
    /// The key.
    pub kid: String,
    /// Why it does not open.
    pub reason: Unopenable,
}

/// Faults of the key lifecycle that are facts about keys and the store, not
/// a caller's doing: clients hear "internal", operators get these.
#[derive(Debug, thiserror::Error)]
pub enum KeyFault {
    /// Each time the plan was re-made under the store's lock it wanted more
    /// keys than had been generated: other processes kept rotating.
    #[error("the rotation plan kept changing under the store lock ({attempts} attempts)")]
    PlanKeptChanging {
        /// How many times the plan was made.
        attempts: usize,
    },
    /// A published key does not open.
    #[error(transparent)]
    PublishedKeyUnreadable(#[from] PublishedKeyUnreadable),
}

/// Why the key service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A published key does not open, so serving would strand its tokens.
    #[error("cannot load or create signing keys: {0}")]
    Unreadable(PublishedKeyUnreadable),
    /// The first keys could not be made or loaded (no randomness, a plan
    /// that keeps changing, a key that does not generate).
    #[error("cannot load or create signing keys: {0}")]
    Keys(String),
}

/// Opens a stored key's private half: unseal it, parse it, and check it is
/// the key its row names.
///
/// # Errors
///
/// Why it does not open ([`Unopenable`]), for logs and `keys list`.
pub fn open_stored(keks: &KekRing, stored: &StoredKey) -> Result<SigningKey, Unopenable> {
    open_key(keks, None, stored)
}

/// Opens a stored key wherever its private half lives: unsealed from its
/// row, or a handle on the private key in `token` (which must be the token
/// the row names).
///
/// # Errors
///
/// Why it does not open ([`Unopenable`]): as [`open_stored`], or it is held
/// in a token this process has not opened.
pub fn open_key(
    keks: &KekRing,
    token: Option<&Arc<Token>>,
    stored: &StoredKey,
) -> Result<SigningKey, Unopenable> {
    if let Backend::Pkcs11 { token: held } = &stored.backend {
        let Some(token) = token else {
            return Err(Unopenable::NoToken {
                token: held.clone(),
            });
        };
        if token.identity() != held {
            return Err(Unopenable::OtherToken {
                held: held.clone(),
                configured: token.identity().to_owned(),
            });
        }
        let key = SigningKey::in_token(stored.meta.alg, stored.public.clone(), Arc::clone(token))
            .map_err(Unopenable::BadPublicKey)?;
        if key.kid() != stored.meta.kid {
            return Err(Unopenable::OtherKey {
                found: key.kid().to_owned(),
            });
        }
        return Ok(key);
    }
    let kid = &stored.meta.kid;
    let mut der = keks.open(kid, &stored.sealed)?;
    let key = SigningKey::from_pkcs8_der_for(stored.meta.alg, &der);
    der.zeroize();
    let key = key.map_err(Unopenable::NotAKey)?;
    if key.kid() != kid {
        return Err(Unopenable::OtherKey {
            found: key.kid().to_owned(),
        });
    }
    Ok(key)
}

impl KeyService {
    /// Loads the keys (creating the first ones in an empty store), ready to serve.
    ///
    /// # Errors
    ///
    /// The store cannot be read, a published key does not open (a wrong or
    /// missing KEK: nothing new is written then), or the first keys cannot
    /// be created.
    pub async fn start(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        policy: Policy,
        issuer: String,
        access: Access,
        now: Timestamp,
    ) -> Result<Self, StartError> {
        Self::start_with_token(store, keks, None, policy, issuer, access, now).await
    }

    /// [`Self::start`], with new keys generated in `token` when one is
    /// given (keys already stored keep signing where they live).
    ///
    /// # Errors
    ///
    /// As [`Self::start`]; a published key held in a token that is not
    /// `token` (or with none given) does not open.
    pub async fn start_with_token(
        store: Arc<dyn KeyStore>,
        keks: KekRing,
        token: Option<Arc<Token>>,
        policy: Policy,
        issuer: String,
        access: Access,
        now: Timestamp,
    ) -> Result<Self, StartError> {
        let mut service = Self::new(store, keks, policy, issuer, access, now);
        if let Some(inner) = Arc::get_mut(&mut service.inner) {
            inner.token = token;
        }
        // Open every stored key first, so a wrong or missing KEK stops the
        // start-up before anything new is written.
        let stored = service.inner.store.load().await?;
        service
            .install(stored, now)
            .map_err(StartError::Unreadable)?;
        service
            .rotate(Trigger::Schedule, now)
            .await
            .map_err(|e| StartError::Keys(e.chain()))?;
        service.reload_revocations(now).await;
        Ok(service)
    }

    /// Expired keys in the store that this process cannot open (skipped).
    pub fn unreadable_keys(&self) -> Vec<UnreadableKey> {
        let mut keys: Vec<UnreadableKey> = self.lock_unreadable().values().cloned().collect();
        keys.sort_by(|a, b| KeyMeta::newest_first(&a.meta, &b.meta));
        keys
    }

    fn lock_unreadable(&self) -> MutexGuard<'_, HashMap<String, UnreadableKey>> {
        match self.inner.unreadable.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
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
    ///
    /// # Errors
    ///
    /// The store cannot be reached or refuses the write (recorded as a
    /// failing rotation), key generation fails, or a published key does not open.
    pub async fn rotate(&self, trigger: Trigger, now: Timestamp) -> Result<Vec<KeyMeta>, Error> {
        self.rotate_algorithms(trigger, now, &[]).await
    }

    /// [`Self::rotate`] for the configured algorithms in `only` (all when
    /// empty): an operator may rotate one algorithm's keys and leave the
    /// others on their schedule.
    ///
    /// # Errors
    ///
    /// As [`Self::rotate`].
    pub async fn rotate_algorithms(
        &self,
        trigger: Trigger,
        now: Timestamp,
        only: &[Algorithm],
    ) -> Result<Vec<KeyMeta>, Error> {
        let mut policy = self.inner.policy.clone();
        if !only.is_empty() {
            policy.algorithms.retain(|alg| only.contains(alg));
        }
        let planner = move |keys: &[KeyMeta]| plan_rotation(keys, now, &policy, trigger);

        let stored = self.store_call(now, self.inner.store.load()).await?;
        let metas: Vec<KeyMeta> = stored.iter().map(|k| k.meta.clone()).collect();
        let plan = planner(&metas);
        if plan.is_empty() {
            // Nothing (left) to write: any earlier failed write is moot.
            self.inner.faults.rotation_succeeded();
            self.install(stored, now).map_err(unreadable)?;
            return Ok(Vec::new());
        }
        let wanted = plan.create.iter().map(|k| k.alg).collect();
        let written = self.write_keys(&planner, wanted, now).await;
        match &written {
            Ok(_) => self.inner.faults.rotation_succeeded(),
            // The cause says it (e.g. "store query failed: … database or disk
            // is full"); the whole chain repeats each level's message.
            Err(err) => self.inner.faults.rotation_failed(
                now,
                std::error::Error::source(err).map_or_else(|| err.to_string(), ToString::to_string),
            ),
        }
        let created = written?;
        self.reload(now).await?;
        Ok(created)
    }

    /// Generates a key of each algorithm in `wanted` and applies the plan in
    /// the store. The plan is re-made under the store's lock; if it then wants
    /// keys we did not generate (another process changed the store), retry.
    async fn write_keys(
        &self,
        planner: &Planner<'_>,
        mut wanted: Vec<Algorithm>,
        now: Timestamp,
    ) -> Result<Vec<KeyMeta>, Error> {
        for _attempt in 0..ROTATE_ATTEMPTS {
            let fresh = self.generate(wanted).await?;
            let generated: Vec<NewKeyMaterial> = fresh.clone();
            let outcome = self
                .store_call(now, self.inner.store.rotate(planner, fresh))
                .await;
            // Token objects of keys the store did not take (another replica
            // filled the slot, or the write failed) would be orphans: destroy them.
            let stored: Vec<&str> = match &outcome {
                Ok(RotateOutcome::Applied { created, .. }) => {
                    created.iter().map(|k| k.kid.as_str()).collect()
                }
                _ => Vec::new(),
            };
            let orphans: Vec<String> = generated
                .iter()
                .filter(|m| m.backend != Backend::Software && !stored.contains(&m.kid.as_str()))
                .map(|m| m.kid.clone())
                .collect();
            self.destroy_in_token(orphans, "generated for a slot another process filled")
                .await;
            match outcome? {
                RotateOutcome::Applied { created, pruned } => {
                    self.destroy_in_token(pruned.clone(), "pruned").await;
                    for key in &created {
                        tracing::info!(alg = %key.alg, kid = %key.kid, generation = key.generation,
                            activates_at = %key.activates_at, expires_at = %key.expires_at,
                            "created signing key");
                    }
                    if !pruned.is_empty() {
                        tracing::info!(count = pruned.len(), "pruned old expired keys");
                    }
                    return Ok(created);
                }
                RotateOutcome::NeedKeys(algorithms) => wanted = algorithms,
            }
        }
        Err(Error::internal(KeyFault::PlanKeptChanging {
            attempts: ROTATE_ATTEMPTS,
        }))
    }

    /// Destroys the token objects of `kids` (keys no longer in the store),
    /// on a blocking thread. A failure is logged: an orphan in the token
    /// signs nothing, since no store row names it.
    async fn destroy_in_token(&self, kids: Vec<String>, why: &'static str) {
        let Some(token) = self.inner.token.clone() else {
            return;
        };
        if kids.is_empty() {
            return;
        }
        let destroyed = tokio::task::spawn_blocking(move || {
            for kid in kids {
                match token.destroy(&kid) {
                    Ok(0) => {}
                    Ok(objects) => {
                        tracing::info!(%kid, objects, why, "destroyed key in the PKCS#11 token");
                    }
                    Err(err) => {
                        tracing::warn!(%kid, why, error = %err, "could not destroy key in the PKCS#11 token");
                    }
                }
            }
        })
        .await;
        if let Err(err) = destroyed {
            tracing::warn!(error = %err, "destroying keys in the PKCS#11 token failed");
        }
    }

    /// Generates a key of each algorithm in `algorithms` on a blocking
    /// thread (RSA key generation would stall an async worker for tens of
    /// milliseconds, RSA-4096 for seconds): inside the PKCS#11 token when one
    /// is configured, else with aws-lc-rs, sealed.
    async fn generate(&self, algorithms: Vec<Algorithm>) -> Result<Vec<NewKeyMaterial>, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            algorithms
                .into_iter()
                .map(|alg| {
                    if let Some(token) = &inner.token {
                        let (public, kid) = token
                            .generate(alg, inner.policy.rsa_key_size)
                            .map_err(Error::internal)?;
                        return Ok(NewKeyMaterial {
                            alg,
                            kid,
                            public,
                            sealed: SealedKey::none(),
                            backend: Backend::Pkcs11 {
                                token: token.identity().to_owned(),
                            },
                        });
                    }
                    let key = SigningKey::generate_for(alg, inner.policy.rsa_key_size)
                        .map_err(Error::internal)?;
                    let mut der = key.to_pkcs8_der().map_err(Error::internal)?;
                    let sealed = inner.keks.seal(key.kid(), &der).map_err(Error::internal);
                    der.zeroize();
                    Ok(NewKeyMaterial {
                        alg,
                        kid: key.kid().to_owned(),
                        public: key.jwk().public.clone(),
                        sealed: sealed?,
                        backend: Backend::Software,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        })
        .await
        .map_err(Error::internal)?
    }

    /// Reloads the keys from the store and swaps in a new ring if they changed.
    ///
    /// # Errors
    ///
    /// The store cannot be read, or a published key does not open (the ring
    /// held is kept).
    pub async fn reload(&self, now: Timestamp) -> Result<(), Error> {
        let stored = self.store_call(now, self.inner.store.load()).await?;
        self.install(stored, now).map_err(unreadable)
    }

    /// Builds a ring from stored keys, unsealing only keys not already held.
    /// An expired key that does not open is reported once and skipped; a
    /// published one is an error naming it.
    fn install(
        &self,
        stored: Vec<StoredKey>,
        now: Timestamp,
    ) -> Result<(), PublishedKeyUnreadable> {
        let current = self.inner.ring.load();
        let mut unreadable = self.lock_unreadable();
        let known_unreadable = |key: &StoredKey| {
            unreadable
                .get(&key.meta.kid)
                .filter(|u| u.meta == key.meta && u.sealed == key.sealed)
                .cloned()
        };
        let unchanged = stored.len() == current.keys().len() + unreadable.len()
            && stored.iter().all(|s| {
                current.get(&s.meta.kid).is_some_and(|k| k.meta == s.meta)
                    || known_unreadable(s).is_some()
            });
        if unchanged && current.is_current(now) {
            return Ok(());
        }
        let mut loaded = Vec::with_capacity(stored.len());
        let mut skipped = HashMap::new();
        for key in stored {
            if let Some(held) = current.get(&key.meta.kid).filter(|k| k.meta == key.meta) {
                loaded.push(Arc::clone(held));
                continue;
            }
            if let Some(known) = known_unreadable(&key) {
                skipped.insert(key.meta.kid.clone(), known);
                continue;
            }
            match open_key(&self.inner.keks, self.inner.token.as_ref(), &key) {
                Ok(signing) => loaded.push(Arc::new(LoadedKey {
                    meta: key.meta,
                    key: signing,
                })),
                Err(reason) if !key.meta.is_published(now) => {
                    let reason = reason.to_string();
                    tracing::warn!(kid = %key.meta.kid, generation = key.meta.generation,
                        expired_at = %key.meta.expires_at, %reason,
                        "expired key is unreadable; skipped (remove it with `jwks-server keys remove KID`)");
                    skipped.insert(
                        key.meta.kid.clone(),
                        UnreadableKey {
                            meta: key.meta,
                            reason,
                            sealed: key.sealed,
                        },
                    );
                }
                Err(reason) => {
                    return Err(PublishedKeyUnreadable {
                        kid: key.meta.kid,
                        reason,
                    });
                }
            }
        }
        *unreadable = skipped;
        drop(unreadable);
        self.inner
            .ring
            .store(Arc::new(KeyRing::new(loaded, now, &self.inner.policy)));
        Ok(())
    }
}

/// A published key that does not open, as the domain error callers get.
fn unreadable(err: PublishedKeyUnreadable) -> Error {
    Error::internal(KeyFault::from(err))
}
