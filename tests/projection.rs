//! Per-call projections on SQLite and PostgreSQL: deliveries go through the real receiver, the
//! projector folds the log, and the query API answers; the result must not depend on arrival
//! order, duplicates or batch boundaries.

mod support;

use std::collections::BTreeSet;

use callfold_projector::{CALL_TOPICS, Precedence, Projector};
use callfold_store::{CallKey, EventTime, StoredProjection};
use callfold_store::{NewEvent, WebhookId};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    LEASE, TestDb, assert_projections_equal_a_fold_from_scratch, envelope, fold_from_scratch,
    send_simulated_calls, serve_on_loopback, start_receiver, test_settings,
};

/// Runs `projector` until it has folded the whole log.
async fn catch_up(projector: &Projector) {
    while projector.fold_next_batch().await.expect("fold a batch") > 0 {}
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("query API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn tag_added_before_call_completed_yields_a_tagged_completed_call(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let tag = envelope(
        "tag.added",
        "2026-02-10T09:20:00Z",
        json!({"call_id": "cll_9", "tag": "vip"}),
    );
    let completed = envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": "cll_9", "type": "INBOUND", "result": "ANSWERED", "from_number": "+336"}),
    );
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    receiver.deliver("msg_tag_first", &tag).await;
    catch_up(&projector).await;
    receiver.deliver("msg_completed_late", &completed).await;
    catch_up(&projector).await;

    let api = serve_on_loopback(support::query_api(&db.store)).await;
    let (status, call) = get_json(&format!("{api}/v1/calls/cll_9")).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["direction"], "inbound");
    assert_eq!(call["tags"], json!(["vip"]));
    assert_eq!(call["event_count"], 2);
    assert_eq!(call["first_event_at"], "2026-02-10T09:17:42.318000Z");
    assert_eq!(call["meta"]["late_events"], 1);
}

/// Delivers, out of order, a call completed at 09:00 and tagged `early` at 09:05 and `late` at
/// 09:10, folds them, and returns the query API's base URL.
async fn tagged_twice(db: &TestDb) -> String {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let tag = |tag, at| envelope("tag.added", at, json!({"call_id": "cll_t", "tag": tag}));
    let completed = envelope(
        "call.completed",
        "2026-02-10T09:00:00Z",
        json!({"id": "cll_t"}),
    );
    receiver
        .deliver("msg_late_tag", &tag("late", "2026-02-10T09:10:00Z"))
        .await;
    receiver.deliver("msg_completed", &completed).await;
    receiver
        .deliver("msg_early_tag", &tag("early", "2026-02-10T09:05:00Z"))
        .await;
    catch_up(&Projector::new(
        db.store.clone(),
        Precedence::default(),
        100,
        LEASE,
    ))
    .await;
    serve_on_loopback(support::query_api(&db.store)).await
}

async fn as_of_returns_the_state_at_that_payload_time(db: TestDb) {
    let api = tagged_twice(&db).await;
    let (status, now) = get_json(&format!("{api}/v1/calls/cll_t")).await;
    assert_eq!((status, &now["tags"]), (200, &json!(["early", "late"])));
    let (status, then) =
        get_json(&format!("{api}/v1/calls/cll_t?as_of=2026-02-10T09:07:00Z")).await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(then["tags"], json!(["early"]));
    assert_eq!(then["event_count"], 2);
    assert_eq!(then["meta"]["as_of"], "2026-02-10T09:07:00.000000Z");
    let (status, _) = get_json(&format!("{api}/v1/calls/cll_t?as_of=2026-02-10T08:00:00Z")).await;
    assert_eq!(status, 404, "nothing was known of the call yet");
}

async fn a_bad_as_of_is_400_naming_the_parameter(db: TestDb) {
    let api = tagged_twice(&db).await;
    let (status, body) = get_json(&format!("{api}/v1/calls/cll_t?as_of=yesterday")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().expect("message").contains("as_of"),
        "{body}"
    );
}

