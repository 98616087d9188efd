//! Claims on calls under leases measured by the database's clock: a fold that outlasts its
//! lease renews it, so no other worker takes its calls over meanwhile, and it settles them.

mod support;

use std::sync::Arc;
use std::time::Duration;

use callfold_projector::{Precedence, Projector};
use callfold_store::{QueueSweep, Settled, Store};
use serde_json::json;
use support::{HeldLock, TestDb, envelope, start_receiver, test_settings, wait_until};
use tokio::sync::Notify;

/// Short enough for a test to outlast, long enough that a renewal every third of it is never
/// late on a busy machine.
const SHORT_LEASE: Duration = Duration::from_secs(2);

/// The database's clock, in microseconds since the Unix epoch.
async fn database_now_us(store: &Store) -> i64 {
    match store {
        Store::Postgres(pools) => {
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
                .fetch_one(&pools.readers)
                .await
                .expect("read the clock")
        }
        Store::Sqlite(pools) => sqlx::query_scalar(
            "SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
        )
        .fetch_one(&pools.readers)
        .await
        .expect("read the clock"),
    }
}

/// When the claim on `call_key` ends, if it is claimed.
async fn claimed_until_us(store: &Store, call_key: &str) -> Option<i64> {
    let sql = "SELECT claimed_until_us FROM calls_to_fold WHERE call_key = $1";
    match store {
        Store::Postgres(pools) => {
            sqlx::query_scalar(sql)
                .bind(call_key)
                .fetch_one(&pools.readers)
                .await
        }
        Store::Sqlite(pools) => {
            sqlx::query_scalar(sql)
                .bind(call_key)
                .fetch_one(&pools.readers)
                .await
        }
    }
    .expect("read the claim")
}

async fn a_fold_that_outlasts_its_lease_keeps_its_calls(db: TestDb) {
    let store = db.store.clone();
    let receiver = start_receiver(&store, test_settings()).await;
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": "cll_long", "type": "INBOUND", "result": "ANSWERED"}),
    );
    assert_eq!(receiver.deliver("msg_long", &body).await.status, 200);
    let projector = Projector::new(store.clone(), Precedence::default(), 10, SHORT_LEASE);
    let claimed = store
        .claim_calls(&QueueSweep::default(), 10, SHORT_LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.claims.len(), 1);
    let first_lease_end = claimed_until_us(&store, "cll_long").await.expect("claimed");

    // A fold that lasts until the test lets it finish.
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let fold = {
        let (projector, claimed) = (projector.clone(), claimed.clone());
        tokio::spawn(async move {
            projector
                .while_holding(&claimed, async { finished.await.expect("finish") })
                .await
        })
    };
    wait_until(
        "the first lease has ended by the database's clock",
        30,
        || async { database_now_us(&store).await > first_lease_end },
    )
    .await;
    let second_worker = store
        .claim_calls(&QueueSweep::default(), 10, SHORT_LEASE)
        .await
        .expect("claim");
    assert!(
        second_worker.claims.is_empty(),
        "a renewed claim cannot be taken over"
    );
    assert!(claimed_until_us(&store, "cll_long").await > Some(first_lease_end));

    finish.send(()).expect("the fold waits");
    fold.await.expect("fold task");
    let settled = store.settle_claims(&claimed, &[]).await.expect("settle");
    assert_eq!(
        settled,
        Settled {
            folded: 1,
            to_refold: 0,
            lost: 0
        }
    );
}

