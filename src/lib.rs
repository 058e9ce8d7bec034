//! jwks-server owns signing keys, publishes their public halves as a JSON Web
//! Key Set, and issues JWTs (RS256 with RSA-2048 by default; PS256, ES256 and
//! EdDSA on request), over REST (axum) and gRPC (tonic).
//!
//! # Layout
//!
//! The dependency arrows point one way: transports -> service -> keys/store.
//! README's Layout section maps the same tree, with the files around `src/`.
//!
//! - [`config`]: the clap settings; every flag has a `JWKS_*` variable.
//! - [`startup`]: the only module that wires store, service, listeners and the
//!   background refresher.
//! - [`service`]: [`service::KeyService`], the domain both transports call:
//!   token issuance, the key lifecycle, the background refresher, health.
//! - [`access`]: the [`access::Access`] bundle: credentials, the client
//!   registry, the bounded secret checks and the rate limits (all opt-in).
//! - [`keys`]: key states (`mod.rs`), the pure rotation policy (`policy`), the
//!   key ring and its rendered JWKS (`ring`), the algorithms (`algorithm`), key material and signing for each (`crypto`), and
//!   sealing at rest (`seal`), where key-encryption keys come from (`kek`),
//!   and keys held in a PKCS#11 token (`pkcs11`).
//! - [`store`]: the [`store::KeyStore`] trait, its SQLite/PostgreSQL
//!   implementation (`sql`), an in-memory store for tests and benchmarks
//!   (`memory`), and [`store::StoreUrl`] with its redaction (`url`).
//! - [`transport`]: the adapters, the only code that knows tonic and axum;
//!   the doors never import each other. `connections` is the accept loop both
//!   ports share; `grpc` (the service, conversions, error -> status with
//!   details; `observe` the per-call layer, `serve` the listener) and `http`
//!   (`router`, `error`, the `observe` and `explain` layers, `handlers/` one
//!   file per concern, `openapi`, `auth_input`, `dto`, `serve`).
//! - [`error`]: the one domain error.
//! - [`metrics`]: Prometheus counters, histograms and gauges.
//! - [`telemetry`]: structured logs.
//! - [`time`]: [`time::Timestamp`], time passed in as an argument.
//! - [`admin`]: the operator subcommands.
//! - [`probe`]: `jwks-server probe`, which tests a service's verifier with
//!   the catalogue of defective tokens of a running server.
//! - [`text`]: which caller-supplied text may become a claim or a client id.
//! - [`faults`]: background faults (failing rotations, a dead refresher) health reports.
//! - [`telemetry`]: logs that drop lines rather than fail; [`process`]: no core dumps.
//! - [`proto`]: the code generated from `proto/jwks/v1/key_service.proto`.

pub mod access;
pub mod admin;
pub mod config;
pub mod error;
pub mod faults;
pub mod keys;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod transport;

/// Code generated from `proto/jwks/v1/key_service.proto`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("jwks.v1");

    /// The encoded descriptor set that gRPC reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/jwks_descriptor.bin"));
}
