//! The one place that wires everything together: configuration -> KEKs ->
//! store -> service -> both listeners and the background refresher, and the
//! orderly shutdown of all of it.
//!
//! [`Application::build`] binds the listeners (port 0 works, for tests) and
//! [`Application::run`] serves until the given shutdown future resolves.

use std::{
    fs,
    future::Future,
    io::Write,
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    access::{ClientRegistry, ClientsError, RateLimits},
    config::{Config, StoreUrl},
    keys::{
        policy::{PolicyError, Trigger},
        seal::{Kek, KekRing, SealError},
    },
    metrics::Metrics,
    service::{Access, KeyService, StartError, StoreHealth},
    store::{KeyStore, SqlStore, StoreError, StoredKey},
    time::Timestamp,
    transport::{
        connections::{self, Limits},
        grpc, http,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("key-encryption key: {0}")]
    Kek(#[from] SealError),
    #[error("key-encryption key file {path}: {source}")]
    KekFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "a {0} store needs a key-encryption key shared by every replica: set JWKS_KEK or JWKS_KEK_FILE"
    )]
    KekRequired(&'static str),
    #[error(
        "the store holds keys sealed by key-encryption key {kek_ids}, but no KEK is configured and \
         {path} (the KEK file a SQLite store uses then) does not exist; restore that file from \
         the backup made with the database, or give the KEK the keys were sealed with in JWKS_KEK \
         or JWKS_KEK_FILE. No new KEK was generated: it could open none of these keys"
    )]
    KekMissing { kek_ids: String, path: PathBuf },
    #[error("cannot open the key store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error(transparent)]
    Service(#[from] StartError),
    #[error(transparent)]
    Clients(#[from] ClientsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(String),
    /// An operator command that cannot do what was asked, and why.
    #[error("{0}")]
    Refused(String),
}

/// Resolves the configured KEKs for a store holding `stored`. With none
/// configured, a SQLite store uses the KEK file beside its database
/// (`PATH.kek`), generated (once, mode 0600) only while the store holds no
/// key: a new KEK could open none of the keys already sealed.
pub fn load_keks(config: &Config, stored: &[StoredKey]) -> Result<KekRing, StartupError> {
    let mut keks = Vec::new();
    for text in &config.kek {
        keks.push(Kek::from_base64(text.expose())?);
    }
    if let Some(path) = &config.kek_file {
        keks.extend(read_kek_file(path)?);
    }
    if keks.is_empty() {
        match &config.store {
            StoreUrl::Sqlite { path, .. } => keks.push(default_kek(path, stored)?),
            StoreUrl::Postgres(_) => return Err(StartupError::KekRequired("PostgreSQL")),
        }
    }
    Ok(KekRing::new(keks)?)
}

fn read_kek_file(path: &Path) -> Result<Vec<Kek>, StartupError> {
    let text = fs::read_to_string(path).map_err(|source| StartupError::KekFile {
        path: path.to_owned(),
        source,
    })?;
    warn_if_others_can_read(path);
    let keks = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Kek::from_base64)
        .collect::<Result<Vec<_>, _>>()?;
    if keks.is_empty() {
        return Err(StartupError::Kek(SealError::NoKek));
    }
    Ok(keks)
}

/// A KEK file that group or others can read is a warning, not a refusal:
/// secret mounts (Kubernetes' default mode is 0644) are often readable by a
/// container's only user, and refusing would take the service down over it.
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = %format!("{mode:04o}"),
                "key-encryption key file is readable by group or others: anyone who can read \
                 it and the store has every private key; make it private (chmod 600)"
            );
        }
    }
}

fn default_kek(db_path: &Path, stored: &[StoredKey]) -> Result<Kek, StartupError> {
    let mut kek_path = db_path.as_os_str().to_owned();
    kek_path.push(".kek");
    let kek_path = PathBuf::from(kek_path);
    let file_error = |source| StartupError::KekFile {
        path: kek_path.clone(),
        source,
    };
    if kek_path.exists() {
        let mut keks = read_kek_file(&kek_path)?;
        return Ok(keks.remove(0));
    }
    if !stored.is_empty() {
        let mut sealed_by: Vec<&str> = stored.iter().map(|k| k.sealed.kek_id.as_str()).collect();
        sealed_by.sort_unstable();
        sealed_by.dedup();
        return Err(StartupError::KekMissing {
            kek_ids: sealed_by.join(", "),
            path: kek_path,
        });
    }
    let (kek, text) = Kek::generate()?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(&kek_path) {
        Ok(file) => file,
        // Another process starting on the same new store wrote it first.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut keks = read_kek_file(&kek_path)?;
            return Ok(keks.remove(0));
        }
        Err(err) => return Err(file_error(err)),
    };
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error)?;
    tracing::warn!(
        path = %kek_path.display(),
        "no key-encryption key configured: generated one beside the store. Keep it secret, back it \
         up with the database, and set JWKS_KEK or JWKS_KEK_FILE in production"
    );
    Ok(kek)
}

