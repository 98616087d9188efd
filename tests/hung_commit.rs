//! A database that stops answering without closing the connection (a firewall that drops
//! packets): the receiver answers 503 with Retry-After once the commit deadline passes, the
//! silent connection never takes a place in the pool again, `/readyz` says so, and everything
//! recovers by itself when the database answers again; a transaction abandoned at the deadline
//! does not outlive it by much on the server, so retries of its deliveries are not held.
//!
//! PostgreSQL only: the silence is made by a relay between the receiver and the server
//! (`support::relay`), which keeps the sockets open and stops copying bytes, on one connection
//! or on all of them.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use callfold_service::configuration::fingerprint;
use callfold_service::{Roles, Settings};
use callfold_store::{PoolLimits, Store};
use serde_json::json;
use support::relay::Relay;
use support::{TestApp, TestDb, TestReceiver, envelope, spawn_app, test_settings, wait_until};

/// The commit deadline the receiver under test runs with.
const COMMIT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The receiver (`callfold ingest`) in this process, on a store reached through
/// `relayed_url` with at most `max_connections` connections a pool and a statement timeout of
/// 30 s, answering 503 when a commit takes longer than [`COMMIT_TIMEOUT`].
async fn ingest_through(relayed_url: &str, max_connections: u32) -> TestApp {
    let limits = PoolLimits {
        max_connections,
        statement_timeout: Duration::from_secs(30),
        ..PoolLimits::default()
    };
    let store = Store::connect_with(relayed_url, limits)
        .await
        .expect("connect through the relay");
    let settings = Settings {
        commit_timeout: COMMIT_TIMEOUT,
        ..test_settings()
    };
    spawn_app(Roles::Ingest, settings, &store).await
}

async fn readyz(client: &reqwest::Client, base_url: &str) -> (u16, String) {
    let response = client.get(format!("{base_url}/readyz")).send();
    let response = response
        .await
        .expect("readyz answers within the client's timeout");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("readyz JSON");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A `call.completed` delivery of call `cll_{n}`.
fn completed_call(n: u32) -> Vec<u8> {
    envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": format!("cll_{n}")}),
    )
}

/// The connection goes silent in the middle of a commit: the transaction has begun, and the
/// insert carrying this delivery's webhook-id never reaches the server. The delivery is 503
/// with Retry-After soon after the commit deadline, `/readyz` says why, and the silent
/// connection was closed, not kept: the next commit gets a new one.
async fn a_connection_silent_mid_commit_is_503_then_replaced(
    relay: &Relay,
    allo: &TestReceiver,
    base_url: &str,
) {
    relay.silence_connection_sending(b"msg_during");
    let sent = Instant::now();
    let answer = allo.deliver("msg_during", &completed_call(2)).await;
    let waited = sent.elapsed();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.retry_after.is_some(), "{answer:?}");
    assert!(
        waited < COMMIT_TIMEOUT + Duration::from_secs(4),
        "answered after {waited:?}"
    );
    let (status, reason) = readyz(&allo.client, base_url).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("did not answer in time"), "{reason}");
    let next = allo.deliver("msg_next", &completed_call(3)).await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(readyz(&allo.client, base_url).await.0, 200);
}

/// The whole database goes silent, with no commit in flight: /readyz's own check has the
/// same deadline, and deliveries are answered 503 with Retry-After.
async fn a_silent_database_is_503_with_retry_after(
    relay: &Relay,
    allo: &TestReceiver,
    base_url: &str,
) {
    relay.silence_all();
    let (status, reason) = readyz(&allo.client, base_url).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("did not answer within 1000 ms"), "{reason}");
    let answer = allo.deliver("msg_during", &completed_call(2)).await;
    assert_eq!((answer.status, answer.retry_after.is_some()), (503, true));
}

