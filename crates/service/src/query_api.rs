//! The query API: `GET /v1/calls` (filters and a cursor), `GET /v1/calls/{call_id}`
//! (optionally `?as_of=`), `GET /v1/calls/{call_id}/events`, `GET /v1/unlinked`,
//! `GET /v1/stats`, and the live streams `GET /v1/stream` and `GET /v1/calls/{call_id}/stream`
//! ([`crate::stream`]). The answers come from `callfold_projector::Calls`; this module owns the
//! routes and the status of each error of `/v1` ([`ApiError`]).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use callfold_ingest::QuarantineError;
use callfold_projector::{
    CallView, Calls, EventsHistory, ListParams, LiveChanges, QueryError, StatsView, UnlinkedEvent,
    parse_time,
};
use callfold_store::{KeptPosition, Page, PageQuery};
use serde::Deserialize;
use serde_json::json;

use crate::stream;

/// The query routes over `calls`, with the live streams of `live`. They are open:
/// [`crate::routes`] puts the token in front of them.
pub fn router(calls: Calls, live: LiveChanges) -> Router {
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
        .with_state(Arc::new(calls))
        .merge(streams)
}

/// A `/v1` error answer: its status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<QueryError> for ApiError {
    /// 400 for a bad parameter, 404 for an unknown call, 500 for a stored document that does
    /// not parse, 503 when the store failed (the cause is logged, not shown).
    fn from(error: QueryError) -> Self {
        let status = match &error {
            QueryError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            QueryError::UnknownCall(_) => StatusCode::NOT_FOUND,
            QueryError::UnreadableDocument(_) => StatusCode::INTERNAL_SERVER_ERROR,
            QueryError::Store(error) => {
                tracing::error!(%error, "query failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let message = error.to_string();
        Self { status, message }
    }
}

impl From<QuarantineError> for ApiError {
    /// 400 for a bad parameter, 404 for an unknown seq, 409 for a record that cannot be
    /// re-driven, 503 when the store failed (the cause is logged, not shown).
    fn from(error: QuarantineError) -> Self {
        let status = match &error {
            QuarantineError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            QuarantineError::NotFound(_) => StatusCode::NOT_FOUND,
            QuarantineError::NotKept(_) | QuarantineError::StillUnusable { .. } => {
                StatusCode::CONFLICT
            }
            QuarantineError::Store(error) => {
                tracing::error!(%error, "quarantine request failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let message = error.to_string();
        Self { status, message }
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
) -> Result<Json<CallView>, ApiError> {
    let as_of = parse_time("as_of", params.as_of.as_deref()).map_err(QueryError::from)?;
    Ok(Json(calls.show(&call_id, as_of).await?))
}

async fn call_events(
    State(calls): State<Arc<Calls>>,
    Path(call_id): Path<String>,
) -> Result<Json<EventsHistory>, ApiError> {
    Ok(Json(calls.events(&call_id).await?))
}

async fn list_calls(
    State(calls): State<Arc<Calls>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<CallView>>, ApiError> {
    let (filter, page) = params.parse().map_err(QueryError::from)?;
    Ok(Json(calls.list(&filter, &page).await?))
}

async fn stats(State(calls): State<Arc<Calls>>) -> Result<Json<StatsView>, ApiError> {
    Ok(Json(calls.stats().await?))
}

async fn unlinked_events(
    State(calls): State<Arc<Calls>>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<UnlinkedEvent>>, ApiError> {
    let page = page.parse::<KeptPosition>().map_err(QueryError::from)?;
    Ok(Json(calls.unlinked(&page).await?))
}
