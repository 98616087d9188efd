//! The receiver facing the internet, tested over raw sockets, through the real `callfold`
//! executable where its limits come from the environment or its output is read, else through
//! the same app built in process: a matrix of hostile requests with the answer each must get,
//! slow senders, the header deadline against the keep-alive timeout, the cap on connections
//! and who gives way at it (a flood of idle connections must not keep deliveries out), the
//! private listener, and that no secret ever shows in what the process writes, answers or
//! exports.

mod support;

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use callfold_service::{ApiToken, Roles, Settings};
use support::{
    SECRET, TestApp, TestDb, envelope, signature, spawn_app, spawn_app_on, start_service,
    test_settings, unix_now,
};

/// Longest any single exchange may take before the test fails.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// What came back on one connection before the server closed it.
#[derive(Debug)]
struct Exchange {
    /// The status code, or `None` when the server closed the connection without answering.
    status: Option<u16>,
    /// The whole response text (lossy UTF-8).
    text: String,
}

/// The `host:port` of a service's URL.
fn authority(url: &str) -> &str {
    url.split("://").nth(1).expect("a URL with a scheme")
}

/// Reads from `stream` until the server closes it, and parses the status line.
async fn read_to_close(stream: &mut TcpStream) -> Exchange {
    let mut received = Vec::new();
    tokio::time::timeout(EXCHANGE_LIMIT, async {
        let mut chunk = [0u8; 8192];
        // A reset after the answer also ends the exchange.
        while let Ok(read) = stream.read(&mut chunk).await {
            if read == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .expect("the server closes the connection in time");
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok());
    Exchange { status, text }
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn exchange(base_url: &str, request: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(authority(base_url))
        .await
        .expect("connect");
    // The server may answer and close before it has read everything (431, 413).
    let _ = stream.write_all(request).await;
    read_to_close(&mut stream).await
}

/// A raw `POST /webhooks/allo` with the three `webhook-*` headers as given, `extra` header
/// lines, and `body`.
fn delivery(id: &[u8], timestamp: &str, signature: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.extend_from_slice(b"POST /webhooks/allo HTTP/1.1\r\nhost: callfold\r\n");
    request.extend_from_slice(b"connection: close\r\ncontent-type: application/json\r\n");
    request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    request.extend_from_slice(b"webhook-id: ");
    request.extend_from_slice(id);
    request.extend_from_slice(format!("\r\nwebhook-timestamp: {timestamp}\r\n").as_bytes());
    request.extend_from_slice(format!("webhook-signature: {signature}\r\n{extra}\r\n").as_bytes());
    request.extend_from_slice(body);
    request
}

/// A delivery of `body` as `id`, signed with the service's secret at `timestamp`.
fn signed(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let signature = signature(SECRET, id, timestamp, body);
    delivery(id.as_bytes(), &timestamp.to_string(), &signature, "", body)
}

fn call_completed(call_id: &str) -> Vec<u8> {
    envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": call_id, "type": "INBOUND"}),
    )
}

/// Limits small enough for a test to reach them quickly.
const TIGHT_LIMITS: &[(&str, &str)] = &[
    ("CALLFOLD_MAX_HEADER_BYTES", "8192"),
    ("CALLFOLD_HEADER_READ_TIMEOUT_MS", "1000"),
    ("CALLFOLD_BODY_READ_TIMEOUT_MS", "1000"),
];

/// One hostile request and the answer it must get: (what it is, the request, the status, or
/// `None` for a connection closed without an answer, and text the answer must contain).
type HostileCase = (&'static str, Vec<u8>, Option<u16>, &'static str);

/// A correctly signed `call.completed` delivery at `now` as `msg_h`, for hostile requests to
/// spoil one part of.
struct ValidDelivery {
    now: i64,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl ValidDelivery {
    fn at(now: i64) -> Self {
        let body = call_completed("cll_hostile");
        Self {
            now,
            timestamp: now.to_string(),
            signature: signature(SECRET, "msg_h", now, &body),
            body,
        }
    }

    /// The delivery as `msg_h` with its signature and `extra` header lines.
    fn with_extra_headers(&self, extra: &str) -> Vec<u8> {
        delivery(
            b"msg_h",
            &self.timestamp,
            &self.signature,
            extra,
            &self.body,
        )
    }
}

/// Requests whose headers are too large, malformed, or out of range.
fn hostile_header_cases(valid: &ValidDelivery) -> Vec<HostileCase> {
    let padding = format!("x-padding: {}\r\n", "a".repeat(20_000));
    let some_entries = vec!["v2,x"; 1_500].join(" ");
    let thousands_of_entries = vec!["v1,x"; 5_000].join(" ");
    let huge_but_valid_timestamp = i64::MAX;
    let (timestamp, body) = (&valid.timestamp, &valid.body);
    vec![
        (
            "oversized headers",
            valid.with_extra_headers(&padding),
            Some(431),
            "",
        ),
        (
            "a header line without a colon",
            valid.with_extra_headers("no colon here\r\n"),
            Some(400),
            "",
        ),
        (
            "1,500 signature entries",
            delivery(b"msg_h", timestamp, &some_entries, "", body),
            Some(400),
            "more than 64 signature entries",
        ),
        (
            "5,000 signature entries",
            delivery(b"msg_h", timestamp, &thousands_of_entries, "", body),
            Some(431),
            "",
        ),
        (
            "a timestamp beyond 64 bits",
            delivery(
                b"msg_h",
                "99999999999999999999999",
                &valid.signature,
                "",
                body,
            ),
            Some(400),
            "webhook-timestamp",
        ),
        (
            "the largest 64-bit timestamp, correctly signed",
            signed("msg_h", huge_but_valid_timestamp, body),
            Some(401),
            "outside the accepted tolerance",
        ),
        (
            "a non-UTF-8 webhook-id",
            delivery(b"msg_\xff\xfe", timestamp, &valid.signature, "", body),
            Some(400),
            "webhook-id",
        ),
    ]
}

/// Requests whose bodies are not JSON, nested without end, or larger than the limit.
fn hostile_body_cases(valid: &ValidDelivery) -> Vec<HostileCase> {
    let not_json = b"this is not JSON".to_vec();
    let deeply_nested = "[".repeat(100_000).into_bytes();
    let (timestamp, signature) = (&valid.timestamp, &valid.signature);
    vec![
        (
            "a body that is not JSON, unsigned",
            delivery(b"msg_h", timestamp, signature, "", &not_json),
            Some(401),
            "no v1 signature matches",
        ),
        (
            "a body that is not JSON, correctly signed",
            signed("msg_not_json", valid.now, &not_json),
            Some(200),
            "quarantined",
        ),
        (
            "100,000 nested arrays, correctly signed",
            signed("msg_nested", valid.now, &deeply_nested),
            Some(200),
            "quarantined",
        ),
        (
            "a declared body larger than the limit",
            delivery(b"msg_h", timestamp, signature, "", &vec![b'x'; 2_000_000]),
            Some(413),
            "",
        ),
    ]
}

/// Slow senders: headers that never finish close the connection; a body that never finishes
/// gets 408.
async fn slow_senders_are_cut_off(base_url: &str, valid: &ValidDelivery) {
    let mut slow = TcpStream::connect(authority(base_url))
        .await
        .expect("connect");
    slow.write_all(b"POST /webhooks/allo HTTP/1.1\r\nhost: callfold\r\nwebhook-id: msg_")
        .await
        .expect("write");
    let answer = read_to_close(&mut slow).await;
    assert!(
        matches!(answer.status, None | Some(408)),
        "slow headers: {answer:?}"
    );

    let whole = signed("msg_slow_body", valid.now, &valid.body);
    let mut slow = TcpStream::connect(authority(base_url))
        .await
        .expect("connect");
    slow.write_all(&whole[..whole.len() - 10])
        .await
        .expect("write");
    let answer = read_to_close(&mut slow).await;
    assert_eq!(answer.status, Some(408), "slow body: {}", answer.text);
}

#[tokio::test]
async fn hostile_requests_get_their_answers_and_a_valid_delivery_is_accepted_after() {
    let db = TestDb::sqlite().await;
    let service = start_service("serve", &db.url, TIGHT_LIMITS).await;
    let valid = ValidDelivery::at(unix_now());
    let cases = hostile_header_cases(&valid)
        .into_iter()
        .chain(hostile_body_cases(&valid));
    for (name, request, expected, says) in cases {
        let answer = exchange(&service.base_url, &request).await;
        assert_eq!(answer.status, expected, "{name}: {}", answer.text);
        assert!(answer.text.contains(says), "{name}: {}", answer.text);
    }

    slow_senders_are_cut_off(&service.base_url, &valid).await;

    let answer = exchange(
        &service.base_url,
        &signed("msg_after", unix_now(), &valid.body),
    )
    .await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    assert!(answer.text.contains("\"accepted\""), "{}", answer.text);
}

/// Reads from `stream` until the head of a response has arrived, and returns it.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    while !received.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(EXCHANGE_LIMIT, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(
            read,
            1,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.push(byte[0]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: callfold\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn connections_past_the_cap_are_closed_when_every_one_is_busy_and_the_slots_come_back() {
    let db = TestDb::sqlite().await;
    let service = start_service("serve", &db.url, &[("CALLFOLD_MAX_CONNECTIONS", "4")]).await;
    // A live stream keeps its request in flight, so none of these connections gives way.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(authority(&service.base_url))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /v1/stream HTTP/1.1\r\nhost: callfold\r\n\r\n")
            .await
            .expect("write");
        assert!(
            read_response_head(&mut stream)
                .await
                .starts_with("HTTP/1.1 200")
        );
        held.push(stream);
    }
    let refused = exchange(&service.base_url, HEALTHZ).await;
    assert_eq!(refused.status, None, "a fifth connection: {refused:?}");

    // Closing one stream frees its slot once the server has seen it go.
    drop(held.remove(0));
    support::wait_until("a freed slot takes a new connection", 10, || async {
        exchange(&service.base_url, HEALTHZ).await.status == Some(200)
    })
    .await;
    // The last connection's slot may not be free yet: read the metrics once it is.
    support::wait_until("the refusal is counted", 10, || async {
        let Ok(response) = reqwest::get(format!("{}/metrics", service.base_url)).await else {
            return false;
        };
        let metrics = response.text().await.unwrap_or_default();
        metrics.lines().any(|line| {
            line.starts_with("callfold_connections_refused_total ") && !line.ends_with(" 0")
        })
    })
    .await;
    drop(held);
}

/// Deadlines long enough that only the policy at the cap can make room.
const PATIENT_DEADLINES: &[(&str, &str)] = &[
    ("CALLFOLD_FIRST_BYTE_TIMEOUT_MS", "600000"),
    ("CALLFOLD_HEADER_READ_TIMEOUT_MS", "600000"),
    ("CALLFOLD_KEEP_ALIVE_TIMEOUT_MS", "600000"),
    ("CALLFOLD_BODY_READ_TIMEOUT_MS", "600000"),
];

#[tokio::test]
async fn two_thousand_idle_connections_from_one_client_do_not_keep_deliveries_out() {
    let db = TestDb::sqlite().await;
    // The default cap (1,024), well under the 2,000 idle connections.
    let service = start_service("serve", &db.url, PATIENT_DEADLINES).await;
    let mut idle = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let connection = TcpStream::connect(authority(&service.base_url)).await;
        idle.push(connection.expect("connect (this test needs about 2,100 file descriptors)"));
    }
    for n in 0..10 {
        let id = format!("msg_flooded_{n}");
        let delivery = signed(&id, unix_now(), &call_completed("cll_flooded"));
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            exchange(&service.base_url, &delivery),
        )
        .await
        .expect("an answer within 5 s");
        assert_eq!(answer.status, Some(200), "{id}: {}", answer.text);
    }
    let health = tokio::time::timeout(Duration::from_secs(5), exchange(&service.base_url, HEALTHZ))
        .await
        .expect("an answer within 5 s");
    assert_eq!(health.status, Some(200), "{}", health.text);
    let metrics = service.metrics().await;
    assert!(
        metrics.lines().any(|line| {
            line.starts_with("callfold_connections_evicted_total ") && !line.ends_with(" 0")
        }),
        "evictions are counted"
    );
    drop(idle);
}

#[tokio::test]
async fn at_the_cap_idle_connections_give_way_but_a_request_in_flight_does_not() {
    let db = TestDb::sqlite().await;
    let mut env = vec![("CALLFOLD_MAX_CONNECTIONS", "4")];
    env.extend_from_slice(PATIENT_DEADLINES);
    let service = start_service("serve", &db.url, &env).await;
    // A delivery whose body is held back until the server asks for it: then it is in flight.
    let body = call_completed("cll_in_flight");
    let timestamp = unix_now();
    let signature = signature(SECRET, "msg_in_flight", timestamp, &body);
    let expecting = "expect: 100-continue\r\n";
    let request = delivery(
        b"msg_in_flight",
        &timestamp.to_string(),
        &signature,
        expecting,
        &body,
    );
    let (head, _) = request.split_at(request.len() - body.len());
    let mut in_flight = TcpStream::connect(authority(&service.base_url))
        .await
        .expect("connect");
    in_flight.write_all(head).await.expect("write");
    let continued = read_response_head(&mut in_flight).await;
    assert!(continued.starts_with("HTTP/1.1 100"), "{continued}");

    // Twice the cap of silent connections, then a request on a new one.
    let mut silent = Vec::new();
    for _ in 0..8 {
        let connection = TcpStream::connect(authority(&service.base_url)).await;
        silent.push(connection.expect("connect"));
    }
    let health = exchange(&service.base_url, HEALTHZ).await;
    assert_eq!(health.status, Some(200), "an idle connection gave way");

    in_flight.write_all(&body).await.expect("write");
    let answer = read_to_close(&mut in_flight).await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    assert!(answer.text.contains("\"accepted\""), "{}", answer.text);
    drop(silent);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let db = TestDb::sqlite().await;
    let mut settings = test_settings();
    settings.connections.first_byte_timeout = Duration::from_millis(200);
    settings.connections.header_read_timeout = Duration::from_secs(600);
    let service = spawn_app(Roles::All, settings, &db.store).await;
    let mut silent = TcpStream::connect(authority(&service.base_url))
        .await
        .expect("connect");
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 1]))
        .await
        .expect("closed long before the header read timeout");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // A connection that speaks in time is served.
    assert_eq!(exchange(&service.base_url, HEALTHZ).await.status, Some(200));
}

