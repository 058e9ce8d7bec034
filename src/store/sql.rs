//! The SQL [`KeyStore`], one implementation for SQLite and PostgreSQL through
//! sqlx's `Any` driver. The two differ only in their migrations and in how a
//! rotation takes its lock.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    AnyPool, Row,
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    migrate::Migrator,
};

use super::{
    KeyStore, NewKeyMaterial, Planner, RemoveCheck, RemoveOutcome, Resealer, Revocation,
    RotateOutcome, StoreError, StoredKey, redact,
};
use crate::{
    keys::{
        Algorithm, Backend, KeyMeta,
        crypto::{ED25519, P256, PublicMembers},
        seal::SealedKey,
    },
    time::Timestamp,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Arbitrary constant naming this service's rotation lock among PostgreSQL
/// advisory locks ("jwks" in ASCII).
const ROTATION_LOCK_ID: i64 = 0x6a77_6b73;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// A SQLite file or a PostgreSQL database holding the keys.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

/// The `signing_keys` columns, as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "alg, generation, kid, published_at, activates_at, retires_at, expires_at, \
         n, e, crv, x, y, kek_id, nonce, sealed_key, backend, token"
    };
}

/// Whether opening a store may create it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// The server: a new SQLite file and the schema are made if missing.
    CreateIfMissing,
    /// Operator commands: the store must already hold the schema.
    Existing,
}

