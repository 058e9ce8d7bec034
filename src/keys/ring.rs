//! The key ring: an immutable snapshot of the loaded keys and the JWKS rendered
//! from them.
//!
//! A ring is built whenever the keys change (a reload, a rotation, or a key
//! expiring) and swapped in whole, so readers never lock. The JWKS bytes and
//! ETag are rendered once per ring; serving them costs a pointer copy.

use std::{sync::Arc, time::Duration};

use aws_lc_rs::digest;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use serde::Serialize;

use crate::time::Timestamp;

use super::{
    Algorithm, KeyMeta, KeyState,
    crypto::{PublicJwk, SigningKey},
    latest_expired,
    policy::{Policy, next_rotation_at},
    signer_at, state_of,
};

/// A key with its private half parsed, ready to sign.
#[derive(Debug)]
pub struct LoadedKey {
    /// Its kid, algorithm and schedule.
    pub meta: KeyMeta,
    /// Its private half, parsed once.
    pub key: SigningKey,
}

impl AsRef<KeyMeta> for Arc<LoadedKey> {
    fn as_ref(&self) -> &KeyMeta {
        &self.meta
    }
}

/// The published key set, rendered.
#[derive(Debug)]
pub struct JwksDocument {
    /// The keys, newest first.
    pub keys: Vec<PublicJwk>,
    /// `{"keys":[…]}` exactly as served over REST.
    pub json: Bytes,
    /// A strong ETag (quoted) over `json`.
    pub etag: String,
    /// The document is right until this instant, when a key in it expires.
    pub valid_until: Timestamp,
    /// When the set is next expected to change: a key expiring or the schedule
    /// publishing the next key. Caches should not outlive it.
    pub next_change: Timestamp,
}

impl JwksDocument {
    /// `max-age` for a response at `now`: the configured cache lifetime, capped
    /// so caches refresh when the set changes.
    pub fn max_age(&self, now: Timestamp, configured: Duration) -> Duration {
        configured.min(now.until(self.next_change))
    }
}

/// An immutable snapshot of every loaded key.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<Arc<LoadedKey>>,
    /// The same keys by algorithm, newest first: who signs is decided among
    /// the keys of one algorithm.
    by_alg: Vec<(Algorithm, Vec<Arc<LoadedKey>>)>,
    /// The algorithm that signs requests that name none.
    default_alg: Algorithm,
    jwks: Arc<JwksDocument>,
}

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: &'a [PublicJwk],
}

