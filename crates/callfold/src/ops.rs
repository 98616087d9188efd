//! The operational endpoints every callfold service serves: `/healthz` (the process answers),
//! `/readyz` (the store answers and is fully migrated) and `/metrics` (Prometheus text).

use std::future::ready;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use callfold_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

/// The operational routes.
pub fn router(store: Store, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| ready(Json(json!({"status": "ok"})))))
        .route("/readyz", get(readyz))
        .with_state(store)
        .route("/metrics", get(move || ready(metrics.render())))
}

async fn readyz(State(store): State<Store>) -> impl IntoResponse {
    match store.check_ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            let body = json!({"error": "the store is unreachable or not fully migrated"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}