/// Opens the configured store, creating it if needed (the server).
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
pub fn access(config: &Config) -> Result<Access, StartupError> {
    let clients = match &config.clients_file {
        Some(path) => {
            let registry = ClientRegistry::load(path)?;
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
    Ok(Access::new(config.expired_tokens, clients, rate_limits))
}

/// Opens the store and starts the key service (creating first keys if needed).
pub async fn start_service(config: &Config) -> Result<KeyService, StartupError> {
    config.check()?;
    let access = access(config)?;
    let store = open_store(config).await?;
    start_service_on(config, store, access).await
}

/// Starts the key service on a store that must already exist (`keys rotate`).
pub async fn start_service_on_existing_store(config: &Config) -> Result<KeyService, StartupError> {
    config.check()?;
    let access = access(config)?;
    let store = open_existing_store(config).await?;
    start_service_on(config, store, access).await
}

async fn start_service_on(
    config: &Config,
    store: SqlStore,
    access: Access,
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
    Ok(KeyService::start(store, keks, policy, issuer, access, Timestamp::now()).await?)
}

/// A built server: keys loaded, listeners bound, not yet serving.
pub struct Application {
    service: KeyService,
    http: TcpListener,
    grpc: TcpListener,
    config: Config,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let service = start_service(&config).await?;
        Self::with_service(service, config).await
    }

    /// Binds the listeners for a service already started, e.g. over a store
    /// the caller built (tests inject faulty stores this way).
    pub async fn with_service(service: KeyService, config: Config) -> Result<Self, StartupError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })
        };
        let http = bind(config.http_addr).await?;
        let grpc = bind(config.grpc_addr).await?;
        Ok(Self {
            service,
            http,
            grpc,
            config,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_addr)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    pub fn service(&self) -> &KeyService {
        &self.service
    }

    /// Serves REST and gRPC until `shutdown` resolves, then drains: gRPC health
    /// turns NOT_SERVING, both listeners stop accepting, in-flight requests
    /// finish (up to --drain-timeout) and the background refresher stops.
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

        let refresher = tokio::spawn(supervise_refresher(
            service.clone(),
            health.clone(),
            metrics.clone(),
            stop.clone(),
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

/// Keeps the key refresher running. If it panics or ends while the server is
/// not stopping, health reports it (degraded while a key signs), the restart
/// is counted, and a new refresher starts after a backoff: 1 s, doubling up
/// to a minute, back to 1 s once a refresher has lived longer than that.
async fn supervise_refresher(
    service: KeyService,
    health: grpc::HealthHandle,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_secs(1);
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    let mut backoff = FIRST_BACKOFF;
    loop {
        service.faults().refresher_started(Timestamp::now());
        let started = tokio::time::Instant::now();
        let outcome =
            tokio::spawn(refresh_keys(service.clone(), health.clone(), stop.clone())).await;
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
        service.faults().refresher_died(Timestamp::now(), reason);
        // The dead refresher kept gRPC health current; do it until the next one runs.
        health.update(&service.health(Timestamp::now())).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        metrics.refresher_restarted();
        backoff = (backoff * 2).min(MAX_BACKOFF);
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

/// The background loop: runs the rotation schedule and reloads keys every
/// --reload-every (sooner when the key set is due to change), keeping gRPC
/// health in step with whether this replica can sign.
async fn refresh_keys(service: KeyService, health: grpc::HealthHandle, stop: CancellationToken) {
    let reload_every = service.policy().reload_every;
    let mut failed = false;
    loop {
        let now = Timestamp::now();
        // After a failure, wait a whole interval: a due rotation that cannot
        // reach the store must not turn into a tight retry loop.
        let wait = if failed {
            reload_every
        } else {
            reload_every
                .min(now.until(service.next_deadline()))
                .max(Duration::from_millis(200))
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let now = Timestamp::now();
        let result = service.rotate(Trigger::Schedule, now).await;
        failed = result.is_err();
        if let Err(err) = result {
            if service.health(now).store == StoreHealth::Reachable {
                tracing::warn!(error = %err.chain(), "key refresh failed; keeping the keys held");
            } else {
                // The outage itself was logged once, when it began.
                tracing::debug!(error = %err.chain(), "key refresh failed; store unreachable");
            }
        }
        health.update(&service.health(Timestamp::now())).await;
        service.forget_idle_callers();
        service.faults().refreshed(Timestamp::now());
    }
}
