//! Several replicas on one PostgreSQL database, as separate processes.
//!
//! They need PostgreSQL: a role that may create databases, named by
//! `JWKS_TEST_DATABASE_URL`, or else the local PostgreSQL 15 that
//! `.ci/postgres.sh` starts (run once per test binary, as root). Without
//! either they fail, saying how to provide one: a test that did not run must
//! not look like a pass. Each test creates its own database and drops it after.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use jwks_server::{
    keys::{
        Algorithm,
        policy::Policy,
        seal::{Kek, KekRing},
    },
    proto::{IssueTokenRequest, key_service_client::KeyServiceClient},
    service::{Access, KeyService},
    store::{KeyStore, SqlStore, StoredKey},
    time::Timestamp,
};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::helpers::{ServerProcess, TEST_KEK, claims, header, kids, now, verify};

type Replica = ServerProcess;

/// A database of its own for one test (also used by `pkcs11.rs`).
pub(crate) struct TestDatabase {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

/// Where to find a PostgreSQL role that may create databases: the URL in
/// `JWKS_TEST_DATABASE_URL`, or else the one `.ci/postgres.sh` prints after
/// starting the local PostgreSQL 15. The script runs at most once per test
/// binary; if it fails, every test that needs the database fails with why.
fn admin_url() -> &'static str {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    let url = URL.get_or_init(|| match std::env::var("JWKS_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => start_local_postgres(),
    });
    match url {
        Ok(url) => url,
        Err(why) => panic!(
            "this test needs PostgreSQL and none could be found: {why}\n\
             Provide one: set JWKS_TEST_DATABASE_URL to a role that may create databases \
             (e.g. postgres://me:pw@my-pg-host:5432/postgres), or run the tests as root \
             on a machine where .ci/postgres.sh can start PostgreSQL 15."
        ),
    }
}

/// Runs `.ci/postgres.sh` (idempotent: it returns at once when PostgreSQL
/// already answers) and returns the URL it prints as its last line.
fn start_local_postgres() -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            format!("JWKS_TEST_DATABASE_URL is unset and bash {script} could not run: {e}")
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let url = stdout.lines().last().unwrap_or_default().trim();
    if output.status.success() && url.starts_with("postgres://") {
        return Ok(url.to_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "JWKS_TEST_DATABASE_URL is unset and bash {script} failed ({}):\n{}",
        output.status,
        tail.join("\n")
    ))
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

