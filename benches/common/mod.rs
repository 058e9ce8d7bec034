//! What the benches share: a real [`KeyService`] over a fresh temporary SQLite
//! store, started the way the server starts it (`startup::start_service`), and
//! the typical token request the benches sign.
//!
//! Not a bench target itself (cargo only discovers `benches/*.rs`).

// Each bench includes this module and uses only part of it.
#![allow(dead_code)]

use jwks_server::{
    config::{Config, Secret, StoreUrl},
    service::{KeyService, TokenRequest},
    startup,
};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// A fixed KEK so nothing is written beside the store.
const BENCH_KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A started service and what must outlive it: the runtime that owns the
/// store's connection pool and the directory that holds the store.
pub struct Fixture {
    pub service: KeyService,
    pub runtime: Runtime,
    _dir: TempDir,
}

impl Fixture {
    /// Starts a service with the default policy over a new store (which makes
    /// it generate its first keys: an active one and an expired one).
    pub fn start(runtime: Runtime) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::defaults();
        let path = dir.path().join("jwks.db");
        config.store = StoreUrl::Sqlite {
            url: format!("sqlite://{}", path.display()),
            path,
        };
        config.kek = vec![BENCH_KEK.parse::<Secret>().expect("a KEK")];
        config.kek_file = None;
        config.issuer = "https://issuer.example.com".to_owned();
        let service = runtime
            .block_on(startup::start_service(&config))
            .expect("the key service starts over a fresh store");
        Fixture {
            service,
            runtime,
            _dir: dir,
        }
    }
}

/// A multi-threaded runtime, as the server has.
pub fn multi_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// What a typical client asks for: a named subject and one audience.
pub fn typical_request() -> TokenRequest {
    TokenRequest {
        expired: false,
        subject: Some("alice@example.com".to_owned()),
        audience: vec!["billing-api".to_owned()],
        lifetime_seconds: None,
        alg: None,
        ..TokenRequest::default()
    }
}
