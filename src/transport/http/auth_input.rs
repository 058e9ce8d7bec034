//! Reading `POST /auth`: the `expired` query parameter, credentials, and
//! form or JSON bodies, into the domain's [`TokenRequest`]. Pure functions of
//! the request parts, so they are easy to test and to fuzz.
//!
//! A member this service defines is never silently dropped or silently
//! picked from two: the same thing said twice (a form field or JSON member
//! repeated, a name and its alias, `expired` in the query and the body, two
//! `Authorization` or `Content-Type` headers, Basic and body credentials) is
//! a 400 naming both places, unless the two agree where agreeing is natural
//! (`expired` in query and body). Members we do not define are ignored.

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode, header},
};
use secrecy::SecretString;
use serde::Deserialize;

use super::{ApiError, MAX_BODY_BYTES};
use crate::{access::Credentials, error::Error, service::TokenRequest};

/// What `/auth` reads from a JSON or form body. Unknown members are ignored:
/// clients send all sorts (grant_type, scope…). Each member may appear once,
/// and a name and its alias not together.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct AuthBody {
    /// Becomes the `sub` claim.
    username: Option<String>,
    /// The `aud` claim: a string or a list. Not together with `aud`.
    #[schema(value_type = Option<Vec<String>>)]
    audience: Option<OneOrMany>,
    /// Another name for `audience` (the claim's own). Not together with `audience`.
    #[schema(value_type = Option<Vec<String>>)]
    aud: Option<OneOrMany>,
    /// Token lifetime in seconds, 1 up to --token-ttl. Not together with `expires_in`.
    lifetime_seconds: Option<i64>,
    /// Another name for `lifetime_seconds` (RFC 6749's). Not together with it.
    expires_in: Option<i64>,
    /// An expired token (`true`, or `"true"`/`"1"`) or a valid one (`false`,
    /// `"false"`/`"0"`), as gRPC's `IssueTokenRequest.expired`. If the query
    /// also has `expired`, the two must agree.
    #[serde(default, deserialize_with = "expired_member")]
    #[schema(value_type = Option<bool>)]
    expired: Option<bool>,
    /// Client credentials, when the server requires them (or use HTTP Basic,
    /// but not both).
    client_id: Option<String>,
    // A secrecy type: zeroized on drop, and never printed (not even by
    // `Debug`). A plain comment, so the OpenAPI document stays as it was.
    #[schema(value_type = Option<String>)]
    client_secret: Option<SecretString>,
    /// The algorithm to sign with (`RS256`, `PS256`, `ES256`, `EdDSA`), one
    /// the server runs. If the query also has `alg`, the two must agree.
    alg: Option<String>,
    /// A defective test token by name (see `GET /test-tokens`). If the query
    /// also has `defect`, the two must agree.
    defect: Option<String>,
    /// Claims to add beside the registered ones, a JSON object (in a form,
    /// a field holding the object as JSON text): at most 32, 4096 bytes.
    #[schema(value_type = Option<Object>)]
    claims: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// Members the body defines: in the query string they are refused rather
/// than ignored (and a secret in a URL ends up in access logs).
const BODY_MEMBERS: [&str; 8] = [
    "claims",
    "username",
    "audience",
    "aud",
    "lifetime_seconds",
    "expires_in",
    "client_id",
    "client_secret",
];

