//! Whether the PKCS#11 token holding signing keys answers: the refresher
//! asks it once a round (which also brings it back after it went away, so
//! signing resumes without waiting for a request), and health reports it
//! as the `token_unavailable` fault while it is away.
//!
//! Talking to the token is `keys::pkcs11`'s; showing health is the edges'.

use std::sync::Arc;

use super::KeyService;
use crate::time::Timestamp;

impl KeyService {
    /// Records whether the token is logged in (no call into the module).
    pub(super) fn note_token(&self, now: Timestamp) {
        let Some(token) = &self.inner.token else {
            return;
        };
        match token.lost() {
            Some(reason) if !token.is_connected() => {
                self.inner.faults.token_unavailable(now, reason);
            }
            _ => self.inner.faults.token_available(),
        }
    }

    /// Asks the token whether it answers, reconnecting if it went away, on
    /// a blocking thread, and records the answer for health.
    pub(super) async fn check_token(&self, now: Timestamp) {
        let Some(token) = self.inner.token.clone() else {
            return;
        };
        let checked = tokio::task::spawn_blocking({
            let token = Arc::clone(&token);
            move || token.check()
        })
        .await;
        match checked {
            Ok(Ok(())) => self.inner.faults.token_available(),
            Ok(Err(err)) => self.inner.faults.token_unavailable(now, err.to_string()),
            Err(err) => self
                .inner
                .faults
                .token_unavailable(now, format!("the token check failed: {err}")),
        }
    }
}
