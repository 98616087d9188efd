//! The operational endpoints every callfold service serves: `/healthz` (the process answers),
//! `/readyz` (the store answers within the commit deadline and is fully migrated, and the
//! receiver's commits, if it runs one, are not failing; with a note when its projections were
//! folded with another configuration) and `/metrics` (Prometheus text, see `metrics_catalog`);
//! and the gauges of the database's counts that every service publishes there, the projection
//! lag among them.

use std::future::ready;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use callfold_ingest::CommitHealth;
use callfold_store::{ConfigFingerprint, Store, StoreError, within};
use serde_json::json;

use crate::configuration::{REBUILD_ADVICE, other_configuration};
use crate::metrics_catalog::MetricsExporter;

/// What `/readyz` checks.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The store, which must answer and be fully migrated.
    pub store: Store,
    /// How long the store has to answer, all checks together.
    pub deadline: Duration,
    /// The receiver's commits, when this service runs a receiver.
    pub commits: Option<CommitHealth>,
    /// The linking rules and precedence graph this process folds with.
    pub configuration: ConfigFingerprint,
}

/// The operational routes.
pub fn router(readiness: Readiness, metrics: MetricsExporter) -> Router {
    Router::new()
        .route("/healthz", get(|| ready(Json(json!({"status": "ok"})))))
        .route("/readyz", get(readyz))
        .with_state(readiness)
        .route("/metrics", get(move || ready(metrics.render())))
}

/// 200 while the store answers and is migrated and the receiver's commits succeed, else 503
/// with the reason. Projections folded with another configuration add a note to the 200, not a
/// 503: the service works, only those projections may be stale, and a 503 would take every
/// process out of its load balancer (and stop ingestion) for something only a rebuild fixes.
async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": reason })),
        )
    };
    if let Some(failure) = readiness.commits.as_ref().and_then(CommitHealth::failing) {
        tracing::warn!(%failure, "not ready: the latest commit failed");
        return not_ready(format!("the latest commit failed: {failure}"));
    }
    let checked = within(readiness.deadline, async {
        readiness.store.check_ready().await?;
        other_configuration(&readiness.store, &readiness.configuration).await
    })
    .await;
    match checked {
        Ok(None) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Ok(Some(other)) => {
            let body = json!({
                "status": "ready",
                "configuration": {
                    "this_process": readiness.configuration.as_str(),
                    "projections_also_folded_with": other,
                    "advice": REBUILD_ADVICE,
                },
            });
            (StatusCode::OK, Json(body))
        }
        Err(error @ StoreError::TimedOut { .. }) => {
            tracing::warn!(%error, "not ready");
            not_ready(format!(
                "the store did not answer within {} ms",
                readiness.deadline.as_millis()
            ))
        }
        Err(error) => {
            tracing::warn!(%error, "not ready");
            not_ready("the store is unreachable or not fully migrated".to_owned())
        }
    }
}

/// How often a service reads the database's counts into its gauges.
const STORE_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes the database's counts (see `Store::stats`) as gauges, every
/// [`STORE_STATS_INTERVAL`], for as long as it is polled: the projection lag too, so that a
/// service without a projector shows it (a projector worker also publishes it each second).
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
                metrics::gauge!("callfold_projection_lag_calls").set(stats.calls_waiting as f64);
                metrics::gauge!("callfold_projection_lag_seconds").set(stats.lag_seconds());
            }
            Err(error) => tracing::warn!(%error, "cannot read the database's counts"),
        }
    }
}
