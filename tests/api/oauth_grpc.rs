//! OAuth 2.0 over gRPC: `Token`, `Introspect` and `Revoke` take the fields
//! and client credentials the REST forms take, answer alike, and refuse with
//! the RFC 6749 §5.2 code as `google.rpc.ErrorInfo.reason`. A token revoked
//! through one door is inactive through the other.

use jwks_server::proto::{
    IntrospectRequest, IntrospectResponse, RevokeRequest, TokenRequest,
    key_service_client::KeyServiceClient,
};
use serde_json::json;
use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt;

use crate::{
    helpers::{TestApp, claims, header as jwt_header, spawn_app, verify_with},
    oauth::{ODD_SECRET, basic, form_encode, json_of, post_form, spawn_app_with_clients},
};

/// A request carrying `metadata` (key, value) pairs.
fn with_metadata<T>(message: T, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    for (key, value) in metadata {
        request
            .metadata_mut()
            .append(*key, value.parse().expect("ASCII metadata"));
    }
    request
}

fn client_credentials() -> TokenRequest {
    TokenRequest {
        grant_type: "client_credentials".into(),
        ..Default::default()
    }
}

async fn grpc_token(grpc: &mut KeyServiceClient<Channel>, client_id: &str) -> String {
    grpc.token(with_metadata(
        client_credentials(),
        &[("x-client-id", client_id)],
    ))
    .await
    .expect("a token")
    .into_inner()
    .access_token
}

async fn grpc_introspect(grpc: &mut KeyServiceClient<Channel>, token: &str) -> IntrospectResponse {
    grpc.introspect(IntrospectRequest {
        token: token.into(),
        token_type_hint: None,
    })
    .await
    .expect("an introspection answer")
    .into_inner()
}

async fn rest_active(app: &TestApp, token: &str) -> serde_json::Value {
    let form = format!("token={}", form_encode(token));
    json_of(post_form(app, "/oauth2/introspect", None, &form).await)
        .await
        .1
}

#[tokio::test]
async fn token_rpc_issues_rfc9068_access_tokens_with_basic_decoded_as_rfc6749_says() {
    let app = spawn_app_with_clients(|_| {}).await;
    let mut grpc = app.grpc().await;
    let authorization = basic("svc", ODD_SECRET);
    let issued = grpc
        .token(with_metadata(
            TokenRequest {
                scope: Some("read".into()),
                ..client_credentials()
            },
            &[("authorization", &authorization)],
        ))
        .await
        .expect("a token for the odd secret")
        .into_inner();
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.scope.as_deref(), Some("read"));
    assert_eq!(issued.expires_in, 300, "the client's max lifetime");

    let token = &issued.access_token;
    assert_eq!(jwt_header(token)["typ"], "at+jwt");
    let data = verify_with(token, &app.jwks().await, |v| {
        v.set_audience(&["api"]);
        v.set_issuer(&["https://issuer.test"]);
    })
    .expect("verifies against the JWKS");
    assert_eq!(data.claims["client_id"], "svc");
    assert_eq!(data.claims["sub"], "svc");
    assert_eq!(data.claims["scope"], "read");
    assert_eq!(data.claims["roles"], json!(["reader"]));

    // x-client-id / x-client-secret, and the request's alg; a client with
    // no audiences of its own gets the issuer's.
    let issued = grpc
        .token(with_metadata(
            TokenRequest {
                alg: Some("RS256".into()),
                ..client_credentials()
            },
            &[
                ("x-client-id", "other"),
                ("x-client-secret", "other-secret"),
            ],
        ))
        .await
        .expect("a token for x-client-id")
        .into_inner();
    assert_eq!(issued.scope, None, "no scope asked, none granted");
    let token = &issued.access_token;
    assert_eq!(jwt_header(token)["alg"], "RS256");
    assert_eq!(claims(token)["aud"], "https://issuer.test");
    assert_eq!(claims(token)["client_id"], "other");
}

