//! Which store, and where: [`StoreUrl`], parsed from `--store`, and
//! [`redact`], which prints a store URL without its password. They live with
//! the store, not with the configuration that reads the flag, so the arrows
//! point one way: config -> store, and the store never imports config.

use std::{fmt, path::PathBuf, str::FromStr};

use secrecy::{ExposeSecret, SecretString};

/// Which store, and where. Prints without a password; a PostgreSQL URL is
/// held as a secret (zeroized on drop), since it may carry one.
#[derive(Clone)]
pub enum StoreUrl {
    /// An embedded SQLite file.
    Sqlite {
        /// The URL as given, `sqlite://PATH`.
        url: String,
        /// The database file it names.
        path: PathBuf,
    },
    /// A PostgreSQL server; the URL may carry a password.
    Postgres(SecretString),
}

impl StoreUrl {
    /// The URL to connect with, password included: hand it to the driver only.
    pub fn connection_string(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } => url,
            Self::Postgres(secret) => secret.expose_secret(),
        }
    }
}

impl fmt::Debug for StoreUrl {
    // The redacted URL says which store; `SecretString`'s own Debug would hide the host too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { url, .. } => f.write_str(url),
            Self::Postgres(secret) => f.write_str(&redact(secret.expose_secret())),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err("a sqlite store needs a file path, e.g. sqlite://jwks.db".to_owned());
            }
            Ok(Self::Sqlite {
                url: s.to_owned(),
                path: PathBuf::from(path),
            })
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self::Postgres(SecretString::from(s)))
        } else {
            Err("unknown store scheme: use sqlite://PATH or postgres://USER@HOST/DB".to_owned())
        }
    }
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/keys"),
            "postgres://app:***@db:5432/keys"
        );
        assert_eq!(redact("postgres://app@db/keys"), "postgres://app@db/keys");
        assert_eq!(redact("sqlite://jwks.db"), "sqlite://jwks.db");
    }
}