/// Asks `GET /healthz` on `stream`, keeping it alive, and reads the whole answer; returns its
/// status line.
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: callfold\r\n\r\n")
        .await
        .expect("write");
    let head = read_response_head(stream).await;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let line = line.to_ascii_lowercase();
            line.strip_prefix("content-length:")?.trim().parse().ok()
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    tokio::time::timeout(EXCHANGE_LIMIT, stream.read_exact(&mut body))
        .await
        .expect("the body in time")
        .expect("read the body");
    head.lines().next().unwrap_or_default().to_owned()
}

/// An app whose connections have these deadlines, and a connection to it kept alive after one
/// answer.
async fn kept_alive_connection(
    header_read_timeout: Duration,
    keep_alive_timeout: Duration,
) -> (TestDb, TestApp, TcpStream) {
    let db = TestDb::sqlite().await;
    let mut settings = test_settings();
    settings.connections.header_read_timeout = header_read_timeout;
    settings.connections.keep_alive_timeout = keep_alive_timeout;
    let service = spawn_app(Roles::All, settings, &db.store).await;
    let mut kept = TcpStream::connect(authority(&service.base_url))
        .await
        .expect("connect");
    assert_eq!(health_on(&mut kept).await, "HTTP/1.1 200 OK");
    (db, service, kept)
}

