//! The live streams (`GET /v1/calls/{id}/stream`, `GET /v1/stream`) of the app `callfold
//! serve` runs, built in process, on both stores: a committed change arrives, and a stream resumed from the
//! last event it saw receives every call changed since.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use callfold_service::Roles;
use support::{TestDb, envelope, spawn_app, test_settings};

/// Longest wait for the next event.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// A client of one server-sent-events stream.
struct EventStream {
    response: reqwest::Response,
    buffered: String,
}

impl EventStream {
    /// Opens `url`, resuming after `last_event_id` when given.
    async fn open(url: &str, last_event_id: Option<i64>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"].to_str().expect("ascii");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            response,
            buffered: String::new(),
        }
    }

    /// The next `projection` event: its id and its data.
    async fn next(&mut self) -> (i64, Value) {
        loop {
            while let Some(end) = self.buffered.find("\n\n") {
                let block: String = self.buffered.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(str::trim)
                        .map(str::to_owned)
                };
                if field("event:").as_deref() != Some("projection") {
                    continue; // a keep-alive comment
                }
                let id = field("id:").expect("an id").parse().expect("a number");
                let data = serde_json::from_str(&field("data:").expect("data")).expect("JSON");
                return (id, data);
            }
            let chunk = tokio::time::timeout(EVENT_WAIT, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads")
                .expect("the stream stays open");
            self.buffered.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn completed(call: &str) -> Vec<u8> {
    envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": call, "type": "INBOUND"}),
    )
}

fn tagged(call: &str, tag: &str) -> Vec<u8> {
    envelope(
        "tag.added",
        "2026-02-10T09:18:00Z",
        json!({"call_id": call, "tag": tag}),
    )
}

async fn a_committed_change_arrives_on_the_call_stream(db: TestDb) {
    let service = spawn_app(Roles::All, test_settings(), &db.store).await;
    let receiver = service.receiver();
    let url = format!("{}/v1/calls/cll_live/stream", service.base_url);
    let mut stream = EventStream::open(&url, None).await;

    assert_eq!(
        receiver
            .deliver("msg_live_1", &completed("cll_live"))
            .await
            .status,
        200
    );
    let (first, call) = stream.next().await;
    assert_eq!(call["call_id"], "cll_live");
    assert_eq!(call["status"], "completed");

    receiver
        .deliver("msg_live_2", &tagged("cll_live", "vip"))
        .await;
    let (second, call) = stream.next().await;
    assert!(second > first);
    assert_eq!(call["tags"], json!(["vip"]));
}

async fn a_resumed_stream_receives_every_call_changed_since(db: TestDb) {
    let service = spawn_app(Roles::All, test_settings(), &db.store).await;
    let receiver = service.receiver();
    let url = format!("{}/v1/stream", service.base_url);
    let mut stream = EventStream::open(&url, None).await;
    receiver.deliver("msg_a_1", &completed("cll_a")).await;
    let (seen, call) = stream.next().await;
    assert_eq!(call["call_id"], "cll_a");
    drop(stream);

    // While no client listens: two new calls, and a change of the first.
    receiver.deliver("msg_b_1", &completed("cll_b")).await;
    receiver.deliver("msg_a_2", &tagged("cll_a", "vip")).await;
    receiver.deliver("msg_c_1", &completed("cll_c")).await;
    support::wait_for_queue(&db.store, "every change is committed", 30, |calls| {
        calls == 0
    })
    .await;
    let committed = db
        .store
        .projection_changes(seen, None, 100)
        .await
        .expect("read changes");
    let expected: BTreeSet<String> = committed
        .iter()
        .map(|change| change.projection.call_key.as_str().to_owned())
        .collect();
    assert_eq!(
        expected,
        BTreeSet::from(["cll_a", "cll_b", "cll_c"].map(String::from))
    );

    for resumed in [
        EventStream::open(&url, Some(seen)).await,
        EventStream::open(&format!("{url}?after={seen}"), None).await,
    ] {
        let mut resumed = resumed;
        let mut last = seen;
        let mut received = BTreeSet::new();
        for _ in 0..committed.len() {
            let (id, call) = resumed.next().await;
            assert!(id > last, "ids increase: {id} after {last}");
            last = id;
            if call["call_id"] == "cll_a" {
                assert_eq!(call["tags"], json!(["vip"]), "the call as it is now");
            }
            received.insert(call["call_id"].as_str().expect("an id").to_owned());
        }
        assert_eq!(received, expected);
    }
}

on_both_stores!(
    a_committed_change_arrives_on_the_call_stream,
    a_resumed_stream_receives_every_call_changed_since,
);
