//! `jwks-server probe URL`: tests a verifier from the outside. It asks a
//! running jwks-server (over its public REST API only, so a remote
//! deployment works as well as a local one, over http or https) for a
//! valid token and for every
//! defective token of its catalogue (`GET /test-tokens`), sends each to the
//! service's protected URL and compares what the service did with what a
//! correct verifier does: accept the valid token, refuse every defect.
//!
//! This module owns the run and its exit status; [`server`] talks to the
//! jwks-server, [`report`] classifies answers and prints the table or JSON.
//! It never panics on a bad answer: what it cannot use is a [`ProbeError`]
//! (exit status 2) or a failed row (exit status 1).

pub mod report;
pub mod server;

use std::{io::Write, process::ExitCode};

use reqwest::header::{HeaderName, HeaderValue};

use crate::config::ProbeArgs;
use report::{Expected, Outcome, Report, Row};
use server::{Route, TokenServer};

/// Why the probe could not run (exit status 2): the verifier was not tested.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A flag's value cannot be used (a header that is no header, a URL that
    /// is no URL).
    #[error("{0}")]
    Usage(String),
    /// The jwks-server did not answer, or not as a jwks-server does.
    #[error("jwks-server at {server}: {detail}")]
    Server {
        /// The `--server` base URL.
        server: String,
        /// What went wrong, for a person.
        detail: String,
    },
    /// `--defects` named a defect the server does not offer for the route.
    #[error(
        "unknown defect {name:?} for {route}; this server offers: {offered} (GET {server}/test-tokens lists them)"
    )]
    UnknownDefect {
        /// The name given.
        name: String,
        /// `/auth` or `/oauth2/token`.
        route: &'static str,
        /// The names the catalogue has for the route, comma-separated.
        offered: String,
        /// The `--server` base URL.
        server: String,
    },
}

/// Runs the probe as the `probe` subcommand does and returns its exit
/// status: 0 when the verifier did what a correct one does, 1 when it did
/// not (a row failed), 2 when the probe could not run (the message goes to
/// stderr).
pub async fn main(args: &ProbeArgs) -> ExitCode {
    match run(args).await {
        Ok(report) => {
            for note in report.notes() {
                let _ = writeln!(std::io::stderr(), "jwks-server probe: note: {note}");
            }
            let text = if args.json {
                report.json()
            } else {
                report.table()
            };
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{text}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // Whoever reads the results cannot: not a usage error, not a pass.
                return ExitCode::FAILURE;
            }
            if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "jwks-server probe: {err}");
            ExitCode::from(2)
        }
    }
}

/// Gets the tokens, sends each to `args.url` and collects the rows: the
/// valid token (`none`) first, then the defects in the catalogue's order.
///
/// # Errors
///
/// [`ProbeError`] when the flags cannot be used, the jwks-server cannot be
/// reached or does not make a token, or `--defects` names one it does not
/// offer for the route.
pub async fn run(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut notes = Vec::new();
    let http = http_client(args, &mut notes)?;
    let target = Target::new(args)?;
    let route = if args.token_endpoint {
        Route::TokenEndpoint
    } else {
        Route::Auth
    };
    let server = TokenServer::new(http.clone(), args, route)?;
    let catalogue = server.catalogue().await?;
    if catalogue.legacy {
        notes.push(format!(
            "{} has no GET /test-tokens (a release before the catalogue of defects): \
             only `expired` is probed",
            args.server
        ));
    }
    let defects = catalogue.select(&args.defects, route, &server)?;

    let mut rows = Vec::with_capacity(defects.len() + 1);
    let valid = server.token(None).await?;
    rows.push(Row {
        defect: "none".to_owned(),
        expected: Expected::Accepted,
        outcome: target.send(&http, &valid).await,
        weakness: None,
    });
    for defect in defects {
        let token = server.token(Some(&defect)).await?;
        rows.push(Row {
            defect: defect.name,
            expected: Expected::Refused,
            outcome: target.send(&http, &token).await,
            weakness: defect.weakness,
        });
    }
    Ok(Report::new(rows).with_notes(notes))
}

