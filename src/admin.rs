//! The operator subcommands (`jwks-server keys …`). They work on the store
//! directly, so they are safe while servers run: running servers pick up
//! what changed within --reload-every. They never create a store: a path
//! that holds none is an error, so a typo cannot leave an empty store behind.

use std::{collections::HashMap, fmt::Write as _, sync::Arc};

use crate::{
    config::{Config, KeysCommand},
    keys::{Algorithm, Backend, KeyMeta, KeyState, policy::Trigger, seal::SealError, state_of},
    service::{Unopenable, open_stored},
    startup::{
        StartupError, load_keks, open_existing_store, open_token, start_service_on_existing_store,
    },
    store::{KeyStore, RemoveOutcome, StoreError},
    time::Timestamp,
};

/// Whether each key's private half opens, as far as this command can tell.
enum Readability {
    /// Checked with the configured KEKs: the kids that do not open, and why.
    Checked(HashMap<String, String>),
    /// No KEK to check with, and why.
    Unchecked(String),
}

/// Runs one `keys` subcommand and returns what to print.
///
/// # Errors
///
/// A [`StartupError`] when the store cannot be opened, the KEKs do not
/// open its keys, or the command is refused (removing a key still in use
/// without `--force`, an unknown kid).
pub async fn run(config: &Config, command: &KeysCommand) -> Result<String, StartupError> {
    let now = Timestamp::now();
    let store_error = |source: StoreError| StartupError::Store {
        url: config.store.to_string(),
        source,
    };
    match command {
        KeysCommand::List => {
            // The schedule and public halves are in the clear; the KEKs, when
            // there are any, only say which private halves do not open.
            let store = open_existing_store(config).await?;
            let keys = store.load().await.map_err(store_error)?;
            let readability = if keys.is_empty() {
                Readability::Checked(HashMap::new())
            } else {
                match load_keks(config, &keys) {
                    Ok(keks) => Readability::Checked(
                        keys.iter()
                            .filter(|k| k.backend == Backend::Software)
                            .filter_map(|k| {
                                open_stored(&keks, k)
                                    .err()
                                    .map(|reason| (k.meta.kid.clone(), explain_unopenable(&reason)))
                            })
                            .collect(),
                    ),
                    Err(err) => Readability::Unchecked(err.to_string()),
                }
            };
            let held: HashMap<String, String> = keys
                .iter()
                .filter_map(|k| match &k.backend {
                    Backend::Pkcs11 { token } => Some((k.meta.kid.clone(), token.clone())),
                    Backend::Software => None,
                })
                .collect();
            let metas: Vec<KeyMeta> = keys.into_iter().map(|k| k.meta).collect();
            Ok(render_table(&metas, &readability, &held, now))
        }
        KeysCommand::Rotate { alg } => {
            if let Some(alg) = alg.filter(|alg| !config.algorithms.0.contains(alg)) {
                return Err(StartupError::Serve(format!(
                    "--alg {alg} is not one of --algorithms ({}); add it there to rotate it",
                    Algorithm::list(&config.algorithms.0)
                )));
            }
            let service = start_service_on_existing_store(config).await?;
            let created = service
                .rotate_algorithms(Trigger::Operator, now, alg.as_slice())
                .await
                .map_err(|e| StartupError::Serve(e.chain()))?;
            let mut out = String::new();
            for key in &created {
                let _ = writeln!(
                    out,
                    "created {} {} (generation {}): published now, signs from {}",
                    key.alg, key.kid, key.generation, key.activates_at
                );
            }
            let held: HashMap<String, String> = service
                .ring()
                .keys()
                .iter()
                .filter_map(|k| {
                    let token = k.key.token()?;
                    Some((k.meta.kid.clone(), token.identity().to_owned()))
                })
                .collect();
            let mut metas: Vec<KeyMeta> = service
                .key_statuses(now)
                .into_iter()
                .map(|k| k.meta)
                .collect();
            let unreadable = service.unreadable_keys();
            metas.extend(unreadable.iter().map(|k| k.meta.clone()));
            let readability = Readability::Checked(
                unreadable
                    .into_iter()
                    .map(|k| (k.meta.kid, k.reason))
                    .collect(),
            );
            out.push_str(&render_table(&metas, &readability, &held, now));
            Ok(out)
        }
        KeysCommand::Reseal => {
            let store = Arc::new(open_existing_store(config).await?);
            let stored = store.load().await.map_err(store_error)?;
            let keks = load_keks(config, &stored)?;
            let sealing = keks.sealing_id().to_owned();
            let count = store
                .reseal(&|key| {
                    // Token-held keys have nothing sealed to re-seal.
                    if key.sealed.kek_id == sealing || key.backend != Backend::Software {
                        return Ok(None);
                    }
                    let mut der = keks.open(&key.meta.kid, &key.sealed)?;
                    let sealed = keks.seal(&key.meta.kid, &der);
                    zeroize::Zeroize::zeroize(&mut der);
                    sealed.map(Some)
                })
                .await
                .map_err(store_error)?;
            Ok(format!(
                "re-sealed {count} key(s) under key-encryption key {sealing}; \
                 older KEKs can be removed once every server has restarted with this one first\n"
            ))
        }
        KeysCommand::Remove { kid, force } => {
            let store = open_existing_store(config).await?;
            let force = *force;
            let check = move |key: &KeyMeta, all: &[KeyMeta]| {
                let state = state_of(key, all, now);
                match removal_risk(state) {
                    Some(risk) if !force => Err(format!(
                        "key {} is {state}: {risk}; add --force to remove it anyway",
                        key.kid
                    )),
                    _ => Ok(()),
                }
            };
            match store.remove(kid, &check).await.map_err(store_error)? {
                RemoveOutcome::Removed(meta) => {
                    let mut out = format!(
                        "removed key {} (generation {}); running servers drop it within \
                         --reload-every\n",
                        meta.kid, meta.generation
                    );
                    // With the token configured, its objects go too (a key
                    // no row names signs nothing, but should not linger).
                    if let Some(token) = open_token(config).await? {
                        let kid = meta.kid.clone();
                        let destroyed = tokio::task::spawn_blocking(move || token.destroy(&kid))
                            .await
                            .map_err(|e| StartupError::Serve(e.to_string()))?
                            .map_err(|e| StartupError::Pkcs11(e.to_string()))?;
                        if destroyed > 0 {
                            let _ = writeln!(
                                out,
                                "destroyed its {destroyed} object(s) in the PKCS#11 token {}",
                                token_name(config)
                            );
                        }
                    }
                    Ok(out)
                }
                RemoveOutcome::NotFound => Err(StartupError::Refused(format!(
                    "no key {kid} in the store {}; `jwks-server keys list` shows every kid",
                    config.store
                ))),
                RemoveOutcome::Refused(reason) => Err(StartupError::Refused(reason)),
            }
        }
    }
}

