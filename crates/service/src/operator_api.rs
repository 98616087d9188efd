//! The operators' `/v1` routes over the receiver's records: the quarantine
//! (`GET /v1/quarantine`, `GET /v1/quarantine/{seq}`, `POST /v1/quarantine/{seq}/redrive`,
//! answered by `callfold_ingest::Quarantine`) and the requests refused before authentication
//! (`GET /v1/rejections`). The status of each error is [`ApiError`]'s.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use callfold_ingest::{
    KeptRecordDetail, Quarantine, QuarantineError, QuarantinedRecord, RecentRejections,
};
use callfold_store::{KeptPosition, Page, PageQuery};
use serde_json::Value;

use crate::query_api::ApiError;

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

async fn list(
    State(quarantine): State<Quarantine>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<QuarantinedRecord>>, ApiError> {
    let page = page
        .parse::<KeptPosition>()
        .map_err(QuarantineError::from)?;
    Ok(Json(quarantine.list(&page).await?))
}

async fn show(
    State(quarantine): State<Quarantine>,
    Path(seq): Path<i64>,
) -> Result<Json<KeptRecordDetail>, ApiError> {
    Ok(Json(quarantine.show(seq).await?))
}

async fn redrive(
    State(quarantine): State<Quarantine>,
    Path(seq): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(quarantine.redrive(seq).await?))
}

async fn summary(State(rejections): State<RecentRejections>) -> Json<Value> {
    Json(rejections.summary())
}
