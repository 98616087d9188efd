//! What operators watch, through a running `callfold serve`: each metric moves when its event
//! happens, and `/v1/stats` and `callfold stats` agree with what the log holds.

mod support;

use serde_json::{Value, json};

use support::{RunningService, SECRET, TestDb, TestReceiver, envelope, start_service, unix_now};

/// The value of the sample `series` (name and labels, as Prometheus prints them) in `metrics`;
/// 0 when it is not there yet.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Runs `action`, then returns by how much `series` moved.
async fn moved_by(
    service: &RunningService,
    series: impl Into<String>,
    action: impl AsyncFnOnce(),
) -> f64 {
    let series = series.into();
    let before = sample(&service.metrics().await, &series);
    action().await;
    sample(&service.metrics().await, &series) - before
}

fn receiver_of(service: &RunningService) -> TestReceiver {
    TestReceiver {
        url: format!("{}/webhooks/allo", service.base_url),
        client: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn each_metric_moves_when_its_event_happens() {
    let db = TestDb::sqlite().await;
    let service = start_service("serve", &db.url, &[]).await;
    let receiver = receiver_of(&service);
    let completed = envelope(
        "call.completed",
        "2026-02-10T09:17:00Z",
        json!({"id": "cll_m", "type": "INBOUND"}),
    );
    let outcome = |name: &str| format!("callfold_deliveries_total{{outcome=\"{name}\"}}");

    let accepted = moved_by(&service, outcome("accepted"), async || {
        assert_eq!(receiver.deliver("msg_m_1", &completed).await.status, 200);
    });
    assert_eq!(accepted.await, 1.0);
    let acknowledged = moved_by(&service, "callfold_ack_seconds_count", async || {
        receiver.deliver("msg_m_2", &completed).await;
    });
    assert_eq!(acknowledged.await, 1.0);
    let duplicate = moved_by(&service, outcome("duplicate"), async || {
        receiver.deliver("msg_m_1", &completed).await;
    });
    assert_eq!(duplicate.await, 1.0);
    let bad_signature = moved_by(&service, outcome("bad_signature"), async || {
        let wrong = "whsec_d3Jvbmcta2V5LXdyb25nLWtleQ==";
        let answer = receiver
            .deliver_signed_by(wrong, "msg_m_3", unix_now(), &completed)
            .await;
        assert_eq!(answer.status, 401);
    });
    assert_eq!(bad_signature.await, 1.0);
    let quarantined = moved_by(&service, outcome("quarantined"), async || {
        receiver.deliver("msg_m_4", b"not JSON").await;
    });
    assert_eq!(quarantined.await, 1.0);
    let unlinked = moved_by(&service, "callfold_unlinked_events_total", async || {
        let no_call_id = envelope("call.received", "2026-02-10T09:16:00Z", json!({}));
        receiver.deliver("msg_m_5", &no_call_id).await;
    });
    assert_eq!(unlinked.await, 1.0);

    // A tag one minute after the call, then the call's start, which arrives late: 60 s late.
    let late = "callfold_event_lateness_seconds_bucket{le=\"60\"}";
    let before = sample(&service.metrics().await, late);
    let tag = envelope(
        "tag.added",
        "2026-02-10T09:20:00Z",
        json!({"call_id": "cll_late", "tag": "vip"}),
    );
    receiver.deliver("msg_late_1", &tag).await;
    support::wait_for_queue(&db.store, "the tag is folded", 30, |calls| calls == 0).await;
    let started = envelope(
        "call.received",
        "2026-02-10T09:19:00Z",
        json!({"call_id": "cll_late"}),
    );
    receiver.deliver("msg_late_2", &started).await;
    support::wait_until("the late event is measured", 30, || async {
        sample(&service.metrics().await, late) == before + 1.0
    })
    .await;
    let under_a_minute = "callfold_event_lateness_seconds_bucket{le=\"10\"}";
    assert_eq!(sample(&service.metrics().await, under_a_minute), 0.0);

    // The database's counts reach the gauges within the publishing interval.
    support::wait_until("the log's gauges are published", 30, || async {
        let metrics = service.metrics().await;
        sample(&metrics, "callfold_log_events") == 6.0
            && sample(&metrics, "callfold_quarantined_events") == 1.0
            && sample(&metrics, "callfold_log_unlinked_events") == 1.0
    })
    .await;
}

#[tokio::test]
async fn stats_over_http_and_from_the_cli_agree_with_the_log() {
    let db = TestDb::sqlite().await;
    let service = start_service("serve", &db.url, &[]).await;
    let receiver = receiver_of(&service);
    for (id, call) in [("msg_s_1", "cll_s1"), ("msg_s_2", "cll_s2")] {
        let body = envelope(
            "call.completed",
            "2026-02-10T09:17:00Z",
            json!({"id": call}),
        );
        receiver.deliver(id, &body).await;
    }
    receiver.deliver("msg_s_3", b"[1, 2").await;
    support::wait_for_queue(&db.store, "both calls are folded", 30, |calls| calls == 0).await;

    let over_http: Value = reqwest::get(format!("{}/v1/stats", service.base_url))
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    let expected_log = json!({"events": 3, "quarantined": 1, "unlinked": 0});
    assert_eq!(over_http["log"], expected_log);
    assert_eq!(over_http["projector"]["projections"], 2);
    assert_eq!(over_http["projector"]["calls_waiting"], 0);
    assert_eq!(over_http["projector"]["events_waiting"], 0);

    let cli = tokio::process::Command::new(support::CALLFOLD)
        .args(["stats", "--database-url", &db.url])
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .output()
        .await
        .expect("callfold stats runs");
    assert!(cli.status.success());
    let from_cli: Value = serde_json::from_slice(&cli.stdout).expect("JSON on stdout");
    assert_eq!(from_cli["log"], over_http["log"]);
    assert_eq!(
        from_cli["projector"]["projections"],
        over_http["projector"]["projections"]
    );
}