#[tokio::test]
async fn a_token_from_either_door_is_introspected_and_revoked_through_the_other() {
    let app = spawn_app().await;
    let mut grpc = app.grpc().await;

    // Issued and revoked over gRPC: inactive over REST.
    let token = grpc_token(&mut grpc, "team-a").await;
    assert_eq!(rest_active(&app, &token).await["active"], true);
    let answer = grpc_introspect(&mut grpc, &token).await;
    let claims = claims(&token);
    assert!(answer.active, "{answer:?}");
    assert_eq!(answer.client_id.as_deref(), Some("team-a"));
    assert_eq!(answer.sub.as_deref(), Some("team-a"));
    assert_eq!(answer.aud, ["https://issuer.test"]);
    assert_eq!(answer.iss.as_deref(), Some("https://issuer.test"));
    assert_eq!(answer.exp, claims["exp"].as_i64());
    assert_eq!(answer.iat, claims["iat"].as_i64());
    assert_eq!(answer.nbf, claims["nbf"].as_i64());
    assert_eq!(answer.jti.as_deref(), claims["jti"].as_str());
    assert_eq!(answer.token_type.as_deref(), Some("Bearer"));

    grpc.revoke(RevokeRequest {
        token: token.clone(),
        token_type_hint: Some("access_token".into()),
    })
    .await
    .expect("revoked");
    assert_eq!(rest_active(&app, &token).await, json!({"active": false}));
    assert_eq!(
        grpc_introspect(&mut grpc, &token).await,
        IntrospectResponse::default(),
        "an inactive token: `active` false and nothing else"
    );

    // Issued and revoked over REST: inactive over gRPC.
    let response = post_form(
        &app,
        "/oauth2/token",
        None,
        "grant_type=client_credentials&client_id=team-b",
    )
    .await;
    let token = json_of(response).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(grpc_introspect(&mut grpc, &token).await.active);
    let form = format!("token={}", form_encode(&token));
    assert_eq!(
        post_form(&app, "/oauth2/revoke", None, &form)
            .await
            .status(),
        200
    );
    assert!(!grpc_introspect(&mut grpc, &token).await.active);

    // Unknown tokens are revoked "successfully" (RFC 7009 §2.2).
    grpc.revoke(RevokeRequest {
        token: "whatever".into(),
        token_type_hint: None,
    })
    .await
    .expect("OK for an unknown token");
}