/// The first part of a request's headers, which never finish.
const HALF_A_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: call";

#[tokio::test]
async fn a_kept_alive_connection_idles_past_the_header_deadline_which_counts_from_a_first_byte() {
    let (_db, service, mut kept) =
        kept_alive_connection(Duration::from_millis(300), Duration::from_secs(600)).await;

    // Two connections in turn, each opened after the one before was cut, send half their
    // headers: once both are cut, `kept` has been idle for twice the header deadline.
    for _ in 0..2 {
        let slow = exchange(&service.base_url, HALF_A_HEAD).await;
        assert_eq!(slow.status, None, "headers that never finish: {slow:?}");
    }
    assert_eq!(
        health_on(&mut kept).await,
        "HTTP/1.1 200 OK",
        "the idle connection is still served"
    );

    // On the kept-alive connection too, headers that never finish are cut at the header
    // deadline, long before the keep-alive timeout.
    kept.write_all(HALF_A_HEAD).await.expect("write");
    let cut = read_to_close(&mut kept).await;
    assert_eq!(cut.status, None, "{cut:?}");
}

#[tokio::test]
async fn the_keep_alive_timeout_closes_an_idle_connection() {
    let (_db, _service, mut kept) =
        kept_alive_connection(Duration::from_secs(600), Duration::from_millis(200)).await;
    let closed = read_to_close(&mut kept).await;
    assert_eq!(closed.text, "", "closed with nothing more sent");
}

