//! `POST /webhooks/allo` through the real HTTP stack, on SQLite and PostgreSQL: one test per row
//! of the answer table, that rejected deliveries store nothing, exact dedup under concurrency,
//! and simulated Allo traffic end to end.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use callfold_simulate::SimulateOptions;
use callfold_store::{CallKey, CallLink, Content, WebhookId};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;
use support::{
    Answer, ROTATED_SECRET, SECRET, TestDb, envelope, start_receiver, start_service, test_settings,
    unix_now, wait_until,
};

const COMPLETED_AT: &str = "2026-02-10T09:17:42.318Z";

fn call_completed(call_id: &str) -> Vec<u8> {
    envelope(
        "call.completed",
        COMPLETED_AT,
        json!({"id": call_id, "result": "ANSWERED"}),
    )
}

async fn logged(db: &TestDb, webhook_id: &str) -> Option<callfold_store::LoggedEvent> {
    let id = WebhookId::parse(webhook_id).expect("test id");
    db.store.event_by_webhook_id(&id).await.expect("read log")
}

fn assert_error(answer: &Answer, status: u16, mentions: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let message = answer.json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer:?}"));
    assert!(
        message.contains(mentions),
        "{message:?} does not mention {mentions:?}"
    );
}

async fn a_new_message_is_accepted_and_logged_with_its_index_fields(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = call_completed("cll_7QvRt2");
    let answer = receiver.deliver("msg_new", &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["status"], "accepted");
    let event = logged(&db, "msg_new").await.expect("logged");
    assert_eq!(event.seq, answer.seq());
    assert_eq!(event.body, body);
    let Content::Usable {
        topic,
        event_time,
        call,
    } = event.content
    else {
        panic!("{:?}", event.content)
    };
    assert_eq!(topic.as_str(), "call.completed");
    assert_eq!(event_time.to_string(), "2026-02-10T09:17:42.318000Z");
    assert_eq!(call, CallLink::Linked(CallKey::new("cll_7QvRt2")));
}

async fn a_retry_answers_duplicate_with_the_first_seq(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = call_completed("cll_1");
    let first = receiver.deliver("msg_retry", &body).await;
    let retry = receiver.deliver("msg_retry", &body).await;
    assert_eq!(
        (retry.status, &retry.json["status"]),
        (200, &json!("duplicate"))
    );
    assert_eq!(retry.seq(), first.seq());
    assert_eq!(db.store.log_len().await.expect("len"), 1);
}

async fn a_reused_id_with_another_body_keeps_the_first_copy(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let first = receiver
        .deliver("msg_reused", &call_completed("cll_1"))
        .await;
    let other = receiver
        .deliver("msg_reused", &call_completed("cll_2"))
        .await;
    assert_eq!(
        other.json,
        json!({"status": "duplicate", "seq": first.seq()})
    );
    assert_eq!(
        logged(&db, "msg_reused").await.expect("logged").body,
        call_completed("cll_1")
    );
}

async fn authentic_but_unusable_bodies_are_quarantined_durably(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let bodies: [(&str, &[u8]); 3] = [
        ("msg_not_json", b"<xml/>"),
        (
            "msg_no_topic",
            br#"{"timestamp":"2026-02-10T09:17:42Z","data":{}}"#,
        ),
        (
            "msg_bad_time",
            br#"{"topic":"call.completed","timestamp":"10/02/2026"}"#,
        ),
    ];
    for (id, body) in bodies {
        let answer = receiver.deliver(id, body).await;
        assert_eq!(answer.json["status"], "quarantined", "{id}: {answer:?}");
        let event = logged(&db, id).await.expect("kept");
        assert_eq!(event.seq, answer.seq());
        assert_eq!(event.body, body);
        assert!(matches!(event.content, Content::Quarantined { .. }), "{id}");
    }
}

async fn unknown_topics_are_accepted(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = envelope("voicemail.transcribed", COMPLETED_AT, json!({"id": "vm_1"}));
    let answer = receiver.deliver("msg_unknown_topic", &body).await;
    assert_eq!(answer.json["status"], "accepted");
}

async fn a_missing_or_malformed_header_is_400_naming_it_and_stores_nothing(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = call_completed("cll_1");
    let now = unix_now().to_string();
    let good = support::signature(SECRET, "msg_h", unix_now(), &body);
    let cases: [(&str, [Option<&str>; 3]); 6] = [
        ("webhook-id", [None, Some(&now), Some(&good)]),
        ("webhook-timestamp", [Some("msg_h"), None, Some(&good)]),
        ("webhook-signature", [Some("msg_h"), Some(&now), None]),
        (
            "webhook-id",
            [Some(&"m".repeat(300)), Some(&now), Some(&good)],
        ),
        (
            "webhook-timestamp",
            [Some("msg_h"), Some("-1"), Some(&good)],
        ),
        (
            "webhook-signature",
            [Some("msg_h"), Some(&now), Some("v1,c2hvcnQ=")],
        ),
    ];
    for (named, [id, timestamp, signature]) in cases {
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ];
        let answer = receiver.post_raw(&headers, body.clone()).await;
        assert_error(&answer, 400, named);
    }
    assert_eq!(db.store.log_len().await.expect("len"), 0);
}

