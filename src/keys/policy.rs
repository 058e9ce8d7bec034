//! The rotation policy: a pure function of (keys, now, settings) that says which
//! keys to create and which expired keys to forget.
//!
//! Two rules keep every verifier working through rotations:
//! 1. A new key is published at least `jwks_max_age + reload_every` before it
//!    signs, so by the time a token carries its `kid`, every replica has loaded
//!    it and every cached JWKS that lacks it has gone stale.
//! 2. A key stays published for `token_ttl + jwks_max_age + clock_skew` after it
//!    stops signing, so every token it signed expires (with leeway) before any
//!    verifier can lose the key.
//!
//! [`Policy::validate`] refuses settings that would break either rule. The
//! schedule creates each key two reload intervals earlier than rule 1 needs, so
//! a background loop that runs every `reload_every` is never late.

use std::time::Duration;

use crate::time::Timestamp;

use super::{
    KeyMeta,
    algorithm::{Algorithm, RsaKeySize},
};

/// Settings that shape the key lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Default and maximum lifetime of an issued token.
    pub token_ttl: Duration,
    /// How long each key signs before the next one takes over.
    pub rotate_every: Duration,
    /// How long verifiers may cache the JWKS (`Cache-Control: max-age`).
    pub jwks_max_age: Duration,
    /// How often a replica reloads keys from the store.
    pub reload_every: Duration,
    /// Clock difference tolerated between this service and verifiers.
    pub clock_skew: Duration,
    /// How long before it signs a new key is published (rule 1).
    pub publish_ahead: Duration,
    /// How long after it stops signing a key stays published (rule 2).
    pub retain_after: Duration,
    /// How many expired keys to keep for `expired=true` tokens; older ones are pruned.
    pub keep_expired: usize,
    /// The algorithms that sign, each with its own keys; the first signs
    /// requests that name none. Never empty.
    pub algorithms: Vec<Algorithm>,
    /// The modulus size of new RSA keys.
    pub rsa_key_size: RsaKeySize,
}

/// A policy that breaks a rule, in the policy's own words. The edge that
/// knows which setting sets each duration names it (see `startup`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Rule 1: a key is published too short a time before it signs, so
    /// verifiers with a cached JWKS would not know it.
    #[error(
        "rule broken: a new key must be published at least the JWKS cache lifetime + the reload \
         interval ({}) before it signs, but it is published {} ahead",
        show(*needed),
        show(*actual)
    )]
    PublishAhead {
        /// The least it must be published ahead.
        needed: Duration,
        /// What it is.
        actual: Duration,
    },
    /// Rule 2: a key is unpublished too soon after it stops signing, so
    /// tokens it signed would stop verifying before they expire.
    #[error(
        "rule broken: a key must stay published for the token lifetime + the JWKS cache lifetime \
         + the clock skew ({}) after it stops signing, but it stays {}",
        show(*needed),
        show(*actual)
    )]
    RetainAfter {
        /// The least it must stay published.
        needed: Duration,
        /// What it is.
        actual: Duration,
    },
    /// A duration is under its floor of one second.
    #[error("the {0} must be at least 1s")]
    TooShort(Setting),
    /// No expired key would be kept.
    #[error("at least one expired key must be kept, so `expired=true` always has a key")]
    KeepExpired,
    /// No algorithm would sign.
    #[error("at least one algorithm must sign")]
    NoAlgorithm,
}

/// The policy durations that have a floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// [`Policy::token_ttl`].
    TokenTtl,
    /// [`Policy::rotate_every`].
    RotateEvery,
    /// [`Policy::reload_every`].
    ReloadEvery,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TokenTtl => "token lifetime",
            Self::RotateEvery => "signing period of a key",
            Self::ReloadEvery => "reload interval",
        })
    }
}

