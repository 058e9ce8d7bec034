//! Signing keys and their life: named states derived from each key's times,
//! the pure rotation policy, the in-memory key ring, and the crypto underneath:
//! generating, sealing and unsealing keys, and where key-encryption keys come
//! from (`kek.rs`).
//!
//! Nothing here but `kek.rs` (KEK files) does I/O. The store persists [`KeyMeta`] plus a sealed private
//! key; the service loads them into a [`ring::KeyRing`] and asks
//! [`policy::plan_rotation`] what to create next.

pub mod algorithm;
pub mod crypto;
pub mod kek;
pub mod policy;
pub mod ring;
pub mod seal;

use std::{cmp::Ordering, fmt};

pub use algorithm::Algorithm;

use crate::time::Timestamp;

/// A key's schedule. The state at any instant is derived from these times,
/// never stored as a second truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    /// The algorithm it signs with: each has its own keys and schedule.
    pub alg: Algorithm,
    /// RFC 7638 SHA-256 thumbprint, base64url: the same on every replica.
    pub kid: String,
    /// Position in its algorithm's rotation sequence (1, 2, 3…): each rotation
    /// creates the next one, and the store refuses a second key for the same
    /// algorithm and generation.
    pub generation: i64,
    /// When the key entered the store (and so the JWKS).
    pub published_at: Timestamp,
    /// When it may start signing.
    pub activates_at: Timestamp,
    /// When it stops signing.
    pub retires_at: Timestamp,
    /// When it leaves the JWKS; from then on it signs only `expired=true` tokens.
    pub expires_at: Timestamp,
}

/// Where a key is in its life at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Published and signing (the newest active key signs).
    Active,
    /// Published, no longer signing: waiting for its tokens to expire.
    Retiring,
    /// Unpublished; signs only deliberately expired tokens.
    Expired,
}

impl KeyState {
    /// Every state, in the order a key goes through them.
    pub const ALL: [KeyState; 4] = [Self::Pending, Self::Active, Self::Retiring, Self::Expired];