on_both_stores!(a_fold_that_outlasts_its_lease_keeps_its_calls);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_read_outlasts_its_lease_still_folds_its_call() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    let receiver = start_receiver(&store, test_settings()).await;
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": "cll_slow", "type": "INBOUND", "result": "ANSWERED"}),
    );
    assert_eq!(receiver.deliver("msg_slow", &body).await.status, 200);
    // Another connection locks the log, so the worker's read after its claim waits.
    let held = HeldLock::take(&db.url, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE").await;
    let projector = Projector::new(store.clone(), Precedence::default(), 10, SHORT_LEASE);
    let worker = {
        let projector = projector.clone();
        tokio::spawn(async move { projector.fold_next_batch().await.expect("fold") })
    };
    wait_until("the worker claims the call", 30, || async {
        claimed_until_us(&store, "cll_slow").await.is_some()
    })
    .await;
    let first_lease_end = claimed_until_us(&store, "cll_slow").await.expect("claimed");
    wait_until(
        "the first lease has ended by the database's clock",
        30,
        || async { database_now_us(&store).await > first_lease_end },
    )
    .await;
    let second_worker = store
        .claim_calls(&QueueSweep::default(), 10, SHORT_LEASE)
        .await
        .expect("claim");
    assert!(
        second_worker.claims.is_empty(),
        "the folding worker renewed its claim"
    );

    held.release().await;
    assert_eq!(worker.await.expect("worker task"), 1);
    assert_eq!(store.queue_depth().await.expect("depth").calls, 0);
    let projection = support::stored_projection(&store, "cll_slow")
        .await
        .expect("projected by the worker that outlasted its lease");
    assert_eq!(projection.events_folded, 1);
}

/// How many batches hold claims now: the distinct claim tokens in the fold queue.
const BATCHES_HOLDING_CLAIMS: &str = "SELECT count(DISTINCT claim_token) FROM calls_to_fold";

/// How many marked calls no batch holds.
const CALLS_UNCLAIMED: &str = "SELECT count(*) FROM calls_to_fold WHERE claim_token IS NULL";

/// The count `sql` reads from the fold queue of a PostgreSQL store.
async fn count_in_queue(store: &Store, sql: &str) -> i64 {
    let Store::Postgres(pools) = store else {
        unreachable!("counted on PostgreSQL")
    };
    sqlx::query_scalar(sql)
        .fetch_one(&pools.readers)
        .await
        .expect("count in the fold queue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_catching_up_claims_its_next_batches_while_one_settles() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    let receiver = start_receiver(&store, test_settings()).await;
    let calls = [
        "cll_1", "cll_2", "cll_3", "cll_4", "cll_5", "cll_6", "cll_7", "cll_8",
    ];
    for call in calls {
        let body = envelope(
            "call.completed",
            "2026-02-10T09:17:42Z",
            json!({"id": call, "type": "INBOUND", "result": "ANSWERED"}),
        );
        let delivery = receiver.deliver(&format!("msg_{call}"), &body).await;
        assert_eq!(delivery.status, 200);
    }
    // Another connection locks the projections against writes: the first batch's settle waits.
    let held = HeldLock::take(&db.url, "LOCK TABLE call_projections IN SHARE MODE").await;
    // A lease long enough that the first batch's claim outlasts the test's wait (a batch gives
    // up after twelve leases, and a worker that gave up claims again).
    let lease = Duration::from_secs(10);
    let projector = Projector::new(store.clone(), Precedence::default(), 2, lease);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let projector = projector.clone();
        let (wake, poll) = (Arc::new(Notify::new()), Duration::from_millis(50));
        tokio::spawn(async move {
            let stopped = async { stopped.await.unwrap_or(()) };
            projector.run(wake, poll, poll, stopped).await
        })
    };
    // On PostgreSQL a worker keeps three batches in flight: two more are claimed while the
    // first settles, and no fourth until one of them has settled. The first settle waits on the
    // lock, the others on the change numbers it took.
    held.wait_for_waiters(&store, 3, "three batches' settles wait")
        .await;
    assert_eq!(count_in_queue(&store, BATCHES_HOLDING_CLAIMS).await, 3);
    assert_eq!(
        count_in_queue(&store, CALLS_UNCLAIMED).await,
        2,
        "a fourth batch was claimed"
    );

    held.release().await;
    wait_until("every call is folded", 30, || async {
        store.queue_depth().await.expect("depth").calls == 0
    })
    .await;
    stop.send(()).expect("the worker runs");
    worker.await.expect("worker task");
    for call in calls {
        let projection = support::stored_projection(&store, call).await;
        assert_eq!(projection.expect("folded").events_folded, 1, "{call}");
    }
}
