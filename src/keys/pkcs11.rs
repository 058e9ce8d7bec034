//! Keys held in a PKCS#11 token (an HSM, or SoftHSM2 in tests): opening the
//! module and logging in, checking its mechanisms, generating key pairs
//! inside the token, signing with them on a pool of logged-in sessions, and
//! destroying them when they are pruned.
//!
//! A key generated here never leaves the token: its private object is
//! `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, and both objects carry
//! `CKA_LABEL` = the kid and `CKA_ID` = the 32 raw bytes of the RFC 7638
//! thumbprint, so the store only needs the public half and the token's name.
//! What signs a JWS with it is `crypto.rs`'s [`super::crypto::SigningKey`];
//! which key signs, the ring's; the flags that name the module, the edge's.
//!
//! Every call here blocks on the module: callers run it on a blocking thread.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
    mechanism::{
        Mechanism, MechanismType,
        eddsa::{EddsaParams, EddsaSignatureScheme},
        rsa::{PkcsMgfType, PkcsPssParams},
    },
    object::{Attribute, AttributeType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};
use secrecy::{ExposeSecret, SecretString};

use super::{
    Algorithm,
    algorithm::RsaKeySize,
    crypto::{ED25519, P256, PublicMembers},
};

/// DER of the P-256 curve's OID (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of ES256 keys.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of Ed25519's OID (1.3.101.112, RFC 8410), the `CKA_EC_PARAMS` of EdDSA keys.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// How often opening the token tries to log in when the token answers with
/// a transient error.
const LOGIN_TRIES: u64 = 5;

/// Which token of the module holds the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token with this `CKA_LABEL` (`--pkcs11-token-label`).
    Label(String),
    /// The token in this slot (`--pkcs11-slot`).
    Slot(u64),
}

/// What it takes to open a token: the module, the token, the user PIN.
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// Which of its tokens.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: SecretString,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// What went wrong with the module or the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The module would not load or initialise.
    #[error("cannot load the PKCS#11 module {path}: {reason}")]
    Module {
        /// The module's path.
        path: String,
        /// What the loader or `C_Initialize` said.
        reason: String,
    },
    /// No token of that label, or no token in that slot.
    #[error("the PKCS#11 module has no token {0} (tokens found: {1})")]
    NoToken(String, String),
    /// The user PIN was refused.
    #[error("the token {token} refused the user PIN ({reason})")]
    Login {
        /// The token.
        token: String,
        /// What it said.
        reason: String,
    },
    /// A configured algorithm the module cannot sign (or generate keys) with.
    #[error("the token {token} does not support {alg} (it lacks mechanism {mechanism})")]
    Unsupported {
        /// The token.
        token: String,
        /// The algorithm.
        alg: Algorithm,
        /// The missing PKCS#11 mechanism, e.g. `CKM_EDDSA`.
        mechanism: &'static str,
    },
    /// The token cannot be reached right now (removed, closed sessions, a
    /// device error): signing resumes when it returns.
    #[error("the token {token} is unavailable: {reason}")]
    Unavailable {
        /// The token.
        token: String,
        /// What the module said.
        reason: String,
    },
    /// The token holds no private key with this kid.
    #[error("the token {token} holds no private key {kid}")]
    KeyMissing {
        /// The token.
        token: String,
        /// The key.
        kid: String,
    },
    /// Any other refusal by the module.
    #[error("the token {token} failed: {reason}")]
    Failed {
        /// The token.
        token: String,
        /// What the module said.
        reason: String,
    },
}

impl TokenError {
    /// The token cannot be reached for now (as opposed to refusing the request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A PKCS#11 error in a few words (the binding's own text is a paragraph).
fn short(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("{function}: {}", rv_name(*rv)),
        other => other.to_string(),
    }
}

fn rv_name(rv: RvError) -> String {
    // `CKR_PIN_INCORRECT` from `PinIncorrect`.
    let name = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Errors that mean the token (or our sessions with it) went away, rather
/// than that a request was wrong.
fn is_gone(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::SessionClosed
                | RvError::SessionHandleInvalid
                | RvError::SessionCount
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::GeneralError
                | RvError::FunctionFailed
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid,
            _
        )
    )
}

