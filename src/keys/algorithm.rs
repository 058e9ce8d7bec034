//! The JWS algorithms this service signs with (RFC 7518 §3, RFC 8037 §3.1)
//! and the RSA key sizes it makes: names as the standards spell them, and
//! which key type each needs.
//!
//! Which algorithms a server runs, and which one a request names, are the
//! configuration's and the service's business; the key material for each is
//! `crypto.rs`'s.

use std::{fmt, str::FromStr};

/// A JWS `alg` this service signs with. Each has its own keys and their own
/// rotation schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3): the default.
    Rs256,
    /// RSASSA-PSS with SHA-256 and MGF1 (RFC 7518 §3.5).
    Ps256,
    /// ECDSA on P-256 with SHA-256, signature as fixed-length R||S (RFC 7518 §3.4).
    Es256,
    /// Ed25519 (RFC 8037 §3.1).
    EdDsa,
}

impl Algorithm {
    /// Every algorithm we sign with.
    pub const ALL: [Algorithm; 4] = [Self::Rs256, Self::Ps256, Self::Es256, Self::EdDsa];

    /// The `alg` value, as RFC 7518 and RFC 8037 spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The JWK `kty` of its keys (RFC 7518 §6.1, RFC 8037 §2).
    pub fn key_type(self) -> &'static str {
        match self {
            Self::Rs256 | Self::Ps256 => "RSA",
            Self::Es256 => "EC",
            Self::EdDsa => "OKP",
        }
    }

    /// Whether its keys are RSA keys, whose size `--rsa-key-bits` sets.
    pub fn is_rsa(self) -> bool {
        self.key_type() == "RSA"
    }

    /// `names` as a reader would list them: `RS256, ES256`.
    pub fn list(names: &[Algorithm]) -> String {
        names
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the algorithms this service signs with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm {0:?}: use RS256, PS256, ES256 or EdDSA")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// `alg` values are case-sensitive (RFC 7515 §4.1.1), so `rs256` is not `RS256`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str() == name)
            .ok_or_else(|| UnknownAlgorithm(name.to_owned()))
    }
}

/// The modulus size of the RSA keys this service creates. Keys of every size
/// here are accepted from the store whatever the setting, so changing it
/// never strands a stored key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RsaKeySize {
    /// 2048 bits, the default.
    #[default]
    Bits2048,
    /// 3072 bits.
    Bits3072,
    /// 4096 bits.
    Bits4096,
}

impl RsaKeySize {
    /// Every size we generate and accept.
    pub const ALL: [RsaKeySize; 3] = [Self::Bits2048, Self::Bits3072, Self::Bits4096];

    /// The modulus size, in bits.
    pub fn bits(self) -> usize {
        match self {
            Self::Bits2048 => 2048,
            Self::Bits3072 => 3072,
            Self::Bits4096 => 4096,
        }
    }

    /// The size of a modulus of `bits` bits, if it is one this service uses.
    pub fn from_bits(bits: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|size| size.bits() == bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
        assert_eq!(
            "rs256".parse::<Algorithm>(),
            Err(UnknownAlgorithm("rs256".into()))
        );
        assert!(
            "HS256"
                .parse::<Algorithm>()
                .unwrap_err()
                .to_string()
                .contains("use RS256, PS256, ES256 or EdDSA")
        );
    }

    #[test]
    fn only_the_three_rsa_sizes_are_known() {
        assert_eq!(RsaKeySize::from_bits(3072), Some(RsaKeySize::Bits3072));
        assert_eq!(RsaKeySize::from_bits(1024), None);
        assert_eq!(RsaKeySize::default().bits(), 2048);
    }
}
