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
    /// Whether test tokens are issued: `expired=true` and every other
    /// `defect=NAME` of the catalogue, all or none.
    pub test_tokens: bool,
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
        test_tokens: bool,
        clients: Option<Arc<ClientRegistry>>,
        rate_limits: Option<RateLimits>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            test_tokens,
            clients,
            rate_limits,
            secret_checks: SecretChecks::new(cores),
        }
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::new(true, None, None)
    }
}
