//! Token-bucket budgets per key ([`RateLimits`]: a client id, or a peer
//! address without client auth) and the unit an address budget counts
//! ([`AddressGroup`]: an IPv4 address, or an IPv6 /64).
//!
//! The clock is a type parameter: production uses governor's
//! [`DefaultClock`]; tests hand in a [`governor::clock::FakeRelativeClock`] and
//! advance it instead of sleeping for a bucket to refill. What a budget is
//! spent on (tokens, secret checks) is decided by the callers.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

/// Per-key token buckets (a client id, or a peer address without client auth).
pub struct RateLimits<C: Clock = DefaultClock> {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<C::Instant>>,
}

impl<C: Clock> fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    /// `per_second` tokens a second, bursts of up to `burst`, on the real clock.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> RateLimits<C> {
    /// [`RateLimits::new`] on the given clock.
    pub fn with_clock(per_second: NonZeroU32, burst: NonZeroU32, clock: C) -> Self {
        Self::from_quota(Quota::per_second(per_second).allow_burst(burst), clock)
    }

    pub(crate) fn from_quota(quota: Quota, clock: C) -> Self {
        Self {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
        }
    }

    /// `Err(wait)` when `key` must wait before its next token.
    ///
    /// # Errors
    ///
    /// How long `key` must wait, when its budget is spent.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets keys whose buckets are full again (bounded memory). A key
    /// still short of tokens is kept, so forgetting never refills a budget.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How many keys have a bucket in memory now (what
    /// [`Self::forget_idle`] bounds).
    pub fn remembered(&self) -> usize {
        self.limiter.len()
    }
}

/// The unit a per-address budget counts: an IPv4 address, or the /64 an IPv6
/// address is in. One IPv6 host usually holds a whole /64 (SLAAC, privacy
/// addresses), so counting single IPv6 addresses would give each attacker
/// 2^64 budgets. An IPv4-mapped IPv6 address (a dual-stack listener) is its
/// IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressGroup {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The network address of a /64.
    V6Net64(Ipv6Addr),
}

impl From<IpAddr> for AddressGroup {
    fn from(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                Self::V6Net64(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)))
            }
        }
    }
}

impl fmt::Display for AddressGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6Net64(net) => write!(f, "{net}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn per_second(rate: u32, burst: u32) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(
            NonZeroU32::new(rate).unwrap(),
            NonZeroU32::new(burst).unwrap(),
            clock.clone(),
        );
        (limits, clock)
    }

    #[test]
    fn rate_limits_allow_a_burst_then_say_how_long_to_wait() {
        let (limits, clock) = per_second(1, 2);
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_ok());
        assert_eq!(limits.check("a"), Err(Duration::from_secs(1)));
        assert!(limits.check("b").is_ok(), "keys are independent");

        clock.advance(Duration::from_millis(400));
        assert_eq!(
            limits.check("a"),
            Err(Duration::from_millis(600)),
            "the wait counts down with the clock"
        );
    }

    #[test]
    fn a_spent_budget_refills_at_the_rate() {
        let (limits, clock) = per_second(2, 2);
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_err());

        clock.advance(Duration::from_millis(500));
        assert!(limits.check("a").is_ok(), "one token per half second");
        assert!(limits.check("a").is_err());

        clock.advance(Duration::from_secs(60));
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_ok(), "refilled up to the burst");
        assert!(limits.check("a").is_err(), "and no further");
    }

    #[test]
    fn idle_keys_are_forgotten_once_their_budget_is_full_again() {
        let (limits, clock) = per_second(1, 2);
        for key in ["a", "a", "a", "b"] {
            let _ = limits.check(key);
        }
        assert_eq!(limits.remembered(), 2);

        limits.forget_idle();
        assert_eq!(limits.remembered(), 2, "neither budget is full yet");
        assert!(
            limits.check("a").is_err(),
            "forgetting never refills a spent budget"
        );

        // Two tokens at one a second are back after 2 s; governor forgets a
        // bucket one refill interval after that.
        clock.advance(Duration::from_secs(3));
        limits.forget_idle();
        assert_eq!(limits.remembered(), 0, "full budgets need no memory");
    }

    #[test]
    fn debug_output_names_no_caller() {
        let (limits, _clock) = per_second(1, 1);
        let _ = limits.check("192.0.2.1");
        let shown = format!("{limits:?}");
        assert!(shown.starts_with("RateLimits"), "{shown}");
        assert!(!shown.contains("192.0.2.1"), "{shown}");
    }

    #[test]
    fn budgets_group_ipv6_by_64_and_read_mapped_ipv4_as_ipv4() {
        let group = |text: &str| AddressGroup::from(text.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(group("192.0.2.7"), "192.0.2.7");
        assert_eq!(group("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(
            group("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("::1"), "::/64");
    }
}
