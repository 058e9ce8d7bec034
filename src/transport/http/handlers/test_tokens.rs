//! `GET /test-tokens`: the catalogue of defective tokens this server makes
//! (`POST /auth?defect=NAME`, `defect=NAME` at the token endpoint), as JSON.
//! What each defect is, and which apply, is the domain's
//! (`service::defects`); this file names the routes that offer them.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use super::super::{AppState, oauth};
use crate::service::{DefectInfo, TestTokenCatalogue, TokenShape};

/// `GET /test-tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestTokensBody {
    /// Whether this server issues defective test tokens (`--test-tokens`).
    pub enabled: bool,
    /// The defects this server's configuration can make.
    pub defects: Vec<DefectBody>,
}

/// One defect of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefectBody {
    /// The name to ask for, `defect=NAME`.
    #[schema(example = "alg-none")]
    pub name: &'static str,
    /// What the token is.
    pub description: &'static str,
    /// The weakness (CWE) or advisory class a verifier that accepts it has.
    pub weakness: &'static str,
    /// The routes that issue it.
    #[schema(example = json!(["/auth", "/oauth2/token"]))]
    pub endpoints: Vec<&'static str>,
    /// What a correct verifier does with it: always `refused`.
    #[schema(example = "refused")]
    pub expected: &'static str,
}

/// The route that issues tokens of `shape`.
pub(crate) fn path(shape: TokenShape) -> &'static str {
    match shape {
        TokenShape::Auth => "/auth",
        TokenShape::Access => oauth::TOKEN_PATH,
    }
}

impl From<DefectInfo> for DefectBody {
    fn from(info: DefectInfo) -> Self {
        Self {
            name: info.name,
            description: info.description,
            weakness: info.weakness,
            endpoints: info.shapes.iter().copied().map(path).collect(),
            expected: "refused",
        }
    }
}

impl From<TestTokenCatalogue> for TestTokensBody {
    fn from(catalogue: TestTokenCatalogue) -> Self {
        Self {
            enabled: catalogue.enabled,
            defects: catalogue
                .defects
                .into_iter()
                .map(DefectBody::from)
                .collect(),
        }
    }
}

/// The catalogue of defective test tokens: each a token a correct verifier
/// refuses, otherwise identical to a valid one for the same request. Only
/// the defects this server's algorithms can make are listed.
#[utoipa::path(get, path = "/test-tokens", tag = "tokens",
    responses((status = 200, description = "The catalogue", body = TestTokensBody)))]
pub(crate) async fn test_tokens(State(state): State<AppState>) -> Json<TestTokensBody> {
    Json(state.service.test_tokens().into())
}
