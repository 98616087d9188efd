//! Faults under the real `callfold` executable: SQLite's disk filling up, a receiver killed
//! while commits are in flight, a sender whose clock is off, and a shutdown while clients hold
//! streams and connections open or leave their headers unfinished. Each must end in clear
//! answers, recovery without a restart where the process survives, an exit in bounded time
//! where it stops, and nothing acknowledged lost. (PostgreSQL unreachable under load is
//! `topology.rs`'s outage test; PostgreSQL stopped and started is `postgres_restart.rs`.)

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use callfold_store::{Store, WebhookId};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{RunningService, SECRET, TestDb, envelope, start_service, unix_now};

/// A tmpfs of a given size, mounted on a temporary folder for the life of the value.
struct TinyDisk {
    folder: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> Self {
        let folder = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(folder.path())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs needs root, as CI has");
        Self { folder }
    }

    fn path(&self) -> &Path {
        self.folder.path()
    }

    /// Writes a file until the disk has no byte left.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path().join("filler")).expect("create");
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let tail = [0u8; 512];
        while filler.write_all(&tail[..1]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove the filler");
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn webhook_url(service: &RunningService) -> Vec<String> {
    vec![format!("{}/webhooks/allo", service.base_url)]
}

/// Asserts that each of `ids` is in the log of `store`.
async fn assert_logged(store: &Store, ids: &BTreeSet<String>) {
    for id in ids {
        let id = WebhookId::parse(id).expect("id");
        let found = store.event_by_webhook_id(&id).await.expect("read");
        assert!(
            found.is_some(),
            "{id:?} was acknowledged but is not in the log"
        );
    }
}

/// The webhook-ids answered 200.
fn acknowledged(report: &callfold_simulate::Report) -> BTreeSet<String> {
    report
        .answers
        .iter()
        .filter(|answer| answer.status == Some(200))
        .map(|answer| answer.webhook_id.clone())
        .collect()
}

#[tokio::test]
async fn a_full_disk_under_sqlite_gets_503_and_recovers_without_a_restart() {
    let disk = TinyDisk::mount("16m");
    let url = format!("sqlite:{}", disk.path().join("callfold.db").display());
    let service = start_service("serve", &url, &[]).await;
    let urls = webhook_url(&service);

    let before = callfold_simulate::send(&urls, support::signed_deliveries(20, 1), 8).await;
    assert_eq!(acknowledged(&before).len(), before.answers.len());

    disk.fill();
    let later = support::signed_deliveries(100, 2);
    let during = callfold_simulate::send(&urls, later.clone(), 8).await;
    let statuses: BTreeSet<Option<u16>> = during.answers.iter().map(|a| a.status).collect();
    assert!(
        statuses.contains(&Some(503)),
        "a full disk gives 503: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, Some(200 | 503))),
        "only 200 or 503 while the disk is full: {statuses:?}"
    );
    assert!(
        service.output().contains("database or disk is full"),
        "the log says why"
    );

    disk.free();
    // Allo retries what got 503; the same process takes it now.
    let retried = callfold_simulate::send(&urls, later, 8).await;
    assert_eq!(acknowledged(&retried).len(), retried.answers.len());
    let store = Store::connect(&url).await.expect("open the log");
    let mut all = acknowledged(&before);
    all.extend(acknowledged(&during));
    all.extend(acknowledged(&retried));
    assert_logged(&store, &all).await;
    assert_eq!(store.log_len().await.expect("len"), all.len() as i64);
    // The queue empties only as projections are written: the projector recovered too.
    support::wait_for_queue(&store, "the projector catches up", 30, |calls| calls == 0).await;
}

/// Kills a receiver while `send` is in flight, then checks that everything it acknowledged was
/// logged, and that a restarted receiver takes the rest.
async fn a_killed_receiver_loses_nothing_it_acknowledged(db: TestDb) {
    let mut service = start_service("ingest", &db.url, &[]).await;
    let urls = webhook_url(&service);
    let all = support::signed_deliveries(600, 3);
    let in_flight = all.clone();
    let sending = tokio::spawn(async move { callfold_simulate::send(&urls, in_flight, 32).await });
    support::wait_until("commits are under way", 60, || async {
        db.store.log_len().await.expect("len") >= 500
    })
    .await;
    service.child.start_kill().expect("SIGKILL");
    let first = sending.await.expect("sender");
    let acknowledged_first = acknowledged(&first);
    assert!(
        acknowledged_first.len() < all.len(),
        "the kill came while deliveries were still in flight"
    );
    assert_logged(&db.store, &acknowledged_first).await;

    let service = start_service("ingest", &db.url, &[]).await;
    let second = callfold_simulate::send(&webhook_url(&service), all.clone(), 32).await;
    assert_eq!(acknowledged(&second).len(), all.len());
    assert_eq!(db.store.log_len().await.expect("len"), all.len() as i64);
}

#[tokio::test]
async fn a_receiver_killed_mid_commit_loses_nothing_it_acknowledged_sqlite() {
    a_killed_receiver_loses_nothing_it_acknowledged(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn a_receiver_killed_mid_commit_loses_nothing_it_acknowledged_postgres() {
    a_killed_receiver_loses_nothing_it_acknowledged(TestDb::postgres().await).await;
}

/// The clock-skew gauge's value in a metrics text.
fn skew_gauge(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("callfold_webhook_clock_skew_seconds "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no skew gauge in {metrics}"))
}

#[tokio::test]
async fn clock_skew_shows_in_a_gauge_and_a_stale_delivery_says_by_how_much() {
    let db = TestDb::sqlite().await;
    let service = start_service("ingest", &db.url, &[]).await;
    let receiver = service.receiver();
    let body = |call: &str| {
        envelope(
            "call.completed",
            "2026-02-10T09:17:42Z",
            json!({"id": call}),
        )
    };

    let behind = receiver
        .deliver_signed_by(SECRET, "msg_behind", unix_now() - 120, &body("cll_1"))
        .await;
    assert_eq!(behind.status, 200);
    let skew = skew_gauge(&service.metrics().await);
    assert!((120.0..=130.0).contains(&skew), "skew {skew}");

    let ahead = receiver
        .deliver_signed_by(SECRET, "msg_ahead", unix_now() + 1_000, &body("cll_2"))
        .await;
    assert_eq!(ahead.status, 401);
    let error = ahead.json["error"].as_str().expect("an error");
    assert!(
        error.contains("-1000 s") || error.contains("-999 s"),
        "{error}"
    );
    let skew = skew_gauge(&service.metrics().await);
    assert!((-1_000.0..=-990.0).contains(&skew), "skew {skew}");

    // A forged delivery is told nothing about the clock and does not move the gauge.
    let forged = receiver
        .deliver_signed_by(
            "whsec_Zm9yZ2VkLXNlY3JldA==",
            "msg_forged",
            unix_now() - 5_000,
            &body("cll_3"),
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.json["error"], "no v1 signature matches");
    assert_eq!(skew_gauge(&service.metrics().await), skew);
}

#[tokio::test]
async fn sigterm_finishes_the_appends_in_flight_before_the_process_exits() {
    let db = TestDb::sqlite().await;
    let mut service = start_service("ingest", &db.url, &[]).await;
    let urls = webhook_url(&service);
    let sending = tokio::spawn(async move {
        callfold_simulate::send(&urls, support::signed_deliveries(400, 4), 32).await
    });
    support::wait_until("appends are under way", 60, || async {
        db.store.log_len().await.expect("len") >= 200
    })
    .await;
    sigterm(&service);
    let exited = tokio::time::timeout(std::time::Duration::from_secs(30), service.child.wait())
        .await
        .expect("the process exits in time")
        .expect("wait");
    assert!(exited.success(), "a clean exit: {exited}");

    let report = sending.await.expect("sender");
    let statuses: BTreeSet<Option<u16>> = report.answers.iter().map(|a| a.status).collect();
    assert!(
        statuses.iter().all(|s| matches!(s, Some(200) | None)),
        "answered, or refused once the listener closed: {statuses:?}"
    );
    assert!(
        acknowledged(&report).len() < report.answers.len(),
        "stopped mid-load"
    );
    assert_logged(&db.store, &acknowledged(&report)).await;
}

/// Sends SIGTERM to `service`'s process.
fn sigterm(service: &RunningService) {
    let pid = service.child.id().expect("running").to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(signalled.expect("kill runs").success());
}

/// The `host:port` of a plain-HTTP service.
fn authority(service: &RunningService) -> &str {
    service
        .base_url
        .strip_prefix("http://")
        .expect("plain HTTP")
}

/// Reads from `connection` until `wanted` ends what was read; returns it all.
async fn read_until_ending(connection: &mut TcpStream, wanted: &[u8]) -> Vec<u8> {
    let mut received = Vec::new();
    while !received.ends_with(wanted) {
        let mut chunk = [0u8; 4096];
        let read = connection.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..read]);
    }
    received
}

/// A connection that has had one answer and is left open, idle (keep-alive).
async fn idle_keep_alive_connection(service: &RunningService) -> TcpStream {
    let mut connection = TcpStream::connect(authority(service))
        .await
        .expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nhost: callfold\r\n\r\n";
    connection.write_all(request).await.expect("write");
    read_until_ending(&mut connection, b"\"ok\"}").await;
    connection
}

/// A delivery whose body stops after 10 of its bytes, once the server has asked for the body
/// (`100 Continue`), so that its request is in flight.
async fn delivery_with_a_body_that_never_finishes(service: &RunningService) -> TcpStream {
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": "cll_slow", "type": "INBOUND"}),
    );
    let timestamp = unix_now();
    let signature = support::signature(SECRET, "msg_slow", timestamp, &body);
    let head = format!(
        "POST /webhooks/allo HTTP/1.1\r\nhost: callfold\r\nexpect: 100-continue\r\n\
         content-length: {}\r\nwebhook-id: msg_slow\r\nwebhook-timestamp: {timestamp}\r\n\
         webhook-signature: {signature}\r\n\r\n",
        body.len()
    );
    let mut connection = TcpStream::connect(authority(service))
        .await
        .expect("connect");
    connection.write_all(head.as_bytes()).await.expect("write");
    read_until_ending(&mut connection, b"100 Continue\r\n\r\n").await;
    connection.write_all(&body[..10]).await.expect("write");
    connection
}

/// `callfold serve` on `database_url` with a 5 s shutdown timeout and read timeouts so long
/// that only its shutdown may end a slow body or an idle connection.
async fn start_service_only_its_shutdown_ends(database_url: &str) -> RunningService {
    start_service(
        "serve",
        database_url,
        &[
            ("CALLFOLD_SHUTDOWN_TIMEOUT_MS", "5000"),
            ("CALLFOLD_BODY_READ_TIMEOUT_MS", "600000"),
            ("CALLFOLD_HEADER_READ_TIMEOUT_MS", "600000"),
            ("CALLFOLD_KEEP_ALIVE_TIMEOUT_MS", "600000"),
            ("CALLFOLD_FIRST_BYTE_TIMEOUT_MS", "600000"),
        ],
    )
    .await
}

/// After a SIGTERM: the live `stream`'s body is finished (not cut) and each of the `idle`
/// connections is closed, within 4 s each.
async fn assert_stream_and_idle_connections_end_at_once(
    mut stream: reqwest::Response,
    idle: Vec<TcpStream>,
) {
    let stream_end = tokio::time::timeout(Duration::from_secs(4), async {
        while stream.chunk().await?.is_some() {}
        Ok::<_, reqwest::Error>(())
    });
    let stream_end = stream_end
        .await
        .expect("the stream ended before the timeout");
    assert!(
        stream_end.is_ok(),
        "the stream's body was finished, not cut: {stream_end:?}"
    );
    for mut connection in idle {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(4), connection.read(&mut byte));
        let closed = closed
            .await
            .expect("an idle connection closed before the timeout");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}

/// SIGTERM while a live stream is open, a delivery's body is being sent and never finishes,
/// keep-alive connections sit idle and deliveries are in flight. The stream must end at once
/// as a finished body, not be cut, and the idle connections close at once; the process must
/// exit soon after its shutdown timeout; the unfinished delivery gets no answer (so it is sent
/// again); and every acknowledged delivery is logged.
async fn sigterm_ends_streams_and_exits_within_the_shutdown_timeout(db: TestDb) {
    let mut service = start_service_only_its_shutdown_ends(&db.url).await;
    let stream = reqwest::get(format!("{}/v1/stream", service.base_url))
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    let mut slow = delivery_with_a_body_that_never_finishes(&service).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(idle_keep_alive_connection(&service).await);
    }
    let urls = webhook_url(&service);
    let sending = tokio::spawn(async move {
        callfold_simulate::send(&urls, support::signed_deliveries(400, 5), 16).await
    });
    support::wait_until("appends are under way", 60, || async {
        db.store.log_len().await.expect("len") >= 100
    })
    .await;

    sigterm(&service);

    // The stream and the idle connections end at once, while the slow body holds the process.
    assert_stream_and_idle_connections_end_at_once(stream, idle).await;
    assert!(
        service.child.try_wait().expect("try_wait").is_none(),
        "the process still waits for the slow body"
    );

    let exited = tokio::time::timeout(Duration::from_secs(20), service.child.wait())
        .await
        .expect("the process exits soon after its 5 s shutdown timeout")
        .expect("wait");
    assert!(exited.success(), "a clean exit: {exited}");
    let mut after_continue = Vec::new();
    let _ = slow.read_to_end(&mut after_continue).await;
    assert!(
        after_continue.is_empty(),
        "a request cut at the timeout is not answered: {}",
        String::from_utf8_lossy(&after_continue)
    );
    support::wait_until("the cut is logged", 10, || async {
        service.output().contains("shutdown timeout passed")
    })
    .await;

    let report = sending.await.expect("sender");
    let statuses: BTreeSet<Option<u16>> = report.answers.iter().map(|a| a.status).collect();
    assert!(
        statuses.iter().all(|s| matches!(s, Some(200) | None)),
        "answered, or refused once the listener closed: {statuses:?}"
    );
    assert_logged(&db.store, &acknowledged(&report)).await;
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_within_the_shutdown_timeout_sqlite() {
    sigterm_ends_streams_and_exits_within_the_shutdown_timeout(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_within_the_shutdown_timeout_postgres() {
    sigterm_ends_streams_and_exits_within_the_shutdown_timeout(TestDb::postgres().await).await;
}

/// SIGTERM while a connection sends its headers and never finishes them: the header deadline
/// still cuts it while the service shuts down, so the process exits long before its shutdown
/// timeout.
#[tokio::test]
async fn headers_that_never_finish_do_not_hold_a_shutdown() {
    let db = TestDb::sqlite().await;
    let limits = [
        ("CALLFOLD_HEADER_READ_TIMEOUT_MS", "500"),
        ("CALLFOLD_SHUTDOWN_TIMEOUT_MS", "600000"),
    ];
    let mut service = start_service("serve", &db.url, &limits).await;
    let mut slow = TcpStream::connect(authority(&service))
        .await
        .expect("connect");
    slow.write_all(b"POST /webhooks/allo HTTP/1.1\r\nhost: call")
        .await
        .expect("write");
    sigterm(&service);
    let exited = tokio::time::timeout(Duration::from_secs(30), service.child.wait())
        .await
        .expect("the process exits at the header deadline, not the shutdown timeout")
        .expect("wait");
    assert!(exited.success(), "a clean exit: {exited}");
}
