//! Reads on connections that went silent (a NAT, a connection pooler or a load balancer that
//! stops answering without closing) have no deadline of their own and may never end: they must
//! not take the connections the receiver's commits need, nor hold the shutdown for ever.
//!
//! PostgreSQL only: a relay between callfold and the server (`support::relay`) silences every
//! connection that sends the key of one call, mid-query, while the connections of other work,
//! old and new, go on answering. The projector's read of that call's events and live streams
//! of that call then hold every read connection.

mod support;

use std::process::Command;
use std::time::Duration;

use callfold_service::{ProjectorSettings, Roles, Settings};
use callfold_store::{PoolLimits, Store};
use serde_json::json;
use support::relay::Relay;
use support::{
    RunningService, TestApp, TestDb, TestReceiver, envelope, spawn_app, start_service,
    test_settings, wait_until,
};

/// The call whose reads hang.
const FROZEN_CALL: &str = "cll_frozen_reads";
/// Connections of each pool: few, so that a handful of streams fill them.
const MAX_CONNECTIONS: usize = 2;

/// Stores a delivery of [`FROZEN_CALL`], for the projector to read the events of later.
async fn store_the_frozen_calls_delivery(db: &TestDb) {
    let ingest = spawn_app(Roles::Ingest, test_settings(), &db.store).await;
    let stored = allo(ingest.receiver())
        .deliver("msg_frozen", &completed(FROZEN_CALL))
        .await;
    assert_eq!(stored.status, 200);
}

/// A relay in front of `db` that silences every connection sending [`FROZEN_CALL`], and the
/// URL through it.
async fn relay_freezing_the_calls_reads(db: &TestDb) -> (Relay, String) {
    let (relay, relayed_url) = Relay::in_front_of(&db.url).await;
    relay.silence_every_connection_sending(FROZEN_CALL);
    (relay, relayed_url)
}

/// Opens twice [`MAX_CONNECTIONS`] live streams of [`FROZEN_CALL`] on the service at
/// `base_url`, each open until the test ends: their bodies never come.
async fn open_streams_of_the_frozen_call(base_url: &str) {
    let client = reqwest::Client::new();
    let stream_url = format!("{base_url}/v1/calls/{FROZEN_CALL}/stream");
    for _ in 0..MAX_CONNECTIONS * 2 {
        let stream = client.get(&stream_url).send().await.expect("stream opens");
        assert_eq!(stream.status(), 200);
        tokio::spawn(async move {
            let mut stream = stream;
            while let Ok(Some(_)) = stream.chunk().await {}
        });
    }
}

/// `callfold serve` through a relay, with every place of the pool its reads use held by a read
/// stuck on a silent connection: the projector's read of the events of [`FROZEN_CALL`], whose
/// delivery was stored before, and live streams of that call. Returns once a stream found no
/// connection left to take.
async fn serve_with_every_read_connection_hung(db: &TestDb) -> (Relay, RunningService) {
    store_the_frozen_calls_delivery(db).await;
    let (relay, relayed_url) = relay_freezing_the_calls_reads(db).await;
    let max_connections = MAX_CONNECTIONS.to_string();
    let service = start_service(
        "serve",
        &relayed_url,
        &[
            ("CALLFOLD_DB_MAX_CONNECTIONS", max_connections.as_str()),
            ("CALLFOLD_DB_ACQUIRE_TIMEOUT_MS", "500"),
            ("CALLFOLD_COMMIT_TIMEOUT_MS", "1000"),
            ("CALLFOLD_SHUTDOWN_TIMEOUT_MS", "1000"),
            ("CALLFOLD_POLL_INTERVAL_MS", "50"),
        ],
    )
    .await;
    wait_until("the projector's read of the call hangs", 30, || async {
        relay.silent_connections() >= 1
    })
    .await;
    open_streams_of_the_frozen_call(&service.base_url).await;
    wait_until("no read connection is left", 30, || async {
        service
            .output()
            .contains("a live stream cannot read changes")
    })
    .await;
    (relay, service)
}

/// [`serve_with_every_read_connection_hung`], with the service built in this process (the
/// same pool limits, commit deadline and poll interval). Returns once a read of another call
/// found no connection left to take (503).
async fn serve_in_process_with_every_read_connection_hung(db: &TestDb) -> (Relay, TestApp) {
    store_the_frozen_calls_delivery(db).await;
    let (relay, relayed_url) = relay_freezing_the_calls_reads(db).await;
    let limits = PoolLimits {
        max_connections: MAX_CONNECTIONS as u32,
        acquire_timeout: Duration::from_millis(500),
        ..PoolLimits::default()
    };
    let store = Store::connect_with(&relayed_url, limits)
        .await
        .expect("connect through the relay");
    let defaults = test_settings();
    let settings = Settings {
        commit_timeout: Duration::from_millis(1000),
        projector: ProjectorSettings {
            poll_interval: Duration::from_millis(50),
            ..defaults.projector
        },
        ..defaults
    };
    let service = spawn_app(Roles::All, settings, &store).await;
    wait_until("the projector's read of the call hangs", 30, || async {
        relay.silent_connections() >= 1
    })
    .await;
    open_streams_of_the_frozen_call(&service.base_url).await;
    let other_call = format!("{}/v1/calls/cll_other", service.base_url);
    wait_until("no read connection is left", 30, || async {
        let answer = reqwest::get(&other_call)
            .await
            .expect("the service answers");
        answer.status() == 503
    })
    .await;
    (relay, service)
}

/// Allo, which waits 20 s for an answer, sending to `receiver`.
fn allo(receiver: TestReceiver) -> TestReceiver {
    TestReceiver {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        ..receiver
    }
}

fn completed(call_id: &str) -> Vec<u8> {
    envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": call_id}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_stored_while_reads_hang_on_silent_connections() {
    let db = TestDb::postgres().await;
    let (relay, service) = serve_in_process_with_every_read_connection_hung(&db).await;

    let answer = allo(service.receiver())
        .deliver("msg_during", &completed("cll_2"))
        .await;

    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(relay.silent_connections() >= 1, "the reads still hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_its_timeout_while_reads_hang_on_silent_connections() {
    let db = TestDb::postgres().await;
    let (_relay, mut service) = serve_with_every_read_connection_hung(&db).await;

    let pid = service.child.id().expect("running").to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(signalled.expect("kill runs").success());
    let exited = tokio::time::timeout(Duration::from_secs(15), service.child.wait()).await;

    let output = service.output();
    let status = exited.unwrap_or_else(|_| panic!("still running 15 s after SIGTERM:\n{output}"));
    assert!(status.expect("waits").success(), "{output}");
    assert!(
        output.contains("the projector's batch did not finish within the shutdown timeout"),
        "{output}"
    );
}
