//! A [`KeyStore`] held in memory, for unit tests of the domain service and
//! for benchmarks: no file, no database, no I/O.
//!
//! It keeps the promises the SQL store keeps: [`KeyStore::rotate`] and
//! [`KeyStore::remove`] re-read the keys and decide while holding the one
//! lock (so a rotation re-plans against what is there), one key per
//! generation and per `kid`, and a failed call changes nothing. A switch
//! ([`MemoryStore::fail`]) makes calls fail as an unreachable store would, or
//! only writes fail (a full disk), so tests drive store health by hand.
//! Persistence, migrations and SQL are the SQL store's business.

use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    KeyStore, NewKeyMaterial, Planner, RemoveCheck, RemoveOutcome, Resealer, Revocation,
    RotateOutcome, StoreError, StoredKey,
};
use crate::{keys::KeyMeta, time::Timestamp};

/// How a [`MemoryStore`] misbehaves, when asked to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFailure {
    /// Every call answers.
    #[default]
    None,
    /// Every call fails as if the store could not be reached.
    Unavailable,
    /// Reads answer; every write fails (as on a full disk or a read-only file).
    Writes,
}

/// Keys in a `Vec` behind one lock: the lock is the rotation lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Ordered by generation, as the SQL store loads them.
    keys: Vec<StoredKey>,
    failure: StoreFailure,
    /// Calls answered so far (a failed call is not counted).
    loads: usize,
    /// Revoked token ids and when each token expires.
    revoked: std::collections::HashMap<String, Timestamp>,
}

impl MemoryStore {
    /// An empty store that answers every call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next calls misbehave as `failure` says, until set again.
    pub fn fail(&self, failure: StoreFailure) {
        self.state().failure = failure;
    }

    /// The keys held, by generation.
    pub fn keys(&self) -> Vec<StoredKey> {
        self.state().keys.clone()
    }

    /// Replaces one stored key (for tests that damage a row); `false` when no
    /// key has that kid.
    pub fn replace(&self, key: StoredKey) -> bool {
        let mut state = self.state();
        match state.keys.iter_mut().find(|k| k.meta.kid == key.meta.kid) {
            Some(slot) => {
                *slot = key;
                true
            }
            None => false,
        }
    }

    /// How many `load` calls the store answered.
    pub fn loads(&self) -> usize {
        self.state().loads
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change below is made whole or not at all, so a panic elsewhere
        // cannot leave the keys half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn check(&self, write: bool) -> Result<(), StoreError> {
        match self.failure {
            StoreFailure::Unavailable => Err(StoreError::Unavailable(
                "the in-memory store is switched off".into(),
            )),
            StoreFailure::Writes if write => Err(StoreError::Query(
                "the in-memory store refuses writes (as a full disk would)".into(),
            )),
            StoreFailure::None | StoreFailure::Writes => Ok(()),
        }
    }

    fn metas(&self) -> Vec<KeyMeta> {
        self.keys.iter().map(|k| k.meta.clone()).collect()
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn revoke(&self, jti: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        let mut state = self.state();
        state.check(true)?;
        state.revoked.entry(jti.to_owned()).or_insert(expires_at);
        Ok(())
    }

    async fn revocations(&self, now: Timestamp) -> Result<Vec<Revocation>, StoreError> {
        let mut state = self.state();
        state.check(false)?;
        state.revoked.retain(|_, expires_at| *expires_at > now);
        Ok(state
            .revoked
            .iter()
            .map(|(jti, expires_at)| Revocation {
                jti: jti.clone(),
                expires_at: *expires_at,
            })
            .collect())
    }

    async fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut state = self.state();
        state.check(false)?;
        state.loads += 1;
        Ok(state.keys.clone())
    }

