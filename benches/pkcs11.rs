//! What signing through a PKCS#11 token costs us, over what the module costs
//! itself, with SoftHSM2 as the module (single-threaded, one RSA-2048 key
//! generated in a token of its own in a temporary directory):
//!
//! - `pkcs11/c_sign_bare`: one `C_Sign` (CKM_SHA256_RSA_PKCS) on a session of
//!   our own, the key handle found once, over a typical JWT signing input.
//!   The floor: the module's own signing rate.
//! - `pkcs11/sign_jwt`: [`SigningKey::sign_jwt`] with the same key held in the
//!   token, on typical claims: base64 of the claims, a session from the pool,
//!   the handle from the cache, the same `C_Sign`, base64 of the signature.
//!   The issue asks that this adds under 10% over the bare call.
//! - the same pair for ES256 (`CKM_ECDSA` over our SHA-256 digest).
//!
//! Needs Debian's `softhsm2` (`/usr/lib/softhsm/libsofthsm2.so`).
// Tests and tools: a failed assumption should stop them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{hint::black_box, path::Path, process::Command};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    mechanism::Mechanism,
    object::{Attribute, ObjectClass},
    session::UserType,
    types::AuthPin,
};
use jwks_server::keys::{
    Algorithm,
    algorithm::RsaKeySize,
    crypto::SigningKey,
    pkcs11::{Token, TokenConfig, TokenSelector},
};
use secrecy::SecretString;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

/// Claims shaped like the ones the service writes (as in benches/signing.rs).
const CLAIMS: &[u8] = br#"{"iss":"https://issuer.example.com","sub":"alice@example.com","aud":"billing-api","iat":1767225600,"nbf":1767225600,"exp":1767226500,"jti":"q1w2e3r4t5y6u7i8o9p0aA"}"#;

/// A SoftHSM2 token of its own; `SOFTHSM2_CONF` points at it for this process.
fn token(dir: &Path) -> std::sync::Arc<Token> {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing: apt-get install softhsm2"
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // SAFETY: set once, before any thread of ours starts and before the
    // module (which reads it) is loaded.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "5678",
            "--pin",
            PIN,
        ])
        .output()
        .expect("softhsm2-util runs");
    assert!(init.status.success(), "{init:?}");
    let config = TokenConfig {
        module: MODULE.into(),
        token: TokenSelector::Label("bench".into()),
        pin: SecretString::from(PIN),
    };
    Token::open(&config, &[Algorithm::Rs256, Algorithm::Es256]).expect("the token opens")
}

fn pkcs11(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());

    // The bare path: our own context on the same (already initialised)
    // module, our own session, the handle found once.
    let bare = Pkcs11::new(MODULE).unwrap();
    let _ = bare.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = bare.get_slots_with_token().unwrap()[0];
    let session = bare.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&AuthPin::from(PIN)));

    let mut group = c.benchmark_group("pkcs11");
    group.throughput(Throughput::Elements(1));
    for alg in [Algorithm::Rs256, Algorithm::Es256] {
        let (public, kid) = token.generate(alg, RsaKeySize::default()).unwrap();
        let key = SigningKey::in_token(alg, public, token.clone()).unwrap();
        let handle = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(B64.decode(&kid).unwrap()),
            ])
            .unwrap()[0];
        // The signing input sign_jwt builds: header.claims, base64url.
        let token_text = key.sign_jwt(CLAIMS).unwrap();
        let input = token_text.rsplit_once('.').unwrap().0.as_bytes().to_vec();
        let name = alg.as_str().to_ascii_lowercase();

        group.bench_function(format!("{name}/c_sign_bare"), |b| {
            b.iter(|| match alg {
                Algorithm::Es256 => {
                    let digest =
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(&input));
                    session
                        .sign(&Mechanism::Ecdsa, handle, digest.as_ref())
                        .unwrap()
                }
                _ => session
                    .sign(&Mechanism::Sha256RsaPkcs, handle, black_box(&input))
                    .unwrap(),
            });
        });
        group.bench_function(format!("{name}/sign_jwt"), |b| {
            b.iter(|| key.sign_jwt(black_box(CLAIMS)).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, pkcs11);
criterion_main!(benches);
