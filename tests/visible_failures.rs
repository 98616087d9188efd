//! Failures an operator can see in the log without raising its level, through the real
//! executable: refused deliveries warned of with their reason and source, at most one line per
//! reason per interval.

mod support;

use std::time::Instant;

use callfold_ingest::refusal_warnings::WARNING_INTERVAL;
use serde_json::json;

use support::{RunningService, envelope, unix_now};

/// The log lines of `service` that warn of a refusal for `reason`.
fn refusal_lines(service: &RunningService, reason: &str) -> Vec<String> {
    service
        .output()
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("delivery refused"))
        .filter(|line| line.contains(&format!("reason=\"{reason}\"")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn refused_deliveries_are_warned_of_once_per_reason_per_interval() {
    let (_db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
    let body = b"{\"secret-looking\": \"body\"}";
    let wrong = "whsec_d3Jvbmcta2V5LXdyb25nLWtleQ==";
    let started = Instant::now();
    let bad_signatures = 30;
    for n in 0..bad_signatures {
        let answer = receiver
            .deliver_signed_by(wrong, &format!("msg_w_{n}"), unix_now(), body)
            .await;
        assert_eq!(answer.status, 401);
    }
    let bad_header = receiver
        .post_raw(&[("webhook-id", Some("msg_w_header"))], body.to_vec())
        .await;
    assert_eq!(bad_header.status, 400);
    // An authentic delivery from an hour ago: refused for its timestamp. Its line comes after
    // every other in the log, so once it is read, all of theirs are.
    let stale = envelope("call.completed", "2026-02-10T09:17:00Z", json!({"id": "c"}));
    let answer = receiver
        .deliver_signed_by(support::SECRET, "msg_w_stale", unix_now() - 3600, &stale)
        .await;
    assert_eq!(answer.status, 401);
    support::wait_until("the stale delivery is warned of", 10, || async {
        !refusal_lines(&service, "stale_timestamp").is_empty()
    })
    .await;
    let elapsed = started.elapsed();

    let signature_lines = refusal_lines(&service, "bad_signature");
    let intervals = elapsed.as_secs() / WARNING_INTERVAL.as_secs();
    assert!(
        !signature_lines.is_empty() && signature_lines.len() as u64 <= 1 + intervals,
        "{bad_signatures} refusals in {elapsed:?}: {signature_lines:#?}"
    );
    assert!(
        signature_lines[0].contains("source=127.0.0.1:")
            && signature_lines[0].contains("CALLFOLD_WEBHOOK_SECRETS"),
        "{}",
        signature_lines[0]
    );
    assert_eq!(refusal_lines(&service, "bad_request").len(), 1);
    let output = service.output();
    assert!(!output.contains("secret-looking"), "no body in the log");
    assert!(!output.contains(wrong) && !output.contains(support::SECRET));
    assert!(!output.contains("msg_w_"), "no header value in the log");
}