async fn a_bad_signature_or_timestamp_is_401_and_stores_nothing(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = call_completed("cll_1");
    let wrong_secret = receiver
        .deliver_signed_by(ROTATED_SECRET, "msg_s", unix_now(), &body)
        .await;
    assert_error(&wrong_secret, 401, "signature");
    for skew in [-301, 301] {
        let skewed = receiver
            .deliver_signed_by(SECRET, "msg_s", unix_now() + skew, &body)
            .await;
        assert_error(&skewed, 401, "webhook-timestamp");
    }
    let secret_text = SECRET.trim_start_matches("whsec_");
    assert!(!wrong_secret.json.to_string().contains(secret_text));
    assert_eq!(db.store.log_len().await.expect("len"), 0);
}

async fn any_of_the_rotated_secrets_is_accepted(db: TestDb) {
    let both = support::test_settings_accepting(&format!("{SECRET}, {ROTATED_SECRET}"));
    let receiver = start_receiver(&db.store, both).await;
    for (id, secret) in [("msg_old", SECRET), ("msg_new", ROTATED_SECRET)] {
        let answer = receiver
            .deliver_signed_by(secret, id, unix_now(), &call_completed(id))
            .await;
        assert_eq!(answer.json["status"], "accepted", "{id}");
    }
}

async fn a_delivery_signed_by_an_independent_implementation_is_accepted(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = call_completed("cll_interop");
    let timestamp = unix_now();
    let signature = standardwebhooks::Webhook::new(SECRET)
        .expect("independent signer")
        .sign("msg_interop", timestamp, &body)
        .expect("signs");
    let timestamp = timestamp.to_string();
    let headers = [
        ("webhook-id", Some("msg_interop")),
        ("webhook-timestamp", Some(timestamp.as_str())),
        ("webhook-signature", Some(signature.as_str())),
    ];
    let answer = receiver.post_raw(&headers, body).await;
    assert_eq!(answer.json["status"], "accepted", "{answer:?}");
}

/// A signed call.completed body of exactly `len` bytes.
fn body_of_exactly(len: usize) -> Vec<u8> {
    let empty = envelope("call.completed", COMPLETED_AT, json!({"id": ""}));
    let padding = "p".repeat(len - empty.len() - r#","pad":"""#.len());
    let body = envelope(
        "call.completed",
        COMPLETED_AT,
        json!({"id": "", "pad": padding}),
    );
    assert_eq!(body.len(), len);
    body
}

async fn a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let at_limit = receiver
        .deliver("msg_at_limit", &body_of_exactly(1_048_576))
        .await;
    assert_eq!(at_limit.json["status"], "accepted", "{at_limit:?}");
    let over = receiver
        .deliver("msg_over_limit", &body_of_exactly(1_048_577))
        .await;
    assert_error(&over, 413, "1048576");
    assert!(logged(&db, "msg_over_limit").await.is_none());
}

async fn an_unavailable_store_is_503_with_retry_after(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    db.store.close().await;
    let answer = receiver.deliver("msg_down", &call_completed("cll_1")).await;
    assert_error(&answer, 503, "unavailable");
    assert!(answer.retry_after.is_some(), "{answer:?}");
}

async fn a_full_commit_queue_is_503_with_retry_after_and_nothing_waits_unbounded(db: TestDb) {
    // The bound on the wait: one event can be committing and one waiting; the others wait for
    // room at most the commit deadline. With the log locked throughout, every delivery must be
    // answered 503 while it stays locked (a wait without a bound would never answer, and so
    // never say the queue is full): those that never found room because the queue is full,
    // the others because their commit did not answer in time. None of them was stored.
    let mut tiny = test_settings();
    tiny.receiver.commit_queue = 1;
    tiny.receiver.commit_batch = 1;
    tiny.commit_timeout = Duration::from_millis(500);
    let receiver = start_receiver(&db.store, tiny).await;
    let lock = db.hold_write_lock().await;
    let answers: Vec<Answer> = (0..20)
        .map(|n| {
            let receiver = &receiver;
            async move {
                receiver
                    .deliver(&format!("msg_q{n}"), &call_completed("cll_1"))
                    .await
            }
        })
        .collect::<FuturesUnordered<_>>()
        .collect()
        .await;
    lock.release().await;
    assert!(
        answers
            .iter()
            .all(|a| a.status == 503 && a.retry_after.is_some()),
        "{answers:?}"
    );
    let refused_for_room = answers
        .iter()
        .filter(|a| {
            a.json["error"]
                .as_str()
                .unwrap_or("")
                .contains("queue is full")
        })
        .count();
    assert!(refused_for_room > 0, "{answers:?}");
    assert_eq!(db.store.log_len().await.expect("len"), 0);
}

