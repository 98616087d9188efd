//! The event log's contract, run against SQLite and PostgreSQL alike: dedup inside a batch,
//! conflicts told apart from retries, quarantined records kept, and no way to rewrite history.

mod support;

use callfold_store::{
    AppendOutcome, CallKey, CallLink, Content, EventTime, NewEvent, Store, StoredProjection, Topic,
    WebhookId,
};
use sha2::{Digest, Sha256};
use support::TestDb;

fn event(id: &str, body: &[u8], content: Content) -> NewEvent {
    NewEvent {
        webhook_id: WebhookId::parse(id).expect("test id"),
        webhook_timestamp: 1_770_715_062,
        received_at: EventTime::from_unix_micros(1_770_715_062_000_001),
        body: body.to_vec(),
        body_sha256: Sha256::digest(body).into(),
        content,
    }
}

fn usable(call: Option<&str>) -> Content {
    let call = call.map_or(CallLink::NotACall, |id| CallLink::Linked(CallKey::new(id)));
    Content::Usable {
        topic: Topic::new("call.completed"),
        event_time: EventTime::parse_rfc3339("2026-02-10T09:17:42.318123Z").expect("time"),
        call,
    }
}

async fn an_id_repeated_in_one_batch_is_appended_once(db: TestDb) {
    let outcomes = db
        .store
        .append_batch(&[
            event("msg_a", b"{1}", usable(Some("cll_1"))),
            event("msg_b", b"{2}", usable(None)),
            event("msg_a", b"{1}", usable(Some("cll_1"))),
        ])
        .await
        .expect("append");
    let AppendOutcome::Appended { seq: first } = outcomes[0] else {
        panic!("{outcomes:?}")
    };
    let AppendOutcome::Appended { seq: second } = outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert!(second > first, "seq grows in append order");
    assert_eq!(
        outcomes[2],
        AppendOutcome::Duplicate {
            seq: first,
            conflicting: false
        }
    );
    assert_eq!(db.store.log_len().await.expect("len"), 2);
}

