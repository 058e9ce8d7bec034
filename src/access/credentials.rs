//! What a caller presents: [`Credentials`] (a client id and secret, read from
//! HTTP Basic, form fields or request metadata) and [`Caller`] (those, if any,
//! plus the peer address). Parsing the `Authorization` header lives here;
//! checking a secret is the client registry's job, and the budgets are the
//! rate limits'.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};

/// Credentials a caller presented (HTTP Basic, form fields, gRPC metadata).
/// The secret is a `secrecy` type like every other secret: zeroized on drop,
/// and `Debug` shows the id only.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The `client_id` (RFC 6749 §2.3.1).
    pub id: String,
    /// The `client_secret` (RFC 6749 §2.3.1).
    pub secret: SecretString,
}

/// Two readings of a request compare equal when they carry the same id and
/// secret (the doors' tests compare what they read). Checking a secret
/// against a client's is the registry's job, in constant time.
impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.secret.expose_secret() == other.secret.expose_secret()
    }
}

impl Eq for Credentials {}

impl Credentials {
    /// Reads an `Authorization` header value. `Ok(None)` for other schemes
    /// (Bearer carries no credentials of ours); `Err` for malformed Basic.
    ///
    /// # Errors
    ///
    /// A message for the client when the Basic value is not base64 of
    /// UTF-8 `id:secret`.
    pub fn from_authorization(value: &str) -> Result<Option<Self>, &'static str> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        const MALFORMED: &str =
            "malformed Authorization header: expected Basic base64(id:secret) or Bearer TOKEN";
        let value = value.trim();
        let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| MALFORMED)?;
        let decoded = String::from_utf8(decoded).map_err(|_| MALFORMED)?;
        let (id, secret) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
        // RFC 6749 section 2.3.1: the id and the secret are form-encoded
        // before they are joined, so `+`, `%2B`, `%3A`… are decoded here.
        let (id, secret) = (form_decode(id), form_decode(secret));
        Ok((!id.is_empty()).then(|| Self {
            id,
            secret: SecretString::from(secret),
        }))
    }
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
fn form_decode(value: &str) -> String {
    form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, decoded)| decoded.into_owned())
        .unwrap_or_default()
}

/// Who is asking, as far as the transport can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The credentials presented, if any.
    pub credentials: Option<Credentials>,
    /// The peer's address, for per-address rate limits without client auth.
    pub addr: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials {
            id: id.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn basic_credentials_are_read_and_malformed_ones_refused() {
        assert_eq!(
            Credentials::from_authorization("Basic c3ZjOnMzY3JldA==").unwrap(),
            Some(creds("svc", "s3cret"))
        );
        assert_eq!(
            Credentials::from_authorization("basic c3Zj").unwrap(),
            Some(creds("svc", ""))
        );
        assert_eq!(Credentials::from_authorization("Bearer abc").unwrap(), None);
        assert!(Credentials::from_authorization("Basic !!!").is_err());
        assert!(
            Credentials::from_authorization("Basic /w==").is_err(),
            "not UTF-8"
        );
    }

    #[test]
    fn basic_credentials_without_a_client_id_name_nobody() {
        // base64(":s3cret"): a secret with no id is no credentials at all.
        assert_eq!(
            Credentials::from_authorization("Basic OnMzY3JldA==").unwrap(),
            None
        );
        assert_eq!(Credentials::from_authorization("Basic ").unwrap(), None);
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let shown = format!("{:?}", creds("svc", "s3cret"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("svc"), "the id is not a secret: {shown}");
    }
}