/// Sessions and object handles, dropped together when the token goes away.
#[derive(Default)]
struct Live {
    /// Holds the login: PKCS#11 logs an application in once per token, for
    /// as long as one of its sessions stays open.
    login: Option<Session>,
    /// Logged-in sessions waiting for a signature.
    idle: Vec<Session>,
    /// Private-key handles by `CKA_ID`, found once per login.
    handles: HashMap<Vec<u8>, ObjectHandle>,
    /// Counts logins, so a session opened before the token went away is
    /// never put back after it returned.
    generation: u64,
    /// Why the token was lost, while it is.
    lost: Option<String>,
    /// When we last tried to reach it again, so a missing token costs one
    /// attempt a second, not one per request.
    last_attempt: Option<Instant>,
}

/// An open, logged-in token. Cheap to share (`Arc`); every method blocks.
pub struct Token {
    ctx: Pkcs11,
    /// The token's slot. Signing holds it shared; re-initialising the module
    /// after the token went away holds it exclusively, so no call is in
    /// flight while the module restarts (slot ids may change then).
    slot: RwLock<Slot>,
    /// `label (serial)`, as the store records it and errors name it.
    identity: String,
    label: String,
    serial: String,
    pin: AuthPin,
    /// How many idle sessions to keep: one per core.
    pool_size: usize,
    /// At most `pool_size` calls into the module at once, admitted in the
    /// order they came: the module works on the caller's thread, so more
    /// would only time-slice the same cores, and an unfair wait let late
    /// callers overtake early ones (p99 500 ms against a p50 of 30 ms under
    /// 64 connections before this).
    turns: tokio::sync::Semaphore,
    live: Mutex<Live>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("identity", &self.identity)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// The signing mechanism of each algorithm and its name, for errors.
fn sign_mechanism(alg: Algorithm) -> (MechanismType, &'static str) {
    match alg {
        Algorithm::Rs256 => (MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS"),
        Algorithm::Ps256 => (
            MechanismType::SHA256_RSA_PKCS_PSS,
            "CKM_SHA256_RSA_PKCS_PSS",
        ),
        Algorithm::Es256 => (MechanismType::ECDSA, "CKM_ECDSA"),
        Algorithm::EdDsa => (MechanismType::EDDSA, "CKM_EDDSA"),
    }
}

/// The key-generation mechanism of each algorithm and its name.
fn generate_mechanism(alg: Algorithm) -> (MechanismType, &'static str) {
    match alg {
        Algorithm::Rs256 | Algorithm::Ps256 => (
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            "CKM_RSA_PKCS_KEY_PAIR_GEN",
        ),
        Algorithm::Es256 => (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
        Algorithm::EdDsa => (
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        ),
    }
}

impl Token {
    /// Loads `config.module`, finds the token, logs in with the user PIN and
    /// checks that it can generate and sign with every one of `algorithms`.
    /// Creates nothing in the token.
    ///
    /// # Errors
    ///
    /// [`TokenError::Module`], [`TokenError::NoToken`], [`TokenError::Login`]
    /// or [`TokenError::Unsupported`], each naming what to fix.
    pub fn open(config: &TokenConfig, algorithms: &[Algorithm]) -> Result<Arc<Self>, TokenError> {
        let module_error = |reason: String| TokenError::Module {
            path: config.module.display().to_string(),
            reason,
        };
        if !Path::new(&config.module).is_file() {
            return Err(module_error("no such file".into()));
        }
        let ctx = Pkcs11::new(&config.module).map_err(|e| module_error(short(&e)))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_error(short(&e))),
        }
        // Another process writing the same token (a replica starting beside
        // this one on a shared SoftHSM2 directory) can make it look absent
        // for a moment: read the slots again, afresh, a few times.
        let mut tries = 1;
        let (slot, identity, label, serial) = loop {
            match find_token(&ctx, &config.token) {
                Ok(found) => break found,
                Err(TokenError::NoToken(..)) if tries < LOGIN_TRIES => {
                    std::thread::sleep(Duration::from_millis(100 * tries));
                    tries += 1;
                    let _ = ctx.clone().finalize();
                    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                        Err(e) => return Err(module_error(short(&e))),
                    }
                }
                Err(TokenError::Module { reason, .. }) => return Err(module_error(reason)),
                Err(err) => return Err(err),
            }
        };
        // The list, not C_GetMechanismInfo one by one: modules may answer
        // the info of a mechanism they do not offer (SoftHSM2 does, for
        // those its `slots.mechanisms` setting takes away).
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| module_error(short(&e)))?;
        for &alg in algorithms {
            for (mechanism, name) in [sign_mechanism(alg), generate_mechanism(alg)] {
                if !mechanisms.contains(&mechanism) {
                    return Err(TokenError::Unsupported {
                        token: identity,
                        alg,
                        mechanism: name,
                    });
                }
            }
        }
        let pool_size = std::thread::available_parallelism().map_or(2, |n| n.get());
        let token = Self {
            ctx,
            slot: RwLock::new(slot),
            identity,
            label,
            serial,
            pin: AuthPin::from(config.pin.expose_secret().to_owned()),
            pool_size,
            turns: tokio::sync::Semaphore::new(pool_size),
            live: Mutex::new(Live::default()),
        };
        // Another process logging in to the same token at the same instant
        // (replicas starting together on a shared SoftHSM2 token directory)
        // can make a login fail once: a few tries before giving up.
        let mut tries = 1;
        loop {
            let mut live = token.lock();
            match token.login(&mut live, slot) {
                Ok(()) => break,
                Err(err) if err.is_unavailable() && tries < LOGIN_TRIES => {
                    drop(live);
                    std::thread::sleep(Duration::from_millis(100 * tries));
                    tries += 1;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(Arc::new(token))
    }

    /// `label (serial)`: what the store records as the holder of its keys.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        match self.live.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn failed(&self, err: &CkError) -> TokenError {
        if is_gone(err) {
            TokenError::Unavailable {
                token: self.identity.clone(),
                reason: short(err),
            }
        } else {
            TokenError::Failed {
                token: self.identity.clone(),
                reason: short(err),
            }
        }
    }

    fn unavailable(&self, reason: String) -> TokenError {
        TokenError::Unavailable {
            token: self.identity.clone(),
            reason,
        }
    }

    /// Opens the login session and logs in.
    fn login(&self, live: &mut Live, slot: Slot) -> Result<(), TokenError> {
        let session = self
            .ctx
            .open_rw_session(slot)
            .map_err(|e| self.failed(&e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(
                e @ CkError::Pkcs11(
                    RvError::PinIncorrect
                    | RvError::PinInvalid
                    | RvError::PinLenRange
                    | RvError::PinLocked
                    | RvError::PinExpired,
                    _,
                ),
            ) => {
                return Err(TokenError::Login {
                    token: self.identity.clone(),
                    reason: short(&e),
                });
            }
            Err(e) => return Err(self.failed(&e)),
        }
        live.login = Some(session);
        live.generation += 1;
        live.lost = None;
        Ok(())
    }

    /// Whether it is logged in now (no call into the module).
    pub fn is_connected(&self) -> bool {
        self.lock().login.is_some()
    }

    /// Why it is unreachable, while it is (no call into the module).
    pub fn lost(&self) -> Option<String> {
        self.lock().lost.clone()
    }

    /// After the token went away: restarts the module (modules such as
    /// SoftHSM2 do not take a token back otherwise), finds the token again
    /// by label and serial, and logs in. At most one attempt a second.
    fn reconnect(&self) -> Result<(), TokenError> {
        if self.is_connected() {
            return Ok(());
        }
        let mut slot = match self.slot.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut live = self.lock();
        if live.login.is_some() {
            return Ok(());
        }
        let reason = live.lost.clone().unwrap_or_else(|| "not logged in".into());
        if live
            .last_attempt
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Err(self.unavailable(reason));
        }
        live.last_attempt = Some(Instant::now());
        // No call is in flight (we hold the slot exclusively) and no session
        // is left open: the module may restart.
        live.idle.clear();
        live.handles.clear();
        let _ = self.ctx.clone().finalize();
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(self.unavailable(short(&e))),
        }
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| self.unavailable(short(&e)))?;
        let found = slots.into_iter().find(|candidate| {
            self.ctx.get_token_info(*candidate).is_ok_and(|info| {
                info.label().trim() == self.label && info.serial_number().trim() == self.serial
            })
        });
        let Some(found) = found else {
            return Err(self.unavailable("the token is not in any slot".into()));
        };
        *slot = found;
        self.login(&mut live, found)?;
        tracing::info!(token = %self.identity, "PKCS#11 token is back; logged in again");
        Ok(())
    }

    /// Forgets every session and handle, recording why: the next call
    /// reconnects.
    /// Drops the login so the next call restarts the module and sees the
    /// token as it is now; false when that was tried less than a second
    /// ago (a key that is really gone must not restart it per request).
    fn read_afresh(&self) -> bool {
        let mut live = self.lock();
        if live
            .last_attempt
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        tracing::info!(token = %self.identity, "a key is not in the token as last read; reading it afresh");
        live.idle.clear();
        live.handles.clear();
        live.login = None;
        live.lost = Some("reading the token afresh".into());
        live.last_attempt = None;
        true
    }

    fn disconnect(&self, why: &TokenError) {
        let mut live = self.lock();
        if live.login.is_some() {
            tracing::warn!(token = %self.identity, error = %why, "lost the PKCS#11 token");
        }
        live.idle.clear();
        live.handles.clear();
        live.login = None;
        live.lost = Some(why.to_string());
    }

    /// Runs `work` on a logged-in session from the pool (opening one when
    /// none is idle). When the token has gone away, every session is
    /// dropped, so a later call logs in afresh once it is back.
    fn with_session<T>(
        &self,
        work: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, TokenError> {
        // Never closed, so the wait ends with a turn. The caller is already
        // off the async workers (`off_the_async_workers` in `keys::crypto`),
        // so parking this thread is what waiting means here.
        let _turn = futures_executor::block_on(self.turns.acquire());
        self.reconnect()?;
        let slot = match self.slot.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (session, generation) = {
            let mut live = self.lock();
            if live.login.is_none() {
                let reason = live.lost.clone().unwrap_or_else(|| "not logged in".into());
                return Err(self.unavailable(reason));
            }
            (live.idle.pop(), live.generation)
        };
        let session = match session {
            Some(session) => session,
            None => match self.ctx.open_rw_session(*slot) {
                Ok(session) => session,
                Err(err) => {
                    let mapped = self.failed(&err);
                    if mapped.is_unavailable() {
                        self.disconnect(&mapped);
                    }
                    return Err(mapped);
                }
            },
        };
        let result = work(&session);
        match result {
            Ok(value) => {
                let mut live = self.lock();
                if live.generation == generation
                    && live.login.is_some()
                    && live.idle.len() < self.pool_size
                {
                    live.idle.push(session);
                }
                Ok(value)
            }
            Err(err) => {
                let mapped = self.failed(&err);
                if mapped.is_unavailable() {
                    drop(session);
                    self.disconnect(&mapped);
                }
                Err(mapped)
            }
        }
    }

    /// The private key whose `CKA_ID` is `id`, found once per login.
    fn private_key(&self, session: &Session, id: &[u8]) -> Result<Option<ObjectHandle>, CkError> {
        if let Some(handle) = self.lock().handles.get(id) {
            return Ok(Some(*handle));
        }
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])?;
        let handle = found.first().copied();
        if let Some(handle) = handle {
            self.lock().handles.insert(id.to_vec(), handle);
        }
        Ok(handle)
    }

    /// Generates an `alg` key pair in the token (RSA of `rsa_size`),
    /// private, sensitive and not extractable, labelled with its kid and
    /// identified by its thumbprint. Returns its public members and kid.
    ///
    /// # Errors
    ///
    /// [`TokenError::Unavailable`] when the token is away, else
    /// [`TokenError::Failed`] with what the module said.
    pub fn generate(
        &self,
        alg: Algorithm,
        rsa_size: RsaKeySize,
    ) -> Result<(PublicMembers, String), TokenError> {
        let malformed = |what: &str| TokenError::Failed {
            token: self.identity.clone(),
            reason: format!("the token returned a malformed {what}"),
        };
        // A label no other key has, until the kid (which needs the public key) is known.
        let pending = format!(
            "jwks-server pending {}",
            super::crypto::random_id().unwrap_or_default()
        );
        let (mechanism, mut public_template) = match alg {
            Algorithm::Rs256 | Algorithm::Ps256 => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits((rsa_size.bits() as u64).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
            ),
            Algorithm::Es256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256_PARAMS.to_vec())],
            ),
            Algorithm::EdDsa => (
                Mechanism::EccEdwardsKeyPairGen,
                vec![Attribute::EcParams(ED25519_PARAMS.to_vec())],
            ),
        };
        public_template.extend([
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(pending.clone().into_bytes()),
        ]);
        let private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(pending.into_bytes()),
        ];
        let (public, kid) = self
            .with_session(|session| {
                let (public_handle, private_handle) =
                    session.generate_key_pair(&mechanism, &public_template, &private_template)?;
                let members = read_public(session, public_handle, alg);
                let Some(members) = members? else {
                    // Not ours to keep: a key we cannot describe cannot be published.
                    let _ = session.destroy_object(private_handle);
                    let _ = session.destroy_object(public_handle);
                    return Ok(None);
                };
                let kid = members.thumbprint();
                let id = B64.decode(&kid).unwrap_or_default();
                let named = [
                    Attribute::Label(kid.clone().into_bytes()),
                    Attribute::Id(id),
                ];
                for handle in [public_handle, private_handle] {
                    if let Err(err) = session.update_attributes(handle, &named) {
                        let _ = session.destroy_object(private_handle);
                        let _ = session.destroy_object(public_handle);
                        return Err(err);
                    }
                }
                Ok(Some((members, kid)))
            })?
            .ok_or_else(|| malformed("public key"))?;
        Ok((public, kid))
    }

    /// Signs `data` with the private key `kid` (whose `CKA_ID` is its
    /// thumbprint bytes) by `alg`'s mechanism: the JWS signature, ES256 as
    /// fixed-length R || S (which is PKCS#11's own form).
    ///
    /// # Errors
    ///
    /// [`TokenError::Unavailable`] when the token is away (signing resumes
    /// when it is back), [`TokenError::KeyMissing`] when it holds no such key.
    pub fn sign(&self, alg: Algorithm, kid: &str, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        let id = B64.decode(kid).unwrap_or_default();
        let digest;
        let (mechanism, input): (Mechanism<'_>, &[u8]) = match alg {
            Algorithm::Rs256 => (Mechanism::Sha256RsaPkcs, data),
            Algorithm::Ps256 => (
                Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32u64.into(),
                }),
                data,
            ),
            Algorithm::Es256 => {
                digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
                (Mechanism::Ecdsa, digest.as_ref())
            }
            Algorithm::EdDsa => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                data,
            ),
        };
        let attempt = || {
            self.with_session(|session| {
                let Some(key) = self.private_key(session, &id)? else {
                    return Ok(None);
                };
                session.sign(&mechanism, key, input).map(Some)
            })
        };
        let mut signed = attempt()?;
        // A key another process made (a replica sharing the token) may not
        // show to a login opened before it: some modules (SoftHSM2's file
        // store) read other processes' objects only when they start. Read the
        // token afresh, at most once a second, and look once more.
        if signed.is_none() && self.read_afresh() {
            signed = attempt()?;
        }
        signed.ok_or_else(|| TokenError::KeyMissing {
            token: self.identity.clone(),
            kid: kid.to_owned(),
        })
    }

    /// Destroys every object (private and public key) whose `CKA_ID` is
    /// `kid`'s thumbprint bytes; returns how many went.
    ///
    /// # Errors
    ///
    /// [`TokenError::Unavailable`] or [`TokenError::Failed`]: the objects stay.
    pub fn destroy(&self, kid: &str) -> Result<usize, TokenError> {
        let id = B64.decode(kid).unwrap_or_default();
        let destroyed = self.with_session(|session| {
            let found = session.find_objects(&[Attribute::Id(id.clone())])?;
            for handle in &found {
                session.destroy_object(*handle)?;
            }
            Ok(found.len())
        })?;
        self.lock().handles.remove(&id);
        Ok(destroyed)
    }

    /// Whether a signature can be made now: the token answers a session
    /// (logging in again if it had gone away).
    ///
    /// # Errors
    ///
    /// [`TokenError::Unavailable`] while it is away.
    pub fn check(&self) -> Result<(), TokenError> {
        // Reading a key object makes modules look at the token itself (a
        // session's own state may outlive the token); with no key used yet,
        // any key in the token, else the session.
        let known = self.lock().handles.values().next().copied();
        self.with_session(|session| match known {
            Some(handle) => session
                .get_attributes(handle, &[AttributeType::Label])
                .map(|_| ()),
            None => match session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?
                .first()
            {
                Some(handle) => session
                    .get_attributes(*handle, &[AttributeType::Label])
                    .map(|_| ()),
                None => session.get_session_info().map(|_| ()),
            },
        })
    }
}