impl SqlStore {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating a SQLite
    /// file if needed, and brings the schema up to date.
    /// # Errors
    ///
    /// [`StoreError::UnsupportedUrl`] for another scheme,
    /// [`StoreError::Unavailable`] when it cannot be reached or created,
    /// [`StoreError::Migrate`] when the schema cannot be brought up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(url, Opening::CreateIfMissing).await
    }

    /// Connects to a store that must already exist (a SQLite file, or a
    /// database, that holds the schema), then brings the schema up to date.
    /// It never creates a file or a schema, so a mistyped path is an error.
    /// # Errors
    ///
    /// [`StoreError::Missing`] when there is no store there, else as
    /// [`SqlStore::connect`].
    pub async fn connect_existing(url: &str) -> Result<Self, StoreError> {
        Self::open(url, Opening::Existing).await
    }

    async fn open(url: &str, opening: Opening) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut url = format!("sqlite:{rest}");
            if !rest.contains("mode=") {
                url.push(if rest.contains('?') { '&' } else { '?' });
                url.push_str(match opening {
                    Opening::CreateIfMissing => "mode=rwc",
                    Opening::Existing => "mode=rw",
                });
            }
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|_| StoreError::UnsupportedUrl(redact(&url)))?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 2,
                Dialect::Postgres => 4,
            })
            .acquire_timeout(Duration::from_secs(5));
        if dialect == Dialect::Sqlite {
            pool = pool.after_connect(|conn, _| Box::pin(sqlite_session(conn)));
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|err| match opening {
                Opening::Existing if dialect == Dialect::Sqlite => {
                    StoreError::Missing(err.to_string())
                }
                _ => StoreError::from(err),
            })?;
        let store = Self { pool, dialect };
        if opening == Opening::Existing {
            store.check_schema().await?;
        }
        match dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&store.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&store.pool).await?,
        }
        Ok(store)
    }

    /// Fails unless the keys table exists: an empty file or database is not
    /// a store an operator meant.
    async fn check_schema(&self) -> Result<(), StoreError> {
        match sqlx::query("SELECT COUNT(*) AS n FROM signing_keys")
            .fetch_one(&self.pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(err @ sqlx::Error::Database(_)) => {
                self.pool.close().await;
                Err(StoreError::Missing(err.to_string()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Closes the connection pool, waiting for connections in use to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Takes the rotation lock for the rest of `tx`.
    async fn lock_rotation(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Sqlite => {
                // Any write takes SQLite's lock; the time is the database's
                // own (for people reading the table), so the store reads no clock.
                sqlx::query(
                    "UPDATE rotation_lock SET locked_at = CAST(strftime('%s', 'now') AS INTEGER) \
                     WHERE id = 1",
                )
                .execute(&mut **tx)
                .await?;
            }
            Dialect::Postgres => {
                // Selecting from the (void) function keeps the row decodable by `Any`.
                sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                    .bind(ROTATION_LOCK_ID)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Every SQLite connection runs in WAL mode: readers (a reload, `keys list`)
/// never wait for the rotator's write, and several processes on one host can
/// share the file. `synchronous = FULL` keeps each commit durable through a
/// power cut (a published key must never vanish); writes are one per rotation,
/// so its cost does not matter.
async fn sqlite_session(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    for pragma in [
        // Wait up to 5 s for another writer (the rotator, or a `keys` command
        // against a running server) before reporting the store busy.
        "PRAGMA busy_timeout = 5000",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
    ] {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

fn from_row(row: &AnyRow) -> Result<StoredKey, StoreError> {
    let time = |col: &str| row.try_get::<i64, _>(col).map(Timestamp::from_unix);
    let kid: String = row.try_get("kid")?;
    let alg: Algorithm = row
        .try_get::<String, _>("alg")?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("key {kid}: {e}")))?;
    let member = |col: &str| -> Result<String, StoreError> {
        row.try_get::<Option<String>, _>(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("{alg} key {kid} has no {col}")))
    };
    let curve = |expected: &'static str| -> Result<&'static str, StoreError> {
        let crv = member("crv")?;
        if crv == expected {
            Ok(expected)
        } else {
            Err(StoreError::Corrupt(format!(
                "{alg} key {kid} is on curve {crv:?}, not {expected}"
            )))
        }
    };
    let public = match alg {
        Algorithm::Rs256 | Algorithm::Ps256 => PublicMembers::Rsa {
            n: member("n")?,
            e: member("e")?,
        },
        Algorithm::Es256 => PublicMembers::Ec {
            crv: curve(P256)?,
            x: member("x")?,
            y: member("y")?,
        },
        Algorithm::EdDsa => PublicMembers::Okp {
            crv: curve(ED25519)?,
            x: member("x")?,
        },
    };
    let backend = match row.try_get::<String, _>("backend")?.as_str() {
        "software" => Backend::Software,
        "pkcs11" => Backend::Pkcs11 {
            token: member("token")?,
        },
        other => {
            return Err(StoreError::Corrupt(format!(
                "key {kid} is held by an unknown backend {other:?}"
            )));
        }
    };
    let sealed = match backend {
        Backend::Software => SealedKey {
            kek_id: member("kek_id")?,
            nonce: sealed_part(row, "nonce", &kid)?,
            ciphertext: sealed_part(row, "sealed_key", &kid)?,
        },
        Backend::Pkcs11 { .. } => SealedKey::none(),
    };
    Ok(StoredKey {
        meta: KeyMeta {
            alg,
            kid,
            generation: row.try_get("generation")?,
            published_at: time("published_at")?,
            activates_at: time("activates_at")?,
            retires_at: time("retires_at")?,
            expires_at: time("expires_at")?,
        },
        public,
        sealed,
        backend,
    })
}

/// A sealing column of a software key, which must be there.
fn sealed_part(row: &AnyRow, col: &str, kid: &str) -> Result<Vec<u8>, StoreError> {
    row.try_get::<Option<Vec<u8>>, _>(col)?
        .ok_or_else(|| StoreError::Corrupt(format!("software key {kid} has no {col}")))
}

async fn load_all<'e, E>(executor: E) -> Result<Vec<StoredKey>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM signing_keys ORDER BY alg, generation"
    ))
    .fetch_all(executor)
    .await?;
    rows.iter().map(from_row).collect()
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn revoke(&self, jti: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at.unix())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revocations(&self, now: Timestamp) -> Result<Vec<Revocation>, StoreError> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now.unix())
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Revocation {
                    jti: row.try_get("jti")?,
                    expires_at: Timestamp::from_unix(row.try_get("expires_at")?),
                })
            })
            .collect()
    }

    async fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        load_all(&self.pool).await
    }

    async fn rotate(
        &self,
        plan: &Planner<'_>,
        fresh: Vec<NewKeyMaterial>,
    ) -> Result<RotateOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.lock_rotation(&mut tx).await?;
        let current = load_all(&mut *tx).await?;
        let metas: Vec<KeyMeta> = current.into_iter().map(|k| k.meta).collect();
        let plan = plan(&metas);
        let fresh = match super::match_material(&plan.create, fresh) {
            Ok(fresh) => fresh,
            Err(wanted) => return Ok(RotateOutcome::NeedKeys(wanted)),
        };
        let mut created = Vec::with_capacity(plan.create.len());
        for (times, material) in plan.create.into_iter().zip(fresh) {
            let meta = times.into_meta(material.kid);
            // A token-held key has no sealed columns; a software key no token.
            let token = match &material.backend {
                Backend::Software => None,
                Backend::Pkcs11 { token } => Some(token.clone()),
            };
            let software = token.is_none();
            let (mut n, mut e, mut crv, mut x, mut y) = (None, None, None, None, None);
            match material.public {
                PublicMembers::Rsa {
                    n: modulus,
                    e: exponent,
                } => {
                    (n, e) = (Some(modulus), Some(exponent));
                }
                PublicMembers::Ec {
                    crv: curve,
                    x: px,
                    y: py,
                } => {
                    (crv, x, y) = (Some(curve.to_owned()), Some(px), Some(py));
                }
                PublicMembers::Okp { crv: curve, x: px } => {
                    (crv, x) = (Some(curve.to_owned()), Some(px));
                }
            }
            sqlx::query(concat!(
                "INSERT INTO signing_keys (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            ))
            .bind(meta.alg.as_str())
            .bind(meta.generation)
            .bind(meta.kid.clone())
            .bind(meta.published_at.unix())
            .bind(meta.activates_at.unix())
            .bind(meta.retires_at.unix())
            .bind(meta.expires_at.unix())
            .bind(n)
            .bind(e)
            .bind(crv)
            .bind(x)
            .bind(y)
            .bind(software.then_some(material.sealed.kek_id))
            .bind(software.then_some(material.sealed.nonce))
            .bind(software.then_some(material.sealed.ciphertext))
            .bind(material.backend.as_str())
            .bind(token)
            .execute(&mut *tx)
            .await?;
            created.push(meta);
        }
        for kid in &plan.prune {
            sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                .bind(kid.clone())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(RotateOutcome::Applied {
            created,
            pruned: plan.prune,
        })
    }

    async fn reseal(&self, reseal: &Resealer<'_>) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut count = 0;
        for key in load_all(&mut *tx).await? {
            if let Some(sealed) = reseal(&key)? {
                sqlx::query(
                    "UPDATE signing_keys SET kek_id = $1, nonce = $2, sealed_key = $3 WHERE kid = $4",
                )
                .bind(sealed.kek_id)
                .bind(sealed.nonce)
                .bind(sealed.ciphertext)
                .bind(key.meta.kid)
                .execute(&mut *tx)
                .await?;
                count += 1;
            }
        }
        tx.commit().await?;
        Ok(count)
    }

    async fn remove(
        &self,
        kid: &str,
        check: &RemoveCheck<'_>,
    ) -> Result<RemoveOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.lock_rotation(&mut tx).await?;
        let metas: Vec<KeyMeta> = load_all(&mut *tx)
            .await?
            .into_iter()
            .map(|k| k.meta)
            .collect();
        let Some(target) = metas.iter().find(|k| k.kid == kid) else {
            return Ok(RemoveOutcome::NotFound);
        };
        if let Err(reason) = check(target, &metas) {
            return Ok(RemoveOutcome::Refused(reason));
        }
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RemoveOutcome::Removed(target.clone()))
    }
}
