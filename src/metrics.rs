//! Prometheus metrics: counters and latency histograms the transports record
//! into, and gauges read from the service at scrape time.
//!
//! Names follow Prometheus conventions (`jwks_` prefix, `_total` counters,
//! `_seconds` units). This module knows neither axum nor tonic: transports
//! pass plain labels.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{
    keys::{Algorithm, KeyState},
    service::{Defect, KeyService, StoreHealth},
    time::Timestamp,
};

/// Which door a request came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Door {
    /// The axum REST port.
    Rest,
    /// The tonic gRPC port.
    Grpc,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Grpc => "grpc",
        }
    }
}

/// How a JWKS request was answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum JwksOutcome {
    /// The full key set was sent.
    Full,
    /// The caller's copy was current (HTTP 304, gRPC `not_modified`).
    NotModified,
}

impl JwksOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::NotModified => "not_modified",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    door: &'static str,
    kind: &'static str,
}

/// Test tokens by door and defect (a catalogue name: a bounded set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TestTokenLabels {
    door: &'static str,
    defect: &'static str,
}

/// Tokens by algorithm: a family of its own, so the series of
/// `tokens_issued` (and the queries written against them) stay as they were.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgTokenLabels {
    alg: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgStateLabels {
    alg: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabels {
    door: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

/// Every metric this server exports.
pub struct Metrics {
    registry: Registry,
    tokens: Family<TokenLabels, Counter>,
    tokens_by_alg: Family<AlgTokenLabels, Counter>,
    test_tokens: Family<TestTokenLabels, Counter>,
    keys_by_alg: Family<AlgStateLabels, Gauge>,
    jwks: Family<JwksLabels, Counter>,
    http: LatencyFamily<HttpLabels>,
    grpc: LatencyFamily<GrpcLabels>,
    keys: Family<StateLabels, Gauge>,
    active_key_age: Gauge,
    next_rotation: Gauge,
    signing_remaining: Gauge,
    store_up: Gauge,
    client_secret_checks: Counter,
    keys_unreadable: Gauge,
    rotation_failures: Counter,
    refresher_restarts: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `jwks_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jwks");
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens_issued",
            "Tokens issued, by door and kind",
            tokens.clone(),
        );
        let jwks = Family::<JwksLabels, Counter>::default();
        registry.register(
            "jwks_requests",
            "Key set requests, by door and whether the caller's copy was current",
            jwks.clone(),
        );
        let http: LatencyFamily<HttpLabels> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "REST request latency, by method, route and status",
            Unit::Seconds,
            http.clone(),
        );
        let grpc: LatencyFamily<GrpcLabels> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "grpc_request_duration",
            "gRPC request latency, by method and status code",
            Unit::Seconds,
            grpc.clone(),
        );
        let keys = Family::<StateLabels, Gauge>::default();
        registry.register("keys", "Keys held, by state", keys.clone());
        let tokens_by_alg = Family::<AlgTokenLabels, Counter>::default();
        registry.register(
            "tokens_signed",
            "Tokens issued, by signing algorithm and kind",
            tokens_by_alg.clone(),
        );
        let test_tokens = Family::<TestTokenLabels, Counter>::default();
        registry.register(
            "test_tokens_issued",
            "Defective test tokens issued, by door and defect",
            test_tokens.clone(),
        );
        let keys_by_alg = Family::<AlgStateLabels, Gauge>::default();
        registry.register(
            "algorithm_keys",
            "Keys held, by algorithm and state",
            keys_by_alg.clone(),
        );
        let active_key_age = Gauge::default();
        registry.register_with_unit(
            "active_key_age",
            "Time since the signing key started signing",
            Unit::Seconds,
            active_key_age.clone(),
        );
        let next_rotation = Gauge::default();
        registry.register_with_unit(
            "next_rotation",
            "Time until the schedule creates the next key",
            Unit::Seconds,
            next_rotation.clone(),
        );
        let signing_remaining = Gauge::default();
        registry.register_with_unit(
            "signing_remaining",
            "How long this replica can sign with the keys it holds if the store stays away",
            Unit::Seconds,
            signing_remaining.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 if the key store answered the last time it was asked, else 0",
            store_up.clone(),
        );
        let client_secret_checks = Counter::default();
        registry.register(
            "client_secret_checks",
            "argon2 checks of client secrets, for unknown client ids as for known ones",
            client_secret_checks.clone(),
        );
        let keys_unreadable = Gauge::default();
        registry.register(
            "keys_unreadable",
            "Expired keys in the store this process cannot open (damaged row or unknown KEK), skipped",
            keys_unreadable.clone(),
        );
        // Counted by the service (failed key writes) and the log writer (a
        // process-wide count, which exists before any `Metrics`).
        let rotation_failures = Counter::default();
        registry.register(
            "rotation_failures",
            "Key rotations that failed to write to the store",
            rotation_failures.clone(),
        );
        let refresher_restarts = Counter::default();
        registry.register(
            "refresher_restarts",
            "Times the background key refresher died (panicked or ended) and was restarted",
            refresher_restarts.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because they could not be written",
            crate::telemetry::log_lines_dropped(),
        );
        Self {
            client_secret_checks,
            registry,
            tokens,
            tokens_by_alg,
            test_tokens,
            keys_by_alg,
            jwks,
            http,
            grpc,
            keys,
            active_key_age,
            next_rotation,
            signing_remaining,
            store_up,
            keys_unreadable,
            rotation_failures,
            refresher_restarts,
        }
    }

    /// Counts a restart of the supervised key refresher.
    pub fn refresher_restarted(&self) {
        self.refresher_restarts.inc();
    }

    /// Counts a token issued through `door`, by algorithm and whether it was
    /// signed by an expired key.
    pub fn token_issued(&self, door: Door, expired: bool, alg: Algorithm) {
        let kind = if expired { "expired" } else { "valid" };
        self.tokens
            .get_or_create(&TokenLabels {
                door: door.label(),
                kind,
            })
            .inc();
        self.tokens_by_alg
            .get_or_create(&AlgTokenLabels {
                alg: alg.as_str(),
                kind,
            })
            .inc();
    }

    /// Counts a token issued through `door`: a valid or expired one as
    /// [`Self::token_issued`] does (the series stay as they were), any
    /// defective one (`expired` included) by its defect.
    pub fn issued(&self, door: Door, defect: Option<Defect>, alg: Algorithm) {
        if let Some(defect) = defect {
            self.test_tokens
                .get_or_create(&TestTokenLabels {
                    door: door.label(),
                    defect: defect.name(),
                })
                .inc();
        }
        match defect {
            None => self.token_issued(door, false, alg),
            Some(Defect::Expired) => self.token_issued(door, true, alg),
            Some(_) => {}
        }
    }

    /// Counts a JWKS request answered through `door`.
    pub fn jwks_served(&self, door: Door, outcome: JwksOutcome) {
        self.jwks
            .get_or_create(&JwksLabels {
                door: door.label(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Labels are static strings: the route template, never the raw path,
    /// so a scanner cannot blow up the number of series (or allocate per request).
    pub fn observe_http(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.http
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one gRPC call by method and status code, and records its
    /// duration in seconds.
    pub fn observe_grpc(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        self.grpc
            .get_or_create(&GrpcLabels { method, code })
            .observe(elapsed.as_secs_f64());
    }

    /// Refreshes the gauges from `service` and renders the text exposition.
    pub fn render(&self, service: &KeyService, now: Timestamp) -> String {
        let statuses = service.key_statuses(now);
        for state in KeyState::ALL {
            let count = statuses.iter().filter(|k| k.state == state).count();
            self.keys
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            for alg in Algorithm::ALL {
                let count = statuses
                    .iter()
                    .filter(|k| k.state == state && k.meta.alg == alg)
                    .count();
                self.keys_by_alg
                    .get_or_create(&AlgStateLabels {
                        alg: alg.as_str(),
                        state: state.as_str(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let ring = service.ring();
        self.active_key_age.set(
            ring.signer(now)
                .map_or(0, |k| seconds(k.meta.activates_at.until(now))),
        );
        self.next_rotation.set(
            service
                .next_rotation()
                .map_or(0, |at| seconds(now.until(at))),
        );
        let health = service.health(now);
        self.signing_remaining.set(
            health
                .signing_until
                .map_or(0, |until| seconds(now.until(until))),
        );
        self.store_up
            .set(i64::from(health.store == StoreHealth::Reachable));
        // The registry counts; this counter follows it (fetch_max: concurrent
        // scrapes cannot double-count).
        self.client_secret_checks.inner().fetch_max(
            service.client_secret_checks(),
            std::sync::atomic::Ordering::Relaxed,
        );

        self.keys_unreadable
            .set(i64::try_from(service.unreadable_keys().len()).unwrap_or(i64::MAX));

        // The service counts; a counter only moves up, whatever scrapes race.
        self.rotation_failures.inner().fetch_max(
            service.faults().rotation_failures(),
            std::sync::atomic::Ordering::Relaxed,
        );

        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
