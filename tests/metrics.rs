//! `/metrics` follows Prometheus's conventions from the first scrape, before any delivery: a
//! `# HELP` line for every metric, every counter and gauge of the role present at zero, the
//! build information, the process's own metrics, and the projection lag on every role (an
//! ingest-only service computes it from the database too).

mod support;

use support::{TestDb, send_simulated_calls, start_service, wait_until};

/// The value of the sample `series` (name and labels, as Prometheus prints them) in `metrics`,
/// if it is there.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

/// The names `# TYPE` and `# HELP` lines describe in `metrics`.
fn described(metrics: &str, comment: &str) -> Vec<String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(comment)?.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Counters every service exports.
const EVERY_ROLE_COUNTERS: &[&str] = &[
    "callfold_connections_evicted_total",
    "callfold_connections_refused_total",
];
/// Gauges every service exports, at zero on an empty database.
const EVERY_ROLE_GAUGES: &[&str] = &[
    "callfold_projection_lag_calls",
    "callfold_projection_lag_seconds",
    "callfold_projection_lag_events",
    "callfold_log_events",
    "callfold_quarantined_events",
    "callfold_log_unlinked_events",
];
const RECEIVER_COUNTERS: &[&str] = &[
    "callfold_deliveries_total{outcome=\"accepted\"}",
    "callfold_deliveries_total{outcome=\"duplicate\"}",
    "callfold_deliveries_total{outcome=\"quarantined\"}",
    "callfold_deliveries_total{outcome=\"bad_signature\"}",
    "callfold_deliveries_total{outcome=\"stale_timestamp\"}",
    "callfold_deliveries_total{outcome=\"store_unavailable\"}",
    "callfold_webhook_id_conflicts_total",
    "callfold_unlinked_events_total",
];
const RECEIVER_GAUGES: &[&str] = &[
    "callfold_webhook_clock_skew_seconds",
    "callfold_deliveries_waiting",
];
const PROJECTOR_COUNTERS: &[&str] = &[
    "callfold_calls_folded_total",
    "callfold_events_folded_total",
    "callfold_late_events_total",
    "callfold_claims_lost_total",
];

/// `callfold ROLE`'s first `/metrics`, on an empty database.
async fn fresh_metrics(db: &TestDb, role: &str) -> String {
    let service = start_service(role, &db.url, &[]).await;
    service.metrics().await
}

fn assert_conventions(metrics: &str, role: &str, zero: &[&str], absent: &[&str]) {
    let typed = described(metrics, "# TYPE ");
    let helped = described(metrics, "# HELP ");
    assert!(!typed.is_empty(), "{role}: no metric at all:\n{metrics}");
    for name in &typed {
        assert!(helped.contains(name), "{role}: {name} has no # HELP");
    }
    for series in zero {
        assert_eq!(
            sample(metrics, series),
            Some(0.0),
            "{role}: {series} is not present at zero:\n{metrics}"
        );
    }
    for series in absent {
        assert_eq!(sample(metrics, series), None, "{role} exports {series}");
    }
    let build_info = format!(
        "callfold_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        sample(metrics, &build_info),
        Some(1.0),
        "{role}: {build_info}"
    );
    let positive = |series: &str| sample(metrics, series).is_some_and(|value| value > 0.0);
    // Open connections count the scrape's own.
    for series in [
        "callfold_connections_open",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(positive(series), "{role}: {series} missing or zero");
    }
    assert!(
        sample(metrics, "process_cpu_seconds_total").is_some(),
        "{role}: no process_cpu_seconds_total"
    );
    let started = sample(metrics, "process_start_time_seconds").expect("checked above");
    let now = support::unix_now() as f64;
    assert!(
        (now - 600.0..=now + 1.0).contains(&started),
        "{role}: started at {started}, now {now}"
    );
}

async fn each_role_exports_its_metrics_with_help_at_zero_before_any_delivery(db: TestDb) {
    let every_role: Vec<&str> = [EVERY_ROLE_COUNTERS, EVERY_ROLE_GAUGES].concat();
    let receiver: Vec<&str> = [RECEIVER_COUNTERS, RECEIVER_GAUGES].concat();
    let serve = fresh_metrics(&db, "serve").await;
    assert_conventions(
        &serve,
        "serve",
        &[&every_role[..], &receiver, PROJECTOR_COUNTERS].concat(),
        &[],
    );
    let ingest = fresh_metrics(&db, "ingest").await;
    assert_conventions(
        &ingest,
        "ingest",
        &[&every_role[..], &receiver].concat(),
        PROJECTOR_COUNTERS,
    );
    let projector = fresh_metrics(&db, "projector").await;
    assert_conventions(
        &projector,
        "projector",
        &[&every_role[..], PROJECTOR_COUNTERS].concat(),
        &receiver,
    );
}

/// A service without a projector still shows how far the projections are behind, read from
/// the database: here, calls logged that no projector has folded.
async fn an_ingest_only_service_shows_the_projection_lag(db: TestDb) {
    let calls = send_simulated_calls(&db, 3, 41).await.len() as f64;
    let service = start_service("ingest", &db.url, &[]).await;
    wait_until("the lag gauges show the unfolded calls", 30, || async {
        let metrics = service.metrics().await;
        sample(&metrics, "callfold_projection_lag_calls") == Some(calls)
            && sample(&metrics, "callfold_projection_lag_seconds").is_some_and(|s| s > 0.0)
            && sample(&metrics, "callfold_projection_lag_events").is_some_and(|e| e >= calls)
    })
    .await;
}

on_both_stores!(
    each_role_exports_its_metrics_with_help_at_zero_before_any_delivery,
    an_ingest_only_service_shows_the_projection_lag,
);