/// A duration as settings are written (`1h 30m`).
pub fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Policy {
    /// The settings with both rule-bound durations at their minimum.
    pub fn new(
        token_ttl: Duration,
        rotate_every: Duration,
        jwks_max_age: Duration,
        reload_every: Duration,
        clock_skew: Duration,
    ) -> Self {
        let mut policy = Self {
            token_ttl,
            rotate_every,
            jwks_max_age,
            reload_every,
            clock_skew,
            publish_ahead: Duration::ZERO,
            retain_after: Duration::ZERO,
            keep_expired: 3,
            algorithms: vec![Algorithm::Rs256],
            rsa_key_size: RsaKeySize::default(),
        };
        policy.publish_ahead = policy.min_publish_ahead();
        policy.retain_after = policy.min_retain_after();
        policy
    }

    /// Rule 1's floor: the JWKS cache lifetime plus the reload interval.
    pub fn min_publish_ahead(&self) -> Duration {
        self.jwks_max_age.saturating_add(self.reload_every)
    }

    /// Rule 2's floor: the token lifetime plus the JWKS cache lifetime plus
    /// the clock skew.
    pub fn min_retain_after(&self) -> Duration {
        self.token_ttl
            .saturating_add(self.jwks_max_age)
            .saturating_add(self.clock_skew)
    }

    /// How much earlier than rule 1 requires the schedule creates the next key:
    /// two reload intervals, so a refresher that runs late is still on time.
    pub fn rotation_slack(&self) -> Duration {
        self.reload_every.saturating_mul(2)
    }

    /// How long a key lives from the moment it starts signing until it expires.
    pub fn key_lifetime(&self) -> Duration {
        self.rotate_every.saturating_add(self.retain_after)
    }

    /// Checks the rules every policy must keep.
    ///
    /// # Errors
    ///
    /// The first rule broken: a duration under one second, no expired key
    /// kept, no algorithm, then rule 1 ([`PolicyError::PublishAhead`]) and
    /// rule 2 ([`PolicyError::RetainAfter`]).
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, value) in [
            (Setting::TokenTtl, self.token_ttl),
            (Setting::RotateEvery, self.rotate_every),
            (Setting::ReloadEvery, self.reload_every),
        ] {
            if value < Duration::from_secs(1) {
                return Err(PolicyError::TooShort(name));
            }
        }
        if self.keep_expired == 0 {
            return Err(PolicyError::KeepExpired);
        }
        if self.algorithms.is_empty() {
            return Err(PolicyError::NoAlgorithm);
        }
        if self.publish_ahead < self.min_publish_ahead() {
            return Err(PolicyError::PublishAhead {
                needed: self.min_publish_ahead(),
                actual: self.publish_ahead,
            });
        }
        if self.retain_after < self.min_retain_after() {
            return Err(PolicyError::RetainAfter {
                needed: self.min_retain_after(),
                actual: self.retain_after,
            });
        }
        Ok(())
    }
}

/// The times of a key the plan wants created; its material comes separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// The algorithm it will sign with.
    pub alg: Algorithm,
    /// Its place in the sequence of keys of its algorithm, from 1.
    pub generation: i64,
    /// When the JWKS starts listing it.
    pub published_at: Timestamp,
    /// When it starts signing.
    pub activates_at: Timestamp,
    /// When it stops signing (the next key activates).
    pub retires_at: Timestamp,
    /// When the JWKS stops listing it.
    pub expires_at: Timestamp,
}

impl NewKey {
    /// The key's metadata, once its material gives it a kid.
    pub fn into_meta(self, kid: String) -> KeyMeta {
        KeyMeta {
            alg: self.alg,
            kid,
            generation: self.generation,
            published_at: self.published_at,
            activates_at: self.activates_at,
            retires_at: self.retires_at,
            expires_at: self.expires_at,
        }
    }
}

/// What a rotation should do. An empty plan means nothing is due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys to create.
    pub create: Vec<NewKey>,
    /// `kid`s of expired keys to delete.
    pub prune: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.prune.is_empty()
    }
}

/// Why a rotation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule: create a key only when one is due.
    Schedule,
    /// An operator asked: create the next key now (it still waits
    /// `publish_ahead` before it signs).
    Operator,
}

