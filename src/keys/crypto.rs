//! Key material for every algorithm: generation, the public JWK, the RFC 7638
//! `kid`, and compact JWS signing (RS256, PS256, ES256, EdDSA).
//!
//! All crypto goes through aws-lc-rs. A [`SigningKey`] is parsed once, when it
//! is generated or unsealed, and then signs any number of tokens; the compact
//! JWT header is encoded once per key too. Sealing the private half for the store
//! is `seal.rs`'s job; deciding which key signs is the key ring's.

use std::{fmt, sync::Arc};

use aws_lc_rs::{
    digest,
    encoding::AsDer,
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
        KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
        RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256, RsaEncoding, RsaKeyPair, VerificationAlgorithm,
    },
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::Serialize;

use super::pkcs11::Token;

pub use super::algorithm::{Algorithm, RsaKeySize};

/// The modulus size of RSA keys by default (`--rsa-key-bits`).
pub const MODULUS_BITS: usize = 2048;

/// What the cryptography library refused, and for which algorithm.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key could not be generated.
    #[error("{0} key generation failed")]
    Generate(Algorithm),
    #[error(
        "stored private key is not a valid {0} PKCS#8 key (RSA: 2048, 3072 or 4096 bits; \
         ES256: P-256; EdDSA: Ed25519)"
    )]
    /// Key bytes that are not a key of this algorithm (and size).
    Rejected(Algorithm),
    /// A signature could not be made.
    #[error("{0} signing failed")]
    Sign(Algorithm),
    /// The token holding the key cannot be reached right now.
    #[error("{0} signing failed: {1}")]
    TokenUnavailable(Algorithm, String),
    /// The token holding the key refused to sign.
    #[error("{0} signing failed: {1}")]
    TokenSign(Algorithm, String),
    /// The system random number generator failed (no `jti`, no kid).
    #[error("the system random number generator failed")]
    Random,
}

/// The public half of a key as published in the JWKS (RFC 7517).
/// Field order is the order clients see in the JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    /// The key type, `RSA`, `EC` or `OKP` (RFC 7517 §4.1).
    pub kty: &'static str,
    /// Always `sig` (RFC 7517 §4.2).
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// The algorithm it signs with (RFC 7517 §4.4).
    pub alg: &'static str,
    /// The key id tokens name in their header (RFC 7517 §4.5).
    pub kid: String,
    /// The members of its key type.
    #[serde(flatten)]
    pub public: PublicMembers,
}

/// The public members of a JWK, by key type, base64url without padding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PublicMembers {
    /// RFC 7518 §6.3.1: modulus and exponent.
    Rsa {
        /// The modulus.
        n: String,
        /// The public exponent.
        e: String,
    },
    /// RFC 7518 §6.2.1: the curve (`P-256`) and the point's coordinates.
    Ec {
        /// The curve, `P-256`.
        crv: &'static str,
        /// The x coordinate.
        x: String,
        /// The y coordinate.
        y: String,
    },
    /// RFC 8037 §2: the curve (`Ed25519`) and the public key.
    Okp {
        /// The curve, `Ed25519`.
        crv: &'static str,
        /// The public key.
        x: String,
    },
}

/// The `crv` of ES256 keys (RFC 7518 §6.2.1.1).
pub const P256: &str = "P-256";
/// The `crv` of EdDSA keys (RFC 8037 §2).
pub const ED25519: &str = "Ed25519";

impl PublicMembers {
    /// RFC 7638 JWK thumbprint (SHA-256, base64url): the members the key type
    /// requires, in lexicographic order, no whitespace (§3.2).
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            Self::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            Self::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            Self::Okp { crv, x } => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#),
        };
        B64.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    }
}

/// A parsed private key of one algorithm.
enum Pair {
    Rsa {
        pair: RsaKeyPair,
        padding: &'static dyn RsaEncoding,
    },
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    /// Held in a PKCS#11 token: only its public half is here.
    Token(Arc<Token>),
}

