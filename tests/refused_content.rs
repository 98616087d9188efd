//! Values the store cannot hold: a record carrying one is quarantined by the store while the rest
//! of its batch commits, alike on both stores.

mod support;

use callfold_store::{
    AppendOutcome, CallKey, CallLink, Content, EventTime, MAX_KEY_BYTES, NewEvent, Topic, WebhookId,
};
use sha2::{Digest, Sha256};
use support::TestDb;

fn event(id: &str, content: Content) -> NewEvent {
    let body = format!("{{\"the body of\":\"{id}\"}}").into_bytes();
    NewEvent {
        webhook_id: WebhookId::parse(id).expect("test id"),
        webhook_timestamp: 1_770_715_062,
        received_at: EventTime::from_unix_micros(1_770_715_062_000_001),
        body_sha256: Sha256::digest(&body).into(),
        body,
        content,
    }
}

fn usable(topic: &str, call_key: &str) -> Content {
    Content::Usable {
        topic: Topic::new(topic),
        event_time: EventTime::from_unix_micros(1_770_715_062_318_000),
        call: CallLink::Linked(CallKey::new(call_key)),
    }
}

async fn a_record_the_store_refuses_is_quarantined_and_the_rest_of_its_batch_commits(db: TestDb) {
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let refused = [
        ("msg_refused_nul", usable("call.completed", "cll_\u{0}")),
        ("msg_refused_long_call", usable("call.completed", &long)),
        ("msg_refused_long_topic", usable(&long, "cll_x")),
    ];
    let mut batch: Vec<NewEvent> = (0..20)
        .map(|n| {
            event(
                &format!("msg_{n:02}"),
                usable("call.completed", &format!("cll_{n}")),
            )
        })
        .collect();
    for (position, (id, content)) in [3, 11, 17].into_iter().zip(refused.iter()) {
        batch.insert(position, event(id, content.clone()));
    }
    // A retry of a refused record in the same batch is a duplicate of its quarantined copy.
    batch.push(event(
        "msg_refused_nul",
        usable("call.completed", "cll_\u{0}"),
    ));

    let outcomes = db
        .store
        .append_batch(&batch)
        .await
        .expect("no refusal fails the batch");

    assert_eq!(outcomes.len(), batch.len());
    for (event, outcome) in batch.iter().zip(&outcomes).take(batch.len() - 1) {
        let AppendOutcome::Appended { seq } = *outcome else {
            panic!("{}: {outcome:?}", event.webhook_id);
        };
        let logged = db
            .store
            .event_by_seq(seq)
            .await
            .expect("read")
            .expect("logged");
        assert_eq!(logged.webhook_id, event.webhook_id);
        let is_refused = event.webhook_id.as_str().starts_with("msg_refused");
        match logged.content.quarantine_reason() {
            Some(reason) => {
                assert!(is_refused, "{}: {reason}", event.webhook_id);
                assert!(
                    reason.starts_with("the store refused its content"),
                    "{reason}"
                );
                assert_eq!(logged.body, event.body);
            }
            None => assert!(!is_refused, "{} was stored usable", event.webhook_id),
        }
    }
    let first_copy = outcomes[batch
        .iter()
        .position(|e| e.webhook_id.as_str() == "msg_refused_nul")
        .expect("in batch")];
    let AppendOutcome::Appended { seq } = first_copy else {
        panic!("{first_copy:?}")
    };
    assert_eq!(
        outcomes.last(),
        Some(&AppendOutcome::Duplicate {
            seq,
            conflicting: false
        })
    );
    assert_eq!(
        db.store.queue_depth().await.expect("depth").calls,
        20,
        "the stored calls are marked"
    );
}

on_both_stores!(a_record_the_store_refuses_is_quarantined_and_the_rest_of_its_batch_commits);
