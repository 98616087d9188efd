//! Values the store cannot hold: a delivery carrying one gets the same final answer on both
//! stores (kept, quarantined with a reason) and never fails the deliveries committed with it;
//! a record that reaches the store anyway, past the receiver's checks, is quarantined there
//! while the rest of its batch commits (and its sender is answered `quarantined`); a failed
//! COMMIT is never taken for a refusal; a batch that fails after part of it committed wakes the
//! projector; and no body limit lets in a body the store cannot take.

mod support;

use callfold_store::{
    AppendOutcome, CallKey, CallLink, Content, EventTime, MAX_BODY_BYTES, MAX_KEY_BYTES, NewEvent,
    Store, Topic, WebhookId,
};
use std::sync::Arc;
use std::time::Duration;

use callfold_ingest::{CommitQueue, LinkingRules, Quarantine, QuarantineError};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{TestDb, envelope, start_receiver, test_settings};
use tokio::sync::Notify;

const VALID_DELIVERIES: usize = 48;

/// Bodies the store cannot hold as they are, each with a part of the reason it must be given.
fn poisoned_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let long_id = "c".repeat(MAX_KEY_BYTES + 1);
    let at = "2026-02-10T09:17:42.318Z";
    vec![
        (
            "msg_nul_call_id",
            envelope("call.completed", at, json!({"id": "cll_\u{0}_1"})),
            "call id contains U+0000",
        ),
        (
            "msg_nul_topic",
            envelope("call.completed\u{0}", at, json!({"id": "cll_2"})),
            "`topic` contains U+0000",
        ),
        (
            "msg_long_call_id",
            envelope("tag.added", at, json!({"call_id": long_id, "tag": "x"})),
            "call id is 1025 bytes long",
        ),
        (
            "msg_long_topic",
            envelope(&"t".repeat(MAX_KEY_BYTES + 1), at, json!({})),
            "`topic` is 1025 bytes long",
        ),
    ]
}

