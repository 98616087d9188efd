//! The service end to end: the real `callfold` executable as a child process (start-up checks,
//! metrics, crash safety: SIGKILL with deliveries in flight, then a restart on the same
//! database) and, where no real process is needed, the same app built in process.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use callfold_service::{ApiToken, Roles, Settings};
use callfold_store::WebhookId;
use serde_json::json;
use support::{
    Answer, CALLFOLD, SECRET, TestDb, assert_projections_equal_a_fold_from_scratch, envelope,
    send_simulated_calls, signature, start_ingest, start_service, unix_now, wait_for_queue,
};

use tokio::process::Command;
use tokio::sync::Notify;

/// One signed delivery, ready to be sent (and sent again).
#[derive(Clone)]
struct Delivery {
    webhook_id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Delivery {
    fn new(webhook_id: &str, body: Vec<u8>) -> Self {
        let timestamp = unix_now();
        Self {
            signature: signature(SECRET, webhook_id, timestamp, &body),
            webhook_id: webhook_id.to_owned(),
            timestamp: timestamp.to_string(),
            body,
        }
    }

    async fn send(&self, client: &reqwest::Client, base_url: &str) -> reqwest::Result<Answer> {
        let response = client
            .post(format!("{base_url}/webhooks/allo"))
            .header("webhook-id", &self.webhook_id)
            .header("webhook-timestamp", &self.timestamp)
            .header("webhook-signature", &self.signature)
            .body(self.body.clone())
            .send()
            .await?;
        Ok(Answer::read(response).await)
    }
}

fn completed(call: usize) -> Vec<u8> {
    envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": format!("cll_{call}")}),
    )
}

async fn acknowledged_deliveries_survive_sigkill_and_none_is_logged_twice(db: TestDb) {
    const TOTAL: usize = 400;
    const KILL_AFTER_ACKS: usize = 100;
    let deliveries: Arc<Vec<Delivery>> = Arc::new(
        (0..TOTAL)
            .map(|n| Delivery::new(&format!("msg_crash_{n}"), completed(n)))
            .collect(),
    );
    let mut receiver = start_ingest(&db.url).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let enough_acks = Arc::new(Notify::new());
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (deliveries, next, client) = (deliveries.clone(), next.clone(), client.clone());
            let (acknowledged, enough_acks) = (acknowledged.clone(), enough_acks.clone());
            let base_url = receiver.base_url.clone();
            tokio::spawn(async move {
                while let Some(delivery) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // After the kill, requests fail: those deliveries were never acknowledged.
                    let Ok(answer) = delivery.send(&client, &base_url).await else {
                        continue;
                    };
                    if answer.status == 200 {
                        let mut acks = acknowledged.lock().expect("not poisoned");
                        acks.push((delivery.webhook_id.clone(), answer.seq()));
                        if acks.len() == KILL_AFTER_ACKS {
                            enough_acks.notify_one();
                        }
                    }
                }
            })
        })
        .collect();
    enough_acks.notified().await;
    receiver.child.start_kill().expect("SIGKILL");
    receiver.child.wait().await.expect("reaped");
    for sender in senders {
        sender.await.expect("sender finished");
    }
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    assert!(acknowledged.len() >= KILL_AFTER_ACKS);

    let restarted = start_ingest(&db.url).await;
    for (webhook_id, seq) in &acknowledged {
        let id = WebhookId::parse(webhook_id).expect("id");
        let event = db
            .store
            .event_by_webhook_id(&id)
            .await
            .expect("read")
            .expect(webhook_id);
        assert_eq!(event.seq, *seq, "{webhook_id} moved");
    }
    // Everything again: acknowledged ones are duplicates at their seq, and the log ends with
    // every message exactly once.
    for delivery in deliveries.iter() {
        let answer = delivery
            .send(&client, &restarted.base_url)
            .await
            .expect("restarted");
        assert_eq!(answer.status, 200, "{answer:?}");
        if let Some((_, seq)) = acknowledged
            .iter()
            .find(|(id, _)| *id == delivery.webhook_id)
        {
            assert_eq!(answer.json, json!({"status": "duplicate", "seq": seq}));
        }
    }
    assert_eq!(db.store.log_len().await.expect("len"), TOTAL as i64);
}

