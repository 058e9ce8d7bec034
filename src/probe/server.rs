//! The probe's side of the jwks-server's public API: the catalogue of
//! defective tokens (`GET /test-tokens`) and the tokens themselves, from
//! `POST /auth` or, with `--token-endpoint`, from `POST /oauth2/token`
//! (RFC 6749 §4.4 client credentials grant, RFC 9068 access tokens).
//!
//! A token request the server rate-limits (429) is asked again after its
//! `Retry-After`. A server from before the catalogue (no `/test-tokens`)
//! still offers its one test token, `expired` (`expired=true` on `/auth`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::ProbeError;
use crate::config::{ProbeArgs, Secret};

/// How many times a token is asked for while the server answers 429.
const MAX_ATTEMPTS: u32 = 5;
/// The longest `Retry-After` the probe waits for (a longer one is cut).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A 429's `Retry-After` in seconds (RFC 9110 §10.2.3), at most
/// [`MAX_RETRY_AFTER`]; one second when it is absent or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .clamp(Duration::from_millis(100), MAX_RETRY_AFTER)
}

/// Where the tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /auth`: the server's own JWTs.
    Auth,
    /// `POST /oauth2/token`: RFC 9068 access tokens.
    TokenEndpoint,
}

impl Route {
    /// The path, as the catalogue's `endpoints` name it.
    pub fn path(self) -> &'static str {
        match self {
            Self::Auth => "/auth",
            Self::TokenEndpoint => "/oauth2/token",
        }
    }
}

/// One defect of the catalogue.
#[derive(Clone, Debug, Deserialize)]
pub struct Defect {
    /// Its name, as `defect=NAME` asks for it.
    pub name: String,
    /// The routes that make it; absent: every route.
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// The weakness a verifier that accepts it has (a CWE, an advisory).
    #[serde(default)]
    pub weakness: Option<String>,
    /// Set only for the pre-catalogue `expired=true`.
    #[serde(skip)]
    legacy_expired: bool,
}

/// `GET /test-tokens`: `{"enabled", "defects": [...]}`.
#[derive(Debug, Deserialize)]
pub struct Catalogue {
    /// Whether the server makes test tokens at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Every defect that applies to the server's configuration.
    #[serde(default)]
    pub defects: Vec<Defect>,
    /// The server has no `/test-tokens` (a release before the catalogue):
    /// `expired` is all it offers.
    #[serde(skip)]
    pub legacy: bool,
}

fn yes() -> bool {
    true
}

impl Catalogue {
    /// The defects to run: those the catalogue offers for `route`, or the
    /// ones `wanted` names (each must be offered), in the catalogue's order.
    ///
    /// # Errors
    ///
    /// [`ProbeError::UnknownDefect`] for a name the server does not offer for
    /// the route; [`ProbeError::Server`] when the server's test tokens are off.
    pub fn select(
        self,
        wanted: &[String],
        route: Route,
        server: &TokenServer,
    ) -> Result<Vec<Defect>, ProbeError> {
        if !self.enabled {
            return Err(server.error(
                "test tokens are switched off on this server (turn them on with \
                 --test-tokens=true), so no defective token can be made",
            ));
        }
        let offered: Vec<Defect> = self
            .defects
            .into_iter()
            .filter(|d| {
                d.endpoints
                    .as_ref()
                    .is_none_or(|e| e.iter().any(|p| p == route.path()))
            })
            .collect();
        let wanted: Vec<&str> = wanted
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(offered);
        }
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !offered.iter().any(|d| d.name == **w))
        {
            return Err(ProbeError::UnknownDefect {
                name: (*unknown).to_owned(),
                route: route.path(),
                offered: offered
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                server: server.base.clone(),
            });
        }
        Ok(offered
            .into_iter()
            .filter(|d| wanted.contains(&d.name.as_str()))
            .collect())
    }
}

/// The running jwks-server the tokens come from.
pub struct TokenServer {
    http: reqwest::Client,
    /// `--server` without a trailing `/`.
    base: String,
    route: Route,
    audience: Option<String>,
    alg: Option<String>,
    client_id: String,
    client_secret: Option<Secret>,
}

impl TokenServer {
    /// The server `args.server` names.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Usage`] when `--server` is not an http URL.
    pub fn new(http: reqwest::Client, args: &ProbeArgs, route: Route) -> Result<Self, ProbeError> {
        super::http_url(&args.server)
            .map_err(|detail| ProbeError::Usage(format!("--server {:?}: {detail}", args.server)))?;
        Ok(Self {
            http,
            base: args.server.trim_end_matches('/').to_owned(),
            route,
            audience: args.audience.clone(),
            alg: args.alg.map(|a| a.to_string()),
            client_id: args.client_id.clone(),
            client_secret: args.client_secret.clone(),
        })
    }

    fn error(&self, detail: impl Into<String>) -> ProbeError {
        ProbeError::Server {
            server: self.base.clone(),
            detail: detail.into(),
        }
    }