/// What the query's `expired` accepts, as text: `Some(expired)` or `None`
/// for anything else.
/// `True`/`TRUE` too: Python clients send a boolean as `str(True)`.
fn expired_text(value: &str) -> Option<bool> {
    match value {
        "" | "1" => Some(true),
        "0" => Some(false),
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

const EXPIRED_VALUES: &str = "use expired, expired=true or expired=1 for an expired token, \
                              expired=false or expired=0 (or leave it out) for a valid one";

/// The JSON `expired` member: a boolean, the query's textual forms (but not
/// the empty string, which means "present" only in a query), 0 or 1, or null.
fn expired_member<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<bool>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("expired as true or false (or \"true\", \"1\", \"false\", \"0\")")
        }

        fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
            Ok(Some(value))
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            match value {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::invalid_value(
                    serde::de::Unexpected::Unsigned(value),
                    &self,
                )),
            }
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            match expired_text(value) {
                Some(expired) if !value.is_empty() => Ok(Some(expired)),
                _ => Err(E::invalid_value(
                    serde::de::Unexpected::Str(&truncate(value, 64)),
                    &self,
                )),
            }
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Visitor)
}
/// Reads an `/auth` request into the domain's [`TokenRequest`].
/// # Errors
///
/// An [`ApiError`]: 413 `payload_too_large` for a body over the limit,
/// else 400 for an unreadable body or Content-Type, a repeated header, a
/// malformed Authorization header, or a field that is bad or said twice
/// with two values.
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
    refuse_repeated_headers(headers)?;
    let query = query.unwrap_or_default();
    refuse_body_members_in_query(query)?;
    let query_expired = query_expired(query)?;
    let query_alg = query_alg(query)?;
    let query_defect = query_text(query, "defect")?;
    let mut fields = parse_body(headers, &body)?;
    let credentials = credentials(headers, &mut fields)?;
    let expired = match (query_expired, fields.expired) {
        (Some(in_query), Some(in_body)) if in_query != in_body => {
            return Err(Error::invalid(
                "expired",
                format!(
                    "the query says expired={in_query} but the body says expired={in_body}; \
                     send it in one place, or the same value in both"
                ),
            )
            .into());
        }
        (in_query, in_body) => in_query.or(in_body).unwrap_or(false),
    };
    let alg = match (query_alg, fields.alg) {
        (Some(in_query), Some(in_body)) if in_query != in_body => {
            return Err(Error::invalid(
                "alg",
                format!(
                    "the query says alg={} but the body says alg={}; send it in one place, \
                     or the same value in both",
                    truncate(&in_query, 64),
                    truncate(&in_body, 64)
                ),
            )
            .into());
        }
        (in_query, in_body) => in_query.or(in_body),
    };
    let defect = match (query_defect, fields.defect) {
        (Some(in_query), Some(in_body)) if in_query != in_body => {
            return Err(Error::invalid(
                "defect",
                format!(
                    "the query says defect={} but the body says defect={}; send it in one \
                     place, or the same value in both",
                    truncate(&in_query, 64),
                    truncate(&in_body, 64)
                ),
            )
            .into());
        }
        (in_query, in_body) => in_query.or(in_body),
    };
    let audience = one_of("audience", fields.audience, "aud", fields.aud)?;
    let lifetime_seconds = one_of(
        "lifetime_seconds",
        fields.lifetime_seconds,
        "expires_in",
        fields.expires_in,
    )?;
    let request = TokenRequest {
        expired,
        subject: fields.username,
        audience: audience.map(OneOrMany::into_vec).unwrap_or_default(),
        lifetime_seconds,
        alg,
        defect,
        claims: fields.claims.unwrap_or_default(),
    };
    Ok((request, credentials))
}

/// A member that has two names: either name, not both.
fn one_of<T>(
    name: &str,
    value: Option<T>,
    alias: &str,
    by_alias: Option<T>,
) -> Result<Option<T>, ApiError> {
    match (value, by_alias) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{name} and {alias} are two names for the same member; send one of them"
        ))),
        (value, by_alias) => Ok(value.or(by_alias)),
    }
}

/// Two `Authorization` headers would leave us to pick whose credentials
/// count, two `Content-Type` headers how to read the body.
fn refuse_repeated_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    for (name, shown) in [
        (header::AUTHORIZATION, "Authorization"),
        (header::CONTENT_TYPE, "Content-Type"),
    ] {
        if headers.get_all(&name).iter().nth(1).is_some() {
            return Err(ApiError::bad_request(format!(
                "the {shown} header is sent more than once; send it once"
            )));
        }
    }
    Ok(())
}

fn refuse_body_members_in_query(query: &str) -> Result<(), ApiError> {
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if let Some(member) = BODY_MEMBERS.iter().find(|member| **member == name) {
            return Err(ApiError::bad_request(format!(
                "{member} was sent in the query string; only expired, alg and defect belong there, \
                 send {member} in a form or JSON body"
            )));
        }
    }
    Ok(())
}

