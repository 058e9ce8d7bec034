//! Reading `POST /auth`: the `expired` query parameter, credentials, and
//! form or JSON bodies, into the domain's [`TokenRequest`]. Pure functions of
//! the request parts, so they are easy to test and to fuzz.

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode, header},
};
use serde::Deserialize;

use super::{ApiError, MAX_BODY_BYTES};
use crate::{access::Credentials, error::Error, service::TokenRequest};

/// What `/auth` reads from a JSON or form body. Unknown members are ignored:
/// clients send all sorts (grant_type, scope…).
#[derive(Default, Deserialize, utoipa::ToSchema)]
pub struct AuthBody {
    /// Becomes the `sub` claim.
    username: Option<String>,
    /// The `aud` claim: a string or a list (alias `aud`).
    #[serde(alias = "aud")]
    #[schema(value_type = Option<Vec<String>>)]
    audience: Option<OneOrMany>,
    /// Token lifetime in seconds, 1 up to --token-ttl (alias `expires_in`).
    #[serde(alias = "expires_in")]
    lifetime_seconds: Option<i64>,
    /// Client credentials, when the server requires them (or use HTTP Basic).
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl std::fmt::Debug for AuthBody {
    // Written out so a client secret can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthBody")
            .field("username", &self.username)
            .field("audience", &self.audience)
            .field("lifetime_seconds", &self.lifetime_seconds)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Reads an `/auth` request into the domain's [`TokenRequest`].
pub fn auth_request(
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(TokenRequest, Option<Credentials>), ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_request"
        };
        ApiError::new(
            status,
            code,
            format!("could not read the body ({rejection}); the limit is {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let expired = parse_expired(query.unwrap_or_default())?;
    let mut fields = parse_body(headers, &body)?;
    let credentials = credentials(headers, &mut fields)?;
    let request = TokenRequest {
        expired,
        subject: fields.username,
        audience: match fields.audience {
            None => Vec::new(),
            Some(OneOrMany::One(aud)) => vec![aud],
            Some(OneOrMany::Many(auds)) => auds,
        },
        lifetime_seconds: fields.lifetime_seconds,
    };
    Ok((request, credentials))
}

/// `expired` present with no value, `true` or `1`: expired; `false`, `0` or
/// absent: valid; anything else is refused.
fn parse_expired(query: &str) -> Result<bool, Error> {
    let mut expired = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "expired" {
            continue;
        }
        let this = match value.as_ref() {
            "" | "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(Error::invalid(
                    "expired",
                    format!(
                        "unsupported value {:?}; use expired, expired=true or expired=1 for an expired token, \
                         expired=false or expired=0 (or leave it out) for a valid one",
                        truncate(other, 64)
                    ),
                ));
            }
        };
        if expired.is_some_and(|seen| seen != this) {
            return Err(Error::invalid(
                "expired",
                "given more than once with different values",
            ));
        }
        expired = Some(this);
    }
    Ok(expired.unwrap_or(false))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<AuthBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(AuthBody::default());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "application/json" => parse_json_body(body).map_err(ApiError::bad_request),
        m if m.starts_with("application/") && m.ends_with("+json") => {
            parse_json_body(body).map_err(ApiError::bad_request)
        }
        "application/x-www-form-urlencoded" => parse_form_body(body).map_err(ApiError::bad_request),
        // Browsers' fetch() sends JSON as text/plain; curl without -H sends
        // nothing. Use the body if it is a JSON object, otherwise ignore it.
        "" | "text/plain" => Ok(parse_json_body(body).unwrap_or_default()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "cannot read a {} body; send application/json or application/x-www-form-urlencoded, or no body",
                truncate(other, 64)
            ),
        )),
    }
}

fn parse_json_body(body: &[u8]) -> Result<AuthBody, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn parse_form_body(body: &[u8]) -> Result<AuthBody, String> {
    std::str::from_utf8(body).map_err(|_| "form body is not valid UTF-8".to_owned())?;
    let mut fields = AuthBody::default();
    let mut audiences = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        match name.as_ref() {
            "username" => fields.username = Some(value.into_owned()),
            "client_id" => fields.client_id = Some(value.into_owned()),
            "client_secret" => fields.client_secret = Some(value.into_owned()),
            "audience" | "aud" => audiences.push(value.into_owned()),
            "lifetime_seconds" | "expires_in" => {
                let secs = value
                    .parse()
                    .map_err(|_| format!("{name} must be a whole number of seconds"))?;
                fields.lifetime_seconds = Some(secs);
            }
            _ => {}
        }
    }
    if !audiences.is_empty() {
        fields.audience = Some(OneOrMany::Many(audiences));
    }
    Ok(fields)
}

/// Credentials from HTTP Basic, or else from `client_id`/`client_secret`
/// body fields.
fn credentials(
    headers: &HeaderMap,
    fields: &mut AuthBody,
) -> Result<Option<Credentials>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Authorization header is not valid text"))?;
        if let Some(found) =
            Credentials::from_authorization(value).map_err(ApiError::bad_request)?
        {
            return Ok(Some(found));
        }
    }
    Ok(fields.client_id.take().map(|id| Credentials {
        id,
        secret: fields.client_secret.take().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_accepts_the_documented_values_only() {
        for (query, want) in [
            ("", false),
            ("expired", true),
            ("expired=", true),
            ("expired=true", true),
            ("expired=1", true),
            ("expired=false", false),
            ("expired=0", false),
            ("other=1", false),
            ("expired=1&expired=true", true),
        ] {
            assert_eq!(parse_expired(query).unwrap(), want, "{query}");
        }
        for query in ["expired=yes", "expired=2", "expired=1&expired=0"] {
            assert!(parse_expired(query).is_err(), "{query}");
        }
    }
}
