//! jwks-server owns RSA-2048 signing keys, publishes their public halves as a
//! JSON Web Key Set, and issues RS256 JWTs, over REST (axum) and gRPC (tonic).
//!
//! # Layout
//!
//! The dependency arrows point one way: transports -> service -> keys/store.
//!
//! - [`config`]: the clap settings; every flag has a `JWKS_*` variable.
//! - [`startup`]: the only module that wires store, service and listeners.
//! - [`service`]: [`service::KeyService`], the domain both transports call:
//!   token issuance, the key lifecycle, the background refresher, health.
//! - [`keys`]: key states, the pure rotation policy, the key ring, crypto,
//!   sealing, and where key-encryption keys come from.
//! - [`store`]: the [`store::KeyStore`] trait, its SQLite/PostgreSQL store and
//!   an in-memory store for tests and benchmarks.
//! - [`transport`]: the gRPC and REST adapters; only they know tonic and axum.
//! - [`error`]: the one domain error.
//! - [`metrics`]: Prometheus counters, histograms and gauges.
//! - [`access`]: opt-in client authentication and rate limits.
//! - [`admin`]: the operator subcommands.
//! - [`text`]: which caller-supplied text may become a claim or a client id.
//! - [`faults`]: background faults (failing rotations, a dead refresher) health reports.
//! - [`telemetry`]: logs that drop lines rather than fail; [`process`]: no core dumps.

pub mod access;
pub mod admin;
pub mod config;
pub mod error;
pub mod faults;
pub mod keys;
pub mod metrics;
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
