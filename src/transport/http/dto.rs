//! The JSON shapes of the REST facade, with their OpenAPI schemas. Only the
//! HTTP adapter uses them; gRPC has its own messages in the proto.

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceStatus {
    #[schema(example = "ok")]
    pub status: String,
    #[schema(example = "jwks-server")]
    pub service: String,
    pub version: String,
}

/// Whether the key store answered the last time it was asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreStatus {
    /// `ok` or `unreachable`.
    pub status: String,
    /// Since when it has been unreachable (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A background fault that has not cleared yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaultReport {
    /// `rotation_failing`, `refresher_restarting` or `refresher_stalled`.
    pub kind: String,
    /// When it began (RFC 3339).
    pub since: String,
    /// The last error.
    pub error: String,
}

/// `GET|POST /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok`, `degraded` (signing, but the store is unreachable or a background
    /// fault is listed in `faults`) or `unavailable` (cannot sign).
    pub status: String,
    pub store: StoreStatus,
    /// How long this replica can sign with the keys it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_for_seconds: Option<u64>,
    /// Why it cannot sign (with status `unavailable`), or the first fault
    /// (with status `degraded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Background faults not yet cleared: failing rotations (key writes), a
    /// key refresher that died or stalled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoints {
    pub jwks: String,
    pub auth: String,
    pub auth_expired: String,
    /// The catalogue of defective test tokens (`GET /test-tokens`).
    pub test_tokens: String,
    pub health: String,
    /// RFC 6749 token endpoint (client credentials).
    pub token: String,
    /// RFC 7662 introspection.
    pub introspection: String,
    /// RFC 7009 revocation.
    pub revocation: String,
    /// RFC 8414 authorization server metadata.
    pub oauth_authorization_server: String,
    /// OpenID Connect discovery.
    pub openid_configuration: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrpcEndpoint {
    pub port: u16,
    pub service: String,
    pub reflection: bool,
}

/// `GET|POST /connect`: service discovery.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceDiscovery {
    pub service: String,
    pub status: String,
    pub issuer: String,
    pub endpoints: Endpoints,
    pub grpc: GrpcEndpoint,
}

/// OpenID Connect discovery / RFC 8414 metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuerMetadata {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint: String,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint: String,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub claims_supported: Vec<String>,
}

/// One public key of the JWKS (RFC 7517). Private members never appear.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "RSA")]
    pub kty: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
    #[schema(example = "RS256")]
    pub alg: String,
    /// RFC 7638 SHA-256 thumbprint, base64url.
    pub kid: String,
    /// RSA: modulus, base64url without padding (2048, 3072 or 4096 bits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA: public exponent, base64url without padding.
    #[schema(example = "AQAB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC: `P-256`; OKP: `Ed25519` (RFC 7518 §6.2.1.1, RFC 8037 §2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC: x coordinate; OKP: the public key; base64url without padding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC: y coordinate, base64url without padding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// `GET /.well-known/jwks.json`: every unexpired key, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// `POST /auth` with `Accept: application/json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse<'a> {
    /// The compact JWT.
    pub token: &'a str,
    /// The same JWT under RFC 6749 section 5.1's name, for OAuth clients.
    pub access_token: &'a str,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until `exp` (negative for an expired token).
    pub expires_in: i64,
    /// The key that signed it.
    pub kid: &'a str,
}

/// Every REST error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code, e.g. `invalid_request`, `method_not_allowed`.
    pub error: String,
    /// What went wrong and what to do about it.
    pub detail: String,
}
