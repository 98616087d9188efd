//! The operational endpoints every callfold service serves: `/healthz` (the process answers),
//! `/readyz` (the store answers and is fully migrated; with a note when its projections were
//! folded with another configuration) and `/metrics` (Prometheus text); and the gauges of the
//! database's counts that every service publishes there.

use std::future::ready;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use callfold_store::{ConfigFingerprint, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::config::{REBUILD_ADVICE, other_configuration};

/// The operational routes of a process running with `configuration`.
pub fn router(store: Store, metrics: PrometheusHandle, configuration: ConfigFingerprint) -> Router {
    Router::new()
        .route("/healthz", get(|| ready(Json(json!({"status": "ok"})))))
        .route("/readyz", get(readyz))
        .with_state((store, configuration))
        .route("/metrics", get(move || ready(metrics.render())))
}

/// 200 while the store answers and is migrated, else 503. Projections folded with another
/// configuration add a note to the 200, not a 503: the service works, only those projections
/// may be stale, and a 503 would take every process out of its load balancer (and stop
/// ingestion) for something only a rebuild fixes.
async fn readyz(
    State((store, configuration)): State<(Store, ConfigFingerprint)>,
) -> impl IntoResponse {
    let ready = store.check_ready().await;
    let other = match ready {
        Ok(()) => other_configuration(&store, &configuration).await,
        Err(error) => Err(error),
    };
    match other {
        Ok(None) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Ok(Some(other)) => {
            let body = json!({
                "status": "ready",
                "configuration": {
                    "this_process": configuration.as_str(),
                    "projections_also_folded_with": other,
                    "advice": REBUILD_ADVICE,
                },
            });
            (StatusCode::OK, Json(body))
        }
        Err(error) => {
            tracing::warn!(%error, "not ready");
            let body = json!({"error": "the store is unreachable or not fully migrated"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}

/// How often a service reads the database's counts into its gauges.
const STORE_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes the database's counts (see `Store::stats`) as gauges, every
/// [`STORE_STATS_INTERVAL`], for as long as the process runs.
pub async fn publish_store_stats(store: Store) {
    let mut ticks = tokio::time::interval(STORE_STATS_INTERVAL);
    loop {
        ticks.tick().await;
        match store.stats().await {
            Ok(stats) => {
                metrics::gauge!("callfold_log_events").set(stats.log_events as f64);
                metrics::gauge!("callfold_quarantined_events").set(stats.quarantined as f64);
                metrics::gauge!("callfold_log_unlinked_events").set(stats.unlinked as f64);
                metrics::gauge!("callfold_projection_lag_events").set(stats.events_waiting as f64);
            }
            Err(error) => tracing::warn!(%error, "cannot read the database's counts"),
        }
    }
}