/// A commit held up for less than the commit deadline (a rebuild's swap batch, a checkpoint)
/// costs the deliveries behind it time, not a 503, however many arrive meanwhile. The service
/// is a process of its own, so that its count of waiting deliveries is its alone.
async fn deliveries_beyond_the_queue_wait_out_a_held_commit_and_are_all_accepted(db: TestDb) {
    let service = start_service(
        "ingest",
        &db.url,
        &[
            ("CALLFOLD_COMMIT_QUEUE", "1"),
            ("CALLFOLD_COMMIT_BATCH", "1"),
            ("CALLFOLD_COMMIT_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let receiver = service.receiver();
    let lock = db.hold_write_lock().await;
    let deliveries: Vec<_> = (0..20)
        .map(|n| {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                receiver
                    .deliver(&format!("msg_wait{n}"), &call_completed("cll_1"))
                    .await
            })
        })
        .collect();
    wait_until("all 20 deliveries wait for the held commit", 60, || async {
        service
            .metrics()
            .await
            .lines()
            .any(|line| line == "callfold_deliveries_waiting 20")
    })
    .await;
    lock.release().await;
    for delivery in deliveries {
        let answer = delivery.await.expect("the delivery task");
        assert_eq!(answer.json["status"], "accepted", "{answer:?}");
    }
    assert_eq!(db.store.log_len().await.expect("len"), 20);
}

async fn fifty_concurrent_deliveries_of_one_new_id_store_one_record(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let body = call_completed("cll_1");
    let answers: Vec<Answer> = (0..50)
        .map(|_| receiver.deliver("msg_fifty", &body))
        .collect::<FuturesUnordered<_>>()
        .collect()
        .await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let accepted = answers
        .iter()
        .filter(|a| a.json["status"] == "accepted")
        .count();
    assert_eq!(accepted, 1);
    let seqs: HashSet<i64> = answers.iter().map(Answer::seq).collect();
    assert_eq!(seqs.len(), 1);
    assert_eq!(db.store.log_len().await.expect("len"), 1);
}

async fn simulated_traffic_is_logged_once_per_message_at_the_answered_seq(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let options = SimulateOptions {
        urls: vec![receiver.url.clone()],
        calls: 40,
        concurrency: 16,
        duplicates: 0.3,
        shuffle: true,
        seed: 3,
    };
    let secrets = callfold_ingest::WebhookSecrets::parse(SECRET).expect("secret");
    let report = callfold_simulate::run(&options, secrets.iter().next().expect("one")).await;
    let counts = report.counts();
    let distinct: HashSet<&str> = report
        .answers
        .iter()
        .map(|a| a.webhook_id.as_str())
        .collect();
    assert_eq!(
        counts.get("accepted").copied(),
        Some(distinct.len()),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("duplicate").copied(),
        Some(report.answers.len() - distinct.len())
    );
    assert_eq!(
        db.store.log_len().await.expect("len"),
        distinct.len() as i64
    );
    for answer in &report.answers {
        let event = logged(&db, &answer.webhook_id).await.expect("logged");
        assert_eq!(Some(event.seq), answer.seq, "{}", answer.webhook_id);
    }
}

async fn seq_grows_in_arrival_order(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let mut previous = 0;
    for n in 0..5 {
        let seq = receiver
            .deliver(&format!("msg_order{n}"), &call_completed("cll_1"))
            .await
            .seq();
        assert!(seq > previous, "{seq} after {previous}");
        previous = seq;
    }
}

on_both_stores!(
    a_new_message_is_accepted_and_logged_with_its_index_fields,
    a_retry_answers_duplicate_with_the_first_seq,
    a_reused_id_with_another_body_keeps_the_first_copy,
    authentic_but_unusable_bodies_are_quarantined_durably,
    unknown_topics_are_accepted,
    a_missing_or_malformed_header_is_400_naming_it_and_stores_nothing,
    a_bad_signature_or_timestamp_is_401_and_stores_nothing,
    any_of_the_rotated_secrets_is_accepted,
    a_delivery_signed_by_an_independent_implementation_is_accepted,
    a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413,
    an_unavailable_store_is_503_with_retry_after,
    a_full_commit_queue_is_503_with_retry_after_and_nothing_waits_unbounded,
    deliveries_beyond_the_queue_wait_out_a_held_commit_and_are_all_accepted,
    fifty_concurrent_deliveries_of_one_new_id_store_one_record,
    simulated_traffic_is_logged_once_per_message_at_the_answered_seq,
    seq_grows_in_arrival_order,
);