async fn a_reused_webhook_id_is_counted_as_a_conflict_in_metrics(db: TestDb) {
    let receiver = start_ingest(&db.url).await;
    let client = reqwest::Client::new();
    let conflicts = || async {
        let text = receiver.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix("callfold_webhook_id_conflicts_total "))
            .map(|value| value.trim().to_owned())
    };
    let first = Delivery::new("msg_conflict", completed(1));
    first.send(&client, &receiver.base_url).await.expect("sent");
    first
        .send(&client, &receiver.base_url)
        .await
        .expect("retry sent");
    assert_eq!(
        conflicts().await.as_deref(),
        Some("0"),
        "a plain retry is not a conflict"
    );
    let reused = Delivery::new("msg_conflict", completed(2));
    let answer = reused
        .send(&client, &receiver.base_url)
        .await
        .expect("sent");
    assert_eq!(answer.json["status"], "duplicate");
    assert_eq!(conflicts().await.as_deref(), Some("1"));
}

async fn serve_folds_what_it_receives_and_guards_the_query_api(db: TestDb) {
    let settings = Settings {
        api_token: ApiToken::new("let-me-in".to_owned()),
        ..support::test_settings()
    };
    let service = support::spawn_app(Roles::All, settings, &db.store).await;
    let client = reqwest::Client::new();
    let base = &service.base_url;
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("service answers") }
    };
    assert_eq!(get("/healthz", None).await.status(), 200);
    assert_eq!(get("/readyz", None).await.status(), 200);

    let answer = Delivery::new("msg_serve", completed(7))
        .send(&client, base)
        .await
        .expect("sent");
    assert_eq!(answer.json["status"], "accepted");
    // The projector is woken by the append; wait (bounded) for the fold to be visible.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let call = loop {
        let response = get("/v1/calls/cll_7", Some("let-me-in")).await;
        if response.status() == 200 {
            break response.json::<serde_json::Value>().await.expect("JSON");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cll_7 was never projected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(call["status"], "completed");
    assert_eq!(get("/v1/calls/cll_7", None).await.status(), 401);
    assert_eq!(
        get("/v1/calls/cll_7", Some("let-me-out")).await.status(),
        401
    );
    // The status page shows what /v1 shows, behind the same token.
    for page in ["/status", "/status/calls/cll_7"] {
        assert_eq!(get(page, None).await.status(), 401, "{page}");
        assert_eq!(get(page, Some("let-me-in")).await.status(), 200, "{page}");
    }

    let metrics = get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics text");
    for name in [
        "callfold_deliveries_total",
        "callfold_events_folded_total",
        "callfold_projection_lag_calls",
        "callfold_projection_lag_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

async fn the_calls_command_answers_like_the_api(db: TestDb) {
    let service = start_service("serve", &db.url, &[]).await;
    let client = reqwest::Client::new();
    Delivery::new("msg_cli", completed(8))
        .send(&client, &service.base_url)
        .await
        .expect("sent");
    let cli = |args: &[&str]| {
        let mut command = Command::new(CALLFOLD);
        command
            .arg("calls")
            .args(args)
            .args(["--database-url", &db.url]);
        async move { command.output().await.expect("callfold runs") }
    };
    // Wait (bounded) until the running service has folded the call.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let shown = loop {
        let output = cli(&["show", "cll_8"]).await;
        if output.status.success() {
            break output;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cll_8 was never projected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let call: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON on stdout");
    assert_eq!(
        (call["call_id"].as_str(), call["status"].as_str()),
        (Some("cll_8"), Some("completed"))
    );
    let listed = cli(&["list", "--status", "completed"]).await;
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON on stdout");
    assert_eq!(list["calls"][0]["call_id"], "cll_8");
    let refused = cli(&["list", "--status", "over"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("status"));
}

async fn a_projector_killed_mid_run_converges_after_a_restart(db: TestDb) {
    let calls = send_simulated_calls(&db, 200, 21).await;
    let waiting = db.store.queue_depth().await.expect("queue").calls;
    assert_eq!(waiting, 200, "every appended call is marked to be folded");
    let small_batches = [
        ("CALLFOLD_PROJECTOR_BATCH", "5"),
        ("CALLFOLD_CLAIM_LEASE_MS", "500"),
    ];
    let mut projector = start_service("projector", &db.url, &small_batches).await;
    wait_for_queue(&db.store, "some calls are folded", 30, |calls| {
        calls < waiting
    })
    .await;
    projector.child.start_kill().expect("SIGKILL");
    projector.child.wait().await.expect("reaped");
    let killed_at = db.store.queue_depth().await.expect("queue").calls;

    let _restarted = start_service("projector", &db.url, &small_batches).await;
    wait_for_queue(&db.store, "every call is folded", 30, |calls| calls == 0).await;
    let folded = assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await;
    let mut call_events = 0;
    for key in &calls {
        call_events += db.store.call_events(key).await.expect("read").len() as i64;
    }
    assert_eq!(
        folded, call_events,
        "killed with {killed_at} calls left to fold: every event folded once"
    );
}

on_both_stores!(
    a_projector_killed_mid_run_converges_after_a_restart,
    the_calls_command_answers_like_the_api,
    serve_folds_what_it_receives_and_guards_the_query_api,
    acknowledged_deliveries_survive_sigkill_and_none_is_logged_twice,
    a_reused_webhook_id_is_counted_as_a_conflict_in_metrics,
);

#[tokio::test]
async fn the_receiver_refuses_to_start_without_a_secret_and_says_how_to_set_one() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let output = Command::new(CALLFOLD)
        .args(["ingest", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("CALLFOLD_WEBHOOK_SECRETS")
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set CALLFOLD_WEBHOOK_SECRETS"), "{stderr}");
    assert!(
        !dir.path().join("callfold.db").exists(),
        "nothing is created before the check"
    );
}

/// The stderr of `callfold migrate` against `database_url`, which must fail.
async fn migrate_failure(database_url: &str) -> String {
    let dir = tempfile::tempdir().expect("temporary folder");
    let output = Command::new(CALLFOLD)
        .args(["migrate", "--database-url", database_url])
        .args(["--db-acquire-timeout-ms", "500"])
        .current_dir(dir.path())
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_reported_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let missing_folder = dir.path().join("missing");
    let database = missing_folder.join("callfold.db");
    let sqlite = migrate_failure(&format!("sqlite:{}", database.display())).await;
    let cause = format!("the folder {} does not exist", missing_folder.display());
    assert_eq!(sqlite.matches(&cause).count(), 1, "{sqlite}");
    // Nothing listens on port 1: the connection is refused, and that is said once.
    let postgres = migrate_failure("postgres://postgres@127.0.0.1:1/callfold").await;
    assert_eq!(
        postgres.matches("Connection refused").count(),
        1,
        "{postgres}"
    );
    assert!(!postgres.contains("pool timed out"), "{postgres}");
}

#[tokio::test]
async fn migrate_creates_and_migrates_the_default_sqlite_file() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let status = Command::new(CALLFOLD)
        .arg("migrate")
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .status()
        .await
        .expect("runs");
    assert!(status.success());
    let url = format!("sqlite:{}", dir.path().join("callfold.db").display());
    let store = callfold_store::Store::connect(&url)
        .await
        .expect("the file exists");
    assert_eq!(store.log_len().await.expect("the log table exists"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifications_wake_a_projector_in_another_process() {
    let db = TestDb::postgres().await;
    // Polling so rare that only a notification can explain a prompt fold.
    let no_polling = [("CALLFOLD_POLL_INTERVAL_MS", "600000")];
    let projector = start_service("projector", &db.url, &no_polling).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    // The lag gauge appears after the projector's first (empty) batch: from then on it waits.
    loop {
        if projector
            .metrics()
            .await
            .contains("callfold_projection_lag_calls")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projector never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Appends from this process; each one notifies (the first may come before LISTEN is set).
    let receiver = support::start_receiver(&db.store, support::test_settings()).await;
    for n in 0.. {
        receiver
            .deliver(&format!("msg_notify_{n}"), &completed(n))
            .await;
        let projected = db.store.list_projections(None, 1).await.expect("read");
        if !projected.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no append woke the projector"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
