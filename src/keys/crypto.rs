//! RSA-2048 key material: generation, the public JWK, the RFC 7638 `kid`, and
//! RS256 compact signing.
//!
//! All RSA work goes through aws-lc-rs. A [`SigningKey`] is parsed once, when it
//! is generated or unsealed, and then signs any number of tokens; the compact
//! JWT header is encoded once per key too. Sealing the private half for the store
//! is `seal.rs`'s job; deciding which key signs is the key ring's.

use std::fmt;

use aws_lc_rs::{
    digest,
    encoding::AsDer,
    rsa::KeySize,
    signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::Serialize;

/// The only modulus size this service creates or accepts.
pub const MODULUS_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("RSA key generation failed")]
    Generate,
    #[error("stored private key is not a valid RSA-{MODULUS_BITS} PKCS#8 key")]
    Rejected,
    #[error("RSA signing failed")]
    Sign,
    #[error("the system random number generator failed")]
    Random,
}

/// The public half of a key as published in the JWKS (RFC 7517).
/// Field order is the order clients see in the JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
    pub kid: String,
    pub n: String,
    pub e: String,
}

/// A parsed RSA private key with its public JWK and pre-encoded JWT header.
pub struct SigningKey {
    pair: RsaKeyPair,
    jwk: PublicJwk,
    /// `base64url({"alg":"RS256","typ":"JWT","kid":…})`, the first JWT segment.
    encoded_header: String,
}

impl fmt::Debug for SigningKey {
    // Never print key material, not even by accident in a log or panic message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.jwk.kid)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key. Takes tens to hundreds of milliseconds:
    /// call it from a blocking thread, never an async worker.
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| CryptoError::Generate)?;
        Self::from_pair(pair).map_err(|_| CryptoError::Generate)
    }

    /// Parses a PKCS#8 (v1) DER private key, as produced by [`Self::to_pkcs8_der`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| CryptoError::Rejected)?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: RsaKeyPair) -> Result<Self, CryptoError> {
        if pair.public_modulus_len() * 8 != MODULUS_BITS {
            return Err(CryptoError::Rejected);
        }
        let public = pair.public_key();
        let n = B64.encode(public.modulus().big_endian_without_leading_zero());
        let e = B64.encode(public.exponent().big_endian_without_leading_zero());
        let kid = thumbprint(&n, &e);
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let encoded_header = B64.encode(header.to_string());
        let jwk = PublicJwk {
            kty: "RSA",
            use_: "sig",
            alg: "RS256",
            kid,
            n,
            e,
        };
        Ok(Self {
            pair,
            jwk,
            encoded_header,
        })
    }

    /// The private key as PKCS#8 DER, for sealing. Handle with care: it is the secret.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.pair
            .as_der()
            .map(|der| der.as_ref().to_vec())
            .map_err(|_| CryptoError::Rejected)
    }

    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    pub fn jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// Signs `claims` (a JSON object) as a compact RS256 JWS: one RSA signature.
    pub fn sign_jwt(&self, claims_json: &[u8]) -> Result<String, CryptoError> {
        let sig_len = self.pair.public_modulus_len();
        let mut token = String::with_capacity(
            self.encoded_header.len() + 2 + (claims_json.len() + sig_len) * 4 / 3 + 4,
        );
        token.push_str(&self.encoded_header);
        token.push('.');
        B64.encode_string(claims_json, &mut token);

        let mut signature = vec![0u8; sig_len];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut signature)
            .map_err(|_| CryptoError::Sign)?;
        token.push('.');
        B64.encode_string(&signature, &mut token);
        Ok(token)
    }
}

/// JWS with another `typ` (RFC 9068 access tokens say `at+jwt`), and checking
/// this key's own signatures (token introspection).
impl SigningKey {
    /// Signs `claims` (a JSON object) as a compact RS256 JWS whose header
    /// carries `typ`: one RSA signature, like [`Self::sign_jwt`].
    pub fn sign_typed_jwt(&self, typ: &str, claims_json: &[u8]) -> Result<String, CryptoError> {
        let header = serde_json::json!({"alg": "RS256", "typ": typ, "kid": self.jwk.kid});
        let mut token = B64.encode(header.to_string());
        token.push('.');
        B64.encode_string(claims_json, &mut token);
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut signature)
            .map_err(|_| CryptoError::Sign)?;
        token.push('.');
        B64.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// Whether `signature` is this key's RS256 signature of `signing_input`.
    pub fn verifies(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        )
        .verify(signing_input, signature)
        .is_ok()
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key: the
/// required members in lexicographic order, no whitespace.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    B64.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

/// 128 random bits, base64url: unique `jti`s without coordination between replicas.
///
/// # Errors
///
/// [`CryptoError::Random`] when the system RNG fails: an id that is not
/// random (all zeros) would repeat, so none is made.
pub fn random_id() -> Result<String, CryptoError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(B64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 section 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_key_round_trips_through_pkcs8_with_the_same_kid() {
        let key = SigningKey::generate().unwrap();
        assert_eq!(key.jwk().e, "AQAB");
        assert_eq!(B64.decode(&key.jwk().n).unwrap().len() * 8, MODULUS_BITS);
        let again = SigningKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.jwk(), key.jwk());
    }

    #[test]
    fn debug_output_redacts_the_private_key() {
        let key = SigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        assert!(!shown.contains(&key.jwk().n));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn garbage_is_rejected_not_parsed() {
        assert!(matches!(
            SigningKey::from_pkcs8_der(b"not a key"),
            Err(CryptoError::Rejected)
        ));
    }

    #[test]
    fn a_signed_jwt_carries_the_kid_and_claims_and_verifies_with_the_published_jwk() {
        use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};

        let key = SigningKey::generate().unwrap();
        let claims = br#"{"sub":"svc","exp":2000000000}"#;
        let token = key.sign_jwt(claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts[..] else {
            panic!("not a compact JWS: {token}");
        };

        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": key.kid()})
        );
        assert_eq!(B64.decode(payload).unwrap(), claims);

        let public = RsaPublicKeyComponents {
            n: B64.decode(&key.jwk().n).unwrap(),
            e: B64.decode(&key.jwk().e).unwrap(),
        };
        let signed = &token[..token.rfind('.').unwrap()];
        let signature = B64.decode(signature).unwrap();
        assert!(
            public
                .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
                .is_ok()
        );
        let mut tampered = signed.to_owned();
        tampered.push('x');
        assert!(
            public
                .verify(&RSA_PKCS1_2048_8192_SHA256, tampered.as_bytes(), &signature)
                .is_err(),
            "the signature covers the header and claims"
        );
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint_of_the_published_jwk() {
        let key = SigningKey::generate().unwrap();
        assert_eq!(key.kid(), thumbprint(&key.jwk().n, &key.jwk().e));
        assert_eq!(key.kid(), key.jwk().kid);
        assert_eq!(
            (key.jwk().kty, key.jwk().use_, key.jwk().alg),
            ("RSA", "sig", "RS256")
        );
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id().unwrap(), random_id().unwrap());
        assert_eq!(random_id().unwrap().len(), 22);
    }
}
