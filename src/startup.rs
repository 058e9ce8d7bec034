//! The one place that wires everything together: configuration -> KEKs ->
//! store -> service -> both listeners and the background refresher, and the
//! orderly shutdown of all of it.
//!
//! [`Application::build`] binds the listeners (port 0 works, for tests) and
//! [`Application::run`] serves until the given shutdown future resolves.

use std::{future::Future, net::SocketAddr, num::NonZeroU32, sync::Arc};

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    access::{ClientRegistry, ClientsError, RateLimits},
    config::{Config, StoreUrl},
    keys::{
        kek::{self, KekError, KekSources, WhenNoneGiven},
        pkcs11::{Token, TokenConfig, TokenError, TokenSelector},
        policy::{PolicyError, Setting},
        seal::{KekRing, SealError},
    },
    metrics::Metrics,
    service::{Access, Health, KeyService, RefreshObserver, StartError, Unopenable},
    store::{KeyStore, SqlStore, StoreError, StoredKey},
    time::Timestamp,
    transport::{
        connections::{self, Limits},
        grpc, http,
    },
};

/// Why the server or an operator command could not start, each variant
/// worded for the operator who reads it once on stderr.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings describe an impossible key lifecycle.
    #[error("{}", explain_policy(.0))]
    Policy(#[from] PolicyError),
    /// No usable key-encryption key.
    #[error("{}", explain_kek(.0))]
    Kek(#[from] KekError),
    /// The store would not open.
    #[error("cannot open the key store {url}: {source}")]
    Store {
        /// The store URL, its password redacted.
        url: String,
        /// Why it would not open.
        source: StoreError,
    },
    /// The key service would not start over the store (no keys, keys that do
    /// not unseal).
    #[error("{}", explain_start(.0))]
    Service(#[from] StartError),
    /// The clients file is unreadable or invalid.
    #[error(transparent)]
    Clients(#[from] ClientsError),
    /// A listen address is taken or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A listener or a background task failed while serving.
    #[error("server failed: {0}")]
    Serve(String),
    /// The PKCS#11 module or token cannot be used (missing module, unknown
    /// token, wrong PIN, a configured algorithm it lacks).
    #[error("{0}")]
    Pkcs11(String),
    /// An operator command that cannot do what was asked, and why.
    #[error("{0}")]
    Refused(String),
}

/// Resolves the configured KEKs for a store holding `stored` (see
/// [`kek::provision`]): `--kek`, then `--kek-file`; with neither, a SQLite
/// store uses the KEK file beside its database (`PATH.kek`), generated only
/// while the store holds no key.
/// # Errors
///
/// [`StartupError::Kek`] when no KEK is configured for a store that
/// holds keys, a KEK file is unreadable or malformed, or the default one
/// cannot be written.
pub fn load_keks(config: &Config, stored: &[StoredKey]) -> Result<KekRing, StartupError> {
    let sources = KekSources {
        texts: config.kek.iter().map(|k| k.expose()).collect(),
        file: config.kek_file.as_deref(),
        when_none_given: match &config.store {
            StoreUrl::Sqlite { path, .. } => WhenNoneGiven::UseFileBeside(path),
            StoreUrl::Postgres(_) => WhenNoneGiven::Refuse("PostgreSQL"),
        },
    };
    let provisioned = kek::provision(&sources, stored)?;
    if let Some(path) = provisioned.generated {
        tracing::warn!(
            path = %path.display(),
            "no key-encryption key configured: generated one beside the store. Keep it secret, \
             back it up with the database, and set JWKS_KEK or JWKS_KEK_FILE in production"
        );
    }
    Ok(provisioned.keks)
}

/// A settings rule broken, in the operator's words: the flags that set it.
fn explain_policy(err: &PolicyError) -> String {
    match err {
        PolicyError::PublishAhead { needed, actual } => {
            let (needed, actual) = (show(*needed), show(*actual));
            format!(
                "rule broken: a new key must be published at least --jwks-max-age + \
                 --reload-every ({needed}) before it signs, but --publish-ahead is {actual}; use \
                 --publish-ahead {needed} or more, or lower --jwks-max-age / --reload-every"
            )
        }
        PolicyError::RetainAfter { needed, actual } => {
            let (needed, actual) = (show(*needed), show(*actual));
            format!(
                "rule broken: a key must stay published for --token-ttl + --jwks-max-age + \
                 --clock-skew ({needed}) after it stops signing, but --retain-after is {actual}; \
                 use --retain-after {needed} or more, or lower --token-ttl / --jwks-max-age / \
                 --clock-skew"
            )
        }
        PolicyError::TooShort(setting) => {
            let flag = match setting {
                Setting::TokenTtl => "token-ttl",
                Setting::RotateEvery => "rotate-every",
                Setting::ReloadEvery => "reload-every",
            };
            format!("--{flag} must be at least 1s")
        }
        PolicyError::KeepExpired => {
            "--keep-expired must be at least 1, so `expired=true` always has a key".to_owned()
        }
        PolicyError::NoAlgorithm => "--algorithms must name at least one algorithm".to_owned(),
    }
}

fn show(d: std::time::Duration) -> String {
    crate::keys::policy::show(d)
}

/// How to supply a KEK: the settings that carry one.
const KEK_SETTINGS: &str = "JWKS_KEK or JWKS_KEK_FILE";

/// A KEK problem, with the settings that fix it.
fn explain_kek(err: &KekError) -> String {
    match err {
        KekError::Required { .. } => format!("{err}: set {KEK_SETTINGS}"),
        KekError::Missing { .. } => format!(
            "{err}; restore that file from the backup made with the database, or give the KEK \
             the keys were sealed with in {KEK_SETTINGS}. No new KEK was generated: it could \
             open none of these keys"
        ),
        KekError::Invalid(_) | KekError::File { .. } => err.to_string(),
    }
}

/// A start that failed on a key, with what the operator can do about it.
fn explain_start(err: &StartError) -> String {
    match err {
        StartError::Unreadable(unreadable) => {
            let kid = &unreadable.kid;
            let supply = match &unreadable.reason {
                Unopenable::Sealing(SealError::UnknownKek { .. }) => {
                    "add the KEK it was sealed with (--kek / JWKS_KEK, or --kek-file / JWKS_KEK_FILE)"
                        .to_owned()
                }
                Unopenable::NoToken { .. } | Unopenable::OtherToken { .. } => {
                    "switching back to software keys is refused while keys held in the token are \
                     live: keep --pkcs11-module, --pkcs11-token-label (or --pkcs11-slot) and the \
                     PIN (JWKS_PKCS11_*) set for that token until those keys expire"
                        .to_owned()
                }
                _ => "give the KEK it was sealed with".to_owned(),
            };
            format!(
                "{err}; {supply}, or remove it with `jwks-server keys remove {kid} --force` \
                 (tokens it signed then stop verifying)"
            )
        }
        StartError::Store(_) | StartError::Keys(_) => err.to_string(),
    }
}

/// Opens the configured store, creating it if needed (the server).
/// # Errors
///
/// [`StartupError::Store`] when the store cannot be reached, created or
/// migrated.
pub async fn open_store(config: &Config) -> Result<SqlStore, StartupError> {
    SqlStore::connect(config.store.connection_string())
        .await
        .map_err(|source| StartupError::Store {
            url: config.store.to_string(),
            source,
        })
}

/// Opens the configured store only if it exists (the operator commands): a
/// mistyped path is an error, and nothing is created.
/// # Errors
///
/// [`StartupError::Store`] when the store does not exist, cannot be
/// reached or is of a newer schema.
pub async fn open_existing_store(config: &Config) -> Result<SqlStore, StartupError> {
    let store_error = |source| StartupError::Store {
        url: config.store.to_string(),
        source,
    };
    if let StoreUrl::Sqlite { path, .. } = &config.store
        && !path.exists()
    {
        return Err(store_error(StoreError::Missing("no such file".into())));
    }
    SqlStore::connect_existing(config.store.connection_string())
        .await
        .map_err(store_error)
}

/// Who may issue tokens and how often, from the settings.
/// # Errors
///
/// [`StartupError::Clients`] when `--clients-file` is unreadable or
/// holds an invalid entry.
pub fn access(config: &Config) -> Result<Access, StartupError> {
    let clients = match &config.clients_file {
        Some(path) => {
            let registry = ClientRegistry::load(path)?;
            // A client whose default algorithm this server does not run
            // could get no token without naming another: refuse to start.
            if let Some((id, alg)) = registry
                .default_algs()
                .find(|(_, alg)| !config.algorithms.0.contains(alg))
            {
                return Err(crate::access::ClientsError::Invalid {
                    path: path.display().to_string(),
                    reason: format!(
                        "client {id}: alg {alg} is not one of --algorithms ({})",
                        crate::keys::Algorithm::list(&config.algorithms.0)
                    ),
                }
                .into());
            }
            tracing::info!(
                clients = registry.len(),
                "client authentication required to issue tokens"
            );
            Some(Arc::new(registry))
        }
        None => None,
    };
    let rate_limits = NonZeroU32::new(config.rate_limit).map(|rate| {
        let burst = config.rate_burst.and_then(NonZeroU32::new).unwrap_or(rate);
        RateLimits::new(rate, burst)
    });
    // One switch for every test token (`--expired-tokens` is its old name):
    // on by default while anyone may ask for tokens, off once callers must
    // authenticate (issue #14).
    let test_tokens = config
        .test_tokens
        .or(config.expired_tokens)
        .unwrap_or(clients.is_none());
    Ok(Access::new(test_tokens, clients, rate_limits))
}

/// Opens the store and starts the key service (creating first keys if needed).
/// # Errors
///
/// Any [`StartupError`] of opening the store, loading the KEKs or the
/// clients, or starting the service.
pub async fn start_service(config: &Config) -> Result<KeyService, StartupError> {
    config.check()?;
    let access = access(config)?;
    // Before the store: a wrong PIN or module must leave nothing behind.
    let token = open_token(config).await?;
    let store = open_store(config).await?;
    start_service_on(config, store, access, token).await
}

/// The PKCS#11 settings, if `--pkcs11-module` is set.
/// # Errors
///
/// [`StartupError::Pkcs11`] when the token or the PIN is not named, or the
/// PIN file cannot be read.
pub fn token_config(config: &Config) -> Result<Option<TokenConfig>, StartupError> {
    let Some(module) = &config.pkcs11_module else {
        return Ok(None);
    };
    let token = match (&config.pkcs11_token_label, config.pkcs11_slot) {
        (Some(label), _) => TokenSelector::Label(label.clone()),
        (None, Some(slot)) => TokenSelector::Slot(slot),
        (None, None) => {
            return Err(StartupError::Pkcs11(
                "--pkcs11-module needs the token: set --pkcs11-token-label (JWKS_PKCS11_TOKEN_LABEL) \
                 or --pkcs11-slot (JWKS_PKCS11_SLOT)"
                    .into(),
            ));
        }
    };
    let pin = match (&config.pkcs11_pin, &config.pkcs11_pin_file) {
        (Some(pin), _) => SecretString::from(pin.expose().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|err| {
                StartupError::Pkcs11(format!(
                    "cannot read the PKCS#11 PIN file {}: {err}",
                    path.display()
                ))
            })?;
            SecretString::from(text.lines().next().unwrap_or_default().trim().to_owned())
        }
        (None, None) => {
            return Err(StartupError::Pkcs11(
                "--pkcs11-module needs the user PIN: set --pkcs11-pin-file (JWKS_PKCS11_PIN_FILE) \
                 or JWKS_PKCS11_PIN"
                    .into(),
            ));
        }
    };
    Ok(Some(TokenConfig {
        module: module.clone(),
        token,
        pin,
    }))
}

/// Opens and logs in to the configured PKCS#11 token, checking it can
/// generate and sign with every configured algorithm (on a blocking
/// thread: the module may take its time).
/// # Errors
///
/// [`StartupError::Pkcs11`] saying what is wrong with the module, token or PIN.
pub async fn open_token(config: &Config) -> Result<Option<Arc<Token>>, StartupError> {
    let Some(token_config) = token_config(config)? else {
        return Ok(None);
    };
    let algorithms = config.algorithms.0.clone();
    let token = tokio::task::spawn_blocking(move || Token::open(&token_config, &algorithms))
        .await
        .map_err(|err| StartupError::Pkcs11(format!("opening the PKCS#11 token failed: {err}")))?
        .map_err(|err| {
            StartupError::Pkcs11(match err {
                TokenError::Module { .. } => format!("{err}; check --pkcs11-module"),
                TokenError::NoToken(..) => format!(
                    "{err}; check --pkcs11-token-label / --pkcs11-slot, or initialise the token"
                ),
                TokenError::Login { .. } => {
                    format!("{err}; check --pkcs11-pin-file / JWKS_PKCS11_PIN")
                }
                TokenError::Unsupported { .. } => {
                    format!("{err}; remove that algorithm from --algorithms or use another token")
                }
                _ => err.to_string(),
            })
        })?;
    tracing::info!(token = %token.identity(), "new signing keys are generated in the PKCS#11 token");
    Ok(Some(token))
}

/// Starts the key service on a store that must already exist (`keys rotate`).
/// # Errors
///
/// As [`start_service`], and when the store does not exist.
pub async fn start_service_on_existing_store(config: &Config) -> Result<KeyService, StartupError> {
    config.check()?;
    let access = access(config)?;
    let token = open_token(config).await?;
    let store = open_existing_store(config).await?;
    start_service_on(config, store, access, token).await
}

async fn start_service_on(
    config: &Config,
    store: SqlStore,
    access: Access,
    token: Option<Arc<Token>>,
) -> Result<KeyService, StartupError> {
    // Whether the store holds keys decides whether a missing default KEK may
    // be generated.
    let stored = store.load().await.map_err(|source| StartupError::Store {
        url: config.store.to_string(),
        source,
    })?;
    let keks = load_keks(config, &stored)?;
    let store: Arc<dyn KeyStore> = Arc::new(store);
    let issuer = config.issuer.clone();
    let policy = config.policy();
    Ok(
        KeyService::start_with_token(store, keks, token, policy, issuer, access, Timestamp::now())
            .await?,
    )
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// A built server: keys loaded, listeners bound, not yet serving.
pub struct Application {
    service: KeyService,
    http: TcpListener,
    grpc: TcpListener,
    config: Config,
}

impl Application {
    /// Binds the REST listener, starts the key service over the configured
    /// store, then binds the gRPC listener; a default `--issuer` names the
    /// REST port actually bound.
    ///
    /// # Errors
    ///
    /// [`StartupError::Bind`] when a port is taken, else any error of
    /// [`start_service`].
    pub async fn build(mut config: Config) -> Result<Self, StartupError> {
        // Bound first, so a default issuer names the port really listened on.
        let http = bind(config.http_addr).await?;
        config.issuer = config.issuer_for(http.local_addr().unwrap_or(config.http_addr));
        let service = start_service(&config).await?;
        let grpc = bind(config.grpc_addr).await?;
        Ok(Self {
            service,
            http,
            grpc,
            config,
        })
    }

    /// Binds the listeners for a service already started, e.g. over a store
    /// the caller built (tests inject faulty stores this way).
    /// # Errors
    ///
    /// [`StartupError::Bind`] when a listen address cannot be bound.
    pub async fn with_service(service: KeyService, config: Config) -> Result<Self, StartupError> {
        let http = bind(config.http_addr).await?;
        let grpc = bind(config.grpc_addr).await?;
        Ok(Self {
            service,
            http,
            grpc,
            config,
        })
    }

    /// Where the REST listener is bound (the real port when asked for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_addr)
    }

    /// Where the gRPC listener is bound (the real port when asked for port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// The key service both doors serve.
    pub fn service(&self) -> &KeyService {
        &self.service
    }

    /// Serves REST and gRPC until `shutdown` resolves, then drains: gRPC health
    /// turns NOT_SERVING, both listeners stop accepting, in-flight requests
    /// finish (up to --drain-timeout) and the background refresher stops.
    /// # Errors
    ///
    /// [`StartupError::Serve`] when a listener or the refresher fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            service,
            http,
            grpc,
            config,
        } = self;
        let http_addr = http.local_addr().unwrap_or(config.http_addr);
        let grpc_addr = grpc.local_addr().unwrap_or(config.grpc_addr);
        let stop = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let (health, grpc_routes) = grpc::routes(service.clone(), metrics.clone()).await;

        let refresher = tokio::spawn(service.clone().run_refresher(
            RefreshReport {
                health: health.clone(),
                metrics: metrics.clone(),
            },
            stop.clone(),
            Timestamp::now,
        ));

        let limits = connection_limits(&config);
        let http_stop = stop.clone();
        let router = http::router(service.clone(), metrics, grpc_addr, config.request_timeout);
        let http_server = tokio::spawn(http::serve(http, router, limits, async move {
            http_stop.cancelled().await;
        }));
        let grpc_stop = stop.clone();
        let grpc_server = tokio::spawn(grpc::serve(grpc, grpc_routes, limits, async move {
            grpc_stop.cancelled().await;
        }));
        tracing::info!(%http_addr, %grpc_addr, store = %config.store, "jwks-server listening");

        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        health.not_serving().await;
        stop.cancel();

        let drained = tokio::time::timeout(config.drain_timeout, async {
            let (http_result, grpc_result, _) = tokio::join!(http_server, grpc_server, refresher);
            (http_result, grpc_result)
        })
        .await;
        match drained {
            Ok((Ok(()), Ok(()))) => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
            Ok((http_result, grpc_result)) => Err(StartupError::Serve(format!(
                "http: {http_result:?}, grpc: {grpc_result:?}"
            ))),
            Err(_) => {
                tracing::warn!(timeout = ?config.drain_timeout, "drain timed out; abandoning in-flight requests");
                Ok(())
            }
        }
    }
}

/// What the background refresher reports to: gRPC health and the restart
/// count in metrics.
struct RefreshReport {
    health: grpc::HealthHandle,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl RefreshObserver for RefreshReport {
    async fn health_changed(&self, health: &Health) {
        self.health.update(health).await;
    }

    fn refresher_restarted(&self) {
        self.metrics.refresher_restarted();
    }
}

/// The connection limits of both ports, from the settings and the open-file
/// limit (read, and raised to its hard value, here).
fn connection_limits(config: &Config) -> Limits {
    let open_files = connections::open_file_limit();
    let max_connections = config.max_connections.map_or_else(
        || connections::default_max_connections(open_files),
        |max| usize::try_from(max).unwrap_or(usize::MAX),
    );
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(connections::RESERVED_DESCRIPTORS);
    if needed > open_files {
        tracing::warn!(
            max_connections,
            open_files,
            "--max-connections on both ports can use more descriptors than the open-file limit \
             allows; accepts will fail (and back off) before the cap is reached"
        );
    }
    tracing::info!(max_connections, open_files, "connection limits");
    Limits {
        max_connections,
        max_streams: config.max_streams_per_connection,
        request_timeout: config.request_timeout,
        idle_timeout: config.idle_timeout,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
    }
}