impl TestDatabase {
    pub(crate) async fn create() -> Self {
        let admin_url = admin_url().to_owned();
        let name = format!(
            "jwks_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to PostgreSQL at {}: {e}\n\
                     Set JWKS_TEST_DATABASE_URL to a role that may create databases, or unset it \
                     to let .ci/postgres.sh start the local PostgreSQL 15 (as root).",
                    redacted(&admin_url)
                )
            });
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the role at {} cannot create a database (it needs CREATEDB): {e}",
                    redacted(&admin_url)
                )
            });
        let (base, _) = admin_url.rsplit_once('/').expect("URL names a database");
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }

    pub(crate) async fn keys(&self) -> Vec<StoredKey> {
        let store = SqlStore::connect(&self.url).await.unwrap();
        let keys = store.load().await.unwrap();
        store.close().await;
        keys
    }

    async fn max_generation(&self) -> i64 {
        self.keys()
            .await
            .iter()
            .map(|k| k.meta.generation)
            .max()
            .unwrap_or(0)
    }

    /// Waits (at most `limit`) for a key newer than `generation` to be
    /// stored, and returns the newest generation then.
    pub(crate) async fn generation_above(&self, generation: i64, limit: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let now = self.max_generation().await;
            if now > generation {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no key after generation {generation} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where the database server listens.
    async fn server_addr(&self) -> SocketAddr {
        let url = reqwest::Url::parse(&self.url).expect("a URL");
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port().unwrap_or(5432);
        tokio::net::lookup_host((host, port))
            .await
            .unwrap()
            .next()
            .expect("the database host resolves")
    }

    /// The same database reached through `port` on loopback (a proxy) instead.
    fn url_via(&self, port: u16) -> String {
        let mut url = reqwest::Url::parse(&self.url).expect("a URL");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(port)).unwrap();
        url.to_string()
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async; use a runtime of our own on a plain thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Settings under which keys rotate every second.
/// FAST with a 2 s rotation: the same rules, with room for a replica whose
/// refresher a loaded machine (the whole suite on two cores) runs a second
/// late. At 1 s such a replica had not yet published the next key when another
/// signed with it: a starved machine, not a broken rule.
const STEADY: &[(&str, &str)] = &[
    ("JWKS_TOKEN_TTL", "3s"),
    ("JWKS_ROTATE_EVERY", "2s"),
    ("JWKS_JWKS_MAX_AGE", "1s"),
    ("JWKS_RELOAD_EVERY", "1s"),
    ("JWKS_CLOCK_SKEW", "1s"),
    ("JWKS_KEEP_EXPIRED", "1000"),
];

const FAST: &[(&str, &str)] = &[
    ("JWKS_TOKEN_TTL", "2s"),
    ("JWKS_ROTATE_EVERY", "1s"),
    ("JWKS_JWKS_MAX_AGE", "1s"),
    ("JWKS_RELOAD_EVERY", "1s"),
    ("JWKS_CLOCK_SKEW", "1s"),
    ("JWKS_KEEP_EXPIRED", "1000"),
];

impl Replica {
    async fn start_on(store_url: &str, settings: &[(&str, &str)]) -> Self {
        let mut env: Vec<(&str, &str)> = vec![("JWKS_STORE", store_url)];
        env.extend_from_slice(settings);
        ServerProcess::spawn(&env).await
    }

    async fn jwks(&self, client: &reqwest::Client) -> Value {
        let response = client
            .get(format!("{}/.well-known/jwks.json", self.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn rest_token(&self, client: &reqwest::Client) -> Result<String, String> {
        let response = client
            .post(format!("{}/auth", self.http))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("POST /auth: {}", response.status()));
        }
        response.text().await.map_err(|e| e.to_string())
    }

    async fn grpc_token(&self) -> Result<String, String> {
        let mut client = KeyServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .map_err(|e| e.to_string())?;
        let response = client
            .issue_token(IssueTokenRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.into_inner().token)
    }

    async fn health(&self, client: &reqwest::Client) -> Value {
        client
            .get(format!("{}/health", self.http))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Asserts the store holds exactly one key per rotation slot of each algorithm.
pub(crate) fn assert_one_key_per_slot(keys: &[StoredKey]) {
    let algorithms: HashSet<_> = keys.iter().map(|k| k.meta.alg).collect();
    for alg in algorithms {
        let mut by_generation: Vec<&StoredKey> =
            keys.iter().filter(|k| k.meta.alg == alg).collect();
        by_generation.sort_by_key(|k| k.meta.generation);
        let generations: Vec<i64> = by_generation.iter().map(|k| k.meta.generation).collect();
        let expected: Vec<i64> = (1..=generations.len() as i64).collect();
        assert_eq!(
            generations, expected,
            "{alg}: generations are contiguous, none doubled"
        );
        let starts: HashSet<i64> = by_generation
            .iter()
            .map(|k| k.meta.activates_at.unix())
            .collect();
        assert_eq!(
            starts.len(),
            by_generation.len(),
            "{alg}: no two keys take over at the same instant"
        );
    }
}

#[tokio::test]
async fn replicas_started_together_on_an_empty_database_create_one_key_set() {
    let db = TestDatabase::create().await;
    let replicas = futures_join3(
        Replica::start_on(&db.url, &[]),
        Replica::start_on(&db.url, &[]),
        Replica::start_on(&db.url, &[]),
    )
    .await;
    let keys = db.keys().await;
    assert_eq!(keys.len(), 2, "one active and one expired key, once");
    assert_one_key_per_slot(&keys);
    let client = reqwest::Client::new();
    let first = kids(&replicas[0].jwks(&client).await);
    for replica in &replicas[1..] {
        assert_eq!(kids(&replica.jwks(&client).await), first);
    }
}

#[tokio::test]
async fn replicas_started_together_with_two_algorithms_create_one_key_set_per_algorithm() {
    let db = TestDatabase::create().await;
    let settings = [("JWKS_ALGORITHMS", "EdDSA,PS256")];
    let replicas = futures_join3(
        Replica::start_on(&db.url, &settings),
        Replica::start_on(&db.url, &settings),
        Replica::start_on(&db.url, &settings),
    )
    .await;
    let keys = db.keys().await;
    for alg in [Algorithm::EdDsa, Algorithm::Ps256] {
        let own = keys.iter().filter(|k| k.meta.alg == alg).count();
        assert_eq!(own, 2, "{alg}: one active and one expired key, once");
    }
    assert_eq!(keys.len(), 4);
    assert_one_key_per_slot(&keys);
    let client = reqwest::Client::new();
    let first = kids(&replicas[0].jwks(&client).await);
    assert_eq!(first.len(), 2, "one published key per algorithm");
    for replica in &replicas[1..] {
        assert_eq!(kids(&replica.jwks(&client).await), first);
    }
}

/// The race behind `replicas_started_together…`, made deterministic: a
/// replica that read the clock before another committed the first keys (its
/// reading is older than theirs) takes the lock second and must find nothing to
/// do, not mint a second key set.
#[tokio::test]
async fn a_replica_with_an_older_clock_reading_does_not_create_keys_twice() {
    let db = TestDatabase::create().await;
    let policy = Policy::new(
        Duration::from_secs(15 * 60),
        Duration::from_secs(30 * 60),
        Duration::from_secs(10 * 60),
        Duration::from_secs(10),
        Duration::from_secs(5 * 60),
    );
    let start = |now: i64| {
        let url = db.url.clone();
        let policy = policy.clone();
        async move {
            let store: Arc<dyn KeyStore> = Arc::new(SqlStore::connect(&url).await.unwrap());
            let keks = KekRing::new(vec![Kek::from_base64(TEST_KEK).unwrap()]).unwrap();
            KeyService::start(
                store,
                keks,
                policy,
                "http://test".into(),
                Access::default(),
                Timestamp::from_unix(now),
            )
            .await
            .unwrap()
        }
    };
    let now = Timestamp::now().unix();
    let first = start(now).await;
    let behind = start(now - 3).await;
    let keys = db.keys().await;
    assert_eq!(keys.len(), 2, "one active and one expired key, once");
    assert_one_key_per_slot(&keys);
    let signer = |service: &KeyService| {
        service
            .ring()
            .signer(Timestamp::from_unix(now))
            .map(|k| k.meta.kid.clone())
    };
    assert_eq!(signer(&first), signer(&behind));
    assert!(signer(&first).is_some());
}

async fn futures_join3(
    a: impl Future<Output = Replica>,
    b: impl Future<Output = Replica>,
    c: impl Future<Output = Replica>,
) -> Vec<Replica> {
    let (a, b, c) = tokio::join!(a, b, c);
    vec![a, b, c]
}

#[tokio::test]
async fn tokens_from_any_replica_verify_against_the_jwks_of_any_replica_through_rotations() {
    let db = TestDatabase::create().await;
    let replicas = futures_join3(
        Replica::start_on(&db.url, STEADY),
        Replica::start_on(&db.url, STEADY),
        Replica::start_on(&db.url, STEADY),
    )
    .await;
    let client = reqwest::Client::new();
    let mut issued: Vec<(String, i64)> = Vec::new();
    let mut signing_kids = HashSet::new();
    let mut cached: HashMap<usize, (Value, tokio::time::Instant)> = HashMap::new();
    let (mut tokens, mut verifications) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let mut round = 0usize;
    while signing_kids.len() < 12 && tokio::time::Instant::now() < deadline {
        round += 1;
        let issuer = &replicas[round % 3];
        let token = if round.is_multiple_of(2) {
            issuer.rest_token(&client).await
        } else {
            issuer.grpc_token().await
        }
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        tokens += 1;
        let kid = header(&token)["kid"].as_str().unwrap().to_owned();
        signing_kids.insert(kid.clone());
        issued.push((token.clone(), claims(&token)["exp"].as_i64().unwrap()));

        // A verifier that caches each replica's JWKS for max-age (1 s).
        let verifier = (round * 7 + 1) % 3;
        let entry = cached.entry(verifier).or_insert((
            Value::Null,
            tokio::time::Instant::now() - Duration::from_secs(5),
        ));
        if entry.1.elapsed() >= Duration::from_secs(1) {
            *entry = (
                replicas[verifier].jwks(&client).await,
                tokio::time::Instant::now(),
            );
        }
        assert!(
            kids(&entry.0).contains(&kid),
            "round {round}: replica {verifier}'s cached JWKS lacks {kid}"
        );

        // Every unexpired token verifies against a fresh JWKS from some replica.
        let fresh = replicas[(round * 5 + 2) % 3].jwks(&client).await;
        for (token, exp) in &issued {
            if *exp > now() + 1 {
                verify(token, &fresh).unwrap_or_else(|e| panic!("round {round}: {e}"));
                verifications += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = db.keys().await;
    assert_one_key_per_slot(&keys);
    println!(
        "replicas: 3, tokens issued: {tokens}, signing keys seen: {}, verifications: {verifications}, \
         verification failures: 0, keys in store: {}, duplicate keys: 0",
        signing_kids.len(),
        keys.len()
    );
    assert!(
        signing_kids.len() >= 11,
        "at least 10 rotations, saw {} signing keys",
        signing_kids.len()
    );
}

/// A TCP proxy to PostgreSQL that the test can cut and restore, leaving the
/// real server untouched.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (accept_up, accept_cut) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cuts = accept_cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn when_the_store_goes_away_replicas_keep_serving_report_it_and_catch_up() {
    let db = TestDatabase::create().await;
    let proxy = Proxy::start(db.server_addr().await).await;
    // Keys are published 4 s ahead and created 2 s before that, so a replica
    // always holds keys that can sign for at least ~5 s: longer than the cut.
    let settings: &[(&str, &str)] = &[
        ("JWKS_TOKEN_TTL", "2s"),
        ("JWKS_ROTATE_EVERY", "3s"),
        ("JWKS_JWKS_MAX_AGE", "3s"),
        ("JWKS_RELOAD_EVERY", "1s"),
        ("JWKS_CLOCK_SKEW", "1s"),
    ];
    let via_proxy = db.url_via(proxy.port);
    let (a, b) = tokio::join!(
        Replica::start_on(&via_proxy, settings),
        Replica::start_on(&via_proxy, settings)
    );
    let replicas = [a, b];
    let client = reqwest::Client::new();
    // Wait for a rotation after start-up, so a pending key is in hand.
    let generation_at_start = db.max_generation().await;
    let generation_before = db
        .generation_above(generation_at_start, Duration::from_secs(15))
        .await;

    proxy.cut();
    let mut degraded = HashSet::new();
    let cut_until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut requests = 0;
    while tokio::time::Instant::now() < cut_until {
        for (i, replica) in replicas.iter().enumerate() {
            let token = replica
                .rest_token(&client)
                .await
                .unwrap_or_else(|e| panic!("during the outage: {e}"));
            let jwks = replica.jwks(&client).await;
            verify(&token, &jwks).unwrap();
            replica
                .grpc_token()
                .await
                .unwrap_or_else(|e| panic!("gRPC during the outage: {e}"));
            let health = replica.health(&client).await;
            if health["status"] == "degraded" {
                assert_eq!(health["store"]["status"], "unreachable");
                assert!(health["signing_for_seconds"].as_u64().is_some(), "{health}");
                degraded.insert(i);
            }
            requests += 3;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        degraded.len(),
        2,
        "both replicas reported the outage in /health"
    );
    assert!(requests > 20);

    proxy.restore();
    // Rotation resumes and both replicas converge on the same key set.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let generation_now = db.max_generation().await;
        let (ja, jb) = (
            replicas[0].jwks(&client).await,
            replicas[1].jwks(&client).await,
        );
        let healthy = replicas[0].health(&client).await["status"] == "ok"
            && replicas[1].health(&client).await["status"] == "ok";
        if generation_now > generation_before + 1 && kids(&ja) == kids(&jb) && healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_one_key_per_slot(&db.keys().await);
}

#[tokio::test]
async fn after_kill_9_of_a_replica_the_others_keep_rotating() {
    let db = TestDatabase::create().await;
    let mut replicas = futures_join3(
        Replica::start_on(&db.url, FAST),
        Replica::start_on(&db.url, FAST),
        Replica::start_on(&db.url, FAST),
    )
    .await;
    let client = reqwest::Client::new();
    // Kill replicas at arbitrary moments of their rotation cycle, one by one,
    // leaving one; each time the survivors must go on creating keys.
    for delay_ms in [1_300u64, 2_100] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let mut victim = replicas.remove(0);
        victim.child.start_kill().unwrap();
        victim.child.wait().await.unwrap();
        let before = db.max_generation().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while db.max_generation().await < before + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "survivors stopped rotating"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for replica in &replicas {
            let token = replica.rest_token(&client).await.unwrap();
            for other in &replicas {
                verify(&token, &other.jwks(&client).await).unwrap();
            }
        }
    }
    assert_one_key_per_slot(&db.keys().await);
}

/// Two algorithms on three replicas rotating every second: each algorithm
/// fills each of its slots exactly once, and a token of either algorithm
/// from any replica verifies against any replica's JWKS.
#[tokio::test]
async fn replicas_with_two_algorithms_fill_each_slot_once_per_algorithm_through_rotations() {
    let db = TestDatabase::create().await;
    // Two key pairs per rotation: each key signs for 2 s (not FAST's 1 s), so
    // a replica on a loaded machine still reloads well inside every window.
    let mut settings: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .filter(|(name, _)| *name != "JWKS_ROTATE_EVERY")
        .collect();
    settings.push(("JWKS_ROTATE_EVERY", "2s"));
    settings.push(("JWKS_ALGORITHMS", "RS256,ES256"));
    let replicas = futures_join3(
        Replica::start_on(&db.url, &settings),
        Replica::start_on(&db.url, &settings),
        Replica::start_on(&db.url, &settings),
    )
    .await;
    assert_one_key_per_slot(&db.keys().await);

    let client = reqwest::Client::new();
    let mut signing_kids: HashMap<String, HashSet<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    let mut round = 0usize;
    let rotated = |seen: &HashMap<String, HashSet<String>>| {
        ["RS256", "ES256"]
            .iter()
            .all(|alg| seen.get(*alg).map_or(0, HashSet::len) >= 6)
    };
    while !rotated(&signing_kids) && tokio::time::Instant::now() < deadline {
        round += 1;
        let alg = if round.is_multiple_of(2) {
            "ES256"
        } else {
            "RS256"
        };
        let issuer = &replicas[round % 3];
        let token = if (round / 2).is_multiple_of(2) {
            let response = client
                .post(format!("{}/auth?alg={alg}", issuer.http))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "round {round}");
            response.text().await.unwrap()
        } else {
            KeyServiceClient::connect(format!("http://{}", issuer.grpc))
                .await
                .unwrap()
                .issue_token(IssueTokenRequest {
                    alg: Some(alg.to_owned()),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .into_inner()
                .token
        };
        assert_eq!(header(&token)["alg"], alg);
        let kid = header(&token)["kid"].as_str().unwrap().to_owned();
        signing_kids.entry(alg.to_owned()).or_default().insert(kid);
        let fresh = replicas[(round * 5 + 2) % 3].jwks(&client).await;
        crate::algorithms::verify_any(&token, &fresh)
            .unwrap_or_else(|e| panic!("round {round}: {alg}: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = db.keys().await;
    assert_one_key_per_slot(&keys);
    let per_alg = |alg: &str| signing_kids.get(alg).map_or(0, HashSet::len);
    println!(
        "replicas: 3, algorithms: RS256, ES256, signing keys seen: RS256 {}, ES256 {}, keys in store: {}",
        per_alg("RS256"),
        per_alg("ES256"),
        keys.len()
    );
    assert!(rotated(&signing_kids), "both rotated: {signing_kids:?}");
}

/// A PostgreSQL store written by the release before algorithms: the
/// fixture's rows (tests/fixtures/release-1-store.db) in a database whose
/// schema stops at that release's migration. Today's store migrates it,
/// keeps every key as RS256, adds the newly configured algorithm, and rotates.
#[tokio::test]
async fn a_postgres_store_written_by_the_release_before_algorithms_opens_and_rotates() {
    use sqlx::Row;
    let db = TestDatabase::create().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let migrator = sqlx::migrate::Migrator::new(root.join("migrations/postgres"))
        .await
        .unwrap();
    let mut pg = sqlx::PgConnection::connect(&db.url).await.unwrap();
    migrator.run_to(1, &mut pg).await.unwrap();

    let fixture = root.join("tests/fixtures/release-1-store.db");
    let mut old =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", fixture.display()))
            .await
            .unwrap();
    let columns = "generation, kid, published_at, activates_at, retires_at, expires_at, n, e, \
                   kek_id, nonce, sealed_key";
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT {columns} FROM signing_keys")))
        .fetch_all(&mut old)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO signing_keys ({columns}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(row.get::<i64, _>(0))
        .bind(row.get::<String, _>(1))
        .bind(row.get::<i64, _>(2))
        .bind(row.get::<i64, _>(3))
        .bind(row.get::<i64, _>(4))
        .bind(row.get::<i64, _>(5))
        .bind(row.get::<String, _>(6))
        .bind(row.get::<String, _>(7))
        .bind(row.get::<String, _>(8))
        .bind(row.get::<Vec<u8>, _>(9))
        .bind(row.get::<Vec<u8>, _>(10))
        .execute(&mut pg)
        .await
        .unwrap();
    }
    pg.close().await.unwrap();

    let kek = std::fs::read_to_string(root.join("tests/fixtures/release-1-store.kek")).unwrap();
    let mut policy = Policy::new(
        Duration::from_secs(15 * 60),
        Duration::from_secs(30 * 60),
        Duration::from_secs(10 * 60),
        Duration::from_secs(10),
        Duration::from_secs(5 * 60),
    );
    policy.algorithms = vec![Algorithm::Rs256, Algorithm::EdDsa];
    let store: Arc<dyn KeyStore> = Arc::new(SqlStore::connect(&db.url).await.unwrap());
    let keks = KekRing::new(vec![Kek::from_base64(kek.trim()).unwrap()]).unwrap();
    let now = Timestamp::now();
    let service = KeyService::start(
        store,
        keks,
        policy,
        "http://test".into(),
        Access::default(),
        now,
    )
    .await
    .unwrap();

    let fixture_kids = crate::algorithms::FIXTURE_KIDS;
    let jwks: Value = serde_json::from_slice(&service.jwks(now).json).unwrap();
    let published = kids(&jwks);
    assert!(published.contains(&fixture_kids[1].to_owned()), "{jwks}");
    assert!(published.contains(&fixture_kids[2].to_owned()), "{jwks}");
    assert_eq!(
        service
            .ring()
            .signer(now)
            .map(|k| k.meta.kid.clone())
            .as_deref(),
        Some(fixture_kids[2])
    );
    assert!(service.ring().signer_for(Algorithm::EdDsa, now).is_some());

    let created = service
        .rotate(jwks_server::keys::policy::Trigger::Operator, now)
        .await
        .unwrap();
    assert!(
        created
            .iter()
            .any(|k| k.alg == Algorithm::Rs256 && k.generation == 4),
        "{created:?}"
    );
    let keys = db.keys().await;
    for kid in fixture_kids {
        let key = keys.iter().find(|k| k.meta.kid == kid).expect("kept");
        assert_eq!(key.meta.alg, Algorithm::Rs256);
    }
    assert_one_key_per_slot(&keys);
}
