//! The read side never stands in the way of the write side: the counts that grow with the log
//! are kept as it grows (and equal what a scan finds, after any traffic and after an upgrade,
//! as do the counts of what waits to be folded),
//! and on SQLite a read does not wait for the connection that commits appends.

mod support;

use std::path::Path;

use callfold_ingest::{LinkingRules, Quarantine};
use callfold_projector::{Precedence, Projector};
use callfold_store::{AppendOutcome, Content, EventTime, Store};
use serde_json::json;
use sqlx::migrate::Migrator;
use support::{LEASE, TestDb, as_received, as_received_with, commit_timeout, envelope};

/// Records, quarantined records, unlinked events and projections, in that order.
type Counts = (i64, i64, i64, i64);

/// What a scan of the tables finds.
const COUNTED_BY_SCANNING: &str = "SELECT count(*), count(quarantine_reason), \
     CAST(coalesce(sum(CASE WHEN unlinked THEN 1 ELSE 0 END), 0) AS BIGINT), \
     (SELECT count(*) FROM call_projections) FROM events";

/// What the store keeps as the log grows.
const KEPT_COUNTS: &str = "SELECT CAST(sum(events) AS BIGINT), CAST(sum(quarantined) AS BIGINT), \
     CAST(sum(unlinked) AS BIGINT), \
     (SELECT projections FROM projection_changes WHERE only_row = 1) FROM log_counts";

/// Calls waiting to be folded and their events that their projections do not count yet, by a
/// lookup per waiting call.
const WAITING_BY_SCANNING: &str = "SELECT count(*), CAST(coalesce(sum(logged - folded), 0) AS BIGINT) \
     FROM (SELECT (SELECT count(*) FROM events e WHERE e.call_key = q.call_key) AS logged, \
     coalesce((SELECT p.events_folded FROM call_projections p WHERE p.call_key = q.call_key), 0) \
     AS folded FROM calls_to_fold q) AS waiting";

/// Records per minute of arrival, by a scan of the log.
const STORED_PER_MINUTE_BY_SCANNING: &str = "SELECT received_at_us / 60000000 AS minute, \
     count(*) FROM events GROUP BY minute ORDER BY minute";

async fn scanned_per_minute(store: &Store) -> Vec<(EventTime, i64)> {
    let rows: Vec<(i64, i64)> = match store {
        Store::Sqlite(pools) => {
            sqlx::query_as(STORED_PER_MINUTE_BY_SCANNING)
                .fetch_all(&pools.readers)
                .await
        }
        Store::Postgres(pools) => {
            sqlx::query_as(STORED_PER_MINUTE_BY_SCANNING)
                .fetch_all(&pools.readers)
                .await
        }
    }
    .expect("scan per minute");
    rows.into_iter()
        .map(|(minute, stored)| (EventTime::from_unix_micros(minute * 60_000_000), stored))
        .collect()
}

/// The one row `sql` reads, on either backend.
async fn read_one<T>(store: &Store, sql: &str) -> T
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    match store {
        Store::Sqlite(pools) => sqlx::query_as(sql).fetch_one(&pools.readers).await,
        Store::Postgres(pools) => sqlx::query_as(sql).fetch_one(&pools.readers).await,
    }
    .expect(sql)
}

async fn waiting(store: &Store) -> (i64, i64) {
    read_one(store, WAITING_BY_SCANNING).await
}

async fn counts(store: &Store, sql: &str) -> Counts {
    read_one(store, sql).await
}

/// Checks the kept counts, and what the store reports from them, against a scan.
async fn assert_kept_counts_match_a_scan(store: &Store, when: &str) {
    let scanned = counts(store, COUNTED_BY_SCANNING).await;
    assert_eq!(counts(store, KEPT_COUNTS).await, scanned, "{when}");
    let stats = store.stats().await.expect("stats");
    let reported = (
        stats.log_events,
        stats.quarantined,
        stats.unlinked,
        stats.projections,
    );
    assert_eq!(reported, scanned, "{when}: stats");
    let reported_waiting = (stats.calls_waiting, stats.events_waiting);
    assert_eq!(reported_waiting, waiting(store).await, "{when}: waiting");
    assert_eq!(store.log_len().await.expect("len"), scanned.0, "{when}");
    let (_, unlinked) = store.unlinked_events(0, 1).await.expect("unlinked");
    let (_, quarantined) = store.quarantined_events(0, 1).await.expect("quarantined");
    assert_eq!((quarantined, unlinked), (scanned.1, scanned.2), "{when}");
    let per_minute = store
        .stored_per_minute(EventTime::from_unix_micros(0))
        .await
        .expect("per minute");
    assert_eq!(
        per_minute,
        scanned_per_minute(store).await,
        "{when}: per minute"
    );
}

