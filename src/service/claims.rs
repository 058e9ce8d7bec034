//! Custom claims: what a token request may add beside the claims the server
//! sets itself, the bounds on them (in one place), and how a registered
//! client's entry shapes them (`allowed_claims` it may add, static `claims`
//! it always carries).
//!
//! The rules, the same through every door and for `/auth` tokens as for
//! RFC 9068 access tokens:
//! - any JSON values, at most [`MAX_CUSTOM_CLAIMS`] names and
//!   [`MAX_CUSTOM_CLAIMS_BYTES`] bytes serialized;
//! - a registered claim ([`RESERVED_CLAIMS`]: `iss`, `sub`, `aud`, `exp`,
//!   `nbf`, `iat`, `jti`, `client_id`, `scope`…) is refused, never silently
//!   overridden: those have their own request fields or are the server's;
//! - with a clients file, a client may add only the names its entry's
//!   `allowed_claims` lists, and its static `claims` always apply: asking for
//!   one of them is refused (a static claim is the registration's word, not
//!   the caller's), unless the value asked for is the same.
//!
//! How claims arrive (a JSON member, a form field holding a JSON object, a
//! `google.protobuf.Struct`) is the transports'.

use serde_json::{Map, Value};

use super::oauth::RESERVED_CLAIMS;
use crate::{access::Client, error::Error};

/// The most custom claims one request may add.
pub const MAX_CUSTOM_CLAIMS: usize = 32;
/// The most bytes the added claims may take as compact JSON.
pub const MAX_CUSTOM_CLAIMS_BYTES: usize = 4096;
/// The longest claim name, in characters.
pub const MAX_CLAIM_NAME_LEN: usize = 256;

/// Reads a JSON object given as text (a form field, gRPC's `claims_json`).
///
/// # Errors
///
/// [`Error::InvalidRequest`] (field `claims`) when it is not a JSON object.
pub fn parse_claims_json(text: &str) -> Result<Map<String, Value>, Error> {
    if text.len() > MAX_CUSTOM_CLAIMS_BYTES * 2 {
        return Err(too_large());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(claims)) => Ok(claims),
        Ok(_) => Err(Error::invalid(
            "claims",
            "must be a JSON object of claim names and values, e.g. {\"roles\":[\"admin\"]}",
        )),
        Err(err) => Err(Error::invalid(
            "claims",
            format!("is not valid JSON ({err}); send a JSON object"),
        )),
    }
}

fn too_large() -> Error {
    Error::invalid(
        "claims",
        format!("at most {MAX_CUSTOM_CLAIMS_BYTES} bytes of JSON"),
    )
}

/// Checks the claims a request adds: bounds, names, no registered claim.
/// Pure, so the rules are unit-tested directly.
///
/// # Errors
///
/// [`Error::InvalidRequest`] (field `claims`) naming what is wrong.
pub fn check_custom_claims(claims: &Map<String, Value>) -> Result<(), Error> {
    if claims.len() > MAX_CUSTOM_CLAIMS {
        return Err(Error::invalid(
            "claims",
            format!("at most {MAX_CUSTOM_CLAIMS} claims, got {}", claims.len()),
        ));
    }
    if let Some(reserved) = claims
        .keys()
        .find(|name| RESERVED_CLAIMS.contains(&name.as_str()))
    {
        return Err(Error::invalid(
            "claims",
            format!(
                "{reserved:?} is a registered claim the server sets itself (use its own \
                 field where it has one: username/subject, audience, scope); custom claims \
                 may not name any of {}",
                RESERVED_CLAIMS.join(", ")
            ),
        ));
    }
    for name in claims.keys() {
        if name.is_empty() || name.chars().count() > MAX_CLAIM_NAME_LEN {
            return Err(Error::invalid(
                "claims",
                format!("a claim name must be 1 to {MAX_CLAIM_NAME_LEN} characters"),
            ));
        }
        crate::text::check_visible(name)
            .map_err(|hidden| Error::invalid("claims", format!("claim name {name:?}: {hidden}")))?;
    }
    if serde_json::to_vec(claims).map_or(usize::MAX, |json| json.len()) > MAX_CUSTOM_CLAIMS_BYTES {
        return Err(too_large());
    }
    Ok(())
}

/// The extra claims a token carries: the client's static claims, then
/// those the request adds (already checked by [`check_custom_claims`]), which
/// the client's entry must allow.
///
/// # Errors
///
/// [`Error::InvalidRequest`] (field `claims`) for a name the client may not
/// add, or one of its static claims asked for with another value.
pub fn claims_for(
    client: Option<&Client>,
    requested: &Map<String, Value>,
) -> Result<Map<String, Value>, Error> {
    let Some(client) = client else {
        return Ok(requested.clone());
    };
    let grants = &client.grants;
    let mut claims = grants.claims.clone();
    for (name, value) in requested {
        if let Some(fixed) = grants.claims.get(name) {
            if fixed == value {
                continue;
            }
            return Err(Error::invalid(
                "claims",
                format!(
                    "{name:?} is a static claim of client {}: its registration sets it, \
                     a request cannot change it",
                    client.id
                ),
            ));
        }
        if !grants.allowed_claims.iter().any(|allowed| allowed == name) {
            let allowed = if grants.allowed_claims.is_empty() {
                "none (its entry has no allowed_claims)".to_owned()
            } else {
                grants.allowed_claims.join(", ")
            };
            return Err(Error::invalid(
                "claims",
                format!(
                    "client {} may not add claim {name:?}; its entry allows: {allowed}",
                    client.id
                ),
            ));
        }
        claims.insert(name.clone(), value.clone());
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn any_json_values_pass_within_the_bounds() {
        let claims = object(json!({"roles": ["a", "b"], "tenant": {"id": 7}, "beta": true}));
        assert!(check_custom_claims(&claims).is_ok());
    }

    #[test]
    fn registered_claims_are_refused_by_name() {
        for name in ["iss", "exp", "sub", "aud", "scope", "client_id", "jti"] {
            let err = check_custom_claims(&object(json!({name: "x"})))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{name:?}")), "{err}");
        }
    }

    #[test]
    fn too_many_or_too_large_is_refused() {
        let many: Map<String, Value> = (0..=MAX_CUSTOM_CLAIMS)
            .map(|i| (format!("c{i}"), Value::from(i)))
            .collect();
        assert!(check_custom_claims(&many).is_err());
        let large = object(json!({"blob": "x".repeat(MAX_CUSTOM_CLAIMS_BYTES)}));
        assert!(
            check_custom_claims(&large)
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
    }

    #[test]
    fn claims_json_must_be_an_object() {
        assert!(parse_claims_json(r#"{"a":1}"#).is_ok());
        assert!(parse_claims_json("[1]").is_err());
        assert!(parse_claims_json("{").is_err());
    }
}