    async fn rotate(
        &self,
        plan: &Planner<'_>,
        fresh: Vec<NewKeyMaterial>,
    ) -> Result<RotateOutcome, StoreError> {
        let mut state = self.state();
        state.check(false)?;
        let plan = plan(&state.metas());
        let fresh = match super::match_material(&plan.create, fresh) {
            Ok(fresh) => fresh,
            Err(wanted) => return Ok(RotateOutcome::NeedKeys(wanted)),
        };
        if !plan.is_empty() {
            state.check(true)?;
        }
        // Build the new set aside and swap it in: all or nothing, like a
        // transaction, and the schema's uniqueness rules checked first.
        let mut keys = state.keys.clone();
        let mut created = Vec::with_capacity(plan.create.len());
        for (times, material) in plan.create.into_iter().zip(fresh) {
            let meta = times.into_meta(material.kid);
            if keys.iter().any(|k| {
                (k.meta.alg, k.meta.generation) == (meta.alg, meta.generation)
                    || k.meta.kid == meta.kid
            }) {
                return Err(StoreError::Query(
                    format!(
                        "{} generation {} or kid {} is already stored",
                        meta.alg, meta.generation, meta.kid
                    )
                    .into(),
                ));
            }
            keys.push(StoredKey {
                meta: meta.clone(),
                public: material.public,
                sealed: material.sealed,
                backend: material.backend,
            });
            created.push(meta);
        }
        keys.retain(|k| !plan.prune.contains(&k.meta.kid));
        keys.sort_by_key(|k| (k.meta.alg, k.meta.generation));
        state.keys = keys;
        Ok(RotateOutcome::Applied {
            created,
            pruned: plan.prune,
        })
    }

    async fn reseal(&self, reseal: &Resealer<'_>) -> Result<usize, StoreError> {
        let mut state = self.state();
        state.check(true)?;
        let mut keys = state.keys.clone();
        let mut count = 0;
        for key in &mut keys {
            if let Some(sealed) = reseal(key)? {
                key.sealed = sealed;
                count += 1;
            }
        }
        state.keys = keys;
        Ok(count)
    }

