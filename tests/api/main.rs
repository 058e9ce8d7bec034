//! The integration suite: the real server on port 0, driven through both doors
//! (REST with reqwest, gRPC with the generated tonic client), every token
//! verified against the JWKS fetched over the wire by an independent verifier.
// Tests and tools: a failed assumption should stop them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod algorithms;
mod claims;
mod connections;
mod defects;
mod etag;
mod faults;
mod grpc_details;
mod hardening;
mod helpers;
mod input;
mod keys;
mod oauth;
mod oauth_grpc;
mod operator;
mod ops;
mod pkcs11;
mod probe;
mod replicas;
mod reporting;
mod rest;
mod rpc;
