//! What has gone wrong in the background and not yet recovered: key writes
//! (rotations) that fail, and a key refresher that died or stalled.
//!
//! The service records these as they happen; health reports them (`degraded`
//! while a key can still sign) until they clear, so a failing disk or a dead
//! task shows before it becomes an outage. Metrics read the counts here.

use std::{
    fmt,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::time::Timestamp;

/// Which part of the background upkeep is failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Creating (or pruning) keys in the store fails.
    RotationFailing,
    /// The key refresher died and is being restarted.
    RefresherRestarting,
    /// The key refresher runs but has completed no refresh for too long.
    RefresherStalled,
    /// The PKCS#11 token holding signing keys cannot be reached: its keys
    /// do not sign until it is back.
    TokenUnavailable,
}

impl FaultKind {
    /// Its name in `/health` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RotationFailing => "rotation_failing",
            Self::RefresherRestarting => "refresher_restarting",
            Self::RefresherStalled => "refresher_stalled",
            Self::TokenUnavailable => "token_unavailable",
        }
    }
}

/// A fault that has not cleared yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which fault.
    pub kind: FaultKind,
    /// When it began (the first failure of a run of failures).
    pub since: Timestamp,
    /// The last error.
    pub error: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FaultKind::RotationFailing => "key rotation failing",
            FaultKind::RefresherRestarting => "key refresher restarting",
            FaultKind::RefresherStalled => "key refresher stalled",
            FaultKind::TokenUnavailable => "PKCS#11 token unavailable",
        };
        write!(f, "{what} since {}: {}", self.since, self.error)
    }
}

/// The faults of one service. Shared through the service's `Arc`.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
    rotation_failures: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    rotation: Option<(Timestamp, String)>,
    refresher_down: Option<(Timestamp, String)>,
    token: Option<(Timestamp, String)>,
    /// When the refresher last completed a refresh (or started); `None` while
    /// no refresher runs (operator commands, benchmarks).
    last_refresh: Option<Timestamp>,
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A rotation that had something to write failed.
    pub fn rotation_failed(&self, now: Timestamp, error: String) {
        self.rotation_failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        let since = state.rotation.as_ref().map_or(now, |(since, _)| *since);
        state.rotation = Some((since, error));
    }

    /// A rotation wrote what it had to, or had nothing left to write.
    pub fn rotation_succeeded(&self) {
        self.state().rotation = None;
    }

    /// The PKCS#11 token cannot be reached (`error` says why).
    pub fn token_unavailable(&self, now: Timestamp, error: String) {
        let mut state = self.state();
        let since = state.token.as_ref().map_or(now, |(since, _)| *since);
        state.token = Some((since, error));
    }

    /// The PKCS#11 token answers (again).
    pub fn token_available(&self) {
        self.state().token = None;
    }

    /// Rotations that failed since the process started.
    pub fn rotation_failures(&self) -> u64 {
        self.rotation_failures.load(Ordering::Relaxed)
    }

    /// A refresher is (re)starting: staleness counts from here.
    pub fn refresher_started(&self, now: Timestamp) {
        let mut state = self.state();
        if state.last_refresh.is_none() {
            state.last_refresh = Some(now);
        }
    }

    /// The refresher died (panicked or ended) and will be restarted.
    pub fn refresher_died(&self, now: Timestamp, reason: String) {
        let mut state = self.state();
        let since = state
            .refresher_down
            .as_ref()
            .map_or(now, |(since, _)| *since);
        state.refresher_down = Some((since, reason));
    }

    /// The refresher completed one refresh (whatever its outcome).
    pub fn refreshed(&self, now: Timestamp) {
        let mut state = self.state();
        state.last_refresh = Some(now);
        state.refresher_down = None;
    }

    /// The faults active at `now`; a refresher that has completed no refresh
    /// for `stall_after` counts as stalled.
    pub fn active(&self, now: Timestamp, stall_after: Duration) -> Vec<Fault> {
        let state = self.state();
        let mut faults = Vec::new();
        if let Some((since, error)) = &state.rotation {
            faults.push(Fault {
                kind: FaultKind::RotationFailing,
                since: *since,
                error: error.clone(),
            });
        }
        if let Some((since, error)) = &state.token {
            faults.push(Fault {
                kind: FaultKind::TokenUnavailable,
                since: *since,
                error: error.clone(),
            });
        }
        if let Some((since, error)) = &state.refresher_down {
            faults.push(Fault {
                kind: FaultKind::RefresherRestarting,
                since: *since,
                error: error.clone(),
            });
        } else if let Some(last) = state.last_refresh
            && last.until(now) > stall_after
        {
            faults.push(Fault {
                kind: FaultKind::RefresherStalled,
                since: last,
                error: format!(
                    "no key refresh completed for {}s",
                    last.until(now).as_secs()
                ),
            });
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(30);

    #[test]
    fn a_run_of_rotation_failures_keeps_its_start_and_clears_on_success() {
        let faults = Faults::default();
        let t0 = Timestamp::from_unix(1_000);
        faults.rotation_failed(t0, "disk full".into());
        faults.rotation_failed(t0 + Duration::from_secs(5), "still full".into());
        let active = faults.active(t0 + Duration::from_secs(6), STALL);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].kind, FaultKind::RotationFailing);
        assert_eq!(active[0].since, t0);
        assert_eq!(active[0].error, "still full");
        assert_eq!(faults.rotation_failures(), 2);

        faults.rotation_succeeded();
        assert!(faults.active(t0 + Duration::from_secs(7), STALL).is_empty());
        assert_eq!(faults.rotation_failures(), 2, "a counter never goes down");
    }

    #[test]
    fn a_refresher_is_stalled_only_once_it_ran_and_then_went_quiet() {
        let faults = Faults::default();
        let t0 = Timestamp::from_unix(1_000);
        assert!(
            faults.active(t0 + STALL * 10, STALL).is_empty(),
            "no refresher, no stall"
        );

        faults.refresher_started(t0);
        assert!(faults.active(t0 + STALL, STALL).is_empty());
        let stalled = faults.active(t0 + STALL + Duration::from_secs(1), STALL);
        assert_eq!(stalled[0].kind, FaultKind::RefresherStalled);
        assert_eq!(stalled[0].since, t0);

        faults.refreshed(t0 + STALL);
        assert!(
            faults
                .active(t0 + STALL + Duration::from_secs(1), STALL)
                .is_empty()
        );
    }

    #[test]
    fn a_dead_refresher_is_reported_until_a_restarted_one_completes_a_refresh() {
        let faults = Faults::default();
        let t0 = Timestamp::from_unix(1_000);
        faults.refresher_started(t0);
        faults.refresher_died(t0, "panicked".into());
        faults.refresher_started(t0 + Duration::from_secs(1));
        let active = faults.active(t0 + Duration::from_secs(2), STALL);
        assert_eq!(active[0].kind, FaultKind::RefresherRestarting);
        faults.refreshed(t0 + Duration::from_secs(3));
        assert!(faults.active(t0 + Duration::from_secs(3), STALL).is_empty());
    }
}
