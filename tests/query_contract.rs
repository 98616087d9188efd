//! The public JSON contract of the read side, byte for byte: every query route of `/v1` and
//! every query command of the CLI answers a known log with exactly the documents below (keys,
//! their order, value types and values), and every bad parameter with its status and message.
//! The keys and shapes are documented in the README; clients depend on them.

mod support;

use callfold_ingest::{LinkingRules, Quarantine};
use callfold_projector::{Precedence, Projector};
use callfold_store::{EventTime, NewEvent, Store, WebhookId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{CALLFOLD, LEASE, TestDb, commit_timeout, envelope, serve_on_loopback};

/// The `webhook-timestamp` of every record.
const WEBHOOK_TIMESTAMP: i64 = 1_770_715_062;

/// When the `n`th record of the log arrived: 10:00:0n.
fn received_at(n: i64) -> EventTime {
    let first = EventTime::parse_rfc3339("2026-02-10T10:00:00Z").expect("time");
    EventTime::from_unix_micros(first.unix_micros() + n * 1_000_000)
}

fn record(n: i64, webhook_id: &str, body: &[u8]) -> NewEvent {
    NewEvent {
        webhook_id: WebhookId::parse(webhook_id).expect("id"),
        webhook_timestamp: WEBHOOK_TIMESTAMP,
        received_at: received_at(n),
        body: body.to_vec(),
        body_sha256: Sha256::digest(body).into(),
        content: LinkingRules::default().read(body),
    }
}

/// The log every check reads, seqs 1 to 8: three calls (`cll_a`'s tag arrives late), one
/// unlinked call event (position 1) and two quarantined records (positions 2 and 3), folded.
async fn known_log(store: &Store) {
    let records = [
        (
            "msg_a1",
            envelope(
                "call.received",
                "2026-02-10T09:00:00Z",
                json!({"call_id": "cll_a", "from_number": "+33100", "to_number": "+33200",
                       "person": {"name": "Ada"}}),
            ),
        ),
        (
            "msg_a3",
            envelope(
                "call.completed",
                "2026-02-10T09:02:00Z",
                json!({"id": "cll_a", "type": "INBOUND", "summary": "Booked",
                       "result": "ANSWERED", "length": 120, "tags": [{"key": "sales"}]}),
            ),
        ),
        (
            "msg_a2",
            envelope(
                "tag.added",
                "2026-02-10T09:01:00Z",
                json!({"call_id": "cll_a", "tag": "vip"}),
            ),
        ),
        (
            "msg_b1",
            envelope(
                "call.triggered",
                "2026-02-10T09:05:00Z",
                json!({"call_id": "cll_b", "from_number": "+33300"}),
            ),
        ),
        (
            "msg_u",
            envelope("call.received", "2026-02-10T09:06:00Z", json!({})),
        ),
        ("msg_q1", b"not json".to_vec()),
        (
            "msg_c1",
            envelope(
                "call.answered",
                "2026-02-10T09:07:00Z",
                json!({"call_id": "cll_c"}),
            ),
        ),
        ("msg_q2", b"{\"topic\": 7}".to_vec()),
    ];
    // One append each: the seqs follow the list (a batch may take its records in any order).
    for ((id, body), n) in records.iter().zip(1..) {
        let appended = store.append_batch(&[record(n, id, body)]).await;
        appended.expect("append");
    }
    let projector = Projector::new(store.clone(), Precedence::default(), 100, LEASE);
    while projector.fold_next_batch().await.expect("fold") > 0 {}
}

fn at(text: &str) -> String {
    format!("2026-02-10T{text}.000000Z")
}

/// `meta` of a stored projection: what the store holds for `call`.
async fn meta(store: &Store, call: &str, last_seq: i64, late_events: i64) -> Value {
    let projection = support::stored_projection(store, call)
        .await
        .expect("projected");
    json!({"last_seq": last_seq, "late_events": late_events, "updated_at": projection.updated_at})
}

async fn call_a(store: &Store) -> Value {
    json!({
        "call_id": "cll_a",
        "completed": {"duration": 120, "recording_url": null, "result": "ANSWERED",
                      "transcript": null, "user": null},
        "contact": {"person": {"name": "Ada"}},
        "direction": "inbound",
        "event_count": 3,
        "first_event_at": at("09:00:00"),
        "from_number": "+33100",
        "last_event_at": at("09:02:00"),
        "meta": meta(store, "cll_a", 3, 1).await,
        "started_at": null,
        "status": "completed",
        "summary": "Booked",
        "tags": ["sales"],
        "to_number": "+33200",
    })
}

async fn call_b(store: &Store) -> Value {
    json!({
        "call_id": "cll_b", "completed": null, "contact": null, "direction": "outbound",
        "event_count": 1, "first_event_at": at("09:05:00"), "from_number": "+33300",
        "last_event_at": at("09:05:00"), "meta": meta(store, "cll_b", 4, 0).await,
        "started_at": null, "status": "initiated", "summary": null, "tags": [],
        "to_number": null,
    })
}

async fn call_c(store: &Store) -> Value {
    json!({
        "call_id": "cll_c", "completed": null, "contact": null, "direction": null,
        "event_count": 1, "first_event_at": at("09:07:00"), "from_number": null,
        "last_event_at": at("09:07:00"), "meta": meta(store, "cll_c", 7, 0).await,
        "started_at": null, "status": "answered", "summary": null, "tags": [],
        "to_number": null,
    })
}

fn call_a_as_of_its_tag() -> Value {
    json!({
        "call_id": "cll_a", "completed": null, "contact": {"person": {"name": "Ada"}},
        "direction": "inbound", "event_count": 2, "first_event_at": at("09:00:00"),
        "from_number": "+33100", "last_event_at": at("09:01:00"),
        "meta": {"as_of": at("09:01:30")}, "started_at": null, "status": "ringing",
        "summary": null, "tags": ["vip"], "to_number": "+33200",
    })
}

fn call_a_events() -> Value {
    let event = |seq: i64, webhook_id: &str, topic: &str, timestamp: &str, late: bool| {
        json!({"late": late, "received_at": received_at(seq), "seq": seq, "timestamp": at(timestamp),
               "topic": topic, "webhook_id": webhook_id})
    };
    json!({
        "call_id": "cll_a",
        "events": [
            event(1, "msg_a1", "call.received", "09:00:00", false),
            event(3, "msg_a2", "tag.added", "09:01:00", true),
            event(2, "msg_a3", "call.completed", "09:02:00", false),
        ],
    })
}

fn stats() -> Value {
    json!({
        "log": {"events": 8, "quarantined": 2, "unlinked": 1},
        "projector": {"calls_waiting": 0, "events_waiting": 0, "lag_seconds": 0.0,
                      "last_change": 3, "projections": 3},
    })
}

fn unlinked_event() -> Value {
    json!({"position": 1, "received_at": received_at(5), "seq": 5,
           "timestamp": at("09:06:00"), "topic": "call.received", "webhook_id": "msg_u"})
}

const NOT_JSON: &str = "body is not JSON: expected ident at line 1 column 2";
const NO_TOPIC: &str = "body has no non-empty string `topic`";

fn quarantined(position: i64, seq: i64, webhook_id: &str, reason: &str) -> Value {
    json!({"position": position, "reason": reason, "received_at": received_at(seq),
           "redriven_as": null, "seq": seq, "webhook_id": webhook_id})
}

fn kept_record_6() -> Value {
    json!({"body": "not json", "body_base64": "bm90IGpzb24=", "reason": NOT_JSON,
           "received_at": received_at(6), "redriven_as": null, "seq": 6, "unlinked": false,
           "webhook_id": "msg_q1", "webhook_timestamp": WEBHOOK_TIMESTAMP})
}

fn kept_record_5() -> Value {
    let body = String::from_utf8(envelope("call.received", "2026-02-10T09:06:00Z", json!({})))
        .expect("UTF-8");
    let body_base64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body);
    json!({"body": body, "body_base64": body_base64, "reason": null,
           "received_at": received_at(5), "redriven_as": null, "seq": 5, "unlinked": true,
           "webhook_id": "msg_u", "webhook_timestamp": WEBHOOK_TIMESTAMP})
}

