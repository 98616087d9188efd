//! `callfold simulate` as a smoke test, run as an operator runs it: a second run with the same
//! seed sends the very same bodies (all duplicates, no conflict); any failed request makes it
//! exit non-zero with the first failure's cause; and over HTTPS with a self-signed certificate
//! it says to pass `--insecure`, which then works.

mod support;

use std::process::Output;

use support::certificate::{install, self_signed, serve_https};
use support::{CALLFOLD, RunningService, SECRET, TestDb, start_service};

/// Runs `callfold simulate` with `args`, signing with `secret`.
async fn simulate(secret: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(CALLFOLD)
        .arg("simulate")
        .args(args)
        .env("CALLFOLD_WEBHOOK_SECRETS", secret)
        .env_remove("CALLFOLD_SIMULATE_URL")
        .output()
        .await
        .expect("callfold simulate runs")
}

fn webhook_url(service: &RunningService) -> String {
    format!("{}/webhooks/allo", service.base_url)
}

/// The count printed for `label` in simulate's report (0 when absent).
fn reported(output: &Output, label: &str) -> usize {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(label)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

/// How many requests the report says it sent.
fn sent(output: &Output) -> usize {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|line| line.starts_with("sent "));
    let count = line.and_then(|line| line.split_whitespace().nth(1));
    count.and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        panic!("no 'sent N requests' line in:\n{stdout}");
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn a_second_run_with_the_same_seed_is_all_duplicates_without_conflicts(db: TestDb) {
    let service = start_service("serve", &db.url, &[]).await;
    let url = webhook_url(&service);
    let args = ["--url", &url, "--calls", "30", "--seed", "7", "--shuffle"];
    let first = simulate(SECRET, &args).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let messages = reported(&first, "accepted");
    assert!(messages > 30, "{}", String::from_utf8_lossy(&first.stdout));

    let second = simulate(SECRET, &args).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(reported(&second, "accepted"), 0);
    assert_eq!(reported(&second, "duplicate"), sent(&second));
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("\ncallfold_webhook_id_conflicts_total 0\n"),
        "conflicts counted:\n{metrics}"
    );
    let log = service.output();
    assert!(
        !log.contains("webhook-id reused with a different body"),
        "{log}"
    );
}

on_both_stores!(a_second_run_with_the_same_seed_is_all_duplicates_without_conflicts);

#[tokio::test]
async fn refused_requests_fail_the_run_with_the_first_status_and_body() {
    let (_db, service) = support::serve_on_sqlite().await;
    let url = webhook_url(&service);
    let wrong = "whsec_d3Jvbmcta2V5LXdyb25nLWtleQ==";
    let output = simulate(wrong, &["--url", &url, "--calls", "3"]).await;
    assert!(
        !output.status.success(),
        "exit 0 though every request failed"
    );
    let said = stderr(&output);
    assert!(said.contains(&format!("{url} answered 401")), "{said}");
    assert!(said.contains("no v1 signature matches"), "{said}");
    assert!(
        said.contains(&format!("{} of {}", sent(&output), sent(&output))),
        "{said}"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_fails_the_run_with_the_cause() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!(
        "http://{}/webhooks/allo",
        closed.local_addr().expect("addr")
    );
    drop(closed);
    let output = simulate(SECRET, &["--url", &url, "--calls", "1"]).await;
    assert!(!output.status.success(), "exit 0 though nothing was sent");
    let said = stderr(&output);
    assert!(said.to_lowercase().contains("connection refused"), "{said}");
}

#[tokio::test]
async fn a_self_signed_certificate_needs_insecure_and_the_message_says_so() {
    let db = TestDb::sqlite().await;
    let folder = tempfile::tempdir().expect("temp dir");
    install(&self_signed(), folder.path());
    let service = serve_https(&db.url, folder.path()).await;
    let url = webhook_url(&service);
    assert!(url.starts_with("https://"), "{url}");

    let refused = simulate(SECRET, &["--url", &url, "--calls", "2"]).await;
    assert!(!refused.status.success());
    let said = stderr(&refused);
    assert!(said.contains("--insecure"), "{said}");
    assert!(said.contains("certificate"), "{said}");

    let args = ["--url", &url, "--calls", "2", "--insecure"];
    let accepted = simulate(SECRET, &args).await;
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    assert!(reported(&accepted, "accepted") > 0);
}