fn call_event(topic: &str, second: u32, call_id: &str) -> Vec<u8> {
    envelope(
        topic,
        &format!("2026-02-10T09:17:{second:02}Z"),
        json!({"id": call_id, "call_id": call_id}),
    )
}

async fn fold_everything(projector: &Projector) {
    while projector.fold_next_batch().await.expect("fold") > 0 {}
}

async fn kept_counts_equal_a_scan_after_mixed_traffic(db: TestDb) {
    let store = &db.store;
    let projector = Projector::new(store.clone(), Precedence::default(), 2, LEASE);
    assert_kept_counts_match_a_scan(store, "empty").await;

    let unlinked = envelope("call.completed", "2026-02-10T09:17:01Z", json!({}));
    // A record kept by an older reading; its body reads fine today, so it can be re-driven.
    let kept = call_event("call.completed", 2, "cll_kept");
    let first = [
        as_received("msg_1", &call_event("call.received", 1, "cll_1")),
        as_received("msg_2", &call_event("call.received", 1, "cll_2")),
        as_received("msg_1", &call_event("call.received", 1, "cll_1")),
        as_received("msg_unlinked", &unlinked),
        as_received("msg_garbled", b"not json"),
        as_received(
            "msg_sms",
            &envelope("sms.received", "2026-02-10T09:17:03Z", json!({})),
        ),
        as_received_with(
            "msg_kept",
            &kept,
            Content::Quarantined {
                reason: "read by older rules".to_owned(),
            },
        ),
    ];
    let outcomes = store.append_batch(&first).await.expect("append");
    assert_kept_counts_match_a_scan(store, "first batch").await;
    fold_everything(&projector).await;
    assert_kept_counts_match_a_scan(store, "first fold").await;

    let second = [
        as_received("msg_1", &call_event("call.received", 1, "cll_1")),
        as_received("msg_unlinked", &unlinked),
        as_received("msg_3", &call_event("call.completed", 9, "cll_1")),
        as_received("msg_4", &call_event("call.received", 4, "cll_3")),
    ];
    store.append_batch(&second).await.expect("append");
    assert_kept_counts_match_a_scan(store, "duplicates and new events").await;
    // One new event of a folded call (which folded one of its two) and one of a new call.
    assert_eq!(waiting(store).await, (2, 2));

    let AppendOutcome::Appended { seq: kept_seq } = outcomes[6] else {
        panic!("{outcomes:?}")
    };
    let quarantine = Quarantine::new(store.clone(), LinkingRules::default(), commit_timeout());
    let redriven = quarantine.redrive(kept_seq).await.expect("re-drive");
    assert_eq!(redriven["status"], "redriven");
    let again = quarantine.redrive(kept_seq).await.expect("re-drive again");
    assert_eq!(again["status"], "already_redriven");
    assert_kept_counts_match_a_scan(store, "re-drives").await;
    fold_everything(&projector).await;
    assert_kept_counts_match_a_scan(store, "second fold").await;

    projector.rebuild(|_, _| {}).await.expect("rebuild");
    assert_kept_counts_match_a_scan(store, "rebuild").await;
    store
        .append_batch(&[as_received(
            "msg_5",
            &call_event("call.received", 5, "cll_4"),
        )])
        .await
        .expect("append");
    fold_everything(&projector).await;
    assert_kept_counts_match_a_scan(store, "fold after the rebuild").await;
    assert_eq!(store.stats().await.expect("stats").projections, 5);
}

/// A settle of more calls than one statement writes (256) upserts them in several statements of
/// one transaction, some calls new and some with a projection already: the count of projections
/// stays that of the table.
async fn kept_counts_equal_a_scan_after_a_settle_of_more_calls_than_a_statement_writes(db: TestDb) {
    let store = &db.store;
    let calls = |range: std::ops::Range<u32>, second: u32| -> Vec<_> {
        range
            .map(|call| {
                let call_id = format!("cll_{call:04}");
                let body = call_event("call.received", second, &call_id);
                as_received(&format!("msg_{call:04}_{second}"), &body)
            })
            .collect()
    };
    // One claim takes every call waiting.
    let projector = Projector::new(store.clone(), Precedence::default(), 600, LEASE);
    store.append_batch(&calls(0..200, 1)).await.expect("append");
    fold_everything(&projector).await;
    assert_kept_counts_match_a_scan(store, "first fold").await;

    store
        .append_batch(&calls(100..600, 2))
        .await
        .expect("append");
    assert_eq!(waiting(store).await, (500, 500));
    assert_eq!(projector.fold_next_batch().await.expect("fold"), 500);
    assert_kept_counts_match_a_scan(store, "a settle of 500 calls, 100 of them folded before")
        .await;
    assert_eq!(store.stats().await.expect("stats").projections, 600);
}