/// Status and body of `GET {api}{path}`.
async fn get(api: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{api}{path}")).await.expect("answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// `GET {api}{path}` answers `status` with exactly `expected`, as compact JSON: the same keys in
/// the same order (sorted), the same values.
async fn assert_answers(api: &str, path: &str, status: u16, expected: &Value) {
    let answered = get(api, path).await;
    let expected = serde_json::to_string(expected).expect("JSON");
    assert_eq!(answered, (status, expected), "GET {path}");
}

async fn assert_refused(api: &str, path: &str, status: u16, error: &str) {
    assert_answers(api, path, status, &json!({ "error": error })).await;
}

async fn http_routes_answer_the_documented_documents(db: TestDb) {
    let store = &db.store;
    known_log(store).await;
    let quarantine = Quarantine::new(store.clone(), LinkingRules::default(), commit_timeout());
    let routes = support::query_api(store).merge(
        callfold_service::operator_api::quarantine_router(quarantine),
    );
    let api = &serve_on_loopback(routes).await;
    let (a, b, c) = (
        call_a(store).await,
        call_b(store).await,
        call_c(store).await,
    );

    assert_answers(api, "/v1/calls/cll_a", 200, &a).await;
    let as_of = "/v1/calls/cll_a?as_of=2026-02-10T09:01:30Z";
    assert_answers(api, as_of, 200, &call_a_as_of_its_tag()).await;
    assert_answers(api, "/v1/calls/cll_a/events", 200, &call_a_events()).await;
    assert_answers(api, "/v1/stats", 200, &stats()).await;

    let all = json!({"calls": [a, b, c], "next": null});
    assert_answers(api, "/v1/calls", 200, &all).await;
    let first = json!({"calls": [a, b], "next": "cll_b"});
    assert_answers(api, "/v1/calls?limit=2", 200, &first).await;
    let rest = json!({"calls": [c], "next": null});
    assert_answers(api, "/v1/calls?limit=2&after=cll_b", 200, &rest).await;
    for (filter, calls) in [
        ("tag=sales", json!([a])),
        ("tag=vip", json!([])),
        ("status=initiated", json!([b])),
        ("since=2026-02-10T09:05:00Z", json!([b, c])),
        ("until=2026-02-10T09:05:00Z", json!([a])),
        (
            "status=answered&since=2026-02-10T09:00:00Z&until=2026-02-10T10:00:00Z",
            json!([c]),
        ),
    ] {
        let path = format!("/v1/calls?{filter}");
        assert_answers(api, &path, 200, &json!({"calls": calls, "next": null})).await;
    }

    let unlinked = json!({"events": [unlinked_event()], "next": null, "total": 1});
    assert_answers(api, "/v1/unlinked", 200, &unlinked).await;
    let full_page = json!({"events": [unlinked_event()], "next": 1, "total": 1});
    assert_answers(api, "/v1/unlinked?limit=1", 200, &full_page).await;
    let past_the_end = json!({"events": [], "next": null, "total": 1});
    assert_answers(api, "/v1/unlinked?after=1", 200, &past_the_end).await;

    let q1 = quarantined(2, 6, "msg_q1", NOT_JSON);
    let q2 = quarantined(3, 8, "msg_q2", NO_TOPIC);
    let listed = json!({"next": null, "records": [q1, q2], "total": 2});
    assert_answers(api, "/v1/quarantine", 200, &listed).await;
    let first = json!({"next": 2, "records": [q1], "total": 2});
    assert_answers(api, "/v1/quarantine?limit=1", 200, &first).await;
    // A full page names its last position, even when nothing follows it.
    let rest = json!({"next": 3, "records": [q2], "total": 2});
    assert_answers(api, "/v1/quarantine?limit=1&after=2", 200, &rest).await;
    assert_answers(api, "/v1/quarantine/6", 200, &kept_record_6()).await;
    assert_answers(api, "/v1/quarantine/5", 200, &kept_record_5()).await;
}

async fn http_routes_refuse_bad_parameters_naming_them(db: TestDb) {
    let store = &db.store;
    known_log(store).await;
    let quarantine = Quarantine::new(store.clone(), LinkingRules::default(), commit_timeout());
    let routes = support::query_api(store).merge(
        callfold_service::operator_api::quarantine_router(quarantine),
    );
    let api = &serve_on_loopback(routes).await;

    let limit = "bad parameter limit: must be a whole number from 1 to 1000";
    let bad_time = "not an RFC 3339 date-time with an offset or Z: premature end of input";
    for (path, status, error) in [
        ("/v1/calls?limit=0", 400, limit.to_owned()),
        ("/v1/calls?limit=1001", 400, limit.to_owned()),
        ("/v1/calls?limit=ten", 400, limit.to_owned()),
        (
            "/v1/calls?status=ringin",
            400,
            "bad parameter status: must be ringing, initiated, answered or completed".to_owned(),
        ),
        (
            "/v1/calls?since=soon",
            400,
            format!("bad parameter since: {bad_time}"),
        ),
        (
            "/v1/calls?until=soon",
            400,
            format!("bad parameter until: {bad_time}"),
        ),
        (
            "/v1/calls/cll_a?as_of=soon",
            400,
            format!("bad parameter as_of: {bad_time}"),
        ),
        (
            "/v1/calls/cll_a?as_of=2026-02-10T08:00:00Z",
            404,
            "no call with id \"cll_a\"".to_owned(),
        ),
        (
            "/v1/calls/cll_nobody",
            404,
            "no call with id \"cll_nobody\"".to_owned(),
        ),
        (
            "/v1/calls/cll_nobody/events",
            404,
            "no call with id \"cll_nobody\"".to_owned(),
        ),
        ("/v1/unlinked?limit=0", 400, limit.to_owned()),
        (
            "/v1/unlinked?after=first",
            400,
            "bad parameter after: must be a position given as next".to_owned(),
        ),
        // The lists of kept records share one cursor, and every list one limit.
        ("/v1/quarantine?limit=0", 400, limit.to_owned()),
        ("/v1/quarantine?limit=ten", 400, limit.to_owned()),
        (
            "/v1/quarantine?after=first",
            400,
            "bad parameter after: must be a position given as next".to_owned(),
        ),
        (
            "/v1/quarantine/999",
            404,
            "no record with seq 999".to_owned(),
        ),
    ] {
        assert_refused(api, path, status, &error).await;
    }
}

/// What `callfold ARGS --database-url URL` prints on stdout; it must succeed.
async fn cli(database_url: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(CALLFOLD)
        .args(args)
        .args(["--database-url", database_url])
        .output()
        .await
        .expect("callfold runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// `callfold ARGS` prints exactly `expected`, as pretty JSON on one line per value.
async fn assert_prints(database_url: &str, args: &[&str], expected: &Value) {
    let printed = cli(database_url, args).await;
    let expected = serde_json::to_string_pretty(expected).expect("JSON") + "\n";
    assert_eq!(printed, expected, "callfold {args:?}");
}

async fn cli_queries_print_the_documented_documents(db: TestDb) {
    let store = &db.store;
    known_log(store).await;
    let url = &db.url;
    let (a, b, c) = (
        call_a(store).await,
        call_b(store).await,
        call_c(store).await,
    );

    assert_prints(url, &["calls", "show", "cll_a"], &a).await;
    let as_of = ["calls", "show", "cll_a", "--as-of", "2026-02-10T09:01:30Z"];
    assert_prints(url, &as_of, &call_a_as_of_its_tag()).await;
    assert_prints(url, &["calls", "events", "cll_a"], &call_a_events()).await;
    let first = json!({"calls": [a, b], "next": "cll_b"});
    assert_prints(url, &["calls", "list", "--limit", "2"], &first).await;
    let rest = json!({"calls": [c], "next": null});
    let after = ["calls", "list", "--limit", "2", "--after", "cll_b"];
    assert_prints(url, &after, &rest).await;
    let initiated = json!({"calls": [b], "next": null});
    let filtered = ["calls", "list", "--status", "initiated", "--tag", "sales"];
    assert_prints(url, &filtered, &json!({"calls": [], "next": null})).await;
    assert_prints(url, &["calls", "list", "--status", "initiated"], &initiated).await;
    assert_prints(url, &["stats"], &stats()).await;

    let q1 = quarantined(2, 6, "msg_q1", NOT_JSON);
    let q2 = quarantined(3, 8, "msg_q2", NO_TOPIC);
    let first = json!({"next": 2, "records": [q1], "total": 2});
    assert_prints(url, &["quarantine", "list", "--limit", "1"], &first).await;
    // A full page names its last position, even when nothing follows it.
    let rest = json!({"next": 3, "records": [q2], "total": 2});
    let after = ["quarantine", "list", "--limit", "1", "--after", "2"];
    assert_prints(url, &after, &rest).await;
    assert_prints(url, &["quarantine", "show", "6"], &kept_record_6()).await;
}

on_both_stores!(
    http_routes_answer_the_documented_documents,
    http_routes_refuse_bad_parameters_naming_them,
    cli_queries_print_the_documented_documents,
);
