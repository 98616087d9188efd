//! The store's contract, run against SQLite and PostgreSQL alike: dedup inside a batch,
//! conflicts told apart from retries, quarantined records kept, no way to rewrite history, and
//! the fold queue's marks, claims, leases and fencing.

mod support;

use std::time::Duration;

use callfold_store::{
    AppendOutcome, CallKey, CallLink, ClaimedCalls, Content, EventTime, NewEvent, QueueSweep,
    Settled, Store, StoredProjection, Topic, WebhookId,
};
use sha2::{Digest, Sha256};
use support::{LEASE, TestDb};

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

async fn a_large_batch_dedups_across_statements(db: TestDb) {
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
    let distinct: std::collections::BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 600, "one record per distinct id");
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
            Store::Sqlite(pools) => sqlx::query(statement).execute(&pools.writer).await.is_err(),
            Store::Postgres(pools) => sqlx::query(statement).execute(&pools.writer).await.is_err(),
        };
        assert!(refused, "{statement} was allowed");
    }
    assert_eq!(db.store.log_len().await.expect("len"), 1);
}

async fn commits_are_configured_to_reach_the_disk_before_returning(db: TestDb) {
    match &db.store {
        Store::Sqlite(pools) => {
            let pool = &pools.writer;
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
        Store::Postgres(pools) => {
            let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&pools.writer)
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
        last_seq: 1,
        late_events: 0,
        events_folded: 1,
        updated_at: EventTime::from_unix_micros(2),
        built_with: None,
    }
}

async fn append_call_event(store: &Store, id: &str, call: &str) {
    store
        .append_batch(&[event(id, id.as_bytes(), usable(Some(call)))])
        .await
        .expect("append");
}

async fn a_claim_settles_only_the_version_it_folded(db: TestDb) {
    let store = &db.store;
    append_call_event(store, "msg_1", "cll_1").await;
    store
        .append_batch(&[event("msg_sms", b"{}", usable(None))])
        .await
        .expect("append");
    assert_eq!(
        store.queue_depth().await.expect("depth").calls,
        1,
        "only calls are marked"
    );
    let claimed = store
        .claim_calls(&QueueSweep::default(), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.claims.len(), 1);
    // An event of the call lands while it is being folded: the fold misses it.
    append_call_event(store, "msg_2", "cll_1").await;
    let first = projection("cll_1", "{\"v\":1}");
    let settled = store
        .settle_claims(&claimed, std::slice::from_ref(&first))
        .await
        .expect("settle");
    assert_eq!(
        settled,
        Settled {
            folded: 0,
            to_refold: 1,
            lost: 0
        }
    );
    let written = support::stored_projection(store, "cll_1").await;
    assert_eq!(written, Some(first));
    assert_eq!(
        store.queue_depth().await.expect("depth").calls,
        1,
        "still to fold"
    );

    let again = store
        .claim_calls(&QueueSweep::default(), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(again.claims[0].version, claimed.claims[0].version + 1);
    let second = projection("cll_1", "{\"v\":2}");
    let settled = store
        .settle_claims(&again, &[second])
        .await
        .expect("settle");
    assert_eq!(
        settled,
        Settled {
            folded: 1,
            to_refold: 0,
            lost: 0
        }
    );
    assert_eq!(store.queue_depth().await.expect("depth").calls, 0);
}

/// Claims every marked call of `store` and settles the claim with a projection of each of
/// `folded`: (call, last seq, late count).
async fn settle_as_folded(store: &Store, folded: &[(&str, i64, i64)]) {
    let claimed = store
        .claim_calls(&QueueSweep::default(), 10, LEASE)
        .await
        .expect("claim");
    let projections: Vec<StoredProjection> = folded
        .iter()
        .map(|&(call, last_seq, late_events)| StoredProjection {
            last_seq,
            late_events,
            ..projection(call, "{}")
        })
        .collect();
    store
        .settle_claims(&claimed, &projections)
        .await
        .expect("settle");
}

/// What the projector reads of the projections of the calls it folds: each one's last seq
/// and late count as settled, and nothing for a call without a projection.
async fn how_far_each_projection_was_folded_reads_back_as_settled(db: TestDb) {
    let store = &db.store;
    for (id, call) in [("msg_1", "cll_1"), ("msg_2", "cll_2"), ("msg_3", "cll_3")] {
        append_call_event(store, id, call).await;
    }
    settle_as_folded(store, &[("cll_1", 7, 2), ("cll_3", 11, 5)]).await;
    let calls = ["cll_3", "cll_2", "cll_1"].map(CallKey::new);
    let mut read: Vec<(String, i64, i64)> = store
        .folded_so_far(&calls)
        .await
        .expect("read")
        .into_iter()
        .map(|folded| {
            (
                folded.call_key.as_str().to_owned(),
                folded.last_seq,
                folded.late_events,
            )
        })
        .collect();
    read.sort();
    assert_eq!(
        read,
        [("cll_1".to_owned(), 7, 2), ("cll_3".to_owned(), 11, 5)]
    );
}

/// What a worker reads of the calls it claimed: their events, each call's together in seq
/// order, the latest included, even one appended by another store on the same database after
/// this one's settle; and how far their projections were folded, nothing for a call without
/// one. No event of a call it did not ask for.
async fn a_worker_reads_of_its_claimed_calls_every_event_and_how_far_each_was_folded(db: TestDb) {
    let store = &db.store;
    for (id, call) in [
        ("msg_1", "cll_1"),
        ("msg_2", "cll_2"),
        ("msg_3", "cll_1"),
        ("msg_4", "cll_3"),
        ("msg_5", "cll_4"),
    ] {
        append_call_event(store, id, call).await;
    }
    settle_as_folded(store, &[("cll_1", 3, 1), ("cll_3", 4, 6)]).await;
    let another = Store::connect(&db.url).await.expect("another store");
    append_call_event(&another, "msg_6", "cll_1").await;
    another.close().await;

    let calls = ["cll_3", "cll_2", "cll_1"].map(CallKey::new);
    let (logged, folded_so_far) = store.read_claimed_calls(&calls).await.expect("read");
    let logged: Vec<(String, &str)> = logged
        .iter()
        .map(|event| {
            let call = event.content.call_key().expect("a call event").as_str();
            (event.webhook_id.as_str().to_owned(), call)
        })
        .collect();
    assert_eq!(
        logged,
        [
            ("msg_1".to_owned(), "cll_1"),
            ("msg_3".to_owned(), "cll_1"),
            ("msg_6".to_owned(), "cll_1"),
            ("msg_2".to_owned(), "cll_2"),
            ("msg_4".to_owned(), "cll_3"),
        ]
    );
    let mut folded_so_far: Vec<(String, i64, i64)> = folded_so_far
        .into_iter()
        .map(|folded| {
            let call = folded.call_key.as_str().to_owned();
            (call, folded.last_seq, folded.late_events)
        })
        .collect();
    folded_so_far.sort();
    assert_eq!(
        folded_so_far,
        [("cll_1".to_owned(), 3, 1), ("cll_3".to_owned(), 4, 6)]
    );
}

async fn a_claim_is_exclusive_until_its_lease_ends_and_then_fenced_out(db: TestDb) {
    let store = &db.store;
    append_call_event(store, "msg_1", "cll_1").await;
    let held = store
        .claim_calls(&QueueSweep::default(), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(held.claims.len(), 1);
    let nothing = store
        .claim_calls(&QueueSweep::default(), 10, LEASE)
        .await
        .expect("claim");
    assert!(nothing.claims.is_empty(), "a live lease is not shared");
    assert!(
        store
            .claim_call(&CallKey::new("cll_1"), LEASE)
            .await
            .expect("claim")
            .claims
            .is_empty()
    );

    append_call_event(store, "msg_2", "cll_2").await;
    let expired = store
        .claim_calls(&QueueSweep::default(), 1, Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(expired.claims[0].call_key, CallKey::new("cll_2"));
    let taken_over = store
        .claim_calls(&QueueSweep::default(), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(
        taken_over.claims, expired.claims,
        "an ended lease is taken over"
    );
    let late = store
        .settle_claims(&expired, &[projection("cll_2", "{\"stale\":true}")])
        .await
        .expect("settle");
    assert_eq!(
        late,
        Settled {
            folded: 0,
            to_refold: 0,
            lost: 1
        }
    );
    assert_eq!(support::stored_projection(store, "cll_2").await, None);
    let current = projection("cll_2", "{\"v\":1}");
    let settled = store
        .settle_claims(&taken_over, std::slice::from_ref(&current))
        .await
        .expect("settle");
    assert_eq!(settled.folded, 1);
    let written = support::stored_projection(store, "cll_2").await;
    assert_eq!(written, Some(current));
}

/// The call keys of a claim, in the order it lists them (call order).
fn claimed_keys(claimed: &ClaimedCalls) -> Vec<&str> {
    claimed.claims.iter().map(|c| c.call_key.as_str()).collect()
}

async fn claims_sweep_the_queue_in_call_order_from_where_the_last_one_stopped(db: TestDb) {
    let store = &db.store;
    let marked_in_turn = [
        "cll_7", "cll_2", "cll_5", "cll_1", "cll_8", "cll_3", "cll_6", "cll_4",
    ];
    for (n, call) in marked_in_turn.iter().enumerate() {
        append_call_event(store, &format!("msg_{n}"), call).await;
    }
    let sweep = QueueSweep::default();
    let first = store.claim_calls(&sweep, 3, LEASE).await.expect("claim");
    assert_eq!(claimed_keys(&first), ["cll_1", "cll_2", "cll_3"]);
    // A call behind the sweep, and one ahead of it appended to again.
    append_call_event(store, "msg_behind", "cll_0").await;
    append_call_event(store, "msg_again", "cll_5").await;
    let second = store.claim_calls(&sweep, 3, LEASE).await.expect("claim");
    assert_eq!(claimed_keys(&second), ["cll_4", "cll_5", "cll_6"]);
    let third = store.claim_calls(&sweep, 3, LEASE).await.expect("claim");
    assert_eq!(
        claimed_keys(&third),
        ["cll_0", "cll_7", "cll_8"],
        "to the last call, then round to the first free one"
    );
    store
        .settle_claims(&first, &[])
        .await
        .expect("settle the first claim");
    append_call_event(store, "msg_after_its_fold", "cll_2").await;
    let fourth = store.claim_calls(&sweep, 3, LEASE).await.expect("claim");
    assert_eq!(
        claimed_keys(&fourth),
        ["cll_2"],
        "on from cll_0, where the third claim stopped, past the calls still held"
    );
}

/// Marks calls cll_a, cll_b and cll_c, and claims the first two on a new sweep: a lap that
/// ends at cll_c. Returns the sweep and the claim.
async fn a_lap_begun_over_three_calls(store: &Store) -> (QueueSweep, ClaimedCalls) {
    for (n, call) in ["cll_a", "cll_b", "cll_c"].iter().enumerate() {
        append_call_event(store, &format!("msg_{n}"), call).await;
    }
    let sweep = QueueSweep::default();
    let first = store.claim_calls(&sweep, 2, LEASE).await.expect("claim");
    assert_eq!(claimed_keys(&first), ["cll_a", "cll_b"]);
    (sweep, first)
}

async fn calls_marked_beyond_a_laps_end_wait_for_the_next_lap(db: TestDb) {
    let store = &db.store;
    let (sweep, first) = a_lap_begun_over_three_calls(store).await;
    // cll_a is appended to while it is folded, and new calls are marked past cll_c, the last
    // call when the lap began: calls whose keys grow with time do that all day long.
    append_call_event(store, "msg_again", "cll_a").await;
    append_call_event(store, "msg_d", "cll_d").await;
    append_call_event(store, "msg_e", "cll_e").await;
    let settled = store
        .settle_claims(&first, &[projection("cll_a", "{}")])
        .await
        .expect("settle");
    assert_eq!(settled.to_refold, 1);
    let second = store.claim_calls(&sweep, 2, LEASE).await.expect("claim");
    assert_eq!(
        claimed_keys(&second),
        ["cll_a", "cll_c"],
        "the lap ends at cll_c; the next one starts with cll_a, before the calls marked since"
    );
    let third = store.claim_calls(&sweep, 2, LEASE).await.expect("claim");
    assert_eq!(claimed_keys(&third), ["cll_d", "cll_e"]);
}

async fn a_call_whose_lease_ends_within_a_claim_is_claimed_once(db: TestDb) {
    let store = &db.store;
    let (sweep, _) = a_lap_begun_over_three_calls(store).await;
    // The lap ends with cll_c, under a lease already over when the claim goes on to the next
    // lap, which finds cll_c free again.
    let second = store
        .claim_calls(&sweep, 2, Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(claimed_keys(&second), ["cll_c"]);
}

async fn a_mark_released_by_a_settle_waits_for_the_rest_of_the_lap(db: TestDb) {
    let store = &db.store;
    append_call_event(store, "msg_1", "cll_b").await;
    append_call_event(store, "msg_2", "cll_z").await;
    let sweep = QueueSweep::default();
    let first = store.claim_calls(&sweep, 1, LEASE).await.expect("claim");
    assert_eq!(claimed_keys(&first), ["cll_b"]);
    // cll_b is appended to while it is folded: its settle releases the mark.
    append_call_event(store, "msg_3", "cll_b").await;
    let settled = store
        .settle_claims(&first, &[projection("cll_b", "{}")])
        .await
        .expect("settle");
    assert_eq!(settled.to_refold, 1);
    let next = store.claim_calls(&sweep, 1, LEASE).await.expect("claim");
    assert_eq!(
        claimed_keys(&next),
        ["cll_z"],
        "cll_z is ahead of the released mark in the sweep"
    );
    let round_again = store.claim_calls(&sweep, 1, LEASE).await.expect("claim");
    assert_eq!(claimed_keys(&round_again), ["cll_b"]);
}

async fn migrating_again_changes_nothing(db: TestDb) {
    db.store
        .append_batch(&[event("msg_a", b"{}", usable(None))])
        .await
        .expect("append");
    db.store.migrate().await.expect("second migration run");
    assert_eq!(db.store.log_len().await.expect("len"), 1);
}

/// A value bound to a statement whose plan a test asks for.
#[derive(Clone, Copy)]
enum Bound {
    Number(i64),
    Text(&'static str),
}

/// The steps of the plan of `statement` with `bound` bound in order: on SQLite the details of
/// `EXPLAIN QUERY PLAN`, on PostgreSQL the lines of `EXPLAIN`, asked with sequential scans
/// disabled (its planner would scan a table as small as a test's anyway).
async fn plan_of(store: &Store, statement: &str, bound: &[Bound]) -> Vec<String> {
    macro_rules! bind_all {
        ($query:expr) => {{
            let mut query = $query;
            for value in bound {
                query = match *value {
                    Bound::Number(number) => query.bind(number),
                    Bound::Text(text) => query.bind(text),
                };
            }
            query
        }};
    }
    match store {
        Store::Sqlite(pools) => {
            let explain = format!("EXPLAIN QUERY PLAN {statement}");
            bind_all!(sqlx::query_as::<_, (i64, i64, i64, String)>(&explain))
                .fetch_all(&pools.writer)
                .await
                .expect("plan")
                .into_iter()
                .map(|(_, _, _, detail)| detail)
                .collect()
        }
        Store::Postgres(pools) => {
            let mut tx = pools.writer.begin().await.expect("begin");
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .expect("set");
            let explain = format!("EXPLAIN {statement}");
            bind_all!(sqlx::query_scalar(&explain))
                .fetch_all(&mut *tx)
                .await
                .expect("plan")
        }
    }
}

/// Renewing, releasing and settling a claim find its rows by the claim's token, or by their
/// call keys: each must search an index, not read the whole fold queue, or a worker catching
/// up on a long queue spends time proportional to it on every batch. On PostgreSQL a settle
/// locks the claim's rows by token, then removes those still at their claimed version by call
/// key; on a SQLite file it removes each by call key, version and token, and through sqlx (a
/// URL naming `vfs=`) by token and (call key, version) in one statement.
async fn a_claim_is_found_by_its_token_without_reading_the_whole_queue(db: TestDb) {
    use Bound::{Number, Text};
    let renew = (
        "UPDATE calls_to_fold SET claimed_until_us = 0 WHERE claim_token = $1",
        vec![Number(7)],
    );
    let settle = match &db.store {
        Store::Sqlite(_) => vec![
            (
                "DELETE FROM calls_to_fold WHERE call_key = $1 AND version = $2 \
                 AND claim_token = $3 RETURNING call_key",
                vec![Text("cll_1"), Number(1), Number(7)],
            ),
            (
                "DELETE FROM calls_to_fold WHERE claim_token = $1 \
                 AND (call_key, version) IN (VALUES ($2, $3)) RETURNING call_key",
                vec![Number(7), Text("cll_1"), Number(1)],
            ),
        ],
        Store::Postgres(_) => vec![
            (
                "SELECT call_key, version FROM calls_to_fold WHERE claim_token = $1 \
                 ORDER BY call_key COLLATE \"C\" FOR UPDATE",
                vec![Number(7)],
            ),
            (
                "DELETE FROM calls_to_fold WHERE call_key IN ($1, $2) RETURNING call_key",
                vec![Text("cll_1"), Text("cll_2")],
            ),
        ],
    };
    for (statement, bound) in std::iter::once(renew).chain(settle) {
        let plan = plan_of(&db.store, statement, &bound).await;
        let searched = match &db.store {
            Store::Sqlite(_) => {
                plan.iter()
                    .any(|step| step.starts_with("SEARCH calls_to_fold"))
                    && !plan
                        .iter()
                        .any(|step| step.starts_with("SCAN calls_to_fold"))
            }
            Store::Postgres(_) => {
                plan.iter().any(|step| step.contains("Index Cond"))
                    && !plan.iter().any(|step| step.contains("Seq Scan"))
            }
        };
        assert!(searched, "{statement}\nis planned as\n{}", plan.join("\n"));
    }
}

on_both_stores!(
    an_id_repeated_in_one_batch_is_appended_once,
    a_large_batch_dedups_across_statements,
    a_reused_id_with_another_body_is_a_conflicting_duplicate_and_keeps_the_first,
    every_field_reads_back_as_written,
    the_log_refuses_updates_and_deletes,
    migrating_again_changes_nothing,
    a_claim_settles_only_the_version_it_folded,
    how_far_each_projection_was_folded_reads_back_as_settled,
    a_worker_reads_of_its_claimed_calls_every_event_and_how_far_each_was_folded,
    a_claim_is_exclusive_until_its_lease_ends_and_then_fenced_out,
    claims_sweep_the_queue_in_call_order_from_where_the_last_one_stopped,
    calls_marked_beyond_a_laps_end_wait_for_the_next_lap,
    a_call_whose_lease_ends_within_a_claim_is_claimed_once,
    a_mark_released_by_a_settle_waits_for_the_rest_of_the_lap,
    commits_are_configured_to_reach_the_disk_before_returning,
    a_claim_is_found_by_its_token_without_reading_the_whole_queue,
);

/// The checkpoint sequence number in a SQLite WAL file's header: it changes each time the WAL
/// starts over from its first page.
fn wal_generation(wal: &std::path::Path) -> [u8; 4] {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(wal)
        .and_then(|mut file| file.read_exact(&mut header))
        .expect("read the WAL's header");
    header[12..16].try_into().expect("four bytes")
}

/// SQLite's default checkpoints inside the commit that takes the WAL past 1,000 pages, so a
/// batch of deliveries would wait for the copy; here commits checkpoint only as a backstop,
/// far later, and a task of the store's own keeps the WAL short: while appends keep coming,
/// it must start over well before that backstop (262,144 pages, 1 GiB) would, and close with
/// the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_leave_checkpoints_to_a_task_that_keeps_the_wal_short() {
    const MIB: u64 = 1024 * 1024;
    let db = TestDb::sqlite().await;
    db.store.own_wal_restarts();
    let Store::Sqlite(pools) = &db.store else {
        unreachable!("a SQLite test database")
    };
    let commits_checkpoint_past: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&pools.writer)
        .await
        .expect("wal_autocheckpoint");
    assert!(
        commits_checkpoint_past > 16 * 1000,
        "commits checkpoint past {commits_checkpoint_past} pages"
    );
    let path = db.url.trim_start_matches("sqlite:").to_owned();
    let wal = std::path::PathBuf::from(format!("{path}-wal"));
    let body = vec![b'x'; 48 * 1024];
    db.store
        .append_batch(&[event("msg_first", &body, usable(Some("cll_0")))])
        .await
        .expect("append");
    let first_generation = wal_generation(&wal);
    for batch in 0.. {
        let events: Vec<NewEvent> = (0..8)
            .map(|n| event(&format!("msg_{batch}_{n}"), &body, usable(Some("cll_0"))))
            .collect();
        db.store.append_batch(&events).await.expect("append");
        if wal_generation(&wal) != first_generation {
            break;
        }
        let size = std::fs::metadata(&wal).expect("the WAL").len();
        assert!(
            size < 384 * MIB,
            "the WAL grew to {size} bytes without starting over"
        );
    }
    // The last connection to close deletes the WAL: the task's is closed with the store.
    db.store.close().await;
    assert!(!wal.exists(), "a connection outlived Store::close");
}
