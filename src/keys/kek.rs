//! Where key-encryption keys come from: KEKs given as text, a file of them,
//! and the default KEK file a single-process store keeps beside its database
//! (generated once, mode 0600, only while the store holds no key).
//!
//! Sealing with them is `seal.rs`'s job. Which flags and environment variables
//! carry the KEKs is the edge's: errors here say what is missing, and
//! `startup` adds how to supply it.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use super::seal::{Kek, KekRing, SealError};
use crate::store::StoredKey;

/// Where to look for KEKs, in the order they are tried.
#[derive(Clone, Debug)]
pub struct KekSources<'a> {
    /// KEKs as base64 text; the first seals.
    pub texts: Vec<&'a str>,
    /// A file of KEKs, one per line (`#` starts a comment).
    pub file: Option<&'a Path>,
    /// What to do when neither gives a KEK.
    pub when_none_given: WhenNoneGiven<'a>,
}

/// What a store does without a configured KEK.
#[derive(Clone, Copy, Debug)]
pub enum WhenNoneGiven<'a> {
    /// Use (or, for a store holding no key, create) the KEK file beside this
    /// database file: `PATH.kek`.
    UseFileBeside(&'a Path),
    /// Refuse: a store shared by several processes (named here) needs the
    /// same KEK in each, which none of them may invent.
    Refuse(&'static str),
}

/// The KEKs found, and the default KEK file if this call created it.
#[derive(Debug)]
pub struct Provisioned {
    /// The KEKs, the one that seals new keys first.
    pub keks: KekRing,
    /// The default KEK file, when it was generated now (callers warn about it).
    pub generated: Option<PathBuf>,
}

/// Why no usable set of KEKs could be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// A KEK is malformed, or two share an id.
    #[error("key-encryption key: {0}")]
    Invalid(#[from] SealError),
    /// A KEK file could not be read or written.
    #[error("key-encryption key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// No KEK given, for a store shared by several processes.
    #[error("a {store} store needs a key-encryption key shared by every replica")]
    Required {
        /// The kind of store, as an operator names it (`PostgreSQL`).
        store: &'static str,
    },
    /// No KEK given, the store holds sealed keys, and the default KEK file
    /// is gone: a new KEK could open none of them, so none is made.
    #[error(
        "the store holds keys sealed by key-encryption key {kek_ids}, but no KEK is configured \
         and {path} (the KEK file a SQLite store uses then) does not exist"
    )]
    Missing {
        /// The ids of the KEKs that sealed the stored keys, comma-separated.
        kek_ids: String,
        /// Where the default KEK file was looked for.
        path: PathBuf,
    },
}

/// Resolves the KEKs for a store holding `stored`.
///
/// # Errors
///
/// A KEK that does not parse, two that are the same, a KEK file that cannot be
/// read or holds none, no KEK for a shared store, or no KEK and no default KEK
/// file for a store that already holds keys ([`KekError::Missing`]).
pub fn provision(sources: &KekSources<'_>, stored: &[StoredKey]) -> Result<Provisioned, KekError> {
    let mut keks = Vec::new();
    for text in &sources.texts {
        keks.push(Kek::from_base64(text)?);
    }
    if let Some(path) = sources.file {
        keks.extend(read_kek_file(path)?);
    }
    let mut generated = None;
    if keks.is_empty() {
        match sources.when_none_given {
            WhenNoneGiven::UseFileBeside(db_path) => {
                let (kek, made) = default_kek(db_path, stored)?;
                keks.push(kek);
                generated = made;
            }
            WhenNoneGiven::Refuse(store) => return Err(KekError::Required { store }),
        }
    }
    Ok(Provisioned {
        keks: KekRing::new(keks)?,
        generated,
    })
}

/// Reads a file of KEKs, one base64 KEK a line.
///
/// # Errors
///
/// The file cannot be read, a line is not a KEK, or it holds none.
pub fn read_kek_file(path: &Path) -> Result<Vec<Kek>, KekError> {
    let text = fs::read_to_string(path).map_err(|source| KekError::File {
        path: path.to_owned(),
        source,
    })?;
    warn_if_others_can_read(path);
    let keks = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Kek::from_base64)
        .collect::<Result<Vec<_>, _>>()?;
    if keks.is_empty() {
        return Err(KekError::Invalid(SealError::NoKek));
    }
    Ok(keks)
}

/// A KEK file that group or others can read is a warning, not a refusal:
/// secret mounts (Kubernetes' default mode is 0644) are often readable by a
/// container's only user, and refusing would take the service down over it.
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = %format!("{mode:04o}"),
                "key-encryption key file is readable by group or others: anyone who can read \
                 it and the store has every private key; make it private (chmod 600)"
            );
        }
    }
}

/// The KEK in the file beside the database, made (once) for a store that
/// holds no key yet. Returns the path when this call created the file.
fn default_kek(db_path: &Path, stored: &[StoredKey]) -> Result<(Kek, Option<PathBuf>), KekError> {
    let mut kek_path = db_path.as_os_str().to_owned();
    kek_path.push(".kek");
    let kek_path = PathBuf::from(kek_path);
    let file_error = |source| KekError::File {
        path: kek_path.clone(),
        source,
    };
    let first_in = |path: &Path| -> Result<Kek, KekError> {
        let mut keks = read_kek_file(path)?;
        Ok(keks.remove(0))
    };
    if kek_path.exists() {
        return Ok((first_in(&kek_path)?, None));
    }
    if !stored.is_empty() {
        let mut sealed_by: Vec<&str> = stored
            .iter()
            .filter(|k| k.backend == crate::keys::Backend::Software)
            .map(|k| k.sealed.kek_id.as_str())
            .collect();
        sealed_by.sort_unstable();
        sealed_by.dedup();
        return Err(KekError::Missing {
            kek_ids: sealed_by.join(", "),
            path: kek_path,
        });
    }
    let (kek, text) = Kek::generate()?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(&kek_path) {
        Ok(file) => file,
        // Another process starting on the same new store wrote it first.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok((first_in(&kek_path)?, None));
        }
        Err(err) => return Err(file_error(err)),
    };
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error)?;
    Ok((kek, Some(kek_path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn sources<'a>(texts: Vec<&'a str>, none: WhenNoneGiven<'a>) -> KekSources<'a> {
        KekSources {
            texts,
            file: None,
            when_none_given: none,
        }
    }

    #[test]
    fn a_new_store_gets_a_private_default_kek_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jwks.db");
        let first = provision(&sources(vec![], WhenNoneGiven::UseFileBeside(&db)), &[]).unwrap();
        let path = first.generated.expect("generated");
        assert_eq!(path, dir.path().join("jwks.db.kek"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = provision(&sources(vec![], WhenNoneGiven::UseFileBeside(&db)), &[]).unwrap();
        assert!(again.generated.is_none(), "read, not made again");
        assert_eq!(again.keks.sealing_id(), first.keks.sealing_id());
    }

    #[test]
    fn a_shared_store_without_a_kek_is_refused_and_given_ones_win() {
        let refused = provision(&sources(vec![], WhenNoneGiven::Refuse("PostgreSQL")), &[]);
        assert!(matches!(
            refused,
            Err(KekError::Required {
                store: "PostgreSQL"
            })
        ));
        let given = provision(
            &sources(vec![KEK], WhenNoneGiven::Refuse("PostgreSQL")),
            &[],
        );
        assert!(given.is_ok_and(|p| p.generated.is_none()));
    }
}