#[tokio::test]
async fn a_request_in_flight_outlives_both_connection_deadlines() {
    let db = TestDb::sqlite().await;
    let mut settings = test_settings();
    settings.connections.header_read_timeout = Duration::from_millis(200);
    settings.connections.keep_alive_timeout = Duration::from_millis(200);
    settings.receiver.body_read_timeout = Duration::from_secs(1);
    let service = spawn_app(Roles::All, settings, &db.store).await;
    // The head first; the body's first bytes only once the request is in flight (`100
    // Continue`), then nothing: the body's own deadline, five times longer than either of the
    // connection's, answers it.
    let valid = ValidDelivery::at(unix_now());
    let head = valid.with_extra_headers("expect: 100-continue\r\n");
    let head_length = head.len() - valid.body.len();
    let mut slow = TcpStream::connect(authority(&service.base_url))
        .await
        .expect("connect");
    slow.write_all(&head[..head_length]).await.expect("write");
    assert!(
        read_response_head(&mut slow)
            .await
            .starts_with("HTTP/1.1 100")
    );
    slow.write_all(&valid.body[..10]).await.expect("write");
    let answer = read_to_close(&mut slow).await;
    assert_eq!(answer.status, Some(408), "{}", answer.text);
}

#[tokio::test]
async fn with_an_admin_listener_the_public_one_serves_only_the_webhook() {
    let db = TestDb::sqlite().await;
    let settings = Settings {
        api_token: ApiToken::new("token-for-the-admin-test".to_owned()),
        ..test_settings()
    };
    let service = spawn_app_on(Roles::All, settings, &db.store, true).await;
    let admin = service.admin_url.clone().expect("an admin listener");
    let client = reqwest::Client::new();
    let status = |url: String, token: Option<&'static str>| {
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    for path in ["/v1/calls", "/metrics", "/healthz", "/readyz"] {
        let public = status(format!("{}{path}", service.base_url), None).await;
        assert_eq!(public, 404, "{path} on the public listener");
    }
    let token = Some("token-for-the-admin-test");
    assert_eq!(status(format!("{admin}/v1/calls"), token).await, 200);
    assert_eq!(status(format!("{admin}/v1/calls"), None).await, 401);
    assert_eq!(status(format!("{admin}/metrics"), None).await, 200);
    assert_eq!(status(format!("{admin}/readyz"), None).await, 200);

    let delivery = signed("msg_public", unix_now(), &call_completed("c"));
    assert_eq!(
        exchange(&service.base_url, &delivery).await.status,
        Some(200)
    );
    let on_admin = client
        .post(format!("{admin}/webhooks/allo"))
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        on_admin.status().as_u16(),
        404,
        "no webhook on the admin side"
    );
}

