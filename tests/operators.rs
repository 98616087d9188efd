//! What operators watch, through a running `callfold serve`: each metric moves when its event
//! happens, and `/v1/stats` and `callfold stats` agree with what the log holds.

mod support;

use serde_json::{Value, json};

use support::{RunningService, SECRET, commit_timeout, envelope, unix_now};

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

#[tokio::test]
async fn each_metric_moves_when_its_event_happens() {
    let (db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
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
    let (db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
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

/// A tag whose call id sits where no default linking rule looks.
fn tag_with_its_call_elsewhere() -> Vec<u8> {
    envelope(
        "tag.added",
        "2026-02-10T09:18:00Z",
        json!({"conversation": {"call_id": "cll_q"}, "tag": "vip"}),
    )
}

async fn post_json(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn the_quarantine_lists_shows_and_refuses_to_redrive_what_is_still_unusable() {
    let (db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
    let kept = receiver.deliver("msg_q_1", b"{\"topic\": 7}").await;
    assert_eq!(kept.json["status"], "quarantined");
    let seq = kept.seq();

    let listed = get_json(&format!("{}/v1/quarantine", service.base_url)).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["records"][0]["seq"], seq);
    assert_eq!(
        listed["records"][0]["reason"],
        "body has no non-empty string `topic`"
    );
    assert_eq!(listed["records"][0]["redriven_as"], Value::Null);
    let shown = get_json(&format!("{}/v1/quarantine/{seq}", service.base_url)).await;
    assert_eq!(shown["body"], "{\"topic\": 7}");
    assert_eq!(shown["webhook_id"], "msg_q_1");

    let redrive = format!("{}/v1/quarantine/{seq}/redrive", service.base_url);
    let (status, answer) = post_json(&redrive).await;
    assert_eq!(status, 409, "{answer}");
    let (status, _) = post_json(&format!("{}/v1/quarantine/999/redrive", service.base_url)).await;
    assert_eq!(status, 404);

    // The CLI answers the same from the database.
    let cli = tokio::process::Command::new(support::CALLFOLD)
        .args(["quarantine", "list", "--database-url", &db.url])
        .output()
        .await
        .expect("callfold quarantine runs");
    assert!(cli.status.success());
    let from_cli: Value = serde_json::from_slice(&cli.stdout).expect("JSON on stdout");
    assert_eq!(from_cli, listed);
}

#[tokio::test]
async fn a_redrive_after_a_new_linking_rule_projects_the_event_once() {
    let (db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
    let completed = envelope(
        "call.completed",
        "2026-02-10T09:17:00Z",
        json!({"id": "cll_q"}),
    );
    receiver.deliver("msg_r_1", &completed).await;
    let unlinked = receiver
        .deliver("msg_r_2", &tag_with_its_call_elsewhere())
        .await;
    let seq = unlinked.seq();

    // With the rules the service runs, the record stays unusable.
    let redrive = format!("{}/v1/quarantine/{seq}/redrive", service.base_url);
    let (status, answer) = post_json(&redrive).await;
    assert_eq!(status, 409, "{answer}");

    // After the fix: a rule that knows where tags of this shape keep their call.
    let fixed = callfold_ingest::LinkingRules::default().with_rule(
        "tag.added",
        &["/data/call_id", "/data/conversation/call_id"],
    );
    let quarantine = callfold_ingest::Quarantine::new(db.store.clone(), fixed, commit_timeout());
    let first = quarantine.redrive(seq).await.expect("re-driven");
    assert_eq!(first["status"], "redriven");
    let again = quarantine.redrive(seq).await.expect("idempotent");
    assert_eq!(again["status"], "already_redriven");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(db.store.log_len().await.expect("len"), 3);

    support::wait_until("the re-driven tag is projected", 30, || async {
        let call = get_json(&format!("{}/v1/calls/cll_q", service.base_url)).await;
        call["tags"] == json!(["vip"])
    })
    .await;
    let shown = get_json(&format!("{}/v1/quarantine/{seq}", service.base_url)).await;
    assert_eq!(shown["unlinked"], true);
    assert_eq!(shown["redriven_as"], first["seq"]);
}

#[tokio::test]
async fn refused_requests_are_counted_and_the_latest_listed_without_bodies() {
    let (_db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
    let body = b"{\"secret-looking\": \"body\"}";
    let wrong = "whsec_d3Jvbmcta2V5LXdyb25nLWtleQ==";
    receiver
        .deliver_signed_by(wrong, "msg_x_1", unix_now(), body)
        .await;
    receiver
        .post_raw(&[("webhook-id", Some("msg_x_2"))], body.to_vec())
        .await;
    receiver.deliver("msg_x_3", body).await;

    let summary = get_json(&format!("{}/v1/rejections", service.base_url)).await;
    assert_eq!(
        summary["counts"],
        json!({"bad_request": 1, "bad_signature": 1})
    );
    let recent = summary["recent"].as_array().expect("a list");
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["reason"], "bad_request", "latest first");
    assert!(
        recent[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
    );
    assert!(!summary.to_string().contains("secret-looking"));
}

#[tokio::test]
async fn the_lag_gauges_show_calls_a_projector_cannot_fold_yet() {
    let db = support::TestDb::sqlite().await;
    let receiver = support::start_receiver(&db.store, support::test_settings()).await;
    for call in ["cll_l1", "cll_l2", "cll_l3"] {
        let body = envelope(
            "call.completed",
            "2026-02-10T09:17:00Z",
            json!({"id": call}),
        );
        let id = format!("msg_{call}");
        assert_eq!(receiver.deliver(&id, &body).await.status, 200);
    }
    // Another worker holds every call: this projector sees them wait and cannot take them.
    let held = db
        .store
        .claim_calls(&callfold_store::QueueSweep::default(), 10, support::LEASE)
        .await
        .expect("claim");
    assert_eq!(held.claims.len(), 3);
    let projector = support::start_service("projector", &db.url, &[]).await;
    support::wait_until("the lag is published", 30, || async {
        let metrics = projector.metrics().await;
        sample(&metrics, "callfold_projection_lag_calls") == 3.0
            && sample(&metrics, "callfold_projection_lag_seconds") > 0.0
            && sample(&metrics, "callfold_projection_lag_events") == 3.0
    })
    .await;

    let (_db, service) = support::serve_on_sqlite().await;
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:00Z",
        json!({"id": "cll_b"}),
    );
    let batches = moved_by(&service, "callfold_commit_batch_size_count", async || {
        service.receiver().deliver("msg_batch", &body).await;
    });
    assert_eq!(batches.await, 1.0, "one commit, one batch recorded");
}