/// The configured token, as the operator named it.
fn token_name(config: &Config) -> String {
    match (&config.pkcs11_token_label, config.pkcs11_slot) {
        (Some(label), _) => label.clone(),
        (None, Some(slot)) => format!("in slot {slot}"),
        (None, None) => String::new(),
    }
}

/// Why a key does not open, with how to fix it when a setting can.
fn explain_unopenable(reason: &Unopenable) -> String {
    match reason {
        Unopenable::Sealing(SealError::UnknownKek { .. }) => {
            format!("{reason}; add it (JWKS_KEK / --kek-file) to open it")
        }
        _ => reason.to_string(),
    }
}

/// What removing a key in `state` would break, if anything.
fn removal_risk(state: KeyState) -> Option<&'static str> {
    match state {
        KeyState::Active => Some(
            "it is the active signing key, so every server stops signing until a pending key \
             takes over, and verifiers reject every token it signed",
        ),
        KeyState::Retiring => Some(
            "tokens it signed may not have expired yet, and verifiers would reject them once \
             their JWKS no longer lists it",
        ),
        KeyState::Pending | KeyState::Expired => None,
    }
}

/// `jwks-server hash-secret`: reads one secret line from standard input.
///
/// # Errors
///
/// [`StartupError::Refused`] when standard input cannot be read or holds no
/// secret; [`StartupError::Clients`] when hashing fails.
pub fn hash_secret_from_stdin() -> Result<String, StartupError> {
    let mut secret = String::new();
    std::io::stdin().read_line(&mut secret).map_err(|e| {
        StartupError::Refused(format!("cannot read the secret from standard input: {e}"))
    })?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(StartupError::Refused(
            "no secret on standard input; pipe it in: printf %s \"$SECRET\" | jwks-server hash-secret"
                .into(),
        ));
    }
    Ok(crate::access::hash_secret(secret)?)
}

/// The keys as a table; the last column says whether each private half
/// opens, or (`held`: kid -> token) which PKCS#11 token holds it.
fn render_table(
    keys: &[KeyMeta],
    readability: &Readability,
    held: &HashMap<String, String>,
    now: Timestamp,
) -> String {
    let mut sorted: Vec<&KeyMeta> = keys.iter().collect();
    sorted.sort_by(|a, b| a.alg.cmp(&b.alg).then(KeyMeta::newest_first(a, b)));
    let mut out = format!(
        "{:<44} {:<5} {:>4} {:<9} {:<20} {:<20} {:<20} {:<20} {}\n",
        "KID",
        "ALG",
        "GEN",
        "STATE",
        "PUBLISHED",
        "SIGNS FROM",
        "SIGNS UNTIL",
        "EXPIRES",
        "PRIVATE KEY"
    );
    for key in sorted {
        let private = match (held.get(&key.kid), readability) {
            (Some(token), _) => format!("pkcs11: in token {token}"),
            (None, Readability::Checked(unreadable)) => match unreadable.get(&key.kid) {
                Some(reason) => format!("unreadable: {reason}"),
                None => "ok".to_owned(),
            },
            (None, Readability::Unchecked(_)) => "not checked".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<44} {:<5} {:>4} {:<9} {:<20} {:<20} {:<20} {:<20} {private}",
            key.kid,
            key.alg.as_str(),
            key.generation,
            state_of(key, keys, now).as_str(),
            key.published_at.to_string(),
            key.activates_at.to_string(),
            key.retires_at.to_string(),
            key.expires_at.to_string(),
        );
    }
    if let Readability::Unchecked(why) = readability {
        let _ = writeln!(out, "private keys not checked: {why}");
    }
    out
}
