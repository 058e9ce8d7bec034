//! jwks-server owns RSA-2048 signing keys, publishes their public halves as a
//! JSON Web Key Set, and issues RS256 JWTs, over REST (axum) and gRPC (tonic).
//!
//! # Layout
//!
//! The dependency arrows point one way: transports -> service -> keys/store.
//!
//! - [`config`]: the clap settings; every flag has a `JWKS_*` variable.
//! - [`startup`]: the only module that wires store, service and listeners.
//! - [`service`]: [`service::KeyService`], the domain both transports call.
//! - [`keys`]: key states, the pure rotation policy, the key ring, crypto, sealing.
//! - [`store`]: the [`store::KeyStore`] trait and its SQLite/PostgreSQL store.
//! - [`transport`]: the gRPC and REST adapters; only they know tonic and axum.
//! - [`error`]: the one domain error.
//! - [`metrics`]: Prometheus counters, histograms and gauges.
//! - [`access`]: the [`access::Access`] bundle: credentials, the client
//!   registry, the bounded secret checks and the rate limits (all opt-in).
//! - [`admin`]: the operator subcommands.
//! - [`text`]: which caller-supplied text may become a claim or a client id.

pub mod access;
pub mod admin;
pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
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