/// A parsed private key with its public JWK and pre-encoded JWT header.
pub struct SigningKey {
    alg: Algorithm,
    pair: Pair,
    jwk: PublicJwk,
    /// `base64url({"alg":…,"typ":"JWT","kid":…})`, the first JWT segment.
    encoded_header: String,
    /// The public half parsed for verification once, not per token
    /// introspected (aws-lc-rs would parse the DER and set up the key each time).
    verifier: ParsedPublicKey,
}

impl fmt::Debug for SigningKey {
    // Never print key material, not even by accident in a log or panic message.
    // Hand-written rather than a `secrecy` type: the private half is a parsed
    // aws-lc-rs key pair, not a string or bytes we hold, and `Debug` should
    // still say which key (alg, kid) it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.jwk.kid)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Generates a fresh RS256 RSA-2048 key (the default algorithm and size).
    ///
    /// # Errors
    ///
    /// [`CryptoError::Generate`] when the library cannot make one.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::generate_for(Algorithm::Rs256, RsaKeySize::default())
    }

    /// Generates a fresh key for `alg`; RSA keys get a `rsa_size` modulus.
    /// RSA generation takes tens of milliseconds to seconds: call it from a
    /// blocking thread, never an async worker.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Generate`] when the library cannot make one.
    pub fn generate_for(alg: Algorithm, rsa_size: RsaKeySize) -> Result<Self, CryptoError> {
        let failed = |_| CryptoError::Generate(alg);
        let pair = match alg {
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let size = match rsa_size {
                    RsaKeySize::Bits2048 => KeySize::Rsa2048,
                    RsaKeySize::Bits3072 => KeySize::Rsa3072,
                    RsaKeySize::Bits4096 => KeySize::Rsa4096,
                };
                rsa_pair(alg, RsaKeyPair::generate(size).map_err(failed)?)
            }
            Algorithm::Es256 => {
                Pair::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?)
            }
            Algorithm::EdDsa => Pair::Ed(Ed25519KeyPair::generate().map_err(failed)?),
        };
        Self::from_pair(alg, pair).map_err(|_| CryptoError::Generate(alg))
    }

    /// Parses an RS256 PKCS#8 (v1) DER private key.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Rejected`] when `der` is not an RSA key of a size we accept.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        Self::from_pkcs8_der_for(Algorithm::Rs256, der)
    }

    /// Parses a PKCS#8 DER private key for `alg`, as produced by
    /// [`Self::to_pkcs8_der`]. RSA keys of any size in [`RsaKeySize`] are
    /// accepted, so a stored key outlives a change of `--rsa-key-bits`.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Rejected`] when `der` is not a key of `alg` (RSA: of a
    /// size we accept; ES256: on P-256).
    pub fn from_pkcs8_der_for(alg: Algorithm, der: &[u8]) -> Result<Self, CryptoError> {
        let rejected = |_| CryptoError::Rejected(alg);
        let pair = match alg {
            Algorithm::Rs256 | Algorithm::Ps256 => {
                rsa_pair(alg, RsaKeyPair::from_pkcs8(der).map_err(rejected)?)
            }
            Algorithm::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(rejected)?,
            ),
            Algorithm::EdDsa => Pair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?),
        };
        Self::from_pair(alg, pair)
    }

    /// A key held in `token`, whose public half (from the store) is
    /// `public`: it signs through the token, one `C_Sign` per token.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Rejected`] when `public` is not a key of `alg`.
    pub fn in_token(
        alg: Algorithm,
        public: PublicMembers,
        token: Arc<Token>,
    ) -> Result<Self, CryptoError> {
        let rejected = || CryptoError::Rejected(alg);
        let decode = |text: &str| B64.decode(text).map_err(|_| rejected());
        let public_der = match (&public, alg) {
            (PublicMembers::Rsa { n, e }, Algorithm::Rs256 | Algorithm::Ps256) => {
                let bits = decode(n)?.len() * 8;
                if RsaKeySize::from_bits(bits).is_none() {
                    return Err(rejected());
                }
                rsa_public_der(&decode(n)?, &decode(e)?)
            }
            (PublicMembers::Ec { x, y, .. }, Algorithm::Es256) => {
                let mut point = vec![4u8];
                point.extend(decode(x)?);
                point.extend(decode(y)?);
                point
            }
            (PublicMembers::Okp { x, .. }, Algorithm::EdDsa) => decode(x)?,
            _ => return Err(rejected()),
        };
        Self::from_parts(alg, Pair::Token(token), public, &public_der)
    }

    /// The token holding its private half, if a token does.
    pub fn token(&self) -> Option<&Arc<Token>> {
        match &self.pair {
            Pair::Token(token) => Some(token),
            _ => None,
        }
    }

    fn from_pair(alg: Algorithm, pair: Pair) -> Result<Self, CryptoError> {
        let public = match &pair {
            Pair::Rsa { pair, .. } => {
                if RsaKeySize::from_bits(pair.public_modulus_len() * 8).is_none() {
                    return Err(CryptoError::Rejected(alg));
                }
                let public = pair.public_key();
                PublicMembers::Rsa {
                    n: B64.encode(public.modulus().big_endian_without_leading_zero()),
                    e: B64.encode(public.exponent().big_endian_without_leading_zero()),
                }
            }
            Pair::Ec(pair) => {
                // X9.62 uncompressed point: 0x04 || X || Y, 32 bytes each on P-256.
                let point = pair.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(CryptoError::Rejected(alg));
                }
                PublicMembers::Ec {
                    crv: P256,
                    x: B64.encode(&point[1..33]),
                    y: B64.encode(&point[33..]),
                }
            }
            Pair::Ed(pair) => PublicMembers::Okp {
                crv: ED25519,
                x: B64.encode(pair.public_key().as_ref()),
            },
            Pair::Token(_) => return Err(CryptoError::Rejected(alg)),
        };
        let public_der = match &pair {
            Pair::Rsa { pair, .. } => pair.public_key().as_ref().to_vec(),
            Pair::Ec(pair) => pair.public_key().as_ref().to_vec(),
            Pair::Ed(pair) => pair.public_key().as_ref().to_vec(),
            Pair::Token(_) => return Err(CryptoError::Rejected(alg)),
        };
        Self::from_parts(alg, pair, public, &public_der)
    }

    fn from_parts(
        alg: Algorithm,
        pair: Pair,
        public: PublicMembers,
        public_der: &[u8],
    ) -> Result<Self, CryptoError> {
        let verification: &'static dyn VerificationAlgorithm = match alg {
            Algorithm::Ps256 => &RSA_PSS_2048_8192_SHA256,
            Algorithm::Rs256 => &RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Es256 => &ECDSA_P256_SHA256_FIXED,
            Algorithm::EdDsa => &aws_lc_rs::signature::ED25519,
        };
        let verifier = ParsedPublicKey::new(verification, public_der)
            .map_err(|_| CryptoError::Rejected(alg))?;
        let kid = public.thumbprint();
        let header = serde_json::json!({"alg": alg.as_str(), "typ": "JWT", "kid": kid});
        let encoded_header = B64.encode(header.to_string());
        let jwk = PublicJwk {
            kty: alg.key_type(),
            use_: "sig",
            alg: alg.as_str(),
            kid,
            public,
        };
        Ok(Self {
            alg,
            pair,
            jwk,
            encoded_header,
            verifier,
        })
    }

    /// The private key as PKCS#8 (v1) DER, for sealing. Handle with care: it is the secret.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Rejected`] when the library cannot serialise it.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        let rejected = |_| CryptoError::Rejected(self.alg);
        match &self.pair {
            Pair::Rsa { pair, .. } => pair.as_der().map(|der| der.as_ref().to_vec()),
            Pair::Ec(pair) => pair.to_pkcs8v1().map(|doc| doc.as_ref().to_vec()),
            Pair::Ed(pair) => pair.to_pkcs8v1().map(|doc| doc.as_ref().to_vec()),
            // The token never lets it out.
            Pair::Token(_) => return Err(CryptoError::Rejected(self.alg)),
        }
        .map_err(rejected)
    }

    /// The algorithm it signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// Its public half, as the JWKS publishes it.
    pub fn jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// Signs `claims` (a JSON object) as a compact JWS: one signature.
    ///
    /// # Errors
    /// [`CryptoError::Sign`] if the signature cannot be made.
    pub fn sign_jwt(&self, claims_json: &[u8]) -> Result<String, CryptoError> {
        self.sign_with_header(&self.encoded_header, claims_json)
    }

    /// `encoded_header.base64url(claims).signature`.
    fn sign_with_header(
        &self,
        encoded_header: &str,
        claims_json: &[u8],
    ) -> Result<String, CryptoError> {
        let failed = |_| CryptoError::Sign(self.alg);
        let sig_len = match &self.pair {
            Pair::Rsa { pair, .. } => pair.public_modulus_len(),
            // ES256: R || S, 32 bytes each (RFC 7518 §3.4); Ed25519: 64 bytes.
            Pair::Ec(_) | Pair::Ed(_) => 64,
            Pair::Token(_) => 512,
        };
        let mut token = String::with_capacity(
            encoded_header.len() + 2 + (claims_json.len() + sig_len) * 4 / 3 + 4,
        );
        token.push_str(encoded_header);
        token.push('.');
        B64.encode_string(claims_json, &mut token);

        // Room for the largest signature (RSA-4096), so signing allocates nothing.
        let mut buf = [0u8; 512];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signing_input = token.as_bytes();
        let signature: &[u8] = match &self.pair {
            Pair::Rsa { pair, padding } => {
                let out = buf.get_mut(..sig_len).ok_or(CryptoError::Sign(self.alg))?;
                pair.sign(*padding, &rng, signing_input, out)
                    .map_err(failed)?;
                out
            }
            Pair::Ec(pair) => {
                let signature = pair.sign(&rng, signing_input).map_err(failed)?;
                copy_into(&mut buf, signature.as_ref())
            }
            Pair::Ed(pair) => copy_into(&mut buf, pair.sign(signing_input).as_ref()),
            Pair::Token(token) => {
                let signature =
                    off_the_async_workers(|| token.sign(self.alg, &self.jwk.kid, signing_input))
                        .map_err(|err| {
                            if err.is_unavailable() {
                                CryptoError::TokenUnavailable(self.alg, err.to_string())
                            } else {
                                CryptoError::TokenSign(self.alg, err.to_string())
                            }
                        })?;
                copy_into(&mut buf, &signature)
            }
        };
        token.push('.');
        B64.encode_string(signature, &mut token);
        Ok(token)
    }
}