async fn a_large_batch_keeps_arrival_order_and_dedup_across_statements(db: TestDb) {
    // More events than one INSERT statement carries, with repeats from the first statement
    // arriving in a later one.
    let mut batch: Vec<NewEvent> = (0..600)
        .map(|n| event(&format!("msg_{n}"), b"{}", usable(None)))
        .collect();
    batch.push(event("msg_5", b"{other}", usable(None)));
    batch.push(event("msg_300", b"{}", usable(None)));
    let outcomes = db.store.append_batch(&batch).await.expect("append");
    let seqs: Vec<i64> = outcomes[..600]
        .iter()
        .map(|outcome| match outcome {
            AppendOutcome::Appended { seq } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seq follows batch order"
    );
    assert_eq!(
        outcomes[600],
        AppendOutcome::Duplicate {
            seq: seqs[5],
            conflicting: true
        }
    );
    assert_eq!(
        outcomes[601],
        AppendOutcome::Duplicate {
            seq: seqs[300],
            conflicting: false
        }
    );
    assert_eq!(db.store.log_len().await.expect("len"), 600);
}

async fn a_reused_id_with_another_body_is_a_conflicting_duplicate_and_keeps_the_first(db: TestDb) {
    let first = db
        .store
        .append_batch(&[event("msg_a", b"first", usable(None))])
        .await
        .expect("1");
    let again = db
        .store
        .append_batch(&[event("msg_a", b"second", usable(None))])
        .await
        .expect("2");
    let AppendOutcome::Appended { seq } = first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(
        again,
        [AppendOutcome::Duplicate {
            seq,
            conflicting: true
        }]
    );
    let logged = db
        .store
        .event_by_webhook_id(&WebhookId::parse("msg_a").expect("id"))
        .await;
    assert_eq!(logged.expect("read").expect("present").body, b"first");
}

async fn every_field_reads_back_as_written(db: TestDb) {
    let written = [
        event("msg_usable", b"{\"x\":1}", usable(Some("cll_1"))),
        event(
            "msg_bad",
            b"\xff\x00not json",
            Content::Quarantined {
                reason: "not JSON".into(),
            },
        ),
        event(
            "msg_unlinked",
            b"{}",
            Content::Usable {
                topic: Topic::new("call.received"),
                event_time: EventTime::from_unix_micros(5),
                call: CallLink::Unlinked,
            },
        ),
    ];
    let outcomes = db.store.append_batch(&written).await.expect("append");
    for (event, outcome) in written.iter().zip(outcomes) {
        let AppendOutcome::Appended { seq } = outcome else {
            panic!("{outcome:?}")
        };
        let logged = db
            .store
            .event_by_webhook_id(&event.webhook_id)
            .await
            .expect("read")
            .expect("present");
        assert_eq!(logged.seq, seq);
        assert_eq!(logged.webhook_id, event.webhook_id);
        assert_eq!(logged.webhook_timestamp, event.webhook_timestamp);
        assert_eq!(logged.received_at, event.received_at);
        assert_eq!(logged.body, event.body);
        assert_eq!(logged.body_sha256, event.body_sha256);
        assert_eq!(logged.content, event.content);
    }
}

async fn the_log_refuses_updates_and_deletes(db: TestDb) {
    db.store
        .append_batch(&[event("msg_a", b"{}", usable(None))])
        .await
        .expect("append");
    let statements = ["UPDATE events SET body = body", "DELETE FROM events"];
    for statement in statements {
        let refused = match &db.store {
            Store::Sqlite(pool) => sqlx::query(statement).execute(pool).await.is_err(),
            Store::Postgres(pool) => sqlx::query(statement).execute(pool).await.is_err(),
        };
        assert!(refused, "{statement} was allowed");
    }
    assert_eq!(db.store.log_len().await.expect("len"), 1);
}

async fn commits_are_configured_to_reach_the_disk_before_returning(db: TestDb) {
    match &db.store {
        Store::Sqlite(pool) => {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .expect("mode");
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .expect("sync");
            assert_eq!(
                (mode.as_str(), synchronous),
                ("wal", 2),
                "WAL with synchronous=FULL"
            );
        }
        Store::Postgres(pool) => {
            let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(pool)
                .await
                .expect("show");
            assert_eq!(setting, "on");
        }
    }
}

fn projection(call: &str, document: &str) -> StoredProjection {
    StoredProjection {
        call_key: CallKey::new(call),
        document: document.to_owned(),
        last_event_time: EventTime::from_unix_micros(1),
        last_rank: 0,
        last_webhook_id: WebhookId::parse("msg_a").expect("id"),
        last_seq: 1,
        late_events: 0,
        updated_at: EventTime::from_unix_micros(2),
    }
}

async fn projections_commit_only_from_the_checkpoint_they_were_folded_from(db: TestDb) {
    let store = &db.store;
    let first = projection("cll_1", "{\"v\":1}");
    assert!(
        store
            .commit_projections("calls", 0, 5, std::slice::from_ref(&first))
            .await
            .expect("commit")
    );
    assert_eq!(store.checkpoint("calls").await.expect("read"), 5);
    // A second writer that read the checkpoint at 0 must not overwrite or move anything.
    let stale = projection("cll_1", "{\"v\":2}");
    assert!(
        !store
            .commit_projections("calls", 0, 9, &[stale])
            .await
            .expect("commit")
    );
    assert_eq!(store.checkpoint("calls").await.expect("read"), 5);
    let kept = store
        .projection(&CallKey::new("cll_1"))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(kept, first);
}

async fn migrating_again_changes_nothing(db: TestDb) {
    db.store
        .append_batch(&[event("msg_a", b"{}", usable(None))])
        .await
        .expect("append");
    db.store.migrate().await.expect("second migration run");
    assert_eq!(db.store.log_len().await.expect("len"), 1);
}

on_both_stores!(
    an_id_repeated_in_one_batch_is_appended_once,
    a_large_batch_keeps_arrival_order_and_dedup_across_statements,
    a_reused_id_with_another_body_is_a_conflicting_duplicate_and_keeps_the_first,
    every_field_reads_back_as_written,
    the_log_refuses_updates_and_deletes,
    migrating_again_changes_nothing,
    projections_commit_only_from_the_checkpoint_they_were_folded_from,
    commits_are_configured_to_reach_the_disk_before_returning,
);