/// `expired` present with no value, `true` or `1`: expired; `false`, `0` or
/// absent: valid; anything else is refused.
#[cfg(test)]
fn parse_expired(query: &str) -> Result<bool, Error> {
    Ok(query_expired(query)?.unwrap_or(false))
}

/// The query's `expired`, if present: repeated only with the same meaning.
fn query_expired(query: &str) -> Result<Option<bool>, Error> {
    let mut expired = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "expired" {
            continue;
        }
        let Some(this) = expired_text(&value) else {
            return Err(Error::invalid(
                "expired",
                format!(
                    "unsupported value {:?}; {EXPIRED_VALUES}",
                    truncate(&value, 64)
                ),
            ));
        };
        if expired.is_some_and(|seen| seen != this) {
            return Err(Error::invalid(
                "expired",
                "given more than once with different values",
            ));
        }
        expired = Some(this);
    }
    Ok(expired)
}

/// The query's `alg`, if present: repeated only with the same value.
fn query_alg(query: &str) -> Result<Option<String>, Error> {
    query_text(query, "alg")
}

/// The query's `field` (`alg`, `defect`), if present: repeated only with
/// the same value.
fn query_text(query: &str, field: &'static str) -> Result<Option<String>, Error> {
    let mut found: Option<String> = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != field {
            continue;
        }
        if found.as_deref().is_some_and(|seen| seen != value) {
            return Err(Error::invalid(
                field,
                "given more than once with different values",
            ));
        }
        found = Some(value.into_owned());
    }
    Ok(found)
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
        // nothing. Read the body if it is a JSON object (by the same rules
        // as application/json), otherwise ignore it.
        "" | "text/plain" => {
            if serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object()) {
                parse_json_body(body).map_err(ApiError::bad_request)
            } else {
                Ok(AuthBody::default())
            }
        }
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
    // serde reads a struct from an array too, by position; a body is an
    // object of named members, so anything else is refused before it is read.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => {}
        Some(_) => return Err("the JSON body must be an object of named members".to_owned()),
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// The form's members, by the query's rules for `expired`. `audience` (or
/// `aud`) may repeat to make a list; every other member appears once.
fn parse_form_body(body: &[u8]) -> Result<AuthBody, String> {
    std::str::from_utf8(body).map_err(|_| "form body is not valid UTF-8".to_owned())?;
    let mut fields = AuthBody::default();
    let mut audience = Vec::new();
    let mut aud = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        let once = |slot: &mut Option<String>| {
            if slot.is_some() {
                return Err(format!(
                    "{name} is given more than once in the form body; send it once"
                ));
            }
            *slot = Some(value.clone().into_owned());
            Ok(())
        };
        let seconds = |slot: &mut Option<i64>| {
            if slot.is_some() {
                return Err(format!(
                    "{name} is given more than once in the form body; send it once"
                ));
            }
            let secs = value
                .parse()
                .map_err(|_| format!("{name} must be a whole number of seconds"))?;
            *slot = Some(secs);
            Ok(())
        };
        match name.as_ref() {
            "username" => once(&mut fields.username)?,
            "client_id" => once(&mut fields.client_id)?,
            "client_secret" => {
                if fields.client_secret.is_some() {
                    return Err(format!(
                        "{name} is given more than once in the form body; send it once"
                    ));
                }
                fields.client_secret = Some(SecretString::from(value.as_ref()));
            }
            "alg" => once(&mut fields.alg)?,
            "defect" => once(&mut fields.defect)?,
            "claims" => {
                if fields.claims.is_some() {
                    return Err(
                        "claims is given more than once in the form body; send it once".into(),
                    );
                }
                let claims = crate::service::claims::parse_claims_json(&value)
                    .map_err(|err| err.to_string())?;
                fields.claims = Some(claims);
            }
            "audience" => audience.push(value.into_owned()),
            "aud" => aud.push(value.into_owned()),
            "lifetime_seconds" => seconds(&mut fields.lifetime_seconds)?,
            "expires_in" => seconds(&mut fields.expires_in)?,
            "expired" => {
                if fields.expired.is_some() {
                    return Err(
                        "expired is given more than once in the form body; send it once".into(),
                    );
                }
                let Some(expired) = expired_text(&value) else {
                    return Err(format!(
                        "expired: unsupported value {:?}; {EXPIRED_VALUES}",
                        truncate(&value, 64)
                    ));
                };
                fields.expired = Some(expired);
            }
            _ => {}
        }
    }
    fields.audience = (!audience.is_empty()).then_some(OneOrMany::Many(audience));
    fields.aud = (!aud.is_empty()).then_some(OneOrMany::Many(aud));
    Ok(fields)
}