    /// `GET /test-tokens`; a server without it offers `expired` alone.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Server`] when the server cannot be reached or answers
    /// something other than a catalogue.
    pub async fn catalogue(&self) -> Result<Catalogue, ProbeError> {
        let url = format!("{}/test-tokens", self.base);
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.error(format!("GET /test-tokens: {}", super::describe(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Catalogue {
                enabled: true,
                defects: vec![Defect {
                    name: "expired".to_owned(),
                    endpoints: Some(vec![Route::Auth.path().to_owned()]),
                    weakness: None,
                    legacy_expired: true,
                }],
                legacy: true,
            });
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Catalogue {
                enabled: false,
                defects: Vec::new(),
                legacy: false,
            });
        }
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.error(format!("GET /test-tokens answered {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| {
            self.error(format!(
                "GET /test-tokens did not answer a catalogue ({e}); is this a jwks-server?"
            ))
        })
    }

    /// A token from the route: valid with `None`, else with `defect`.
    ///
    /// # Errors
    ///
    /// [`ProbeError::Server`] when the server cannot be reached or does not
    /// answer a token (its error is quoted).
    pub async fn token(&self, defect: Option<&Defect>) -> Result<String, ProbeError> {
        let what = defect.map_or("a valid token".to_owned(), |d| {
            format!("the {:?} token", d.name)
        });
        let (mut status, mut body) = self.ask(defect, true).await?;
        // A defect built for one algorithm (`ecdsa-zero-signature`: ES256)
        // is refused with another `alg`; it is then asked for as the server
        // builds it, since a verifier must refuse it whatever it expects.
        if defect.is_some() && self.alg.is_some() && status == reqwest::StatusCode::BAD_REQUEST {
            (status, body) = self.ask(defect, false).await?;
        }
        if !status.is_success() {
            return Err(self.error(format!(
                "POST {} for {what} answered {status}: {}",
                self.route.path(),
                body.trim()
            )));
        }
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let field = match self.route {
            Route::Auth => "token",
            Route::TokenEndpoint => "access_token",
        };
        json[field]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                self.error(format!(
                    "POST {} for {what} answered no `{field}`",
                    self.route.path()
                ))
            })
    }

    /// One request for a token; its status and body. A 429 (`--rate-limit`
    /// on the server) is retried after its `Retry-After`, a few times.
    async fn ask(
        &self,
        defect: Option<&Defect>,
        with_alg: bool,
    ) -> Result<(reqwest::StatusCode, String), ProbeError> {
        let alg = self.alg.as_deref().filter(|_| with_alg);
        let mut attempts = 0;
        loop {
            let request = match self.route {
                Route::Auth => self.auth_request(defect, alg),
                Route::TokenEndpoint => self.token_endpoint_request(defect, alg),
            };
            let response = request
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| {
                    let what = defect.map_or("a valid token".to_owned(), |d| {
                        format!("the {:?} token", d.name)
                    });
                    self.error(format!("{what}: {}", super::describe(&e)))
                })?;
            let status = response.status();
            attempts += 1;
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS && attempts < MAX_ATTEMPTS {
                tokio::time::sleep(retry_after(response.headers())).await;
                continue;
            }
            return Ok((status, response.text().await.unwrap_or_default()));
        }
    }

    /// `POST /auth?defect=…` (or `?expired=true`), with `alg` and `aud` in
    /// a form body (the server takes only the test switches in the query).
    fn auth_request(&self, defect: Option<&Defect>, alg: Option<&str>) -> reqwest::RequestBuilder {
        let url = match defect {
            Some(d) if d.legacy_expired => format!("{}/auth?expired=true", self.base),
            Some(d) => format!(
                "{}/auth?{}",
                self.base,
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("defect", &d.name)
                    .finish()
            ),
            None => format!("{}/auth", self.base),
        };
        let mut form: Vec<(&str, &str)> = Vec::new();
        if let Some(alg) = alg {
            form.push(("alg", alg));
        }
        if let Some(aud) = &self.audience {
            form.push(("aud", aud));
        }
        let request = self.http.post(url);
        if form.is_empty() {
            request
        } else {
            request.form(&form)
        }
    }

    /// `POST /oauth2/token` with `grant_type=client_credentials`, the client
    /// authenticated with HTTP Basic (RFC 6749 §2.3.1: id and secret
    /// form-encoded first).
    fn token_endpoint_request(
        &self,
        defect: Option<&Defect>,
        alg: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(alg) = alg {
            form.push(("alg", alg));
        }
        if let Some(aud) = &self.audience {
            form.push(("audience", aud));
        }
        if let Some(d) = defect {
            form.push(("defect", &d.name));
        }
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let secret = self.client_secret.as_ref().map(|s| encode(s.expose()));
        self.http
            .post(format!("{}/oauth2/token", self.base))
            .form(&form)
            .basic_auth(encode(&self.client_id), Some(secret.unwrap_or_default()))
    }
}
