//! The bounded admission of argon2 secret checks ([`SecretChecks`]): one per
//! core at a time, a short queue beyond that, and a budget per source address
//! kept in a [`RateLimits`]. Whether a secret is right is the client
//! registry's question; this module only decides whether a check may run.

use std::{fmt, net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    Quota,
    clock::{Clock, DefaultClock},
};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::rate_limits::{AddressGroup, RateLimits};

/// Guards the slow path of client authentication, where a secret the server
/// has not seen before is checked with argon2 (tens of milliseconds and
/// ~19 MiB each, on purpose). Legitimate clients take that path once per
/// process; a stream of wrong secrets takes it every time, so it is bounded
/// three ways: one check per core at a time, a short queue beyond that
/// (callers past it are told to retry), and a budget of checks per source
/// address ([`SecretChecks::PER_ADDRESS_BURST`], refilled at
/// [`SecretChecks::PER_ADDRESS_PER_MINUTE`] a minute). Answers from the cache
/// are never limited, so a proven client keeps working during a flood.
pub struct SecretChecks<C: Clock = DefaultClock> {
    running: Semaphore,
    admitted: Semaphore,
    per_address: RateLimits<C>,
}

/// Why a secret check was not run.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckRefused {
    /// This address has used its budget; it may try again after the wait.
    AddressOverBudget(Duration),
    /// The queue of checks is full (the server is under a flood).
    Busy,
}

/// Permission to run one secret check; hold it while the check runs.
#[derive(Debug)]
pub struct CheckPermit<'a> {
    _running: SemaphorePermit<'a>,
    _admitted: SemaphorePermit<'a>,
}

impl<C: Clock> fmt::Debug for SecretChecks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretChecks")
            .field("running", &self.running.available_permits())
            .field("admitted", &self.admitted.available_permits())
            .finish_non_exhaustive()
    }
}

impl SecretChecks {
    /// Uncached secret checks an address may make at once.
    pub const PER_ADDRESS_BURST: u32 = 20;
    /// How fast an address's budget refills.
    pub const PER_ADDRESS_PER_MINUTE: u32 = 30;
    /// Checks that may wait for a core, per core.
    const QUEUE_PER_CORE: usize = 16;

    /// Admission for a machine with `cores` cores, on the real clock.
    pub fn new(cores: usize) -> Self {
        Self::with_clock(cores, DefaultClock::default())
    }
}

impl<C: Clock> SecretChecks<C> {
    /// [`SecretChecks::new`] with address budgets on the given clock.
    pub fn with_clock(cores: usize, clock: C) -> Self {
        let cores = cores.max(1);
        let per_minute =
            NonZeroU32::new(SecretChecks::PER_ADDRESS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(SecretChecks::PER_ADDRESS_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            running: Semaphore::new(cores),
            admitted: Semaphore::new(cores * (1 + SecretChecks::QUEUE_PER_CORE)),
            per_address: RateLimits::from_quota(
                Quota::per_minute(per_minute).allow_burst(burst),
                clock,
            ),
        }
    }

    /// Waits for a core to check a secret from `addr` (unknown for in-process
    /// callers, which only the queue bounds).
    ///
    /// # Errors
    ///
    /// [`CheckRefused`] when `addr` has spent its budget of checks, or the
    /// queue for a core is full.
    pub async fn admit(&self, addr: Option<IpAddr>) -> Result<CheckPermit<'_>, CheckRefused> {
        if let Some(addr) = addr {
            self.per_address
                .check(&AddressGroup::from(addr).to_string())
                .map_err(CheckRefused::AddressOverBudget)?;
        }
        let admitted = self
            .admitted
            .try_acquire()
            .map_err(|_| CheckRefused::Busy)?;
        let running = self
            .running
            .acquire()
            .await
            .map_err(|_| CheckRefused::Busy)?;
        Ok(CheckPermit {
            _running: running,
            _admitted: admitted,
        })
    }

    /// Forgets addresses whose budgets are full again (bounded memory).
    pub fn forget_idle(&self) {
        self.per_address.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        pin::pin,
        task::{Context, Poll, Waker},
    };

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn with_fake_clock(cores: usize) -> (SecretChecks<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (SecretChecks::with_clock(cores, clock.clone()), clock)
    }