/// Credentials from HTTP Basic, or else from `client_id`/`client_secret`
/// body fields; never both (RFC 6749 section 2.3: one method per request).
fn credentials(
    headers: &HeaderMap,
    fields: &mut AuthBody,
) -> Result<Option<Credentials>, ApiError> {
    let in_body = fields.client_id.is_some() || fields.client_secret.is_some();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Authorization header is not valid text"))?;
        if let Some(found) =
            Credentials::from_authorization(value).map_err(ApiError::bad_request)?
        {
            if in_body {
                return Err(ApiError::bad_request(
                    "client credentials are in both the Authorization header and the body \
                     (client_id/client_secret); use one method (RFC 6749 section 2.3)",
                ));
            }
            return Ok(Some(found));
        }
    }
    match (fields.client_id.take(), fields.client_secret.take()) {
        (Some(id), secret) => Ok(Some(Credentials {
            id,
            secret: secret.unwrap_or_else(|| SecretString::from("")),
        })),
        (None, Some(_)) => Err(ApiError::bad_request(
            "client_secret is given without client_id; send both, or use HTTP Basic",
        )),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_json_body_is_an_object_never_an_array_read_by_position() {
        let refused = parse_json_body(br#"["zed",null,null,null,null,null,null,null,null,null]"#);
        assert_eq!(
            refused.unwrap_err(),
            "the JSON body must be an object of named members"
        );
        assert!(parse_json_body(b" 42").is_err());
        let read = parse_json_body(br#" {"username":"zed"}"#).unwrap();
        assert_eq!(read.username.as_deref(), Some("zed"));
    }

    use super::*;

    #[test]
    fn a_client_secret_never_prints_from_either_body() {
        let json = parse_json_body(br#"{"client_id":"a","client_secret":"hunter2"}"#).unwrap();
        let form = parse_form_body(b"client_id=a&client_secret=hunter2").unwrap();
        for body in [json, form] {
            let shown = format!("{body:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("client_id: Some(\"a\")"), "{shown}");
        }
    }

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

    fn read(
        query: &str,
        headers: &[(header::HeaderName, &'static str)],
        body: &'static str,
    ) -> Result<(TokenRequest, Option<Credentials>), String> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(name.clone(), axum::http::HeaderValue::from_static(value));
        }
        auth_request(Some(query), &map, Ok(Bytes::from_static(body.as_bytes())))
            .map_err(|err| err.detail)
    }

    const JSON: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/json");
    const FORM: (header::HeaderName, &str) =
        (header::CONTENT_TYPE, "application/x-www-form-urlencoded");

    #[test]
    fn expired_is_read_from_either_body_and_must_agree_with_the_query() {
        for (query, headers, body, want) in [
            ("", &[JSON], r#"{"expired":true}"#, true),
            ("", &[JSON], r#"{"expired":"0"}"#, false),
            ("", &[JSON], r#"{"expired":1}"#, true),
            ("", &[JSON], r#"{"expired":null}"#, false),
            ("", &[FORM], "expired", true),
            ("", &[FORM], "expired=false", false),
            ("expired=1", &[JSON], r#"{"expired":"true"}"#, true),
            ("expired", &[FORM], "expired=1", true),
            ("expired=false", &[JSON], "", false),
        ] {
            let (request, _) = read(query, headers, body).unwrap();
            assert_eq!(request.expired, want, "{query} {body}");
        }
        for (query, headers, body) in [
            ("", &[JSON], r#"{"expired":"yes"}"#),
            ("", &[JSON], r#"{"expired":""}"#),
            ("", &[JSON], r#"{"expired":2}"#),
            ("", &[FORM], "expired=maybe"),
            ("", &[FORM], "expired=1&expired=1"),
            ("expired=true", &[JSON], r#"{"expired":false}"#),
            ("expired=0", &[FORM], "expired"),
        ] {
            let err = read(query, headers, body).unwrap_err();
            assert!(err.contains("expired"), "{query} {body}: {err}");
        }
    }

    #[test]
    fn the_same_member_twice_is_refused_wherever_it_comes_from() {
        let basic = "Basic YTpi";
        for (what, query, headers, body, named) in [
            (
                "form field twice",
                "",
                vec![FORM],
                "username=a&username=a",
                "username",
            ),
            (
                "client_id twice",
                "",
                vec![FORM],
                "client_id=a&client_id=b",
                "client_id",
            ),
            (
                "lifetime and alias, form",
                "",
                vec![FORM],
                "expires_in=5&lifetime_seconds=5",
                "expires_in",
            ),
            (
                "lifetime and alias, JSON",
                "",
                vec![JSON],
                r#"{"expires_in":5,"lifetime_seconds":5}"#,
                "expires_in",
            ),
            (
                "audience and alias",
                "",
                vec![JSON],
                r#"{"aud":["a"],"audience":"b"}"#,
                "aud",
            ),
            (
                "JSON member twice",
                "",
                vec![JSON],
                r#"{"username":"a","username":"b"}"#,
                "username",
            ),
            (
                "JSON twice as text/plain",
                "",
                vec![(header::CONTENT_TYPE, "text/plain")],
                r#"{"expires_in":1,"expires_in":2}"#,
                "expires_in",
            ),
            (
                "JSON twice with no type",
                "",
                vec![],
                r#"{"client_id":"a","client_id":"b"}"#,
                "client_id",
            ),
            (
                "two Authorization",
                "",
                vec![
                    (header::AUTHORIZATION, basic),
                    (header::AUTHORIZATION, basic),
                ],
                "",
                "Authorization",
            ),
            (
                "two Content-Type",
                "",
                vec![JSON, JSON],
                "{}",
                "Content-Type",
            ),
            (
                "Basic and body id",
                "",
                vec![(header::AUTHORIZATION, basic), FORM],
                "client_id=a",
                "client_id",
            ),
            (
                "Basic and body secret",
                "",
                vec![(header::AUTHORIZATION, basic), JSON],
                r#"{"client_secret":"b"}"#,
                "Authorization",
            ),
            (
                "secret without id",
                "",
                vec![JSON],
                r#"{"client_secret":"b"}"#,
                "client_id",
            ),
            ("body member in the query", "aud=x", vec![], "", "aud"),
        ] {
            let err = read(query, &headers, body).unwrap_err();
            assert!(err.contains(named), "{what}: {err}");
        }
    }

    #[test]
    fn lists_bearer_and_unknown_members_are_not_conflicts() {
        let (request, credentials) = read(
            "other=1",
            &[(header::AUTHORIZATION, "Bearer t"), FORM],
            "aud=a&aud=b&client_id=c&grant_type=x&grant_type=y",
        )
        .unwrap();
        assert_eq!(request.audience, ["a", "b"]);
        assert_eq!(credentials.map(|c| c.id).as_deref(), Some("c"));
        let (request, _) = read("", &[JSON], r#"{"expires_in":60,"scope":"a b"}"#).unwrap();
        assert_eq!(request.lifetime_seconds, Some(60));
        // Text that is not a JSON object, sent as text/plain, is still ignored.
        let (request, _) = read(
            "",
            &[(header::CONTENT_TYPE, "text/plain")],
            "username=alice",
        )
        .unwrap();
        assert_eq!(request, TokenRequest::default());
    }
}