async fn events_come_in_effective_order_with_late_arrivals_marked(db: TestDb) {
    let api = tagged_twice(&db).await;
    let (status, body) = get_json(&format!("{api}/v1/calls/cll_t/events")).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().expect("events");
    let summary: Vec<(&str, bool)> = events
        .iter()
        .map(|e| {
            (
                e["webhook_id"].as_str().expect("id"),
                e["late"].as_bool().expect("late"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("msg_completed", true),
            ("msg_early_tag", true),
            ("msg_late_tag", false)
        ]
    );
    assert_eq!(events[0]["timestamp"], "2026-02-10T09:00:00.000000Z");
    assert!(
        events
            .iter()
            .all(|e| e["seq"].is_i64() && e["received_at"].is_string())
    );
}

async fn listing_pages_through_every_call_once_and_filters(db: TestDb) {
    let calls = send_simulated_calls(&db, 30, 14).await;
    catch_up(&Projector::new(
        db.store.clone(),
        Precedence::default(),
        100,
        LEASE,
    ))
    .await;
    let api = serve_on_loopback(support::query_api(&db.store)).await;

    let mut listed = Vec::new();
    let mut query = format!("{api}/v1/calls?limit=7");
    loop {
        let (status, page) = get_json(&query).await;
        assert_eq!(status, 200, "{page}");
        let ids = page["calls"].as_array().expect("calls");
        assert!(ids.len() <= 7);
        listed.extend(
            ids.iter()
                .map(|c| c["call_id"].as_str().expect("id").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => query = format!("{api}/v1/calls?limit=7&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = calls.iter().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(listed, expected, "every call once, in id order");

    let (_, all) = get_json(&format!("{api}/v1/calls?limit=1000")).await;
    let all = all["calls"].as_array().expect("calls").clone();
    for (filter, keep) in [
        (
            "tag=sales",
            Box::new(|c: &Value| {
                c["tags"]
                    .as_array()
                    .expect("tags")
                    .contains(&json!("sales"))
            }) as Box<dyn Fn(&Value) -> bool>,
        ),
        (
            "status=completed",
            Box::new(|c: &Value| c["status"] == "completed"),
        ),
        ("since=2100-01-01T00:00:00Z", Box::new(|_: &Value| false)),
    ] {
        let (status, page) = get_json(&format!("{api}/v1/calls?limit=1000&{filter}")).await;
        assert_eq!(status, 200, "{filter}: {page}");
        let expected: Vec<&Value> = all.iter().filter(|c| keep(c)).collect();
        let got: Vec<&Value> = page["calls"].as_array().expect("calls").iter().collect();
        assert_eq!(got, expected, "{filter}");
    }
    for (bad, named) in [
        ("limit=0", "limit"),
        ("status=ringin", "status"),
        ("until=soon", "until"),
    ] {
        let (status, body) = get_json(&format!("{api}/v1/calls?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["error"].as_str().expect("message").contains(named),
            "{body}"
        );
    }
}

async fn unlinked_call_events_are_kept_counted_and_listed(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let ringing = |n: u32| {
        let data = json!({"from_number": format!("+3361234567{n}"), "to_number": "+33199"});
        envelope("call.received", "2026-02-10T09:00:00Z", data)
    };
    for n in 0..3 {
        let answer = receiver
            .deliver(&format!("msg_ring_{n}"), &ringing(n))
            .await;
        assert_eq!(answer.json["status"], "accepted");
    }
    let sms = envelope(
        "sms.received",
        "2026-02-10T09:00:00Z",
        json!({"id": "sms_1"}),
    );
    receiver.deliver("msg_sms", &sms).await;
    let api = serve_on_loopback(support::query_api(&db.store)).await;

    let (status, first) = get_json(&format!("{api}/v1/unlinked?limit=2")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["total"], 3,
        "an SMS is not a call event, so not unlinked"
    );
    let (_, rest) = get_json(&format!(
        "{api}/v1/unlinked?limit=2&after={}",
        first["next"]
    ))
    .await;
    let ids: Vec<&str> = [&first, &rest]
        .iter()
        .flat_map(|page| page["events"].as_array().expect("events"))
        .map(|event| event["webhook_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["msg_ring_0", "msg_ring_1", "msg_ring_2"]);
    assert_eq!(rest["next"], Value::Null);
    assert_eq!(first["events"][0]["topic"], "call.received");
}

async fn an_unknown_call_is_404(db: TestDb) {
    let api = serve_on_loopback(support::query_api(&db.store)).await;
    let (status, body) = get_json(&format!("{api}/v1/calls/cll_nobody")).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("cll_nobody")
    );
}

/// Every call's projection, without the time it was written.
async fn projections_without_update_time(
    db: &TestDb,
    calls: &BTreeSet<CallKey>,
) -> Vec<StoredProjection> {
    let mut projections = Vec::with_capacity(calls.len());
    for key in calls {
        let mut projection = db
            .store
            .projection(key)
            .await
            .expect("read")
            .expect("projected");
        projection.updated_at = EventTime::from_unix_micros(0);
        projections.push(projection);
    }
    projections
}

async fn shuffled_duplicated_traffic_projects_exactly_like_a_fold_from_scratch(db: TestDb) {
    let calls = send_simulated_calls(&db, 30, 11).await;
    // Small batches, so late events and re-folds cross batch boundaries.
    catch_up(&Projector::new(
        db.store.clone(),
        Precedence::default(),
        7,
        LEASE,
    ))
    .await;
    assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await;
}

async fn a_rebuild_reproduces_incremental_projections_byte_for_byte(db: TestDb) {
    let calls = send_simulated_calls(&db, 30, 12).await;
    let projector = Projector::new(db.store.clone(), Precedence::default(), 7, LEASE);
    catch_up(&projector).await;
    let incremental = projections_without_update_time(&db, &calls).await;
    let mut progress = Vec::new();
    let rebuilt_calls = projector
        .rebuild(|read, _| progress.push(read))
        .await
        .expect("rebuild");
    assert_eq!(rebuilt_calls.calls, 30);
    assert!(progress.windows(2).all(|pair| pair[0] < pair[1]) && !progress.is_empty());
    assert_eq!(
        projections_without_update_time(&db, &calls).await,
        incremental
    );
    assert_eq!(
        db.store.queue_depth().await.expect("depth").calls,
        0,
        "nothing was appended under the rebuild, so it left nothing to fold"
    );

    let one = calls.first().expect("a call");
    assert!(projector.refold_call(one).await.expect("rebuild one call"));
    assert_eq!(
        projections_without_update_time(&db, &calls).await,
        incremental
    );
}

async fn a_rebuild_during_ingest_load_leaves_every_event_folded_exactly_once(db: TestDb) {
    let projector = Projector::new(db.store.clone(), Precedence::default(), 50, LEASE);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let projector = projector.clone();
        tokio::spawn(async move {
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            let poll = std::time::Duration::from_millis(5);
            projector
                .run(wake, poll, poll, async {
                    stopped.await.unwrap_or_default()
                })
                .await;
        })
    };
    let (calls, rebuilt) = tokio::join!(send_simulated_calls(&db, 60, 13), async {
        projector
            .rebuild(|_, _| {})
            .await
            .expect("rebuild under load")
    });
    assert!(rebuilt.calls <= 60);
    stop.send(()).expect("projector still running");
    running.await.expect("projector stopped");
    catch_up(&projector).await;
    let folded = assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await;
    let mut call_events = 0;
    for key in &calls {
        call_events += db.store.call_events(key).await.expect("read").len() as i64;
    }
    assert_eq!(
        folded, call_events,
        "each logged call event folded exactly once"
    );
}

/// A random call history (topic, payload second, tag) and the order its events arrive in:
/// indices into the history, shuffled, some repeated (redeliveries). Few distinct seconds, so
/// equal timestamps are common.
fn history_and_arrivals() -> impl Strategy<Value = (Vec<(usize, u32, &'static str)>, Vec<usize>)> {
    let spec = (
        0..CALL_TOPICS.len(),
        0..3u32,
        prop::sample::select(vec!["vip", "sales", "spam"]),
    );
    prop::collection::vec(spec, 1..12).prop_flat_map(|history| {
        let len = history.len();
        let redelivered = prop::collection::vec(0..len, 0..len);
        let arrivals = redelivered
            .prop_map(move |again| (0..len).chain(again).collect::<Vec<_>>())
            .prop_shuffle();
        (Just(history), arrivals)
    })
}

/// Event `n` of a history, for call `call`, as the receiver would append it.
fn history_event(call: &CallKey, n: usize, (topic, second, tag): (usize, u32, &str)) -> NewEvent {
    let at = format!("2026-02-10T09:00:0{second}Z");
    let data = json!({"id": call.as_str(), "call_id": call.as_str(), "tag": tag,
        "type": "INBOUND", "tags": [tag], "summary": format!("s{n}")});
    let body = envelope(CALL_TOPICS[topic], &at, data);
    NewEvent {
        webhook_id: WebhookId::parse(&format!("msg_{}_{n}", call.as_str())).expect("id"),
        webhook_timestamp: 0,
        received_at: EventTime::from_unix_micros(0),
        body_sha256: Sha256::digest(&body).into(),
        content: callfold_ingest::LinkingRules::default().read(&body),
        body,
    }
}

async fn random_histories_in_random_orders_project_like_a_fold_and_a_rebuild(db: TestDb) {
    let (runtime, store) = (tokio::runtime::Handle::current(), db.store.clone());
    let mut runner = TestRunner::new(ProptestConfig::with_cases(12));
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&history_and_arrivals(), |(history, arrivals)| {
        // Each case is a call of its own: cases share the database, not a projection.
        let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let call = CallKey::new(format!("cll_p{case}"));
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let projector = Projector::new(store.clone(), Precedence::default(), 3, LEASE);
                for n in arrivals {
                    let event = history_event(&call, n, history[n]);
                    store.append_batch(&[event]).await.expect("append");
                    catch_up(&projector).await;
                }
                let incremental = store
                    .projection(&call)
                    .await
                    .expect("read")
                    .expect("projected");
                assert_eq!(incremental.document, fold_from_scratch(&store, &call).await);
                assert!(projector.refold_call(&call).await.expect("rebuild"));
                let rebuilt = store
                    .projection(&call)
                    .await
                    .expect("read")
                    .expect("projected");
                assert_eq!(rebuilt.document, incremental.document);
                assert_eq!(rebuilt.late_events, incremental.late_events);
            })
        });
        Ok(())
    });
    result.expect("every random history projects consistently");
}

on_both_stores!(
    tag_added_before_call_completed_yields_a_tagged_completed_call,
    an_unknown_call_is_404,
    unlinked_call_events_are_kept_counted_and_listed,
    random_histories_in_random_orders_project_like_a_fold_and_a_rebuild,
    listing_pages_through_every_call_once_and_filters,
    as_of_returns_the_state_at_that_payload_time,
    a_bad_as_of_is_400_naming_the_parameter,
    events_come_in_effective_order_with_late_arrivals_marked,
    shuffled_duplicated_traffic_projects_exactly_like_a_fold_from_scratch,
    a_rebuild_reproduces_incremental_projections_byte_for_byte,
    a_rebuild_during_ingest_load_leaves_every_event_folded_exactly_once,
);