    /// Polls `admit` once: a full queue must refuse at once, never wait.
    fn admit_now<C: Clock>(
        checks: &SecretChecks<C>,
    ) -> Poll<Result<CheckPermit<'_>, CheckRefused>> {
        let mut admit = pin!(checks.admit(None));
        admit.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn one_ipv6_64_shares_one_secret_check_budget() {
        let checks = SecretChecks::new(1);
        for host in 0..SecretChecks::PER_ADDRESS_BURST {
            let addr: IpAddr = format!("2001:db8::{:x}", host + 1).parse().unwrap();
            drop(checks.admit(Some(addr)).await.unwrap());
        }
        let fresh_host: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(matches!(
            checks.admit(Some(fresh_host)).await,
            Err(CheckRefused::AddressOverBudget(_))
        ));
        let next_net: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(checks.admit(Some(next_net)).await.is_ok());
    }

    #[tokio::test]
    async fn secret_checks_are_bounded_per_address_and_by_a_queue() {
        let (checks, _clock) = with_fake_clock(1);
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..SecretChecks::PER_ADDRESS_BURST {
            drop(checks.admit(Some(attacker)).await.unwrap());
        }
        assert_eq!(
            checks.admit(Some(attacker)).await.err(),
            Some(CheckRefused::AddressOverBudget(Duration::from_secs(2))),
            "30 a minute: the next check in 2 s"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let running = checks.admit(Some(other)).await.unwrap();

        // With the one core busy, callers queue up to the bound, then are refused.
        let queue = SecretChecks::QUEUE_PER_CORE;
        let waiting: Vec<_> = (0..queue)
            .map(|_| {
                let admitted = checks.admitted.try_acquire().unwrap();
                assert!(checks.running.try_acquire().is_err(), "the core is busy");
                admitted
            })
            .collect();
        assert!(
            matches!(admit_now(&checks), Poll::Ready(Err(CheckRefused::Busy))),
            "the queue is full, and a full queue refuses at once"
        );
        drop(waiting);
        drop(running);
        assert!(checks.admit(None).await.is_ok(), "and drains");
    }

    #[tokio::test]
    async fn an_address_over_budget_may_check_again_once_it_refills() {
        let (checks, clock) = with_fake_clock(1);
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..SecretChecks::PER_ADDRESS_BURST {
            drop(checks.admit(Some(attacker)).await.unwrap());
        }
        assert!(checks.admit(Some(attacker)).await.is_err());

        clock.advance(Duration::from_secs(2));
        drop(checks.admit(Some(attacker)).await.unwrap());
        assert!(
            checks.admit(Some(attacker)).await.is_err(),
            "one check per 2 s"
        );
    }

    #[test]
    fn each_core_runs_one_check_at_a_time() {
        for (cores, running) in [(0, 1), (1, 1), (4, 4)] {
            let checks = SecretChecks::new(cores);
            assert_eq!(checks.running.available_permits(), running, "{cores} cores");
            assert_eq!(
                checks.admitted.available_permits(),
                running * (1 + SecretChecks::QUEUE_PER_CORE),
                "{cores} cores"
            );
        }
    }

    #[tokio::test]
    async fn debug_output_shows_free_cores_and_queue_places_but_no_address() {
        let (checks, _clock) = with_fake_clock(1);
        let permit = checks
            .admit(Some("192.0.2.1".parse().unwrap()))
            .await
            .unwrap();
        let shown = format!("{checks:?}");
        assert!(shown.contains("running: 0"), "{shown}");
        assert!(shown.contains("admitted: 16"), "{shown}");
        assert!(!shown.contains("192.0.2.1"), "{shown}");
        drop(permit);
    }

    #[tokio::test]
    async fn addresses_are_forgotten_once_their_budget_is_full_again() {
        let (checks, clock) = with_fake_clock(1);
        for addr in ["192.0.2.1", "192.0.2.2", "2001:db8::1"] {
            drop(checks.admit(Some(addr.parse().unwrap())).await.unwrap());
        }
        drop(checks.admit(None).await.unwrap());
        assert_eq!(
            checks.per_address.remembered(),
            3,
            "in-process callers have no budget"
        );

        checks.forget_idle();
        assert_eq!(checks.per_address.remembered(), 3, "budgets not full yet");

        clock.advance(Duration::from_secs(60));
        checks.forget_idle();
        assert_eq!(checks.per_address.remembered(), 0);
    }
}
