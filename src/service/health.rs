//! Store health and the health report: every store call goes through
//! [`KeyService::store_call`], which bounds it in time and records whether the
//! store answered; [`KeyService::health`] puts that together with whether a
//! key can sign and the background faults (see `crate::faults`).
//!
//! How health is shown (`/health`, `grpc.health.v1`, metrics) is the edges'.

use std::{future::Future, sync::MutexGuard, time::Duration};

use super::KeyService;
use crate::{error::Error, faults::Fault, store::StoreError, time::Timestamp};

/// A store call that takes longer than this counts as the store being down.
pub(super) const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the store answered the last time it was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// It answered.
    Reachable,
    /// Unreachable since the given instant, with the last error.
    Unreachable {
        /// The first failure of this outage.
        since: Timestamp,
        /// The last error, for operators.
        error: String,
    },
}

/// What `/health` and gRPC health report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// A key of every configured algorithm can sign right now.
    pub can_sign: bool,
    /// Whether the store answered the last time it was asked.
    pub store: StoreHealth,
    /// The last instant this replica can sign with the keys it holds, if the
    /// store stays away.
    pub signing_until: Option<Timestamp>,
    /// Background faults not yet cleared (failing rotations, a dead or
    /// stalled refresher): while a key signs, health is degraded.
    pub faults: Vec<Fault>,
}

impl KeyService {
    /// Health at `now`: whether we can sign, and whether the store answers.
    pub fn health(&self, now: Timestamp) -> Health {
        self.note_token(now);
        let ring = self.inner.ring.load();
        let algorithms = self.algorithms();
        // Each algorithm signs until its newest key retires; the service
        // serves every request until the first of them stops.
        let signing_until = algorithms
            .iter()
            .map(|alg| {
                ring.keys_of(*alg)
                    .iter()
                    .filter(|k| k.meta.is_published(now))
                    .map(|k| k.meta.retires_at)
                    .max()
            })
            .collect::<Option<Vec<Timestamp>>>()
            .and_then(|ends| ends.into_iter().min());
        Health {
            can_sign: algorithms
                .iter()
                .all(|alg| ring.signer_for(*alg, now).is_some()),
            store: self.lock_store_health().clone(),
            signing_until: signing_until.filter(|until| *until > now),
            faults: self.inner.faults.active(now, self.stall_after()),
        }
    }

    /// How long without a completed refresh means the refresher is stuck: a
    /// few reload intervals, plus the store calls one refresh may wait on.
    fn stall_after(&self) -> Duration {
        self.inner.policy.reload_every * 3 + STORE_TIMEOUT * 3
    }

    fn lock_store_health(&self) -> MutexGuard<'_, super::StoreHealth> {
        match self.inner.store_health.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs a store call at `now` with a timeout, recording whether the store
    /// answered. An outage is logged once, when it begins, and dated `now`.
    pub(super) async fn store_call<T>(
        &self,
        now: Timestamp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Error> {
        let result = match tokio::time::timeout(STORE_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(STORE_TIMEOUT)),
        };
        let mut health = self.lock_store_health();
        match &result {
            Ok(_) => {
                if let StoreHealth::Unreachable { since, .. } = &*health {
                    tracing::info!(down_since = %since, "store reachable again");
                }
                *health = StoreHealth::Reachable;
            }
            Err(err) if err.is_unreachable() => {
                if *health == StoreHealth::Reachable {
                    // Logged once per outage, not once per attempt.
                    tracing::warn!(error = %err, "store unreachable; serving the keys held in memory");
                    *health = StoreHealth::Unreachable {
                        since: now,
                        error: unreachable_cause(err),
                    };
                }
            }
            Err(_) => {}
        }
        drop(health);
        result.map_err(Error::internal)
    }
}

/// The cause of an outage as health shows it (without the "store
/// unreachable" every such error starts with).
fn unreachable_cause(err: &StoreError) -> String {
    match err {
        StoreError::Unavailable(cause) => cause.to_string(),
        other => other.to_string(),
    }
}