/// Decides what to create and prune at `now`, for each algorithm on its own:
/// keys are created for the configured algorithms, and old expired keys of
/// every algorithm in the store are pruned (a key of an algorithm no longer
/// configured stays published until it expires). Pure: the store calls it
/// again inside its rotation transaction, so only one replica acts on each
/// slot.
pub fn plan_rotation(keys: &[KeyMeta], now: Timestamp, policy: &Policy, trigger: Trigger) -> Plan {
    let mut algorithms = policy.algorithms.clone();
    for key in keys {
        if !algorithms.contains(&key.alg) {
            algorithms.push(key.alg);
        }
    }
    let mut plan = Plan::default();
    for alg in algorithms {
        let own: Vec<KeyMeta> = keys.iter().filter(|k| k.alg == alg).cloned().collect();
        let mut part = plan_algorithm(alg, &own, now, policy, trigger);
        if !policy.algorithms.contains(&alg) {
            part.create.clear();
        }
        plan.create.append(&mut part.create);
        plan.prune.append(&mut part.prune);
    }
    plan
}

/// [`plan_rotation`] for the keys of one algorithm.
fn plan_algorithm(
    alg: Algorithm,
    keys: &[KeyMeta],
    now: Timestamp,
    policy: &Policy,
    trigger: Trigger,
) -> Plan {
    // Every key was published at its creator's clock reading, so the store
    // proves time has reached the newest `published_at`. A caller whose reading
    // is older (taken before it waited for the lock, or on a host whose clock
    // is a moment behind) plans from there instead; otherwise it would see the
    // keys just committed as not signing yet and rotate the same slot again.
    let now = keys
        .iter()
        .map(|k| k.published_at)
        .fold(now, Timestamp::max);
    let one_second = Duration::from_secs(1);
    let mut plan = Plan::default();
    let next_generation = keys.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
    let key_for = |generation, activates_at: Timestamp, signs_for| {
        let retires_at = activates_at + signs_for;
        NewKey {
            alg,
            generation,
            published_at: now,
            activates_at,
            retires_at,
            expires_at: retires_at + policy.retain_after,
        }
    };
    let key_at = |generation, activates_at| key_for(generation, activates_at, policy.rotate_every);
    // A key that signs at once had no time to be published ahead, so it must
    // sign at least until its successor can: publish_ahead + rotation_slack.
    let key_now = || {
        let signs_for = policy
            .rotate_every
            .max(policy.publish_ahead.saturating_add(policy.rotation_slack()));
        key_for(next_generation, now, signs_for)
    };

    if keys.is_empty() {
        // A fresh store: one key that expired a moment ago, so `expired=true`
        // works at once, and one that signs at once (nothing was ever
        // published, so no verifier can hold a set that lacks it).
        let expires_at = now - one_second;
        let activates_at = expires_at - policy.key_lifetime();
        let mut expired = key_at(1, activates_at);
        expired.published_at = activates_at;
        expired.expires_at = expires_at;
        plan.create.push(expired);
        let mut first = key_now();
        first.generation = 2;
        plan.create.push(first);
        return plan;
    }

    match super::signer_at(keys, now) {
        // Nothing can sign (the service was down longer than a key signs):
        // sign at once. Verifiers holding an old set meet an unknown `kid` and
        // refetch; waiting `publish_ahead` would refuse every token meanwhile.
        None => plan.create.push(key_now()),
        Some(signer) => {
            let newest = keys
                .iter()
                .filter(|k| k.is_published(now))
                .min_by(|a, b| KeyMeta::newest_first(a, b))
                .unwrap_or(signer);
            let earliest = now + policy.publish_ahead;
            let activates_at = match trigger {
                Trigger::Operator => Some(earliest),
                Trigger::Schedule if newest.retires_at <= earliest + policy.rotation_slack() => {
                    Some(newest.retires_at.max(earliest))
                }
                Trigger::Schedule => None,
            };
            if let Some(activates_at) = activates_at {
                plan.create.push(key_at(next_generation, activates_at));
            }
        }
    }

    let mut expired: Vec<&KeyMeta> = keys.iter().filter(|k| !k.is_published(now)).collect();
    expired.sort_by(|a, b| {
        b.expires_at
            .cmp(&a.expires_at)
            .then(b.generation.cmp(&a.generation))
    });
    plan.prune = expired
        .iter()
        .skip(policy.keep_expired)
        .map(|k| k.kid.clone())
        .collect();
    plan
}