/// JWS with another `typ` (RFC 9068 access tokens say `at+jwt`), and checking
/// this key's own signatures (token introspection).
impl SigningKey {
    /// Signs `claims` (a JSON object) as a compact JWS of this key's algorithm
    /// whose header carries `typ`: one signature, like [`Self::sign_jwt`].
    ///
    /// # Errors
    /// [`CryptoError::Sign`] if the signature cannot be made.
    pub fn sign_typed_jwt(&self, typ: &str, claims_json: &[u8]) -> Result<String, CryptoError> {
        if typ == "JWT" {
            return self.sign_jwt(claims_json);
        }
        let header = serde_json::json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.jwk.kid});
        self.sign_with_header(&B64.encode(header.to_string()), claims_json)
    }

    /// Whether `signature` is this key's signature of `signing_input`, by its
    /// algorithm (RFC 7518 section 3; ES256 in its fixed R || S form).
    pub fn verifies(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_sig(signing_input, signature).is_ok()
    }
}

/// Compact JWS with a header the caller writes (test tokens whose header is
/// the defect: no `kid`, a `jwk` or `jku`, `crit`), and the public key as
/// PEM (the algorithm-confusion secret). Still one encoder: every token goes
/// through [`SigningKey::sign_with_header`] or [`compact_jws`].
impl SigningKey {
    /// Signs `claims` under `header` (a JSON object, encoded as given) with
    /// this key: `base64url(header).base64url(claims).signature`.
    ///
    /// # Errors
    /// [`CryptoError::Sign`] if the signature cannot be made.
    pub fn sign_with_header_json(
        &self,
        header: &serde_json::Value,
        claims_json: &[u8],
    ) -> Result<String, CryptoError> {
        self.sign_with_header(&B64.encode(header.to_string()), claims_json)
    }

