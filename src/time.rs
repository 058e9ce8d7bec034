//! Wall-clock instants as whole Unix seconds, the resolution of JWT claims.
//!
//! Every decision that depends on time takes a [`Timestamp`] argument instead of
//! reading the clock, so tests pass fixed instants rather than sleeping. Only the
//! edges (transports, the background loop, the CLI) call [`Timestamp::now`].

use std::{
    fmt,
    ops::{Add, Sub},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// An instant, in whole seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `seconds` after (or before, if negative) the epoch.
    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    /// The current wall-clock time (a clock before 1970 reads as the epoch).
    pub fn now() -> Self {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self(i64::try_from(seconds).unwrap_or(i64::MAX))
    }

    /// Seconds since the Unix epoch, as JWT `NumericDate`s count (RFC 7519 §2).
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// How long from `self` until `later`; zero when `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_secs(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

fn whole_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(whole_seconds(d)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(whole_seconds(d)))
    }
}

/// 9999-12-31T23:59:59Z, the last instant RFC 3339 can write.
const LAST_RFC3339: i64 = 253_402_300_799;

impl fmt::Display for Timestamp {
    /// RFC 3339 for years 1970 to 9999; any other instant (only a corrupt row
    /// could hold one) as `@SECONDS`, never a panic.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match u64::try_from(self.0) {
            Ok(s) if self.0 <= LAST_RFC3339 => {
                let t = UNIX_EPOCH + Duration::from_secs(s);
                write!(f, "{}", humantime::format_rfc3339_seconds(t))
            }
            _ => write!(f, "@{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_until_never_goes_negative() {
        let t = Timestamp::from_unix(100);
        assert_eq!((t + Duration::from_secs(5)).unix(), 105);
        assert_eq!((t - Duration::from_secs(5)).unix(), 95);
        assert_eq!(t.until(Timestamp::from_unix(160)), Duration::from_secs(60));
        assert_eq!(t.until(Timestamp::from_unix(40)), Duration::ZERO);
        assert_eq!(
            (Timestamp::from_unix(i64::MAX) + Duration::MAX).unix(),
            i64::MAX
        );
    }

    #[test]
    fn displays_as_rfc3339() {
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn any_instant_displays_without_panicking() {
        assert_eq!(
            Timestamp::from_unix(LAST_RFC3339).to_string(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            Timestamp::from_unix(LAST_RFC3339 + 1).to_string(),
            "@253402300800"
        );
        assert_eq!(
            Timestamp::from_unix(i64::MAX).to_string(),
            format!("@{}", i64::MAX)
        );
        assert_eq!(Timestamp::from_unix(-1).to_string(), "@-1");
    }
}
