//! The gRPC side of test tokens and custom claims: `ListTestTokens` (as
//! `GET /test-tokens`), and the request's claims read from a
//! `google.protobuf.Struct` or a `claims_json` string into the JSON object
//! the domain checks (`service::claims`). What each defect is, and which
//! claims are allowed, is the service's.

use prost_types::{ListValue, Struct, value::Kind};
use serde_json::{Map, Number, Value};
use tonic::{Response, Status};

use super::to_status;
use crate::{
    error::Error,
    proto,
    service::{DefectInfo, KeyService, TokenShape, claims::parse_claims_json},
};

/// `ListTestTokens`: the catalogue this server's configuration offers.
pub(super) fn list(service: &KeyService) -> Response<proto::ListTestTokensResponse> {
    let catalogue = service.test_tokens();
    Response::new(proto::ListTestTokensResponse {
        enabled: catalogue.enabled,
        defects: catalogue.defects.into_iter().map(defect).collect(),
    })
}

fn defect(info: DefectInfo) -> proto::TestTokenDefect {
    let shapes = info.shapes.iter().copied();
    proto::TestTokenDefect {
        name: info.name.to_owned(),
        description: info.description.to_owned(),
        weakness: info.weakness.to_owned(),
        endpoints: shapes
            .clone()
            .map(|shape| match shape {
                TokenShape::Auth => "/auth".to_owned(),
                TokenShape::Access => "/oauth2/token".to_owned(),
            })
            .collect(),
        expected: "refused".to_owned(),
        rpcs: shapes
            .map(|shape| match shape {
                TokenShape::Auth => "IssueToken".to_owned(),
                TokenShape::Access => "Token".to_owned(),
            })
            .collect(),
    }
}

/// The claims a request adds: `claims` or `claims_json`, not both.
///
/// # Errors
///
/// [`Error::InvalidRequest`] (field `claims`) for both given, or
/// `claims_json` that is not a JSON object.
pub(super) fn requested_claims(
    claims: Option<Struct>,
    claims_json: Option<String>,
) -> Result<Map<String, Value>, Error> {
    let claims_json = claims_json.filter(|text| !text.is_empty());
    match (claims, claims_json) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "claims",
            "claims and claims_json are two forms of the same field; send one of them",
        )),
        (Some(claims), None) => Ok(object(claims)),
        (None, Some(text)) => parse_claims_json(&text),
        (None, None) => Ok(Map::new()),
    }
}

/// The request's claims as a `Status` a handler returns, in the door's words.
pub(super) fn requested_claims_status(
    claims: Option<Struct>,
    claims_json: Option<String>,
) -> Result<Map<String, Value>, Status> {
    requested_claims(claims, claims_json).map_err(to_status)
}

fn object(claims: Struct) -> Map<String, Value> {
    claims
        .fields
        .into_iter()
        .map(|(name, value)| (name, json(value.kind)))
        .collect()
}

/// A protobuf value as JSON. Numbers are doubles in protobuf: whole ones
/// within 2^53 become JSON integers, so `3` stays `3`, not `3.0`.
fn json(kind: Option<Kind>) -> Value {
    match kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if n.fract() == 0.0 && n.abs() <= EXACT {
                #[allow(clippy::cast_possible_truncation)]
                Value::from(n as i64)
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StructValue(s)) => Value::Object(object(s)),
        Some(Kind::ListValue(ListValue { values })) => {
            Value::Array(values.into_iter().map(|v| json(v.kind)).collect())
        }
    }
}
