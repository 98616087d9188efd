//! PostgreSQL itself stopped and started again under a running receiver and projector. This
//! stops the whole local cluster, so it is the only test of its binary (cargo runs test
//! binaries one after another) and starts the cluster again even when it fails.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use callfold_simulate::SignedDelivery;
use callfold_store::WebhookId;

use support::{TestDb, start_service};

/// Runs `pg_ctlcluster ACTION` on the local cluster.
fn cluster(action: &str) {
    let versions = std::fs::read_dir("/etc/postgresql").expect("a local PostgreSQL cluster");
    let version = versions
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .next()
        .expect("a cluster version");
    let mut command = Command::new("pg_ctlcluster");
    command.args(["--skip-systemctl-redirect", &version, "main", action]);
    if action == "stop" {
        command.args(["-m", "fast"]);
    }
    let status = command.status().expect("pg_ctlcluster runs");
    assert!(status.success(), "pg_ctlcluster {action}");
}

/// Starts the cluster again when dropped, so a failing test does not leave it down.
struct StoppedCluster;

impl StoppedCluster {
    fn stop() -> Self {
        cluster("stop");
        StoppedCluster
    }
}

impl Drop for StoppedCluster {
    fn drop(&mut self) {
        cluster("start");
    }
}

#[tokio::test]
async fn postgresql_stopped_then_started_gets_503s_then_recovers_without_a_restart() {
    let db = TestDb::postgres().await;
    let quick = [("CALLFOLD_DB_ACQUIRE_TIMEOUT_MS", "1000")];
    let receiver = start_service("ingest", &db.url, &quick).await;
    let projector = start_service("projector", &db.url, &quick).await;
    let urls = vec![format!("{}/webhooks/allo", receiver.base_url)];
    let readyz = format!("{}/readyz", receiver.base_url);
    let before = support::signed_deliveries(20, 1);
    let answered = callfold_simulate::send(&urls, before.clone(), 8).await;
    assert!(answered.answers.iter().all(|a| a.status == Some(200)));

    let stopped = StoppedCluster::stop();
    let during = support::signed_deliveries(20, 2);
    let answered = callfold_simulate::send(&urls, during.clone(), 8).await;
    let statuses: BTreeSet<Option<u16>> = answered.answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        BTreeSet::from([Some(503)]),
        "only 503 while it is down"
    );
    let ready = reqwest::get(&readyz).await.expect("answer").status();
    assert_eq!(ready.as_u16(), 503);
    drop(stopped);

    support::wait_until("the receiver is ready again", 60, || async {
        let answer = reqwest::get(&readyz).await;
        answer.is_ok_and(|answer| answer.status().is_success())
    })
    .await;
    // Allo retries what got 503.
    let retried = callfold_simulate::send(&urls, during.clone(), 8).await;
    assert!(retried.answers.iter().all(|a| a.status == Some(200)));

    let all: Vec<&SignedDelivery> = before.iter().chain(&during).collect();
    for delivery in &all {
        let id = WebhookId::parse(&delivery.webhook_id).expect("id");
        let logged = db.store.event_by_webhook_id(&id).await.expect("read");
        assert!(logged.is_some(), "{id:?} is not in the log");
    }
    assert_eq!(db.store.log_len().await.expect("len"), all.len() as i64);
    // The projector process reconnects by itself and empties the queue.
    support::wait_for_queue(&db.store, "the projector catches up", 60, |calls| {
        calls == 0
    })
    .await;
    drop(projector);
}