on_both_stores!(
    kept_counts_equal_a_scan_after_mixed_traffic,
    kept_counts_equal_a_scan_after_a_settle_of_more_calls_than_a_statement_writes,
);

/// The migrations of `backend` before the kept counts (0009).
async fn migrations_before_kept_counts(backend: &str) -> Migrator {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../migrations/{backend}"));
    let mut migrator = Migrator::new(folder).await.expect("migrations");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|migration| migration.version < 9)
        .cloned()
        .collect();
    migrator
}

const LOG_RECORDS: &str = "INSERT INTO events (webhook_id, webhook_timestamp, received_at_us, \
     body, body_sha256, topic, event_time_us, call_key, unlinked, quarantine_reason) VALUES \
     ('msg_1', 1, 1, x'7b7d', x'00', 'call.completed', 1, 'cll_1', FALSE, NULL), \
     ('msg_2', 1, 1, x'7b7d', x'00', 'call.completed', 1, NULL, TRUE, NULL), \
     ('msg_3', 1, 1, x'7b7d', x'00', NULL, NULL, NULL, FALSE, 'not json'), \
     ('msg_4', 1, 1, x'7b7d', x'00', 'sms.received', 1, NULL, FALSE, NULL)";
const A_PROJECTION: &str = "INSERT INTO call_projections \
     (call_key, document, last_seq, late_events, events_folded, updated_at_us) \
     VALUES ('cll_1', '{}', 1, 0, 1, 1)";

/// Logs records with the schema before 0009, then migrates to this build's schema.
async fn upgrade_a_database_that_holds_records(url: &str, backend: &str) -> Store {
    let older = migrations_before_kept_counts(backend).await;
    let store = Store::connect(url).await.expect("connect");
    match &store {
        Store::Sqlite(pools) => {
            older.run(&pools.writer).await.expect("older schema");
            for statement in [LOG_RECORDS, A_PROJECTION] {
                sqlx::query(statement)
                    .execute(&pools.writer)
                    .await
                    .expect("write");
            }
        }
        Store::Postgres(pools) => {
            let pool = &pools.writer;
            older.run(pool).await.expect("older schema");
            // PostgreSQL spells a bytea literal '\x...'.
            for statement in [LOG_RECORDS, A_PROJECTION] {
                sqlx::query(&statement.replace("x'", "'\\x"))
                    .execute(pool)
                    .await
                    .expect("write");
            }
        }
    }
    store.migrate().await.expect("upgrade");
    store
}

mod upgraded {
    use super::*;

    #[tokio::test]
    async fn sqlite_database_starts_with_the_counts_of_its_records() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite:{}", dir.path().join("callfold.db").display());
        let store = upgrade_a_database_that_holds_records(&url, "sqlite").await;
        assert_eq!(counts(&store, KEPT_COUNTS).await, (4, 1, 1, 1));
        assert_kept_counts_match_a_scan(&store, "upgraded").await;
    }

    #[tokio::test]
    async fn postgres_database_starts_with_the_counts_of_its_records() {
        let url = TestDb::unmigrated_postgres_url().await;
        let store = upgrade_a_database_that_holds_records(&url, "postgres").await;
        assert_eq!(counts(&store, KEPT_COUNTS).await, (4, 1, 1, 1));
        assert_kept_counts_match_a_scan(&store, "upgraded").await;
    }
}

/// While an append holds SQLite's write connection (it waits for another process's write
/// lock), the operators' counts and a query still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_do_not_wait_for_the_write_connection() {
    let db = TestDb::sqlite().await;
    let Store::Sqlite(pools) = &db.store else {
        unreachable!("a SQLite test database")
    };
    let lock = db.hold_write_lock().await;
    let store = db.store.clone();
    let append = tokio::spawn(async move {
        store
            .append_batch(&[as_received(
                "msg_1",
                &call_event("call.received", 1, "cll_1"),
            )])
            .await
    });
    support::wait_until("the append holds the write connection", 10, || async {
        pools.writer.size() == 1 && pools.writer.num_idle() == 0
    })
    .await;
    let stats = db
        .store
        .stats()
        .await
        .expect("counts while an append waits");
    assert_eq!(stats.log_events, 0);
    let (unlinked, _) = db.store.unlinked_events(0, 10).await.expect("a list");
    assert!(unlinked.is_empty());
    assert!(!append.is_finished(), "the append was still waiting");
    lock.release().await;
    append.await.expect("join").expect("append after the lock");
    assert_eq!(db.store.stats().await.expect("stats").log_events, 1);
}
