//! Authentication of the private routes: the bearer token (`CALLFOLD_API_TOKEN`), compared in
//! constant time and never shown. [`crate::routes`] applies it once, to every private route.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;

/// The environment variable holding the private routes' bearer token.
pub const API_TOKEN_ENV: &str = "CALLFOLD_API_TOKEN";

/// The bearer token private routes require when one is configured. `Debug` never shows it.
#[derive(Clone)]
pub struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// The token in [`API_TOKEN_ENV`], if set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var(API_TOKEN_ENV).ok().and_then(Self::new)
    }

    /// `token`, unless it is empty.
    pub fn new(token: String) -> Option<Self> {
        (!token.is_empty()).then_some(Self(token))
    }

    /// Compares in constant time, so timing does not tell how much of a guess was right.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// `routes` as they are, or, with `token`, each requiring `Authorization: Bearer <token>`
/// (a path that matches no route still answers 404).
pub fn with_token(routes: Router, token: Option<ApiToken>) -> Router {
    match token {
        Some(token) => routes.route_layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        )),
        None => routes,
    }
}

async fn require_token(
    State(token): State<Arc<ApiToken>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        // 401: a token is configured and the request does not carry it.
        _ => {
            let body = Json(json!({"error": "missing or wrong bearer token"}));
            (StatusCode::UNAUTHORIZED, body).into_response()
        }
    }
}