    /// The public half as an RFC 7468 `-----BEGIN PUBLIC KEY-----` PEM of its
    /// X.509 SubjectPublicKeyInfo DER, 64 base64 characters a line, with the
    /// trailing newline (as `openssl pkey -pubout` writes it). RSA keys only:
    /// `None` for the others.
    pub fn public_key_pem(&self) -> Option<String> {
        // From the published members, so a key held in a PKCS#11 token has
        // one too: the SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of an
        // rsaEncryption key (RFC 8017 A.1) wraps its `RSAPublicKey`.
        let PublicMembers::Rsa { n, e } = &self.jwk.public else {
            return None;
        };
        let rsa_public_key = rsa_public_der(&B64.decode(n).ok()?, &B64.decode(e).ok()?);
        let der = rsa_spki_der(&rsa_public_key);
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).ok()?);
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        Some(pem)
    }
}

/// `base64url(header).base64url(claims).base64url(signature)`: the compact
/// JWS serialization (RFC 7515 §7.1) for a signature made elsewhere (an HMAC,
/// none at all for an unsecured JWT, RFC 7519 §6). `signature` is handed the
/// signing input.
pub fn compact_jws(
    header: &serde_json::Value,
    claims_json: &[u8],
    signature: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    let mut token = B64.encode(header.to_string());
    token.push('.');
    B64.encode_string(claims_json, &mut token);
    let signature = signature(token.as_bytes());
    token.push('.');
    B64.encode_string(signature, &mut token);
    token
}

