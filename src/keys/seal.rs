//! Sealing private keys at rest with AES-256-GCM under key-encryption keys (KEKs).
//!
//! The store only ever sees [`SealedKey`]s. Each records the id of the KEK that
//! sealed it, so KEKs can be rotated: a [`KekRing`] holds several, seals with the
//! first and opens with whichever a row names. The `kid` is the AEAD's associated
//! data, so a sealed key copied onto another row fails to open instead of
//! impersonating it. Where KEKs come from (settings, files, the default one
//! beside a SQLite store) is `kek.rs`'s job; which flag names them, the edge's.

use std::fmt;

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
};
use base64::{Engine, engine::general_purpose::STANDARD as B64_STD};

/// The length of a KEK, in bytes: an AES-256 key.
pub const KEK_LEN: usize = 32;

/// Why a KEK is unusable, or a key could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// KEK text that is not [`KEK_LEN`] bytes of base64.
    #[error(
        "a key-encryption key must be {KEK_LEN} bytes of base64 (e.g. `openssl rand -base64 32`)"
    )]
    BadKek,
    /// The same KEK configured twice.
    #[error("two configured key-encryption keys are the same (id {0})")]
    DuplicateKek(String),
    /// No KEK at all.
    #[error("no key-encryption key configured")]
    NoKek,
    /// A stored key names a KEK that is not configured.
    #[error("key {kid} was sealed by key-encryption key {kek_id}, which is not configured")]
    UnknownKek {
        /// The stored key.
        kid: String,
        /// The KEK its row names.
        kek_id: String,
    },
    /// A stored key does not open: a wrong KEK with the right id, or a
    /// tampered row.
    #[error("key {kid} does not open with key-encryption key {kek_id}: wrong KEK or tampered row")]
    Open {
        /// The stored key.
        kid: String,
        /// The KEK its row names.
        kek_id: String,
    },
    /// Sealing failed (no randomness for the nonce).
    #[error("sealing failed")]
    Seal,
}

/// A private key as stored: AES-256-GCM ciphertext (with tag) and its nonce.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// The id of the KEK that sealed it.
    pub kek_id: String,
    /// The 96-bit AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// The sealed PKCS#8 DER, the 16-byte tag appended; the kid is the
    /// associated data, so a row moved to another kid does not open.
    pub ciphertext: Vec<u8>,
}

impl SealedKey {
    /// No sealed key: what a key held in a PKCS#11 token has in its place
    /// (stored as SQL NULLs).
    pub fn none() -> Self {
        Self {
            kek_id: String::new(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        }
    }
}

// Not a `secrecy` type: the ciphertext is no secret (it is stored as is) but
// long and useless in a log line, so `Debug` shows its KEK and length.
impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKey")
            .field("kek_id", &self.kek_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// One key-encryption key. Its `id` is a fingerprint that reveals nothing of it.
pub struct Kek {
    id: String,
    key: LessSafeKey,
}

// Hand-written, not `secrecy`: the key is an aws-lc-rs AES key (no bytes of
// ours to wrap), and `Debug` should still name the KEK by its fingerprint.
impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({}, <redacted>)", self.id)
    }
}

impl Kek {
    /// A KEK from its raw bytes.
    ///
    /// # Errors
    ///
    /// [`SealError::BadKek`] unless `bytes` is [`KEK_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != KEK_LEN {
            return Err(SealError::BadKek);
        }
        let fingerprint = digest::digest(
            &digest::SHA256,
            &[b"jwks-server kek id\0".as_slice(), bytes].concat(),
        );
        let id = fingerprint.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKek)?);
        Ok(Self { id, key })
    }

    /// Parses one base64 (standard or URL-safe, padding optional) KEK.
    ///
    /// # Errors
    ///
    /// [`SealError::BadKek`] for text that is not [`KEK_LEN`] bytes of base64.
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let text = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| SealError::BadKek)?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random KEK and its base64 text (to write to a secret file).
    ///
    /// # Errors
    ///
    /// [`SealError::Seal`] when the system has no randomness to give.
    pub fn generate() -> Result<(Self, String), SealError> {
        let mut bytes = [0u8; KEK_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SealError::Seal)?;
        let text = B64_STD.encode(bytes);
        Ok((Self::from_bytes(&bytes)?, text))
    }

    /// Its fingerprint, which rows name.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The configured KEKs: the first seals, any of them opens.
#[derive(Debug)]
pub struct KekRing {
    keks: Vec<Kek>,
}