    async fn remove(
        &self,
        kid: &str,
        check: &RemoveCheck<'_>,
    ) -> Result<RemoveOutcome, StoreError> {
        let mut state = self.state();
        state.check(false)?;
        let metas = state.metas();
        let Some(target) = metas.iter().find(|k| k.kid == kid) else {
            return Ok(RemoveOutcome::NotFound);
        };
        if let Err(reason) = check(target, &metas) {
            return Ok(RemoveOutcome::Refused(reason));
        }
        state.check(true)?;
        state.keys.retain(|k| k.meta.kid != kid);
        Ok(RemoveOutcome::Removed(target.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{
        Algorithm,
        crypto::PublicMembers,
        meta,
        policy::{NewKey, Plan},
        seal::SealedKey,
    };

    fn material(kid: &str) -> NewKeyMaterial {
        NewKeyMaterial {
            alg: Algorithm::Rs256,
            kid: kid.to_owned(),
            public: PublicMembers::Rsa {
                n: "n".into(),
                e: "AQAB".into(),
            },
            sealed: SealedKey {
                kek_id: "kek".into(),
                nonce: vec![0; 12],
                ciphertext: vec![1, 2, 3],
            },
            backend: crate::keys::Backend::Software,
        }
    }

    fn new_key(generation: i64) -> NewKey {
        let m = meta(generation, 100, 200, 300);
        NewKey {
            alg: Algorithm::Rs256,
            generation,
            published_at: m.published_at,
            activates_at: m.activates_at,
            retires_at: m.retires_at,
            expires_at: m.expires_at,
        }
    }

    fn plan_next(keys: &[KeyMeta]) -> Plan {
        let next = keys.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
        Plan {
            create: vec![new_key(next)],
            prune: Vec::new(),
        }
    }

    #[tokio::test]
    async fn rotate_re_plans_under_the_lock_and_asks_for_the_keys_it_lacks() {
        let store = MemoryStore::new();
        let two = |_: &[KeyMeta]| Plan {
            create: vec![new_key(1), new_key(2)],
            prune: Vec::new(),
        };
        assert_eq!(
            store.rotate(&two, vec![material("a")]).await.unwrap(),
            RotateOutcome::NeedKeys(vec![Algorithm::Rs256; 2])
        );
        assert!(store.keys().is_empty(), "nothing written");

        let outcome = store.rotate(&plan_next, vec![material("a")]).await.unwrap();
        let RotateOutcome::Applied { created, .. } = outcome else {
            panic!("applied: {outcome:?}");
        };
        assert_eq!(created[0].generation, 1);
        store.rotate(&plan_next, vec![material("b")]).await.unwrap();
        let generations: Vec<i64> = store.keys().iter().map(|k| k.meta.generation).collect();
        assert_eq!(generations, [1, 2], "the second plan saw the first key");
    }

    #[tokio::test]
    async fn a_generation_or_kid_is_stored_once_and_a_refused_write_changes_nothing() {
        let store = MemoryStore::new();
        let first = |_: &[KeyMeta]| Plan {
            create: vec![new_key(1)],
            prune: Vec::new(),
        };
        store.rotate(&first, vec![material("a")]).await.unwrap();
        assert!(matches!(
            store.rotate(&first, vec![material("b")]).await,
            Err(StoreError::Query(_))
        ));
        assert_eq!(store.keys().len(), 1);
    }

    #[tokio::test]
    async fn the_switch_fails_every_call_or_only_writes() {
        let store = MemoryStore::new();
        store.fail(StoreFailure::Unavailable);
        assert!(store.load().await.unwrap_err().is_unreachable());
        store.fail(StoreFailure::Writes);
        assert!(store.load().await.is_ok());
        let err = store
            .rotate(&plan_next, vec![material("a")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "{err}");
        let nothing = |_: &[KeyMeta]| Plan::default();
        assert!(
            store.rotate(&nothing, Vec::new()).await.is_ok(),
            "an empty plan writes nothing"
        );
        store.fail(StoreFailure::None);
        store.rotate(&plan_next, vec![material("a")]).await.unwrap();
        assert_eq!(store.keys().len(), 1);
    }

    #[tokio::test]
    async fn remove_asks_the_check_and_prune_deletes() {
        let store = MemoryStore::new();
        store.rotate(&plan_next, vec![material("a")]).await.unwrap();
        store.rotate(&plan_next, vec![material("b")]).await.unwrap();
        let refuse = |_: &KeyMeta, _: &[KeyMeta]| Err("no".to_owned());
        assert_eq!(
            store.remove("a", &refuse).await.unwrap(),
            RemoveOutcome::Refused("no".into())
        );
        let allow = |_: &KeyMeta, all: &[KeyMeta]| {
            assert_eq!(all.len(), 2);
            Ok(())
        };
        assert!(matches!(
            store.remove("a", &allow).await.unwrap(),
            RemoveOutcome::Removed(_)
        ));
        assert_eq!(
            store.remove("a", &allow).await.unwrap(),
            RemoveOutcome::NotFound
        );
        let prune_b = |_: &[KeyMeta]| Plan {
            create: Vec::new(),
            prune: vec!["b".into()],
        };
        store.rotate(&prune_b, Vec::new()).await.unwrap();
        assert!(store.keys().is_empty());
    }

    #[tokio::test]
    async fn each_algorithm_has_its_own_generations_and_material_of_its_own_kind() {
        let store = MemoryStore::new();
        let mut es256 = new_key(1);
        es256.alg = Algorithm::Es256;
        let both = move |_: &[KeyMeta]| Plan {
            create: vec![new_key(1), es256.clone()],
            prune: Vec::new(),
        };
        assert_eq!(
            store
                .rotate(&both, vec![material("a"), material("b")])
                .await
                .unwrap(),
            RotateOutcome::NeedKeys(vec![Algorithm::Rs256, Algorithm::Es256]),
            "an RS256 key does not fill an ES256 slot"
        );
        let mut ec = material("e");
        ec.alg = Algorithm::Es256;
        store.rotate(&both, vec![ec, material("a")]).await.unwrap();
        let slots: Vec<(Algorithm, i64, String)> = store
            .keys()
            .iter()
            .map(|k| (k.meta.alg, k.meta.generation, k.meta.kid.clone()))
            .collect();
        assert_eq!(
            slots,
            [
                (Algorithm::Rs256, 1, "a".to_owned()),
                (Algorithm::Es256, 1, "e".to_owned())
            ]
        );
    }
}