/// The public members of the public-key object `handle`, or `None` when
/// the token's answer is not a key of `alg`.
fn read_public(
    session: &Session,
    handle: ObjectHandle,
    alg: Algorithm,
) -> Result<Option<PublicMembers>, CkError> {
    let wanted: &[AttributeType] = match alg {
        Algorithm::Rs256 | Algorithm::Ps256 => {
            &[AttributeType::Modulus, AttributeType::PublicExponent]
        }
        Algorithm::Es256 | Algorithm::EdDsa => &[AttributeType::EcPoint],
    };
    let attributes = session.get_attributes(handle, wanted)?;
    let (mut modulus, mut exponent, mut point) = (None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::Modulus(bytes) => modulus = Some(bytes),
            Attribute::PublicExponent(bytes) => exponent = Some(bytes),
            Attribute::EcPoint(bytes) => point = Some(bytes),
            _ => {}
        }
    }
    let strip = |bytes: Vec<u8>| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        bytes[start..].to_vec()
    };
    Ok(match alg {
        Algorithm::Rs256 | Algorithm::Ps256 => match (modulus, exponent) {
            (Some(n), Some(e)) => Some(PublicMembers::Rsa {
                n: B64.encode(strip(n)),
                e: B64.encode(strip(e)),
            }),
            _ => None,
        },
        Algorithm::Es256 => point
            .map(|p| unwrap_octet_string(&p, 65))
            .filter(|p| p.len() == 65 && p[0] == 4)
            .map(|p| PublicMembers::Ec {
                crv: P256,
                x: B64.encode(&p[1..33]),
                y: B64.encode(&p[33..]),
            }),
        Algorithm::EdDsa => point
            .map(|p| unwrap_octet_string(&p, 32))
            .filter(|p| p.len() == 32)
            .map(|p| PublicMembers::Okp {
                crv: ED25519,
                x: B64.encode(p),
            }),
    })
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (PKCS#11 §2.3.3);
/// some modules give the bare point. Either way, the `len` bytes inside.
fn unwrap_octet_string(bytes: &[u8], len: usize) -> Vec<u8> {
    if bytes.len() == len + 2 && bytes[0] == 0x04 && usize::from(bytes[1]) == len {
        return bytes[2..].to_vec();
    }
    bytes.to_vec()
}

/// The slot of the token `selector` names, with its identity, label and
/// serial number.
///
/// # Errors
///
/// [`TokenError::NoToken`] naming the tokens seen, or
/// [`TokenError::Module`] when the slots cannot be listed.
fn find_token(
    ctx: &Pkcs11,
    selector: &TokenSelector,
) -> Result<(Slot, String, String, String), TokenError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| TokenError::Module {
            path: String::new(),
            reason: short(&e),
        })?;
    let mut seen = Vec::new();
    let mut found = None;
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim().to_owned();
        let serial = info.serial_number().trim().to_owned();
        let identity = format!("{label} ({serial})");
        let matches = match selector {
            TokenSelector::Label(wanted) => label == *wanted,
            TokenSelector::Slot(id) => slot.id() == *id,
        };
        seen.push(format!("{label:?} in slot {}", slot.id()));
        if matches && found.is_none() {
            found = Some((slot, identity, label, serial));
        }
    }
    found.ok_or_else(|| {
        let wanted = match selector {
            TokenSelector::Label(label) => format!("labelled {label:?}"),
            TokenSelector::Slot(id) => format!("in slot {id}"),
        };
        let seen = if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        };
        TokenError::NoToken(wanted, seen)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_read_wrapped_or_bare() {
        let mut wrapped = vec![0x04, 65, 0x04];
        wrapped.extend([7u8; 64]);
        assert_eq!(unwrap_octet_string(&wrapped, 65).len(), 65);
        assert_eq!(
            unwrap_octet_string(&wrapped[2..], 65),
            wrapped[2..].to_vec()
        );
    }

    #[test]
    fn return_values_read_as_the_standard_names_them() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(rv_name(RvError::TokenNotPresent), "CKR_TOKEN_NOT_PRESENT");
    }

    #[test]
    fn the_pin_never_shows_in_debug_output() {
        let config = TokenConfig {
            module: "/m.so".into(),
            token: TokenSelector::Label("L".into()),
            pin: SecretString::from("1234-secret"),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("1234-secret") && shown.contains("redacted"));
    }
}
