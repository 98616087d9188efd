//! Per-call projections on SQLite and PostgreSQL: deliveries go through the real receiver, the
//! projector folds the log, and the query API answers; the result must not depend on arrival
//! order, duplicates or batch boundaries.

mod support;

use std::collections::BTreeSet;

use callfold_projector::{FoldEvent, Precedence, Projector, fold};
use callfold_simulate::SimulateOptions;
use callfold_store::{CallKey, Content, Store, WebhookId};
use serde_json::{Value, json};
use support::{ReceiverConfig, SECRET, TestDb, envelope, serve_on_loopback, start_receiver};

/// Runs `projector` until it has folded the whole log.
async fn catch_up(projector: &Projector) {
    while projector.fold_next_batch().await.expect("fold a batch") > 0 {}
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("query API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// The document of `call_key` folded from scratch from every one of its logged events.
async fn fold_from_scratch(store: &Store, call_key: &CallKey) -> String {
    let precedence = Precedence::default();
    let events = store
        .call_events_up_to(call_key, i64::MAX)
        .await
        .expect("read call");
    let folded = events
        .iter()
        .filter_map(|event| FoldEvent::from_logged(&precedence, event).map(|(_, folded)| folded))
        .collect();
    serde_json::to_string(&fold(call_key.as_str(), folded)).expect("serializes")
}

async fn tag_added_before_call_completed_yields_a_tagged_completed_call(db: TestDb) {
    let receiver = start_receiver(&db.store, ReceiverConfig::default()).await;
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
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100);
    receiver.deliver("msg_tag_first", &tag).await;
    catch_up(&projector).await;
    receiver.deliver("msg_completed_late", &completed).await;
    catch_up(&projector).await;

    let api = serve_on_loopback(callfold_projector::router(db.store.clone())).await;
    let (status, call) = get_json(&format!("{api}/v1/calls/cll_9")).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["direction"], "inbound");
    assert_eq!(call["tags"], json!(["vip"]));
    assert_eq!(call["event_count"], 2);
    assert_eq!(call["first_event_at"], "2026-02-10T09:17:42.318000Z");
    assert_eq!(call["meta"]["late_events"], 1);
}

async fn an_unknown_call_is_404(db: TestDb) {
    let api = serve_on_loopback(callfold_projector::router(db.store.clone())).await;
    let (status, body) = get_json(&format!("{api}/v1/calls/cll_nobody")).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("cll_nobody")
    );
}

async fn shuffled_duplicated_traffic_projects_exactly_like_a_fold_from_scratch(db: TestDb) {
    let receiver = start_receiver(&db.store, ReceiverConfig::default()).await;
    let options = SimulateOptions {
        url: receiver.url.clone(),
        calls: 30,
        concurrency: 8,
        duplicates: 0.3,
        shuffle: true,
        seed: 11,
    };
    let secrets = callfold_ingest::WebhookSecrets::parse(SECRET).expect("secret");
    let report = callfold_simulate::run(&options, secrets.iter().next().expect("one")).await;
    // Small batches, so late events and re-folds cross batch boundaries.
    catch_up(&Projector::new(db.store.clone(), Precedence::default(), 7)).await;

    let mut calls = BTreeSet::new();
    for answer in &report.answers {
        let id = WebhookId::parse(&answer.webhook_id).expect("id");
        let event = db
            .store
            .event_by_webhook_id(&id)
            .await
            .expect("read")
            .expect("logged");
        if let Content::Usable {
            call_key: Some(call_key),
            ..
        } = event.content
        {
            calls.insert(call_key.as_str().to_owned());
        }
    }
    assert_eq!(calls.len(), 30);
    for call in calls {
        let key = CallKey::new(call);
        let projection = db
            .store
            .projection(&key)
            .await
            .expect("read")
            .expect("projected");
        assert_eq!(
            projection.document,
            fold_from_scratch(&db.store, &key).await,
            "{key:?}"
        );
    }
}

on_both_stores!(
    tag_added_before_call_completed_yields_a_tagged_completed_call,
    an_unknown_call_is_404,
    shuffled_duplicated_traffic_projects_exactly_like_a_fold_from_scratch,
);