async fn a_delivery_the_store_cannot_hold_is_quarantined_and_its_batch_is_stored(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let valid: Vec<(String, Vec<u8>)> = (0..VALID_DELIVERIES)
        .map(|n| {
            let body = envelope(
                "call.completed",
                "2026-02-10T09:17:42.318Z",
                json!({"id": format!("cll_{n}")}),
            );
            (format!("msg_valid_{n}"), body)
        })
        .collect();
    let poisoned = poisoned_bodies();
    let mut sends = tokio::task::JoinSet::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(valid.len() + poisoned.len()));
    let all = valid
        .iter()
        .map(|(id, body)| (id.clone(), body.clone()))
        .chain(
            poisoned
                .iter()
                .map(|(id, body, _)| ((*id).to_owned(), body.clone())),
        );
    for (id, body) in all {
        let (receiver, barrier) = (receiver.clone(), barrier.clone());
        sends.spawn(async move {
            barrier.wait().await;
            (id.clone(), receiver.deliver(&id, &body).await)
        });
    }
    let answers: std::collections::HashMap<String, support::Answer> =
        sends.join_all().await.into_iter().collect();

    for (id, _) in &valid {
        let answer = &answers[id];
        assert_eq!(
            (answer.status, answer.json["status"].as_str()),
            (200, Some("accepted")),
            "{id}: {answer:?}"
        );
        let logged = db
            .store
            .event_by_webhook_id(&WebhookId::parse(id).expect("id"))
            .await
            .expect("read");
        assert!(
            logged.is_some_and(|e| e.content.quarantine_reason().is_none()),
            "{id} is usable in the log"
        );
    }
    for (id, body, reason) in &poisoned {
        let answer = &answers[*id];
        assert_eq!(
            (answer.status, answer.json["status"].as_str()),
            (200, Some("quarantined")),
            "{id}: {answer:?}"
        );
        let logged = db
            .store
            .event_by_seq(answer.seq())
            .await
            .expect("read")
            .expect("logged");
        let kept_reason = logged.content.quarantine_reason().expect("quarantined");
        assert!(kept_reason.contains(reason), "{id}: {kept_reason}");
        assert_eq!(&logged.body, body, "{id}: the raw body is kept");

        let retry = receiver.deliver(id, body).await;
        assert_eq!(
            (retry.status, retry.json["status"].as_str()),
            (200, Some("duplicate")),
            "{id}"
        );
        assert_eq!(retry.seq(), answer.seq());
    }
    let (_, quarantined) = db.store.quarantined_events(0, 100).await.expect("list");
    assert_eq!(quarantined, poisoned.len() as i64);
}

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
        let is_refused = event.webhook_id.as_str().starts_with("msg_refused");
        let seq = match *outcome {
            AppendOutcome::Quarantined { seq } if is_refused => seq,
            AppendOutcome::Appended { seq } if !is_refused => seq,
            _ => panic!("{}: {outcome:?}", event.webhook_id),
        };
        let logged = db
            .store
            .event_by_seq(seq)
            .await
            .expect("read")
            .expect("logged");
        assert_eq!(logged.webhook_id, event.webhook_id);
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
    let AppendOutcome::Quarantined { seq } = first_copy else {
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

async fn a_delivery_the_store_refuses_past_the_receivers_checks_is_answered_quarantined(
    db: TestDb,
) {
    let (queue, committer) = CommitQueue::start(
        db.store.clone(),
        16,
        16,
        Duration::from_secs(10),
        Arc::new(Notify::new()),
    );
    let accepted = queue
        .append(event("msg_fine", usable("call.completed", "cll_fine")))
        .await
        .expect("appended");
    let refused = queue
        .append(event("msg_refused", usable("call.completed", "cll_\u{0}")))
        .await
        .expect("a refusal is a final answer");
    assert!(
        matches!(accepted, AppendOutcome::Appended { .. }),
        "{accepted:?}"
    );
    let AppendOutcome::Quarantined { seq } = refused else {
        panic!("answered {refused:?}, not quarantined")
    };
    let logged = db
        .store
        .event_by_seq(seq)
        .await
        .expect("read")
        .expect("kept");
    assert!(logged.content.quarantine_reason().is_some());
    drop(queue);
    committer.await.expect("committer ends");
}

async fn a_redrive_the_store_kept_quarantined_is_still_unusable(db: TestDb) {
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        json!({"id": "cll_1"}),
    );
    let kept = NewEvent {
        body_sha256: Sha256::digest(&body).into(),
        body,
        content: Content::Quarantined {
            reason: "no call id".to_owned(),
        },
        ..event("msg_kept", usable("call.completed", "cll_1"))
    };
    let outcomes = db
        .store
        .append_batch(std::slice::from_ref(&kept))
        .await
        .expect("append");
    let AppendOutcome::Appended { seq } = outcomes[0] else {
        panic!("{outcomes:?}")
    };
    // An earlier re-drive of it, which the store refused and so kept quarantined.
    let earlier_redrive = NewEvent {
        webhook_id: WebhookId::parse(&format!("redrive:{seq}")).expect("id"),
        content: Content::Quarantined {
            reason: "the store refused its content (SQLite result code 18)".to_owned(),
        },
        ..kept
    };
    db.store
        .append_batch(&[earlier_redrive])
        .await
        .expect("append");

    let quarantine = Quarantine::new(
        db.store.clone(),
        LinkingRules::default(),
        Duration::from_secs(10),
    );
    let redriven = quarantine.redrive(seq).await;

    assert!(
        matches!(&redriven, Err(QuarantineError::StillUnusable { seq: of, reason })
            if *of == seq && reason.starts_with("the store refused its content")),
        "{redriven:?}"
    );
}