/// When the schedule next wants a key created, for whichever configured
/// algorithm is due first (`None` when none has keys).
///
/// [`Policy::rotation_slack`] earlier than strictly needed, so a background
/// loop that runs every `reload_every` creates the next key in time to take
/// over exactly when the current one retires, even if it runs late.
pub fn next_rotation_at(keys: &[KeyMeta], policy: &Policy) -> Option<Timestamp> {
    policy
        .algorithms
        .iter()
        .filter_map(|alg| {
            keys.iter()
                .filter(|k| k.alg == *alg)
                .min_by(|a, b| KeyMeta::newest_first(a, b))
                .map(|newest| newest.retires_at - policy.publish_ahead - policy.rotation_slack())
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;
    use crate::keys::{KeyState, latest_expired, signer_at, state_of};

    const MIN: u64 = 60;

    fn policy() -> Policy {
        // The shipped defaults: 15m tokens, 30m rotation, 10m max-age, 10s reload, 5m skew.
        Policy::new(
            Duration::from_secs(15 * MIN),
            Duration::from_secs(30 * MIN),
            Duration::from_secs(10 * MIN),
            Duration::from_secs(10),
            Duration::from_secs(5 * MIN),
        )
    }

    fn at(t: i64) -> Timestamp {
        Timestamp::from_unix(t)
    }

    /// Applies a plan as a store would, naming keys after their generation.
    fn apply(keys: &mut Vec<KeyMeta>, plan: Plan) {
        keys.retain(|k| !plan.prune.contains(&k.kid));
        for new in plan.create {
            let kid = format!("k{}", new.generation);
            keys.push(new.into_meta(kid));
        }
    }

    #[test]
    fn the_defaults_satisfy_both_rules() {
        assert_eq!(policy().validate(), Ok(()));
    }

    #[test]
    fn settings_at_any_size_plan_without_overflowing() {
        let huge = Policy::new(
            Duration::MAX,
            Duration::MAX,
            Duration::MAX,
            Duration::MAX,
            Duration::MAX,
        );
        assert_eq!(huge.min_retain_after(), Duration::MAX);
        let mut keys = vec![];
        for now in [at(0), at(1_000_000), at(i64::MAX)] {
            let plan = plan_rotation(&keys, now, &huge, Trigger::Operator);
            apply(&mut keys, plan);
            let _ = next_rotation_at(&keys, &huge);
        }
        assert!(!keys.is_empty());
    }

    #[test]
    fn a_fresh_store_gets_one_active_key_for_about_an_hour_and_one_expired_key() {
        let now = at(1_000_000);
        let plan = plan_rotation(&[], now, &policy(), Trigger::Schedule);
        let mut keys = vec![];
        apply(&mut keys, plan);
        assert_eq!(keys.len(), 2);
        assert_eq!(signer_at(&keys, now).unwrap().kid, "k2");
        assert_eq!(latest_expired(&keys, now).unwrap().kid, "k1");
        let active = &keys[1];
        assert_eq!(active.expires_at.unix() - now.unix(), 60 * MIN as i64);
    }

    #[test]
    fn nothing_is_due_right_after_bootstrap() {
        let mut keys = vec![];
        apply(
            &mut keys,
            plan_rotation(&[], at(0), &policy(), Trigger::Schedule),
        );
        assert!(plan_rotation(&keys, at(60), &policy(), Trigger::Schedule).is_empty());
    }

    /// Replicas read the clock before they take the rotation lock (and key
    /// generation runs in between), so the one that plans second may hold an
    /// instant earlier than the keys the first has just committed. It must not
    /// read those keys as "not signing yet" and mint another set.
    #[test]
    fn a_plan_made_with_an_older_clock_reading_than_the_store_changes_nothing() {
        let p = policy();
        let mut keys = vec![];
        apply(
            &mut keys,
            plan_rotation(&[], at(1_000), &p, Trigger::Schedule),
        );
        for stale in [at(999), at(990), at(400)] {
            assert_eq!(
                plan_rotation(&keys, stale, &p, Trigger::Schedule),
                Plan::default(),
                "planned at {stale}"
            );
        }

        let due = next_rotation_at(&keys, &p).unwrap();
        let plan = plan_rotation(&keys, due, &p, Trigger::Schedule);
        apply(&mut keys, plan);
        assert_eq!(keys.len(), 3);
        assert!(
            plan_rotation(&keys, due - Duration::from_secs(2), &p, Trigger::Schedule).is_empty(),
            "a replica a moment behind does not rotate the same slot again"
        );
    }

    #[test]
    fn the_next_key_is_published_ahead_and_takes_over_when_the_active_one_retires() {
        let p = policy();
        let mut keys = vec![];
        apply(&mut keys, plan_rotation(&[], at(0), &p, Trigger::Schedule));
        let retires = keys[1].retires_at;
        let due = next_rotation_at(&keys, &p).unwrap();
        assert_eq!(due, retires - p.publish_ahead - p.rotation_slack());
        assert!(
            plan_rotation(&keys, due - Duration::from_secs(1), &p, Trigger::Schedule)
                .create
                .is_empty()
        );

        let plan = plan_rotation(&keys, due, &p, Trigger::Schedule);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].activates_at, retires);
        assert_eq!(plan.create[0].generation, 3);
        apply(&mut keys, plan);
        assert_eq!(state_of(&keys[2], &keys, due), KeyState::Pending);
        assert_eq!(signer_at(&keys, retires).unwrap().kid, "k3");
        // Re-planning at the same instant (another replica) creates nothing more.
        assert!(
            plan_rotation(&keys, due, &p, Trigger::Schedule)
                .create
                .is_empty()
        );
    }

    /// Walks a day in 10-second steps and checks both rules for every key.
    #[test]
    fn through_many_rotations_every_signing_key_was_published_ahead_and_outlives_its_tokens() {
        let p = policy();
        let mut keys = vec![];
        let mut signers = std::collections::HashMap::new();
        let start = 1_000_000;
        for t in (start..start + 86_400).step_by(10) {
            let now = at(t);
            let plan = plan_rotation(&keys, now, &p, Trigger::Schedule);
            apply(&mut keys, plan);
            let signer = signer_at(&keys, now).expect("a key always signs");
            signers
                .entry(signer.kid.clone())
                .or_insert_with(|| signer.clone());
            assert!(latest_expired(&keys, now).is_some());
            assert!(keys.iter().filter(|k| !k.is_published(now)).count() <= p.keep_expired);
        }
        assert!(signers.len() >= 40, "rotated {} times", signers.len());
        for key in signers.values().filter(|k| k.generation > 2) {
            assert!(
                key.activates_at.unix() - key.published_at.unix()
                    >= p.min_publish_ahead().as_secs() as i64
            );
            assert!(
                key.expires_at.unix() - key.retires_at.unix()
                    >= p.min_retain_after().as_secs() as i64
            );
        }
        let generations: std::collections::HashSet<_> = keys.iter().map(|k| k.generation).collect();
        assert_eq!(generations.len(), keys.len(), "one key per rotation slot");
    }

    #[test]
    fn an_operator_rotation_creates_a_key_that_still_waits_before_signing() {
        let p = policy();
        let mut keys = vec![];
        apply(&mut keys, plan_rotation(&[], at(0), &p, Trigger::Schedule));
        let plan = plan_rotation(&keys, at(60), &p, Trigger::Operator);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].activates_at, at(60) + p.publish_ahead);
    }

    #[test]
    fn after_a_long_outage_a_key_that_signs_at_once_is_created() {
        let p = policy();
        let mut keys = vec![];
        apply(&mut keys, plan_rotation(&[], at(0), &p, Trigger::Schedule));
        let much_later = at(10 * 86_400);
        let plan = plan_rotation(&keys, much_later, &p, Trigger::Schedule);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].activates_at, much_later);
    }

    #[test]
    fn when_every_key_has_retired_the_next_one_signs_at_once() {
        let p = policy();
        let mut keys = vec![];
        apply(&mut keys, plan_rotation(&[], at(0), &p, Trigger::Schedule));
        let after_retirement = keys[1].retires_at + Duration::from_secs(5);
        let plan = plan_rotation(&keys, after_retirement, &p, Trigger::Schedule);
        assert_eq!(plan.create[0].activates_at, after_retirement);
    }

    #[test]
    fn with_rotation_faster_than_publication_the_first_key_signs_until_its_successor_can() {
        let p = Policy::new(
            Duration::from_secs(2),
            Duration::from_secs(2),
            Duration::from_secs(2),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let mut keys = vec![];
        for t in 0..60 {
            let plan = plan_rotation(&keys, at(t), &p, Trigger::Schedule);
            apply(&mut keys, plan);
            assert!(signer_at(&keys, at(t)).is_some(), "no signer at {t}");
            for key in keys.iter().filter(|k| k.generation > 2) {
                assert!(key.activates_at.unix() - key.published_at.unix() >= 3);
            }
        }
    }

    #[test]
    fn old_expired_keys_are_pruned_beyond_the_newest_few() {
        let p = policy();
        let keys: Vec<_> = (1..=6)
            .map(|g| crate::keys::meta(g, g * 10, g * 10 + 5, g * 10 + 8))
            .collect();
        let plan = plan_rotation(&keys, at(1_000), &p, Trigger::Schedule);
        assert_eq!(plan.prune, vec!["k3", "k2", "k1"]);
    }

    #[test]
    fn settings_at_exactly_the_minimums_are_accepted_and_a_moment_less_is_not() {
        let one = Duration::from_secs(1);
        let tight = Policy::new(one, one, Duration::ZERO, one, Duration::ZERO);
        assert_eq!(
            tight.validate(),
            Ok(()),
            "every rule met with nothing to spare"
        );

        let less = Duration::from_millis(999);
        for (name, short) in [
            (
                Setting::TokenTtl,
                Policy::new(less, one, Duration::ZERO, one, Duration::ZERO),
            ),
            (
                Setting::RotateEvery,
                Policy::new(one, less, Duration::ZERO, one, Duration::ZERO),
            ),
            (
                Setting::ReloadEvery,
                Policy::new(one, one, Duration::ZERO, less, Duration::ZERO),
            ),
        ] {
            assert_eq!(short.validate(), Err(PolicyError::TooShort(name)));
        }

        let mut p = policy();
        p.publish_ahead = p.min_publish_ahead() - less;
        assert!(matches!(
            p.validate(),
            Err(PolicyError::PublishAhead { .. })
        ));
        let mut p = policy();
        p.retain_after = p.min_retain_after() - less;
        assert!(matches!(p.validate(), Err(PolicyError::RetainAfter { .. })));
        let mut p = policy();
        p.keep_expired = 0;
        assert_eq!(p.validate(), Err(PolicyError::KeepExpired));
    }

    #[test]
    fn the_rules_add_up_the_settings_they_name() {
        let p = policy();
        // Rule 1: max-age 10m + reload 10s; rule 2: ttl 15m + max-age 10m + skew 5m.
        assert_eq!(p.min_publish_ahead(), Duration::from_secs(10 * MIN + 10));
        assert_eq!(p.min_retain_after(), Duration::from_secs(30 * MIN));
        assert_eq!(p.rotation_slack(), Duration::from_secs(20));
        assert_eq!(p.key_lifetime(), Duration::from_secs(60 * MIN));
    }

    #[test]
    fn a_plan_is_empty_only_when_it_neither_creates_nor_prunes() {
        let new = plan_rotation(&[], at(0), &policy(), Trigger::Schedule).create;
        assert!(Plan::default().is_empty());
        let creates = Plan {
            create: new,
            prune: vec![],
        };
        assert!(!creates.is_empty());
        let prunes = Plan {
            create: vec![],
            prune: vec!["k1".into()],
        };
        assert!(!prunes.is_empty());
    }

    #[test]
    fn every_planned_key_has_an_ordered_schedule() {
        let p = policy();
        let mut keys = vec![];
        for t in (0..4 * 3_600).step_by(10) {
            let plan = plan_rotation(&keys, at(t), &p, Trigger::Schedule);
            apply(&mut keys, plan);
        }
        let plan = plan_rotation(&keys, at(4 * 3_600), &p, Trigger::Operator);
        apply(&mut keys, plan);
        for key in &keys {
            assert!(key.published_at <= key.activates_at, "{key:?}");
            assert!(key.activates_at < key.retires_at, "{key:?}");
            assert!(
                key.expires_at - p.retain_after >= key.retires_at,
                "published for retain_after past retiring: {key:?}"
            );
        }
        // The bootstrap's expired key had a whole life behind it.
        let mut fresh = vec![];
        apply(
            &mut fresh,
            plan_rotation(&[], at(10_000), &p, Trigger::Schedule),
        );
        let expired = &fresh[0];
        assert_eq!(expired.expires_at, at(9_999));
        assert_eq!(expired.expires_at - p.key_lifetime(), expired.activates_at);
        assert_eq!(expired.retires_at + p.retain_after, expired.expires_at);
    }

    #[test]
    fn settings_that_break_a_rule_are_refused_with_the_rule_named() {
        let mut p = policy();
        p.publish_ahead = Duration::from_secs(60);
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("published at least"), "{err}");
        assert!(err.contains("10m 10s"), "{err}");

        let mut p = policy();
        p.retain_after = Duration::from_secs(60);
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("stay published"), "{err}");
        assert!(err.contains("30m"), "{err}");

        let mut p = policy();
        p.rotate_every = Duration::ZERO;
        assert_eq!(
            p.validate(),
            Err(PolicyError::TooShort(Setting::RotateEvery))
        );
    }

    /// Applies a plan naming keys after their algorithm and generation.
    fn apply_named(keys: &mut Vec<KeyMeta>, plan: Plan) {
        keys.retain(|k| !plan.prune.contains(&k.kid));
        for new in plan.create {
            let kid = format!("{}-{}", new.alg, new.generation);
            keys.push(new.into_meta(kid));
        }
    }

    #[test]
    fn each_algorithm_has_its_own_keys_slots_and_schedule() {
        let mut p = policy();
        p.algorithms = vec![Algorithm::Es256, Algorithm::Rs256];
        let mut keys = vec![];
        apply_named(&mut keys, plan_rotation(&[], at(0), &p, Trigger::Schedule));
        let mut kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ES256-1", "ES256-2", "RS256-1", "RS256-2"]);

        let mut signers = std::collections::HashSet::new();
        for t in (0..86_400).step_by(10) {
            let plan = plan_rotation(&keys, at(t), &p, Trigger::Schedule);
            apply_named(&mut keys, plan);
            for alg in &p.algorithms {
                let own: Vec<KeyMeta> = keys.iter().filter(|k| k.alg == *alg).cloned().collect();
                let signer = signer_at(&own, at(t)).expect("each algorithm always signs");
                signers.insert(signer.kid.clone());
                assert!(latest_expired(&own, at(t)).is_some(), "{alg} at {t}");
            }
        }
        let slots: std::collections::HashSet<_> =
            keys.iter().map(|k| (k.alg, k.generation)).collect();
        assert_eq!(slots.len(), keys.len(), "one key per slot per algorithm");
        assert!(signers.iter().any(|k| k.starts_with("ES256")));
        assert!(signers.len() >= 80, "both rotated: {}", signers.len());
    }

    #[test]
    fn an_added_algorithm_starts_like_a_fresh_store_and_a_dropped_one_only_ages() {
        let mut keys = vec![];
        apply_named(
            &mut keys,
            plan_rotation(&[], at(0), &policy(), Trigger::Schedule),
        );
        let mut p = policy();
        p.algorithms = vec![Algorithm::EdDsa];
        let plan = plan_rotation(&keys, at(60), &p, Trigger::Operator);
        let created: Vec<(Algorithm, i64)> =
            plan.create.iter().map(|k| (k.alg, k.generation)).collect();
        assert_eq!(
            created,
            [(Algorithm::EdDsa, 1), (Algorithm::EdDsa, 2)],
            "RS256, no longer configured, gets no new key"
        );
        assert_eq!(next_rotation_at(&keys, &p), None, "no EdDSA key yet");
    }
}
