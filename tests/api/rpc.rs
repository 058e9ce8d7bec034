//! The gRPC door: the same keys and tokens as REST, proper status codes,
//! health, and reflection for grpcurl.

use jwks_server::proto::{GetJwksRequest, IssueTokenRequest};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{claims, header, kids, now, spawn_app, verify, verify_with};

#[tokio::test]
async fn get_jwks_returns_the_same_keys_as_rest() {
    let app = spawn_app().await;
    let rest = app.jwks().await;
    let response = app
        .grpc()
        .await
        .get_jwks(GetJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let grpc: Vec<Value> = response
        .keys
        .iter()
        .map(|k| json!({"kty": k.kty, "use": k.r#use, "alg": k.alg, "kid": k.kid, "n": k.n, "e": k.e}))
        .collect();
    assert_eq!(json!(grpc), rest["keys"]);
    assert!(!response.not_modified);
    assert_eq!(response.max_age_seconds, 600);

    let etag = response.etag;
    let again = app
        .grpc()
        .await
        .get_jwks(GetJwksRequest {
            if_none_match: etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.not_modified && again.keys.is_empty());
    assert_eq!(again.etag, etag);
}

#[tokio::test]
async fn issue_token_returns_a_token_that_verifies_against_the_rest_jwks() {
    let app = spawn_app().await;
    let jwks = app.jwks().await;
    let response = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest {
            subject: Some("svc-a".into()),
            audience: vec!["billing".into()],
            lifetime_seconds: Some(120),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.expires_in, 120);
    assert_eq!(header(&response.token)["kid"], response.kid.as_str());
    let data = verify_with(&response.token, &jwks, |v| v.set_audience(&["billing"])).unwrap();
    assert_eq!(data.claims["sub"], "svc-a");
    assert_eq!(data.claims["aud"], "billing");
    assert_eq!(data.claims["exp"], response.expires_at);
    assert_eq!(data.claims["iat"], response.issued_at);

    let plain = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap()
        .into_inner();
    let data = verify(&plain.token, &jwks).unwrap();
    assert_eq!(data.claims["sub"], "anonymous");
    assert_eq!(plain.expires_in, 900);
}

#[tokio::test]
async fn an_expired_token_over_grpc_is_signed_by_an_unpublished_key() {
    let app = spawn_app().await;
    let response = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest {
            expired: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.expires_at < now() - 60);
    assert!(response.expires_in < 0);
    let jwks = app.jwks().await;
    assert!(!kids(&jwks).contains(&response.kid));
    assert_eq!(claims(&response.token)["exp"], response.expires_at);
    // The same expired key REST uses.
    let rest = app.token("?expired=true").await;
    assert_eq!(header(&rest)["kid"], response.kid.as_str());
}

#[tokio::test]
async fn bad_fields_are_invalid_argument() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let cases = [
        (
            "zero lifetime",
            IssueTokenRequest {
                lifetime_seconds: Some(0),
                ..Default::default()
            },
        ),
        (
            "negative lifetime",
            IssueTokenRequest {
                lifetime_seconds: Some(-1),
                ..Default::default()
            },
        ),
        (
            "lifetime above --token-ttl",
            IssueTokenRequest {
                lifetime_seconds: Some(901),
                ..Default::default()
            },
        ),
        (
            "empty subject",
            IssueTokenRequest {
                subject: Some(String::new()),
                ..Default::default()
            },
        ),
        (
            "huge subject",
            IssueTokenRequest {
                subject: Some("x".repeat(300)),
                ..Default::default()
            },
        ),
        (
            "control characters",
            IssueTokenRequest {
                subject: Some("a\nb".into()),
                ..Default::default()
            },
        ),
        (
            "too many audiences",
            IssueTokenRequest {
                audience: vec!["a".into(); 17],
                ..Default::default()
            },
        ),
    ];
    for (name, request) in cases {
        let status = client.issue_token(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(!status.message().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn health_reports_the_key_service_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "jwks.v1.KeyService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_services_in_v1_and_v1alpha() {
    let app = spawn_app().await;
    let channel = app.channel().await;

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = stream.next().await else {
        panic!("no v1 reflection answer")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected v1 answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"jwks.v1.KeyService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest,
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessage,
        server_reflection_response::MessageResponse as AlphaResponse,
    };
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessage::FileContainingSymbol(
            "jwks.v1.KeyService".into(),
        )),
    };
    let mut stream = AlphaClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = stream.next().await else {
        panic!("no v1alpha reflection answer")
    };
    let Some(AlphaResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("unexpected v1alpha answer")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
