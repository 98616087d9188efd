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

use serde_json::json;
use support::relay::Relay;
use support::{RunningService, TestDb, TestReceiver, envelope, start_service, wait_until};

/// The call whose reads hang.
const FROZEN_CALL: &str = "cll_frozen_reads";
/// Connections of each pool: few, so that a handful of streams fill them.
const MAX_CONNECTIONS: usize = 2;

/// `callfold serve` through a relay, with every place of the pool its reads use held by a read
/// stuck on a silent connection: the projector's read of the events of [`FROZEN_CALL`], whose
/// delivery was stored before, and live streams of that call. Returns once a stream found no
/// connection left to take.
async fn serve_with_every_read_connection_hung(db: &TestDb) -> (Relay, RunningService) {
    let ingest = support::start_ingest(&db.url).await;
    let stored = allo(&ingest)
        .deliver("msg_frozen", &completed(FROZEN_CALL))
        .await;
    assert_eq!(stored.status, 200);
    drop(ingest);

    let (relay, relayed_url) = Relay::in_front_of(&db.url).await;
    relay.silence_every_connection_sending(FROZEN_CALL);
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

    let client = reqwest::Client::new();
    let stream_url = format!("{}/v1/calls/{FROZEN_CALL}/stream", service.base_url);
    for _ in 0..MAX_CONNECTIONS * 2 {
        let stream = client.get(&stream_url).send().await.expect("stream opens");
        assert_eq!(stream.status(), 200);
        // Open until the test ends; the body never comes.
        tokio::spawn(async move {
            let mut stream = stream;
            while let Ok(Some(_)) = stream.chunk().await {}
        });
    }
    wait_until("no read connection is left", 30, || async {
        service
            .output()
            .contains("a live stream cannot read changes")
    })
    .await;
    (relay, service)
}

/// Allo, which waits 20 s for an answer.
fn allo(service: &RunningService) -> TestReceiver {
    TestReceiver {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        ..service.receiver()
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
    let (relay, service) = serve_with_every_read_connection_hung(&db).await;

    let answer = allo(&service)
        .deliver("msg_during", &completed("cll_2"))
        .await;

    assert_eq!(answer.status, 200, "{answer:?}\n{}", service.output());
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
