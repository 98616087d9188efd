//! The query API over calls: `GET /v1/calls/{call_id}` (optionally `?as_of=`) and
//! `GET /v1/calls/{call_id}/events`, behind an optional bearer token.
//!
//! The current state comes from the stored projections; a state `as_of` a past payload time and
//! a call's event history are folded or ordered from that call's own events in the log. Nothing
//! here writes. Everything that depends on arrival order is under `meta` or marked `late`.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use callfold_store::{CallKey, EventTime, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::fold::{EffectiveKey, FoldEvent, fold, fold_events, mark_late};
use crate::precedence::Precedence;

/// What the query routes share.
#[derive(Clone, Debug)]
struct QueryState {
    store: Store,
    precedence: Arc<Precedence>,
}

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

/// The query routes, over `store`, ordering ties by `precedence`; with `token`, every route
/// requires `Authorization: Bearer <token>`.
pub fn router(store: Store, precedence: Precedence, token: Option<ApiToken>) -> Router {
    let routes = Router::new()
        .route("/v1/calls/{call_id}", get(show_call))
        .route("/v1/calls/{call_id}/events", get(call_events))
        .with_state(QueryState {
            store,
            precedence: Arc::new(precedence),
        });
    match token {
        Some(token) => routes.layer(middleware::from_fn_with_state(
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
) -> Result<Response, QueryError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.matches(presented) => Ok(next.run(request).await),
        _ => Err(QueryError::Unauthorized),
    }
}

/// Why a query failed. Each variant documents its status.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    /// 400: a query parameter does not parse.
    #[error("bad parameter {name}: {problem}")]
    BadParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// 401: a token is configured and the request does not carry it.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// 404: no event of this call is known (at or before `as_of`, when given).
    #[error("no call with id {0:?}")]
    UnknownCall(String),
    /// 503: the store failed; the cause is logged, not shown.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = match &self {
            QueryError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            QueryError::Unauthorized => StatusCode::UNAUTHORIZED,
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

/// Adds `meta` to a serialized call document.
fn with_meta(document: Value, meta: Value) -> Value {
    match document {
        Value::Object(mut fields) => {
            fields.insert("meta".to_owned(), meta);
            Value::Object(fields)
        }
        other => other,
    }
}

async fn show_call(
    State(state): State<QueryState>,
    Path(call_id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<Json<Value>, QueryError> {
    let call_key = CallKey::new(call_id.clone());
    if let Some(text) = params.as_of {
        let as_of = EventTime::parse_rfc3339(&text).map_err(|error| QueryError::BadParameter {
            name: "as_of",
            problem: error.to_string(),
        })?;
        let logged = state.store.call_events_up_to(&call_key, i64::MAX).await?;
        let events: Vec<FoldEvent> = fold_events(&state.precedence, &logged)
            .map(|(_, event)| event)
            .filter(|event| event.key.event_time <= as_of)
            .collect();
        if events.is_empty() {
            return Err(QueryError::UnknownCall(call_id));
        }
        let document = serde_json::to_value(fold(&call_id, events)).unwrap_or(Value::Null);
        return Ok(Json(with_meta(document, json!({ "as_of": as_of }))));
    }
    let projection = state
        .store
        .projection(&call_key)
        .await?
        .ok_or(QueryError::UnknownCall(call_id))?;
    let document = serde_json::from_str(&projection.document).unwrap_or(Value::Null);
    let meta = json!({
        "last_seq": projection.last_seq,
        "late_events": projection.late_events,
        "updated_at": projection.updated_at,
    });
    Ok(Json(with_meta(document, meta)))
}

async fn call_events(
    State(state): State<QueryState>,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, QueryError> {
    let logged = state
        .store
        .call_events_up_to(&CallKey::new(call_id.clone()), i64::MAX)
        .await?;
    // The log is read in seq (arrival) order, which is what lateness is judged by.
    let mut events: Vec<(EffectiveKey, Value)> = mark_late(fold_events(&state.precedence, &logged))
        .map(|(record, event, late)| {
            let shown = json!({
                "seq": record.seq,
                "webhook_id": record.webhook_id.as_str(),
                "topic": event.topic,
                "timestamp": event.key.event_time,
                "received_at": record.received_at,
                "late": late,
            });
            (event.key, shown)
        })
        .collect();
    if events.is_empty() {
        return Err(QueryError::UnknownCall(call_id));
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let events: Vec<Value> = events.into_iter().map(|(_, shown)| shown).collect();
    Ok(Json(json!({ "call_id": call_id, "events": events })))
}