/// A COMMIT that fails with a code a row statement could also raise (here 54000, which a full
/// NOTIFY queue raises at COMMIT) fails the batch once, as unavailable: it is not taken for a
/// refused record and the batch is not split into ever smaller transactions.
#[tokio::test]
async fn a_commit_the_database_fails_is_not_taken_for_a_refused_record() {
    let db = TestDb::postgres().await;
    let Store::Postgres(pools) = &db.store else {
        unreachable!("a PostgreSQL test store")
    };
    let pool = &pools.writer;
    // A deferred constraint trigger runs at COMMIT; the sequence counts the commits tried, as
    // its increments survive the rollbacks.
    for statement in [
        "CREATE SEQUENCE commits_tried",
        "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             PERFORM nextval('commits_tried');
             RAISE EXCEPTION 'full' USING ERRCODE = '54000';
         END $$",
        "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON events
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()",
    ] {
        sqlx::query(statement).execute(pool).await.expect("set up");
    }
    let batch: Vec<NewEvent> = (0..8)
        .map(|n| {
            event(
                &format!("msg_{n}"),
                usable("call.completed", &format!("cll_{n}")),
            )
        })
        .collect();

    let appended = db.store.append_batch(&batch).await;

    let error = appended.expect_err("the commit fails");
    assert_eq!(error.refused_content(), None, "{error}");
    let tried: i64 = sqlx::query_scalar("SELECT last_value FROM commits_tried")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(tried, 1, "commits tried");
}

/// A batch that fails after a split committed part of it (here: one record refused, so the
/// batch is halved, and a later part failing for another reason) wakes the projector, as the
/// committed part may need folding; its senders are answered 503, and their retries duplicate.
#[tokio::test]
async fn a_batch_that_fails_after_part_of_it_committed_wakes_the_projector() {
    let db = TestDb::postgres().await;
    let Store::Postgres(pools) = &db.store else {
        unreachable!("a PostgreSQL test store")
    };
    let pool = &pools.writer;
    for statement in [
        "CREATE FUNCTION fail_msg_c() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.webhook_id = 'msg_c' THEN
                 RAISE EXCEPTION 'unavailable' USING ERRCODE = 'XX000';
             END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER fail_msg_c BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION fail_msg_c()",
    ] {
        sqlx::query(statement).execute(pool).await.expect("set up");
    }
    let appended = Arc::new(Notify::new());
    let (queue, committer) = CommitQueue::start(
        db.store.clone(),
        16,
        16,
        Duration::from_secs(10),
        Arc::clone(&appended),
    );

    // One batch: on this single-threaded runtime the committer runs only once all three wait.
    // Halved at msg_b's refusal, it commits [msg_a] before [msg_b, msg_c] fails.
    let answers = tokio::join!(
        queue.append(event("msg_a", usable("call.completed", "cll_a"))),
        queue.append(event("msg_b", usable("call.completed", "cll_\u{0}"))),
        queue.append(event("msg_c", usable("call.completed", "cll_c"))),
    );

    assert!(answers.0.is_err() && answers.2.is_err(), "{answers:?}");
    let msg_a = WebhookId::parse("msg_a").expect("id");
    let stored = db.store.event_by_webhook_id(&msg_a).await.expect("read");
    assert!(stored.is_some(), "the first half was committed");
    tokio::time::timeout(Duration::from_secs(5), appended.notified())
        .await
        .expect("the projector is woken");
    drop(queue);
    committer.await.expect("committer ends");
}

#[tokio::test]
async fn a_body_limit_above_what_the_store_takes_is_refused_at_start() {
    let folder = tempfile::tempdir().expect("temp dir");
    let check = |max_body: usize| {
        tokio::process::Command::new(support::CALLFOLD)
            .current_dir(folder.path())
            .args(["config", "check"])
            .env("CALLFOLD_MAX_BODY", max_body.to_string())
            .env("CALLFOLD_WEBHOOK_SECRETS", support::SECRET)
            .output()
    };
    assert!(check(MAX_BODY_BYTES).await.expect("runs").status.success());
    let refused = check(MAX_BODY_BYTES + 1).await.expect("runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--max-body"),
        "{said}"
    );
}

on_both_stores!(
    a_delivery_the_store_cannot_hold_is_quarantined_and_its_batch_is_stored,
    a_record_the_store_refuses_is_quarantined_and_the_rest_of_its_batch_commits,
    a_delivery_the_store_refuses_past_the_receivers_checks_is_answered_quarantined,
    a_redrive_the_store_kept_quarantined_is_still_unusable,
);