    /// Its name in `keys list`, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeyMeta {
    /// Whether the JWKS lists it at `now`: from its creation until it expires.
    pub fn is_published(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Inside its signing window (whether or not a newer key has taken over).
    pub fn in_signing_window(&self, now: Timestamp) -> bool {
        self.activates_at <= now && now < self.retires_at && self.is_published(now)
    }

    /// Newest first: the later a key starts signing, the newer it is.
    pub fn newest_first(a: &KeyMeta, b: &KeyMeta) -> Ordering {
        b.activates_at
            .cmp(&a.activates_at)
            .then(b.generation.cmp(&a.generation))
    }
}

/// The key that signs at `now`: the newest one inside its signing window
/// (`keys` being one algorithm's).
pub fn signer_at<T: AsRef<KeyMeta>>(keys: &[T], now: Timestamp) -> Option<&T> {
    keys.iter()
        .filter(|k| k.as_ref().in_signing_window(now))
        .min_by(|a, b| KeyMeta::newest_first(a.as_ref(), b.as_ref()))
}

/// The most recently expired key, the one `expired=true` tokens are signed with.
pub fn latest_expired<T: AsRef<KeyMeta>>(keys: &[T], now: Timestamp) -> Option<&T> {
    keys.iter()
        .filter(|k| !k.as_ref().is_published(now))
        .max_by(|a, b| {
            let (a, b) = (a.as_ref(), b.as_ref());
            a.expires_at
                .cmp(&b.expires_at)
                .then(a.generation.cmp(&b.generation))
        })
}

/// The state of `key` at `now`, given every key it shares the ring with
/// (keys of other algorithms have no say in it).
pub fn state_of<T: AsRef<KeyMeta>>(key: &KeyMeta, keys: &[T], now: Timestamp) -> KeyState {
    if !key.is_published(now) {
        KeyState::Expired
    } else if now < key.activates_at {
        KeyState::Pending
    } else if keys
        .iter()
        .filter(|k| k.as_ref().alg == key.alg && k.as_ref().in_signing_window(now))
        .min_by(|a, b| KeyMeta::newest_first(a.as_ref(), b.as_ref()))
        .is_some_and(|s| s.as_ref().kid == key.kid)
    {
        KeyState::Active
    } else {
        KeyState::Retiring
    }
}

impl AsRef<KeyMeta> for KeyMeta {
    fn as_ref(&self) -> &KeyMeta {
        self
    }
}

#[cfg(test)]
pub(crate) fn meta(generation: i64, activates: i64, retires: i64, expires: i64) -> KeyMeta {
    KeyMeta {
        alg: Algorithm::Rs256,
        kid: format!("k{generation}"),
        generation,
        published_at: Timestamp::from_unix(activates - 10),
        activates_at: Timestamp::from_unix(activates),
        retires_at: Timestamp::from_unix(retires),
        expires_at: Timestamp::from_unix(expires),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: i64) -> Timestamp {
        Timestamp::from_unix(t)
    }

    #[test]
    fn states_follow_the_schedule() {
        // k1 signs 100..200 and is published until 300; k2 takes over at 200.
        let keys = [meta(1, 100, 200, 300), meta(2, 200, 300, 400)];
        let state = |g: usize, t| state_of(&keys[g], &keys, at(t));
        assert_eq!(state(0, 150), KeyState::Active);
        assert_eq!(state(1, 150), KeyState::Pending);
        assert_eq!(state(0, 250), KeyState::Retiring);
        assert_eq!(state(1, 250), KeyState::Active);
        assert_eq!(state(0, 300), KeyState::Expired);
        assert_eq!(state(1, 400), KeyState::Expired);
    }

    #[test]
    fn the_newest_key_in_its_window_signs() {
        // An operator-forced key (3) activates while k2's window is still open.
        let keys = [meta(2, 100, 300, 400), meta(3, 150, 350, 450)];
        assert_eq!(signer_at(&keys, at(120)).unwrap().kid, "k2");
        assert_eq!(signer_at(&keys, at(160)).unwrap().kid, "k3");
        assert_eq!(state_of(&keys[0], &keys, at(160)), KeyState::Retiring);
        assert!(signer_at(&keys, at(500)).is_none());
    }

    #[test]
    fn a_key_signs_from_its_activation_up_to_its_retirement_and_is_published_until_it_expires() {
        let key = meta(1, 100, 200, 300);
        let keys = [key.clone()];
        assert!(!key.in_signing_window(at(99)));
        assert!(
            key.in_signing_window(at(100)),
            "from the activation instant"
        );
        assert!(key.in_signing_window(at(199)));
        assert!(!key.in_signing_window(at(200)), "not at retirement");
        assert!(key.is_published(at(299)));
        assert!(!key.is_published(at(300)), "gone at expiry");
        assert_eq!(state_of(&key, &keys, at(99)), KeyState::Pending);
        assert_eq!(state_of(&key, &keys, at(100)), KeyState::Active);
        assert_eq!(state_of(&key, &keys, at(200)), KeyState::Retiring);
        assert_eq!(state_of(&key, &keys, at(300)), KeyState::Expired);

        // A key whose times are out of order never signs after it expired.
        let odd = meta(2, 100, 400, 300);
        assert!(!odd.in_signing_window(at(350)));
    }

    #[test]
    fn key_states_read_as_the_names_metrics_and_admin_output_use() {
        let names: Vec<String> = KeyState::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["pending", "active", "retiring", "expired"]);
        for state in KeyState::ALL {
            assert_eq!(state.to_string(), state.as_str());
        }
    }

    #[test]
    fn the_latest_expired_key_signs_expired_tokens() {
        let keys = [meta(1, 0, 10, 20), meta(2, 10, 20, 30), meta(3, 20, 30, 40)];
        assert_eq!(latest_expired(&keys, at(35)).unwrap().kid, "k2");
        assert!(latest_expired(&keys, at(15)).is_none());
    }
}
