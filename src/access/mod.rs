//! Who may issue tokens, and how often: opt-in client authentication (a file
//! of client ids with argon2 secret hashes) and opt-in rate limiting, bundled
//! as the [`Access`] the service consults for every token, whichever door the
//! request came through.
//!
//! Both are off by default (anyone who can reach `/auth` gets a token, which
//! is what teams testing their verifiers want). The parts, one file each:
//!
//! - [`credentials`]: what a caller presents, and reading it from a header.
//! - [`clients`]: the client registry: the clients file, secret hashes, the
//!   cache of proven secrets.
//! - [`secret_checks`]: the bounded admission of argon2 checks.
//! - [`rate_limits`]: token buckets per client or address, IPv6 /64 grouping.
//!
//! The items are re-exported here, so callers name `crate::access::Caller`.

pub mod clients;
pub mod credentials;
pub mod rate_limits;
pub mod secret_checks;

use std::sync::Arc;

pub use clients::{AuthFailure, Client, ClientRegistry, ClientsError, hash_secret};
pub use credentials::{Caller, Credentials};
pub use rate_limits::{AddressGroup, RateLimits};
pub use secret_checks::{CheckPermit, CheckRefused, SecretChecks};

/// Who may issue tokens and how often. The default lets anyone issue any
/// token, as the original service did.
#[derive(Debug)]
pub struct Access {
    /// Whether `expired=true` is honoured.
    pub allow_expired: bool,
    /// Whether the other defective test tokens (`defect=NAME`) are issued.
    pub allow_defects: bool,
    /// When set, issuing requires client credentials.
    pub clients: Option<Arc<ClientRegistry>>,
    /// When set, issuance is rate limited per client (or per address).
    pub rate_limits: Option<RateLimits>,
    /// Bounds the argon2 checks of secrets the cache cannot answer.
    pub secret_checks: SecretChecks,
}

impl Access {
    /// The bundle from the settings; secret checks get one slot per core of
    /// this machine.
    pub fn new(
        allow_expired: bool,
        clients: Option<Arc<ClientRegistry>>,
        rate_limits: Option<RateLimits>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            allow_expired,
            allow_defects: allow_expired,
            clients,
            rate_limits,
            secret_checks: SecretChecks::new(cores),
        }
    }
}

impl Access {
    /// The same bundle with the defective test tokens switched on or off
    /// (`new` makes them follow `allow_expired`).
    #[must_use]
    pub fn with_defects(mut self, allow_defects: bool) -> Self {
        self.allow_defects = allow_defects;
        self
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::new(true, None, None)
    }
}