/// Every text form of `secret` (`whsec_...`) that would give it away: the whole string, its
/// base64 key, and the key bytes as text, hex and unpadded base64.
fn secret_forms(secret: &str) -> Vec<String> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
    vec![
        secret.to_owned(),
        encoded.to_owned(),
        encoded.trim_end_matches('=').to_owned(),
        String::from_utf8_lossy(&key).into_owned(),
        hex,
    ]
}

#[tokio::test]
async fn no_secret_shows_in_output_answers_or_metrics() {
    const TOKEN: &str = "api-token-that-must-not-leak";
    let db = TestDb::sqlite().await;
    let env = [
        ("RUST_LOG", "trace"),
        ("CALLFOLD_API_TOKEN", TOKEN),
        ("CALLFOLD_TOLERANCE", "60"),
    ];
    let service = start_service("serve", &db.url, &env).await;
    let body = call_completed("cll_secret");
    let now = unix_now();
    let wrong = signature(
        "whsec_d3Jvbmcta2V5LXdyb25nLWtleQ==",
        "msg_wrong",
        now,
        &body,
    );
    let requests = [
        signed("msg_right", now, &body),
        signed("msg_stale", now - 3_600, &body),
        delivery(b"msg_bad", &now.to_string(), "v1,!!!", "", &body),
        delivery(b"msg_wrong", &now.to_string(), &wrong, "", &body),
    ];
    let mut seen = String::new();
    for request in &requests {
        seen.push_str(&exchange(&service.base_url, request).await.text);
    }
    let client = reqwest::Client::new();
    for token in [TOKEN, "a-wrong-token"] {
        let answer = client
            .get(format!("{}/v1/calls/cll_secret", service.base_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("answer");
        seen.push_str(&answer.text().await.expect("text"));
    }
    seen.push_str(&service.metrics().await);
    // A secret that does not parse is named by position, never echoed.
    let misconfigured = tokio::process::Command::new(support::CALLFOLD)
        .args(["ingest", "--database-url", &db.url])
        .env(
            "CALLFOLD_WEBHOOK_SECRETS",
            format!("{SECRET} whsec_not*base64"),
        )
        .output()
        .await
        .expect("runs");
    assert!(!misconfigured.status.success());
    seen.push_str(&String::from_utf8_lossy(&misconfigured.stderr));
    seen.push_str(&String::from_utf8_lossy(&misconfigured.stdout));

    support::wait_until(
        "the last rejection is in the captured output",
        10,
        || async { service.output().contains("no v1 signature matches") },
    )
    .await;
    seen.push_str(&service.output());
    assert!(seen.contains("secret #2"), "the capture holds the error");
    let mut forms = secret_forms(SECRET);
    forms.extend(["whsec_not*base64".to_owned(), TOKEN.to_owned()]);
    for form in forms {
        assert!(!seen.contains(&form), "{form:?} appears in the output");
    }
}
