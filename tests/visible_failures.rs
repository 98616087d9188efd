//! Failures an operator can see in the log without raising its level, through the real
//! executable: refused deliveries warned of with their reason and source, at most one line per
//! reason per interval; a commit that fails after its deliveries were answered 503; and the
//! start-up banner that names the role, the database (never its password), the URLs and whether
//! a token guards `/v1`.

mod support;

use std::time::Instant;

use callfold_ingest::refusal_warnings::WARNING_INTERVAL;
use serde_json::json;

use support::{RunningService, TestDb, envelope, start_service, unix_now, wait_until};

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

/// A SQLite commit runs on a thread of its own, which goes on after the deliveries waiting for
/// it were answered 503 at the commit deadline: when it then fails, the log says why.
#[tokio::test]
async fn a_commit_that_fails_after_its_deadline_is_warned_of() {
    let db = TestDb::sqlite().await;
    let service = start_service(
        "ingest",
        &db.url,
        &[
            ("CALLFOLD_COMMIT_TIMEOUT_MS", "300"),
            // How long a commit waits for another process's write lock before it fails.
            ("CALLFOLD_DB_STATEMENT_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let lock = db.hold_write_lock().await;
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": "cll_late", "type": "INBOUND", "result": "ANSWERED"}),
    );
    let answer = service.receiver().deliver("msg_late", &body).await;
    assert_eq!(answer.status, 503, "{}", answer.json);
    wait_until("the failed commit is warned of", 30, || {
        let warned = service.output().lines().any(|line| {
            line.contains("WARN") && line.contains("failed after its caller had stopped waiting")
        });
        std::future::ready(warned)
    })
    .await;
    lock.release().await;
    assert_eq!(db.store.log_len().await.expect("len"), 0);
}

on_both_stores!(the_banner_names_role_database_urls_and_token);

async fn the_banner_names_role_database_urls_and_token(db: TestDb) {
    // A password in the URL (PostgreSQL's trust authentication ignores it; SQLite has none).
    let url = db
        .url
        .replacen("postgres://postgres@", "postgres://postgres:pa55word@", 1);
    let token = [("CALLFOLD_API_TOKEN", "banner-test-token")];
    let ingest = start_service("ingest", &url, &token).await;
    let projector = start_service("projector", &url, &[]).await;
    for (service, role, token) in [
        (&ingest, "ingest", "guards /v1"),
        (&projector, "projector", "not set, /v1 is open"),
    ] {
        support::wait_until("the banner is logged", 10, || async {
            service.output().contains("callfold started")
        })
        .await;
        let output = service.output();
        let banner = output
            .lines()
            .find(|line| line.contains("callfold started"))
            .unwrap_or_else(|| panic!("no banner: {output}"));
        assert!(banner.contains(&format!("role=\"{role}\"")), "{banner}");
        assert!(
            banner.contains(&format!("api_token=\"{token}\"")),
            "{banner}"
        );
        assert!(
            banner.contains(&format!("admin_url={}", service.base_url)),
            "{banner}"
        );
        if url.starts_with("sqlite:") {
            let path = url.trim_start_matches("sqlite:");
            assert!(
                banner.contains(&format!("database=SQLite {path}")),
                "{banner}"
            );
        } else {
            assert!(
                banner.contains("database=PostgreSQL database ") && banner.contains(" as postgres"),
                "{banner}"
            );
        }
        assert!(!output.contains("pa55word") && !output.contains("banner-test-token"));
    }
    let ingest_banner = ingest.output();
    assert!(
        ingest_banner.contains(&format!("webhook_url={}/webhooks/allo", ingest.base_url)),
        "{ingest_banner}"
    );
    assert!(projector.output().contains("webhook_url=none"));
}
