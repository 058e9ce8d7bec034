//! The operator subcommands (`jwks-server keys …`). They work on the store
//! directly, so they are safe while servers run: running servers pick up
//! what changed within --reload-every.

use std::{fmt::Write as _, sync::Arc};

use crate::{
    config::{Config, KeysCommand},
    keys::{KeyMeta, policy::Trigger, state_of},
    startup::{StartupError, load_keks, open_store, start_service},
    store::KeyStore,
    time::Timestamp,
};

/// Runs one `keys` subcommand and returns what to print.
pub async fn run(config: &Config, command: &KeysCommand) -> Result<String, StartupError> {
    let now = Timestamp::now();
    match command {
        KeysCommand::List => {
            // Listing needs no KEK: the schedule and public halves are in the clear.
            let store = open_store(config).await?;
            let keys = store.load().await.map_err(|source| StartupError::Store {
                url: config.store.to_string(),
                source,
            })?;
            let metas: Vec<KeyMeta> = keys.into_iter().map(|k| k.meta).collect();
            Ok(render_table(&metas, now))
        }
        KeysCommand::Rotate => {
            let service = start_service(config).await?;
            let created = service
                .rotate(Trigger::Operator, now)
                .await
                .map_err(|e| StartupError::Serve(e.chain()))?;
            let mut out = String::new();
            for key in &created {
                let _ = writeln!(
                    out,
                    "created {} (generation {}): published now, signs from {}",
                    key.kid, key.generation, key.activates_at
                );
            }
            let metas: Vec<KeyMeta> = service
                .key_statuses(now)
                .into_iter()
                .map(|k| k.meta)
                .collect();
            out.push_str(&render_table(&metas, now));
            Ok(out)
        }
        KeysCommand::Reseal => {
            let keks = load_keks(config)?;
            let store = Arc::new(open_store(config).await?);
            let sealing = keks.sealing_id().to_owned();
            let count = store
                .reseal(&|key| {
                    if key.sealed.kek_id == sealing {
                        return Ok(None);
                    }
                    let mut der = keks.open(&key.meta.kid, &key.sealed)?;
                    let sealed = keks.seal(&key.meta.kid, &der);
                    zeroize::Zeroize::zeroize(&mut der);
                    sealed.map(Some)
                })
                .await
                .map_err(|source| StartupError::Store {
                    url: config.store.to_string(),
                    source,
                })?;
            Ok(format!(
                "re-sealed {count} key(s) under key-encryption key {sealing}; \
                 older KEKs can be removed once every server has restarted with this one first\n"
            ))
        }
    }
}

/// `jwks-server hash-secret`: reads one secret line from standard input.
pub fn hash_secret_from_stdin() -> Result<String, StartupError> {
    let mut secret = String::new();
    std::io::stdin()
        .read_line(&mut secret)
        .map_err(|e| StartupError::Serve(format!("cannot read the secret from stdin: {e}")))?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(StartupError::Serve("no secret on standard input".into()));
    }
    Ok(crate::access::hash_secret(secret)?)
}

fn render_table(keys: &[KeyMeta], now: Timestamp) -> String {
    let mut sorted: Vec<&KeyMeta> = keys.iter().collect();
    sorted.sort_by(|a, b| KeyMeta::newest_first(a, b));
    let mut out = format!(
        "{:<44} {:>4} {:<9} {:<20} {:<20} {:<20} {:<20}\n",
        "KID", "GEN", "STATE", "PUBLISHED", "SIGNS FROM", "SIGNS UNTIL", "EXPIRES"
    );
    for key in sorted {
        let _ = writeln!(
            out,
            "{:<44} {:>4} {:<9} {:<20} {:<20} {:<20} {:<20}",
            key.kid,
            key.generation,
            state_of(key, keys, now).as_str(),
            key.published_at.to_string(),
            key.activates_at.to_string(),
            key.retires_at.to_string(),
            key.expires_at.to_string(),
        );
    }
    out
}
