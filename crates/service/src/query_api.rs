//! The query API, behind an optional bearer token: `GET /v1/calls` (filters and a cursor),
//! `GET /v1/calls/{call_id}` (optionally `?as_of=`), `GET /v1/calls/{call_id}/events`,
//! `GET /v1/unlinked`, `GET /v1/stats`, and the live streams `GET /v1/stream` and
//! `GET /v1/calls/{call_id}/stream`. The answers come from [`crate::query`] and
//! [`crate::stream`]; this module owns the routes, the token check and the status of each
//! error.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use callfold_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::precedence::Precedence;
use crate::query::{Calls, ListFilter, QueryError, UnlinkedPage};
use crate::stream::{self, LiveChanges};

/// The environment variable holding the query API's bearer token.
pub const API_TOKEN_ENV: &str = "CALLFOLD_API_TOKEN";

/// The bearer token `/v1` requires when one is configured. `Debug` never shows it.
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
        std::env::var(API_TOKEN_ENV)
            .ok()
            .filter(|token| !token.is_empty())
            .map(Self)
    }

    /// Compares in constant time, so timing does not tell how much of a guess was right.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// The query routes, over `store`, ordering ties by `precedence`, with the live streams of
/// `live`. They are open: see [`with_token`].
pub fn router(store: Store, precedence: Precedence, live: LiveChanges) -> Router {
    let streams = Router::new()
        .route("/v1/stream", get(stream::all_calls))
        .route("/v1/calls/{call_id}/stream", get(stream::one_call))
        .with_state(live);
    Router::new()
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{call_id}", get(show_call))
        .route("/v1/calls/{call_id}/events", get(call_events))
        .route("/v1/unlinked", get(unlinked_events))
        .route("/v1/stats", get(stats))
        .with_state(Arc::new(Calls::new(store, precedence)))
        .merge(streams)
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

impl IntoResponse for QueryError {
    /// 400 for a bad parameter, 404 for an unknown call, 503 when the store failed (the cause
    /// is logged, not shown).
    fn into_response(self) -> Response {
        let status = match &self {
            QueryError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            QueryError::UnknownCall(_) => StatusCode::NOT_FOUND,
            QueryError::Store(error) => {
                tracing::error!(%error, "query failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

#[derive(Deserialize)]
struct ShowParams {
    as_of: Option<String>,
}

async fn show_call(
    State(calls): State<Arc<Calls>>,
    Path(call_id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<Json<Value>, QueryError> {
    calls
        .show(&call_id, params.as_of.as_deref())
        .await
        .map(Json)
}

async fn call_events(
    State(calls): State<Arc<Calls>>,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, QueryError> {
    calls.events(&call_id).await.map(Json)
}

async fn list_calls(
    State(calls): State<Arc<Calls>>,
    Query(filter): Query<ListFilter>,
) -> Result<Json<Value>, QueryError> {
    calls.list(&filter).await.map(Json)
}

async fn stats(State(calls): State<Arc<Calls>>) -> Result<Json<Value>, QueryError> {
    calls.stats().await.map(Json)
}

async fn unlinked_events(
    State(calls): State<Arc<Calls>>,
    Query(page): Query<UnlinkedPage>,
) -> Result<Json<Value>, QueryError> {
    calls.unlinked(&page).await.map(Json)
}
