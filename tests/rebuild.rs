//! Rebuilding every projection while workers fold, on SQLite and PostgreSQL. The tests drive a
//! rebuild's two phases (fold the log into the shadow table, then swap): settling folds in
//! between, at the point where a swap could overwrite them with the older rebuilt projections,
//! and reading the log while another connection holds the write lock that appends need.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use callfold_projector::{Precedence, Projector};
use callfold_store::{CallKey, StoreError};
use serde_json::json;
use support::{
    LEASE, TestDb, TestReceiver, assert_projections_equal_a_fold_from_scratch, envelope,
    start_receiver, test_settings,
};

/// Runs `projector` until it has folded every marked call.
async fn catch_up(projector: &Projector) {
    while projector.fold_next_batch().await.expect("fold a batch") > 0 {}
}

/// An event of call `call` with `topic` at payload time `at`.
fn call_event(topic: &str, at: &str, call: &str) -> Vec<u8> {
    envelope(
        topic,
        at,
        json!({"id": call, "call_id": call, "type": "INBOUND", "tag": "vip"}),
    )
}

/// Delivers the first events of the calls the scenario rebuilds: two of `cll_grown`, one each of
/// `cll_queued` and `cll_steady`.
async fn deliver_before_the_read(receiver: &TestReceiver) {
    let at = "2026-02-10T09:00:00Z";
    receiver
        .deliver("msg_grown_1", &call_event("call.received", at, "cll_grown"))
        .await;
    receiver
        .deliver(
            "msg_grown_2",
            &call_event("call.answered", "2026-02-10T09:00:05Z", "cll_grown"),
        )
        .await;
    receiver
        .deliver(
            "msg_queued_1",
            &call_event("call.received", at, "cll_queued"),
        )
        .await;
    receiver
        .deliver(
            "msg_steady_1",
            &call_event("call.received", at, "cll_steady"),
        )
        .await;
}

/// After the rebuild read the log: a call grows and is folded, a new call arrives and is
/// folded, and a third grows but stays queued until after the swap.
async fn change_the_calls_after_the_read(receiver: &TestReceiver, projector: &Projector) {
    let later = "2026-02-10T09:03:00Z";
    receiver
        .deliver(
            "msg_grown_3",
            &call_event("call.completed", later, "cll_grown"),
        )
        .await;
    receiver
        .deliver("msg_new_1", &call_event("call.received", later, "cll_new"))
        .await;
    catch_up(projector).await;
    receiver
        .deliver(
            "msg_queued_2",
            &call_event("call.completed", later, "cll_queued"),
        )
        .await;
}

/// Checks, right after the swap, that it kept what was settled after the read phase and left
/// the queued call marked.
async fn assert_the_swap_undid_nothing_settled_after_the_read(db: &TestDb) {
    let grown = db
        .store
        .projection(&CallKey::new("cll_grown"))
        .await
        .expect("read");
    assert_eq!(
        grown.expect("still projected").events_folded,
        3,
        "the swap kept the fold settled after the rebuild read the call"
    );
    assert!(
        db.store
            .projection(&CallKey::new("cll_new"))
            .await
            .expect("read")
            .is_some(),
        "a call first folded during the rebuild is still there"
    );
    assert_eq!(
        db.store.queue_depth().await.expect("depth").calls,
        1,
        "the call appended to after the read keeps its mark through the swap"
    );
}

async fn folds_settled_between_a_rebuilds_read_and_its_swap_are_never_undone(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    deliver_before_the_read(&receiver).await;
    catch_up(&projector).await;

    let rebuilt = projector
        .rebuild_into_shadow(|_, _| {})
        .await
        .expect("read phase");
    assert_eq!(rebuilt, 3);
    change_the_calls_after_the_read(&receiver, &projector).await;
    projector.swap_in_rebuilt().await.expect("swap");

    assert_the_swap_undid_nothing_settled_after_the_read(&db).await;
    catch_up(&projector).await;
    assert_each_event_folded_once(
        &db,
        &["cll_grown", "cll_new", "cll_queued", "cll_steady"],
        7,
    )
    .await;
}

/// Longer than the read phase of a few events takes, and much shorter than the time SQLite's
/// busy handler waits for a write lock (the store's statement timeout, 30 s).
const READ_PHASE_BOUND: Duration = Duration::from_secs(10);

async fn a_rebuilds_read_phase_does_not_wait_for_the_write_lock(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    let at = "2026-02-10T09:00:00Z";
    for call in ["cll_first", "cll_second"] {
        receiver
            .deliver(
                &format!("msg_{call}"),
                &call_event("call.received", at, call),
            )
            .await;
    }
    catch_up(&projector).await;

    // Another writer (on SQLite, the committer of `callfold serve` beside the rebuild's
    // process) holds the lock for the whole read phase.
    let lock = db.hold_write_lock().await;
    let rebuilt = tokio::time::timeout(READ_PHASE_BOUND, projector.rebuild_into_shadow(|_, _| {}))
        .await
        .expect("the read phase finished while another writer held the lock")
        .expect("read phase");
    assert_eq!(rebuilt, 2);
    lock.release().await;

    projector.swap_in_rebuilt().await.expect("swap");
    assert_each_event_folded_once(&db, &["cll_first", "cll_second"], 2).await;
}

on_both_stores!(
    folds_settled_between_a_rebuilds_read_and_its_swap_are_never_undone,
    a_rebuilds_read_phase_does_not_wait_for_the_write_lock
);

/// On SQLite the read phase's results live in a temporary table of the write connection: a swap
/// that finds none (its connection was replaced since) must fail loudly, not swap nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_without_the_read_phases_results_fails_instead_of_changing_nothing() {
    let db = TestDb::sqlite().await;
    let swapped = db.store.swap_in_rebuilt().await;
    assert!(
        matches!(swapped, Err(StoreError::RebuildResultsLost)),
        "{swapped:?}"
    );
}

/// Asserts that the projections of `calls` equal a fold of their events from scratch, and
/// that those are `events` events: every event folded once.
async fn assert_each_event_folded_once(db: &TestDb, calls: &[&str], events: i64) {
    let calls: BTreeSet<CallKey> = calls.iter().copied().map(CallKey::new).collect();
    assert_eq!(
        assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await,
        events,
        "every event folded once"
    );
}
