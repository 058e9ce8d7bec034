//! [`ApiDoc`]: the OpenAPI 3.1 description of the REST facade, generated from
//! the handlers' `#[utoipa::path]` annotations and the DTOs' schemas. Served
//! at `/openapi.json`.

use utoipa::OpenApi;

use super::{
    AuthBody,
    dto::ErrorBody,
    handlers::{auth, discovery, jwks, operations, service, test_tokens},
    oauth::{self, AccessTokenBody, IntrospectionBody, OAuthErrorBody, TokenForm, TokenHintForm},
};

/// The OpenAPI 3.1 description of the REST facade, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jwks-server",
        description = "Publishes signing keys as a JWKS and issues JWTs (RS256 by default; \
                       PS256, ES256 and EdDSA with --algorithms). \
                       The same operations are served over gRPC (jwks.v1.KeyService)."
    ),
    paths(
        service::root,
        service::health,
        service::connect,
        jwks::jwks,
        auth::auth,
        test_tokens::test_tokens,
        discovery::openid_configuration,
        discovery::oauth_authorization_server,
        operations::prometheus_metrics,
        operations::openapi_json,
        oauth::token,
        oauth::introspect,
        oauth::revoke
    ),
    components(schemas(
        ErrorBody,
        AuthBody,
        AccessTokenBody,
        OAuthErrorBody,
        IntrospectionBody,
        TokenForm,
        TokenHintForm,
        test_tokens::TestTokensBody,
        test_tokens::DefectBody
    ))
)]
pub struct ApiDoc;