/// The one client for both URLs. A machine without CA certificates (a slim
/// container) still probes http URLs, with a note that https needs
/// `--ca-cert`.
fn http_client(args: &ProbeArgs, notes: &mut Vec<String>) -> Result<reqwest::Client, ProbeError> {
    let builder = || {
        reqwest::Client::builder()
            .timeout(args.timeout)
            // A redirect (to a login page, say) is the service's answer, not
            // something to follow: it is neither an acceptance nor a refusal.
            .redirect(reqwest::redirect::Policy::none())
    };
    let failed = |e: reqwest::Error| {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        ProbeError::Usage(format!("cannot build an HTTP client: {cause}"))
    };
    if let Some(path) = &args.ca_cert {
        let mut with_ca = builder();
        for cert in ca_certificates(path)? {
            with_ca = with_ca.add_root_certificate(cert);
        }
        return with_ca.build().map_err(failed);
    }
    match builder().build() {
        Ok(client) => Ok(client),
        Err(system_roots) => {
            let client = builder()
                .tls_certs_only(Vec::new())
                .build()
                .map_err(failed)?;
            notes.push(format!(
                "https URLs will fail: {} (give --ca-cert FILE)",
                failed(system_roots)
            ));
            Ok(client)
        }
    }
}

/// The service under test: where and how each token is sent.
struct Target {
    url: reqwest::Url,
    /// Authorization (with `Bearer `) or `--header` (the bare token).
    header: HeaderName,
    bearer: bool,
    extra: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    fn new(args: &ProbeArgs) -> Result<Self, ProbeError> {
        let url = http_url(&args.url)
            .map_err(|detail| ProbeError::Usage(format!("URL {:?}: {detail}", args.url)))?;
        let (header, bearer) = match &args.header {
            None => (reqwest::header::AUTHORIZATION, true),
            Some(name) => (
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    ProbeError::Usage(format!("--header {name:?} is not a header name"))
                })?,
                false,
            ),
        };
        let extra = args
            .extra_headers
            .iter()
            .map(|line| extra_header(line))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            url,
            header,
            bearer,
            extra,
        })
    }

    /// `GET url` with the token; what the service answered, or why it did not.
    async fn send(&self, http: &reqwest::Client, token: &str) -> Outcome {
        let value = if self.bearer {
            format!("Bearer {token}")
        } else {
            token.to_owned()
        };
        let Ok(value) = HeaderValue::from_str(&value) else {
            // A JWT is base64url and dots; a server that hands out anything
            // else is reported where it shows: in this row.
            return Outcome::Error("the token is not a valid header value".to_owned());
        };
        let mut request = http
            .get(self.url.clone())
            .header(self.header.clone(), value);
        for (name, value) in &self.extra {
            request = request.header(name.clone(), value.clone());
        }
        match request.send().await {
            Ok(response) => Outcome::Status(response.status().as_u16()),
            Err(err) => Outcome::Error(describe(&err)),
        }
    }
}

/// `--extra-header 'Name: value'`.
fn extra_header(line: &str) -> Result<(HeaderName, HeaderValue), ProbeError> {
    let bad = || ProbeError::Usage(format!("--extra-header {line:?} is not `Name: value`"));
    let (name, value) = line.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

/// An `http://` or `https://` URL.
fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("scheme {other:?} is neither http nor https")),
    }
}

/// `--ca-cert FILE`: every certificate of a PEM bundle.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ProbeError> {
    let bad = |detail: String| ProbeError::Usage(format!("--ca-cert {}: {detail}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// A request error in a few words: the kind, then the innermost cause
/// (`connection refused`, not reqwest's chain of wrappers).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    format!("{kind}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_headers_are_name_colon_value() {
        let (name, value) = extra_header("X-Tenant: acme: one").unwrap();
        assert_eq!(name.as_str(), "x-tenant");
        assert_eq!(value, "acme: one");
        assert!(extra_header("no colon").is_err());
        assert!(extra_header("bad name: v").is_err());
    }

    #[test]
    fn only_http_and_https_urls_are_probed() {
        assert!(http_url("http://127.0.0.1:1/api").is_ok());
        assert!(http_url("https://example.com/").is_ok());
        assert!(http_url("ftp://example.com/").is_err());
        assert!(http_url("not a url").is_err());
    }
}