/// Once the database answers again, the delivery refused during the silence is accepted
/// when retried (the abandoned commits kept nothing), and `/readyz` is 200 again.
async fn everything_recovers_when_the_database_answers(
    relay: &Relay,
    allo: &TestReceiver,
    base_url: &str,
) {
    relay.resume();
    let retried = Mutex::new(None);
    wait_until("the retried delivery is answered 200", 30, || async {
        let answer = allo.deliver("msg_during", &completed_call(2)).await;
        *retried.lock().expect("lock") = answer.json["status"].as_str().map(str::to_owned);
        answer.status == 200
    })
    .await;
    let retried = retried.into_inner().expect("lock");
    assert_eq!(
        retried.as_deref(),
        Some("accepted"),
        "the abandoned commits kept nothing"
    );
    wait_until("/readyz is 200 again", 30, || async {
        readyz(&allo.client, base_url).await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_hangs_is_503_with_retry_after_and_recovers_when_the_database_answers() {
    let db = TestDb::postgres().await;
    let (relay, relayed_url) = Relay::in_front_of(&db.url).await;
    // One connection in the pool: a silent connection kept there would stop every commit.
    let service = ingest_through(&relayed_url, 1).await;
    // Allo waits 20 s for an answer.
    let allo = TestReceiver {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        ..service.receiver()
    };
    let base_url = &service.base_url;
    assert_eq!(
        allo.deliver("msg_before", &completed_call(1)).await.status,
        200
    );
    assert_eq!(readyz(&allo.client, base_url).await.0, 200);

    a_connection_silent_mid_commit_is_503_then_replaced(&relay, &allo, base_url).await;
    a_silent_database_is_503_with_retry_after(&relay, &allo, base_url).await;
    everything_recovers_when_the_database_answers(&relay, &allo, base_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_an_abandoned_commit_are_stored_soon_after_the_commit_deadline() {
    let db = TestDb::postgres().await;
    let (relay, relayed_url) = Relay::in_front_of(&db.url).await;
    let service = ingest_through(&relayed_url, PoolLimits::default().max_connections).await;
    let allo = service.receiver();
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": "cll_1"}),
    );
    assert_eq!(allo.deliver("msg_before", &body).await.status, 200);

    // The transaction has inserted the delivery's row, and so holds its webhook-id's entry in
    // the unique index, when its COMMIT is lost: the server waits for the next statement.
    relay.silence_connection_sending(b"COMMIT");
    let answer = allo.deliver("msg_blip", &body).await;
    assert_eq!(answer.status, 503, "{answer:?}");

    // Allo retries. Each retry waits on the abandoned transaction's index entry until the
    // server ends that transaction: within the commit deadline, not the 30 s statement timeout.
    let retried = Mutex::new(None);
    wait_until("a retry of the abandoned delivery is stored", 8, || async {
        let answer = allo.deliver("msg_blip", &body).await;
        *retried.lock().expect("lock") = answer.json["status"].as_str().map(str::to_owned);
        answer.status == 200
    })
    .await;
    assert_eq!(
        retried.into_inner().expect("lock").as_deref(),
        Some("accepted"),
        "the abandoned transaction kept nothing"
    );
}

/// A statement timeout of 0 would let a transaction whose client vanished hold its locks for
/// ever (0 disables `idle_in_transaction_session_timeout`): it is refused at start.
#[tokio::test]
async fn a_statement_timeout_of_zero_is_refused_at_start() {
    let folder = tempfile::tempdir().expect("temp dir");
    let check = |statement_timeout_ms: &str| {
        tokio::process::Command::new(support::CALLFOLD)
            .current_dir(folder.path())
            .args(["config", "check"])
            .env("CALLFOLD_DB_STATEMENT_TIMEOUT_MS", statement_timeout_ms)
            .env("CALLFOLD_WEBHOOK_SECRETS", support::SECRET)
            .output()
    };
    assert!(check("1").await.expect("runs").status.success());
    let refused = check("0").await.expect("runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--db-statement-timeout-ms"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_within_the_deadline_when_the_configuration_check_hangs() {
    let db = TestDb::postgres().await;
    let (relay, relayed_url) = Relay::in_front_of(&db.url).await;
    let service = ingest_through(&relayed_url, PoolLimits::default().max_connections).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    assert_eq!(readyz(&client, &service.base_url).await.0, 200);

    // The migrations check answers; the comparison of configurations, which sends this
    // process's fingerprint, never does.
    let settings = test_settings();
    let fingerprint = fingerprint(&settings.linking_rules, &settings.precedence);
    relay.silence_connection_sending(fingerprint.as_str());
    let asked = Instant::now();
    let (status, reason) = readyz(&client, &service.base_url).await;
    let waited = asked.elapsed();

    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("did not answer within 1000 ms"), "{reason}");
    assert!(
        waited < COMMIT_TIMEOUT + Duration::from_secs(4),
        "answered after {waited:?}"
    );
}
