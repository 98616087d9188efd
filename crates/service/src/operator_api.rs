//! The receiver's private routes, for operators: the quarantine (`GET /v1/quarantine`,
//! `GET /v1/quarantine/{seq}`, `POST /v1/quarantine/{seq}/redrive`, answered by
//! [`crate::quarantine`]) and the requests refused before authentication
//! (`GET /v1/rejections`). This module owns the routes and the status of each error.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::quarantine::{Quarantine, QuarantineError};
use crate::rejections::RecentRejections;

/// The quarantine's routes.
pub fn quarantine_router(quarantine: Quarantine) -> Router {
    Router::new()
        .route("/v1/quarantine", get(list))
        .route("/v1/quarantine/{seq}", get(show))
        .route("/v1/quarantine/{seq}/redrive", post(redrive))
        .with_state(quarantine)
}

/// `GET /v1/rejections`: this receiver's refused requests, counted by reason, latest first.
pub fn rejections_router(rejections: RecentRejections) -> Router {
    Router::new()
        .route("/v1/rejections", get(summary))
        .with_state(rejections)
}

impl IntoResponse for QuarantineError {
    /// 400 for a bad parameter, 404 for an unknown seq, 409 for a record that cannot be
    /// re-driven, 503 when the store failed (the cause is logged, not shown).
    fn into_response(self) -> Response {
        let status = match &self {
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
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    State(quarantine): State<Quarantine>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, QuarantineError> {
    let listed = quarantine.list(page.limit.as_deref(), page.after.as_deref());
    listed.await.map(Json)
}

async fn show(
    State(quarantine): State<Quarantine>,
    Path(seq): Path<i64>,
) -> Result<Json<Value>, QuarantineError> {
    quarantine.show(seq).await.map(Json)
}

async fn redrive(
    State(quarantine): State<Quarantine>,
    Path(seq): Path<i64>,
) -> Result<Json<Value>, QuarantineError> {
    quarantine.redrive(seq).await.map(Json)
}

async fn summary(State(rejections): State<RecentRejections>) -> Json<Value> {
    Json(rejections.summary())
}