impl KekRing {
    /// The ring of `keks`; the first seals.
    ///
    /// # Errors
    ///
    /// [`SealError::NoKek`] for none, [`SealError::DuplicateKek`] for the same
    /// KEK given twice.
    pub fn new(keks: Vec<Kek>) -> Result<Self, SealError> {
        if keks.is_empty() {
            return Err(SealError::NoKek);
        }
        for (i, kek) in keks.iter().enumerate() {
            if keks[..i].iter().any(|k| k.id == kek.id) {
                return Err(SealError::DuplicateKek(kek.id.clone()));
            }
        }
        Ok(Self { keks })
    }

    /// The id of the KEK that seals new keys.
    pub fn sealing_id(&self) -> &str {
        &self.keks[0].id
    }

    /// The ids of every KEK, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keks.iter().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` (a private key) under the first KEK, bound to `kid`.
    ///
    /// # Errors
    ///
    /// [`SealError::Seal`] when no nonce can be drawn or AES-GCM refuses.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<SealedKey, SealError> {
        let kek = &self.keks[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut ciphertext = plaintext.to_vec();
        kek.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| SealError::Seal)?;
        Ok(SealedKey {
            kek_id: kek.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed key. The caller owns the plaintext and should wipe it.
    ///
    /// # Errors
    ///
    /// [`SealError::UnknownKek`] when its KEK is not configured,
    /// [`SealError::Open`] when it does not open under it (or was moved to
    /// another kid).
    pub fn open(&self, kid: &str, sealed: &SealedKey) -> Result<Vec<u8>, SealError> {
        let kek = self
            .keks
            .iter()
            .find(|k| k.id == sealed.kek_id)
            .ok_or_else(|| SealError::UnknownKek {
                kid: kid.to_owned(),
                kek_id: sealed.kek_id.clone(),
            })?;
        let failed = || SealError::Open {
            kid: kid.to_owned(),
            kek_id: sealed.kek_id.clone(),
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| failed())?;
        let mut buffer = sealed.ciphertext.clone();
        let plaintext_len = kek
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| failed())?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keks: &[&[u8; 32]]) -> KekRing {
        KekRing::new(keks.iter().map(|k| Kek::from_bytes(*k).unwrap()).collect()).unwrap()
    }

    #[test]
    fn sealing_round_trips_and_hides_the_plaintext() {
        let ring = ring(&[&[7; 32]]);
        let secret = b"-----BEGIN PRIVATE KEY----- pretend DER";
        let sealed = ring.seal("kid-1", secret).unwrap();
        assert_eq!(sealed.kek_id, ring.sealing_id());
        assert!(!sealed.ciphertext.windows(10).any(|w| w == &secret[..10]));
        assert_eq!(ring.open("kid-1", &sealed).unwrap(), secret);
    }

    #[test]
    fn a_wrong_kek_fails_clearly() {
        let sealed = ring(&[&[1; 32]]).seal("kid", b"secret").unwrap();
        let err = ring(&[&[2; 32]]).open("kid", &sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKek { .. }), "{err}");
    }

    #[test]
    fn a_sealed_key_moved_to_another_kid_does_not_open() {
        let ring = ring(&[&[3; 32]]);
        let sealed = ring.seal("kid-a", b"secret").unwrap();
        assert!(matches!(
            ring.open("kid-b", &sealed),
            Err(SealError::Open { .. })
        ));
    }

    #[test]
    fn the_first_kek_seals_and_every_kek_opens() {
        let old = ring(&[&[1; 32]]);
        let sealed_by_old = old.seal("kid", b"secret").unwrap();
        let rotated = ring(&[&[2; 32], &[1; 32]]);
        assert_eq!(rotated.open("kid", &sealed_by_old).unwrap(), b"secret");
        assert_ne!(
            rotated.seal("kid", b"secret").unwrap().kek_id,
            sealed_by_old.kek_id
        );
    }

    #[test]
    fn kek_text_must_be_32_bytes_of_base64() {
        assert!(Kek::from_base64("too short").is_err());
        let (_, text) = Kek::generate().unwrap();
        assert!(Kek::from_base64(&text).is_ok());
        assert!(matches!(
            KekRing::new(vec![
                Kek::from_base64(&text).unwrap(),
                Kek::from_base64(&text).unwrap()
            ]),
            Err(SealError::DuplicateKek(_))
        ));
        assert!(format!("{:?}", Kek::from_base64(&text).unwrap()).contains("redacted"));
    }
}