/// The token with one byte of its signature changed: the same header and
/// claims, a signature that no longer verifies. A token without three
/// segments comes back as it was.
pub fn alter_signature(token: &str) -> String {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return token.to_owned();
    };
    let Ok(mut bytes) = B64.decode(signature) else {
        return token.to_owned();
    };
    let middle = bytes.len() / 2;
    if let Some(byte) = bytes.get_mut(middle) {
        *byte ^= 0x5a;
    }
    format!("{signing_input}.{}", B64.encode(bytes))
}

/// `signature` (64 bytes for ES256 and EdDSA) copied to the front of `buf`.
fn copy_into<'b>(buf: &'b mut [u8; 512], signature: &[u8]) -> &'b [u8] {
    let len = signature.len().min(buf.len());
    buf[..len].copy_from_slice(&signature[..len]);
    &buf[..len]
}

/// Runs `call` (a blocking call into the PKCS#11 module) so that it does
/// not stall an async worker: on a multi-threaded runtime the worker hands
/// its other tasks to another thread first (`block_in_place`); elsewhere (a
/// blocking thread, a single-threaded test runtime) it simply runs.
fn off_the_async_workers<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// A DER length (X.690 §8.1.3): short form below 128, else long form.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// DER of an RSA public key (RFC 8017 A.1.1 `RSAPublicKey`), the form
/// aws-lc-rs verifies with.
fn rsa_public_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(value: &[u8], out: &mut Vec<u8>) {
        let value: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
        let pad = value.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        der_length(value.len() + usize::from(pad), out);
        if pad {
            out.push(0);
        }
        out.extend(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(n, &mut body);
    integer(e, &mut body);
    let mut der = vec![0x30];
    der_length(body.len(), &mut der);
    der.extend(body);
    der
}

/// `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7) around an `RSAPublicKey`:
/// the rsaEncryption algorithm (1.2.840.113549.1.1.1, NULL parameters) and
/// the key as a BIT STRING.
fn rsa_spki_der(rsa_public_key: &[u8]) -> Vec<u8> {
    const RSA_ENCRYPTION: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    der_length(rsa_public_key.len() + 1, &mut bits);
    bits.push(0); // no unused bits
    bits.extend(rsa_public_key);
    let mut der = vec![0x30];
    der_length(RSA_ENCRYPTION.len() + bits.len(), &mut der);
    der.extend(RSA_ENCRYPTION);
    der.extend(bits);
    der
}

fn rsa_pair(alg: Algorithm, pair: RsaKeyPair) -> Pair {
    let padding: &'static dyn RsaEncoding = match alg {
        Algorithm::Ps256 => &RSA_PSS_SHA256,
        _ => &RSA_PKCS1_SHA256,
    };
    Pair::Rsa { pair, padding }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key: the
/// required members in lexicographic order, no whitespace.
pub fn thumbprint(n: &str, e: &str) -> String {
    PublicMembers::Rsa {
        n: n.to_owned(),
        e: e.to_owned(),
    }
    .thumbprint()
}

/// 128 random bits, base64url: unique `jti`s without coordination between replicas.
///
/// The bits come from aws-lc's RNG 64 ids at a time, kept per thread: a call
/// into the RNG costs about 2,700 instructions whatever its length (a lock, a
/// reseed check with RDRAND, the DRBG's update; counted with callgrind), a
/// thirtieth of what an ES256 token costs outside its signature. Ids are not
/// secrets, and each buffered id is handed out once, then zeroed.
///
/// # Errors
///
/// [`CryptoError::Random`] when the system RNG fails: an id that is not
/// random (all zeros) would repeat, so none is made.
pub fn random_id() -> Result<String, CryptoError> {
    const ID_BYTES: usize = 16;
    const IDS_PER_FILL: usize = 64;
    struct Pool {
        bytes: [u8; ID_BYTES * IDS_PER_FILL],
        next: usize,
    }
    thread_local! {
        static POOL: std::cell::RefCell<Pool> = const {
            std::cell::RefCell::new(Pool { bytes: [0; ID_BYTES * IDS_PER_FILL], next: IDS_PER_FILL })
        };
    }
    POOL.with_borrow_mut(|pool| {
        if pool.next == IDS_PER_FILL {
            aws_lc_rs::rand::fill(&mut pool.bytes).map_err(|_| CryptoError::Random)?;
            pool.next = 0;
        }
        let start = pool.next * ID_BYTES;
        let id = pool
            .bytes
            .get_mut(start..start + ID_BYTES)
            .ok_or(CryptoError::Random)?;
        let encoded = B64.encode(&*id);
        id.fill(0);
        pool.next += 1;
        Ok(encoded)
    })
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
        let PublicMembers::Rsa { n, e } = &key.jwk().public else {
            panic!("not an RSA key: {:?}", key.jwk());
        };
        assert_eq!(e, "AQAB");
        assert_eq!(B64.decode(n).unwrap().len() * 8, MODULUS_BITS);
        let again = SigningKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.jwk(), key.jwk());
    }

    #[test]
    fn debug_output_redacts_the_private_key() {
        let key = SigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        let PublicMembers::Rsa { n, .. } = &key.jwk().public else {
            panic!("not an RSA key");
        };
        assert!(!shown.contains(n.as_str()));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn garbage_is_rejected_not_parsed() {
        assert!(matches!(
            SigningKey::from_pkcs8_der(b"not a key"),
            Err(CryptoError::Rejected(Algorithm::Rs256))
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

        let PublicMembers::Rsa { n, e } = &key.jwk().public else {
            panic!("an RSA key publishes n and e");
        };
        let public = RsaPublicKeyComponents {
            n: B64.decode(n).unwrap(),
            e: B64.decode(e).unwrap(),
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
        let PublicMembers::Rsa { n, e } = &key.jwk().public else {
            panic!("an RSA key publishes n and e");
        };
        assert_eq!(key.kid(), thumbprint(n, e));
        assert_eq!(key.kid(), key.jwk().kid);
        assert_eq!(
            (key.jwk().kty, key.jwk().use_, key.jwk().alg),
            ("RSA", "sig", "RS256")
        );
    }

    /// Keys held in a token are verified from the stored `n` and `e`: the
    /// DER built from them must be the one aws-lc-rs makes of the key itself.
    #[test]
    fn the_rsa_public_key_der_built_from_n_and_e_is_aws_lc_rs_own() {
        let key = SigningKey::generate().unwrap();
        let PublicMembers::Rsa { n, e } = &key.jwk().public else {
            panic!("not an RSA key");
        };
        let Pair::Rsa { pair, .. } = &key.pair else {
            panic!("not an RSA pair");
        };
        let built = rsa_public_der(&B64.decode(n).unwrap(), &B64.decode(e).unwrap());
        assert_eq!(built, pair.public_key().as_ref());
        // Short lengths, a high bit that needs a leading zero, leading zeros dropped.
        assert_eq!(
            rsa_public_der(&[0x00, 0x80], &[0x01, 0x00, 0x01]),
            [
                0x30, 0x09, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 0x01, 0x00, 0x01
            ]
        );
    }

    #[test]
    fn the_public_key_pem_built_from_n_and_e_is_aws_lc_rs_own_subject_public_key_info() {
        let key = SigningKey::generate().unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
        let spki = pair.public_key().as_der().unwrap();
        let body: String = key
            .public_key_pem()
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(decoded, spki.as_ref());
        assert!(
            key.public_key_pem()
                .unwrap()
                .ends_with("-----END PUBLIC KEY-----\n")
        );
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id().unwrap(), random_id().unwrap());
        assert_eq!(random_id().unwrap().len(), 22);
        // Across refills of the per-thread pool too, and on other threads.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(random_id().unwrap()));
        }
        let elsewhere = std::thread::spawn(|| random_id().unwrap()).join().unwrap();
        assert!(seen.insert(elsewhere));
    }

    /// A token's three segments, its signing input and its decoded signature.
    fn split(token: &str) -> (serde_json::Value, String, Vec<u8>) {
        let (input, signature) = token.rsplit_once('.').unwrap();
        let header = B64.decode(input.split('.').next().unwrap()).unwrap();
        (
            serde_json::from_slice(&header).unwrap(),
            input.to_owned(),
            B64.decode(signature).unwrap(),
        )
    }

    #[test]
    fn every_algorithm_signs_a_jws_its_public_jwk_verifies() {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
            RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
        };
        for alg in Algorithm::ALL {
            let key = SigningKey::generate_for(alg, RsaKeySize::default()).unwrap();
            let token = key.sign_jwt(br#"{"sub":"x"}"#).unwrap();
            let (header, input, signature) = split(&token);
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["kid"], key.kid());
            assert_eq!(key.jwk().kty, alg.key_type());
            let verified = match &key.jwk().public {
                PublicMembers::Rsa { n, e } => RsaPublicKeyComponents {
                    n: B64.decode(n).unwrap(),
                    e: B64.decode(e).unwrap(),
                }
                .verify(
                    if alg == Algorithm::Ps256 {
                        &RSA_PSS_2048_8192_SHA256
                    } else {
                        &RSA_PKCS1_2048_8192_SHA256
                    },
                    input.as_bytes(),
                    &signature,
                )
                .is_ok(),
                PublicMembers::Ec { crv, x, y } => {
                    assert_eq!(*crv, "P-256");
                    // JWS form: fixed-length R || S, never DER (RFC 7518 §3.4).
                    assert_eq!(signature.len(), 64);
                    let mut point = vec![4u8];
                    point.extend(B64.decode(x).unwrap());
                    point.extend(B64.decode(y).unwrap());
                    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                        .verify(input.as_bytes(), &signature)
                        .is_ok()
                }
                PublicMembers::Okp { crv, x } => {
                    assert_eq!(*crv, "Ed25519");
                    ED25519
                        .verify_sig(&B64.decode(x).unwrap(), input.as_bytes(), &signature)
                        .is_ok()
                }
            };
            assert!(verified, "{alg} signature does not verify");
            let again = SigningKey::from_pkcs8_der_for(alg, &key.to_pkcs8_der().unwrap()).unwrap();
            assert_eq!(again.jwk(), key.jwk(), "{alg} round trip through PKCS#8");
        }
    }

    #[test]
    fn the_ed25519_kid_matches_rfc8037_appendix_a3() {
        // RFC 8037 Appendix A.1's private key, as PKCS#8 v1 (RFC 8410 §7).
        let seed = B64
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(seed);
        let key = SigningKey::from_pkcs8_der_for(Algorithm::EdDsa, &der).unwrap();
        assert_eq!(
            key.jwk().public,
            PublicMembers::Okp {
                crv: "Ed25519",
                x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()
            }
        );
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    /// RFC 7515 Appendix A.3's P-256 key, as PKCS#8 from Python's
    /// `cryptography`; the thumbprint computed there too, independently.
    #[test]
    fn the_p256_kid_matches_an_independent_implementation() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjpsQnnGQmL+YBIffH1136cspYG6+0iY7\
                 X1fCE9+E9LKhRANCAAR/zc4ncPbEXUGDy+5v20t7WAczNXvp7xO6z248e9FURcfxRM0bvZt+hyzf7bnu\
                 ufSzaV1uqQskrYpGIyiFiOWt",
            )
            .unwrap();
        let key = SigningKey::from_pkcs8_der_for(Algorithm::Es256, &der).unwrap();
        assert_eq!(
            key.jwk().public,
            PublicMembers::Ec {
                crv: "P-256",
                x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
                y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into(),
            }
        );
        assert_eq!(key.kid(), "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
        let json = serde_json::to_value(key.jwk()).unwrap();
        assert_eq!(json["kty"], "EC");
        assert_eq!(json["alg"], "ES256");
        assert!(json.get("n").is_none() && json.get("d").is_none());
    }

    #[test]
    fn rsa_keys_of_every_size_are_accepted_whatever_size_is_generated() {
        let key = SigningKey::generate_for(Algorithm::Ps256, RsaKeySize::Bits3072).unwrap();
        let PublicMembers::Rsa { n, .. } = &key.jwk().public else {
            panic!("not an RSA key");
        };
        assert_eq!(B64.decode(n).unwrap().len() * 8, 3072);
        let der = key.to_pkcs8_der().unwrap();
        assert!(SigningKey::from_pkcs8_der_for(Algorithm::Ps256, &der).is_ok());
        // A P-256 key is not an Ed25519 key, nor an RSA one.
        let ec = SigningKey::generate_for(Algorithm::Es256, RsaKeySize::default()).unwrap();
        let ec_der = ec.to_pkcs8_der().unwrap();
        assert!(SigningKey::from_pkcs8_der_for(Algorithm::EdDsa, &ec_der).is_err());
        assert!(SigningKey::from_pkcs8_der_for(Algorithm::Rs256, &ec_der).is_err());
    }
}