/// One gRPC refusal: what was sent and what must come back.
struct Case {
    what: &'static str,
    metadata: Vec<(&'static str, String)>,
    call: Call,
    code: Code,
    reason: &'static str,
}

enum Call {
    Token(TokenRequest),
    Introspect(&'static str),
    Revoke(String),
}

#[tokio::test]
async fn oauth_refusals_carry_the_rfc6749_code_in_error_info() {
    let app = spawn_app_with_clients(|c| {
        c.rate_limit = 1;
        c.rate_burst = Some(1);
    })
    .await;
    let mut grpc = app.grpc().await;
    let svc = || vec![("authorization", basic("svc", ODD_SECRET))];
    let other = || vec![("authorization", basic("other", "other-secret"))];
    // A token of svc's for the revocation case (spends svc's one token).
    let svc_token = grpc
        .token(with_metadata(
            client_credentials(),
            &[("authorization", &basic("svc", ODD_SECRET))],
        ))
        .await
        .expect("svc's token")
        .into_inner()
        .access_token;
    let token = |request: TokenRequest| Call::Token(request);
    let cases = [
        Case {
            what: "no grant_type",
            metadata: other(),
            call: token(TokenRequest::default()),
            code: Code::InvalidArgument,
            reason: "invalid_request",
        },
        Case {
            what: "another grant",
            metadata: other(),
            call: token(TokenRequest {
                grant_type: "password".into(),
                ..Default::default()
            }),
            code: Code::InvalidArgument,
            reason: "unsupported_grant_type",
        },
        Case {
            what: "both credential methods",
            metadata: vec![
                ("authorization", basic("svc", ODD_SECRET)),
                ("x-client-id", "svc".into()),
            ],
            call: token(client_credentials()),
            code: Code::InvalidArgument,
            reason: "invalid_request",
        },
        Case {
            what: "no credentials",
            metadata: vec![],
            call: token(client_credentials()),
            code: Code::Unauthenticated,
            reason: "invalid_client",
        },
        Case {
            what: "wrong secret",
            metadata: vec![("authorization", basic("svc", "nope"))],
            call: token(client_credentials()),
            code: Code::Unauthenticated,
            reason: "invalid_client",
        },
        Case {
            what: "unknown client",
            metadata: vec![
                ("x-client-id", "nobody".into()),
                ("x-client-secret", "x".into()),
            ],
            call: token(client_credentials()),
            code: Code::Unauthenticated,
            reason: "invalid_client",
        },
        Case {
            what: "a scope it may not have",
            metadata: svc(),
            call: token(TokenRequest {
                scope: Some("admin".into()),
                ..client_credentials()
            }),
            code: Code::InvalidArgument,
            reason: "invalid_scope",
        },
        Case {
            what: "an audience it may not have",
            metadata: svc(),
            call: token(TokenRequest {
                audience: vec!["billing".into()],
                ..client_credentials()
            }),
            code: Code::InvalidArgument,
            reason: "invalid_target",
        },
        Case {
            what: "a resource that is not an absolute URI",
            metadata: svc(),
            call: token(TokenRequest {
                resource: vec!["api".into()],
                ..client_credentials()
            }),
            code: Code::InvalidArgument,
            reason: "invalid_target",
        },
        Case {
            what: "a second token within the rate limit",
            metadata: svc(),
            call: token(client_credentials()),
            code: Code::ResourceExhausted,
            reason: "slow_down",
        },
        Case {
            what: "introspection without client credentials",
            metadata: vec![],
            call: Call::Introspect("whatever"),
            code: Code::Unauthenticated,
            reason: "invalid_client",
        },
        Case {
            what: "introspection without a token",
            metadata: other(),
            call: Call::Introspect(""),
            code: Code::InvalidArgument,
            reason: "invalid_request",
        },
        Case {
            what: "revoking another client's token",
            metadata: other(),
            call: Call::Revoke(svc_token),
            code: Code::PermissionDenied,
            reason: "unauthorized_client",
        },
    ];
    for case in cases {
        let metadata: Vec<(&'static str, &str)> = case
            .metadata
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let status = match case.call {
            Call::Token(request) => grpc
                .token(with_metadata(request, &metadata))
                .await
                .map(|_| ()),
            Call::Introspect(token) => grpc
                .introspect(with_metadata(
                    IntrospectRequest {
                        token: token.into(),
                        token_type_hint: None,
                    },
                    &metadata,
                ))
                .await
                .map(|_| ()),
            Call::Revoke(token) => grpc
                .revoke(with_metadata(
                    RevokeRequest {
                        token,
                        token_type_hint: None,
                    },
                    &metadata,
                ))
                .await
                .map(|_| ()),
        }
        .expect_err(case.what);
        let info = status
            .get_details_error_info()
            .unwrap_or_else(|| panic!("{}: no ErrorInfo in {status:?}", case.what));
        assert_eq!(
            (status.code(), info.reason.as_str(), info.domain.as_str()),
            (case.code, case.reason, "jwks-server"),
            "{}: {status:?}",
            case.what
        );
        assert!(!status.message().is_empty(), "{}", case.what);
        if case.reason == "slow_down" {
            assert!(
                status.get_details_retry_info().is_some(),
                "{}: RetryInfo",
                case.what
            );
        }
    }
}

#[tokio::test]
async fn reflection_lists_the_oauth_rpcs() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let mut resolves = async |symbol: &str| {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match stream.next().await {
            Some(Ok(response)) => matches!(
                response.message_response,
                Some(MessageResponse::FileDescriptorResponse(_))
            ),
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::NotFound, "{symbol}: {status:?}");
                false
            }
            None => panic!("no reflection answer for {symbol}"),
        }
    };
    for method in ["Token", "Introspect", "Revoke"] {
        assert!(
            resolves(&format!("jwks.v1.KeyService.{method}")).await,
            "{method}"
        );
    }
    assert!(
        !resolves("jwks.v1.KeyService.NoSuchMethod").await,
        "an unknown method is not listed"
    );
}