impl KeyRing {
    /// Builds a ring for `now` from loaded keys (in any order).
    pub fn new(mut keys: Vec<Arc<LoadedKey>>, now: Timestamp, policy: &Policy) -> Self {
        keys.sort_by(|a, b| KeyMeta::newest_first(&a.meta, &b.meta));
        let published: Vec<&Arc<LoadedKey>> =
            keys.iter().filter(|k| k.meta.is_published(now)).collect();
        let jwks: Vec<PublicJwk> = published.iter().map(|k| k.key.jwk().clone()).collect();
        // Serialising a few plain strings cannot fail; an empty set is the
        // honest fallback rather than a panic.
        let json = serde_json::to_vec(&JwkSet { keys: &jwks })
            .unwrap_or_else(|_| br#"{"keys":[]}"#.to_vec());
        let hash = digest::digest(&digest::SHA256, &json);
        let etag = format!("\"{}\"", B64.encode(&hash.as_ref()[..16]));

        let valid_until = published
            .iter()
            .map(|k| k.meta.expires_at)
            .min()
            .unwrap_or(Timestamp::from_unix(i64::MAX));
        let metas: Vec<KeyMeta> = keys.iter().map(|k| k.meta.clone()).collect();
        let next_change = next_rotation_at(&metas, policy)
            .map_or(valid_until, |due| due.max(now).min(valid_until));

        let mut by_alg: Vec<(Algorithm, Vec<Arc<LoadedKey>>)> = Vec::new();
        for key in &keys {
            match by_alg.iter_mut().find(|(alg, _)| *alg == key.meta.alg) {
                Some((_, group)) => group.push(Arc::clone(key)),
                None => by_alg.push((key.meta.alg, vec![Arc::clone(key)])),
            }
        }

        Self {
            keys,
            by_alg,
            default_alg: policy
                .algorithms
                .first()
                .copied()
                .unwrap_or(Algorithm::Rs256),
            jwks: Arc::new(JwksDocument {
                keys: jwks,
                json: Bytes::from(json),
                etag,
                valid_until,
                next_change,
            }),
        }
    }

    /// The JWKS as rendered when the ring was built.
    pub fn jwks(&self) -> &Arc<JwksDocument> {
        &self.jwks
    }

    /// Whether the rendered JWKS is still right at `now`.
    pub fn is_current(&self, now: Timestamp) -> bool {
        now < self.jwks.valid_until
    }

    /// Every key, newest first.
    pub fn keys(&self) -> &[Arc<LoadedKey>] {
        &self.keys
    }

    /// The key `kid`, if the ring holds it.
    pub fn get(&self, kid: &str) -> Option<&Arc<LoadedKey>> {
        self.keys.iter().find(|k| k.meta.kid == kid)
    }

    /// The keys of `alg`, newest first.
    pub fn keys_of(&self, alg: Algorithm) -> &[Arc<LoadedKey>] {
        self.by_alg
            .iter()
            .find(|(a, _)| *a == alg)
            .map_or(&[], |(_, keys)| keys.as_slice())
    }

    /// The key that signs ordinary tokens at `now` with the default algorithm.
    pub fn signer(&self, now: Timestamp) -> Option<&Arc<LoadedKey>> {
        self.signer_for(self.default_alg, now)
    }

    /// The key that signs ordinary `alg` tokens at `now`.
    pub fn signer_for(&self, alg: Algorithm, now: Timestamp) -> Option<&Arc<LoadedKey>> {
        signer_at(self.keys_of(alg), now)
    }

    /// The key that signs `expired=true` tokens at `now` with the default algorithm.
    pub fn expired_signer(&self, now: Timestamp) -> Option<&Arc<LoadedKey>> {
        self.expired_signer_for(self.default_alg, now)
    }

    /// The key that signs `expired=true` `alg` tokens at `now`.
    pub fn expired_signer_for(&self, alg: Algorithm, now: Timestamp) -> Option<&Arc<LoadedKey>> {
        latest_expired(self.keys_of(alg), now)
    }

    /// The state of `key` at `now`, among the keys of its algorithm.
    pub fn state_of(&self, key: &KeyMeta, now: Timestamp) -> KeyState {
        state_of(key, self.keys_of(key.alg), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::meta;

    fn policy() -> Policy {
        Policy::new(
            Duration::from_secs(100),
            Duration::from_secs(100),
            Duration::from_secs(50),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
    }

    fn loaded(meta: KeyMeta) -> Arc<LoadedKey> {
        Arc::new(LoadedKey {
            meta,
            key: SigningKey::generate().unwrap(),
        })
    }

    #[test]
    fn the_jwks_lists_unexpired_keys_newest_first_and_nothing_private() {
        let keys = vec![
            loaded(meta(1, 0, 100, 200)),
            loaded(meta(3, 200, 300, 400)),
            loaded(meta(2, 100, 200, 300)),
        ];
        let ring = KeyRing::new(keys, Timestamp::from_unix(250), &policy());
        let kids: Vec<&str> = ring.jwks().keys.iter().map(|k| k.kid.as_str()).collect();
        let expect: Vec<&str> = [3, 2]
            .iter()
            .map(|g| {
                ring.keys()
                    .iter()
                    .find(|k| k.meta.generation == *g)
                    .unwrap()
                    .key
                    .kid()
            })
            .collect();
        assert_eq!(kids, expect);
        let json: serde_json::Value = serde_json::from_slice(&ring.jwks().json).unwrap();
        for jwk in json["keys"].as_array().unwrap() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk.get(private).is_none());
            }
        }
        assert_eq!(ring.jwks().valid_until, Timestamp::from_unix(300));
        assert!(ring.is_current(Timestamp::from_unix(299)));
        assert!(!ring.is_current(Timestamp::from_unix(300)));
    }

    #[test]
    fn the_ring_finds_keys_by_kid_and_names_who_signs_what() {
        // k1 expired at 200; k2 signs 100..300; k3 is published, waiting for 300.
        let keys = vec![
            loaded(meta(1, 0, 100, 200)),
            loaded(meta(2, 100, 300, 400)),
            loaded(meta(3, 300, 400, 500)),
        ];
        let thumbprint_of_k2 = keys[1].key.kid().to_owned();
        let now = Timestamp::from_unix(250);
        let ring = KeyRing::new(keys, now, &policy());

        for wanted in ["k1", "k2", "k3"] {
            assert_eq!(ring.get(wanted).unwrap().meta.kid, wanted);
        }
        assert!(ring.get("k4").is_none());
        let signer = ring.signer(now).unwrap();
        assert_eq!(
            (signer.meta.kid.as_str(), signer.key.kid()),
            ("k2", thumbprint_of_k2.as_str())
        );
        assert_eq!(ring.expired_signer(now).unwrap().meta.kid, "k1");
        let k3 = &ring.get("k3").unwrap().meta;
        assert_eq!(ring.state_of(k3, now), KeyState::Pending);
        assert!(
            ring.signer(Timestamp::from_unix(600)).is_none(),
            "all expired"
        );
        assert!(ring.expired_signer(Timestamp::from_unix(150)).is_none());
    }

    #[test]
    fn max_age_is_capped_by_the_next_change() {
        let ring = KeyRing::new(
            vec![loaded(meta(1, 0, 1000, 2000))],
            Timestamp::from_unix(0),
            &policy(),
        );
        // Next rotation is due at retires (1000) - publish_ahead (55) - 2 x reload_every (5).
        assert_eq!(ring.jwks().next_change, Timestamp::from_unix(935));
        let configured = Duration::from_secs(50);
        assert_eq!(
            ring.jwks().max_age(Timestamp::from_unix(0), configured),
            configured
        );
        assert_eq!(
            ring.jwks().max_age(Timestamp::from_unix(925), configured),
            Duration::from_secs(10)
        );
    }

    /// What replicas and caches rely on: the ETag is a function of the key
    /// set alone (not of when or by whom the ring was built), and a changed
    /// set gets a different one.
    #[test]
    fn the_same_key_set_gives_the_same_etag_and_a_changed_one_another() {
        let (old, new) = (loaded(meta(1, 0, 100, 200)), loaded(meta(2, 50, 200, 300)));
        let ring = |keys: Vec<Arc<LoadedKey>>, now: i64| {
            KeyRing::new(keys, Timestamp::from_unix(now), &policy())
        };
        let first = ring(vec![old.clone(), new.clone()], 60);
        let again = ring(vec![new.clone(), old.clone()], 90);
        assert_eq!(first.jwks().etag, again.jwks().etag);
        assert!(first.jwks().etag.starts_with('"') && first.jwks().etag.ends_with('"'));

        let without_new = ring(vec![old.clone()], 60);
        let after_old_expired = ring(vec![old, new], 250);
        assert_ne!(without_new.jwks().etag, first.jwks().etag);
        assert_ne!(after_old_expired.jwks().etag, first.jwks().etag);
    }
}
