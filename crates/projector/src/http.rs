//! The query API over projections: `GET /v1/calls/{call_id}`.
//!
//! Answers from the stored projections only; it never folds. Everything that depends on arrival
//! order is under `meta`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use callfold_store::{CallKey, Store, StoreError};
use serde_json::{Value, json};

/// The query routes, over `store`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/v1/calls/{call_id}", get(show_call))
        .with_state(store)
}

/// Why a query failed. Each variant documents its status.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    /// 404: no event of this call has been folded.
    #[error("no call with id {0:?}")]
    UnknownCall(String),
    /// 503: the store failed; the cause is logged, not shown.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = match &self {
            QueryError::UnknownCall(_) => StatusCode::NOT_FOUND,
            QueryError::Store(error) => {
                tracing::error!(%error, "query failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

async fn show_call(
    State(store): State<Store>,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, QueryError> {
    let projection = store
        .projection(&CallKey::new(call_id.clone()))
        .await?
        .ok_or(QueryError::UnknownCall(call_id))?;
    let mut document: Value = serde_json::from_str(&projection.document).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut document {
        fields.insert(
            "meta".to_owned(),
            json!({
                "last_seq": projection.last_seq,
                "late_events": projection.late_events,
                "updated_at": projection.updated_at,
            }),
        );
    }
    Ok(Json(document))
}
