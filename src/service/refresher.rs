//! The background refresher: runs the rotation schedule and reloads the keys
//! every reload interval (sooner when the key set is due to change), and the
//! supervisor that restarts it should it panic or end, reporting that in
//! health until a restarted one completes a refresh.
//!
//! What a refresh does is `lifecycle`'s; the clock it reads and where it
//! reports (gRPC health, metrics) are handed in by the edge that spawns it.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{Health, KeyService, StoreHealth};
use crate::{keys::policy::Trigger, time::Timestamp};

/// What the background refresher tells the rest of the process: the edge
/// keeps gRPC health and metrics in step with it.
#[async_trait::async_trait]
pub trait RefreshObserver: Send + Sync + 'static {
    /// Health as of the refresh just done (or of a refresher that just died).
    async fn health_changed(&self, health: &Health);
    /// A dead refresher is being restarted.
    fn refresher_restarted(&self);
}

impl KeyService {
    /// Keeps the key refresher running until `stop`: it runs the rotation
    /// schedule and reloads keys (see `refresh_keys`), reading the time from
    /// `clock`. If it panics or ends while not stopping, health reports it
    /// (degraded while a key signs), `observer` hears of the restart, and a
    /// new refresher starts after a backoff: 1 s, doubling up to a minute,
    /// back to 1 s once a refresher has lived longer than that.
    pub async fn run_refresher<O: RefreshObserver>(
        self,
        observer: O,
        stop: CancellationToken,
        clock: fn() -> Timestamp,
    ) {
        const FIRST_BACKOFF: Duration = Duration::from_secs(1);
        const MAX_BACKOFF: Duration = Duration::from_secs(60);
        let observer = Arc::new(observer);
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.faults().refresher_started(clock());
            let started = tokio::time::Instant::now();
            let outcome = tokio::spawn(self.clone().refresh_keys(
                Arc::clone(&observer),
                stop.clone(),
                clock,
            ))
            .await;
            if stop.is_cancelled() {
                return;
            }
            let reason = match outcome {
                Ok(()) => "the key refresher ended".to_owned(),
                Err(err) if err.is_panic() => {
                    let payload = err.into_panic();
                    format!("the key refresher panicked: {}", panic_message(&*payload))
                }
                Err(err) => format!("the key refresher was cancelled: {err}"),
            };
            if started.elapsed() > MAX_BACKOFF {
                backoff = FIRST_BACKOFF;
            }
            tracing::error!(%reason, restart_in = ?backoff, "key refresher died; restarting it");
            self.faults().refresher_died(clock(), reason);
            // The dead refresher kept health current; do it until the next one runs.
            observer.health_changed(&self.health(clock())).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            observer.refresher_restarted();
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The background loop: runs the rotation schedule and reloads keys every
    /// reload interval (sooner when the key set is due to change), telling
    /// `observer` the health after each round.
    async fn refresh_keys<O: RefreshObserver>(
        self,
        observer: Arc<O>,
        stop: CancellationToken,
        clock: fn() -> Timestamp,
    ) {
        // However late a round ends, the next one waits at least this long.
        const MIN_PAUSE: Duration = Duration::from_millis(50);
        let reload_every = self.policy().reload_every;
        let mut failed = false;
        let mut round_started = tokio::time::Instant::now();
        loop {
            let now = clock();
            // After a failure, wait a whole interval: a due rotation that
            // cannot reach the store must not turn into a tight retry loop.
            let wait = if failed {
                reload_every
            } else {
                reload_every
                    .min(now.until(self.next_deadline()))
                    .max(Duration::from_millis(200))
            };
            // The interval runs from the start of the last round, not its
            // end: the publication rule counts on every replica reloading
            // within the reload interval, and the time a round takes (store
            // calls, key generation, a busy machine) must not stretch it.
            let wake = (round_started + wait).max(tokio::time::Instant::now() + MIN_PAUSE);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            round_started = tokio::time::Instant::now();
            let now = clock();
            let result = self.rotate(Trigger::Schedule, now).await;
            failed = result.is_err();
            if let Err(err) = result {
                if self.health(now).store == StoreHealth::Reachable {
                    tracing::warn!(error = %err.chain(), "key refresh failed; keeping the keys held");
                } else {
                    // The outage itself was logged once, when it began.
                    tracing::debug!(error = %err.chain(), "key refresh failed; store unreachable");
                }
            }
            self.reload_revocations(clock()).await;
            self.check_token(clock()).await;
            observer.health_changed(&self.health(clock())).await;
            self.forget_idle_callers();
            self.faults().refreshed(clock());
        }
    }
}

/// The text a panic was raised with, when it was text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}
